//! `auditwarden run`: the long-running daemon. Owns the job loops, the health and metrics
//! listener, configuration reloads and the orderly stop.
//!
//! The entry point hands in everything that touches the process ([`run`] takes the listener, the
//! stream of reloaded configurations, the shutdown future and the systemd notifier as
//! parameters), so this module reads no environment and installs no signal handler.
//!
//! - **One loop per [`Job`](crate::schedule::Job)**: a job never overlaps itself because its loop awaits the run before
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
//!
//! Files: `supervisor.rs` (the job loops, reloads, the orderly stop), `jobs.rs` (what each job
//! does), `http.rs` (`/healthz`, `/readyz`, `/metrics`), `metrics.rs` (the counters and their
//! Prometheus text), `notify.rs` (`sd_notify`).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::config::Config;

mod http;
mod jobs;
mod leases;
pub use leases::lease_key;
mod metrics;
mod notify;
mod supervisor;

pub use notify::Notifier;
pub use supervisor::run;

use metrics::{DbFigures, Metrics};

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
