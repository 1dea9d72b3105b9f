//! The store's interface types: what goes in and comes out of a [`Backend`](super::Backend),
//! in plain Rust and domain types. Every backend maps its rows to these; nothing here knows SQL.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::api::{AuditEvent, Malformed};
use crate::domain::{
    DeliveryStatus, HistoryField, RoleChangeKind, RoleChangeSource, UserRunKind, UserStatus,
};
use crate::domain::{FailedSignIn, Grant, NewCredential, NewUser, ServiceUserEnd};

/// One user as stored. `raw` is empty when loaded by [`Store::load_users`] (it is only written).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRow {
    pub user_id: String,
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_type: Option<String>,
    pub status: UserStatus,
    pub status_raw: String,
    /// Sorted role codes or names.
    pub roles: Vec<String>,
    pub created_ms: Option<i64>,
    pub last_login_ms: Option<i64>,
    pub container: Option<String>,
    pub raw: String,
    pub fingerprint: i64,
    pub first_seen_ms: i64,
    pub updated_ms: i64,
    pub invited_ms: Option<i64>,
    pub accepted_ms: Option<i64>,
    pub accepted_after_ms: Option<i64>,
    pub accepted_at_ms: Option<i64>,
    pub deleted_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// `domain::is_privileged` of `roles` for the account's kind, stored with the row (reports
    /// order by it in SQL). Written, not read back by [`Store::load_users`].
    pub privileged: bool,
}

/// One observed change (or first sighting) of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub user_id: String,
    pub observed_ms: i64,
    /// The previous observation: the change happened between `after_ms` and `observed_ms`.
    pub after_ms: Option<i64>,
    pub field: HistoryField,
    pub before: Option<String>,
    pub after: Option<String>,
    pub detail: Option<String>,
    pub source: UserRunKind,
}

/// Who changed a role, when and from where: an audit event (contract 1.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub event_id: String,
    pub event_ms: i64,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub ip_address: Option<String>,
}

/// One role granted or revoked.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleChange {
    pub user_id: String,
    pub role: String,
    pub change: RoleChangeKind,
    /// The snapshot that showed it, and the one before (`None` when only the audit log saw it).
    pub observed_ms: Option<i64>,
    pub after_ms: Option<i64>,
    pub evidence: Option<Evidence>,
}

/// A stored role change, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRoleChange {
    pub seq: i64,
    pub user_id: String,
    pub role: String,
    pub change: RoleChangeKind,
    pub observed_ms: Option<i64>,
    pub after_ms: Option<i64>,
    pub evidence: Option<Evidence>,
    pub source: RoleChangeSource,
}

/// A user confirmed gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub user_id: String,
    pub deleted_ms: i64,
    pub last_seen_ms: i64,
}

/// What one step of a sync or poll writes, in one transaction.
#[derive(Debug, Default)]
pub struct UserBatch {
    pub rows: Vec<UserRow>,
    pub deletions: Vec<Deletion>,
    pub history: Vec<HistoryRow>,
    pub role_changes: Vec<RoleChange>,
}

impl UserBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
            && self.deletions.is_empty()
            && self.history.is_empty()
            && self.role_changes.is_empty()
    }
}

/// An audit event that may carry role details (`user`/`service_user`, `create`/`update`).
#[derive(Debug, Clone)]
pub struct RoleEvent {
    pub seq: i64,
    /// The target user (`resource_id`).
    pub user_id: String,
    pub data: String,
    pub evidence: Evidence,
}

/// One user sync or invitation poll, for the log.
#[derive(Debug, Clone)]
pub struct UserRun {
    pub account: String,
    pub kind: UserRunKind,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub complete: bool,
    pub listed: u64,
    pub changes: u64,
    pub error: Option<String>,
}

/// A user for `auditwarden users`, with the last activity worked out.
#[derive(Debug, Clone)]
pub struct UserListing {
    pub account: String,
    pub user: UserRow,
    /// Latest successful event the user acted in (time, event id).
    pub last_event: Option<(i64, String)>,
    /// The first sign-in inside the window in which an invitation was seen accepted.
    pub accept_event: Option<(i64, String)>,
}

