//! The SQLite backend: one connection per handle (WAL mode, busy timeout), the embedded default.
//!
//! Writers never fail each other: every write transaction is `BEGIN IMMEDIATE` (the write lock
//! is taken up front, so a transaction never has to upgrade a read snapshot that another writer
//! has made stale), the writers of one process queue for their turn in [`gate`], and other
//! processes wait in SQLite's busy handler. Schema migrations run under `BEGIN EXCLUSIVE` and
//! read the schema version again inside the lock, so two processes opening a fresh database run
//! each migration once.

mod alerts;
mod chain;
mod copy;
mod credentials;
mod domain_rules;
mod event_keys;
mod gate;
mod migrations;
mod report_runs;
mod reports;
mod reviews;
mod sign_ins;
mod users;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::chain::{ChainHead, ChainKind};
use super::{
    day_str, AccountStatus, Backend, Checkpoint, Coverage, EventBatch, EventFilter, EventStore,
    PageOutcome, PageWrite, PassRecord, QuarantineItem, ReportRun, Result, StoreError, StoredEvent,
};

/// What a database call can fail with inside this backend: SQLite's error, or a writer that
/// waited longer than [`TURN_TIMEOUT`] for the writers of this process queued before it.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    TurnTimeout,
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> DbError {
        DbError::Sql(e)
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED as SQLite reports them: another connection held the lock this
/// one needed for longer than the busy timeout.
fn is_busy(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) && msg.as_deref().is_none_or(|m| {
                m.starts_with("database is locked") || m.starts_with("database table is locked")
            })
        }
        _ => false,
    }
}

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a writer waits for the writers of this process queued before it. Longer than the
/// busy timeout: those are our own short transactions (a batch commits within about a second
/// when someone waits), so a long wait means a long write, not a stuck one.
const TURN_TIMEOUT: Duration = Duration::from_secs(60);

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// This process's write queue for the file (shared by every `Store` open on it).
    gate: Arc<gate::Gate>,
}

/// A write transaction (`BEGIN IMMEDIATE`) taken in turn (see [`gate`]). Derefs to the
/// transaction; [`WriteTx::commit`] commits, dropping it rolls back. Either way the turn passes
/// to the next writer only after the transaction has ended.
pub(crate) struct WriteTx<'a> {
    // Field order matters: the transaction ends (drop order) before the turn is given up.
    tx: rusqlite::Transaction<'a>,
    _turn: gate::Turn,
}

