//! Keying the events SQLite stored before migration [`super::migrations::EVENT_KEYS`]; the key
//! itself is [`crate::store::event_key`], shared with PostgreSQL.

use rusqlite::{params, Connection};

use crate::store::event_key::event_key;

/// Rows keyed per step while filling `event_key` of the rows the migration copied.
const BACKFILL_CHUNK: i64 = 10_000;

/// Fill `event_key` of every row that has none (the migration's copy), in `seq` chunks so memory
/// stays flat; runs inside the migration's transaction.
pub(super) fn backfill(conn: &Connection) -> rusqlite::Result<()> {
    let mut after = 0i64;
    loop {
        let chunk: Vec<(i64, String)> = {
            let mut st = conn.prepare_cached(
                "SELECT seq, event_id FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![after, BACKFILL_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let Some(last) = chunk.last() else { break };
        after = last.0;
        let mut up = conn.prepare_cached("UPDATE events SET event_key = ?2 WHERE seq = ?1")?;
        for (seq, id) in &chunk {
            up.execute(params![seq, event_key(id)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{parse_event, ParsedEvent};
    use crate::store::sqlite::migrations::{EVENT_KEYS, MIGRATIONS};
    use crate::store::sqlite::Sqlite;
    use crate::store::{EventStore, PageWrite};

    fn event(id: &str) -> crate::api::AuditEvent {
        let raw = format!(r#"{{"id":"{id}","timestamp":"2026-11-02T08:00:00Z","action":"login"}}"#);
        match parse_event(&raw) {
            ParsedEvent::Event(e) => e,
            ParsedEvent::Malformed(m) => panic!("{}", m.reason),
        }
    }

    /// An upgrade keys the events already stored, keeps their `seq`, and they stay deduplicated:
    /// reading them again stores nothing, in their account only.
    #[test]
    fn the_migration_keys_stored_events_and_they_stay_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            let at = MIGRATIONS.iter().position(|m| *m == EVENT_KEYS).unwrap();
            for sql in &MIGRATIONS[..at] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", at as i64).unwrap();
            c.execute_batch(
                "INSERT INTO events (seq, account, event_id, ts_ms, day, action, raw, collected_ms)
                 VALUES (7, 'a', 'ev-1', 0, '2026-11-02', 'login', '{}', 0),
                        (9, 'a', 'ev-2', 0, '2026-11-02', 'login', '{}', 0);",
            )
            .unwrap();
        }
        let mut s = Sqlite::open(&path).unwrap();
        let keyed: Vec<(i64, i64)> = s
            .conn
            .prepare("SELECT seq, event_key FROM events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(keyed, [(7, event_key("ev-1")), (9, event_key("ev-2"))]);
        let evs = [event("ev-1"), event("ev-2"), event("ev-3")];
        let w = |account| PageWrite {
            account,
            events: &evs,
            ..Default::default()
        };
        let out = s.write_page(&w("a")).unwrap();
        assert_eq!((out.inserted, out.duplicates), (1, 2));
        let out = s.write_page(&w("b")).unwrap();
        assert_eq!((out.inserted, out.duplicates), (3, 0));
        let out = s.write_page(&w("b")).unwrap();
        assert_eq!((out.inserted, out.duplicates), (0, 3));
    }
}