/// The facts the rules have not seen yet for one account.
#[derive(Debug, Default)]
pub struct AlertFacts {
    pub grants: Vec<Grant>,
    pub new_users: Vec<NewUser>,
    /// Every current service user with its end date (`credential-expiring`; keyed by user and
    /// end date, so re-reading them raises nothing twice).
    pub service_users: Vec<ServiceUserEnd>,
    /// Tokens and certificates created since the last evaluation (`credential-created`).
    pub credentials: Vec<NewCredential>,
    /// Failed sign-ins of the recent past (`sign_ins.rs`), re-read each time: a burst's alert is
    /// keyed by its first event, so reading them again writes nothing twice.
    pub failed_sign_ins: Vec<FailedSignIn>,
}

/// One alert to write (ignored if its key exists already).
#[derive(Debug, Clone)]
pub struct NewAlert {
    pub key: String,
    pub uid: String,
    pub rule: String,
    pub severity: String,
    pub at_ms: Option<i64>,
    pub summary: String,
    pub payload: String,
    pub suppressed: bool,
    /// The role change (`role_changes.seq`) it was raised on; `None` for a first sighting.
    pub role_change_seq: Option<i64>,
}

/// What one evaluation wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AlertCounts {
    pub facts: u64,
    pub alerts: u64,
    pub suppressed: u64,
}

/// One alert for one sink, as listed or delivered. `sink` and `delivery_id` are `None` for an
/// alert with no delivery (suppressed, or no sink configured when it was written).
#[derive(Debug, Clone)]
pub struct AlertDelivery {
    pub alert_id: i64,
    pub delivery_id: Option<i64>,
    pub uid: String,
    pub account: String,
    pub rule: String,
    pub severity: String,
    pub at_ms: Option<i64>,
    pub summary: String,
    pub payload: String,
    pub sink: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_ms: i64,
    /// A pending delivery that a run could not send is not tried before this.
    pub next_attempt_ms: Option<i64>,
    /// The first run that could not send it (the start of the give-up horizon).
    pub failing_since_ms: Option<i64>,
    /// The run holding it and until when (a lease), while one is sending it.
    pub claimed_by: Option<String>,
    pub claim_until_ms: Option<i64>,
}

/// The deliveries a run may try now, and per sink those that wait for a later attempt.
#[derive(Debug, Default)]
pub struct DueDeliveries {
    /// Pending and due, per sink in alert order (possibly claimed by another run: the claim
    /// decides).
    pub due: Vec<AlertDelivery>,
    /// Per sink: pending deliveries not due yet, and the earliest next attempt among them.
    pub waiting: BTreeMap<String, (u64, Option<i64>)>,
}

/// What [`Store::claim_delivery`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds it until the lease it asked for; with its failure history so far.
    Claimed {
        failing_since_ms: Option<i64>,
        failed_runs: u32,
    },
    /// Another run holds a claim that has not lapsed and whose owner is not known to be gone.
    Held,
    /// No longer pending, or not due (sent, failed, rescheduled since it was listed).
    Gone,
}

/// What a run records about a delivery it holds (see [`Store::record_delivery`]).
#[derive(Debug, Clone, Copy)]
pub enum DeliveryUpdate<'a> {
    /// One failed attempt; another follows in this run, so the claim is renewed to `claim_until_ms`.
    Attempt {
        error: &'a str,
        claim_until_ms: i64,
    },
    Sent,
    /// The dead letter: refused for good, or failing for longer than the give-up horizon.
    Failed {
        error: &'a str,
    },
    /// Not sent in this run: pending again, not tried before `next_attempt_ms`.
    Later {
        error: &'a str,
        next_attempt_ms: i64,
    },
}

/// What [`Store::defer_deliveries`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// Pending, with the new next attempt.
    pub later: u64,
    /// Failing for longer than the horizon: now dead letters.
    pub given_up: u64,
}