impl<'a> std::ops::Deref for WriteTx<'a> {
    type Target = rusqlite::Transaction<'a>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl WriteTx<'_> {
    pub(crate) fn commit(self) -> rusqlite::Result<()> {
        self.tx.commit()
    }
}

/// SQLite's page cache outside a collection pass's writes, in KiB.
const DEFAULT_CACHE_KIB: i64 = 16_384;

/// Checkpoint the WAL once it holds this many pages (about 40 MiB), when no [`Checkpointer`] does.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;

/// Runs WAL checkpoints on its own connection, so the thread that inserts seldom waits for one:
/// copying the WAL into the database overlaps the next transactions (a PASSIVE checkpoint takes
/// no lock a writer needs). The writer keeps its automatic checkpoint: only a checkpoint right
/// after a commit, with no frame newer than it, can finish the WAL so that the next transaction
/// starts it over; by then this one has copied most of it. (Without that the WAL never restarts
/// under a steady writer, grows by gigabytes and every page lookup slows down with it.)
/// Durability is unchanged: each commit is in the WAL either way.
struct Checkpointer {
    conn: Connection,
    path: PathBuf,
}

impl Checkpoint for Checkpointer {
    /// Copy what is committed in the WAL into the database, without blocking the writer.
    fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| err(&self.path, "checkpoint", e))
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored millisecond timestamp, or the row reported as corrupt (never 1970).
fn from_ms(v: i64, at: (usize, &str, &str, &str)) -> rusqlite::Result<DateTime<Utc>> {
    let (col, table, row, column) = at;
    DateTime::from_timestamp_millis(v)
        .ok_or_else(|| domain_rules::corrupt(col, table, row, column, &v.to_string()))
}

impl Sqlite {
    /// Open (creating if needed) and migrate the database.
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
                    location: location(path),
                    what: format!("cannot create the directory {}", dir.display()),
                    source: e,
                })?;
            }
        }
        let conn = Connection::open(path).map_err(|e| err(path, "cannot open", e))?;
        let mut store = Sqlite {
            conn,
            path: path.to_path_buf(),
            gate: gate::Gate::for_path(path),
        };
        store.configure()?;
        store.migrate()?;
        Ok(store)
    }

    /// Open an existing database for reading only (exports, status); never creates or migrates.
    pub fn open_read_only(path: &Path) -> Result<Sqlite> {
        Sqlite::open_read_only_with_busy_timeout(path, BUSY_TIMEOUT)
    }

    /// [`Sqlite::open_read_only`] waiting at most `busy` for a lock (`/metrics` answers from its
    /// last figures rather than wait).
    pub fn open_read_only_with_busy_timeout(path: &Path, busy: Duration) -> Result<Sqlite> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(path, "cannot open (has `collect` run yet?)", e))?;
        conn.busy_timeout(busy)
            .map_err(|e| err(path, "busy_timeout", e))?;
        let store = Sqlite {
            conn,
            path: path.to_path_buf(),
            gate: gate::Gate::for_path(path),
        };
        // One statement, so one snapshot: read apart, a migration could commit between the two
        // reads and a database being created would look foreign.
        let (v, tables): (i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT COUNT(*) FROM sqlite_master)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| store.err("not an auditwarden database", e))?;
        if v == 0 {
            // A database whose first migration has not committed yet has no tables at all (the
            // creator's transaction is invisible to readers): say so rather than call it foreign.
            return Err(not_ours(
                path,
                if tables == 0 {
                    "no auditwarden schema yet: another auditwarden is probably creating it right now (try again in a moment); if not, `auditwarden collect` creates it"
                } else {
                    "not an auditwarden database (it has tables, but no auditwarden schema version)"
                },
            ));
        }
        Ok(store)
    }

    /// A stored day, or the corrupt row it is in.
    fn day_of(&self, table: &'static str, account: &str, day: &str) -> Result<NaiveDate> {
        parse_day(day).ok_or_else(|| {
            corrupt(
                &self.path,
                table,
                format!("({account:?}, {day:?})"),
                format!("day {day:?} is not a value auditwarden writes"),
            )
        })
    }

    fn err(&self, what: &str, e: impl Into<DbError>) -> StoreError {
        err(&self.path, what, e)
    }

    fn configure(&mut self) -> Result<()> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err("busy_timeout", e))?;
        // WAL: readers (status, export, reports) never block the collector. synchronous=NORMAL is
        // durable against a process crash (kill -9); a power loss may roll back the last
        // transactions, but rows and their coverage always roll back together.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.err("not a usable SQLite database", e))?;
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err("pragma synchronous", e))?;
        // The (account, event_id) index takes random keys (UUIDs): a 16 MiB page cache keeps more
        // of it in memory, and checkpointing every ~40 MiB of WAL instead of every 4 MiB cuts the
        // fsyncs that dominated insert time (with the writer's batching: 14.6k -> 50k events/s
        // on 300k events, `cargo bench --bench collect`).
        self.conn
            .pragma_update(None, "cache_size", -DEFAULT_CACHE_KIB)
            .map_err(|e| self.err("pragma cache_size", e))?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(|e| self.err("pragma wal_autocheckpoint", e))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let known = migrations::MIGRATIONS.len() as i64;
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err("reading the schema version", e))?;
        if current > known {
            return Err(newer_schema(&self.path, current, known));
        }
        if current == known {
            // The usual case: versions only grow, so this needs no lock.
            return Ok(());
        }
        // Another process may be opening the same fresh (or old) database right now. Each
        // migration runs under the exclusive write lock and reads the version again inside it:
        // whoever comes second finds the migration done and skips it, instead of running it
        // again ("table events already exists"). The second waits for the first's transaction
        // (the busy timeout), or is told plainly that another auditwarden is writing.
        let path = self.path.clone();
        let _turn = self
            .gate
            .wait_turn(TURN_TIMEOUT)
            .ok_or_else(|| err(&path, "waiting to migrate the schema", DbError::TurnTimeout))?;
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
                .map_err(|e| {
                    if is_busy(&e) {
                        StoreError::Busy { location: location(&path), detail: format!(
                            "another auditwarden is writing to this database (upgrading its schema, or a long write) and did not finish within {} s; try again when it has finished",
                            BUSY_TIMEOUT.as_secs()
                        ) }
                    } else {
                        err(&path, "begin migration", e)
                    }
                })?;
            let v: i64 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| err(&path, "reading the schema version", e))?;
            if v > known {
                return Err(newer_schema(&path, v, known));
            }
            let Some(sql) = migrations::MIGRATIONS.get(v as usize) else {
                // Up to date: another process finished the migrations while this one waited.
                tx.commit()
                    .map_err(|e| err(&path, "end migration check", e))?;
                return Ok(());
            };
            let n = v + 1;
            tx.execute_batch(sql)
                .map_err(|e| err(&path, &format!("migration {n}"), e))?;
            if *sql == migrations::CHAIN {
                // SQLite cannot compute SHA-256: chain the rows already stored from Rust, in the
                // migration's transaction (a crash leaves the old schema, and the next open redoes it).
                chain::backfill(&tx)
                    .map_err(|e| err(&path, &format!("migration {n}: building hash chains"), e))?;
            }
            if *sql == migrations::EVENT_KEYS {
                event_keys::backfill(&tx).map_err(|e| {
                    err(
                        &path,
                        &format!("migration {n}: keying the stored events"),
                        e,
                    )
                })?;
            }
            if *sql == migrations::DOMAIN_RULES {
                domain_rules::backfill(&tx).map_err(|e| {
                    err(
                        &path,
                        &format!("migration {n}: storing the domain rules' results"),
                        e,
                    )
                })?;
            }
            tx.pragma_update(None, "user_version", n)
                .map_err(|e| err(&path, "set user_version", e))?;
            tx.commit().map_err(|e| err(&path, "commit migration", e))?;
        }
    }

    /// Begin a write transaction in turn with this process's other writers: see [`WriteTx`].
    pub(crate) fn write_tx(&mut self) -> std::result::Result<WriteTx<'_>, DbError> {
        let turn = self.write_turn()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// This process's turn to write, for a single statement outside a transaction (it commits
    /// on its own); hold it until the statement has run.
    pub(crate) fn write_turn(&self) -> std::result::Result<gate::Turn, DbError> {
        self.gate
            .wait_turn(TURN_TIMEOUT)
            .ok_or(DbError::TurnTimeout)
    }
}

