//! The command line: parse arguments, load the configuration, run one command, print its result,
//! and map the outcome to an exit code (0 ok, 1 a command-level failure such as a failed account,
//! 2 a usage or configuration error). This is the only module that prints results, reads the
//! process environment or installs signal handlers.
//!
//! `mod.rs` holds the clap types, the dispatch and what commands share (loading the
//! configuration, opening the database, `--from`/`--to`, atomic and piped output, signals); each
//! command's body is in the file of its group: `collect.rs` (collect, sync-users, poll-invites,
//! status, check), `users.rs` (users, role-changes), `reports.rs` (report, reports run), `review.rs` (review ...),
//! `alerts.rs`, `export.rs`, `verify.rs` (verify, verify-report, keygen), `simulate.rs`,
//! `daemon.rs` (run) and `demo.rs`.

mod env;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};
use crate::export::ExportFormat;
use crate::logging::{self, LogFormat};
use crate::store::Store;
use env::ProcessEnv;

mod alerts;
mod collect;
mod daemon;
mod demo;
mod export;
mod reports;
mod review;
mod simulate;
mod store_copy;
mod users;
mod verify;

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
    /// The database itself: move a whole history between SQLite and PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
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
    /// Access-review campaigns: start (freeze the population), export the decision sheet,
    /// import decisions, status (with remediation), close (the signed evidence package).
    #[command(subcommand)]
    Review(review::ReviewCommand),
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
enum StoreCommand {
    /// Copy a whole history (events, users and their history, coverage, alerts and deliveries,
    /// chain heads) from one database to another; re-run it to finish an interrupted copy. A
    /// PostgreSQL URL's password comes from the configuration's [store] when it names the same
    /// URL, else from PGPASSWORD.
    Copy {
        /// A SQLite file or a postgresql:// URL (without a password).
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
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
    // Before the runtime starts its threads: freed memory goes back to the kernel.
    crate::collect::limit_heap_cache(
        std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some(),
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
        Command::Collect { account } => collect::collect(&cli, account.as_deref()).await,
        Command::Store(StoreCommand::Copy { from, to }) => store_copy::copy(&cli, from, to),
        Command::Simulate(args) => simulate::simulate(args).await,
        Command::Export(ExportCommand::Events {
            account,
            from,
            to,
            action,
            format,
            out,
        }) => export::events(
            &cli,
            export::EventsArgs {
                account: account.as_deref(),
                from: from.as_deref(),
                to: to.as_deref(),
                action: action.as_deref(),
                format: *format,
                out: out.as_deref(),
            },
        ),
        Command::Status {
            account,
            format,
            quarantine,
        } => collect::status(&cli, account.as_deref(), *format, *quarantine),
        Command::Check { account } => collect::check(&cli, account.as_deref()).await,
        Command::SyncUsers { account } => {
            collect::users(&cli, account.as_deref(), collect::UsersJob::Sync).await
        }
        Command::PollInvites { account } => {
            collect::users(&cli, account.as_deref(), collect::UsersJob::Poll).await
        }
        Command::RoleChanges {
            account,
            user,
            role,
            format,
        } => users::role_changes(
            &cli,
            account.as_deref(),
            user.as_deref(),
            role.as_deref(),
            *format,
        ),
        Command::Users(args) => users::users(&cli, args),
        Command::Report(args) => reports::report(&cli, args),
        Command::Reports(ReportsCommand::Run { account }) => reports::run(&cli, account.as_deref()),
        Command::Review(cmd) => review::review(&cli, cmd),
        Command::Verify { account, db } => verify::verify(&cli, account.as_deref(), db.as_deref()),
        Command::VerifyReport {
            manifest,
            public_key,
            db,
        } => verify::verify_report(&cli, manifest, public_key, db.as_deref()),
        Command::Keygen { out } => verify::keygen(out),
        Command::Alerts(args) => alerts::alerts(&cli, args).await,
        Command::Run => daemon::run(&cli).await,
        Command::Demo(args) => demo::demo(args).await,
    }
}

/// The configured database, read-only, for commands that only read (status, exports, listings,
/// reports, alerts): it must exist already.
fn open_existing_db(cfg: &Config) -> Result<Store, CliError> {
    if !cfg.store.target.exists() {
        return Err(CliError::failed(format!(
            "no database at {} yet: run `auditwarden collect` first",
            cfg.store.target
        )));
    }
    Ok(Store::open_target_read_only(&cfg.store.target)?)
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

/// Output that may stop early because its reader went away (`auditwarden users | head`): the
/// error types of the writers that stream to standard output say whether an I/O error is the cause.
trait IoCause {
    fn io_cause(&self) -> Option<&std::io::Error>;
}

impl IoCause for crate::export::ExportError {
    fn io_cause(&self) -> Option<&std::io::Error> {
        match self {
            crate::export::ExportError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl IoCause for crate::report_users::UsersError {
    fn io_cause(&self) -> Option<&std::io::Error> {
        match self {
            crate::report_users::UsersError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl IoCause for crate::report::ReportError {
    fn io_cause(&self) -> Option<&std::io::Error> {
        match self {
            crate::report::ReportError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Stream a command's output to standard output through a buffer. A closed pipe (the reader
/// went away, as `| head` does) is not an error: the output just ends there, `Ok(None)`.
fn to_stdout<T, E>(
    write: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<Option<T>, CliError>
where
    E: IoCause + From<std::io::Error>,
    CliError: From<E>,
{
    let stdout = std::io::stdout();
    to_writer(&mut std::io::BufWriter::new(stdout.lock()), write)
}

/// [`to_stdout`] on any writer (flushed at the end).
fn to_writer<W: Write, T, E>(
    w: &mut W,
    write: impl FnOnce(&mut dyn Write) -> Result<T, E>,
) -> Result<Option<T>, CliError>
where
    E: IoCause + From<std::io::Error>,
    CliError: From<E>,
{
    match write(w).and_then(|v| w.flush().map(|_| v).map_err(E::from)) {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if e.io_cause()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Stored text on one terminal line: line breaks become spaces, other control characters and
/// bidi formatting characters (hostile names included) are shown escaped.
fn printable(s: &str) -> String {
    crate::text::one_line(s)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader is gone, or that fails otherwise.
    struct Failing(std::io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(self.0))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::Error::from(self.0))
        }
    }

    fn rows(w: &mut dyn Write) -> Result<u64, crate::report_users::UsersError> {
        writeln!(w, "a row")?;
        Ok(1)
    }

    /// A closed pipe ends the output quietly, whether the writer or the final flush meets it;
    /// any other I/O error is the command's error; output that fits is flushed.
    #[test]
    fn a_closed_pipe_is_not_an_error_but_other_write_errors_are() {
        let closed = to_writer(&mut Failing(std::io::ErrorKind::BrokenPipe), rows);
        assert!(matches!(closed, Ok(None)), "{closed:?}");
        let mut buffered = std::io::BufWriter::new(Failing(std::io::ErrorKind::BrokenPipe));
        let closed_at_flush = to_writer(&mut buffered, rows);
        assert!(matches!(closed_at_flush, Ok(None)), "{closed_at_flush:?}");
        let full = to_writer(&mut Failing(std::io::ErrorKind::StorageFull), rows);
        let err = full.expect_err("a full disk is an error");
        assert!(err.to_string().contains("cannot write"), "{err}");
        let mut ok = Vec::new();
        assert!(matches!(to_writer(&mut ok, rows), Ok(Some(1))));
        assert_eq!(ok, b"a row\n");
    }
}