/// One role change with the target user's current name and the instant the report files it
/// under (the audit event's time, else the snapshot that observed it).
#[derive(Debug, Clone)]
pub struct RoleChangeRow {
    pub account: String,
    pub change: StoredRoleChange,
    pub user_name: Option<String>,
    pub at_ms: i64,
    /// Names of the alert rules that flagged this change (empty: none).
    pub alert_rules: Vec<String>,
}

/// A user with their latest successful audit event as actor (and, for invitations, the first
/// sign-in inside the acceptance window), as [`UserListing`] carries them.
#[derive(Debug, Clone)]
pub struct UserActivityRow {
    pub listing: UserListing,
    /// Holds a privileged role (`domain::is_privileged`, stored with the user).
    pub privileged: bool,
    /// Last activity, else invitation, creation or first sighting: what inactivity counts from.
    pub inactive_since_ms: i64,
}

/// Which users a user report streams, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSelection {
    /// Everyone but deleted users; privileged first, then by name (access review).
    Current,
    /// Not deleted and inactive since at or before this instant (ms); privileged first, then the
    /// longest inactive first (dormant accounts).
    InactiveSince(i64),
    /// Pending invitations and accepted ones, oldest invitation first (invitations).
    Invitations,
}

/// What proves a day window complete: written with the window's last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowDone {
    pub server_total: Option<u64>,
    pub received: u64,
}

/// One page to store, and (with its last page) the completion of its window.
#[derive(Debug, Default)]
pub struct PageWrite<'a> {
    pub account: &'a str,
    pub action_filter: &'a str,
    pub day: Option<NaiveDate>,
    pub events: &'a [AuditEvent],
    pub malformed: &'a [Malformed],
    pub done: Option<WindowDone>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PageOutcome {
    pub inserted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

/// A coverage row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub day: NaiveDate,
    pub complete: bool,
    pub server_total: Option<u64>,
    pub received: u64,
    pub read_at: DateTime<Utc>,
    pub note: Option<String>,
}

/// One finished pass of one account.
#[derive(Debug, Clone)]
pub struct PassRecord {
    pub account: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub error: Option<String>,
    pub new_events: u64,
    pub duplicates: u64,
    pub quarantined: u64,
    pub requests: u64,
    pub retries: u64,
    /// 429 answers in the pass.
    pub rate_limited: u64,
    /// The request rate the client's adaptive pace converged to (requests/s); `None` when the
    /// server never limited it.
    pub pace_rps: Option<f64>,
}

/// What `status` shows for an account.
#[derive(Debug, Clone, Default)]
pub struct AccountStatus {
    pub events: u64,
    pub quarantined: u64,
    pub last_pass: Option<PassRecord>,
    pub last_success: Option<DateTime<Utc>>,
    pub complete_days: u64,
    pub first_complete: Option<NaiveDate>,
    pub last_complete: Option<NaiveDate>,
    /// Incomplete days with their reason, oldest first.
    pub incomplete: Vec<(NaiveDate, String)>,
}

/// A stored event, for exports.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub account: String,
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub status: Option<String>,
    pub ip_address: Option<String>,
    pub description: Option<String>,
    pub raw: String,
}

/// Which events an export reads.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub account: Option<String>,
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    pub action: Option<String>,
}

/// A quarantined item, for `status --quarantine` and tests.
#[derive(Debug, Clone)]
pub struct QuarantineItem {
    pub account: String,
    pub key: String,
    pub day: String,
    pub reason: String,
    pub raw: String,
}

/// One row of a user's history, oldest first: (observed, after, field, before, after value,
/// detail, source).
pub type UserHistoryEntry = (
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The chain account of a campaign.
pub fn review_chain_account(id: i64) -> String {
    format!("review-{id}")
}

/// A campaign to start: what `review start` was asked for.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub name: String,
    /// `privileged` or `all`.
    pub scope: String,
    pub accounts: Vec<String>,
    /// Who may decide (emails); empty: anyone but the refused ones.
    pub reviewers: Vec<String>,
    /// YYYY-MM-DD.
    pub due_day: Option<String>,
    pub started_ms: i64,
    /// The chain heads as of `started_ms`, one "chain account n hash" line each.
    pub chain_heads: String,
}

