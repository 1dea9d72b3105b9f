//! One collection pass, written once for `auditwarden collect`, the daemon's collect job and the
//! demo: the audit log of every account, then their users (after the audit log, so the events
//! that explain role changes are stored), then the alert rules on what that established and the
//! delivery of every alert due. It returns what happened; callers print it (`cli`) or count it
//! (the daemon), and may watch each stage as it finishes through [`PassOptions::on_stage`].
//!
//! A cancelled audit-log pass (shutdown) ends the pass there: users and alerts wait for the next
//! one. Alerts never fail a pass: their problems are in [`AlertsOutcome`] (and logged by
//! `alert`), never in [`PassOutcome::failed`].

use crate::alert::{DeliverySummary, EvaluationSummary};
use crate::collect::users::UserSummary;
use crate::collect::{self, AccountSummary, CollectError, CollectOptions};
use crate::config::{Account, AlertSettings};
use crate::store::Store;

/// A stage of the pass that has just finished, for callers that show or count it as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// The audit log of every account is collected (also when the pass was cancelled).
    Collected(&'a [AccountSummary]),
    /// The users of every account are synced (after their audit log).
    UsersSynced {
        collected: &'a [AccountSummary],
        users: &'a [UserSummary],
    },
}

/// How to run a pass.
pub struct PassOptions<'a> {
    pub collect: CollectOptions,
    /// Evaluate the alert rules and deliver after the user sync. `None` leaves alerts to the
    /// caller, who runs [`alerts`] itself later (the demo, which first shows the role changes).
    pub alerts: Option<&'a AlertSettings>,
    /// Called as each [`Stage`] finishes (before the next begins).
    pub on_stage: Option<&'a mut (dyn FnMut(Stage<'_>) + Send)>,
}

/// What the alert step did.
#[derive(Debug)]
pub struct AlertsOutcome {
    /// One per account: alerts written, or why the rules could not be evaluated.
    pub evaluated: Vec<EvaluationSummary>,
    pub delivery: DeliverySummary,
}

/// What one pass did.
pub struct PassOutcome {
    /// The store, handed back for what the caller does next.
    pub store: Store,
    /// The audit-log pass of each account.
    pub collected: Vec<AccountSummary>,
    /// The user sync of each account (empty when the pass was cancelled).
    pub users: Vec<UserSummary>,
    /// `None` when the pass was cancelled or [`PassOptions::alerts`] was `None`.
    pub alerts: Option<AlertsOutcome>,
    /// The pass stopped after the audit log because it was cancelled (shutdown).
    pub cancelled: bool,
}

impl PassOutcome {
    /// The account's failure: its audit-log pass's error, else its user sync's.
    pub fn account_error(&self, account: &str) -> Option<&str> {
        account_error(&self.collected, &self.users, account)
    }

    /// Some account's audit-log pass or user sync failed.
    pub fn failed(&self) -> bool {
        self.collected.iter().any(|s| s.error.is_some())
            || self.users.iter().any(|u| u.error.is_some())
    }
}

/// The account's failure in a pass: its audit-log pass's error, else its user sync's.
pub fn account_error<'a>(
    collected: &'a [AccountSummary],
    users: &'a [UserSummary],
    account: &str,
) -> Option<&'a str> {
    let pass = collected.iter().find(|s| s.account == account);
    let user = users.iter().find(|u| u.account == account);
    pass.and_then(|s| s.error.as_deref())
        .or_else(|| user.and_then(|u| u.error.as_deref()))
}

/// Run one pass over `accounts`. An error only when the store fails before accounts could run
/// (an account's failure is in its summary).
pub async fn run_pass(
    store: Store,
    accounts: &[&Account],
    opts: PassOptions<'_>,
) -> Result<PassOutcome, CollectError> {
    let PassOptions {
        collect: collect_opts,
        alerts: alert_settings,
        mut on_stage,
    } = opts;
    let (mut store, collected) = collect::collect(store, accounts, &collect_opts).await?;
    if let Some(f) = on_stage.as_mut() {
        f(Stage::Collected(&collected));
    }
    if collected.iter().any(|s| s.cancelled) || collect_opts.cancel.is_cancelled() {
        return Ok(PassOutcome {
            store,
            collected,
            users: Vec::new(),
            alerts: None,
            cancelled: true,
        });
    }
    // Users after the audit log, so the events that explain role changes are stored.
    let users = collect::users::sync_users(&mut store, accounts).await;
    if let Some(f) = on_stage.as_mut() {
        f(Stage::UsersSynced {
            collected: &collected,
            users: &users,
        });
    }
    let alerts = match alert_settings {
        Some(settings) => Some(alerts(&mut store, accounts, settings).await),
        None => None,
    };
    Ok(PassOutcome {
        store,
        collected,
        users,
        alerts,
        cancelled: false,
    })
}

/// Evaluate the alert rules on what the store has established for `accounts`, then deliver every
/// alert that is due. The alert step of [`run_pass`], also run alone after `sync-users` and by
/// the demo.
pub async fn alerts(
    store: &mut Store,
    accounts: &[&Account],
    settings: &AlertSettings,
) -> AlertsOutcome {
    let evaluated = crate::alert::evaluate(store, accounts, settings, crate::clock::now());
    let delivery = crate::alert::deliver(store, settings).await;
    // The rules read recent failed sign-ins and every new fact of the pass: give back the page
    // cache and heap that took, as the collection and the user sync do after theirs.
    crate::collect::release_memory(store);
    AlertsOutcome {
        evaluated,
        delivery,
    }
}
