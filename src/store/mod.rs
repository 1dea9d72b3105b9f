//! The store: the one interface to auditwarden's history, and the only code that issues SQL.
//!
//! [`Backend`] is that interface, in the domain and plain types of [`types`]; it is split by
//! concern into [`EventStore`], [`UserStore`], [`AlertStore`], [`ChainStore`], [`ReportStore`],
//! [`CredentialStore`] and [`ReviewStore`]. A storage backend is a module that implements them:
//! [`sqlite`] (the embedded default) is one. Everything above this module holds a [`Store`],
//! which owns one backend and adds the conveniences that cannot sit on a trait object (generic
//! callbacks).
//!
//! The invariants every backend keeps, and everything else relies on:
//! - a page of events and the coverage it proves commit in one transaction, with the event chain's
//!   new head ([`chain`]), so a crash at any instant leaves all of them or none;
//! - a user batch commits its rows, history, role changes and history-chain head together;
//! - alerts and the scan marks that produced them commit together, and a delivery is sent only
//!   under a claim the sender still holds;
//! - an event is stored at most once per `(account, id)`.
//!
//! Errors are [`StoreError`]: what happened (busy, schema too new, not ours, a corrupt row at a
//! table and row, I/O, a backend failure), always naming the database.

pub mod chain;
#[cfg(test)]
pub mod conformance;
pub mod copy;
pub(crate) mod event_key;
pub mod postgres;
pub mod sqlite;
pub(crate) mod types;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

pub use self::postgres::PgTarget;
pub use chain::{ChainHead, ChainKind, ChainSummary, Finding, Hash};
pub use types::*;

use crate::domain::GrantCounter;
use crate::domain::{DeliveryStatus, RoleChangeKind, UserRunKind};

