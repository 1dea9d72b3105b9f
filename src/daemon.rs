//! `auditwarden run`: the long-running daemon. Owns the job loops, the health and metrics
//! listener, configuration reloads and the orderly stop.
//!
//! The entry point hands in everything that touches the process ([`run`] takes the listener, the
//! stream of reloaded configurations, the shutdown future and the systemd notifier as
//! parameters), so this module reads no environment and installs no signal handler.
//!
//! - **One loop per [`Job`]**: a job never overlaps itself because its loop awaits the run before
//!   asking for the next tick; the next tick is computed from the clock *after* a run, so ticks
//!   missed while it ran (or while the machine slept) are skipped, not replayed back to back.
//! - **Failures back off**: after `n` consecutive failures the next run is the first tick after
//!   `min(base * 2^(n-1), max)` with jitter (half to all of it); one success resets it.
//! - **Shutdown**: the token is cancelled; a collection stops at its next safe point (between
//!   pages, see `collect`), deliveries in flight finish or stay pending in the outbox. Jobs get
//!   `[daemon] shutdown_grace_secs`; past that [`run`] returns [`Stopped::GraceExceeded`], which
//!   is as safe as `kill -9` (every page is one transaction).
//! - **Reload**: a new [`Config`] replaces the current one between runs; a job picks up its new
//!   schedule at once. The listener address and the database path need a restart.
//! - **Nothing blocks the runtime**: store work blocks the thread it runs on (SQLite calls, a
//!   writer waiting for its turn, report rendering), so each job run gets a blocking thread of its
//!   own and drives its HTTP from there; the runtime's worker threads stay free for the watchdog,
//!   `/healthz`, `/readyz`, `/metrics` and the other jobs' requests. `/metrics` reads its database
//!   figures on a blocking thread with a short busy timeout and serves the last figures read
//!   when a fresh read does not finish in time. Jobs that write at the same time queue for their
//!   turn (see `store`) instead of failing on a locked database.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::collect::{self, CollectOptions};
use crate::config::Config;
use crate::schedule::Job;
use crate::store::Store;

/// Sends `sd_notify` messages to systemd, or nothing when not started by it. Built by the entry
/// point from `NOTIFY_SOCKET` and `WATCHDOG_USEC`.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<std::path::PathBuf>,
    /// Ping interval requested by systemd (`WatchdogSec=`); pinged at half of it.
    pub watchdog: Option<Duration>,
}

impl Notifier {
    pub fn new(socket: Option<std::path::PathBuf>, watchdog: Option<Duration>) -> Notifier {
        Notifier { socket, watchdog }
    }

    /// One datagram (`READY=1`, `STATUS=...`); errors are logged, never fatal: the daemon must
    /// work without systemd.
    pub fn notify(&self, msg: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send_datagram(path, msg) {
            tracing::warn!(event = "sd_notify_failed", error = %e);
        }
    }
}

#[cfg(unix)]
fn send_datagram(path: &std::path::Path, msg: &str) -> std::io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    let text = path.to_string_lossy();
    #[cfg(target_os = "linux")]
    if let Some(name) = text.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
        return Ok(());
    }
    sock.send_to(msg.as_bytes(), path)?;
    Ok(())
}

#[cfg(not(unix))]
fn send_datagram(_: &std::path::Path, _: &str) -> std::io::Result<()> {
    Ok(())
}

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every job stopped at a safe point within the grace period.
    Clean,
    /// The grace period ran out with a job still running; it was abandoned.
    GraceExceeded,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("the health listener failed: {0}")]
    Listener(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Test-only switches, handed in by the entry point (`cli` reads them from the environment);
/// all off in normal use.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Make this account's collection task panic (`AUDITWARDEN_TEST_PANIC_ACCOUNT`).
    pub panic_account: Option<String>,
}

/// What one job run came to.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// Something failed (an account, the store); the message is logged.
    Failed(String),
    /// Stopped by shutdown before finishing: neither success nor failure.
    Cancelled,
}

