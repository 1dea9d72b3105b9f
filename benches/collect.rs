//! Collection benchmark (`cargo bench --bench collect`; `-- 1000000` for one size only;
//! `-- rate-limited` for the rate-limited step alone, e.g. `-- rate-limited 100000`).
//!
//! For each size (100,000 and 1,000,000 events over 30 days, pages of 1000) it starts the
//! simulator (release binary) and measures, in the same run:
//! - **fetch floor**: every page fetched with a plain `reqwest` client and decoded with
//!   `serde_json` into values, one request after another; no auditwarden code;
//! - **insert floor**: the same events (fetched and encoded beforehand, untimed) inserted into a
//!   plain rusqlite table (`id` PRIMARY KEY and four columns, the last the raw JSON) with one
//!   prepared statement in one transaction; no auditwarden code;
//! - **script**: what a person would write: fetch a page, decode it, insert it in its own
//!   transaction into the same plain table, next page (sequential, no overlap);
//! - **auditwarden**: `auditwarden collect` as a child process with the **default** collection
//!   settings (no `rate_limits`: DigiCert ONE has no fixed cap), into a fresh database: time,
//!   events/s, peak RSS (`wait4`), and its CPU time per event;
//! - **rate-limited**: `auditwarden collect` (default settings again) against a simulator that
//!   answers 429 above N requests/s (`--faults rate-cap=N`): the pace it settled on and the 429s.
//!
//! It prints figures and ratios against the targets; it asserts only that the runs succeed and
//! store every event.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chrono::{Days, NaiveDate, Utc};
use serde_json::Value;

mod common;

use common::{peak_rss_of, start_sim, BIN, KEY};

const DAYS: u32 = 30;
const PAGE: u32 = 1000;
/// The simulator's cap for the rate-limited run, in requests per second.
const RATE_CAP: u32 = 40;

fn days() -> Vec<NaiveDate> {
    let today = Utc::now().date_naive();
    let start = today
        .checked_sub_days(Days::new(u64::from(DAYS)))
        .unwrap_or(today);
    start.iter_days().take_while(|d| *d <= today).collect()
}

/// One page of the audit log, decoded: (items, total).
async fn get_page(
    http: &reqwest::Client,
    url: &str,
    day: NaiveDate,
    offset: u64,
) -> (Vec<Value>, u64) {
    let body = http
        .get(format!("{url}/account/api/v1/audit-log"))
        .header("x-api-key", KEY)
        .query(&[
            ("from", day.to_string()),
            ("to", day.to_string()),
            ("offset", offset.to_string()),
            ("limit", PAGE.to_string()),
            ("sort", "timestamp".to_string()),
        ])
        .send()
        .await
        .expect("request")
        .error_for_status()
        .expect("status")
        .bytes()
        .await
        .expect("body");
    let mut v: Value = serde_json::from_slice(&body).expect("json");
    let total = v["total"].as_u64().unwrap_or(0);
    let items = match v["items"].take() {
        Value::Array(a) => a,
        _ => Vec::new(),
    };
    (items, total)
}

/// Page through every day sequentially; `sink` gets each decoded page. Returns (events, requests).
async fn fetch_all(url: &str, mut sink: impl FnMut(Vec<Value>)) -> (u64, u64) {
    let http = reqwest::Client::new();
    let (mut events, mut requests) = (0, 0);
    for day in days() {
        let mut offset = 0u64;
        loop {
            let (items, total) = get_page(&http, url, day, offset).await;
            requests += 1;
            let n = items.len() as u64;
            events += n;
            offset += n;
            sink(items);
            if n == 0 || offset >= total {
                break;
            }
        }
    }
    (events, requests)
}

/// The plain table of the floors and the script.
fn plain_db(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("db");
    c.execute_batch(
        "CREATE TABLE events (id TEXT PRIMARY KEY, ts TEXT, action TEXT, actor TEXT, raw TEXT)",
    )
    .expect("schema");
    c
}

