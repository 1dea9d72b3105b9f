//! User tracking: directory sync, invitation polling, and role changes joined with audit evidence.
//!
//! **Sync** pages through an account's user list (DigiCert ONE: standard then service users;
//! CertCentral: the `page` envelope) and compares each user with what is stored. A user whose
//! served fields did not change is recognised by a fingerprint and costs no write, so a sync with
//! no changes writes nothing but its log row. Every change of status or roles becomes a history
//! row observed between the previous observation (T1) and now (T2). A user missing from a
//! *complete* listing is confirmed with `GET /user/{id}` and only a 404 marks it deleted; a listing
//! that failed or shifted half-way deletes nobody. A user who comes back keeps its row and history.
//! Users the store does not know yet are staged (on disk, `UserStore::stage_new_users`) and
//! recorded once the listing has ended within its bounds: a listing that never ends (the same
//! page for ever, new ids on every page) records none of the users it made up.
//!
//! **Role changes** are established from snapshots (roles at T1 vs T2) and, on DigiCert ONE, from
//! audit events carrying `roles.added/removed` (contract 1.3). After each sync, new audit events
//! are matched to snapshot changes of the same user, role and direction within their T1..T2
//! window: a match attaches the evidence (actor, time, source IP, event id) to the snapshot row,
//! so a change is counted once. An event nothing matches is recorded on its own once a snapshot
//! taken after it exists (for example history from before the first sync, or a grant revoked
//! before the next sync).
//!
//! **Invitation polling** asks `GET /user/{id}` for each invited user only, through the same
//! client (same throttle and retries), and records acceptances (with T1..T2 and, when the API gives
//! a sign-in time, the moment itself) and vanished invitations.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;

use crate::api::settings::{Account, AccountKind};
use crate::api::users::{
    self, fetch_user, id_is_path_safe, ParsedUser, UserList, UserStatus, WireUser,
};
use crate::api::{ApiError, Client, Malformed};
use crate::domain::{HistoryField, RoleChangeKind, UserRunKind};
use crate::store::{
    Deletion, HistoryRow, PageWrite, RoleChange, Store, StoreError, UserBatch, UserRow, UserRun,
};

/// How far an audit event's time may lie outside a snapshot window and still explain the change
/// seen in it (clock skew between DigiCert and this host, and the time a listing takes).
const EVIDENCE_SLACK_MS: i64 = 120_000;
/// Invitation polls in flight at once; the client's throttle still bounds the rate.
const POLL_CONCURRENCY: usize = 8;
/// Users missing from a complete listing are confirmed this many at a time.
const MISSING_CHUNK: u32 = 500;

/// What a sync or a poll did for one account.
#[derive(Debug, Clone, Default)]
pub struct UserSummary {
    pub account: String,
    /// `sync` or `poll`.
    pub kind: UserRunKind,
    pub error: Option<String>,
    /// Why deletions were not inferred (listing incomplete), when so.
    pub incomplete: Option<String>,
    pub listed: u64,
    pub new_users: u64,
    pub status_changes: u64,
    pub role_changes: u64,
    /// Role changes matched with audit evidence in this run.
    pub evidence_attached: u64,
    /// Role changes recorded from audit events alone in this run.
    pub audit_only: u64,
    pub deleted: u64,
    pub reappeared: u64,
    pub accepted: u64,
    /// Users with a status outside the contract's set (kept raw).
    pub unknown_statuses: u64,
    /// Roles of a shape not understood (kept as JSON text).
    pub odd_roles: u64,
    /// Items without an id (logged, not tracked).
    pub malformed: u64,
    /// Invited users still waiting, and those among them older than the stale age.
    pub invited: u64,
    pub stale_invites: u64,
    /// Database rows written (0 for a sync that saw no change, besides its log row).
    pub rows_written: u64,
    pub requests: u64,
    pub retries: u64,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
enum UsersError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server's listing cannot be trusted to end (a repeated page, or more pages than any
    /// real listing): the listing stops, nobody is marked deleted.
    #[error("{0}")]
    Unbounded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Sync the users of each account, one after another; one failing account does not stop the rest.
pub async fn sync_users(store: &mut Store, accounts: &[&Account]) -> Vec<UserSummary> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(run_one(store, a, UserRunKind::Sync, 0).await);
    }
    super::release_memory(store);
    out
}

