//! The body of each job: what one run of a [`Job`] does, and what it came to.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::collect::{self, CollectOptions};
use crate::config::Config;
use crate::pass::{self, PassOptions, Stage};
use crate::schedule::Job;
use crate::store::Store;

use super::leases::Purpose;
use super::Shared;

/// What one job run came to.
#[derive(Debug)]
pub(super) enum Outcome {
    Ok,
    /// Something failed (an account, the store); the message is logged.
    Failed(String),
    /// Stopped by shutdown before finishing: neither success nor failure.
    Cancelled,
}

/// Run one job once, for its scheduled `tick`. The only place that knows what each [`Job`]
/// does.
pub(super) async fn run_job(
    job: Job,
    tick: Option<DateTime<Utc>>,
    cfg: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Outcome {
    let mut store = match Store::open_target(&cfg.store.target) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let all: Vec<&crate::config::Account> = cfg.accounts.iter().collect();
    // Jobs that write an account's history work only the accounts whose lease this node holds
    // (PostgreSQL; on SQLite all of them), fenced for the run; `_leases` gives them up after it.
    let purpose = match job {
        Job::Collect => Some(Purpose::Collect),
        Job::PollInvites => Some(Purpose::Poll),
        Job::Reports | Job::DeliverAlerts => None,
    };
    let (accounts, _leases) = match purpose {
        Some(p) => match super::leases::take(cfg, &mut store, &all, p) {
            Ok(taken) => taken,
            Err(e) => return Outcome::Failed(e.to_string()),
        },
        None => (all, super::leases::Held::none()),
    };
    match job {
        Job::Collect => collect_run(store, &accounts, cfg, shared, cancel).await,
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
            // Once per tick across the daemons on one database: the first claim of the tick
            // writes the report set, the others skip it.
            let node = super::leases::node_name(cfg);
            if let Some(tick) = tick {
                let now_ms = crate::clock::now_ms();
                match store.claim_tick(&job.to_string(), tick.timestamp_millis(), &node, now_ms) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(event = "report_tick_claimed_elsewhere", node = %node, tick = %tick.to_rfc3339(), "another daemon writes this tick's report set");
                        return Outcome::Ok;
                    }
                    Err(e) => return Outcome::Failed(e.to_string()),
                }
            }
            match crate::report::run::run_configured(&store, cfg, &accounts, crate::clock::now()) {
                Ok(run) => {
                    tracing::info!(event = "reports_written", node = %node, tick = %tick.map(|t| t.to_rfc3339()).unwrap_or_default(), dir = %run.dir.display(), files = run.manifest.files.len());
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

/// One collection run over `accounts` (their leases held by the caller): the pass, the
/// daemon's figures moved as each stage finishes, and what it came to.
async fn collect_run(
    store: Store,
    accounts: &[&crate::config::Account],
    cfg: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Outcome {
    let mut failed = Vec::new();
    // The daemon's figures move as each stage finishes, not after the alert delivery.
    let mut count = |stage: Stage<'_>| match stage {
        Stage::Collected(summaries) => shared.with_metrics(|m| {
            for s in summaries {
                *m.events_collected.entry(s.account.clone()).or_default() += s.written.inserted;
                match s.pace.and_then(|p| p.rate) {
                    Some(rate) => {
                        m.pace_rps.insert(s.account.clone(), rate);
                    }
                    None => {
                        m.pace_rps.remove(&s.account);
                    }
                }
            }
        }),
        Stage::UsersSynced { collected, users } => {
            let now = Utc::now();
            shared.with_metrics(|m| {
                for a in accounts {
                    let error = pass::account_error(collected, users, &a.name);
                    let h = m.accounts.entry(a.name.clone()).or_default();
                    match error {
                        Some(e) => {
                            failed.push(format!("{}: {e}", a.name));
                            h.last_error = Some(e.to_string());
                        }
                        None => {
                            h.last_error = None;
                            h.last_success = Some(now);
                        }
                    }
                }
            });
        }
    };
    let opts = PassOptions {
        collect: CollectOptions {
            today: crate::clock::today(),
            progress: false,
            cancel: cancel.clone(),
            panic_account: shared.hooks.panic_account.clone(),
            max_accounts: cfg.max_concurrent_accounts,
        },
        // Alerts never fail the collection (their problems are logged by `alert`).
        alerts: Some(&cfg.alerts),
        on_stage: Some(&mut count),
    };
    let pass = match pass::run_pass(store, accounts, opts).await {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if pass.cancelled {
        return Outcome::Cancelled;
    }
    if failed.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Failed(failed.join("; "))
    }
}

/// The takeover watch's run (PostgreSQL): when a node died holding keys of the configured
/// accounts, take this node's part of them now and collect those accounts, instead of waiting
/// for the next scheduled run. `None` when there was nothing to take.
pub(super) async fn takeover_run(
    cfg: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Option<Outcome> {
    let mut store = match Store::open_target(&cfg.store.target) {
        Ok(s) => s,
        Err(e) => return Some(Outcome::Failed(e.to_string())),
    };
    let all: Vec<&crate::config::Account> = cfg.accounts.iter().collect();
    let (accounts, _leases) = match super::leases::take(cfg, &mut store, &all, Purpose::Takeover) {
        Ok(taken) => taken,
        Err(e) => return Some(Outcome::Failed(e.to_string())),
    };
    if accounts.is_empty() {
        return None;
    }
    Some(collect_run(store, &accounts, cfg, shared, cancel).await)
}
