//! `simulate`: the built-in DigiCert simulator as a server (plain HTTP, or HTTPS with optional
//! client certificates and a plain control listener).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::simulate;

use super::{shutdown_signal, CliError, SimulateArgs};

/// `auditwarden simulate`: serve until SIGINT/SIGTERM.
pub(super) async fn simulate(args: &SimulateArgs) -> Result<ExitCode, CliError> {
    let faults = simulate::FaultSpec::parse(&args.faults)
        .map_err(|e| CliError::usage(format!("--faults: {e}")))?;
    let api_key = std::env::var(&args.api_key_env).unwrap_or_else(|_| "simulator-key".into());
    let opts = simulate::SimOptions {
        seed: args.seed,
        events: args.events,
        days: args.days,
        users: args.users,
        faults,
        api_key,
        expired_api_keys: std::env::var("AUDITWARDEN_SIM_EXPIRED_KEY")
            .ok()
            .into_iter()
            .collect(),
        non_admin_api_keys: std::env::var("AUDITWARDEN_SIM_NON_ADMIN_KEY")
            .ok()
            .into_iter()
            .collect(),
        // Several accounts with keys of their own on one world (comma-separated).
        extra_api_keys: std::env::var("AUDITWARDEN_SIM_EXTRA_KEYS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (cert, key, ca) = (cert.clone(), key.clone(), args.client_ca.clone());
            // Reads the PEM files: off the async threads.
            let config = tokio::task::spawn_blocking(move || {
                simulate::server_config(&cert, &key, ca.as_deref())
            })
            .await
            .map_err(|e| CliError::failed(e.to_string()))?
            .map_err(CliError::usage)?;
            Some(config)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| CliError::failed(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let control = match args.control_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| CliError::failed(format!("cannot listen on {a}: {e}")))?,
        ),
        None => None,
    };
    let sim = Arc::new(simulate::Simulator::new(opts));
    let Some(tls) = tls else {
        println!("auditwarden simulator listening on http://{addr}");
        let _ = std::io::stdout().flush();
        simulate::serve(listener, sim, shutdown_signal()).await?;
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "auditwarden simulator listening on https://{addr}{}",
        if args.client_ca.is_some() {
            " (client certificates required)"
        } else {
            ""
        }
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let control_task = match control {
        Some(l) => {
            println!(
                "auditwarden simulator control on http://{}",
                l.local_addr()?
            );
            let (sim, stop) = (sim.clone(), stop.clone());
            Some(tokio::spawn(async move {
                simulate::serve_control(l, sim, stop.cancelled_owned()).await
            }))
        }
        None => None,
    };
    let _ = std::io::stdout().flush();
    let signalled = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    };
    simulate::serve_tls(listener, sim, tls, signalled).await?;
    if let Some(t) = control_task {
        t.await.map_err(|e| CliError::failed(e.to_string()))??;
    }
    Ok(ExitCode::SUCCESS)
}
