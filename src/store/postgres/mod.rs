//! The PostgreSQL backend: one connection per handle (the blocking `postgres` client; store calls
//! already run on blocking threads), the schema of [`schema`], the same semantics as SQLite.
//!
//! What keeps them under concurrent writers (several processes, later several daemons):
//! - an event is stored once per account whoever writes it: a page's events go in only if no row
//!   has their `event_key` ([`crate::store::event_key`]), account and id, looked up under the
//!   account's `write_locks` row (below), which every writer of the account's events takes
//!   first, so no other writer can add a row between the lookup and the insert (the key is not
//!   unique, so no constraint would stop one: the lock is what keeps events exactly once);
//! - every write transaction of an account first takes that account's `write_locks` row
//!   `FOR UPDATE` (scope `events` for pages, `users` for user batches and role links), so the
//!   writers of one account queue there and commit one after the other: chain links (computed in
//!   Rust from the head read under the lock, see [`crate::store::chain`]) and `seq` values follow
//!   commit order, and the chain head is written in the transaction that adds its rows. Writers
//!   of different accounts take different rows and never wait for each other;
//! - coverage commits with its page, alerts with their scan marks, claims in their own short
//!   transactions whose `UPDATE ... WHERE` re-checks the claim (row locks serialize them).
//!
//! A page's new events go in as one binary `COPY` (after one lookup of the keys already stored,
//! under the account's lock): one round trip per page, the server's cheapest way in.

mod alerts;
mod chain;
mod copy;
mod domain;
mod extras;
mod leases;
mod reports;
mod reviews;
mod schema;
mod users;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Transaction};

use super::chain::{ChainHead, ChainKind};
use super::{
    day_str, AccountStatus, Backend, Coverage, EventBatch, EventFilter, EventStore, PageOutcome,
    PageWrite, PassRecord, QuarantineItem, ReportRun, ReportRunState, Result, StoreError,
    StoredEvent,
};
use crate::secret::Secret;

/// Where a PostgreSQL database is: a `postgresql://USER@HOST:PORT/DB?sslmode=...` URL that holds
/// no password, and the password from elsewhere (`password_env` / `password_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgTarget {
    url: String,
    password: Option<Secret>,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    /// How long the server lets a session of ours sit idle inside a transaction (see
    /// [`PgTarget::with_idle_in_transaction`]).
    idle_in_transaction: Duration,
}

/// `sslmode` as this backend honours it. rustls always verifies the server's certificate, so
/// `require`, `verify-ca` and `verify-full` all verify it (against the system's roots and
/// `sslrootcert`); `disable` speaks plain TCP; `prefer` (the default) tries TLS, verified, and
/// falls back to plain TCP only when the server does not offer TLS at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Prefer,
    Require,
}