/// Poll every invited user of each account; `stale_invite_days` marks old invitations.
pub async fn poll_invites(
    store: &mut Store,
    accounts: &[&Account],
    stale_invite_days: u32,
) -> Vec<UserSummary> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(run_one(store, a, UserRunKind::Poll, stale_invite_days).await);
    }
    out
}

async fn run_one(
    store: &mut Store,
    account: &Account,
    kind: UserRunKind,
    stale_days: u32,
) -> UserSummary {
    let started = crate::clock::now();
    let mut s = UserSummary {
        account: account.name.clone(),
        kind,
        started,
        finished: started,
        ..Default::default()
    };
    let result = match Client::new(account) {
        Ok(client) => {
            let client = Arc::new(client);
            let r = if kind == UserRunKind::Sync {
                sync_account(store, account, &client, &mut s).await
            } else {
                poll_account(store, account, &client, stale_days, &mut s).await
            };
            s.requests = client.stats().requests();
            s.retries = client.stats().retries();
            r
        }
        Err(e) => Err(e.into()),
    };
    s.error = result.err().map(|e| e.to_string());
    s.finished = crate::clock::now();
    let run = UserRun {
        account: account.name.clone(),
        kind,
        started_ms: started.timestamp_millis(),
        finished_ms: s.finished.timestamp_millis(),
        complete: s.error.is_none() && s.incomplete.is_none(),
        listed: s.listed,
        changes: s.rows_written,
        error: s.error.clone(),
    };
    if let Err(e) = store.record_user_run(&run) {
        s.error.get_or_insert(e.to_string());
    }
    match &s.error {
        None => {
            tracing::info!(event = "users_finished", account = %s.account, kind = kind.as_str(), listed = s.listed, rows = s.rows_written, requests = s.requests)
        }
        Some(e) => {
            tracing::error!(event = "users_failed", account = %s.account, kind = kind.as_str(), error = %e)
        }
    }
    s
}

/// Applies observations of users to what is stored, building the batches to write.
struct Observer {
    now_ms: i64,
    /// The account's kind, for the privileged rule (`domain::is_privileged`).
    kind: AccountKind,
    source: UserRunKind,
    /// Start of the latest complete sync and poll before this run: lower bounds of T1.
    prev_sync_ms: Option<i64>,
    prev_poll_ms: Option<i64>,
    /// The stored rows of the users being compared now (one page, one chunk of missing users or
    /// invitations), loaded by [`Observer::load`]: memory follows the page, not the directory.
    known: HashMap<String, UserRow>,
}

fn fingerprint(u: &WireUser) -> i64 {
    crate::domain::user_fingerprint(&u.raw, &u.status_raw, &u.roles)
}

fn roles_text(r: &[String]) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