/// One host: every lease is granted, nothing is fenced (the trait's defaults); ticks are claimed
/// in the file, so daemons sharing it run a tick's job once.
impl super::LeaseStore for Sqlite {
    fn claim_tick(&mut self, job: &str, tick_ms: i64, node: &str, now_ms: i64) -> Result<bool> {
        let _turn = self.write_turn().map_err(|e| self.err("claim tick", e))?;
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO job_ticks (job, tick_ms, node, claimed_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![job, tick_ms, node, now_ms],
            )
            .map_err(|e| self.err("claim tick", e))?;
        Ok(n == 1)
    }
}

impl Backend for Sqlite {
    /// Give back the memory a pass used: SQLite frees its page cache and other memory it can
    /// (`PRAGMA shrink_memory`); the next pass reads the pages it needs again. The daemon calls
    /// this between passes so it idles small whatever the size of the backfill.
    fn release_memory(&self) -> Result<()> {
        self.conn
            .execute_batch("PRAGMA shrink_memory")
            .map_err(|e| self.err("shrink memory", e))
    }

    /// Size SQLite's page cache for a pass's writes (`mib`), or back to the default (`None`). The
    /// index of random event ids is touched all over on every insert; while it fits in the cache,
    /// a transaction writes each of its pages once instead of spilling and re-reading them.
    fn set_write_cache(&self, mib: Option<u32>) -> Result<()> {
        let kib = mib.map_or(DEFAULT_CACHE_KIB, |m| i64::from(m) * 1024);
        self.conn
            .pragma_update(None, "cache_size", -kib)
            .map_err(|e| self.err("pragma cache_size", e))
    }