/// Figures of one job, for `/metrics`.
#[derive(Debug, Default, Clone)]
struct JobStats {
    runs_ok: u64,
    runs_failed: u64,
    duration_sum_secs: f64,
    last_duration_secs: f64,
    last_success: Option<DateTime<Utc>>,
    consecutive_failures: u32,
}

/// Health of one account as the daemon's collections saw it.
#[derive(Debug, Default, Clone)]
struct AccountHealth {
    last_success: Option<DateTime<Utc>>,
    /// The latest pass's error, cleared by a successful pass.
    last_error: Option<String>,
}

/// In-memory counters since start (the database-backed figures are read at scrape time; API
/// requests are counted by `api::counters` as they happen).
#[derive(Debug, Default)]
struct Metrics {
    jobs: BTreeMap<Job, JobStats>,
    accounts: BTreeMap<String, AccountHealth>,
    events_collected: BTreeMap<String, u64>,
}

/// What the job loops and the HTTP handlers share.
struct Shared {
    /// The current configuration; replaced whole on reload. Jobs take a snapshot per run.
    config: watch::Receiver<Arc<Config>>,
    /// A std mutex: held only for short updates and copies, never across an `.await`.
    metrics: Mutex<Metrics>,
    notifier: Notifier,
    hooks: TestHooks,
    /// The latest database figures read and when (read at start, then by scrapes). A std
    /// mutex, held only to swap the value.
    db_figures: Mutex<(Arc<DbFigures>, DateTime<Utc>)>,
    /// A database read for `/metrics` is under way: scrapes meanwhile use the latest figures
    /// instead of starting more reads (a slow database would otherwise pile up threads).
    db_reading: AtomicBool,
}

impl Shared {
    fn with_metrics<T>(&self, f: impl FnOnce(&mut Metrics) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the counters are still usable.
        let mut m = match self.metrics.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        f(&mut m)
    }