/// What went wrong in the store. Every variant names the database (`location`).
#[derive(Debug)]
pub enum StoreError {
    /// Another writer held the database for longer than this one waits.
    Busy { location: String, detail: String },
    /// The schema was written by a newer auditwarden.
    SchemaTooNew {
        location: String,
        version: i64,
        known: i64,
    },
    /// The database is not (yet) an auditwarden database, or cannot be used as one.
    NotOurs { location: String, what: String },
    /// What was asked for does not exist (a review campaign id).
    NotFound { location: String, what: String },
    /// A stored row that cannot be read as what it must be (an edit behind auditwarden's back, or
    /// a bug): the table, the row and what is wrong with it.
    Corrupt {
        location: String,
        table: String,
        row: String,
        what: String,
    },
    /// The file system refused (creating the directory, opening the file).
    Io {
        location: String,
        what: String,
        source: std::io::Error,
    },
    /// The writer no longer holds the lease its writes are fenced with (another daemon took the
    /// account over): nothing of the transaction was committed.
    LeaseLost { location: String, what: String },
    /// The database engine failed at `what`.
    Backend {
        location: String,
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Busy { location, detail } => write!(f, "{location}: {detail}"),
            StoreError::SchemaTooNew {
                location,
                version,
                known,
            } => write!(
                f,
                "{location}: schema version {version} is newer than this auditwarden knows ({known}); upgrade auditwarden"
            ),
            StoreError::NotOurs { location, what } | StoreError::NotFound { location, what } => {
                write!(f, "{location}: {what}")
            }
            StoreError::LeaseLost { location, what } => write!(f, "{location}: {what}"),
            StoreError::Corrupt {
                location,
                table,
                row,
                what,
            } => write!(f, "{location}: corrupt row: {table} {row}: {what}"),
            StoreError::Io {
                location,
                what,
                source,
            } => write!(f, "{location}: {what}: {source}"),
            StoreError::Backend {
                location,
                what,
                source,
            } => write!(f, "{location}: {what}: {source}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Backend { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The day format used in the store and on the wire.
pub fn day_str(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// Audit events, their coverage and the passes that collected them.
pub trait EventStore {
    /// Begin a batch: several pages, coverage changes and pass records in one transaction.
    fn batch(&mut self) -> Result<Box<dyn EventBatch + '_>>;

    /// Store one page in its own transaction (see [`EventBatch::write_page`]).
    fn write_page(&mut self, w: &PageWrite<'_>) -> Result<PageOutcome> {
        let mut b = self.batch()?;
        let out = b.write_page(w)?;
        b.commit()?;
        Ok(out)
    }

    /// Record that a day could not be proven complete (see [`EventBatch::mark_incomplete`]).
    fn mark_incomplete(
        &mut self,
        account: &str,
        action_filter: &str,
        day: NaiveDate,
        note: &str,
    ) -> Result<()> {
        let b = self.batch()?;
        b.mark_incomplete(account, action_filter, day, note)?;
        b.commit()
    }

    fn record_pass(&mut self, p: &PassRecord) -> Result<()> {
        let b = self.batch()?;
        b.record_pass(p)?;
        b.commit()
    }

    /// Coverage rows of one account and action filter between two days (inclusive).
    fn coverage(
        &self,
        account: &str,
        action_filter: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Coverage>>;

    /// What `status` shows for one account.
    fn account_status(&self, account: &str) -> Result<AccountStatus>;

    /// Hand stored events to `f` in (account, time, id) order until it returns `false`; returns
    /// how many it accepted. See [`Store::for_each_event`].
    fn visit_events(
        &self,
        filter: &EventFilter,
        f: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<u64>;

    /// Every stored event id of an account (tests and the benchmark compare it with ground truth).
    fn event_ids(&self, account: &str) -> Result<Vec<String>>;

    /// Quarantined items, newest first (at most `limit`).
    fn quarantine(&self, account: Option<&str>, limit: u32) -> Result<Vec<QuarantineItem>>;

    /// CertCentral Report Library runs of `account` still pending, oldest first.
    fn pending_report_runs(&self, account: &str) -> Result<Vec<ReportRun>>;

    /// The account's latest runs (any state), newest first, at most `limit`.
    fn recent_report_runs(&self, account: &str, limit: u32) -> Result<Vec<ReportRun>>;

    /// Record a new run (pending), or its outcome, in a transaction of its own.
    fn save_report_run(&mut self, run: &ReportRun) -> Result<()> {
        let b = self.batch()?;
        b.save_report_run(run)?;
        b.commit()
    }
}

/// Writes that commit together: dropped without [`EventBatch::commit`], none of them happened.
pub trait EventBatch {
    /// Other writers are waiting for this batch: a long-lived batch (the collection's writer)
    /// commits now rather than keep them waiting.
    fn others_waiting(&self) -> bool;

    /// Store one page (at most once per `(account, id)`) and, with the last page of a window
    /// read that proved complete, mark that day complete: rows and coverage commit together.
    fn write_page(&mut self, w: &PageWrite<'_>) -> Result<PageOutcome>;

    /// Record that a day could not be proven complete in this pass (it is read again next pass).
    fn mark_incomplete(
        &self,
        account: &str,
        action_filter: &str,
        day: NaiveDate,
        note: &str,
    ) -> Result<()>;

    fn record_pass(&self, p: &PassRecord) -> Result<()>;

    /// Insert a Report Library run, or update its state, status, rows and note (by account and
    /// run id): with the rows and coverage it brought, so a run is done only with them.
    fn save_report_run(&self, run: &ReportRun) -> Result<()>;

    /// Commit every write of the batch, with the chain heads they moved.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// Users, their history, role changes and the log of syncs and invitation polls. Decisions
/// (what changed, what matches what) are made in `collect::users`; a backend only reads and
/// writes, each batch in one transaction.
pub trait UserStore {
    /// Every stored user of an account (deleted ones included), by id; `raw` is not loaded.
    fn load_users(&self, account: &str) -> Result<HashMap<String, UserRow>>;

    /// The stored users among `ids`, by id.
    fn users_by_id(&self, account: &str, ids: &[&str]) -> Result<HashMap<String, UserRow>>;

    /// Start a listing: forget which users the previous one saw (see [`UserStore::mark_listed`]).
    fn begin_listing(&self) -> Result<()>;

    /// Note `ids` as seen in the current listing; for each, whether it was new to the listing.
    fn mark_listed(&mut self, ids: &[&str]) -> Result<Vec<bool>>;

    /// Stored users not deleted and not seen in the current listing, after `after` in id order.
    fn unlisted_users(&self, account: &str, after: &str, limit: u32) -> Result<Vec<String>>;

    /// Keep the raw JSON of users the current listing served that the store does not know yet,
    /// until the listing has proved itself bounded: a listing that never ends (a hostile or
    /// broken server) then records none of the users it made up. Kept beside the listed ids (on
    /// disk, never in memory); [`UserStore::begin_listing`] forgets them.
    fn stage_new_users(&mut self, raws: &[&str]) -> Result<()>;

    /// Up to `limit` staged users after position `after`, in the order they were listed:
    /// `(position, raw)`.
    fn staged_users(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>>;

    fn invited_user_ids(&self, account: &str) -> Result<Vec<String>>;

    /// (pending invitations, of which invited before `stale_before_ms`).
    fn invite_counts(&self, account: &str, stale_before_ms: i64) -> Result<(u64, u64)>;

    /// Write one step of a sync or poll in one transaction; returns the rows written.
    fn write_user_batch(&mut self, account: &str, b: &UserBatch) -> Result<u64>;

    /// Audit events after `after_seq` that may carry role details.
    fn role_events_after(&self, account: &str, after_seq: i64) -> Result<Vec<RoleEvent>>;

    /// The last event already matched against role changes.
    fn role_event_watermark(&self, account: &str) -> Result<i64>;

    /// Role changes still waiting for audit evidence.
    fn open_role_changes(&self, account: &str) -> Result<Vec<StoredRoleChange>>;

    fn role_changes(&self, account: &str, user: Option<&str>) -> Result<Vec<StoredRoleChange>>;

    fn role_change_has_event(
        &self,
        account: &str,
        event_id: &str,
        user_id: &str,
        role: &str,
        change: RoleChangeKind,
    ) -> Result<bool>;

    /// Attach evidence to snapshot role changes, add changes seen only in the audit log, and
    /// move the watermark, in one transaction.
    fn write_role_links(
        &mut self,
        account: &str,
        attach: &[(i64, Evidence)],
        audit_only: &[RoleChange],
        watermark: i64,
    ) -> Result<u64>;

    fn record_user_run(&mut self, r: &UserRun) -> Result<()>;

    /// When the last complete run of `kind` ("sync" or "poll") finished.
    fn last_complete_user_run(&self, account: &str, kind: UserRunKind) -> Result<Option<i64>>;

    fn list_users(&self, account: Option<&str>) -> Result<Vec<UserListing>>;

    fn user_history(&self, account: &str, user_id: &str) -> Result<Vec<UserHistoryEntry>>;
}

/// The alert outbox, its per-sink deliveries and the claims that keep a delivery single.
pub trait AlertStore {
    /// Gather the facts the rules have not seen, let `eval` decide, and write the alerts with the
    /// moved marks in one transaction.
    fn record_alerts(
        &mut self,
        account: &str,
        sinks: &[String],
        now_ms: i64,
        eval: &mut dyn FnMut(&AlertFacts, &mut dyn GrantCounter) -> Vec<NewAlert>,
    ) -> Result<AlertCounts>;

    fn due_deliveries(&self, sinks: &[String], now_ms: i64) -> Result<DueDeliveries>;

    fn claim_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        now_ms: i64,
        claim_until_ms: i64,
        owner_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Claim>;

    fn record_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        update: DeliveryUpdate<'_>,
        now_ms: i64,
    ) -> Result<bool>;

    #[allow(clippy::too_many_arguments)]
    fn defer_deliveries(
        &mut self,
        ids: &[i64],
        owner: &str,
        now_ms: i64,
        next_attempt_ms: i64,
        give_up_before_ms: i64,
        error: &str,
        given_up_error: &str,
    ) -> Result<Deferred>;

    fn release_claims(&mut self, owner: &str) -> Result<u64>;

    fn alert_state_counts(&self) -> Result<Vec<(String, u64)>>;

    fn list_alerts(&self, status: Option<DeliveryStatus>, limit: u32)
        -> Result<Vec<AlertDelivery>>;

    fn retry_alert(&mut self, alert_id: i64, sinks: &[String], now_ms: i64) -> Result<Option<u64>>;
}

/// The hash chains over the history (see [`chain`]).
pub trait ChainStore {
    /// Whether the schema has hash chains (a read-only handle on an old database does not).
    fn has_chains(&self) -> Result<bool>;

    /// The recorded heads of every chain (of one account, if given), for manifests.
    fn chain_heads(&self, account: Option<&str>) -> Result<Vec<(ChainKind, String, ChainHead)>>;

    /// The stored hashes at link `n` of a chain (see the SQLite backend for the exact meaning).
    fn chain_hashes_at(&self, kind: ChainKind, account: &str, n: i64) -> Result<Vec<Hash>>;

    /// Whether the schema has access-review campaigns (a read-only handle on an old database
    /// does not).
    fn has_reviews(&self) -> Result<bool>;

    /// Run `f` inside one read snapshot of this handle: every read `f` makes sees the database
    /// as it was at the first, whatever other handles commit meanwhile. A chain walk reads rows,
    /// then heads; without one snapshot, a batch committed between the two reads looks like
    /// deleted rows (`verify` beside a running daemon).
    fn read_snapshot(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<()>;

    /// Walk every chain (of one account, if given), recompute each link and hand each finding to
    /// `found` as it is met. Streams: memory does not grow with the history.
    fn walk_chains(
        &self,
        account: Option<&str>,
        found: &mut dyn FnMut(Finding),
    ) -> Result<Vec<ChainSummary>>;
}

/// The reads of the compliance reports, streamed in the order a report shows them.
pub trait ReportStore {
    /// Role changes of `account` filed in `[from_ms, to_ms)`, oldest first, until `f` says stop.
    fn visit_role_changes_in(
        &self,
        account: &str,
        from_ms: i64,
        to_ms: i64,
        f: &mut dyn FnMut(RoleChangeRow) -> bool,
    ) -> Result<u64>;

    /// The users of one selection with their activity, until `f` says stop.
    fn visit_user_activity(
        &self,
        account: &str,
        selection: UserSelection,
        f: &mut dyn FnMut(UserActivityRow) -> bool,
    ) -> Result<u64>;
}

/// The reads of the credentials report: service users and the audit events about API tokens
/// and client-authentication certificates, streamed in report order.
pub trait CredentialStore {
    /// The current (not deleted) service users of `account`, with `raw`, by name then id, until
    /// `f` says stop.
    fn visit_service_users(&self, account: &str, f: &mut dyn FnMut(UserRow) -> bool)
        -> Result<u64>;

    /// The token and certificate events of `account`, grouped by credential, until `f` says stop.
    fn visit_credential_events(
        &self,
        account: &str,
        f: &mut dyn FnMut(CredentialEvent) -> bool,
    ) -> Result<u64>;

    /// The action of one stored event, if it is stored.
    fn event_action(&self, account: &str, event_id: &str) -> Result<Option<String>>;
}

/// Access-review campaigns: a frozen population, decisions appended (never updated) and a
/// closure, every row a link of the campaign's own chain (`ChainKind::Reviews`).
pub trait ReviewStore {
    /// Freeze a campaign's population; its id and the population's SHA-256.
    fn create_review(&mut self, c: &NewCampaign, items: &[ReviewItem]) -> Result<(i64, String)>;

    fn review_campaign(&self, id: i64) -> Result<Option<Campaign>>;

    fn review_items(&self, id: i64) -> Result<Vec<ReviewItem>>;

    /// Every decision in import order (the latest per item is its decision).
    fn review_decisions(&self, id: i64) -> Result<Vec<Decision>>;

    /// Append decisions (all or none); how many were new, or why the campaign refused them.
    fn record_review_decisions(
        &mut self,
        id: i64,
        decisions: &[Decision],
    ) -> Result<std::result::Result<u64, ReviewRefusal>>;

    /// Close a campaign; the head of its chain, or why it cannot be closed.
    fn close_review(
        &mut self,
        id: i64,
        closed_ms: i64,
        decided: i64,
        total: i64,
    ) -> Result<std::result::Result<ChainHead, ReviewRefusal>>;

    fn review_head(&self, id: i64) -> Result<ChainHead>;

    /// Where this store is, as its errors name it.
    fn location(&self) -> String;

    /// The campaign, or an error naming the id that does not exist.
    fn require_review(&self, id: i64) -> Result<Campaign> {
        self.review_campaign(id)?
            .ok_or_else(|| StoreError::NotFound {
                location: self.location(),
                what: format!("no review campaign {id}"),
            })
    }
}

/// Leases: several daemons on one database share the accounts, each lease (per API key: accounts
/// that share a key share one) held by one owner at a time, with an epoch that grows with every
/// takeover. A handle fenced with a lease for an account ([`LeaseStore::fence`]) checks in
/// every write transaction of that account that the lease is still that owner's at that epoch,
/// under a share lock a takeover waits for: a writer that lost its lease commits nothing. The
/// defaults (SQLite, one host) grant every lease and fence nothing.
pub trait LeaseStore {
    /// Take `key` for `owner` until `now_ms + ttl_ms` if it is free, lapsed or already the
    /// owner's (renewed, same epoch); `None` while another owner holds it.
    fn acquire_lease(
        &mut self,
        key: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let _ = ttl_ms;
        Ok(Some(Lease {
            key: key.to_string(),
            owner: owner.to_string(),
            epoch: 0,
            expires_ms: i64::MAX,
            acquired_ms: now_ms,
        }))
    }

    /// Extend a lease still held at its epoch (the heartbeat); `None`: it was taken over.
    fn renew_lease(&mut self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<Option<Lease>> {
        let _ = (now_ms, ttl_ms);
        Ok(Some(lease.clone()))
    }

    /// Give a lease up (it lapses at once; the next owner's epoch is higher).
    fn release_lease(&mut self, lease: &Lease) -> Result<()> {
        let _ = lease;
        Ok(())
    }

    /// Claim the scheduled run of `job` at `tick_ms` for `node`: `true` for the one claim that
    /// wins (insert-if-absent), `false` when some node (this one too) claimed that tick before.
    /// A job that must run once per tick across daemons runs only on `true`.
    fn claim_tick(&mut self, job: &str, tick_ms: i64, node: &str, now_ms: i64) -> Result<bool>;

    /// Fence this handle's writes of `account` with `lease` (`None`: unfenced).
    fn fence(&mut self, account: &str, lease: Option<Lease>) {
        let _ = (account, lease);
    }

    /// Every lease row, for `status` and `/metrics`.
    fn leases(&self) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }
}

/// Something that copies committed writes into the main database on another thread (SQLite's
/// WAL checkpoints), so the writer seldom waits for it.
pub trait Checkpoint: Send {
    fn checkpoint(&self) -> Result<()>;
}

/// A storage backend: everything the rest of auditwarden needs from a database.
pub trait Backend:
    EventStore
    + UserStore
    + AlertStore
    + ChainStore
    + ReportStore
    + CredentialStore
    + ReviewStore
    + copy::CopyStore
    + LeaseStore
    + Send
{
    /// Give back memory a pass used (the daemon calls this between passes).
    fn release_memory(&self) -> Result<()> {
        Ok(())
    }

    /// Size caches for a pass's writes (`mib`), or back to the default (`None`).
    fn set_write_cache(&self, _mib: Option<u32>) -> Result<()> {
        Ok(())
    }

    /// A second handle that checkpoints for a writer on another thread, where the backend has
    /// such a thing.
    fn checkpointer(&self) -> Result<Option<Box<dyn Checkpoint>>> {
        Ok(None)
    }
}

/// auditwarden's handle on its history: one [`Backend`], and the generic conveniences a trait
/// object cannot offer. Derefs to the backend, so `store.write_page(..)` calls the backend.
pub struct Store {
    backend: Box<dyn Backend>,
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;
    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

impl std::ops::DerefMut for Store {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.backend
    }
}

/// Run a visit whose callback may fail with `E`: the first error stops the visit and is returned.
fn visit_with<R, E: From<StoreError>>(
    visit: impl FnOnce(&mut dyn FnMut(R) -> bool) -> Result<u64>,
    mut f: impl FnMut(R) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    let mut failed = None;
    let n = visit(&mut |row| match f(row) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// Which database a command opens: `[store] path` (SQLite, the default) or `[store] url`
/// (PostgreSQL, with its password from elsewhere). Every command opens its store through one of
/// these ([`Store::open_target`], [`Store::open_target_read_only`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTarget {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

impl StoreTarget {
    /// Whether a read-only open can succeed at all (a SQLite file that is not there cannot; a
    /// server is asked when it is opened).
    pub fn exists(&self) -> bool {
        match self {
            StoreTarget::Sqlite(p) => p.exists(),
            StoreTarget::Postgres(_) => true,
        }
    }

    /// The SQLite file, if it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreTarget::Sqlite(p) => Some(p),
            StoreTarget::Postgres(_) => None,
        }
    }
}

impl fmt::Display for StoreTarget {
    /// The file, or the URL (which never holds the password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite(p) => write!(f, "{}", p.display()),
            StoreTarget::Postgres(t) => f.write_str(t.url()),
        }
    }
}

impl Store {
    /// Open (creating and migrating if needed) the configured database.
    pub fn open_target(target: &StoreTarget) -> Result<Store> {
        match target {
            StoreTarget::Sqlite(p) => Store::open(p),
            StoreTarget::Postgres(t) => Ok(Store::with_backend(Box::new(
                self::postgres::Postgres::open(t)?,
            ))),
        }
    }

    /// Open the configured database for reading only; never creates or migrates.
    pub fn open_target_read_only(target: &StoreTarget) -> Result<Store> {
        Store::open_target_read_only_with_busy_timeout(target, Duration::from_secs(10))
    }

    /// [`Store::open_target_read_only`] waiting at most `busy` for a lock.
    pub fn open_target_read_only_with_busy_timeout(
        target: &StoreTarget,
        busy: Duration,
    ) -> Result<Store> {
        match target {
            StoreTarget::Sqlite(p) => Store::open_read_only_with_busy_timeout(p, busy),
            StoreTarget::Postgres(t) => Ok(Store::with_backend(Box::new(
                self::postgres::Postgres::open_read_only(t, busy)?,
            ))),
        }
    }

    /// A store over any backend.
    pub fn with_backend(backend: Box<dyn Backend>) -> Store {
        Store { backend }
    }

    /// Open (creating if needed) and migrate the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store::with_backend(Box::new(sqlite::Sqlite::open(path)?)))
    }

    /// Open an existing SQLite database for reading only (exports, status); never creates or
    /// migrates.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Ok(Store::with_backend(Box::new(
            sqlite::Sqlite::open_read_only(path)?,
        )))
    }

    /// [`Store::open_read_only`] waiting at most `busy` for a lock (`/metrics` answers from its
    /// last figures rather than wait).
    pub fn open_read_only_with_busy_timeout(path: &Path, busy: Duration) -> Result<Store> {
        Ok(Store::with_backend(Box::new(
            sqlite::Sqlite::open_read_only_with_busy_timeout(path, busy)?,
        )))
    }

    /// Stream stored events in (account, time, id) order; `f` may stop early with an error.
    pub fn for_each_event<E: From<StoreError>>(
        &self,
        filter: &EventFilter,
        f: impl FnMut(StoredEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        visit_with(|g| self.backend.visit_events(filter, g), f)
    }

    /// Role changes of `account` filed in `[from_ms, to_ms)`, oldest first; `f` may stop early.
    pub fn for_each_role_change_in<E: From<StoreError>>(
        &self,
        account: &str,
        from_ms: i64,
        to_ms: i64,
        f: impl FnMut(RoleChangeRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        visit_with(
            |g| {
                self.backend
                    .visit_role_changes_in(account, from_ms, to_ms, g)
            },
            f,
        )
    }

    /// The users of one selection with their activity; `f` may stop early.
    pub fn for_each_user_activity<E: From<StoreError>>(
        &self,
        account: &str,
        selection: UserSelection,
        f: impl FnMut(UserActivityRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        visit_with(
            |g| self.backend.visit_user_activity(account, selection, g),
            f,
        )
    }

    /// The current service users of `account` (see [`CredentialStore::visit_service_users`]);
    /// `f` may stop early.
    pub fn for_each_service_user<E: From<StoreError>>(
        &self,
        account: &str,
        f: impl FnMut(UserRow) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        visit_with(|g| self.backend.visit_service_users(account, g), f)
    }

    /// The token and certificate events of `account`; `f` may stop early.
    pub fn for_each_credential_event<E: From<StoreError>>(
        &self,
        account: &str,
        f: impl FnMut(CredentialEvent) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        visit_with(|g| self.backend.visit_credential_events(account, g), f)
    }

    /// [`ChainStore::walk_chains`] with any callback.
    pub fn verify_chains(
        &self,
        account: Option<&str>,
        mut found: impl FnMut(Finding),
    ) -> Result<Vec<ChainSummary>> {
        let mut summaries = Vec::new();
        self.backend.read_snapshot(&mut || {
            summaries = self.backend.walk_chains(account, &mut found)?;
            Ok(())
        })?;
        Ok(summaries)
    }

    /// [`UserStore::users_by_id`] from any iterator of ids.
    pub fn load_users_by_id<'a>(
        &self,
        account: &str,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, UserRow>> {
        let ids: Vec<&str> = ids.into_iter().collect();
        self.backend.users_by_id(account, &ids)
    }
}
