//! The SQLite side of the hash chains (see [`crate::store::chain`] for what they prove): chain
//! heads read and written inside a write transaction, the migration that chains rows stored
//! before chains existed, and the verifier's walk over the rows.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::Sqlite;
use crate::store::chain::{
    check_event_columns, history_bytes, ChainHead, ChainKind, ChainRow, ChainSummary, EventColumns,
    Finding, Hash, Walker,
};
use crate::store::{ChainStore, Result};

/// The recorded head of one chain, or the genesis head when the account has none yet.
pub(super) fn load_head(
    conn: &Connection,
    kind: ChainKind,
    account: &str,
) -> rusqlite::Result<ChainHead> {
    Ok(conn
        .prepare_cached("SELECT n, head FROM chain_heads WHERE chain = ?1 AND account = ?2")?
        .query_row(params![kind.as_str(), account], |r| {
            Ok(ChainHead {
                n: r.get(0)?,
                hash: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_else(|| ChainHead::genesis(kind, account)))
}

pub(super) fn save_head(
    conn: &Connection,
    kind: ChainKind,
    account: &str,
    head: &ChainHead,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO chain_heads (chain, account, n, head) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (chain, account) DO UPDATE SET n = excluded.n, head = excluded.head",
    )?
    .execute(params![kind.as_str(), account, head.n, &head.hash[..]])?;
    Ok(())
}

/// Rows read per step while building chains for rows stored before chains existed.
const BACKFILL_CHUNK: i64 = 10_000;

/// Build both chains for every row already stored (the migration that introduces chains runs
/// this inside its own transaction). Reads in chunks, so memory stays flat.
pub(super) fn backfill(conn: &Connection) -> rusqlite::Result<()> {
    for kind in ChainKind::ALL {
        let select = match kind {
            ChainKind::Events => {
                "SELECT seq, account, raw FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            }
            ChainKind::UserHistory => {
                "SELECT seq, account, user_id, observed_ms, after_ms, field, before, after, detail,
                    source FROM user_history WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            }
            // Review rows never predate chains: they are linked as they are written.
            ChainKind::Reviews => continue,
        };
        let update = format!(
            "UPDATE {} SET chain_n = ?2, chain_hash = ?3 WHERE seq = ?1",
            kind.as_str()
        );
        let mut heads: HashMap<String, ChainHead> = HashMap::new();
        let mut after = 0i64;
        loop {
            let chunk: Vec<(i64, String, Vec<u8>)> = {
                let mut st = conn.prepare_cached(select)?;
                let rows = st.query_map(params![after, BACKFILL_CHUNK], |r| {
                    let bytes = match kind {
                        ChainKind::Events => r.get::<_, String>(2)?.into_bytes(),
                        ChainKind::UserHistory => history_bytes(
                            &r.get::<_, String>(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            &r.get::<_, String>(5)?,
                            r.get::<_, Option<String>>(6)?.as_deref(),
                            r.get::<_, Option<String>>(7)?.as_deref(),
                            r.get::<_, Option<String>>(8)?.as_deref(),
                            &r.get::<_, String>(9)?,
                        ),
                        ChainKind::Reviews => Vec::new(),
                    };
                    Ok((r.get(0)?, r.get(1)?, bytes))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let Some(last) = chunk.last() else { break };
            after = last.0;
            let mut up = conn.prepare_cached(&update)?;
            for (seq, account, bytes) in &chunk {
                let head = heads
                    .entry(account.clone())
                    .or_insert_with(|| ChainHead::genesis(kind, account));
                *head = head.next(bytes);
                up.execute(params![seq, head.n, &head.hash[..]])?;
            }
        }
        for (account, head) in &heads {
            save_head(conn, kind, account, head)?;
        }
    }
    Ok(())
}

impl ChainStore for Sqlite {
    /// A deferred read transaction: in WAL mode its snapshot is taken at its first read and
    /// writers carry on beside it. Inside a transaction already, `f` shares that one.
    fn read_snapshot(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        if !self.conn.is_autocommit() {
            return f();
        }
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(|e| self.err("begin read snapshot", e))?;
        let done = f();
        let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self
            .conn
            .execute_batch(end)
            .map_err(|e| self.err("end read snapshot", e));
        done.and(ended)
    }

    /// Whether the schema has hash chains (a read-only handle on an old database does not).
    fn has_chains(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_heads'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err("schema", e))
    }

    fn has_reviews(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = 'review_links'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err("schema", e))
    }

    /// The recorded heads of every chain (of one account, if given), for manifests.
    fn chain_heads(&self, account: Option<&str>) -> Result<Vec<(ChainKind, String, ChainHead)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT chain, account, n, head FROM chain_heads
                 WHERE (?1 IS NULL OR account = ?1) ORDER BY account, chain",
            )
            .map_err(|e| self.err("chain heads", e))?;
        let rows = st
            .query_map(params![account], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    ChainHead {
                        n: r.get(2)?,
                        hash: r.get(3)?,
                    },
                ))
            })
            .map_err(|e| self.err("chain heads", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (chain, account, head) = row.map_err(|e| self.err("chain heads", e))?;
            if let Some(kind) = ChainKind::parse(&chain) {
                out.push((kind, account, head));
            }
        }
        Ok(out)
    }

    /// Where link `n` of a chain stands today, for checking a head recorded earlier (a signed
    /// manifest's): the stored hashes of the rows at that position, in `seq` order (empty when no
    /// row holds it; more than one only when rows were inserted behind auditwarden's back). For
    /// `n = 0` the genesis hash. A recorded head still found here means nothing up to it was
    /// rewritten, unless every later link was recomputed, which the recorded hash then shows.
    fn chain_hashes_at(&self, kind: ChainKind, account: &str, n: i64) -> Result<Vec<Hash>> {
        if n == 0 {
            return Ok(vec![ChainHead::genesis(kind, account).hash]);
        }
        let sql = match kind {
            ChainKind::Events => {
                "SELECT chain_hash FROM events WHERE account = ?1 AND chain_n = ?2 ORDER BY seq"
            }
            ChainKind::UserHistory => {
                "SELECT chain_hash FROM user_history WHERE account = ?1 AND chain_n = ?2
                 ORDER BY seq"
            }
            ChainKind::Reviews => {
                "SELECT chain_hash FROM review_links WHERE account = ?1 AND chain_n = ?2
                 ORDER BY tbl, seq"
            }
        };
        let what = format!("{} link", kind.as_str());
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(&what, e))?;
        let rows = st
            .query_map(params![account, n], |r| r.get::<_, Option<Vec<u8>>>(0))
            .map_err(|e| self.err(&what, e))?;
        let mut out = Vec::new();
        for row in rows {
            let bytes = row.map_err(|e| self.err(&what, e))?.unwrap_or_default();
            // A stored value that is not 32 bytes matches no recorded hash: all zeros.
            out.push(<Hash>::try_from(bytes.as_slice()).unwrap_or([0; 32]));
        }
        Ok(out)
    }

    /// Walk every chain (of one account, if given) in insertion order through the shared
    /// [`Walker`] (PostgreSQL's too), handing each finding to `found` as it is met. Streams:
    /// memory does not grow with the history.
    fn walk_chains(
        &self,
        account: Option<&str>,
        found: &mut dyn FnMut(Finding),
    ) -> Result<Vec<ChainSummary>> {
        let mut summaries = Vec::new();
        for kind in ChainKind::EVERY {
            if kind == ChainKind::Reviews && !self.has_reviews()? {
                continue;
            }
            let walker = self.walk_chain(kind, account, found)?;
            let recorded: HashMap<String, ChainHead> = self
                .chain_heads(account)?
                .into_iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, a, h)| (a, h))
                .collect();
            summaries.extend(walker.finish(recorded, found));
        }
        Ok(summaries)
    }
}

