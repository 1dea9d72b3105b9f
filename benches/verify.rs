//! Hash-chain benchmark (`cargo bench --bench verify`; `-- 1000000` for one size only).
//!
//! For each size it builds a database through `Store`/`Batch` exactly as the collector's writer
//! does (pages of 1,000 events, transactions of 50,000), and measures:
//! - **collection cost of the chain**: the same inserts with the chain (the real `write_page`)
//!   and without it (the pre-chain INSERT statement on the same schema), in events/s;
//! - **verify**: `auditwarden verify --db` as a child process: time, peak RSS (from `wait4`) and
//!   the verdict, which must be ok.
//!
//! It prints figures; it asserts only that an untouched database verifies.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use auditwarden::api::wire::parse_event;
use auditwarden::api::{AuditEvent, ParsedEvent};
use auditwarden::store::{day_str, PageWrite, Store};

mod common;

use common::{peak_rss_of, BIN};

const PAGE: usize = 1000;
const BATCH: usize = 50_000;

/// A synthetic event shaped like the simulator's (about 450 bytes of JSON).
fn event(i: usize) -> AuditEvent {
    let raw = format!(
        r#"{{"id":"{:08x}-5e1f-4c2a-9d3b-{:012x}","timestamp":"2026-10-{:02}T{:02}:{:02}:{:02}.{:03}Z","account":{{"id":"acct-1"}},"user":{{"id":"u-{}","name":"User {} <b>\"x\"</b>"}},"resource_type":"certificate","resource_id":"cert-{}","resource_name":"www{}.example.com","action":"update","status":"SUCCESS","ip_address":"10.0.{}.{}","description":"Certificate updated by a user of the account","data":{{"roles":{{"added":["ROLE_A"],"removed":[]}}}}}}"#,
        i.wrapping_mul(2_654_435_761) & 0xffff_ffff,
        i,
        1 + (i / 40_000) % 28,
        (i / 3600) % 24,
        (i / 60) % 60,
        i % 60,
        i % 1000,
        i % 500,
        i % 500,
        i,
        i % 1000,
        (i / 256) % 256,
        i % 256
    );
    match parse_event(&raw) {
        ParsedEvent::Event(e) => e,
        ParsedEvent::Malformed(m) => panic!("bench event does not parse: {}", m.reason),
    }
}

/// Insert `n` events with the chain (the real writer path); returns seconds spent writing.
fn insert_with_chain(path: &std::path::Path, n: usize) -> f64 {
    let mut store = Store::open(path).expect("store");
    let mut spent = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let pages: Vec<Vec<AuditEvent>> = (0..BATCH / PAGE)
            .map(|p| {
                (i + p * PAGE..(i + (p + 1) * PAGE).min(n))
                    .map(event)
                    .collect()
            })
            .collect();
        let t = Instant::now();
        let mut b = store.batch().expect("batch");
        for page in &pages {
            b.write_page(&PageWrite {
                account: "acct",
                events: page,
                ..Default::default()
            })
            .expect("write");
        }
        b.commit().expect("commit");
        spent += t.elapsed();
        i += BATCH;
    }
    spent.as_secs_f64()
}

/// The same inserts without the chain: the statement `write_page` used before chains existed.
fn insert_without_chain(path: &std::path::Path, n: usize) -> f64 {
    drop(Store::open(path).expect("schema"));
    let mut c = rusqlite::Connection::open(path).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").expect("wal");
    c.pragma_update(None, "synchronous", "NORMAL")
        .expect("sync");
    c.pragma_update(None, "cache_size", -16_384).expect("cache");
    c.pragma_update(None, "wal_autocheckpoint", 10_000)
        .expect("ckpt");
    let mut spent = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let pages: Vec<Vec<AuditEvent>> = (0..BATCH / PAGE)
            .map(|p| {
                (i + p * PAGE..(i + (p + 1) * PAGE).min(n))
                    .map(event)
                    .collect()
            })
            .collect();
        let t = Instant::now();
        let tx = c.transaction().expect("tx");
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (account, event_id, ts_ms, day, action,
                        resource_type, resource_id, resource_name, actor_id, actor_name, status,
                        ip_address, description, data, raw, collected_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .expect("prepare");
            let now = chrono::Utc::now().timestamp_millis();
            for page in &pages {
                for e in page {
                    ins.execute(rusqlite::params![
                        "acct",
                        e.id,
                        e.timestamp.timestamp_millis(),
                        day_str(e.timestamp.date_naive()),
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
                        now
                    ])
                    .expect("insert");
                }
            }
        }
        tx.commit().expect("commit");
        spent += t.elapsed();
        i += BATCH;
    }
    spent.as_secs_f64()
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    println!("auditwarden hash-chain benchmark: pages of {PAGE}, transactions of {BATCH}");
    for n in sizes {
        println!("\n== {n} events");
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = insert_without_chain(&dir.path().join("plain.db"), n);
        let chained_db = dir.path().join("chained.db");
        let chained = insert_with_chain(&chained_db, n);
        // The chain's CPU share: SHA-256 over every raw text, on events built in pages.
        let mut hashing = Duration::ZERO;
        let mut h = [0u8; 32];
        for start in (0..n).step_by(PAGE) {
            let page: Vec<AuditEvent> = (start..(start + PAGE).min(n)).map(event).collect();
            let t = Instant::now();
            for e in &page {
                h = auditwarden::store::chain::link(&h, e.raw.as_bytes());
            }
            hashing += t.elapsed();
        }
        let hash_only = hashing.as_secs_f64();
        println!(
            "insert without chain: {:.2}s = {:.0} events/s",
            plain,
            n as f64 / plain
        );
        println!(
            "insert with chain   : {:.2}s = {:.0} events/s ({:+.1}% time)",
            chained,
            n as f64 / chained,
            (chained / plain - 1.0) * 100.0
        );
        println!(
            "SHA-256 links alone : {hash_only:.2}s ({:.2} us/event)",
            hash_only * 1e6 / n as f64
        );

        let mut cmd = Command::new(BIN);
        cmd.arg("verify").arg("--db").arg(&chained_db);
        let (out, elapsed, rss_mib) = peak_rss_of(cmd);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!(
            "verify              : {:.2}s = {:.0} events/s, peak RSS {rss_mib} MiB, exit {:?}",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            out.status.code()
        );
        assert!(
            out.status.success(),
            "untouched database failed verify:\n{stdout}"
        );
    }
}