    fn latest_db_figures(&self) -> (Arc<DbFigures>, DateTime<Utc>) {
        match self.db_figures.lock() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_db_figures(&self, f: Arc<DbFigures>) {
        let mut g = match self.db_figures.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = (f, Utc::now());
    }
}

/// Run the daemon until `shutdown` completes: the job loops, the listener (when given), reloads
/// from `reloads`, and systemd notifications.
pub async fn run(
    config: Config,
    listener: Option<tokio::net::TcpListener>,
    mut reloads: mpsc::Receiver<Config>,
    shutdown: impl Future<Output = ()>,
    notifier: Notifier,
    hooks: TestHooks,
) -> Result<Stopped, DaemonError> {
    // Open (and migrate) the database once up front, so a bad path fails the start, not a job.
    let path = config.store.path.clone();
    let names: Vec<String> = config.accounts.iter().map(|a| a.name.clone()).collect();
    let (health, figures) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&path)?;
        let mut health = BTreeMap::new();
        for a in &names {
            let s = store.account_status(a)?;
            health.insert(
                a.clone(),
                AccountHealth {
                    last_success: s.last_success,
                    last_error: s.last_pass.and_then(|p| p.error),
                },
            );
        }
        let figures = read_db_figures(&store, &names)?;
        Ok::<_, crate::store::StoreError>((health, figures))
    })
    .await
    .map_err(|e| DaemonError::Internal(format!("opening the database: {e}")))??;
    let metrics = Metrics {
        accounts: health,
        ..Default::default()
    };
    let grace = config.daemon.shutdown_grace;
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(config));
    let shared = Arc::new(Shared {
        config: cfg_rx,
        metrics: Mutex::new(metrics),
        notifier,
        hooks,
        db_figures: Mutex::new((Arc::new(figures), Utc::now())),
        db_reading: AtomicBool::new(false),
    });
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for job in Job::ALL {
        tasks.spawn(job_loop(job, shared.clone(), cancel.clone()));
    }
    let server = match listener {
        Some(l) => {
            let addr = l.local_addr().map_err(DaemonError::Listener)?;
            tracing::info!(event = "listening", addr = %addr, "health and metrics on /healthz /readyz /metrics");
            let app = axum::Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics_handler))
                .with_state(shared.clone());
            let stop = cancel.clone();
            Some(tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            }))
        }
        None => None,
    };
    // The pinger is a task on the runtime on purpose: a ping proves that the runtime still runs
    // tasks (a thread of its own would ping on while the daemon is stuck). It never touches the
    // database, and no job blocks a worker thread, so it keeps its beat whatever the jobs do.
    let watchdog = shared.notifier.watchdog.map(|every| {
        let shared = shared.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every / 2);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => shared.notifier.notify("WATCHDOG=1"),
                }
            }
        })
    });
    shared
        .notifier
        .notify("READY=1\nSTATUS=running; waiting for the first scheduled job");
    tracing::info!(event = "daemon_started", jobs = %describe_schedule(&shared.config.borrow()));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = reloads.recv() => match r {
                Some(new) => {
                    if new.store.path != shared.config.borrow().store.path {
                        tracing::warn!(event = "reload_partial", "store.path changed: takes effect after a restart; keeping the old database");
                    }
                    let mut new = new;
                    new.store.path = shared.config.borrow().store.path.clone();
                    for a in &new.accounts {
                        shared.with_metrics(|m| { m.accounts.entry(a.name.clone()).or_default(); });
                    }
                    tracing::info!(event = "config_reloaded", jobs = %describe_schedule(&new));
                    shared.notifier.notify("STATUS=configuration reloaded");
                    // Fails only when every receiver is gone (all loops ended): nothing to tell.
                    let _ = cfg_tx.send(Arc::new(new));
                }
                None => {
                    // The entry point stopped sending reloads; keep running until shutdown.
                    shutdown.as_mut().await;
                    break;
                }
            },
        }
    }
    tracing::info!(
        event = "shutdown_started",
        grace_secs = grace.as_secs(),
        "stopping at the next safe point"
    );
    shared
        .notifier
        .notify("STOPPING=1\nSTATUS=stopping at a safe point");
    cancel.cancel();
    let drained = tokio::time::timeout(grace, async {
        while tasks.join_next().await.is_some() {}
        if let Some(s) = server {
            let _ = s.await;
        }
    })
    .await;
    if let Some(w) = watchdog {
        w.abort();
    }
    match drained {
        Ok(()) => {
            tracing::info!(event = "shutdown_finished");
            Ok(Stopped::Clean)
        }
        Err(_) => {
            tracing::warn!(event = "shutdown_grace_exceeded", grace_secs = grace.as_secs(), "a job was still running; abandoned (committed pages are kept, the rest is read again next time)");
            Ok(Stopped::GraceExceeded)
        }
    }
}

fn describe_schedule(cfg: &Config) -> String {
    let mut parts: Vec<String> = Job::ALL
        .iter()
        .map(|j| match cfg.schedule.jobs.get(j) {
            Some(c) => format!("{j}=\"{}\"", c.text()),
            None => format!("{j}=off"),
        })
        .collect();
    parts.push(format!("time_zone={}", cfg.schedule.time_zone));
    parts.join(" ")
}

/// The wait after `failures` consecutive failures: doubling from `base`, capped at `max`, with
/// jitter between half and all of it (so many daemons do not retry in step).
fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let full = exp.min(max);
    let half = full / 2;
    half + full
        .saturating_sub(half)
        .mul_f64(rand::thread_rng().gen::<f64>())
}