impl PgTarget {
    /// Read a URL. The message of a refusal never repeats the URL (it may hold a password).
    pub fn parse(url: &str, password: Option<Secret>) -> std::result::Result<PgTarget, String> {
        let mut u = url::Url::parse(url.trim()).map_err(|_| {
            "not a URL like postgresql://USER@HOST:PORT/DB?sslmode=require (the value is not shown: it may hold a password)".to_string()
        })?;
        if !matches!(u.scheme(), "postgresql" | "postgres") {
            return Err("must start with postgresql:// (the value is not shown)".into());
        }
        if u.password().is_some() {
            return Err("the URL holds a password, which is not shown and not accepted here: keep the user in the URL (postgresql://USER@host:port/db) and put the password in password_env or password_file".into());
        }
        if u.host_str().is_none_or(str::is_empty) {
            return Err("names no host: write it as postgresql://USER@HOST:PORT/DB".into());
        }
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        let mut rest: Vec<(String, String)> = Vec::new();
        for (k, v) in u.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    tls = match v.as_ref() {
                        "disable" => TlsMode::Disable,
                        "allow" | "prefer" => TlsMode::Prefer,
                        "require" | "verify-ca" | "verify-full" => TlsMode::Require,
                        other => {
                            return Err(format!(
                                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                            ))
                        }
                    }
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(v.as_ref())),
                "password" => {
                    return Err("the URL holds a password parameter, which is not shown and not accepted here: use password_env or password_file".into())
                }
                _ => rest.push((k.into_owned(), v.into_owned())),
            }
        }
        if rest.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(rest);
        }
        let url = u.to_string();
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| format!("not a usable PostgreSQL URL: {e}"))?;
        Ok(PgTarget {
            url,
            password,
            tls,
            root_cert,
            idle_in_transaction: IDLE_IN_TRANSACTION,
        })
    }

    /// A session idle inside a transaction this long (a paused or partitioned daemon: our own
    /// writers never idle for more than about a second in one) is ended by the server, which
    /// rolls it back and frees its locks for the node that takes over. The daemon ties it to
    /// `[daemon] lease_secs`.
    pub fn with_idle_in_transaction(mut self, d: Duration) -> PgTarget {
        self.idle_in_transaction = d.max(Duration::from_secs(5));
        self
    }

    /// The URL without sslmode and sslrootcert: what messages name (it holds no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same server and credentials, another database (tests create theirs).
    pub fn with_database(&self, db: &str) -> PgTarget {
        let mut t = self.clone();
        if let Ok(mut u) = url::Url::parse(&self.url) {
            u.set_path(&format!("/{db}"));
            t.url = u.to_string();
        }
        t
    }

    /// Connect (TLS as `sslmode` says). The connection runs on a thread of its own (a small
    /// runtime that does the socket and TLS work); the returned client's calls are waited for
    /// with [`Wait::wait`], which blocks the calling thread without touching tokio's context, so
    /// a store call works the same on a blocking thread, a runtime worker or the CLI's main thread
    /// (the blocking `postgres` crate refuses to run inside a runtime, which the CLI is).
    pub fn connect(&self) -> std::result::Result<Client, String> {
        let mut cfg: tokio_postgres::Config = self.url.parse().map_err(|e| format!("{e}"))?;
        if let Some(p) = &self.password {
            cfg.password(p.expose());
        }
        cfg.connect_timeout(Duration::from_secs(10));
        cfg.application_name("auditwarden");
        let tls = match self.tls {
            TlsMode::Disable => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            mode => {
                cfg.ssl_mode(if mode == TlsMode::Require {
                    tokio_postgres::config::SslMode::Require
                } else {
                    tokio_postgres::config::SslMode::Prefer
                });
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                    self.tls_config()?,
                ))
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the connection's runtime: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("auditwarden-pg".into())
            .spawn(move || {
                rt.block_on(async move {
                    // The connection future ends when the client is dropped (or the server
                    // goes away); the thread with it.
                    match tls {
                        None => match cfg.connect(tokio_postgres::NoTls).await {
                            Ok((client, conn)) => {
                                let _ = tx.send(Ok(client));
                                let _ = conn.await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(describe(&e)));
                            }
                        },
                        Some(tls) => match cfg.connect(tls).await {
                            Ok((client, conn)) => {
                                let _ = tx.send(Ok(client));
                                let _ = conn.await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(describe(&e)));
                            }
                        },
                    }
                })
            })
            .map_err(|e| format!("cannot start the connection's thread: {e}"))?;
        rx.recv()
            .map_err(|_| "the connection's thread ended before connecting".to_string())?
    }

    /// Run statements outside any store (tests create and drop their databases with it).
    pub fn execute_batch(&self, sql: &str) -> std::result::Result<(), String> {
        let c = self.connect()?;
        c.batch_execute(sql).wait().map_err(|e| describe(&e))
    }

    fn tls_config(&self) -> std::result::Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(p) = &self.root_cert {
            let pem = std::fs::read(p).map_err(|e| format!("sslrootcert {}: {e}", p.display()))?;
            for der in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| format!("sslrootcert {}: {e}", p.display()))?;
                roots
                    .add(der)
                    .map_err(|e| format!("sslrootcert {}: {e}", p.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// A connection error in words, with the server's message when there is one (never the password:
/// the client does not put it in errors).
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

/// Wait for a client call from any thread (see [`PgTarget::connect`]).
pub(super) trait Wait: std::future::Future + Sized {
    fn wait(self) -> Self::Output {
        futures_executor::block_on(self)
    }
}

impl<F: std::future::Future> Wait for F {}

pub struct Postgres {
    /// `RefCell`: the client's calls take `&mut`, the store's reads `&self`; one handle is used by
    /// one thread at a time (`Backend: Send`, not `Sync`).
    client: RefCell<Client>,
    location: String,
    /// The lease each account's writes are fenced with (see `leases.rs`).
    fences: HashMap<String, crate::store::Lease>,
}

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The default of [`PgTarget::with_idle_in_transaction`].
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);

/// How long a writer waits for another's lock on the same account before giving up.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

impl Postgres {
    /// Connect, create the schema if needed and migrate.
    pub fn open(target: &PgTarget) -> Result<Postgres> {
        let mut pg = Postgres::connect(target)?;
        pg.session(&format!(
            "SET lock_timeout = '{}s'; SET client_min_messages = warning;
             SET idle_in_transaction_session_timeout = '{}s'",
            LOCK_TIMEOUT.as_secs(),
            target.idle_in_transaction.as_secs()
        ))?;
        pg.migrate()?;
        Ok(pg)
    }

    /// Connect to an existing auditwarden database for reading only; never creates or migrates.
    pub fn open_read_only(target: &PgTarget, busy: Duration) -> Result<Postgres> {
        let pg = Postgres::connect(target)?;
        pg.session(&format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; SET lock_timeout = '{}ms'; SET statement_timeout = '{}ms'",
            busy.as_millis().max(1),
            (busy.as_millis() * 6).max(60_000)
        ))?;
        let known = schema::MIGRATIONS.len() as i64;
        let has: bool = pg
            .one(
                "SELECT to_regclass('auditwarden_schema') IS NOT NULL",
                &[],
                "schema",
            )?
            .get(0);
        if !has {
            return Err(StoreError::NotOurs {
                location: pg.location.clone(),
                what: "no auditwarden schema yet: `auditwarden collect` creates it".into(),
            });
        }
        let v: i64 = pg
            .one(
                "SELECT version FROM auditwarden_schema WHERE id = 1",
                &[],
                "schema version",
            )?
            .get(0);
        if v > known {
            return Err(StoreError::SchemaTooNew {
                location: pg.location.clone(),
                version: v,
                known,
            });
        }
        if v == 0 {
            return Err(StoreError::NotOurs {
                location: pg.location.clone(),
                what: "no auditwarden schema yet: another auditwarden is probably creating it right now (try again in a moment)".into(),
            });
        }
        Ok(pg)
    }

    fn connect(target: &PgTarget) -> Result<Postgres> {
        let location = format!("database {}", target.url());
        let client = target.connect().map_err(|e| StoreError::NotOurs {
            location: location.clone(),
            what: format!("cannot connect: {e}"),
        })?;
        Ok(Postgres {
            client: RefCell::new(client),
            location,
            fences: HashMap::new(),
        })
    }

    fn session(&self, sql: &str) -> Result<()> {
        self.client
            .borrow_mut()
            .batch_execute(sql)
            .wait()
            .map_err(|e| self.err("session settings", e))
    }

    pub(super) fn err(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        pg_err(&self.location, what, e)
    }

    /// One row (an error when there is none).
    pub(super) fn one(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<Row> {
        self.client
            .borrow_mut()
            .query_one(sql, params)
            .wait()
            .map_err(|e| self.err(what, e))
    }

    pub(super) fn opt(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<Option<Row>> {
        self.client
            .borrow_mut()
            .query_opt(sql, params)
            .wait()
            .map_err(|e| self.err(what, e))
    }

    pub(super) fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<Vec<Row>> {
        self.client
            .borrow_mut()
            .query(sql, params)
            .wait()
            .map_err(|e| self.err(what, e))
    }

    pub(super) fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
    ) -> Result<u64> {
        self.client
            .borrow_mut()
            .execute(sql, params)
            .wait()
            .map_err(|e| self.err(what, e))
    }

    /// Stream the rows of a query to `f` until it says stop; returns how many it accepted.
    pub(super) fn stream(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        what: &str,
        f: &mut dyn FnMut(&Row) -> Result<bool>,
    ) -> Result<u64> {
        let c = self.client.borrow_mut();
        let rows = c
            .query_raw(sql, params.iter().copied())
            .wait()
            .map_err(|e| pg_err(&self.location, what, e))?;
        let mut n = 0;
        for r in futures_executor::block_on_stream(Box::pin(rows)) {
            let r = r.map_err(|e| pg_err(&self.location, what, e))?;
            if !f(&r)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Begin a write transaction.
    pub(super) fn tx(&mut self, what: &str) -> Result<(Transaction<'_>, &str)> {
        let location = &self.location;
        let tx = self
            .client
            .get_mut()
            .transaction()
            .wait()
            .map_err(|e| pg_err(location, what, e))?;
        Ok((tx, location))
    }

    fn migrate(&mut self) -> Result<()> {
        let known = schema::MIGRATIONS.len() as i64;
        // Two processes creating a fresh database at once may collide on the catalog (the
        // loser's CREATE TABLE IF NOT EXISTS fails with a unique violation): once more finds the
        // table there.
        let boot = self.session(schema::BOOTSTRAP);
        if boot.is_err() {
            self.session(schema::BOOTSTRAP)?;
        }
        loop {
            let (tx, location) = self.tx("begin migration")?;
            let v: i64 = tx
                .query_one(
                    "SELECT version FROM auditwarden_schema WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .wait()
                .map_err(|e| pg_err(location, "reading the schema version", e))?
                .get(0);
            if v > known {
                return Err(StoreError::SchemaTooNew {
                    location: location.to_string(),
                    version: v,
                    known,
                });
            }
            let Some(sql) = schema::MIGRATIONS.get(v as usize) else {
                tx.commit()
                    .wait()
                    .map_err(|e| pg_err(location, "end migration check", e))?;
                return Ok(());
            };
            let n = v + 1;
            tx.batch_execute(sql)
                .wait()
                .map_err(|e| pg_err(location, &format!("migration {n}"), e))?;
            if *sql == schema::EVENT_KEYS {
                // Key the rows already stored, in the migration's transaction (a crash leaves
                // the old schema, and the next open redoes it), then index the keys.
                key_stored_events(&tx).map_err(|e| {
                    pg_err(
                        location,
                        &format!("migration {n}: keying the stored events"),
                        e,
                    )
                })?;
                tx.batch_execute(schema::EVENT_KEYS_INDEX)
                    .wait()
                    .map_err(|e| pg_err(location, &format!("migration {n}: events_by_key"), e))?;
            }
            tx.execute(
                "UPDATE auditwarden_schema SET version = $1 WHERE id = 1",
                &[&n],
            )
            .wait()
            .map_err(|e| pg_err(location, "set schema version", e))?;
            tx.commit()
                .wait()
                .map_err(|e| pg_err(location, "commit migration", e))?;
        }
    }

    fn day_of(&self, table: &'static str, account: &str, day: &str) -> Result<NaiveDate> {
        parse_day(day).ok_or_else(|| StoreError::Corrupt {
            location: self.location.clone(),
            table: table.to_string(),
            row: format!("({account:?}, {day:?})"),
            what: format!("day {day:?} is not a value auditwarden writes"),
        })
    }
}

/// Rows keyed per step by [`key_stored_events`].
const KEY_CHUNK: i64 = 10_000;

/// Fill `event_key` of the rows stored before migration [`schema::EVENT_KEYS`], in `seq` chunks
/// (one read and one `UPDATE ... FROM unnest` each), so memory stays flat whatever the table
/// holds. Bounded: `seq` only grows from chunk to chunk, and the table is finite.
fn key_stored_events(tx: &Transaction<'_>) -> std::result::Result<(), tokio_postgres::Error> {
    let mut after = 0i64;
    loop {
        let rows = tx
            .query(
                "SELECT seq, event_id FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &KEY_CHUNK],
            )
            .wait()?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.get(0);
        let seqs: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let keys: Vec<i64> = rows
            .iter()
            .map(|r| super::event_key::event_key(r.get(1)))
            .collect();
        tx.execute(
            "UPDATE events SET event_key = k.key
             FROM unnest($1::bigint[], $2::bigint[]) AS k (seq, key) WHERE events.seq = k.seq",
            &[&seqs, &keys],
        )
        .wait()?;
    }
}

/// Take the account's write lock of `scope` (see the module doc), creating its row if needed.
pub(super) fn lock_account(
    tx: &mut Transaction<'_>,
    location: &str,
    scope: &str,
    account: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO write_locks (scope, account) VALUES ($1, $2)
         ON CONFLICT (scope, account) DO UPDATE SET scope = excluded.scope",
        &[&scope, &account],
    )
    .wait()
    .map_err(|e| pg_err(location, "take the account's write lock", e))?;
    Ok(())
}

pub(super) fn pg_err(location: &str, what: &str, e: tokio_postgres::Error) -> StoreError {
    let busy = e.code().is_some_and(|c| {
        *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::QUERY_CANCELED
    });
    if busy {
        return StoreError::Busy {
            location: location.to_string(),
            detail: format!(
                "{what}: {} (another writer held what this one needed)",
                describe(&e)
            ),
        };
    }
    StoreError::Backend {
        location: location.to_string(),
        what: what.to_string(),
        source: Box::new(e),
    }
}

impl Backend for Postgres {}

/// A stored value that cannot be read as what auditwarden writes there: the row reported as
/// corrupt (table, row, what), never defaulted.
pub(super) fn corrupt(location: &str, table: &str, row: &str, what: String) -> StoreError {
    StoreError::Corrupt {
        location: location.to_string(),
        table: table.to_string(),
        row: row.to_string(),
        what,
    }
}

/// Column `idx` of a row, or the row reported as corrupt (an enum value auditwarden does not
/// write, a NULL where there must be a value).
pub(super) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a Row,
    idx: usize,
    at: (&str, &str, &str),
) -> Result<T> {
    let (location, table, row) = at;
    r.try_get(idx).map_err(|e| {
        let name = r.columns().get(idx).map_or("?", |c| c.name());
        corrupt(location, table, row, format!("{name}: {e}"))
    })
}

/// A roles column (a JSON array of strings this backend wrote), or the row reported as corrupt.
pub(super) fn parse_roles(roles: &str, at: (&str, &str, &str)) -> Result<Vec<String>> {
    let (location, table, row) = at;
    serde_json::from_str(roles).map_err(|_| {
        corrupt(
            location,
            table,
            row,
            format!(
                "roles {:?} is not a value auditwarden writes",
                roles.chars().take(80).collect::<String>()
            ),
        )
    })
}

impl EventStore for Postgres {
    fn pending_report_runs(&self, account: &str) -> Result<Vec<ReportRun>> {
        self.report_runs(account, Some(ReportRunState::Pending), 10_000)
    }

    fn recent_report_runs(&self, account: &str, limit: u32) -> Result<Vec<ReportRun>> {
        let mut v = self.report_runs(account, None, limit)?;
        v.reverse();
        Ok(v)
    }

    fn batch(&mut self) -> Result<Box<dyn EventBatch + '_>> {
        let fences = self.fences.clone();
        let (tx, location) = self.tx("begin")?;
        // The duplicate lookup's plan must not depend on the table's statistics: during a
        // backfill they lag far behind the rows (autovacuum analyzes late), and a custom plan
        // that believed an account held a few thousand rows scanned all of them for every page
        // (a 1,000,000-event backfill took 434 s, 18x SQLite). The generic plan probes the
        // `events_by_key` index whatever the statistics say.
        tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")
            .wait()
            .map_err(|e| pg_err(location, "set the plan cache mode", e))?;
        Ok(Box::new(Batch {
            fences,
            fenced: RefCell::new(HashSet::new()),
            tx: RefCell::new(tx),
            location,
            heads: HashMap::new(),
            dedup: None,
        }))
    }

    fn coverage(
        &self,
        account: &str,
        action_filter: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Coverage>> {
        let rows = self.rows(
            "SELECT day, complete, server_total, received, read_ms, note FROM coverage
             WHERE account = $1 AND action_filter = $2 AND day BETWEEN $3 AND $4 ORDER BY day",
            &[&account, &action_filter, &day_str(from), &day_str(to)],
            "read coverage",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let day: String = r.get(0);
            out.push(Coverage {
                day: self.day_of("coverage", account, &day)?,
                complete: r.get(1),
                server_total: r.get::<_, Option<i64>>(2).map(|t| t as u64),
                received: r.get::<_, i64>(3) as u64,
                read_at: from_ms(r.get(4)),
                note: r.get(5),
            });
        }
        Ok(out)
    }

    fn account_status(&self, account: &str) -> Result<AccountStatus> {
        let r = self.one(
            "SELECT (SELECT COUNT(*) FROM events WHERE account = $1),
                    (SELECT COUNT(*) FROM quarantine WHERE account = $1),
                    (SELECT COUNT(DISTINCT day) FROM coverage WHERE account = $1 AND complete),
                    (SELECT MAX(finished_ms) FROM passes WHERE account = $1 AND ok),
                    (SELECT MIN(day) FROM coverage WHERE account = $1 AND complete),
                    (SELECT MAX(day) FROM coverage WHERE account = $1 AND complete)",
            &[&account],
            "account status",
        )?;
        let first: Option<String> = r.get(4);
        let last: Option<String> = r.get(5);
        let mut s = AccountStatus {
            events: r.get::<_, i64>(0) as u64,
            quarantined: r.get::<_, i64>(1) as u64,
            complete_days: r.get::<_, i64>(2) as u64,
            last_success: r.get::<_, Option<i64>>(3).map(from_ms),
            first_complete: first.as_deref().and_then(parse_day),
            last_complete: last.as_deref().and_then(parse_day),
            ..Default::default()
        };
        s.last_pass = self
            .opt(
                "SELECT started_ms, finished_ms, error, new_events, duplicates, quarantined,
                    requests, retries, rate_limited, pace_rps
                 FROM passes WHERE account = $1 ORDER BY id DESC LIMIT 1",
                &[&account],
                "last pass",
            )?
            .map(|r| PassRecord {
                account: account.to_string(),
                started: from_ms(r.get(0)),
                finished: from_ms(r.get(1)),
                error: r.get(2),
                new_events: r.get::<_, i64>(3) as u64,
                duplicates: r.get::<_, i64>(4) as u64,
                quarantined: r.get::<_, i64>(5) as u64,
                requests: r.get::<_, i64>(6) as u64,
                retries: r.get::<_, i64>(7) as u64,
                rate_limited: r.get::<_, i64>(8) as u64,
                pace_rps: r.get(9),
            });
        for r in self.rows(
            "SELECT day, COALESCE(note, 'not read yet') FROM coverage
             WHERE account = $1 AND NOT complete ORDER BY day",
            &[&account],
            "incomplete days",
        )? {
            let d: String = r.get(0);
            s.incomplete
                .push((self.day_of("coverage", account, &d)?, r.get(1)));
        }
        Ok(s)
    }

    fn visit_events(
        &self,
        filter: &EventFilter,
        f: &mut dyn FnMut(StoredEvent) -> bool,
    ) -> Result<u64> {
        let from = filter.from.map(ms);
        let to = filter.to.map(ms);
        self.stream(
            "SELECT account, event_id, ts_ms, action, resource_type, resource_id,
                resource_name, actor_id, actor_name, status, ip_address, description, raw
             FROM events
             WHERE ($1::text IS NULL OR account = $1) AND ($2::bigint IS NULL OR ts_ms >= $2)
               AND ($3::bigint IS NULL OR ts_ms < $3) AND ($4::text IS NULL OR action = $4)
             ORDER BY account, ts_ms, event_id",
            &[&filter.account, &from, &to, &filter.action],
            "export",
            &mut |r| {
                Ok(f(StoredEvent {
                    account: r.get(0),
                    id: r.get(1),
                    timestamp: from_ms(r.get(2)),
                    action: r.get(3),
                    resource_type: r.get(4),
                    resource_id: r.get(5),
                    resource_name: r.get(6),
                    actor_id: r.get(7),
                    actor_name: r.get(8),
                    status: r.get(9),
                    ip_address: r.get(10),
                    description: r.get(11),
                    raw: r.get(12),
                }))
            },
        )
    }

    fn event_ids(&self, account: &str) -> Result<Vec<String>> {
        Ok(self
            .rows(
                "SELECT event_id FROM events WHERE account = $1 ORDER BY event_id",
                &[&account],
                "event ids",
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn quarantine(&self, account: Option<&str>, limit: u32) -> Result<Vec<QuarantineItem>> {
        Ok(self
            .rows(
                "SELECT account, item_key, window_day, reason, raw FROM quarantine
                 WHERE ($1::text IS NULL OR account = $1) ORDER BY seq DESC LIMIT $2",
                &[&account, &i64::from(limit)],
                "quarantine",
            )?
            .iter()
            .map(|r| QuarantineItem {
                account: r.get(0),
                key: r.get(1),
                day: r.get(2),
                reason: r.get(3),
                raw: r.get(4),
            })
            .collect())
    }
}

/// The page insert: one binary `COPY` of the page's new events with their keys (the duplicates
/// were looked up first, under the account's lock; see `write_page`). Measured by `cargo bench --bench
/// postgres -- inserts`: COPY ingests about twice the rows per second of one `INSERT ...
/// SELECT FROM unnest(...)` per page, which itself ingests about three times one INSERT per row.
/// The number of rows written.
fn copy_events(
    tx: &Transaction<'_>,
    account: &str,
    fresh: &[&crate::api::AuditEvent],
    keys: &[i64],
    links: &[ChainHead],
    collected_ms: i64,
) -> std::result::Result<u64, tokio_postgres::Error> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::{ToSql, Type};
    const TYPES: [Type; 19] = [
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::BYTEA,
        Type::INT8,
    ];
    async {
        let sink = tx
            .copy_in(
                "COPY events (account, event_id, ts_ms, day, action, resource_type, resource_id,
                    resource_name, actor_id, actor_name, status, ip_address, description, data,
                    raw, collected_ms, chain_n, chain_hash, event_key) FROM STDIN BINARY",
            )
            .await?;
        let writer = BinaryCopyInWriter::new(sink, &TYPES);
        let mut writer = std::pin::pin!(writer);
        for ((e, link), key) in fresh.iter().zip(links).zip(keys) {
            let ts = ms(e.timestamp);
            let day = day_str(e.timestamp.date_naive());
            let hash = &link.hash[..];
            let row: [&(dyn ToSql + Sync); 19] = [
                &account,
                &e.id,
                &ts,
                &day,
                &e.action,
                &e.resource_type,
                &e.resource_id,
                &e.resource_name,
                &e.actor_id,
                &e.actor_name,
                &e.status,
                &e.ip_address,
                &e.description,
                &e.data,
                &e.raw,
                &collected_ms,
                &link.n,
                &hash,
                key,
            ];
            writer.as_mut().write(&row).await?;
        }
        writer.finish().await
    }
    .wait()
}

struct Batch<'a> {
    /// `RefCell`: `mark_incomplete` and `record_pass` write through `&self`.
    tx: RefCell<Transaction<'a>>,
    location: &'a str,
    /// Event-chain heads of the accounts this batch locked, read once under the lock and written
    /// back by [`Batch::commit`] when they moved (the flag).
    heads: HashMap<String, (ChainHead, bool)>,
    /// The duplicate lookup, prepared once per batch (a named statement, so its generic plan).
    dedup: Option<tokio_postgres::Statement>,
    /// The leases this handle's writes are fenced with, and the accounts checked in this batch.
    fences: HashMap<String, crate::store::Lease>,
    fenced: RefCell<HashSet<String>>,
}

impl Batch<'_> {
    /// Check the account's fence once per batch (its share lock lasts until the batch ends).
    fn fence(&self, account: &str) -> Result<()> {
        if self.fenced.borrow().contains(account) {
            return Ok(());
        }
        leases::check_fence(
            &self.tx.borrow(),
            self.location,
            account,
            self.fences.get(account),
        )?;
        self.fenced.borrow_mut().insert(account.to_string());
        Ok(())
    }

    fn err(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        pg_err(self.location, what, e)
    }
}

impl EventBatch for Batch<'_> {
    /// PostgreSQL queues writers on row locks, and a batch holds only its own accounts' locks:
    /// nobody waits for it but writers of the same accounts, which come after it anyway.
    fn others_waiting(&self) -> bool {
        false
    }

    fn write_page(&mut self, w: &PageWrite<'_>) -> Result<PageOutcome> {
        let now = ms(crate::clock::now());
        let mut out = PageOutcome::default();
        let location = self.location;
        self.fence(w.account)?;
        let tx = self.tx.get_mut();
        if !w.events.is_empty() {
            let mut head = match self.heads.get(w.account) {
                Some((h, _)) => *h,
                None => {
                    lock_account(tx, location, "events", w.account)?;
                    chain::load_head(tx, location, ChainKind::Events, w.account)?
                }
            };
            // Under the account's `write_locks` row (taken above, kept to the commit) nobody
            // else adds this account's events: the ids stored under the page's keys are exactly
            // the duplicates. The key narrows, the account and id decide (two ids may share a
            // key). The account is compared here, not in SQL: with `account = $1` beside the
            // keys the generic plan ANDed in a bitmap of `events_by_time` over the account's
            // every row, for each page (a 1,000,000-event backfill 41.6 s -> 105.7 s).
            let keys: Vec<i64> = w
                .events
                .iter()
                .map(|e| super::event_key::event_key(&e.id))
                .collect();
            let dedup = match &self.dedup {
                Some(s) => s.clone(),
                None => {
                    let s = tx
                        .prepare("SELECT account, event_id FROM events WHERE event_key = ANY($1)")
                        .wait()
                        .map_err(|e| pg_err(location, "prepare the duplicate lookup", e))?;
                    self.dedup = Some(s.clone());
                    s
                }
            };
            let stored: HashSet<String> = tx
                .query(&dedup, &[&keys])
                .wait()
                .map_err(|e| pg_err(location, "find duplicates", e))?
                .iter()
                .filter(|r| r.get::<_, &str>(0) == w.account)
                .map(|r| r.get(1))
                .collect();
            let mut seen: HashSet<&str> = HashSet::new();
            let (fresh, fresh_keys): (Vec<_>, Vec<i64>) = w
                .events
                .iter()
                .zip(&keys)
                .filter(|(e, _)| !stored.contains(&e.id) && seen.insert(e.id.as_str()))
                .unzip();
            out.duplicates = (w.events.len() - fresh.len()) as u64;
            if !fresh.is_empty() {
                let mut links = Vec::with_capacity(fresh.len());
                for e in &fresh {
                    head = head.next(e.raw.as_bytes());
                    links.push(head);
                }
                // Under the account's lock the lookup above found every duplicate, so the rows
                // go in as they are (COPY has no `ON CONFLICT`; a speculative insertion per row
                // cost a quarter of the backfill).
                let inserted = copy_events(tx, w.account, &fresh, &fresh_keys, &links, now)
                    .map_err(|e| pg_err(location, "insert events", e))?;
                if inserted != fresh.len() as u64 {
                    // Not all rows went in: the links computed here would not be a chain. Roll
                    // back rather than store a broken one.
                    return Err(StoreError::Busy {
                        location: location.to_string(),
                        detail: format!(
                            "insert events: {} of {} new events were stored by another writer meanwhile; the page is rolled back and read again",
                            fresh.len() as u64 - inserted,
                            fresh.len()
                        ),
                    });
                }
                out.inserted = inserted;
            }
            let moved = out.inserted > 0 || self.heads.get(w.account).is_some_and(|(_, m)| *m);
            self.heads.insert(w.account.to_string(), (head, moved));
        }
        let day = w.day.map(day_str).unwrap_or_default();
        for m in w.malformed {
            out.quarantined += tx
                .execute(
                    "INSERT INTO quarantine (account, item_key, window_day, action_filter,
                        reason, raw, first_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (account, item_key) DO NOTHING",
                    &[
                        &w.account,
                        &m.key,
                        &day,
                        &w.action_filter,
                        &m.reason,
                        &m.raw,
                        &now,
                    ],
                )
                .wait()
                .map_err(|e| pg_err(location, "insert quarantine", e))?;
        }
        if let (Some(done), Some(d)) = (w.done, w.day) {
            tx.execute(
                "INSERT INTO coverage (account, action_filter, day, complete, server_total,
                        received, read_ms, note) VALUES ($1, $2, $3, TRUE, $4, $5, $6, NULL)
                     ON CONFLICT (account, action_filter, day) DO UPDATE SET complete = TRUE,
                        server_total = excluded.server_total, received = excluded.received,
                        read_ms = excluded.read_ms, note = NULL",
                &[
                    &w.account,
                    &w.action_filter,
                    &day_str(d),
                    &done.server_total.map(|t| t as i64),
                    &(done.received as i64),
                    &now,
                ],
            )
            .wait()
            .map_err(|e| pg_err(location, "update coverage", e))?;
        }
        Ok(out)
    }

    fn mark_incomplete(
        &self,
        account: &str,
        action_filter: &str,
        day: NaiveDate,
        note: &str,
    ) -> Result<()> {
        self.fence(account)?;
        self.tx
            .borrow_mut()
            .execute(
                "INSERT INTO coverage (account, action_filter, day, complete, server_total,
                    received, read_ms, note) VALUES ($1, $2, $3, FALSE, NULL, 0, $4, $5)
                 ON CONFLICT (account, action_filter, day) DO UPDATE SET complete = FALSE,
                    read_ms = excluded.read_ms, note = excluded.note",
                &[
                    &account,
                    &action_filter,
                    &day_str(day),
                    &ms(crate::clock::now()),
                    &note,
                ],
            )
            .wait()
            .map_err(|e| self.err("mark incomplete", e))?;
        Ok(())
    }

    fn save_report_run(&self, run: &ReportRun) -> Result<()> {
        self.fence(&run.account)?;
        extras::save_report_run(&self.tx.borrow(), self.location, run)
    }

    fn record_pass(&self, p: &PassRecord) -> Result<()> {
        self.fence(&p.account)?;
        self.tx
            .borrow_mut()
            .execute(
                "INSERT INTO passes (account, started_ms, finished_ms, ok, error, new_events,
                    duplicates, quarantined, requests, retries, rate_limited, pace_rps)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &p.account,
                    &ms(p.started),
                    &ms(p.finished),
                    &p.error.is_none(),
                    &p.error,
                    &(p.new_events as i64),
                    &(p.duplicates as i64),
                    &(p.quarantined as i64),
                    &(p.requests as i64),
                    &(p.retries as i64),
                    &(p.rate_limited as i64),
                    &p.pace_rps,
                ],
            )
            .wait()
            .map_err(|e| self.err("record pass", e))?;
        Ok(())
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let location = self.location;
        let mut tx = self.tx.into_inner();
        let heads: Vec<(String, ChainHead)> = self
            .heads
            .iter()
            .filter(|(_, (_, moved))| *moved)
            .map(|(a, (h, _))| (a.clone(), *h))
            .collect();
        for (account, head) in heads {
            chain::save_head(&mut tx, location, ChainKind::Events, &account, &head)?;
        }
        tx.commit()
            .wait()
            .map_err(|e| pg_err(location, "commit", e))
    }
}

#[cfg(test)]
pub(crate) mod tests;
