//! The body of each job: what one run of a [`Job`] does, and what it came to.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::collect::{self, CollectOptions};
use crate::config::Config;
use crate::schedule::Job;
use crate::store::Store;

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

/// Run one job once. The only place that knows what each [`Job`] does.
pub(super) async fn run_job(
    job: Job,
    cfg: &Config,
    shared: &Shared,
    cancel: &CancellationToken,
) -> Outcome {
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
