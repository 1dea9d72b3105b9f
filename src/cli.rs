//! The command line: parse arguments, load the configuration, run one command, print its result,
//! and map the outcome to an exit code (0 ok, 1 a command-level failure such as a failed account,
//! 2 a usage or configuration error). This is the only module that prints results, reads the
//! process environment or installs signal handlers.

mod env;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand};

use crate::collect::{self, AccountSummary, CollectOptions};
use crate::config::{self, Config};
use crate::export::{self, ExportFormat};
use crate::logging::{self, LogFormat};
use crate::simulate;
use crate::store::{EventFilter, Store};
use env::ProcessEnv;

#[derive(Parser, Debug)]
#[command(
    name = "auditwarden",
    version,
    about = "Collects DigiCert audit logs and user history into SQLite, exactly once.",
    long_about = None
)]
pub struct Cli {
    /// Configuration file [env: AUDITWARDEN_CONFIG; default: ./auditwarden.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Pin the clock that decides "today", dormancy, report periods and alert horizons (RFC 3339
    /// or YYYY-MM-DD): for tests and replays. The simulator's world uses it too.
    #[arg(
        long,
        global = true,
        value_name = "TIME",
        env = "AUDITWARDEN_NOW",
        hide_env_values = true
    )]
    now: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one collection pass for each account (or the one named).
    Collect {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Serve the built-in DigiCert simulator (both APIs) for trying auditwarden without an account.
    Simulate(SimulateArgs),
    /// Stream stored data out.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Per account: last successful pass, coverage, events stored, quarantined, last error.
    Status {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
        format: StatusFormat,
        /// Also list the most recent quarantined items.
        #[arg(long)]
        quarantine: bool,
    },
    /// Validate the configuration and make one cheap call per account.
    Check {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Show everything on the built-in simulator, with no DigiCert account: start it, collect
    /// through injected faults, and say what was stored.
    Demo(DemoArgs),
    /// Sync the user directory of each account (or the one named): current state and history.
    /// `collect` does this too, after the audit-log pass.
    SyncUsers {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Check each invited user (one `GET /user/{id}` each) and record acceptances.
    PollInvites {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// List the current users with their roles and last activity (from the database only).
    Users(UsersArgs),
    /// Write one compliance report (from the database only): role-changes, dormant, invitations
    /// or access-review, as CSV, HTML or JSON.
    Report(ReportArgs),
    /// The scheduled report set of `[reports]`.
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// List role grants and revokes: when, by whom, from where (from the database only).
    RoleChanges {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Only this user id.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        #[arg(long, value_name = "R")]
        role: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::report_users::UsersFormat::Table)]
        format: crate::report_users::UsersFormat,
    },
    /// Walk the hash chains of the stored history (events and user history) and report any row
    /// edited, deleted or inserted behind auditwarden's back. Exit code 1 on any finding.
    Verify {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// Verify this database file instead of the configured one (no configuration needed).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Generate an Ed25519 signing key for report manifests: writes the private key (PKCS#8 PEM,
    /// mode 0600, never overwriting) and prints the public key for auditors.
    Keygen {
        #[arg(long, value_name = "PATH", default_value = "auditwarden-signing.pem")]
        out: PathBuf,
    },
    /// List alerts and their deliveries (or deliver, retry, test; see `alerts --help`).
    Alerts(AlertsArgs),
    /// Run as a daemon: the jobs of `[schedule]`, health and metrics on `[daemon] listen`.
    /// SIGTERM/SIGINT stop at a safe point (a second one exits at once); SIGHUP reloads.
    Run,
    /// Check a report run for an auditor: the manifest's Ed25519 signature, every file's SHA-256,
    /// and (given the database: --db, or the configured one) that the chain heads it recorded are
    /// still part of today's chains. One line per check; exit code 1 on any finding.
    VerifyReport {
        /// The run's manifest.json (its manifest.json.sig and files sit next to it).
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        /// The public key: a file (PEM `BEGIN PUBLIC KEY`, as `keygen` prints) or the key itself
        /// (PEM, or 64 hex digits).
        #[arg(long, value_name = "KEY")]
        public_key: String,
        /// Check the chain heads against this database (no configuration needed).
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: Option<AlertsCommand>,
    /// Only alerts whose delivery has this status.
    #[arg(long, value_enum)]
    status: Option<AlertStatus>,
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    format: StatusFormat,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Deliver every pending alert that is due to its sinks (`collect` does this at its end).
    Deliver,
    /// Send a failed (dead-lettered), suppressed or waiting alert again, now.
    Retry {
        /// The alert's number, as `auditwarden alerts` lists it.
        id: i64,
    },
    /// Send a test alert through one sink.
    Test {
        #[arg(long, value_name = "NAME")]
        sink: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AlertStatus {
    Pending,
    Sent,
    Failed,
    Suppressed,
}

#[derive(Args, Debug)]
pub struct UsersArgs {
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// invited | active | locked | disabled | expired | deleted | unknown (default: all but deleted).
    #[arg(long, value_name = "S")]
    status: Option<String>,
    /// Only users holding this role (exact code or name).
    #[arg(long, value_name = "R")]
    role: Option<String>,
    #[arg(long, value_enum, default_value_t = crate::report_users::UsersFormat::Table)]
    format: crate::report_users::UsersFormat,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[arg(value_enum)]
    kind: crate::report::ReportKind,
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// First day (YYYY-MM-DD, in the display time zone) or RFC 3339 instant; period reports only
    /// (default: 30 days before now).
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Last day (YYYY-MM-DD, inclusive, in the display time zone) or RFC 3339 instant
    /// (exclusive); period reports only (default: now).
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    /// Default: from the --out extension, else csv.
    #[arg(long, value_enum)]
    format: Option<crate::report::ReportFormat>,
    /// Write here (atomically) instead of standard output.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ReportsCommand {
    /// Write the configured reports now: a date-stamped run directory with a manifest.json.
    Run {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// Stored audit events as JSONL or spreadsheet-safe CSV.
    Events {
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
        /// First day (YYYY-MM-DD, UTC) or RFC 3339 instant, inclusive.
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, UTC, inclusive) or RFC 3339 instant (exclusive).
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        #[arg(long, value_name = "A")]
        action: Option<String>,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here (atomically) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StatusFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Audit events generated up front.
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// The events span this many days, ending now.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Users per account kind.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Fault injection, e.g. "rate-limit=0.05,server-error=0.05,truncate=0.02,drift=10" or "all".
    #[arg(long, default_value = "")]
    faults: String,
    /// Environment variable holding the API key the simulator accepts (default key if unset:
    /// "simulator-key").
    #[arg(long, default_value = "AUDITWARDEN_SIM_API_KEY")]
    api_key_env: String,
    /// Serve HTTPS with this certificate (PEM; the chain, leaf first). Needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With HTTPS: require a client certificate issued by this CA (PEM), as DigiCert ONE's
    /// clientauth. hosts do; DigiCert ONE routes then accept it instead of the API key.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// With HTTPS: also serve the /_sim/* control endpoints (only) over plain HTTP here (its
    /// address is printed on a second line).
    #[arg(long, value_name = "ADDR", requires = "tls_cert")]
    control_listen: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo database goes.
    #[arg(long, default_value = "auditwarden-demo.db")]
    db: PathBuf,
    /// Audit events in the simulated account.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Days of history.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Fault injection for the demo (see `simulate --faults`).
    #[arg(
        long,
        default_value = "rate-limit=0.03,rate-limit-date=0.02,rate-limit-bare=0.02,server-error=0.04,truncate=0.03,malformed,drift=5,late=5"
    )]
    faults: String,
}

/// The entry point: `main` calls this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(t) = &cli.now {
        match crate::clock::parse(t) {
            Ok(at) => crate::clock::pin(at),
            Err(e) => {
                eprintln!("error: --now: {e}");
                return ExitCode::from(2);
            }
        }
    }
    logging::init(
        cli.log_format,
        std::env::var("AUDITWARDEN_LOG").ok().as_deref(),
        // https://no-color.org: set and not empty means no colour.
        std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Dropping the runtime would wait for every blocking thread; a daemon job abandoned past
    // its grace period may still be on one, and the process must exit now.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Test-only: `AUDITWARDEN_TEST_PANIC_ACCOUNT=name` makes that account's collection task panic,
/// so the tests can prove a panic counts as that account's failure. Not for normal use.
fn test_panic_account() -> Option<String> {
    std::env::var("AUDITWARDEN_TEST_PANIC_ACCOUNT")
        .ok()
        .filter(|v| !v.is_empty())
}

/// An error at the edge: the message is printed once, with its cause chain.
#[derive(Debug)]
pub struct CliError {
    msg: String,
    code: u8,
}

impl CliError {
    fn usage(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            code: 2,
        }
    }
    fn failed(msg: impl Into<String>) -> CliError {
        CliError {
            msg: msg.into(),
            code: 1,
        }
    }
    fn exit_code(&self) -> u8 {
        self.code
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> CliError {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            src = s.source();
        }
        CliError::failed(msg)
    }
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config
        .clone()
        .or_else(|| std::env::var_os("AUDITWARDEN_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("auditwarden.toml"))
}

fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let path = config_path(cli);
    if !path.exists() {
        return Err(CliError::usage(format!(
            "no configuration at {}: pass --config PATH or set AUDITWARDEN_CONFIG (see config/auditwarden.example.toml)",
            path.display()
        )));
    }
    config::load(&path, &ProcessEnv).map_err(|e| CliError::usage(e.to_string()))
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Collect { account } => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            let store = Store::open(&cfg.store.path)?;
            let opts = CollectOptions {
                today: crate::clock::today(),
                progress: std::io::stderr().is_terminal(),
                cancel: tokio_util::sync::CancellationToken::new(),
                panic_account: test_panic_account(),
            };
            let (mut store, summaries) = collect::collect(store, &accounts, &opts).await?;
            let mut out = std::io::stdout().lock();
            print_summaries(&mut out, &summaries)?;
            // Users after the audit log, so the events that explain role changes are stored.
            let user_summaries = collect::users::sync_users(&mut store, &accounts).await;
            crate::report_users::print_user_summaries(&mut out, &user_summaries)?;
            // Alerts never fail the collection: their problems are printed and logged only.
            alerts_after_sync(&mut store, &accounts, &cfg, &mut out).await?;
            Ok(
                if summaries.iter().any(|s| s.error.is_some())
                    || user_summaries.iter().any(|s| s.error.is_some())
                {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                },
            )
        }
        Command::Simulate(args) => simulate_cmd(args).await,
        Command::Export(ExportCommand::Events {
            account,
            from,
            to,
            action,
            format,
            out,
        }) => {
            let cfg = load_config(&cli)?;
            if let Some(a) = account {
                cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
            }
            let filter = EventFilter {
                account: account.clone(),
                from: from
                    .as_deref()
                    .map(|s| parse_when(s, chrono_tz::UTC, false))
                    .transpose()
                    .map_err(CliError::usage)?,
                to: to
                    .as_deref()
                    .map(|s| parse_when(s, chrono_tz::UTC, true))
                    .transpose()
                    .map_err(CliError::usage)?,
                action: action.clone(),
            };
            let store = open_existing_db(&cfg)?;
            let n = match out {
                Some(path) => {
                    write_atomically(path, |w| export::export_events(&store, &filter, *format, w))?
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::new(stdout.lock());
                    let r = export::export_events(&store, &filter, *format, &mut w);
                    match r.and_then(|n| w.flush().map(|_| n).map_err(Into::into)) {
                        Ok(n) => n,
                        Err(export::ExportError::Io(e))
                            if e.kind() == std::io::ErrorKind::BrokenPipe =>
                        {
                            return Ok(ExitCode::SUCCESS)
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            tracing::info!(event = "export_finished", rows = n);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            account,
            format,
            quarantine,
        } => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            let store = open_existing_db(&cfg)?;
            let mut out = std::io::stdout().lock();
            print_status(&mut out, &store, &accounts, *format, *quarantine)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { account } => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            println!("configuration {}: valid", cfg.source.display());
            let mut failed = 0;
            for a in accounts {
                let verdict = match crate::api::Client::new(a) {
                    Ok(c) => c.check().await.map(|msg| (msg, c)),
                    Err(e) => Err(e),
                };
                match verdict {
                    Ok((msg, client)) => {
                        println!("{} ({}): ok, {msg}", a.name, a.kind.as_str());
                        // Transport facts (validity dates on the system clock, as TLS judges them).
                        let now = std::time::SystemTime::now();
                        for line in client.tls().report(client.base_url(), now) {
                            println!("  {line}");
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        println!("{} ({}): FAILED, {e}", a.name, a.kind.as_str());
                    }
                }
            }
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::SyncUsers { account } | Command::PollInvites { account } => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            let mut store = Store::open(&cfg.store.path)?;
            let summaries = if matches!(cli.command, Command::SyncUsers { .. }) {
                collect::users::sync_users(&mut store, &accounts).await
            } else {
                collect::users::poll_invites(&mut store, &accounts, cfg.users.stale_invite_days)
                    .await
            };
            let mut out = std::io::stdout().lock();
            crate::report_users::print_user_summaries(&mut out, &summaries)?;
            if matches!(cli.command, Command::SyncUsers { .. }) {
                alerts_after_sync(&mut store, &accounts, &cfg, &mut out).await?;
            }
            Ok(if summaries.iter().any(|s| s.error.is_some()) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::RoleChanges {
            account,
            user,
            role,
            format,
        } => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            let store = open_existing_db(&cfg)?;
            let query = crate::report_users::RoleChangesQuery {
                accounts: accounts.iter().map(|a| a.name.clone()).collect(),
                user: user.clone(),
                role: role.clone(),
            };
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let r = crate::report_users::write_role_changes(&store, &query, *format, &mut w);
            match r.and_then(|n| w.flush().map(|_| n).map_err(Into::into)) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(crate::report_users::UsersError::Io(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Users(args) => {
            let cfg = load_config(&cli)?;
            if let Some(a) = &args.account {
                cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
            }
            let status = match &args.status {
                None => None,
                Some(st) => Some(crate::api::users::UserStatus::from_name(st).ok_or_else(|| {
                    CliError::usage(format!(
                        "--status {st:?} is not one of invited, active, locked, disabled, expired, deleted, unknown"
                    ))
                })?),
            };
            let store = open_existing_db(&cfg)?;
            let query = crate::report_users::UsersQuery {
                account: args.account.clone(),
                status,
                role: args.role.clone(),
                stale_invite_days: cfg.users.stale_invite_days,
                now: crate::clock::now(),
            };
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let r = crate::report_users::write_users(&store, &query, args.format, &mut w);
            match r.and_then(|n| w.flush().map(|_| n).map_err(Into::into)) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(crate::report_users::UsersError::Io(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Report(args) => report_cmd(&cli, args),
        Command::Reports(ReportsCommand::Run { account }) => {
            let cfg = load_config(&cli)?;
            let accounts = cfg
                .select_accounts(account.as_deref())
                .map_err(CliError::usage)?;
            let store = open_existing_db(&cfg)?;
            let run =
                crate::report::run::run_configured(&store, &cfg, &accounts, crate::clock::now())?;
            if run.signature.is_none() {
                eprintln!(
                    "note: the run is unsigned (no [reports] signing_key_file): auditors can check its SHA-256s, not who wrote it"
                );
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "reports written to {}", run.dir.display())?;
            for f in &run.manifest.files {
                writeln!(
                    out,
                    "  {} ({} rows, {} bytes, sha256 {}){}",
                    f.file,
                    f.rows,
                    f.bytes,
                    f.sha256,
                    if f.complete { "" } else { " INCOMPLETE DATA" }
                )?;
            }
            writeln!(out, "  manifest.json")?;
            if run.signature.is_some() {
                writeln!(
                    out,
                    "  {} (Ed25519, hex)",
                    crate::report::run::SIGNATURE_FILE
                )?;
            }
            for p in &run.pruned {
                writeln!(out, "removed (retention): {}", p.display())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { account, db } => verify_cmd(&cli, account.as_deref(), db.as_deref()),
        Command::VerifyReport {
            manifest,
            public_key,
            db,
        } => verify_report_cmd(&cli, manifest, public_key, db.as_deref()),
        Command::Keygen { out } => {
            let key = crate::signing::generate();
            crate::signing::write_private_key(out, &key)
                .map_err(|e| CliError::failed(format!("cannot write the private key: {e}")))?;
            let public = crate::signing::public_key_pem(&key.verifying_key())?;
            eprintln!(
                "wrote the private key to {} (mode 0600); give auditors this public key:",
                out.display()
            );
            print!("{public}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts(args) => alerts_cmd(&cli, args).await,
        Command::Run => run_daemon(&cli).await,
        Command::Demo(args) => {
            crate::demo::run(args.db.clone(), args.events, args.days, &args.faults)
                .await
                .map(|_| ExitCode::SUCCESS)
                .map_err(|e| CliError::failed(format!("{e:#}")))
        }
    }
}

/// The configured database, read-only, for commands that only read (status, exports, listings,
/// reports, alerts): it must exist already.
fn open_existing_db(cfg: &Config) -> Result<Store, CliError> {
    if !cfg.store.path.exists() {
        return Err(CliError::failed(format!(
            "no database at {} yet: run `auditwarden collect` first",
            cfg.store.path.display()
        )));
    }
    Ok(Store::open_read_only(&cfg.store.path)?)
}

/// `--from`/`--to`: a day in `tz` (`YYYY-MM-DD`; for `--to` inclusive, so the end is the start of
/// the next day there), or an RFC 3339 instant. Exports use UTC, reports their display zone.
fn parse_when(s: &str, tz: chrono_tz::Tz, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(crate::report::start_of_day(tz, d));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))
}

fn report_cmd(cli: &Cli, args: &ReportArgs) -> Result<ExitCode, CliError> {
    use crate::report::{self, Period, ReportFormat, ReportRequest};
    let cfg = load_config(cli)?;
    let accounts = cfg
        .select_accounts(args.account.as_deref())
        .map_err(CliError::usage)?;
    let tz = cfg.reports.time_zone;
    let now = crate::clock::now();
    let period = if args.kind.is_period() {
        let from = args
            .from
            .as_deref()
            .map(|s| parse_when(s, tz, false))
            .transpose()
            .map_err(|e| CliError::usage(format!("--from: {e}")))?;
        let to = args
            .to
            .as_deref()
            .map(|s| parse_when(s, tz, true))
            .transpose()
            .map_err(|e| CliError::usage(format!("--to: {e}")))?;
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - chrono::Duration::days(30));
        if from >= to {
            return Err(CliError::usage("--from must be before --to"));
        }
        Period::Range { from, to }
    } else {
        if args.from.is_some() || args.to.is_some() {
            return Err(CliError::usage(format!(
                "{} is a point-in-time report (as of now): --from/--to do not apply",
                args.kind.as_str()
            )));
        }
        Period::AsOf(now)
    };
    let format = args
        .format
        .or_else(|| args.out.as_deref().and_then(report::run::format_of))
        .unwrap_or(ReportFormat::Csv);
    let store = open_existing_db(&cfg)?;
    let req = ReportRequest {
        kind: args.kind,
        accounts,
        period,
        now,
        time_zone: tz,
        dormant_days: cfg.reports.dormant_days,
        stale_invite_days: cfg.users.stale_invite_days,
    };
    let outcome = match &args.out {
        Some(path) => write_atomically(path, |w| report::generate(&store, &req, format, w))?,
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let r = report::generate(&store, &req, format, &mut w);
            match r.and_then(|o| w.flush().map(|_| o).map_err(Into::into)) {
                Ok(o) => o,
                Err(report::ReportError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    // The report states all of this itself (but CSV has only rows): say it here too.
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{} report: {} row(s), {}, generated {} by auditwarden {}",
        args.kind.as_str(),
        outcome.rows,
        outcome.period,
        export::rfc3339(now),
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(err, "  covers {}", outcome.scope)?;
    for c in &outcome.coverage {
        writeln!(err, "  coverage {c}")?;
    }
    if !outcome.complete {
        writeln!(
            err,
            "WARNING: the collected data is incomplete for this report (see coverage)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `auditwarden verify-report`: one line per check as it is decided; exit code 1 on any finding.
fn verify_report_cmd(
    cli: &Cli,
    manifest: &Path,
    public_key: &str,
    db: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let key_text = if Path::new(public_key).is_file() {
        std::fs::read_to_string(public_key)
            .map_err(|e| CliError::usage(format!("--public-key {public_key}: {e}")))?
    } else {
        public_key.to_string()
    };
    let key = crate::signing::parse_public_key(&key_text)
        .map_err(|e| CliError::usage(format!("--public-key: {e}")))?;
    // The database: --db, else the configuration's when one is given or found.
    let db_path = match db {
        Some(p) => Some(p.to_path_buf()),
        None if cli.config.is_some() || config_path(cli).exists() => {
            Some(load_config(cli)?.store.path)
        }
        None => None,
    };
    let store = match &db_path {
        Some(p) if !p.exists() => {
            return Err(CliError::failed(format!("no database at {}", p.display())))
        }
        Some(p) => Some(Store::open_read_only(p)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let findings = crate::report::verify::verify_report(manifest, &key, store.as_ref(), |c| {
        if let Err(e) = writeln!(out, "{c}") {
            io_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if findings > 0 {
        writeln!(
            out,
            "verify-report: {findings} finding(s) in {}",
            manifest.display()
        )?;
        Ok(ExitCode::from(1))
    } else {
        writeln!(out, "verify-report: ok, {}", manifest.display())?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `auditwarden verify`: stream every finding as it is met, then one line per chain.
fn verify_cmd(cli: &Cli, account: Option<&str>, db: Option<&Path>) -> Result<ExitCode, CliError> {
    let path = match db {
        Some(p) => p.to_path_buf(),
        None => {
            let cfg = load_config(cli)?;
            if let Some(a) = account {
                cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
            }
            cfg.store.path.clone()
        }
    };
    if !path.exists() {
        return Err(CliError::failed(format!(
            "no database at {}: nothing to verify",
            path.display()
        )));
    }
    let store = Store::open_read_only(&path)?;
    if !store.has_chains()? {
        return Err(CliError::failed(format!(
            "{} predates hash chains: run `auditwarden collect` once to upgrade it (the upgrade chains the rows stored so far)",
            path.display()
        )));
    }
    let mut out = std::io::stdout().lock();
    let mut findings = 0u64;
    let mut io_err = None;
    let summaries = store.verify_chains(account, |f| {
        findings += 1;
        if let Err(e) = writeln!(out, "FINDING {f}") {
            io_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    for s in &summaries {
        writeln!(
            out,
            "{}: {} chain: {} rows, head #{} {}",
            s.account,
            s.chain.as_str(),
            s.rows,
            s.head.n,
            hex::encode(s.head.hash)
        )?;
    }
    if findings > 0 {
        writeln!(out, "verify: {findings} finding(s) in {}", path.display())?;
        Ok(ExitCode::from(1))
    } else {
        writeln!(
            out,
            "verify: ok, {} chain(s) intact in {}",
            summaries.len(),
            path.display()
        )?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Evaluate the rules on what the sync established, then deliver pending alerts; prints one line
/// per account that got alerts and one per sink that had work.
async fn alerts_after_sync(
    store: &mut Store,
    accounts: &[&config::Account],
    cfg: &Config,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for e in crate::alert::evaluate(store, accounts, &cfg.alerts, crate::clock::now()) {
        match e.result {
            Ok(c) if c.alerts > 0 => writeln!(
                out,
                "{}: {} new alert(s), {} suppressed on backfill",
                e.account, c.alerts, c.suppressed
            )?,
            Ok(_) => {}
            Err(err) => writeln!(out, "{}: alerts not evaluated: {err}", e.account)?,
        }
    }
    let d = crate::alert::deliver(store, &cfg.alerts).await;
    print_delivery(out, &d)
}

fn print_delivery(out: &mut dyn Write, d: &crate::alert::DeliverySummary) -> std::io::Result<()> {
    for (sink, c) in &d.per_sink {
        write!(
            out,
            "alerts to {sink}: {} sent, {} failed, {} still pending",
            c.sent, c.failed, c.pending
        )?;
        if let Some(t) = c.next_attempt.filter(|_| c.pending > 0) {
            write!(out, " (next attempt {})", t.format("%Y-%m-%d %H:%M:%SZ"))?;
        }
        if c.elsewhere > 0 {
            write!(out, ", {} being sent by another run", c.elsewhere)?;
        }
        writeln!(out)?;
    }
    if let Some(e) = &d.error {
        writeln!(out, "alerts: {e}")?;
    }
    Ok(())
}

/// Stored text on one terminal line: line breaks become spaces, other control characters and
/// bidi formatting characters (hostile names included) are shown escaped.
fn printable(s: &str) -> String {
    crate::text::one_line(s)
}

async fn alerts_cmd(cli: &Cli, args: &AlertsArgs) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let sinks: Vec<String> = cfg.alerts.sinks.iter().map(|s| s.name.clone()).collect();
    let mut out = std::io::stdout().lock();
    match &args.command {
        Some(AlertsCommand::Test { sink }) => {
            let Some(s) = cfg.alerts.sinks.iter().find(|s| s.name == *sink) else {
                return Err(CliError::usage(format!(
                    "no sink named {sink:?} in {} (known: {})",
                    cfg.source.display(),
                    sinks.join(", ")
                )));
            };
            match crate::alert::send_test(s, &cfg.alerts).await {
                Ok(uid) => {
                    writeln!(out, "test alert {uid} delivered to {sink}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(CliError::failed(format!(
                    "test alert to {sink} failed: {e}"
                ))),
            }
        }
        Some(AlertsCommand::Deliver) => {
            let mut store = Store::open(&cfg.store.path)?;
            let d = crate::alert::deliver(&mut store, &cfg.alerts).await;
            print_delivery(&mut out, &d)?;
            Ok(if d.failed() > 0 || d.error.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(AlertsCommand::Retry { id }) => {
            let mut store = Store::open(&cfg.store.path)?;
            match store.retry_alert(*id, &sinks, crate::clock::now_ms())? {
                None => Err(CliError::failed(format!("no alert {id}"))),
                Some(0) => Err(CliError::failed(format!(
                    "alert {id} has nothing to send again (no failed delivery, or no sink configured)"
                ))),
                Some(n) => {
                    writeln!(out, "alert {id}: {n} delivery(ies) pending again")?;
                    let d = crate::alert::deliver(&mut store, &cfg.alerts).await;
                    print_delivery(&mut out, &d)?;
                    Ok(if d.failed() > 0 || d.error.is_some() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
        None => {
            let store = open_existing_db(&cfg)?;
            let status = args.status.map(|s| match s {
                AlertStatus::Pending => "pending",
                AlertStatus::Sent => "sent",
                AlertStatus::Failed => "failed",
                AlertStatus::Suppressed => "suppressed",
            });
            let rows = store.list_alerts(status, args.limit)?;
            match args.format {
                StatusFormat::Json => {
                    for r in &rows {
                        let payload: serde_json::Value =
                            serde_json::from_str(&r.payload).unwrap_or_default();
                        let rfc = |ms: Option<i64>| {
                            ms.and_then(DateTime::from_timestamp_millis)
                                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        };
                        let line = serde_json::json!({
                            "alert": r.alert_id, "id": r.uid, "sink": r.sink, "status": r.status,
                            "attempts": r.attempts, "last_error": r.last_error,
                            "next_attempt": rfc(r.next_attempt_ms.filter(|_| r.status == "pending")),
                            "failing_since": rfc(r.failing_since_ms),
                            "payload": payload,
                        });
                        writeln!(out, "{line}")?;
                    }
                }
                StatusFormat::Table => {
                    writeln!(
                        out,
                        "{:>6}  {:<10}  {:<12}  {:>3}  {:<8}  {:<20}  summary",
                        "alert", "status", "sink", "try", "severity", "time"
                    )?;
                    for r in &rows {
                        let time = r
                            .at_ms
                            .and_then(DateTime::from_timestamp_millis)
                            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into());
                        writeln!(
                            out,
                            "{:>6}  {:<10}  {:<12}  {:>3}  {:<8}  {:<20}  {}",
                            r.alert_id,
                            r.status,
                            r.sink.as_deref().unwrap_or("-"),
                            r.attempts,
                            r.severity,
                            time,
                            printable(&r.summary)
                        )?;
                        if let (Some(e), "failed" | "pending") = (&r.last_error, r.status.as_str())
                        {
                            writeln!(out, "{:>6}  last error: {}", "", printable(e))?;
                        }
                        let at = |ms: Option<i64>| {
                            ms.and_then(DateTime::from_timestamp_millis)
                                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                        };
                        if let (Some(next), "pending") = (at(r.next_attempt_ms), r.status.as_str())
                        {
                            let since = at(r.failing_since_ms).unwrap_or_else(|| "-".into());
                            writeln!(
                                out,
                                "{:>6}  next attempt: {next} (failing since {since}, {} attempt(s) so far)",
                                "", r.attempts
                            )?;
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Write a file through a temporary sibling and a rename, so a reader never sees half of it.
fn write_atomically<T, E>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<T, CliError>
where
    CliError: From<E>,
{
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| CliError::usage(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", tmp.display())))?;
    let mut w = std::io::BufWriter::new(file);
    let result = f(&mut w);
    let finish = result.map_err(CliError::from).and_then(|v| {
        w.flush()
            .and_then(|_| w.get_ref().sync_all())
            .map_err(|e| CliError::failed(format!("cannot write {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| CliError::failed(format!("cannot rename to {}: {e}", path.display())))?;
        Ok(v)
    });
    if finish.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    finish
}

/// One line per account: what the pass stored and what it cost.
pub fn print_summaries(out: &mut dyn Write, summaries: &[AccountSummary]) -> std::io::Result<()> {
    for s in summaries {
        let secs = (s.finished - s.started).num_milliseconds() as f64 / 1000.0;
        if let Some(why) = &s.skipped {
            writeln!(out, "{}: skipped, {why}", s.account)?;
            continue;
        }
        let head = match &s.error {
            None => "ok".to_string(),
            Some(e) => format!("FAILED, {}", printable(e)),
        };
        writeln!(
            out,
            "{}: {head}\n  {} new events, {} already stored, {} quarantined; {} days read ({} re-reads, {} left incomplete); {} requests ({} retries) in {secs:.1}s",
            s.account,
            s.written.inserted,
            s.written.duplicates,
            s.written.quarantined,
            s.days_read,
            s.rereads,
            s.unstable_days,
            s.requests,
            s.retries,
        )?;
        if let Some(p) = s.pace.filter(|p| p.limited > 0) {
            let rate = p
                .rate
                .map_or("no cap".to_string(), |r| format!("{r:.1} requests/s"));
            writeln!(
                out,
                "  the server answered 429 {} time(s); pace settled at {rate}",
                p.limited
            )?;
        }
    }
    Ok(())
}

fn print_status(
    out: &mut dyn Write,
    store: &Store,
    accounts: &[&config::Account],
    format: StatusFormat,
    quarantine: bool,
) -> Result<(), CliError> {
    let mut json = Vec::new();
    for a in accounts {
        let s = store.account_status(&a.name)?;
        let today = crate::clock::today();
        let from = today
            .checked_sub_days(chrono::Days::new(u64::from(a.backfill_days)))
            .unwrap_or(today);
        let cov = crate::coverage::summarize(store, a, from, today)?;
        let last_error = s.last_pass.as_ref().and_then(|p| p.error.clone());
        match format {
            StatusFormat::Table => {
                writeln!(out, "{} ({})", a.name, a.kind.as_str())?;
                writeln!(
                    out,
                    "  last successful pass: {}",
                    s.last_success
                        .map(export::rfc3339)
                        .unwrap_or_else(|| "never".into())
                )?;
                writeln!(out, "  coverage: {}", cov.describe())?;
                writeln!(
                    out,
                    "  events stored: {}, quarantined: {}",
                    s.events, s.quarantined
                )?;
                if let Some(p) = &s.last_pass {
                    writeln!(
                        out,
                        "  last pass: {}, {} new events, {} requests ({} retries)",
                        export::rfc3339(p.finished),
                        p.new_events,
                        p.requests,
                        p.retries
                    )?;
                }
                writeln!(
                    out,
                    "  last error: {}",
                    last_error.as_deref().unwrap_or("none")
                )?;
            }
            StatusFormat::Json => json.push(serde_json::json!({
                "account": a.name,
                "kind": a.kind.as_str(),
                "last_success": s.last_success.map(export::rfc3339),
                "coverage": cov,
                "events": s.events,
                "quarantined": s.quarantined,
                "last_error": last_error,
            })),
        }
    }
    if format == StatusFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        )?;
    }
    if quarantine {
        writeln!(out, "recent quarantined items:")?;
        for q in store.quarantine(None, 20)? {
            writeln!(
                out,
                "  {} {} (day {}): {}: {}",
                q.account,
                q.key,
                q.day,
                q.reason,
                crate::api::wire::preview(&q.raw)
            )?;
        }
    }
    Ok(())
}

async fn simulate_cmd(args: &SimulateArgs) -> Result<ExitCode, CliError> {
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

/// `auditwarden run`: everything that touches the process (signals, the environment, the
/// listening socket) is set up here and handed to `daemon::run`.
async fn run_daemon(cli: &Cli) -> Result<ExitCode, CliError> {
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

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
