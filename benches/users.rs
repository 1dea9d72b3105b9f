//! User benchmark (`cargo bench --bench users`; `-- 20000` for another directory size).
//!
//! Starts the simulator with N DigiCert ONE users (default 100,000; about 12% of them invited) and
//! runs the real binary against it as a child process:
//! - **first sync**: `auditwarden sync-users` into a fresh database: users/s, requests, peak RSS;
//! - **second sync**: the same with nothing changed: its cost, and the rows it wrote (should be 0);
//! - **poll**: `auditwarden poll-invites` over every invited user (one request each), then again.
//!
//! It prints figures; it asserts only that the runs succeed and that the idle sync wrote nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
const KEY: &str = "bench-key";

struct Sim {
    child: std::process::Child,
    url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(users: usize) -> Sim {
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "1",
            "--days",
            "3",
        ])
        .args(["--events", "2000", "--users"])
        .arg(users.to_string())
        .env("AUDITWARDEN_SIM_API_KEY", KEY)
        .env("AUDITWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn simulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let url = format!(
        "http://{}",
        line.trim().rsplit("http://").next().unwrap_or("")
    );
    Sim { child, url }
}

/// Run to completion; returns (stdout, success, wall time, peak RSS in MiB) of the child.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the child's peak RSS
fn run_measured(mut cmd: Command) -> (String, bool, Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let elapsed = started.elapsed();
    let out = reader.join().unwrap_or_default();
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (
        String::from_utf8_lossy(&out).to_string(),
        ok,
        elapsed,
        usage.ru_maxrss as u64 / 1024,
    )
}

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
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let t = Instant::now();
    let sim = start_sim(n);
    println!(
        "auditwarden user benchmark: {n} DigiCert ONE users (simulator ready in {:.1}s)",
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
        let (out, ok, elapsed, rss) = run_measured(cmd(what));
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