    /// A second connection to this database that runs WAL checkpoints for a writer on another
    /// thread (see [`Checkpointer`]).
    fn checkpointer(&self) -> Result<Option<Box<dyn Checkpoint>>> {
        let conn = Connection::open(&self.path).map_err(|e| self.err("cannot open", e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.err("busy_timeout", e))?;
        Ok(Some(Box::new(Checkpointer {
            conn,
            path: self.path.clone(),
        })))
    }
}

impl EventStore for Sqlite {
    fn pending_report_runs(&self, account: &str) -> Result<Vec<ReportRun>> {
        self.runs_pending(account)
    }

    fn recent_report_runs(&self, account: &str, limit: u32) -> Result<Vec<ReportRun>> {
        self.runs_recent(account, limit)
    }

    /// Begin a batch: several pages, coverage changes and pass records in one transaction.
    fn batch(&mut self) -> Result<Box<dyn EventBatch + '_>> {
        let turn = self.write_turn().map_err(|e| err(&self.path, "begin", e))?;
        // Not `write_tx`: the batch also borrows `path`, a field disjoint from `conn`.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| err(&self.path, "begin", e))?;
        let gate = self.gate.clone();
        Ok(Box::new(Batch {
            tx: WriteTx { tx, _turn: turn },
            path: &self.path,
            heads: HashMap::new(),
            gate,
        }))
    }

    /// Coverage rows of one account and action filter between two days (inclusive).
    fn coverage(
        &self,
        account: &str,
        action_filter: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Coverage>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT day, complete, server_total, received, read_ms, note FROM coverage
                 WHERE account = ?1 AND action_filter = ?2 AND day BETWEEN ?3 AND ?4 ORDER BY day",
            )
            .map_err(|e| self.err("prepare coverage", e))?;
        let rows = st
            .query_map(
                params![account, action_filter, day_str(from), day_str(to)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, bool>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                },
            )
            .map_err(|e| self.err("read coverage", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (day, complete, total, received, read, note) =
                row.map_err(|e| self.err("read coverage", e))?;
            let day = self.day_of("coverage", account, &day)?;
            {
                out.push(Coverage {
                    day,
                    complete,
                    server_total: total.map(|t| t as u64),
                    received: received as u64,
                    read_at: from_ms(
                        read,
                        (4, "coverage", &format!("({account:?}, {day})"), "read_ms"),
                    )
                    .map_err(|e| self.err("read coverage", e))?,
                    note,
                });
            }
        }
        Ok(out)
    }

