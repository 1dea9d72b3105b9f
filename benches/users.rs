//! User benchmark (`cargo bench --bench users`; `-- 20000` for another directory size).
//!
//! For each size (default 10,000 and 100,000 users) it starts the simulator with N DigiCert ONE
//! users (about 12% of them invited) and runs the real binary against it as a child process:
//! - **first sync**: `auditwarden sync-users` into a fresh database: users/s, requests, peak RSS;
//! - **second sync**: the same with nothing changed: its cost, and the rows it wrote (should be 0);
//! - **poll**: `auditwarden poll-invites` over every invited user (one request each), then again.
//!
//! It prints figures (target: peak RSS <= 64 MiB at 100,000 users, flat in the number of users);
//! it asserts only that the runs succeed and that the idle sync wrote nothing.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

mod common;

use common::{peak_rss_of, start_sim, BIN, KEY};

/// The number before `word` on the summary's lines (e.g. "requests", "rows written").
fn figure(summary: &str, word: &str) -> u64 {
    summary
        .lines()
        .filter_map(|l| {
            let before = l.split(&format!(" {word}")).next()?;
            if before.len() == l.len() {
                return None;
            }
            before
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn db_fingerprint(db: &Path) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open(db).expect("db");
    let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect("query") };
    (
        q("SELECT COUNT(*) FROM user_history"),
        q("SELECT COALESCE(MAX(updated_ms), 0) FROM users"),
        q("SELECT COUNT(*) FROM role_changes"),
    )
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    for n in sizes {
        bench(n);
    }
}

fn bench(n: usize) {
    let t = Instant::now();
    let sim = start_sim(&[
        "--days".into(),
        "3".into(),
        "--events".into(),
        "2000".into(),
        "--users".into(),
        n.to_string(),
    ]);
    println!(
        "\nauditwarden user benchmark: {n} DigiCert ONE users (simulator ready in {:.1}s)",
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = \"users.db\"\n[collection]\npage_size = 1000\nrate_limits = [{{ requests = 100000, per_secs = 1 }}]\nretry_base_ms = 20\nrequest_timeout_secs = 120\n[[accounts]]\nname = \"bench\"\nkind = \"digicert-one\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_KEY\"\n",
            sim.url
        ),
    )
    .expect("config");
    let db = dir.path().join("users.db");
    let cmd = |what: &str| {
        let mut c = Command::new(BIN);
        c.args([what, "--config"])
            .arg(&cfg)
            .env("BENCH_KEY", KEY)
            .env("AUDITWARDEN_LOG", "warn");
        c
    };

    let mut idle_wrote = 0;
    for (label, what) in [
        ("first sync ", "sync-users"),
        ("second sync", "sync-users"),
        ("poll       ", "poll-invites"),
        ("poll again ", "poll-invites"),
    ] {
        let before = db.exists().then(|| db_fingerprint(&db));
        let (output, elapsed, rss) = peak_rss_of(cmd(what));
        let ok = output.status.success();
        let out = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(ok, "{what} failed: {out}");
        let secs = elapsed.as_secs_f64();
        let requests = figure(&out, "requests");
        let rows = figure(&out, "rows written");
        let items = if what == "sync-users" {
            figure(&out, "listed")
        } else {
            figure(&out, "checked")
        };
        println!(
            "{label}: {items} users in {secs:.2}s = {:.0} users/s, {requests} requests, {rows} rows written, peak RSS {rss} MiB",
            items as f64 / secs
        );
        if label == "second sync" {
            let after = db_fingerprint(&db);
            idle_wrote = rows;
            println!(
                "             unchanged history/users/role changes: {}",
                before == Some(after)
            );
            assert_eq!(before, Some(after), "the idle sync changed the database");
        }
        let _ = std::io::stdout().flush();
    }
    assert_eq!(idle_wrote, 0, "the idle sync wrote rows");
}