impl Observer {
    /// Make the stored rows of `ids` (and only those) the known state.
    fn load<'a>(
        &mut self,
        store: &Store,
        account: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        self.known = store.load_users_by_id(account, ids)?;
        Ok(())
    }

    /// Add the stored row of `id` to the known state if it is not there (a user served under
    /// another id than the one asked for).
    fn ensure(&mut self, store: &Store, account: &str, id: &str) -> Result<(), StoreError> {
        if !self.known.contains_key(id) {
            self.known.extend(store.load_users_by_id(account, [id])?);
        }
        Ok(())
    }

    /// The last time `old` was known to be as stored: its last write, or the latest complete sync
    /// (a user not deleted was in it), or for invited users the latest complete poll.
    fn t1(&self, old: &UserRow) -> i64 {
        let mut t = old.updated_ms;
        if let Some(s) = self.prev_sync_ms {
            t = t.max(s);
        }
        if old.status == UserStatus::Invited {
            if let Some(p) = self.prev_poll_ms {
                t = t.max(p);
            }
        }
        t.min(self.now_ms)
    }

    fn observe(&mut self, u: WireUser, b: &mut UserBatch, s: &mut UserSummary) {
        if u.status == UserStatus::Unknown {
            s.unknown_statuses += 1;
            tracing::warn!(event = "user_status_unknown", account = %s.account, user = %u.id, status = %crate::api::wire::preview(&u.status_raw), "status outside the contract's set; kept as served");
        }
        s.odd_roles += u64::from(u.odd_roles);
        let fp = fingerprint(&u);
        let privileged = crate::domain::is_privileged(self.kind, &u.roles);
        let now = self.now_ms;
        let status = u.status.as_str().to_string();
        let status_now = u.status;
        let mut row = UserRow {
            user_id: u.id.clone(),
            user_name: u.user_name,
            email: u.email,
            display_name: u.display_name,
            user_type: u.user_type,
            status: status_now,
            status_raw: u.status_raw,
            roles: u.roles,
            created_ms: u.created_at.map(|t| t.timestamp_millis()),
            last_login_ms: u.last_login.map(|t| t.timestamp_millis()),
            container: u.container,
            raw: u.raw,
            fingerprint: fp,
            privileged,
            first_seen_ms: now,
            updated_ms: now,
            ..Default::default()
        };
        let Some(old) = self.known.get(&u.id) else {
            s.new_users += 1;
            if u.status == UserStatus::Invited {
                row.invited_ms = Some(row.created_ms.unwrap_or(now));
            }
            b.history.push(HistoryRow {
                user_id: u.id.clone(),
                observed_ms: now,
                after_ms: None,
                field: HistoryField::FirstSeen,
                before: None,
                after: Some(status),
                detail: Some(format!("roles {}", roles_text(&row.roles))),
                source: self.source,
            });
            self.remember(row, b);
            return;
        };
        if old.fingerprint == fp && old.deleted_ms.is_none() {
            return;
        }
        let t1 = self.t1(old);
        row.first_seen_ms = old.first_seen_ms;
        row.invited_ms = old.invited_ms;
        row.accepted_ms = old.accepted_ms;
        row.accepted_after_ms = old.accepted_after_ms;
        row.accepted_at_ms = old.accepted_at_ms;
        if let Some(deleted) = old.deleted_ms {
            s.reappeared += 1;
            b.history.push(HistoryRow {
                user_id: u.id.clone(),
                observed_ms: now,
                after_ms: Some(deleted),
                field: HistoryField::Status,
                before: Some(UserStatus::Deleted.as_str().into()),
                after: Some(status.clone()),
                detail: Some(format!(
                    "reappeared (status {:?}) after being recorded deleted",
                    row.status_raw
                )),
                source: self.source,
            });
        } else if old.status != row.status || old.status_raw != row.status_raw {
            s.status_changes += 1;
            b.history.push(HistoryRow {
                user_id: u.id.clone(),
                observed_ms: now,
                after_ms: Some(t1),
                field: HistoryField::Status,
                before: Some(old.status.as_str().into()),
                after: Some(status.clone()),
                detail: Some(format!("{:?} -> {:?}", old.status_raw, row.status_raw)),
                source: self.source,
            });
            let was_invited = old.status == UserStatus::Invited;
            if was_invited && u.status == UserStatus::Active && old.accepted_ms.is_none() {
                s.accepted += 1;
                row.accepted_ms = Some(now);
                row.accepted_after_ms = Some(t1);
                // The sign-in that finished setup, when the API reports it inside the window.
                row.accepted_at_ms = row
                    .last_login_ms
                    .filter(|t| *t >= t1 - EVIDENCE_SLACK_MS && *t <= now + EVIDENCE_SLACK_MS);
            }
            if u.status == UserStatus::Invited && row.invited_ms.is_none() {
                row.invited_ms = Some(now);
            }
        }
        if old.roles != row.roles && old.deleted_ms.is_none() {
            b.history.push(HistoryRow {
                user_id: u.id.clone(),
                observed_ms: now,
                after_ms: Some(t1),
                field: HistoryField::Roles,
                before: Some(roles_text(&old.roles)),
                after: Some(roles_text(&row.roles)),
                detail: None,
                source: self.source,
            });
            let before: HashSet<&String> = old.roles.iter().collect();
            let after: HashSet<&String> = row.roles.iter().collect();
            for (set, other, change) in [
                (&after, &before, RoleChangeKind::Granted),
                (&before, &after, RoleChangeKind::Revoked),
            ] {
                let mut roles: Vec<&&String> = set.difference(other).collect();
                roles.sort();
                for r in roles {
                    s.role_changes += 1;
                    b.role_changes.push(RoleChange {
                        user_id: u.id.clone(),
                        role: (*r).clone(),
                        change,
                        observed_ms: Some(now),
                        after_ms: Some(t1),
                        evidence: None,
                    });
                }
            }
        } else if old.roles != row.roles {
            // Back from deletion with other roles: the gap hides when they changed.
            b.history.push(HistoryRow {
                user_id: u.id.clone(),
                observed_ms: now,
                after_ms: old.deleted_ms,
                field: HistoryField::Roles,
                before: Some(roles_text(&old.roles)),
                after: Some(roles_text(&row.roles)),
                detail: Some("roles on reappearance".into()),
                source: self.source,
            });
        }
        self.remember(row, b);
    }

    /// Queue the row for writing and keep it (without its raw text) as the known state.
    fn remember(&mut self, row: UserRow, b: &mut UserBatch) {
        let mut kept = row.clone();
        kept.raw = String::new();
        self.known.insert(row.user_id.clone(), kept);
        b.rows.push(row);
    }

    /// A user confirmed gone (404, or missing from a complete listing and then 404).
    fn delete(&mut self, id: &str, why: &str, b: &mut UserBatch, s: &mut UserSummary) {
        let Some(old) = self.known.get_mut(id) else {
            return;
        };
        if old.deleted_ms.is_some() {
            return;
        }
        let mut last_seen = old.updated_ms;
        if let Some(p) = self.prev_sync_ms {
            last_seen = last_seen.max(p);
        }
        if old.status == UserStatus::Invited {
            if let Some(p) = self.prev_poll_ms {
                last_seen = last_seen.max(p);
            }
        }
        let last_seen = last_seen.min(self.now_ms);
        s.deleted += 1;
        b.history.push(HistoryRow {
            user_id: id.to_string(),
            observed_ms: self.now_ms,
            after_ms: Some(last_seen),
            field: HistoryField::Status,
            before: Some(old.status.as_str().into()),
            after: Some(UserStatus::Deleted.as_str().into()),
            detail: Some(why.to_string()),
            source: self.source,
        });
        b.deletions.push(Deletion {
            user_id: id.to_string(),
            deleted_ms: self.now_ms,
            last_seen_ms: last_seen,
        });
        old.deleted_ms = Some(self.now_ms);
        old.status = UserStatus::Deleted;
    }
}