impl Sqlite {
    /// Stream one chain kind's rows into a [`Walker`], checking each linked event's columns.
    fn walk_chain(
        &self,
        kind: ChainKind,
        account: Option<&str>,
        found: &mut dyn FnMut(Finding),
    ) -> Result<Walker> {
        let sql = match kind {
            ChainKind::Events => {
                "SELECT seq, account, chain_n, chain_hash, raw, event_id, ts_ms, day, action,
                    resource_type, resource_id, resource_name, actor_id, actor_name, status,
                    ip_address, description, data
                 FROM events WHERE (?1 IS NULL OR account = ?1) ORDER BY seq"
            }
            ChainKind::UserHistory => {
                "SELECT seq, account, chain_n, chain_hash, user_id, observed_ms, after_ms, field,
                    before, after, detail, source
                 FROM user_history WHERE (?1 IS NULL OR account = ?1) ORDER BY seq"
            }
            // Link order: a campaign's rows live in four tables, their positions are one sequence.
            ChainKind::Reviews => {
                "SELECT seq, account, chain_n, chain_hash, canonical, key
                 FROM review_links WHERE (?1 IS NULL OR account = ?1)
                 ORDER BY account, chain_n, tbl, seq"
            }
        };
        let what = format!("verify {}", kind.as_str());
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(&what, e))?;
        let mut rows = st.query(params![account]).map_err(|e| self.err(&what, e))?;
        let mut walker = Walker::new(kind);
        let mut history = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(&what, e))? {
            let step = (|| -> rusqlite::Result<()> {
                let seq: i64 = r.get(0)?;
                let acc = r.get_ref(1)?.as_str()?;
                // What names the row in a finding: the event id, the user id, the review key.
                let key_at = if kind == ChainKind::UserHistory { 4 } else { 5 };
                let key = r.get_ref(key_at)?.as_str().unwrap_or("");
                let canonical: &[u8] = match kind {
                    ChainKind::Events => r.get_ref(4)?.as_str()?.as_bytes(),
                    ChainKind::UserHistory => {
                        history = history_bytes(
                            r.get_ref(4)?.as_str()?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get_ref(7)?.as_str()?,
                            r.get_ref(8)?.as_str_or_null()?,
                            r.get_ref(9)?.as_str_or_null()?,
                            r.get_ref(10)?.as_str_or_null()?,
                            r.get_ref(11)?.as_str()?,
                        );
                        &history
                    }
                    ChainKind::Reviews => r.get_ref(4)?.as_str()?.as_bytes(),
                };
                let linked = walker.step(
                    &ChainRow {
                        seq,
                        account: acc,
                        n: r.get(2)?,
                        stored: r.get(3).ok().flatten(),
                        key,
                        canonical,
                    },
                    found,
                );
                if linked && kind == ChainKind::Events {
                    let col = |i: usize| {
                        r.get_ref(i)
                            .ok()
                            .and_then(|v| v.as_str_or_null().ok().flatten())
                    };
                    let cols: EventColumns<'_> = [
                        col(5),
                        col(7),
                        col(8),
                        col(9),
                        col(10),
                        col(11),
                        col(12),
                        col(13),
                        col(14),
                        col(15),
                        col(16),
                        col(17),
                    ];
                    let stored_ms = r.get_ref(6)?.as_i64().ok();
                    let raw = r.get_ref(4)?.as_str()?;
                    check_event_columns(raw, acc, seq, stored_ms, &cols, found);
                }
                Ok(())
            })();
            step.map_err(|e| self.err(&what, e))?;
        }
        Ok(walker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{parse_event, ParsedEvent};
    use crate::api::AuditEvent;
    use crate::store::{EventStore, UserStore};
    use crate::store::{HistoryRow, PageWrite, UserBatch};

    fn event(i: usize) -> AuditEvent {
        let raw = format!(
            r#"{{"id":"ev-{i}","timestamp":"2026-11-02T08:{:02}:00Z","action":"login","user":{{"id":"u{i}","name":"Ann \"{i}\""}},"status":"SUCCESS"}}"#,
            i % 60
        );
        match parse_event(&raw) {
            ParsedEvent::Event(e) => e,
            ParsedEvent::Malformed(m) => panic!("{}", m.reason),
        }
    }

    fn page<'a>(account: &'a str, events: &'a [AuditEvent]) -> PageWrite<'a> {
        PageWrite {
            account,
            events,
            ..Default::default()
        }
    }

    fn findings(s: &Sqlite) -> Vec<Finding> {
        let mut out = Vec::new();
        s.walk_chains(None, &mut |f| out.push(f)).unwrap();
        out
    }

    /// A store with 10 events in account "a", 3 in "b", and two user-history rows in "a".
    fn filled() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Sqlite::open(&dir.path().join("c.db")).unwrap();
        let evs: Vec<_> = (0..10).map(event).collect();
        s.write_page(&page("a", &evs[..6])).unwrap();
        s.write_page(&page("b", &evs[..3])).unwrap();
        s.write_page(&page("a", &evs[4..])).unwrap(); // 4 and 5 are duplicates
        let hist = |user: &str| HistoryRow {
            user_id: user.into(),
            observed_ms: 1000,
            after_ms: None,
            field: crate::domain::HistoryField::FirstSeen,
            before: None,
            after: Some("active".into()),
            detail: None,
            source: crate::domain::UserRunKind::Sync,
        };
        s.write_user_batch(
            "a",
            &UserBatch {
                history: vec![hist("u1"), hist("u2")],
                ..Default::default()
            },
        )
        .unwrap();
        (dir, s)
    }

    fn sql(s: &Sqlite, q: &str) {
        s.conn.execute_batch(q).unwrap();
    }

    /// Chains extend across transactions and skip duplicates; an untouched store verifies clean.
    #[test]
    fn untouched_chains_verify_and_skip_duplicates() {
        let (_d, s) = filled();
        assert_eq!(findings(&s), vec![]);
        let heads = s.chain_heads(Some("a")).unwrap();
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].2.n, 10, "{heads:?}");
        assert_eq!(heads[1].2.n, 2);
        let n: i64 = s
            .conn
            .query_row(
                "SELECT MAX(chain_n) FROM events WHERE account = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 3);
    }

    /// A batch that rolls back leaves the head where it was; the next batch continues from it.
    #[test]
    fn a_rolled_back_batch_does_not_move_the_head() {
        let (_d, mut s) = filled();
        let evs: Vec<_> = (20..25).map(event).collect();
        {
            let mut b = s.batch().unwrap();
            b.write_page(&page("a", &evs)).unwrap();
            // dropped: rolled back
        }
        s.write_page(&page("a", &evs[..2])).unwrap();
        assert_eq!(findings(&s), vec![]);
        assert_eq!(s.chain_heads(Some("a")).unwrap()[0].2.n, 12);
    }

    /// Editing an event's raw text breaks its link, naming the row; one edit is one finding.
    #[test]
    fn an_edited_raw_is_a_broken_link_at_that_row() {
        let (_d, s) = filled();
        sql(&s, "UPDATE events SET raw = replace(raw, 'login', 'logout') WHERE event_id = 'ev-3' AND account = 'a'");
        let f = findings(&s);
        assert_eq!(f.len(), 2, "{f:#?}"); // the link, and the action column no longer matching raw
        match &f[0] {
            Finding::BrokenLink { key, n, .. } => assert_eq!((key.as_str(), *n), ("ev-3", 4)),
            other => panic!("{other:?}"),
        }
        assert!(f[0].to_string().contains("\"ev-3\""), "{}", f[0]);
    }

    /// Editing a derived column (not the hashed raw) is reported with the column and both values.
    #[test]
    fn an_edited_column_is_named() {
        let (_d, s) = filled();
        sql(
            &s,
            "UPDATE events SET actor_name = 'Mallory' WHERE event_id = 'ev-7'",
        );
        let f = findings(&s);
        assert_eq!(f.len(), 1, "{f:#?}");
        let text = f[0].to_string();
        assert!(
            text.contains("actor_name") && text.contains("Mallory") && text.contains("ev-7"),
            "{text}"
        );
    }

    /// Deleting a row in the middle is a gap naming the neighbours; deleting the tail is a head mismatch.
    #[test]
    fn deleted_rows_are_gaps_or_a_short_chain() {
        let (_d, s) = filled();
        sql(
            &s,
            "DELETE FROM events WHERE account = 'a' AND event_id IN ('ev-2', 'ev-3')",
        );
        sql(
            &s,
            "DELETE FROM events WHERE account = 'b' AND event_id = 'ev-2'",
        );
        sql(&s, "DELETE FROM user_history WHERE user_id = 'u1'");
        let f = findings(&s);
        assert!(
            matches!(&f[0], Finding::Gap { account, first_missing: 3, last_missing: 4, .. } if account == "a"),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|x| matches!(x, Finding::HeadMismatch { account, found, .. } if account == "b" && found.n == 2)),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|x| matches!(
                x,
                Finding::Gap {
                    chain: ChainKind::UserHistory,
                    ..
                }
            )),
            "{f:#?}"
        );
        assert_eq!(f.len(), 3, "{f:#?}");
    }

    /// Rows inserted behind auditwarden's back: without a link, with a copied link, or appended
    /// with a correctly computed link (the recorded head then disagrees).
    #[test]
    fn inserted_rows_are_named() {
        let (_d, s) = filled();
        let copy = "INSERT INTO events (account, event_id, ts_ms, day, action, raw, collected_ms, chain_n, chain_hash)
            SELECT account, 'forged', ts_ms, day, action, raw, collected_ms, chain_n, chain_hash FROM events WHERE event_id = 'ev-5' AND account = 'a'";
        sql(&s, copy);
        sql(&s, "INSERT INTO user_history (account, user_id, observed_ms, field, source) VALUES ('a', 'u9', 5, 'status', 'sync')");
        let f = findings(&s);
        assert!(
            f.iter().any(
                |x| matches!(x, Finding::Unchained { key, n: Some(6), .. } if key == "forged")
            ),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|x| matches!(x, Finding::Unchained { key, n: None, chain: ChainKind::UserHistory, .. } if key == "u9")),
            "{f:#?}"
        );
    }

    /// An old database (schema 2, no chains) gets its chains built by the migration.
    #[test]
    fn the_migration_chains_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            for sql in &super::super::migrations::MIGRATIONS[..2] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 2).unwrap();
            for (i, acc) in [(1, "a"), (2, "b"), (3, "a")] {
                let e = event(i);
                c.execute(
                    "INSERT INTO events (account, event_id, ts_ms, day, action, actor_id, actor_name, status, raw, collected_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
                    params![acc, e.id, e.timestamp.timestamp_millis(), crate::store::day_str(e.timestamp.date_naive()), e.action, e.actor_id, e.actor_name, e.status, e.raw],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO user_history (account, user_id, observed_ms, field, source) VALUES ('a', 'u1', 5, 'first_seen', 'sync')",
                [],
            )
            .unwrap();
        }
        let mut s = Sqlite::open(&path).unwrap();
        assert_eq!(findings(&s), vec![]);
        let heads = s.chain_heads(None).unwrap();
        assert_eq!(
            heads
                .iter()
                .map(|(k, a, h)| (k.as_str(), a.as_str(), h.n))
                .collect::<Vec<_>>(),
            vec![
                ("events", "a", 2),
                ("user_history", "a", 1),
                ("events", "b", 1)
            ]
        );
        // New rows continue the migrated chains.
        s.write_page(&page("a", &[event(4)])).unwrap();
        assert_eq!(findings(&s), vec![]);
    }
}