/// One job's loop: wait for its next tick, run it, record the outcome, repeat until shutdown.
async fn job_loop(job: Job, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut cfg_rx = shared.config.clone();
    let mut failures: u32 = 0;
    loop {
        let cfg = cfg_rx.borrow_and_update().clone();
        let delay = backoff(failures, cfg.daemon.backoff_base, cfg.daemon.backoff_max);
        let earliest = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let next = cfg
            .job_schedule(job)
            .and_then(|(c, tz)| c.next_after(earliest, tz));
        let wait = next.map(|t| (t - Utc::now()).to_std().unwrap_or_default());
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = cfg_rx.changed() => {
                if changed.is_err() { return; }
                // A new schedule: compute the next tick again.
                continue;
            }
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    // Switched off (schedule ""): wait for a reload.
                    None => std::future::pending().await,
                }
            } => {}
        }
        let cfg = cfg_rx.borrow().clone();
        tracing::info!(event = "job_started", job = %job);
        let started = Instant::now();
        let outcome = {
            let (cfg, shared, cancel) = (cfg.clone(), shared.clone(), cancel.clone());
            let runtime = tokio::runtime::Handle::current();
            // The run's own blocking thread (see the module docs): its store calls block that
            // thread only; its requests still run on the runtime's I/O driver.
            let run = tokio::task::spawn_blocking(move || {
                runtime.block_on(run_job(job, &cfg, &shared, &cancel))
            });
            match run.await {
                Ok(o) => o,
                Err(e) => Outcome::Failed(format!("internal error: the job failed ({e})")),
            }
        };
        let secs = started.elapsed().as_secs_f64();
        let now = Utc::now();
        match &outcome {
            Outcome::Ok => {
                failures = 0;
                tracing::info!(event = "job_finished", job = %job, secs);
            }
            Outcome::Failed(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, cfg.daemon.backoff_base, cfg.daemon.backoff_max);
                tracing::error!(event = "job_failed", job = %job, secs, failures, error = %e, "backing off about {}s before the next run", wait.as_secs());
            }
            Outcome::Cancelled => {
                tracing::info!(event = "job_cancelled", job = %job, secs);
            }
        }
        shared.with_metrics(|m| {
            let s = m.jobs.entry(job).or_default();
            s.last_duration_secs = secs;
            s.duration_sum_secs += secs;
            match &outcome {
                Outcome::Ok => {
                    s.runs_ok += 1;
                    s.last_success = Some(now);
                    s.consecutive_failures = 0;
                }
                Outcome::Failed(_) => {
                    s.runs_failed += 1;
                    s.consecutive_failures = failures;
                }
                Outcome::Cancelled => {}
            }
        });
        let status = match &outcome {
            Outcome::Ok => format!("{job} ok at {}", now.format("%H:%M:%SZ")),
            Outcome::Failed(_) => format!(
                "{job} FAILED at {} ({failures} in a row)",
                now.format("%H:%M:%SZ")
            ),
            Outcome::Cancelled => format!("{job} stopped for shutdown"),
        };
        shared.notifier.notify(&format!("STATUS={status}"));
        if matches!(outcome, Outcome::Cancelled) || cancel.is_cancelled() {
            return;
        }
    }
}