type Row = (String, String, String, String, String);

fn row(e: &Value) -> Row {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&e["id"]),
        s(&e["timestamp"]),
        s(&e["action"]),
        s(&e["user"]["name"]),
        e.to_string(),
    )
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[Row]) -> u64 {
    let mut st = tx
        .prepare_cached("INSERT OR IGNORE INTO events VALUES (?1, ?2, ?3, ?4, ?5)")
        .expect("prepare");
    let mut n = 0;
    for r in rows {
        n += st
            .execute(rusqlite::params![r.0, r.1, r.2, r.3, r.4])
            .expect("insert") as u64;
    }
    n
}

fn config(dir: &Path, url: &str, db: &str) -> std::path::PathBuf {
    // The default collection settings: only the page size (the default too) is spelled out.
    let cfg = dir.join(format!("{db}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = \"{db}\"\n[collection]\npage_size = {PAGE}\n[[accounts]]\nname = \"bench\"\nkind = \"digicert-one\"\nbase_url = \"{url}\"\napi_key_env = \"BENCH_KEY\"\nbackfill_days = {DAYS}\n"
        ),
    )
    .expect("config");
    cfg
}

struct CollectRun {
    secs: f64,
    rss_mib: u64,
    cpu_secs: f64,
    summary: String,
    stored: u64,
}

fn run_collect(dir: &Path, url: &str, db: &str) -> CollectRun {
    let cfg = config(dir, url, db);
    let mut cmd = Command::new(BIN);
    cmd.args(["collect", "--config"])
        .arg(&cfg)
        .env("BENCH_KEY", KEY)
        .env("AUDITWARDEN_LOG", "warn");
    let cpu0 = children_cpu();
    let (out, elapsed, rss_mib) = peak_rss_of(cmd);
    let cpu_secs = children_cpu() - cpu0;
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "collect failed: {summary}");
    let c = rusqlite::Connection::open(dir.join(db)).expect("db");
    let stored: i64 = c
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .expect("count");
    CollectRun {
        secs: elapsed.as_secs_f64(),
        rss_mib,
        cpu_secs,
        summary,
        stored: stored as u64,
    }
}