    /// What `status` shows for one account.
    fn account_status(&self, account: &str) -> Result<AccountStatus> {
        let c = &self.conn;
        let count = |sql: &str| -> Result<u64> {
            c.query_row(sql, params![account], |r| r.get::<_, i64>(0))
                .map(|v| v as u64)
                .map_err(|e| self.err("count", e))
        };
        let mut s = AccountStatus {
            events: count("SELECT COUNT(*) FROM events WHERE account = ?1")?,
            quarantined: count("SELECT COUNT(*) FROM quarantine WHERE account = ?1")?,
            complete_days: count(
                "SELECT COUNT(DISTINCT day) FROM coverage WHERE account = ?1 AND complete = 1",
            )?,
            ..Default::default()
        };
        // A read-only handle may see a schema another process has not finished upgrading yet
        // (it never migrates): read the pace columns only where they exist.
        let paced: bool = c
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('passes') WHERE name = 'pace_rps'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err("schema", e))?;
        let pace_columns = if paced {
            "rate_limited, pace_rps"
        } else {
            "0, NULL"
        };
        s.last_pass = c
            .query_row(
                &format!(
                    "SELECT started_ms, finished_ms, error, new_events, duplicates, quarantined,
                        requests, retries, {pace_columns}
                     FROM passes WHERE account = ?1 ORDER BY id DESC LIMIT 1"
                ),
                params![account],
                |r| {
                    Ok(PassRecord {
                        account: account.to_string(),
                        started: from_ms(r.get(0)?, (0, "passes", "latest", "started_ms"))?,
                        finished: from_ms(r.get(1)?, (1, "passes", "latest", "finished_ms"))?,
                        error: r.get(2)?,
                        new_events: r.get::<_, i64>(3)? as u64,
                        duplicates: r.get::<_, i64>(4)? as u64,
                        quarantined: r.get::<_, i64>(5)? as u64,
                        requests: r.get::<_, i64>(6)? as u64,
                        retries: r.get::<_, i64>(7)? as u64,
                        rate_limited: r.get::<_, i64>(8)? as u64,
                        pace_rps: r.get(9)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err("last pass", e))?;
        s.last_success = c
            .query_row(
                "SELECT MAX(finished_ms) FROM passes WHERE account = ?1 AND ok = 1",
                params![account],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| self.err("last success", e))?
            .map(|t| from_ms(t, (0, "passes", "latest ok", "finished_ms")))
            .transpose()
            .map_err(|e| self.err("last success", e))?;
        let (first, last): (Option<String>, Option<String>) = c
            .query_row(
                "SELECT MIN(day), MAX(day) FROM coverage WHERE account = ?1 AND complete = 1",
                params![account],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err("coverage range", e))?;
        s.first_complete = first.as_deref().and_then(parse_day);
        s.last_complete = last.as_deref().and_then(parse_day);
        let mut st = c
            .prepare(
                "SELECT day, COALESCE(note, 'not read yet') FROM coverage
                 WHERE account = ?1 AND complete = 0 ORDER BY day",
            )
            .map_err(|e| self.err("incomplete days", e))?;
        let rows = st
            .query_map(params![account], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err("incomplete days", e))?;
        for row in rows {
            let (d, note) = row.map_err(|e| self.err("incomplete days", e))?;
            s.incomplete
                .push((self.day_of("coverage", account, &d)?, note));
        }
        Ok(s)
    }

    /// Stream stored events in (account, time, id) order; `f` may stop early with an error.
    fn visit_events(
        &self,
        filter: &EventFilter,
        f: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<u64> {
        let mut st = self
            .conn
            .prepare(
                "SELECT account, event_id, ts_ms, action, resource_type, resource_id,
                    resource_name, actor_id, actor_name, status, ip_address, description, raw
                 FROM events
                 WHERE (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR ts_ms >= ?2)
                   AND (?3 IS NULL OR ts_ms < ?3) AND (?4 IS NULL OR action = ?4)
                 ORDER BY account, ts_ms, event_id",
            )
            .map_err(|e| self.err("prepare export", e))?;
        let mut rows = st
            .query(params![
                filter.account,
                filter.from.map(ms),
                filter.to.map(ms),
                filter.action
            ])
            .map_err(|e| self.err("export", e))?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.err("export", e))? {
            let ev = (|| -> rusqlite::Result<StoredEvent> {
                Ok(StoredEvent {
                    account: r.get(0)?,
                    id: r.get(1)?,
                    timestamp: {
                        let id: String = r.get(1)?;
                        from_ms(r.get(2)?, (2, "events", &format!("event {id:?}"), "ts_ms"))?
                    },
                    action: r.get(3)?,
                    resource_type: r.get(4)?,
                    resource_id: r.get(5)?,
                    resource_name: r.get(6)?,
                    actor_id: r.get(7)?,
                    actor_name: r.get(8)?,
                    status: r.get(9)?,
                    ip_address: r.get(10)?,
                    description: r.get(11)?,
                    raw: r.get(12)?,
                })
            })()
            .map_err(|e| self.err("export row", e))?;
            if !f(ev) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Every stored event id of an account (tests and the benchmark compare it with ground truth).
    fn event_ids(&self, account: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT event_id FROM events WHERE account = ?1 ORDER BY event_id")
            .map_err(|e| self.err("event ids", e))?;
        let rows = st
            .query_map(params![account], |r| r.get::<_, String>(0))
            .map_err(|e| self.err("event ids", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("event ids", e))
    }

    /// Quarantined items, newest first (at most `limit`).
    fn quarantine(&self, account: Option<&str>, limit: u32) -> Result<Vec<QuarantineItem>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT account, item_key, window_day, reason, raw FROM quarantine
                 WHERE (?1 IS NULL OR account = ?1) ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.err("quarantine", e))?;
        let rows = st
            .query_map(params![account, limit], |r| {
                Ok(QuarantineItem {
                    account: r.get(0)?,
                    key: r.get(1)?,
                    day: r.get(2)?,
                    reason: r.get(3)?,
                    raw: r.get(4)?,
                })
            })
            .map_err(|e| self.err("quarantine", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("quarantine", e))
    }
}

/// Writes that commit together: a crash before [`Batch::commit`] leaves none of them.
struct Batch<'a> {
    tx: WriteTx<'a>,
    path: &'a Path,
    /// Event-chain heads of the accounts this batch wrote, read once per batch from
    /// `chain_heads` and written back by [`Batch::commit`] in the same transaction. Living in the
    /// batch, the cache dies with a rollback, and a new batch (or process) reads the committed head.
    /// The flag says whether the head moved (only those are written).
    heads: HashMap<String, (ChainHead, bool)>,
    /// To see whether other writers of this process are waiting (see [`Batch::others_waiting`]).
    gate: Arc<gate::Gate>,
}

impl EventBatch for Batch<'_> {
    fn save_report_run(&self, run: &ReportRun) -> Result<()> {
        self.save_run(run)
    }

    /// Other writers of this process are waiting for this batch to commit: a long-lived batch
    /// (the collection's writer) commits now rather than keep them waiting.
    fn others_waiting(&self) -> bool {
        self.gate.waiting() > 0
    }

    /// Store one page (each event once per `(account, id)`) and, with the last page of a window
    /// read that proved complete, mark that day complete: rows and coverage commit together.
    fn write_page(&mut self, w: &PageWrite<'_>) -> Result<PageOutcome> {
        let now = ms(crate::clock::now());
        let path = self.path;
        let tx = &self.tx;
        let mut out = PageOutcome::default();
        let mut head = match self.heads.get(w.account) {
            Some((h, _)) => *h,
            None => chain::load_head(tx, ChainKind::Events, w.account)
                .map_err(|e| err(path, "read chain head", e))?,
        };
        {
            // An event is stored once per account: inserted only if no row has its key, account
            // and id (`migrations::EVENT_KEYS`). A lookup, then a plain insert: an `INSERT ...
            // SELECT ... WHERE NOT EXISTS` on the same table makes SQLite stage each row in a
            // temporary table first (measured: 1.8 times the instructions in SQLite).
            let mut stored = tx
                .prepare_cached(
                    "SELECT 1 FROM events WHERE event_key = ?1 AND account = ?2 AND event_id = ?3",
                )
                .map_err(|e| err(path, "prepare lookup", e))?;
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO events (account, event_id, ts_ms, day, action,
                        resource_type, resource_id, resource_name, actor_id, actor_name, status,
                        ip_address, description, data, raw, collected_ms, chain_n, chain_hash,
                        event_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                        ?17, ?18, ?19)",
                )
                .map_err(|e| err(path, "prepare insert", e))?;
            // A page's events share a day or two: its text is made once per day, not per event.
            let mut day_text: Option<(NaiveDate, String)> = None;
            for e in w.events {
                let key = crate::store::event_key::event_key(&e.id);
                if stored
                    .exists(params![key, w.account, e.id])
                    .map_err(|er| err(path, "look up event", er))?
                {
                    // A duplicate leaves the chain as it was.
                    out.duplicates += 1;
                    continue;
                }
                // The next link of the account's chain: this row becomes its head.
                let next = head.next(e.raw.as_bytes());
                let date = e.timestamp.date_naive();
                let day = match &day_text {
                    Some((d, t)) if *d == date => t.as_str(),
                    _ => &day_text.insert((date, day_str(date))).1,
                };
                let n = ins
                    .execute(params![
                        w.account,
                        e.id,
                        ms(e.timestamp),
                        day,
                        e.action,
                        e.resource_type,
                        e.resource_id,
                        e.resource_name,
                        e.actor_id,
                        e.actor_name,
                        e.status,
                        e.ip_address,
                        e.description,
                        e.data,
                        e.raw,
                        now,
                        next.n,
                        &next.hash[..],
                        key
                    ])
                    .map_err(|er| err(path, "insert event", er))?;
                head = next;
                out.inserted += n as u64;
            }
            let day = w.day.map(day_str).unwrap_or_default();
            let mut q = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO quarantine (account, item_key, window_day, action_filter,
                        reason, raw, first_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| err(path, "prepare quarantine", e))?;
            for m in w.malformed {
                out.quarantined +=
                    q.execute(params![
                        w.account,
                        m.key,
                        day,
                        w.action_filter,
                        m.reason,
                        m.raw,
                        now
                    ])
                    .map_err(|e| err(path, "insert quarantine", e))? as u64;
            }
            if let (Some(done), Some(d)) = (w.done, w.day) {
                tx.execute(
                    "INSERT INTO coverage (account, action_filter, day, complete, server_total,
                        received, read_ms, note) VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, NULL)
                     ON CONFLICT (account, action_filter, day) DO UPDATE SET complete = 1,
                        server_total = excluded.server_total, received = excluded.received,
                        read_ms = excluded.read_ms, note = NULL",
                    params![
                        w.account,
                        w.action_filter,
                        day_str(d),
                        done.server_total.map(|t| t as i64),
                        done.received as i64,
                        now
                    ],
                )
                .map_err(|e| err(path, "update coverage", e))?;
            }
        }
        if out.inserted > 0 {
            self.heads.insert(w.account.to_string(), (head, true));
        } else if !self.heads.contains_key(w.account) {
            self.heads.insert(w.account.to_string(), (head, false));
        }
        Ok(out)
    }

    /// Record that a day could not be proven complete in this pass (it is read again next pass).
    fn mark_incomplete(
        &self,
        account: &str,
        action_filter: &str,
        day: NaiveDate,
        note: &str,
    ) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO coverage (account, action_filter, day, complete, server_total,
                    received, read_ms, note) VALUES (?1, ?2, ?3, 0, NULL, 0, ?4, ?5)
                 ON CONFLICT (account, action_filter, day) DO UPDATE SET complete = 0,
                    read_ms = excluded.read_ms, note = excluded.note",
                params![
                    account,
                    action_filter,
                    day_str(day),
                    ms(crate::clock::now()),
                    note
                ],
            )
            .map_err(|e| err(self.path, "mark incomplete", e))?;
        Ok(())
    }

    fn record_pass(&self, p: &PassRecord) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO passes (account, started_ms, finished_ms, ok, error, new_events,
                    duplicates, quarantined, requests, retries, rate_limited, pace_rps)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    p.account,
                    ms(p.started),
                    ms(p.finished),
                    p.error.is_none(),
                    p.error,
                    p.new_events as i64,
                    p.duplicates as i64,
                    p.quarantined as i64,
                    p.requests as i64,
                    p.retries as i64,
                    p.rate_limited as i64,
                    p.pace_rps
                ],
            )
            .map_err(|e| err(self.path, "record pass", e))?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        for (account, (head, _)) in self.heads.iter().filter(|(_, (_, moved))| *moved) {
            chain::save_head(&self.tx, ChainKind::Events, account, head)
                .map_err(|e| err(self.path, "write chain head", e))?;
        }
        self.tx.commit().map_err(|e| err(self.path, "commit", e))
    }
}