/// A stored campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub accounts: Vec<String>,
    pub reviewers: Vec<String>,
    pub due_day: Option<String>,
    pub started_ms: i64,
    pub items: i64,
    pub population_sha256: String,
    pub chain_heads: String,
    pub closed_ms: Option<i64>,
}

/// One frozen item: one role of one user of one account, as it stood when the campaign started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewItem {
    /// 1-based, in population order.
    pub item_no: i64,
    pub account: String,
    pub user_id: String,
    pub user_name: Option<String>,
    pub email: Option<String>,
    pub user_type: Option<String>,
    pub status: String,
    pub role: String,
    pub privileged: bool,
    pub last_activity_ms: Option<i64>,
    pub activity_source: Option<String>,
    pub dormant: bool,
    /// How the role was granted, in words (the audit event, or the snapshot window).
    pub granted: String,
    pub granted_ms: Option<i64>,
    pub granted_by_id: Option<String>,
    pub granted_by_name: Option<String>,
    pub granted_by_email: Option<String>,
    pub grant_event_id: Option<String>,
    pub grant_ip: Option<String>,
}

/// One decision on one item, as imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub item_no: i64,
    /// keep | revoke | unsure
    pub decision: String,
    pub justification: String,
    pub reviewer: String,
    pub decided_ms: i64,
    pub source_file: String,
    pub source_sha256: String,
}

/// Why a write to a campaign was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewRefusal {
    NoSuchCampaign,
    Closed(i64),
}

/// One audit event about an API token or a client-authentication certificate.
#[derive(Debug, Clone)]
pub struct CredentialEvent {
    /// `api_token` or `client_auth_certificate`.
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub action: String,
    pub event_id: String,
    pub ts_ms: i64,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub ip_address: Option<String>,
    pub status: Option<String>,
}

/// Where a run stands, as far as auditwarden is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRunState {
    /// Created, its rows not stored yet.
    Pending,
    /// Its rows and the coverage of its days are stored.
    Done,
    /// The service said FAILED (or no longer lists it): its days are requested again.
    Failed,
}

impl ReportRunState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportRunState::Pending => "pending",
            ReportRunState::Done => "done",
            ReportRunState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<ReportRunState> {
        match s {
            "pending" => Some(ReportRunState::Pending),
            "done" => Some(ReportRunState::Done),
            "failed" => Some(ReportRunState::Failed),
            _ => None,
        }
    }
}

/// One run of an `audit-logs` report over the UTC days `[start, end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRun {
    pub account: String,
    pub report_id: String,
    pub run_id: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub state: ReportRunState,
    pub status: Option<String>,
    pub created: chrono::DateTime<chrono::Utc>,
    pub rows: Option<u64>,
    pub note: Option<String>,
}

/// A lease on the accounts of one API key (see [`LeaseStore`](super::LeaseStore)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    /// The daemon holding it (`[daemon] node_name`).
    pub owner: String,
    /// Grows with every takeover: the fencing token.
    pub epoch: i64,
    pub expires_ms: i64,
    /// When this owner took it (kept across renewals).
    pub acquired_ms: i64,
}

/// How a list of names (a campaign's accounts, its reviewers) is stored in one text column, by
/// every backend alike: joined by the ASCII unit separator, which names and emails never hold.
const LIST_SEP: char = '\u{1f}';

pub(crate) fn join_list(v: &[String]) -> String {
    let mut s = String::new();
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(LIST_SEP);
        }
        s.push_str(x);
    }
    s
}

pub(crate) fn split_list(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split(LIST_SEP).map(str::to_string).collect()
    }
}
