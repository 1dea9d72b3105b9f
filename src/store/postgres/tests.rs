//! Tests of the PostgreSQL backend: the conformance suite on a database of its own per case, and
//! the figures behind the page insert.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Test databases: each case creates its own on the test server and drops it afterwards.
pub(crate) mod testdb {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::PgTarget;

    /// The server the tests use: `AUDITWARDEN_TEST_POSTGRES`, else this project's machines' local
    /// server (trust authentication).
    fn server() -> PgTarget {
        let url = std::env::var("AUDITWARDEN_TEST_POSTGRES").unwrap_or_else(|_| {
            "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        });
        PgTarget::parse(&url, None).expect("AUDITWARDEN_TEST_POSTGRES: a PostgreSQL URL")
    }

    /// Drops its database when the case ends (connections still open to it included).
    pub struct TestDb {
        admin: PgTarget,
        name: String,
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let _ = self.admin.execute_batch(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }

    /// A fresh, empty database, or `None` (with a visible "skipped" line) when no server is
    /// reachable; under CI an unreachable server fails the test.
    pub fn fresh() -> Option<(TestDb, PgTarget)> {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = server();
        match admin.execute_batch("SELECT 1") {
            Ok(()) => {}
            Err(e) => {
                // Under CI (any `CI` value, as `.ci/run` sets it) the server must be there.
                if std::env::var_os("CI").is_some() {
                    panic!("no PostgreSQL at {} under CI: {e}", admin.url());
                }
                eprintln!("skipped: no PostgreSQL at {} ({e})", admin.url());
                return None;
            }
        };
        let name = format!(
            "aw_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        admin
            .execute_batch(&format!("CREATE DATABASE \"{name}\""))
            .expect("create the test database");
        let target = admin.with_database(&name);
        Some((TestDb { admin, name }, target))
    }
}

mod conformance {
    use crate::store::Store;

    // The store's conformance suite, on a fresh PostgreSQL database per case.
    crate::backend_conformance!({
        let Some((db, target)) = super::testdb::fresh() else {
            return;
        };
        let store = Store::open_target(&crate::store::StoreTarget::Postgres(target)).unwrap();
        (db, store)
    });
}

#[test]
fn a_read_snapshot_does_not_see_commits_made_during_it() {
    let Some((_db, target)) = testdb::fresh() else {
        return;
    };
    let target = crate::store::StoreTarget::Postgres(target);
    let writer = crate::store::Store::open_target(&target).unwrap();
    let reader = crate::store::Store::open_target_read_only(&target).unwrap();
    crate::store::conformance::a_read_snapshot_does_not_see_commits_made_during_it(reader, writer);
}

/// Leases and fencing between two handles on one database (two daemons).
mod leases {
    use std::time::{Duration, Instant};

    use super::super::PgTarget;
    use crate::api::wire::{parse_event, ParsedEvent};
    use crate::api::AuditEvent;
    use crate::store::{HistoryRow, PageWrite, Store, StoreError, StoreTarget, UserBatch};

    fn open(t: &PgTarget) -> Store {
        Store::open_target(&StoreTarget::Postgres(t.clone())).unwrap()
    }

    fn event(id: &str) -> AuditEvent {
        match parse_event(&format!(
            r#"{{"id":"{id}","timestamp":"2026-11-02T08:00:00Z","action":"login","user":{{"id":"u1"}}}}"#
        )) {
            ParsedEvent::Event(e) => e,
            ParsedEvent::Malformed(m) => panic!("{}", m.reason),
        }
    }

    fn page<'a>(events: &'a [AuditEvent]) -> PageWrite<'a> {
        PageWrite {
            account: "acc",
            events,
            ..Default::default()
        }
    }

    /// One owner at a time until the lease lapses; every takeover raises the epoch; a lease taken
    /// over cannot be renewed by its old owner; a released lease is free at once.
    #[test]
    fn a_lease_is_one_owners_until_it_lapses() {
        let Some((_db, t)) = super::testdb::fresh() else {
            return;
        };
        let mut s = open(&t);
        let a = s
            .acquire_lease("key:1", "node-a", 1_000, 30_000)
            .unwrap()
            .unwrap();
        assert_eq!((a.epoch, a.expires_ms), (1, 31_000));
        assert_eq!(
            s.acquire_lease("key:1", "node-b", 30_999, 30_000).unwrap(),
            None
        );
        let again = s
            .acquire_lease("key:1", "node-a", 20_000, 30_000)
            .unwrap()
            .unwrap();
        assert_eq!(again.epoch, 1, "the holder renews, same epoch");
        let b = s
            .acquire_lease("key:1", "node-b", 50_001, 30_000)
            .unwrap()
            .unwrap();
        assert_eq!((b.owner.as_str(), b.epoch), ("node-b", 2));
        assert_eq!(s.renew_lease(&a, 50_002, 30_000).unwrap(), None);
        assert_eq!(
            s.renew_lease(&b, 60_000, 30_000)
                .unwrap()
                .unwrap()
                .expires_ms,
            90_000
        );
        s.release_lease(&b).unwrap();
        let a3 = s
            .acquire_lease("key:1", "node-a", 60_001, 30_000)
            .unwrap()
            .unwrap();
        assert_eq!(a3.epoch, 3);
        // Another key is another lease.
        assert_eq!(
            s.acquire_lease("key:2", "node-b", 60_001, 30_000)
                .unwrap()
                .unwrap()
                .epoch,
            1
        );
        assert_eq!(s.leases().unwrap().len(), 2);
    }

    /// A daemon whose lease another took over commits nothing: no page, no user batch, no
    /// alerts; the new holder writes on, and the chains verify.
    #[test]
    fn a_writer_that_lost_its_lease_commits_nothing() {
        let Some((_db, t)) = super::testdb::fresh() else {
            return;
        };
        let (mut a, mut b) = (open(&t), open(&t));
        let la = a
            .acquire_lease("key:1", "node-a", 0, 1_000)
            .unwrap()
            .unwrap();
        a.fence("acc", Some(la));
        assert_eq!(a.write_page(&page(&[event("e1")])).unwrap().inserted, 1);
        // node-a pauses past its lease; node-b takes the key over.
        let lb = b
            .acquire_lease("key:1", "node-b", 2_000, 1_000)
            .unwrap()
            .unwrap();
        assert_eq!(lb.epoch, 2);
        let lost = |e: StoreError| match e {
            StoreError::LeaseLost { what, .. } => what,
            other => panic!("{other}"),
        };
        let e = lost(a.write_page(&page(&[event("e2")])).unwrap_err());
        assert!(e.contains("node-a") && e.contains("epoch 1"), "{e}");
        let batch = UserBatch {
            history: vec![HistoryRow {
                user_id: "u1".into(),
                observed_ms: 5,
                after_ms: None,
                field: crate::domain::HistoryField::FirstSeen,
                before: None,
                after: Some("active".into()),
                detail: None,
                source: crate::domain::UserRunKind::Sync,
            }],
            ..Default::default()
        };
        lost(a.write_user_batch("acc", &batch).unwrap_err());
        lost(
            a.record_alerts("acc", &[], 3_000, &mut |_, _| Vec::new())
                .unwrap_err(),
        );
        // Unfenced accounts of node-a are not affected.
        a.write_page(&PageWrite {
            account: "other",
            events: &[event("x1")],
            ..Default::default()
        })
        .unwrap();
        b.fence("acc", Some(lb));
        assert_eq!(b.write_page(&page(&[event("e2")])).unwrap().inserted, 1);
        b.write_user_batch("acc", &batch).unwrap();
        assert_eq!(b.event_ids("acc").unwrap(), vec!["e1", "e2"]);
        assert_eq!(b.user_history("acc", "u1").unwrap().len(), 1);
        let mut findings = Vec::new();
        b.verify_chains(None, |f| findings.push(f.to_string()))
            .unwrap();
        assert_eq!(findings, Vec::<String>::new());
    }

    /// A takeover waits for a write transaction already past its check (the share lock), so the
    /// old holder's last batch commits before the new epoch exists, never after.
    #[test]
    fn a_takeover_waits_for_a_batch_past_its_check() {
        let Some((_db, t)) = super::testdb::fresh() else {
            return;
        };
        let (mut a, mut b) = (open(&t), open(&t));
        let watch = super::super::Postgres::open(&t).unwrap();
        let la = a
            .acquire_lease("key:1", "node-a", 0, 1_000)
            .unwrap()
            .unwrap();
        a.fence("acc", Some(la));
        let mut batch = a.batch().unwrap();
        batch.write_page(&page(&[event("e1")])).unwrap();
        let taker = std::thread::spawn(move || {
            let l = b.acquire_lease("key:1", "node-b", 5_000, 1_000).unwrap();
            (l, b.event_ids("acc").unwrap())
        });
        // Wait (with a deadline) until node-b's takeover is blocked on the lease row.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let waiting: i64 = watch
                .one(
                    "SELECT COUNT(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                    "locks",
                )
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the takeover never waited");
            std::thread::yield_now();
        }
        batch.commit().unwrap();
        let (lb, seen) = taker.join().unwrap();
        assert_eq!(lb.unwrap().epoch, 2);
        assert_eq!(seen, vec!["e1"], "the batch committed before the takeover");
    }

    /// The holder's renewal (its heartbeat's own connection) goes through while its write
    /// transaction holds the lease row past its check: a node writing back to back never starves
    /// its heartbeat past the lease (under `FOR SHARE` the renewal waited for the commit).
    #[test]
    fn a_renewal_does_not_wait_for_the_holders_batch() {
        let Some((_db, t)) = super::testdb::fresh() else {
            return;
        };
        let (mut a, mut heartbeat) = (open(&t), open(&t));
        let la = a
            .acquire_lease("key:1", "node-a", 0, 1_000)
            .unwrap()
            .unwrap();
        a.fence("acc", Some(la.clone()));
        let mut batch = a.batch().unwrap();
        batch.write_page(&page(&[event("e1")])).unwrap();
        let (done, renewed) = std::sync::mpsc::channel();
        let renewer = std::thread::spawn(move || {
            let r = heartbeat.renew_lease(&la, 500, 1_000).unwrap();
            let _ = done.send(r.map(|l| l.expires_ms));
        });
        // A deadline, not a pace: the renewal answers at once unless it waits for the batch.
        let got = renewed.recv_timeout(Duration::from_secs(20));
        batch.commit().unwrap();
        renewer.join().unwrap();
        assert_eq!(
            got,
            Ok(Some(1_500)),
            "the renewal waited for the holder's batch"
        );
    }
}

/// A database at the schema before the integer dedup key (`schema::EVENT_KEYS`), with events
/// (more than one keying chunk of them), is migrated: every row is keyed with the shared key
/// function, `seq` kept, and the stored events stay stored once, in their account only.
#[test]
fn the_event_keys_migration_keys_stored_events_and_they_stay_stored_once() {
    use super::schema::{BOOTSTRAP, EVENT_KEYS, MIGRATIONS};
    use super::Wait;
    use crate::api::wire::{parse_event, ParsedEvent};
    use crate::store::event_key::event_key;
    use crate::store::{PageWrite, Store, StoreTarget};
    let Some((_db, target)) = testdb::fresh() else {
        return;
    };
    let at = MIGRATIONS.iter().position(|m| *m == EVENT_KEYS).unwrap();
    let stored = 2 * super::KEY_CHUNK + 5;
    let mut old = String::from(BOOTSTRAP);
    for sql in &MIGRATIONS[..at] {
        old.push_str(sql);
    }
    old.push_str(&format!(
        "UPDATE auditwarden_schema SET version = {at} WHERE id = 1;
         INSERT INTO events (account, event_id, ts_ms, day, action, raw, collected_ms)
         SELECT 'a', 'ev-' || i, 0, '2026-11-02', 'login', '{{}}', 0
         FROM generate_series(1, {stored}) AS i;"
    ));
    target.execute_batch(&old).unwrap();
    let mut s = Store::open_target(&StoreTarget::Postgres(target.clone())).unwrap();
    let c = target.connect().unwrap();
    let keyed = |sql: &str| -> Vec<(i64, String, Option<i64>)> {
        c.query(sql, &[])
            .wait()
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };
    let rows = keyed("SELECT seq, event_id, event_key FROM events ORDER BY seq");
    assert_eq!(rows.len() as i64, stored);
    for (i, (seq, id, key)) in rows.iter().enumerate() {
        assert_eq!(
            (*seq, id.as_str()),
            (i as i64 + 1, format!("ev-{}", i + 1).as_str())
        );
        assert_eq!(*key, Some(event_key(id)), "{id}");
    }
    let event = |id: &str| match parse_event(&format!(
        r#"{{"id":"{id}","timestamp":"2026-11-02T08:00:00Z","action":"login"}}"#
    )) {
        ParsedEvent::Event(e) => e,
        ParsedEvent::Malformed(m) => panic!("{}", m.reason),
    };
    let evs = [
        event("ev-1"),
        event(&format!("ev-{stored}")),
        event("ev-new"),
    ];
    let w = |account| PageWrite {
        account,
        events: &evs,
        ..Default::default()
    };
    let out = s.write_page(&w("a")).unwrap();
    assert_eq!((out.inserted, out.duplicates), (1, 2));
    let out = s.write_page(&w("a")).unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 3));
    let out = s.write_page(&w("b")).unwrap();
    assert_eq!((out.inserted, out.duplicates), (3, 0));
    assert_eq!(s.event_ids("a").unwrap().len() as i64, stored + 1);
    let new =
        keyed("SELECT seq, event_id, event_key FROM events WHERE event_id = 'ev-new' ORDER BY seq");
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|(_, id, k)| *k == Some(event_key(id))));
}