/// How errors name this database.
fn location(path: &Path) -> String {
    format!("database {}", path.display())
}

fn err(path: &Path, what: &str, source: impl Into<DbError>) -> StoreError {
    match source.into() {
        DbError::TurnTimeout => StoreError::Busy {
            location: location(path),
            detail: format!(
                "{what}: other writers of this process held the database for more than {} s",
                TURN_TIMEOUT.as_secs()
            ),
        },
        DbError::Sql(e) if is_busy(&e) => StoreError::Busy {
            location: location(path),
            detail: format!(
                "{what}: {e} (another process, perhaps another auditwarden, kept it busy for more than {} s)",
                BUSY_TIMEOUT.as_secs()
            ),
        },
        DbError::Sql(rusqlite::Error::FromSqlConversionFailure(_, _, source))
            if source.is::<domain_rules::CorruptRow>() =>
        {
            match source.downcast::<domain_rules::CorruptRow>() {
                Ok(c) => StoreError::Corrupt {
                    location: location(path),
                    table: c.table,
                    row: c.row,
                    what: format!("{} (reading {what})", c.what),
                },
                Err(source) => StoreError::Backend {
                    location: location(path),
                    what: what.to_string(),
                    source,
                },
            }
        }
        DbError::Sql(e) => StoreError::Backend {
            location: location(path),
            what: what.to_string(),
            source: Box::new(e),
        },
    }
}