fn new_observer(
    store: &Store,
    account: &str,
    kind: AccountKind,
    source: UserRunKind,
) -> Result<Observer, StoreError> {
    Ok(Observer {
        now_ms: crate::clock::now_ms(),
        kind,
        source,
        prev_sync_ms: store.last_complete_user_run(account, UserRunKind::Sync)?,
        prev_poll_ms: store.last_complete_user_run(account, UserRunKind::Poll)?,
        known: HashMap::new(),
    })
}

/// Keep users that could not be understood in the quarantine, like malformed events (counted in
/// `status`), under the action filter `users`.
fn quarantine(store: &mut Store, account: &str, bad: &[Malformed]) -> Result<u64, StoreError> {
    if bad.is_empty() {
        return Ok(0);
    }
    let out = store.write_page(&PageWrite {
        account,
        action_filter: "users",
        day: None,
        events: &[],
        malformed: bad,
        done: None,
    })?;
    Ok(out.quarantined)
}

async fn sync_account(
    store: &mut Store,
    account: &Account,
    client: &Arc<Client>,
    s: &mut UserSummary,
) -> Result<(), UsersError> {
    let mut obs = new_observer(store, &account.name, account.kind, UserRunKind::Sync)?;
    let limit = account.collection.page_size;
    // Ids listed so far live in the store (a temporary table), not in memory.
    store.begin_listing()?;
    let mut listing_error = None;
    let mut unbounded: Option<String> = None;
    // Users new to the store wait (on disk) until the listing has ended within its bounds.
    let mut staged = 0u64;
    let max_pages = account.collection.max_pages_per_window;
    'lists: for list in UserList::all(account.kind) {
        let mut offset = 0u64;
        let mut distinct_here = 0u64;
        let mut pages = 0u32;
        let mut first_total: Option<u64> = None;
        let list_name = list.name();
        loop {
            if pages >= max_pages {
                unbounded = Some(format!(
                    "the {list_name} listing did not end after {pages} pages (max_pages_per_window); stopped, nobody marked deleted"
                ));
                break 'lists;
            }
            pages += 1;
            let page = match list.page(client, offset, limit).await {
                Ok(p) => p,
                Err(e) => {
                    listing_error = Some(e);
                    break 'lists;
                }
            };
            let n = page.items.len() as u64;
            let before = distinct_here;
            let first = *first_total.get_or_insert(page.total.unwrap_or(0));
            let ids: Vec<&str> = page
                .items
                .iter()
                .filter_map(|i| match i {
                    ParsedUser::User(u) => Some(u.id.as_str()),
                    ParsedUser::Malformed(_) => None,
                })
                .collect();
            let fresh = store.mark_listed(&ids)?;
            obs.load(
                store,
                &account.name,
                ids.iter()
                    .zip(&fresh)
                    .filter(|(_, f)| **f)
                    .map(|(id, _)| *id),
            )?;
            drop(ids);
            let mut fresh = fresh.into_iter();
            let mut batch = UserBatch::default();
            let mut bad = Vec::new();
            let mut new_users = Vec::new();
            for item in page.items {
                match item {
                    ParsedUser::User(u) => {
                        if fresh.next().unwrap_or(false) {
                            distinct_here += 1;
                            s.listed += 1;
                            if obs.known.contains_key(&u.id) {
                                obs.observe(u, &mut batch, s);
                            } else {
                                // Recorded once the listing has ended within its bounds.
                                new_users.push(u.raw);
                            }
                        } else {
                            // Offsets shifted under the reader: a user may have been skipped.
                            s.incomplete.get_or_insert_with(|| {
                                "the listing shifted while paging (a user was served twice)".into()
                            });
                        }
                    }
                    ParsedUser::Malformed(m) => {
                        s.malformed += 1;
                        tracing::warn!(event = "user_quarantined", account = %account.name, key = %m.key, reason = %m.reason);
                        s.incomplete.get_or_insert_with(|| {
                            "a listed user could not be understood (no id)".into()
                        });
                        bad.push(m);
                    }
                }
            }
            s.rows_written += store.write_user_batch(&account.name, &batch)?;
            s.rows_written += quarantine(store, &account.name, &bad)?;
            let raws: Vec<&str> = new_users.iter().map(String::as_str).collect();
            store.stage_new_users(&raws)?;
            staged += raws.len() as u64;
            // A full page of users all listed before: the server ignores `offset` and would
            // serve the same page for ever.
            if n > 0 && distinct_here == before && bad.is_empty() {
                unbounded = Some(format!(
                    "the {list_name} listing served a page of users already listed at offset {offset} (the server does not honour offset); stopped, nobody marked deleted"
                ));
                break 'lists;
            }
            // More users than the first page's total allows, beyond arrivals during the read.
            if page.total.is_some() && distinct_here > first + super::read_slack(first, limit) {
                unbounded = Some(format!(
                    "the {list_name} listing kept growing past its total of {first} ({distinct_here} distinct users); stopped, nobody marked deleted"
                ));
                break 'lists;
            }
            offset += n;
            let last = match page.total {
                Some(t) => n == 0 || offset >= t,
                None => n < u64::from(limit),
            };
            if last {
                if let Some(t) = page.total {
                    if distinct_here < t {
                        s.incomplete.get_or_insert_with(|| {
                            format!("the server's total was {t} but {distinct_here} distinct users were listed")
                        });
                    }
                }
                break;
            }
        }
    }
    if let Some(mut why) = unbounded {
        // The users this listing served for the first time may be made up: none is recorded.
        if staged > 0 {
            why.push_str(&format!(
                "; none of the {staged} users it served for the first time recorded"
            ));
        }
        tracing::error!(event = "users_unbounded", account = %account.name, reason = %why);
        s.incomplete = Some(why.clone());
        s.rows_written += link_role_events(store, account, &obs, s)?;
        return Err(UsersError::Unbounded(why));
    }
    // The listing ended (completely, or cut by an error): record the users it served first.
    s.rows_written += record_staged(store, account, &mut obs, s)?;
    if let Some(e) = listing_error {
        s.incomplete = Some(format!("the listing failed: {e}"));
        // Users listed so far are stored; nobody is marked deleted from half a listing.
        s.rows_written += link_role_events(store, account, &obs, s)?;
        return Err(e.into());
    }
    if s.incomplete.is_none() {
        // Stored users this listing did not serve, a chunk at a time in id order (each chunk
        // moves past the last id, so the walk ends after at most every stored user).
        let mut after = String::new();
        loop {
            let missing = store.unlisted_users(&account.name, &after, MISSING_CHUNK)?;
            let Some(last) = missing.last() else { break };
            after = last.clone();
            obs.load(store, &account.name, missing.iter().map(String::as_str))?;
            let mut batch = UserBatch::default();
            let mut bad = Vec::new();
            for id in missing {
                // Confirm each one: a listing can look complete and still have skipped someone.
                if !id_is_path_safe(&id) {
                    continue;
                }
                match fetch_user(client, &id).await? {
                    None => obs.delete(
                        &id,
                        "missing from a complete listing; GET /user/{id} answered 404",
                        &mut batch,
                        s,
                    ),
                    Some(ParsedUser::User(u)) => {
                        obs.ensure(store, &account.name, &u.id)?;
                        obs.observe(u, &mut batch, s);
                    }
                    Some(ParsedUser::Malformed(m)) => {
                        s.malformed += 1;
                        bad.push(m);
                    }
                }
            }
            s.rows_written += store.write_user_batch(&account.name, &batch)?;
            s.rows_written += quarantine(store, &account.name, &bad)?;
        }
    } else if let Some(why) = &s.incomplete {
        tracing::warn!(event = "users_incomplete", account = %account.name, reason = %why, "no user is marked deleted from this listing");
    }
    s.rows_written += link_role_events(store, account, &obs, s)?;
    Ok(())
}