/// User + system CPU seconds of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage with a valid out-pointer.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    // `rate-limited`: only the rate-limited step (the throttle's figures, in a minute or two).
    let only_limited = std::env::args().any(|a| a == "rate-limited");
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "auditwarden collection benchmark: {DAYS} days of history, pages of {PAGE}, {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    for n in sizes {
        if only_limited {
            println!("\n== {n} events, load {}", load());
            let dir = tempfile::tempdir().expect("tempdir");
            rate_limited(&rt, dir.path(), n, n as u64);
            continue;
        }
        let t = Instant::now();
        let sim = start_sim(&[
            "--days".into(),
            DAYS.to_string(),
            "--events".into(),
            n.to_string(),
        ]);
        println!(
            "\n== {n} events (simulator ready in {:.1}s, load {})",
            t.elapsed().as_secs_f64(),
            load()
        );
        let dir = tempfile::tempdir().expect("tempdir");

        // Fetch floor.
        let t = Instant::now();
        let (fetched, requests) = rt.block_on(fetch_all(&sim.url, |_| {}));
        let fetch_s = t.elapsed().as_secs_f64();
        println!(
            "fetch floor : {fetched} events, {requests} requests in {fetch_s:.2}s = {:.0} events/s (reqwest + serde_json, sequential)",
            fetched as f64 / fetch_s
        );

        // Insert floor: the same events, fetched and encoded first (untimed).
        let mut rows: Vec<Row> = Vec::new();
        rt.block_on(fetch_all(&sim.url, |items| {
            rows.extend(items.iter().map(row))
        }));
        let mut c = plain_db(&dir.path().join("floor.db"));
        let t = Instant::now();
        let tx = c.transaction().expect("begin");
        let inserted = insert_rows(&tx, &rows);
        tx.commit().expect("commit");
        let insert_s = t.elapsed().as_secs_f64();
        drop(rows);
        drop(c);
        println!(
            "insert floor: {inserted} events in {insert_s:.2}s = {:.0} events/s (plain rusqlite table, one statement, one transaction)",
            inserted as f64 / insert_s
        );

        // Script: fetch, decode, insert per page, sequentially.
        let mut c = plain_db(&dir.path().join("script.db"));
        let t = Instant::now();
        let mut script_rows = 0;
        rt.block_on(fetch_all(&sim.url, |items| {
            let rows: Vec<Row> = items.iter().map(row).collect();
            let tx = c.transaction().expect("begin");
            script_rows += insert_rows(&tx, &rows);
            tx.commit().expect("commit");
        }));
        let script_s = t.elapsed().as_secs_f64();
        drop(c);
        println!(
            "script      : {script_rows} events in {script_s:.2}s = {:.0} events/s (fetch, decode, insert per page)",
            script_rows as f64 / script_s
        );

        // auditwarden, default configuration.
        let r = run_collect(dir.path(), &sim.url, "aw.db");
        assert_eq!(r.stored, fetched, "auditwarden stored every event");
        println!(
            "auditwarden : {} events in {:.2}s = {:.0} events/s, peak RSS {} MiB (target <= 100), CPU {:.2}s = {:.1} us/event (default configuration)",
            r.stored,
            r.secs,
            r.stored as f64 / r.secs,
            r.rss_mib,
            r.cpu_secs,
            r.cpu_secs * 1e6 / r.stored.max(1) as f64
        );
        for l in r.summary.lines().skip(1) {
            println!("              {}", l.trim());
        }
        let slower = fetch_s.max(insert_s);
        println!(
            "ratios      : auditwarden / slower floor = {:.2} (target <= 1.2); script / auditwarden = {:.2} (target >= 2)",
            r.secs / slower,
            script_s / r.secs
        );
        drop(sim);
        rate_limited(&rt, dir.path(), n, fetched);
    }
}

/// The rate-limited step: `auditwarden collect` (default settings) against a simulator of `n`
/// events that answers 429 above [`RATE_CAP`] requests/s; `events` is how many it must store.
fn rate_limited(rt: &tokio::runtime::Runtime, dir: &Path, n: usize, events: u64) {
    {
        let sim = start_sim(&[
            "--days".into(),
            DAYS.to_string(),
            "--events".into(),
            n.to_string(),
            "--faults".into(),
            format!("rate-cap={RATE_CAP}"),
        ]);
        let r = run_collect(dir, &sim.url, "limited.db");
        assert_eq!(
            r.stored, events,
            "auditwarden stored every event when limited"
        );
        let stats: Value = rt.block_on(async {
            let body = reqwest::get(format!("{}/_sim/stats", sim.url))
                .await
                .expect("stats")
                .bytes()
                .await
                .expect("stats body");
            serde_json::from_slice(&body).expect("stats json")
        });
        let limited = stats["statuses"]["429"].as_u64().unwrap_or(0);
        let total = stats["requests"].as_u64().unwrap_or(0).max(1);
        let pace = r
            .summary
            .split("pace settled at ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .unwrap_or("?")
            .to_string();
        let ok_rate = (total - limited) as f64 / r.secs;
        println!(
            "rate-limited: cap {RATE_CAP}/s: pace settled at {pace}/s (target within 20%: {:.0}..{:.0}), {:.1} accepted requests/s over the run, {limited} 429s in {total} requests = {:.2}% (target < 2%), {:.2}s",
            f64::from(RATE_CAP) * 0.8,
            f64::from(RATE_CAP) * 1.2,
            ok_rate,
            limited as f64 * 100.0 / total as f64,
            r.secs
        );
        println!("load        : {}", load());
        let _ = std::io::stdout().flush();
    }
}