/// Run one job once. The only place that knows what each [`Job`] does.
async fn run_job(job: Job, cfg: &Config, shared: &Shared, cancel: &CancellationToken) -> Outcome {
    let mut store = match Store::open(&cfg.store.path) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let accounts: Vec<&crate::config::Account> = cfg.accounts.iter().collect();
    match job {
        Job::Collect => {
            let opts = CollectOptions {
                today: crate::clock::today(),
                progress: false,
                cancel: cancel.clone(),
                panic_account: shared.hooks.panic_account.clone(),
            };
            let (mut store, summaries) = match collect::collect(store, &accounts, &opts).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let now = Utc::now();
            shared.with_metrics(|m| {
                for s in &summaries {
                    *m.events_collected.entry(s.account.clone()).or_default() += s.written.inserted;
                }
            });
            if summaries.iter().any(|s| s.cancelled) || cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            // Users after the audit log, so the events that explain role changes are stored.
            let users = collect::users::sync_users(&mut store, &accounts).await;
            let mut failed = Vec::new();
            shared.with_metrics(|m| {
                for a in &accounts {
                    let pass = summaries.iter().find(|s| s.account == a.name);
                    let user = users.iter().find(|u| u.account == a.name);
                    let error = pass
                        .and_then(|s| s.error.clone())
                        .or_else(|| user.and_then(|u| u.error.clone()));
                    let h = m.accounts.entry(a.name.clone()).or_default();
                    match error {
                        Some(e) => {
                            failed.push(format!("{}: {e}", a.name));
                            h.last_error = Some(e);
                        }
                        None => {
                            h.last_error = None;
                            h.last_success = Some(now);
                        }
                    }
                }
            });
            // Alerts never fail the collection (their problems are logged by `alert`).
            let _ = crate::alert::evaluate(&mut store, &accounts, &cfg.alerts, crate::clock::now());
            let _ = crate::alert::deliver(&mut store, &cfg.alerts).await;
            if failed.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Failed(failed.join("; "))
            }
        }
        Job::PollInvites => {
            let polls =
                collect::users::poll_invites(&mut store, &accounts, cfg.users.stale_invite_days)
                    .await;
            let failed: Vec<String> = polls
                .iter()
                .filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.account)))
                .collect();
            if failed.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Failed(failed.join("; "))
            }
        }
        Job::Reports => {
            match crate::report::run::run_configured(&store, cfg, &accounts, crate::clock::now()) {
                Ok(run) => {
                    tracing::info!(event = "reports_written", dir = %run.dir.display(), files = run.manifest.files.len());
                    Outcome::Ok
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Job::DeliverAlerts => {
            // A failed delivery is the outbox's business (retried, then dead-lettered); only a
            // store problem fails the job.
            let d = crate::alert::deliver(&mut store, &cfg.alerts).await;
            match d.error {
                Some(e) => Outcome::Failed(e),
                None => Outcome::Ok,
            }
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 when every configured account's last collection succeeded and is recent enough
/// (`[daemon] ready_max_age_secs`), else 503 with one line per account that is not.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let cfg = shared.config.borrow().clone();
    let max_age = chrono::Duration::from_std(cfg.daemon.ready_max_age).unwrap_or_default();
    let now = Utc::now();
    let mut problems = Vec::new();
    shared.with_metrics(|m| {
        for a in &cfg.accounts {
            match m.accounts.get(&a.name) {
                Some(AccountHealth {
                    last_error: Some(e),
                    ..
                }) => problems.push(format!("{}: last pass failed: {e}", a.name)),
                Some(AccountHealth {
                    last_success: Some(t),
                    ..
                }) if now - *t <= max_age => {}
                Some(AccountHealth {
                    last_success: Some(t),
                    ..
                }) => problems.push(format!(
                    "{}: last successful pass {} is too old",
                    a.name,
                    t.to_rfc3339()
                )),
                _ => problems.push(format!("{}: no successful pass yet", a.name)),
            }
        }
    });
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let body: String = problems
            .iter()
            .map(|p| format!("{}\n", one_line(p)))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// How long a scrape waits for fresh database figures before it serves the latest ones.
const SCRAPE_DB_WAIT: Duration = Duration::from_millis(500);
/// How long the scrape's read waits for a lock (a WAL reader rarely has to).
const SCRAPE_DB_BUSY: Duration = Duration::from_millis(250);

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (db, read_at) = match scrape_db_figures(&shared).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(event = "metrics_failed", error = %e);
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("# the database could not be read: {}\n", one_line(&e)),
            );
        }
    };
    let age = (Utc::now() - read_at).to_std().unwrap_or_default();
    let requests = crate::api::counters::global().snapshot();
    let mut text = shared.with_metrics(|m| render_metrics(m, &db, age, &requests));
    // Client certificate expiry (mTLS accounts): read from the files, on a blocking thread.
    let accounts = shared.config.borrow().accounts.clone();
    let certs = tokio::task::spawn_blocking(move || crate::api::tls::expiry_metrics(&accounts));
    text.push_str(&certs.await.unwrap_or_default());
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The database figures for one scrape: read now when that finishes within
/// [`SCRAPE_DB_WAIT`], else the latest figures read (a read still under way stores its result
/// for the next scrape). An error only when the read failed and nothing was ever read.
async fn scrape_db_figures(
    shared: &Arc<Shared>,
) -> Result<(Arc<DbFigures>, DateTime<Utc>), String> {
    if shared.db_reading.swap(true, Ordering::AcqRel) {
        return Ok(shared.latest_db_figures());
    }
    let cfg = shared.config.borrow().clone();
    let names: Vec<String> = cfg.accounts.iter().map(|a| a.name.clone()).collect();
    let s = shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        /// Clears `db_reading` however the read ends (a panic included).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _done = Done(&s.db_reading);
        let figures = Arc::new(db_figures(&cfg.store.path, &names)?);
        s.set_db_figures(figures.clone());
        Ok::<_, crate::store::StoreError>(figures)
    });
    match tokio::time::timeout(SCRAPE_DB_WAIT, read).await {
        Ok(Ok(Ok(f))) => Ok((f, Utc::now())),
        Ok(Ok(Err(e))) => {
            tracing::warn!(event = "metrics_db_read_failed", error = %e, "serving the latest database figures");
            Ok(shared.latest_db_figures())
        }
        Ok(Err(e)) => Err(format!("the metrics task failed: {e}")),
        // Still reading: it keeps its result for the next scrape.
        Err(_) => Ok(shared.latest_db_figures()),
    }
}