/// Users a bounded listing served that the store did not know: observed and written a chunk at
/// a time, in the order they were listed. Returns the rows written.
fn record_staged(
    store: &mut Store,
    account: &Account,
    obs: &mut Observer,
    s: &mut UserSummary,
) -> Result<u64, StoreError> {
    let mut rows = 0;
    let mut after = 0i64;
    loop {
        let staged = store.staged_users(after, MISSING_CHUNK)?;
        let Some((last, _)) = staged.last() else {
            break;
        };
        after = *last;
        let users: Vec<WireUser> = staged
            .into_iter()
            .filter_map(|(_, raw)| match users::parse_user(&raw) {
                ParsedUser::User(u) => Some(u),
                // It parsed when it was listed; the same text parses the same way.
                ParsedUser::Malformed(_) => None,
            })
            .collect();
        obs.load(store, &account.name, users.iter().map(|u| u.id.as_str()))?;
        let mut batch = UserBatch::default();
        for u in users {
            obs.observe(u, &mut batch, s);
        }
        rows += store.write_user_batch(&account.name, &batch)?;
    }
    Ok(rows)
}

/// Match new audit events of a DigiCert ONE account with snapshot role changes (module docs).
fn link_role_events(
    store: &mut Store,
    account: &Account,
    obs: &Observer,
    s: &mut UserSummary,
) -> Result<u64, StoreError> {
    if account.kind != AccountKind::DigicertOne {
        return Ok(0);
    }
    let name = account.name.as_str();
    let watermark = store.role_event_watermark(name)?;
    let events = store.role_events_after(name, watermark)?;
    if events.is_empty() {
        return Ok(0);
    }
    let open = store.open_role_changes(name)?;
    let mut used = vec![false; open.len()];
    let mut attach = Vec::new();
    let mut audit_only = Vec::new();
    let mut max_seq = watermark;
    let mut first_pending: Option<i64> = None;
    // Events that happen after this run started may still show up in the next snapshot.
    let settled_before = obs.now_ms;
    for ev in &events {
        max_seq = max_seq.max(ev.seq);
        let Some(delta) = users::parse_role_delta(&ev.data) else {
            continue;
        };
        let t = ev.evidence.event_ms;
        let changes = delta
            .added
            .iter()
            .map(|r| (r, RoleChangeKind::Granted))
            .chain(delta.removed.iter().map(|r| (r, RoleChangeKind::Revoked)));
        for (role, change) in changes {
            if store.role_change_has_event(
                name,
                &ev.evidence.event_id,
                &ev.user_id,
                role,
                change,
            )? {
                continue;
            }
            let candidate = open
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    !used[*i]
                        && c.user_id == ev.user_id
                        && c.role == *role
                        && c.change == change
                        && c.after_ms.is_none_or(|t1| t >= t1 - EVIDENCE_SLACK_MS)
                        && c.observed_ms.is_some_and(|t2| t <= t2 + EVIDENCE_SLACK_MS)
                })
                .min_by_key(|(_, c)| c.observed_ms);
            if let Some((i, c)) = candidate {
                used[i] = true;
                s.evidence_attached += 1;
                attach.push((c.seq, ev.evidence.clone()));
            } else if t < settled_before {
                s.audit_only += 1;
                audit_only.push(RoleChange {
                    user_id: ev.user_id.clone(),
                    role: role.clone(),
                    change,
                    observed_ms: None,
                    after_ms: None,
                    evidence: Some(ev.evidence.clone()),
                });
            } else {
                first_pending = Some(first_pending.map_or(ev.seq, |p| p.min(ev.seq)));
            }
        }
    }
    let new_mark = first_pending.map_or(max_seq, |p| p - 1);
    if attach.is_empty() && audit_only.is_empty() && new_mark == watermark {
        return Ok(0);
    }
    store.write_role_links(name, &attach, &audit_only, new_mark)
}