/// The file is not (yet) an auditwarden database, said in words.
fn not_ours(path: &Path, what: &str) -> StoreError {
    StoreError::NotOurs {
        location: location(path),
        what: what.to_string(),
    }
}

/// A stored value this backend cannot read as what it must be.
pub(crate) fn corrupt(path: &Path, table: &str, row: String, what: String) -> StoreError {
    StoreError::Corrupt {
        location: location(path),
        table: table.to_string(),
        row,
        what,
    }
}

fn newer_schema(path: &Path, version: i64, known: i64) -> StoreError {
    StoreError::SchemaTooNew {
        location: location(path),
        version,
        known,
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    // The store's conformance suite, on a fresh SQLite file per case.
    crate::backend_conformance!({
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("aw.db")).unwrap();
        (dir, store)
    });

    #[test]
    fn a_read_snapshot_does_not_see_commits_made_during_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aw.db");
        let writer = Store::open(&path).unwrap();
        let reader = Store::open_read_only(&path).unwrap();
        crate::store::conformance::a_read_snapshot_does_not_see_commits_made_during_it(
            reader, writer,
        );
    }

    /// A file that is not SQLite gets an error naming the file, and is left untouched.
    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.db");
        std::fs::write(&p, "these are my notes, not a database; ".repeat(200)).unwrap();
        let before = std::fs::read(&p).unwrap();
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("notes.db"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}
