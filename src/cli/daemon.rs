//! `run`: the daemon. Everything that touches the process (signals, the environment, the
//! listening socket) is set up here and handed to `daemon::run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::env::ProcessEnv;
use crate::config;

use super::{config_path, load_config, shutdown_signal, test_panic_account, Cli, CliError};

/// `auditwarden run`: everything that touches the process (signals, the environment, the
/// listening socket) is set up here and handed to `daemon::run`.
pub(super) async fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let listener = match cfg.daemon.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::failed(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    if let Some(l) = &listener {
        println!("health and metrics on http://{}", l.local_addr()?);
    }
    println!(
        "auditwarden running (pid {}, config {})",
        std::process::id(),
        cfg.source.display()
    );
    let _ = std::io::stdout().flush();

    // SIGHUP: load the file again; a bad one is logged and the running configuration kept.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let path = config_path(cli);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match config::load(&path, &ProcessEnv) {
                    Ok(c) => {
                        if reload_tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::error!(
                        event = "reload_rejected",
                        error = %e,
                        "keeping the running configuration"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop((reload_tx, path));

    // The first SIGTERM/SIGINT starts the orderly stop; a second one exits at once.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(());
        shutdown_signal().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(1);
    });

    let notifier = crate::daemon::Notifier::new(
        std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from),
        std::env::var("WATCHDOG_USEC")
            .ok()
            .filter(|_| {
                std::env::var("WATCHDOG_PID").map_or(true, |p| p == std::process::id().to_string())
            })
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(std::time::Duration::from_micros),
    );
    let stopped = crate::daemon::run(
        cfg,
        listener,
        reload_rx,
        async {
            let _ = stop_rx.await;
        },
        notifier,
        crate::daemon::TestHooks {
            panic_account: test_panic_account(),
        },
    )
    .await?;
    Ok(match stopped {
        crate::daemon::Stopped::Clean => ExitCode::SUCCESS,
        crate::daemon::Stopped::GraceExceeded => ExitCode::from(1),
    })
}