async fn poll_account(
    store: &mut Store,
    account: &Account,
    client: &Arc<Client>,
    stale_days: u32,
    s: &mut UserSummary,
) -> Result<(), UsersError> {
    let mut obs = new_observer(store, &account.name, account.kind, UserRunKind::Poll)?;
    let invited = store.invited_user_ids(&account.name)?;
    let mut first_error = None;
    for chunk in invited.chunks(POLL_CONCURRENCY * 16) {
        obs.load(store, &account.name, chunk.iter().map(String::as_str))?;
        let mut set = JoinSet::new();
        let mut results: Vec<(String, Result<Option<ParsedUser>, ApiError>)> = Vec::new();
        let mut queue = chunk.iter().filter(|id| id_is_path_safe(id)).cloned();
        loop {
            while set.len() < POLL_CONCURRENCY {
                let Some(id) = queue.next() else { break };
                let c = Arc::clone(client);
                set.spawn(async move {
                    let r = fetch_user(&c, &id).await;
                    (id, r)
                });
            }
            match set.join_next().await {
                Some(Ok(r)) => results.push(r),
                Some(Err(e)) => tracing::error!(event = "poll_task_failed", error = %e),
                None => break,
            }
        }
        let mut batch = UserBatch::default();
        let mut bad = Vec::new();
        for (id, r) in results {
            match r {
                Ok(Some(ParsedUser::User(u))) => {
                    s.listed += 1;
                    obs.ensure(store, &account.name, &u.id)?;
                    obs.observe(u, &mut batch, s);
                }
                Ok(Some(ParsedUser::Malformed(m))) => {
                    s.malformed += 1;
                    tracing::warn!(event = "user_quarantined", account = %account.name, user = %id, reason = %m.reason);
                    bad.push(m);
                }
                Ok(None) => {
                    s.listed += 1;
                    obs.delete(
                        &id,
                        "the invitation vanished: GET /user/{id} answered 404",
                        &mut batch,
                        s,
                    );
                }
                Err(e) => {
                    tracing::warn!(event = "poll_failed", account = %account.name, user = %id, error = %e);
                    first_error.get_or_insert(e);
                }
            }
        }
        s.rows_written += store.write_user_batch(&account.name, &batch)?;
        s.rows_written += quarantine(store, &account.name, &bad)?;
    }
    let stale_before = obs.now_ms - i64::from(stale_days) * 86_400_000;
    (s.invited, s.stale_invites) = store.invite_counts(&account.name, stale_before)?;
    match first_error {
        Some(e) => {
            s.incomplete = Some(format!("some invitations could not be checked: {e}"));
            Err(e.into())
        }
        None => Ok(()),
    }
}

