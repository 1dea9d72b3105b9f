//! `auditwarden store copy`: a whole history from one backend to another (SQLite to PostgreSQL or
//! back), table by table in chunks, keys and chain links as they are. Both schemas have these
//! tables with these columns; each backend maps [`CopyValue`]s to its column types
//! ([`CopyStore`]). Rows go in with "ignore if the key exists", so a copy cut short is finished
//! by running it again; chain heads go last, and the target's chains are verified at the end. A
//! target whose chains are not a prefix of the source's holds a different history: refused
//! before anything is written.

use super::{Result, Store, StoreError};

/// A column's kind: the value types both backends agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
    Bytes,
    /// A flag (SQLite's 0/1 integer, PostgreSQL's BOOLEAN).
    Flag,
    /// A float (SQLite's REAL, PostgreSQL's DOUBLE PRECISION).
    Real,
}

/// One value of a copied row.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Real(f64),
}

pub struct CopyTable {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// The integer key assigned on insert (`seq`, `id`), kept as it is.
    pub identity: Option<&'static str>,
}

use Kind::{Bytes, Flag, Int, Real, Text};

/// Every table of the history, in an order that satisfies references (alerts before their
/// deliveries, campaigns before their items, decisions and closures) and puts the chain heads
/// last.
pub const TABLES: &[CopyTable] = &[
    CopyTable {
        name: "events",
        columns: &[
            ("seq", Int),
            ("account", Text),
            ("event_id", Text),
            ("ts_ms", Int),
            ("day", Text),
            ("action", Text),
            ("resource_type", Text),
            ("resource_id", Text),
            ("resource_name", Text),
            ("actor_id", Text),
            ("actor_name", Text),
            ("status", Text),
            ("ip_address", Text),
            ("description", Text),
            ("data", Text),
            ("raw", Text),
            ("collected_ms", Int),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "quarantine",
        columns: &[
            ("seq", Int),
            ("account", Text),
            ("item_key", Text),
            ("window_day", Text),
            ("action_filter", Text),
            ("reason", Text),
            ("raw", Text),
            ("first_seen_ms", Int),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "coverage",
        columns: &[
            ("account", Text),
            ("action_filter", Text),
            ("day", Text),
            ("complete", Flag),
            ("server_total", Int),
            ("received", Int),
            ("read_ms", Int),
            ("note", Text),
        ],
        identity: None,
    },
    CopyTable {
        name: "passes",
        columns: &[
            ("id", Int),
            ("account", Text),
            ("started_ms", Int),
            ("finished_ms", Int),
            ("ok", Flag),
            ("error", Text),
            ("new_events", Int),
            ("duplicates", Int),
            ("quarantined", Int),
            ("requests", Int),
            ("retries", Int),
            ("rate_limited", Int),
            ("pace_rps", Real),
        ],
        identity: Some("id"),
    },
    CopyTable {
        name: "users",
        columns: &[
            ("account", Text),
            ("user_id", Text),
            ("user_name", Text),
            ("email", Text),
            ("display_name", Text),
            ("user_type", Text),
            ("status", Text),
            ("status_raw", Text),
            ("roles", Text),
            ("created_ms", Int),
            ("last_login_ms", Int),
            ("container", Text),
            ("raw", Text),
            ("fingerprint", Int),
            ("first_seen_ms", Int),
            ("updated_ms", Int),
            ("invited_ms", Int),
            ("accepted_ms", Int),
            ("accepted_after_ms", Int),
            ("accepted_at_ms", Int),
            ("deleted_ms", Int),
            ("last_seen_ms", Int),
            ("privileged", Flag),
        ],
        identity: None,
    },
    CopyTable {
        name: "user_history",
        columns: &[
            ("seq", Int),
            ("account", Text),
            ("user_id", Text),
            ("observed_ms", Int),
            ("after_ms", Int),
            ("field", Text),
            ("before", Text),
            ("after", Text),
            ("detail", Text),
            ("source", Text),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "role_changes",
        columns: &[
            ("seq", Int),
            ("account", Text),
            ("user_id", Text),
            ("role", Text),
            ("change", Text),
            ("observed_ms", Int),
            ("after_ms", Int),
            ("event_id", Text),
            ("event_ms", Int),
            ("actor_id", Text),
            ("actor_name", Text),
            ("ip_address", Text),
            ("source", Text),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "user_runs",
        columns: &[
            ("id", Int),
            ("account", Text),
            ("kind", Text),
            ("started_ms", Int),
            ("finished_ms", Int),
            ("complete", Flag),
            ("listed", Int),
            ("changes", Int),
            ("error", Text),
        ],
        identity: Some("id"),
    },
    CopyTable {
        name: "role_event_scan",
        columns: &[("account", Text), ("last_seq", Int)],
        identity: None,
    },
    CopyTable {
        name: "alerts",
        columns: &[
            ("id", Int),
            ("alert_key", Text),
            ("uid", Text),
            ("account", Text),
            ("rule", Text),
            ("severity", Text),
            ("at_ms", Int),
            ("summary", Text),
            ("payload", Text),
            ("suppressed", Flag),
            ("created_ms", Int),
            ("role_change_seq", Int),
        ],
        identity: Some("id"),
    },
    CopyTable {
        name: "alert_deliveries",
        columns: &[
            ("id", Int),
            ("alert_id", Int),
            ("sink", Text),
            ("status", Text),
            ("attempts", Int),
            ("last_error", Text),
            ("updated_ms", Int),
            ("sent_ms", Int),
            ("claimed_by", Text),
            ("claim_until_ms", Int),
            ("next_attempt_ms", Int),
            ("failing_since_ms", Int),
            ("failed_runs", Int),
        ],
        identity: Some("id"),
    },
    CopyTable {
        name: "alert_scan",
        columns: &[
            ("account", Text),
            ("role_seq", Int),
            ("history_seq", Int),
            ("credential_seq", Int),
        ],
        identity: None,
    },
    CopyTable {
        name: "report_runs",
        columns: &[
            ("account", Text),
            ("report_id", Text),
            ("run_id", Text),
            ("start_day", Text),
            ("end_day", Text),
            ("state", Text),
            ("status", Text),
            ("created_ms", Int),
            ("updated_ms", Int),
            ("rows", Int),
            ("note", Text),
        ],
        identity: None,
    },
    CopyTable {
        name: "review_campaigns",
        columns: &[
            ("id", Int),
            ("name", Text),
            ("scope", Text),
            ("accounts", Text),
            ("reviewers", Text),
            ("due_day", Text),
            ("started_ms", Int),
            ("items", Int),
            ("population_sha256", Text),
            ("chain_heads", Text),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: Some("id"),
    },
    CopyTable {
        name: "review_items",
        columns: &[
            ("seq", Int),
            ("campaign_id", Int),
            ("item_no", Int),
            ("account", Text),
            ("user_id", Text),
            ("user_name", Text),
            ("email", Text),
            ("user_type", Text),
            ("status", Text),
            ("role", Text),
            ("privileged", Flag),
            ("last_activity_ms", Int),
            ("activity_source", Text),
            ("dormant", Flag),
            ("granted", Text),
            ("granted_ms", Int),
            ("granted_by_id", Text),
            ("granted_by_name", Text),
            ("granted_by_email", Text),
            ("grant_event_id", Text),
            ("grant_ip", Text),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "review_decisions",
        columns: &[
            ("seq", Int),
            ("campaign_id", Int),
            ("item_no", Int),
            ("decision", Text),
            ("justification", Text),
            ("reviewer", Text),
            ("decided_ms", Int),
            ("source_file", Text),
            ("source_sha256", Text),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: Some("seq"),
    },
    CopyTable {
        name: "review_closures",
        columns: &[
            ("campaign_id", Int),
            ("closed_ms", Int),
            ("decided", Int),
            ("total", Int),
            ("chain_n", Int),
            ("chain_hash", Bytes),
        ],
        identity: None,
    },
    CopyTable {
        name: "chain_heads",
        columns: &[
            ("chain", Text),
            ("account", Text),
            ("n", Int),
            ("head", Bytes),
        ],
        identity: None,
    },
];

/// Rows handed to the target per call (one transaction each).
pub const CHUNK: usize = 5_000;

/// What a backend does for a copy.
pub trait CopyStore {
    /// Hand every row of `table` to `f` (columns in `table.columns` order) until it says stop.
    fn copy_out(&self, table: &CopyTable, f: &mut dyn FnMut(Vec<CopyValue>) -> bool)
        -> Result<u64>;

    /// Insert rows, keys as given, ignoring rows whose key (or any unique key) exists already;
    /// one transaction. Returns the rows inserted.
    fn copy_in(&mut self, table: &CopyTable, rows: &[Vec<CopyValue>]) -> Result<u64>;

    /// After the last table: what the backend needs so its own inserts continue after the
    /// copied keys (PostgreSQL's identity sequences).
    fn copy_finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a copy did, per table: (table, rows read, rows inserted).
#[derive(Debug, Default)]
pub struct CopyReport {
    pub tables: Vec<(&'static str, u64, u64)>,
    /// Chains on the target after the copy, and the findings of verifying them.
    pub chains: usize,
    pub findings: Vec<String>,
}

/// Why a copy did not start or did not finish.
#[derive(Debug)]
pub enum CopyError {
    /// The target's chains are not a prefix of the source's: it holds another history.
    Different(String),
    Store(StoreError),
}

impl From<StoreError> for CopyError {
    fn from(e: StoreError) -> CopyError {
        CopyError::Store(e)
    }
}

impl std::fmt::Display for CopyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CopyError::Different(s) => f.write_str(s),
            CopyError::Store(e) => write!(f, "{e}"),
        }
    }
}

/// Copy every table of `from` into `to` (see the module doc); `progress` hears each table as it
/// finishes.
pub fn copy(
    from: &Store,
    to: &mut Store,
    mut progress: impl FnMut(&'static str, u64, u64),
) -> std::result::Result<CopyReport, CopyError> {
    // A target whose every chain ends on a link of the source's chain at the same position is
    // the source's history so far (an earlier, interrupted copy): go on. Anything else is not.
    for s in to.verify_chains(None, |_| {})? {
        if s.head.n == 0 {
            continue;
        }
        let at = from.chain_hashes_at(s.chain, &s.account, s.head.n)?;
        if !at.contains(&s.head.hash) {
            return Err(CopyError::Different(format!(
                "the target holds a different history: its {} chain of account {} ends at link #{} with a hash the source does not have there; copy into an empty database",
                s.chain.as_str(),
                s.account,
                s.head.n
            )));
        }
    }
    let mut report = CopyReport::default();
    for t in TABLES {
        let mut chunk: Vec<Vec<CopyValue>> = Vec::with_capacity(CHUNK);
        let mut inserted = 0u64;
        let mut failed = None;
        let read = from.copy_out(t, &mut |row| {
            chunk.push(row);
            if chunk.len() >= CHUNK {
                match to.copy_in(t, &chunk) {
                    Ok(n) => inserted += n,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
                chunk.clear();
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        if !chunk.is_empty() {
            inserted += to.copy_in(t, &chunk)?;
        }
        progress(t.name, read, inserted);
        report.tables.push((t.name, read, inserted));
    }
    to.copy_finish()?;
    let summaries = to.verify_chains(None, |f| report.findings.push(f.to_string()))?;
    report.chains = summaries.len();
    Ok(report)
}