/// Figures read from the database at scrape time.
#[derive(Debug, Default)]
struct DbFigures {
    /// (account, events stored, quarantined, last successful pass)
    accounts: Vec<(String, u64, u64, Option<DateTime<Utc>>)>,
    alerts: Vec<(String, u64)>,
}

fn db_figures(path: &Path, accounts: &[String]) -> Result<DbFigures, crate::store::StoreError> {
    let store = Store::open_read_only_with_busy_timeout(path, SCRAPE_DB_BUSY)?;
    read_db_figures(&store, accounts)
}

fn read_db_figures(
    store: &Store,
    accounts: &[String],
) -> Result<DbFigures, crate::store::StoreError> {
    let mut out = Vec::new();
    for a in accounts {
        let s = store.account_status(a)?;
        out.push((a.clone(), s.events, s.quarantined, s.last_success));
    }
    Ok(DbFigures {
        accounts: out,
        alerts: store.alert_state_counts()?,
    })
}

/// A label value escaped for the Prometheus text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_metrics(
    m: &Metrics,
    db: &DbFigures,
    db_age: Duration,
    requests: &crate::api::counters::CountsSnapshot,
) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let head = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut o,
        "auditwarden_events_stored",
        "gauge",
        "Audit events in the database, per account.",
    );
    for (a, events, _, _) in &db.accounts {
        let _ = writeln!(
            o,
            "auditwarden_events_stored{{account=\"{}\"}} {events}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_quarantined_events",
        "gauge",
        "Items kept in quarantine (not understood), per account.",
    );
    for (a, _, q, _) in &db.accounts {
        let _ = writeln!(
            o,
            "auditwarden_quarantined_events{{account=\"{}\"}} {q}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_events_collected_total",
        "counter",
        "New audit events stored by this process's collections, per account.",
    );
    for (a, _, _, _) in &db.accounts {
        let n = m.events_collected.get(a).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "auditwarden_events_collected_total{{account=\"{}\"}} {n}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_api_requests_total",
        "counter",
        "API responses by account, endpoint and HTTP status (0: transport error or timeout), retries included, counted as they arrive.",
    );
    for (a, endpoint, status, n) in &requests.responses {
        let _ = writeln!(
            o,
            "auditwarden_api_requests_total{{account=\"{}\",endpoint=\"{}\",status=\"{status}\"}} {n}",
            label(a),
            endpoint.as_str()
        );
    }
    head(
        &mut o,
        "auditwarden_api_retries_total",
        "counter",
        "API requests retried, per account.",
    );
    for (a, n) in &requests.retries {
        let _ = writeln!(
            o,
            "auditwarden_api_retries_total{{account=\"{}\"}} {n}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_alerts",
        "gauge",
        "Alert deliveries by state (pending, sent, failed), and alerts suppressed on backfill.",
    );
    for state in ["pending", "sent", "failed", "suppressed"] {
        let n = db
            .alerts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(o, "auditwarden_alerts{{state=\"{state}\"}} {n}");
    }
    head(
        &mut o,
        "auditwarden_metrics_db_age_seconds",
        "gauge",
        "Age of the database figures in this scrape: 0 when read for it, more when the database was busy and the latest figures read are shown.",
    );
    let _ = writeln!(
        o,
        "auditwarden_metrics_db_age_seconds {:.3}",
        db_age.as_secs_f64()
    );
    head(
        &mut o,
        "auditwarden_account_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the account's last successful collection (0: never).",
    );
    for (a, _, _, db_last) in &db.accounts {
        // CertCentral has no audit-log pass in the database: use the daemon's own record.
        let mem = m.accounts.get(a).and_then(|h| h.last_success);
        let t = (*db_last).max(mem).map_or(0, |t| t.timestamp());
        let _ = writeln!(
            o,
            "auditwarden_account_last_success_timestamp_seconds{{account=\"{}\"}} {t}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_account_up",
        "gauge",
        "1 when the account's latest collection succeeded, else 0.",
    );
    for (a, _, _, _) in &db.accounts {
        let up = m
            .accounts
            .get(a)
            .is_some_and(|h| h.last_error.is_none() && h.last_success.is_some());
        let _ = writeln!(
            o,
            "auditwarden_account_up{{account=\"{}\"}} {}",
            label(a),
            u8::from(up)
        );
    }
    head(
        &mut o,
        "auditwarden_job_runs_total",
        "counter",
        "Job runs by job and result.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_runs_total{{job=\"{job}\",result=\"ok\"}} {}",
            s.runs_ok
        );
        let _ = writeln!(
            o,
            "auditwarden_job_runs_total{{job=\"{job}\",result=\"failed\"}} {}",
            s.runs_failed
        );
    }
    head(
        &mut o,
        "auditwarden_job_seconds_total",
        "counter",
        "Total seconds spent in each job.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_seconds_total{{job=\"{job}\"}} {:.3}",
            s.duration_sum_secs
        );
    }
    head(
        &mut o,
        "auditwarden_job_last_duration_seconds",
        "gauge",
        "Duration of each job's latest run.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_last_duration_seconds{{job=\"{job}\"}} {:.3}",
            s.last_duration_secs
        );
    }
    head(
        &mut o,
        "auditwarden_job_last_success_timestamp_seconds",
        "gauge",
        "Unix time of each job's last successful run (0: never since start).",
    );
    for job in Job::ALL {
        let t = m
            .jobs
            .get(&job)
            .and_then(|s| s.last_success)
            .map_or(0, |t| t.timestamp());
        let _ = writeln!(
            o,
            "auditwarden_job_last_success_timestamp_seconds{{job=\"{job}\"}} {t}"
        );
    }
    head(
        &mut o,
        "auditwarden_job_consecutive_failures",
        "gauge",
        "Failed runs in a row (0 after a success).",
    );
    for job in Job::ALL {
        let n = m.jobs.get(&job).map_or(0, |s| s.consecutive_failures);
        let _ = writeln!(
            o,
            "auditwarden_job_consecutive_failures{{job=\"{job}\"}} {n}"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff doubles from the base, is capped, and its jitter stays within half to all of it.
    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, base, max), Duration::ZERO);
        for _ in 0..100 {
            let b1 = backoff(1, base, max);
            assert!(b1 >= Duration::from_secs(5) && b1 <= base, "{b1:?}");
            let b3 = backoff(3, base, max);
            assert!(b3 >= Duration::from_secs(20) && b3 <= Duration::from_secs(40));
            let b9 = backoff(40, base, max);
            assert!(b9 >= Duration::from_secs(30) && b9 <= max);
        }
    }
}