/// Whether an invitation is stale: invited longer ago than `stale_days`.
pub fn is_stale_invite(u: &UserRow, now: DateTime<Utc>, stale_days: u32) -> bool {
    u.deleted_ms.is_none()
        && u.status == UserStatus::Invited
        && u.invited_ms.unwrap_or(u.first_seen_ms)
            < now.timestamp_millis() - i64::from(stale_days) * 86_400_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(id: &str, status: &str, roles: &[&str]) -> WireUser {
        let raw = format!(r#"{{"id":"{id}","status":"{status}","roles":{roles:?}}}"#);
        match users::parse_user(&raw) {
            ParsedUser::User(u) => u,
            ParsedUser::Malformed(m) => panic!("{}", m.reason),
        }
    }

    fn observer(now_ms: i64) -> Observer {
        Observer {
            now_ms,
            kind: AccountKind::DigicertOne,
            source: UserRunKind::Sync,
            prev_sync_ms: None,
            prev_poll_ms: None,
            known: HashMap::new(),
        }
    }

    /// An unchanged user costs nothing; a role change is one history row and one role change per
    /// role, observed between the previous sync and now.
    #[test]
    fn unchanged_users_write_nothing_and_changes_carry_their_window() {
        let mut o = observer(1_000);
        let mut s = UserSummary::default();
        let mut b = UserBatch::default();
        o.observe(wire("a", "ACTIVE", &["R1"]), &mut b, &mut s);
        assert_eq!((b.rows.len(), b.history.len()), (1, 1));
        o.now_ms = 2_000;
        o.prev_sync_ms = Some(1_000);
        let mut b = UserBatch::default();
        o.observe(wire("a", "ACTIVE", &["R1"]), &mut b, &mut s);
        assert!(b.is_empty());
        o.now_ms = 3_000;
        o.prev_sync_ms = Some(2_000);
        o.observe(wire("a", "ACTIVE", &["R2"]), &mut b, &mut s);
        assert_eq!(b.role_changes.len(), 2);
        for c in &b.role_changes {
            assert_eq!((c.after_ms, c.observed_ms), (Some(2_000), Some(3_000)));
        }
        assert_eq!(b.history.len(), 1);
        assert_eq!(b.history[0].field, "roles");
    }

    /// A user recorded deleted who comes back is the same user: one status row, no new sighting.
    #[test]
    fn a_user_who_reappears_is_the_same_user() {
        let mut o = observer(1_000);
        let mut s = UserSummary::default();
        let mut b = UserBatch::default();
        o.observe(wire("a", "PENDING", &[]), &mut b, &mut s);
        o.now_ms = 2_000;
        o.delete("a", "gone", &mut b, &mut s);
        assert_eq!(b.deletions.len(), 1);
        o.now_ms = 3_000;
        let mut b = UserBatch::default();
        o.observe(wire("a", "ACTIVE", &[]), &mut b, &mut s);
        assert_eq!((s.new_users, s.deleted, s.reappeared), (1, 1, 1));
        assert_eq!(b.history.len(), 1);
        assert_eq!(b.history[0].before.as_deref(), Some("deleted"));
        assert_eq!(b.rows[0].first_seen_ms, 1_000);
        assert_eq!(b.rows[0].deleted_ms, None);
        assert_eq!(b.rows[0].invited_ms, Some(1_000));
    }

    /// A status outside the contract is kept raw and counted, not fatal.
    #[test]
    fn unknown_status_is_counted() {
        let mut o = observer(1_000);
        let mut s = UserSummary::default();
        let mut b = UserBatch::default();
        o.observe(wire("a", "SUSPENDED_BY_HR", &[]), &mut b, &mut s);
        assert_eq!(s.unknown_statuses, 1);
        assert_eq!(b.rows[0].status, "unknown");
        assert_eq!(b.rows[0].status_raw, "SUSPENDED_BY_HR");
    }
}
