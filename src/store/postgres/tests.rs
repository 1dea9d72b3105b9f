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
                if std::env::var("CI").is_ok_and(|v| v == "true") {
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

/// The figures behind the page insert's shape (`cargo test --lib page_insert_figures --
/// --ignored --nocapture`): one `unnest` statement per page against one INSERT per event, both
/// in one transaction per 10 pages of 1,000 events, on the same server.
mod figures {
    use std::time::Instant;

    use super::super::Wait;
    use crate::api::AuditEvent;
    use crate::store::{PageWrite, Store, StoreTarget};

    fn events(n: usize) -> Vec<AuditEvent> {
        (0..n)
            .map(|i| AuditEvent {
                id: format!(
                    "{:032x}",
                    (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                ),
                timestamp: chrono::DateTime::from_timestamp(1_790_000_000 + i as i64, 0).unwrap(),
                action: "login".into(),
                actor_id: Some(format!("u{}", i % 100)),
                actor_name: Some("Ann".into()),
                status: Some("success".into()),
                raw: format!("{{\"id\":\"{i}\",\"padding\":\"{}\"}}", "x".repeat(300)),
                resource_type: None,
                resource_id: None,
                resource_name: None,
                ip_address: None,
                description: None,
                data: None,
                account_id: None,
            })
            .collect()
    }

    #[test]
    #[ignore]
    fn page_insert_figures() {
        const N: usize = 50_000;
        let evs = events(N);
        let Some((_db, target)) = super::testdb::fresh() else {
            return;
        };
        let mut s = Store::open_target(&StoreTarget::Postgres(target.clone())).unwrap();
        let t = Instant::now();
        for tx in evs.chunks(10_000) {
            let mut b = s.batch().unwrap();
            for page in tx.chunks(1_000) {
                b.write_page(&PageWrite {
                    account: "a",
                    events: page,
                    ..Default::default()
                })
                .unwrap();
            }
            b.commit().unwrap();
        }
        let unnest = t.elapsed();
        let mut c = target.connect().unwrap();
        let t = Instant::now();
        for tx in evs.chunks(10_000) {
            let tx_ = c.transaction().wait().unwrap();
            let st = tx_
                .prepare(
                    "INSERT INTO events (account, event_id, ts_ms, day, action, actor_id,
                        actor_name, status, raw, collected_ms, chain_n, chain_hash)
                     VALUES ('b', $1, $2, '2026-09-21', $3, $4, $5, $6, $7, 0, 1, $8)
                     ON CONFLICT (account, event_id) DO NOTHING",
                )
                .wait()
                .unwrap();
            for e in tx {
                tx_.execute(
                    &st,
                    &[
                        &e.id,
                        &e.timestamp.timestamp_millis(),
                        &e.action,
                        &e.actor_id,
                        &e.actor_name,
                        &e.status,
                        &e.raw,
                        &&[0u8; 32][..],
                    ],
                )
                .wait()
                .unwrap();
            }
            tx_.commit().wait().unwrap();
        }
        let per_row = t.elapsed();
        let rate = |d: std::time::Duration| N as f64 / d.as_secs_f64();
        eprintln!(
            "{N} events: unnest per page {:.2} s ({:.0} events/s, with dedup lookup and chain); one INSERT per event {:.2} s ({:.0} events/s)",
            unnest.as_secs_f64(),
            rate(unnest),
            per_row.as_secs_f64(),
            rate(per_row)
        );
        assert_eq!(s.event_ids("a").unwrap().len(), N);
    }
}
