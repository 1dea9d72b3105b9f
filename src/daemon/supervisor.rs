//! The supervisor: one loop per job on its schedule, failures backing off, reloads, and the
//! orderly stop within the grace period.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use chrono::Utc;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::schedule::Job;
use crate::store::Store;

use super::http::{healthz, metrics_handler, readyz};
use super::jobs::{run_job, Outcome};
use super::metrics::{read_db_figures, AccountHealth, Metrics};
use super::{DaemonError, Notifier, Shared, Stopped, TestHooks};

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
    let mut config = config;
    name_node(&mut config);
    let node = config.accounts.first().and_then(|a| a.node.clone());
    // Open (and migrate) the database once up front, so a bad path fails the start, not a job.
    let target = config.store.target.clone();
    let names: Vec<String> = config.accounts.iter().map(|a| a.name.clone()).collect();
    let (health, figures) = tokio::task::spawn_blocking(move || {
        let store = Store::open_target(&target)?;
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
    // This node's `node:` lease for its life (PostgreSQL): the others count it in their share.
    let registration = {
        let cfg = config.clone();
        tokio::task::spawn_blocking(move || super::leases::register_node(&cfg))
            .await
            .map_err(|e| DaemonError::Internal(format!("registering the node: {e}")))??
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
    if matches!(
        shared.config.borrow().store.target,
        crate::store::StoreTarget::Postgres(_)
    ) {
        tasks.spawn(takeover_loop(shared.clone(), cancel.clone()));
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
    let node = node.unwrap_or_else(|| super::leases::node_name(&shared.config.borrow()));
    tracing::info!(event = "daemon_started", node = %node, jobs = %describe_schedule(&shared.config.borrow()));

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = reloads.recv() => match r {
                Some(new) => {
                    if new.store.target != shared.config.borrow().store.target {
                        tracing::warn!(event = "reload_partial", "store.path (or url) changed: takes effect after a restart; keeping the old database");
                    }
                    let mut new = new;
                    new.store.target = shared.config.borrow().store.target.clone();
                    name_node(&mut new);
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
    // Gives the node's lease up (its heartbeat thread ends): the others' shares grow at once.
    drop(registration);
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

/// Every account's requests name this node in their `User-Agent` (the server side tells
/// daemons apart by it; see `api::Client`).
fn name_node(cfg: &mut Config) {
    let node = super::leases::node_name(cfg);
    for a in &mut cfg.accounts {
        a.node = Some(node.clone());
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
        let node = super::leases::node_name(&cfg);
        tracing::info!(event = "job_started", job = %job, node = %node);
        let started = Instant::now();
        let outcome = {
            let (cfg, shared, cancel) = (cfg.clone(), shared.clone(), cancel.clone());
            let runtime = tokio::runtime::Handle::current();
            // The run's own blocking thread (see the module docs): its store calls block that
            // thread only; its requests still run on the runtime's I/O driver.
            let run = tokio::task::spawn_blocking(move || {
                runtime.block_on(run_job(job, next, &cfg, &shared, &cancel))
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
                tracing::info!(event = "job_finished", job = %job, node = %node, secs);
            }
            Outcome::Failed(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, cfg.daemon.backoff_base, cfg.daemon.backoff_max);
                tracing::error!(event = "job_failed", job = %job, node = %node, secs, failures, error = %e, "backing off about {}s before the next run", wait.as_secs());
            }
            Outcome::Cancelled => {
                tracing::info!(event = "job_cancelled", job = %job, node = %node, secs);
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

/// The takeover watch (PostgreSQL): at least every heartbeat (a third of `lease_secs`), and when
/// the next lease held by another node would lapse, one read of the lease table looks for keys
/// of the configured accounts that a node died (or froze) holding;
/// when there are some, this node takes its part of them and collects those accounts at once,
/// beside its scheduled run. So a `kill -9` costs the accounts at most `lease_secs` plus one
/// heartbeat, instead of waiting for a survivor's next scheduled run (or for the end of a long
/// one). Off while collection is switched off.
async fn takeover_loop(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut probe: Option<Store> = None;
    // Takeover runs in flight. Each works keys no other run of this node works (see
    // `leases::take`), so several run at once: a key that lapses while an earlier takeover is
    // still collecting is taken at once, not after it. Bounded all the same.
    let mut runs = tokio::task::JoinSet::new();
    let mut wait = Duration::ZERO;
    loop {
        let cfg = shared.config.borrow().clone();
        let every = (cfg.daemon.lease / 3).max(Duration::from_millis(100));
        tokio::select! {
            _ = cancel.cancelled() => {
                // Each run stops at its next safe point; the supervisor's grace bounds the wait.
                while runs.join_next().await.is_some() {}
                return;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        wait = every;
        while runs.try_join_next().is_some() {}
        if cfg.job_schedule(Job::Collect).is_none() || runs.len() >= MAX_TAKEOVER_RUNS {
            continue;
        }
        let (check_cfg, open) = (cfg.clone(), probe.take());
        let checked = tokio::task::spawn_blocking(move || {
            let store = match open {
                Some(s) => s,
                None => Store::open_target(&check_cfg.store.target)?,
            };
            let watch = super::leases::watch(&check_cfg, &store)?;
            Ok::<_, crate::store::StoreError>((store, watch))
        })
        .await;
        let watch = match checked {
            Ok(Ok((store, watch))) => {
                probe = Some(store);
                watch
            }
            Ok(Err(e)) => {
                tracing::warn!(event = "takeover_check_failed", error = %e);
                continue;
            }
            Err(e) => {
                tracing::warn!(event = "takeover_check_failed", error = %e);
                continue;
            }
        };
        // Look again when the next lease held elsewhere would lapse (a live node renews it
        // first, every third of `lease_secs`; a dead one's lapses then), at most a heartbeat on.
        if let Some(at) = watch.next_expiry_ms {
            let until = u64::try_from(at - crate::clock::now_ms()).unwrap_or(0) + 20;
            wait = Duration::from_millis(until).clamp(Duration::from_millis(50), every);
        }
        if watch.orphans {
            runs.spawn(takeover(cfg, shared.clone(), cancel.clone()));
        }
    }
}

/// At most this many takeover runs of one node at once.
const MAX_TAKEOVER_RUNS: usize = 8;

/// One takeover run (see [`takeover_loop`]) on a blocking thread of its own, as a job run's
/// (its store calls block only it), and its outcome logged.
async fn takeover(cfg: Arc<Config>, shared: Arc<Shared>, cancel: CancellationToken) {
    let node = super::leases::node_name(&cfg);
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let run = tokio::task::spawn_blocking(move || {
        runtime.block_on(super::jobs::takeover_run(&cfg, &shared, &cancel))
    });
    let outcome = run.await;
    let secs = started.elapsed().as_secs_f64();
    match outcome {
        Ok(None) | Ok(Some(Outcome::Cancelled)) => {}
        Ok(Some(Outcome::Ok)) => {
            tracing::info!(event = "takeover_finished", node = %node, secs);
        }
        Ok(Some(Outcome::Failed(e))) => {
            tracing::error!(event = "takeover_failed", node = %node, secs, error = %e, "the accounts taken over are collected again by the next scheduled run");
        }
        Err(e) => {
            tracing::error!(event = "takeover_failed", node = %node, error = %e);
        }
    }
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
