//! Collection benchmark (`cargo bench --bench collect`; `-- 1000000` for one size only).
//!
//! For each size it starts the simulator (release binary) and measures, in the same run:
//! - **fetch floor**: paging every day of the history through the real client without storing;
//! - **insert floor**: writing the same pages into a fresh SQLite file without fetching
//!   (bodies fetched beforehand, parse untimed);
//! - **end to end**: `auditwarden collect` as a child process into a fresh database: events/s,
//!   requests, and its peak RSS from `wait4`.
//!
//! It prints figures and ratios; it asserts nothing about speed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auditwarden::api::{AuditQuery, Client, ParsedEvent};
use auditwarden::config::{Account, AccountKind, CollectionSettings, Credential, RateLimit};
use auditwarden::secret::Secret;
use auditwarden::store::{PageWrite, Store, WindowDone};
use chrono::{Days, Utc};

const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
const KEY: &str = "bench-key";
const DAYS: u32 = 30;
const PAGE: u32 = 1000;

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

fn start_sim(events: usize) -> Sim {
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "1",
            "--days",
        ])
        .arg(DAYS.to_string())
        .arg("--events")
        .arg(events.to_string())
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

fn account(url: &str) -> Account {
    let mut c = CollectionSettings {
        page_size: PAGE,
        request_timeout: Duration::from_secs(60),
        rate_limits: vec![RateLimit {
            requests: 100_000,
            per_secs: 1,
        }],
        ..CollectionSettings::default()
    };
    c.retry.base_delay = Duration::from_millis(20);
    Account {
        name: "bench".into(),
        kind: AccountKind::DigicertOne,
        base_url: url::Url::parse(url).expect("url"),
        credential: Credential::ApiKey(Secret::new(KEY)),
        actions: Vec::new(),
        backfill_days: DAYS,
        collection: c,
    }
}

/// Page through every day of the history; `sink` gets each parsed page.
async fn fetch_all(
    client: &Client,
    mut sink: impl FnMut(chrono::NaiveDate, Vec<ParsedEvent>),
) -> (u64, u64) {
    let today = Utc::now().date_naive();
    let start = today
        .checked_sub_days(Days::new(u64::from(DAYS)))
        .unwrap_or(today);
    let mut events = 0;
    for day in start.iter_days().take_while(|d| *d <= today) {
        let mut offset = 0u64;
        loop {
            let q = AuditQuery {
                from: day,
                to: day,
                action: None,
                offset,
                limit: PAGE,
            };
            let page = client.audit_log(&q).await.expect("page");
            let n = page.items.len() as u64;
            events += n;
            sink(day, page.items);
            offset += n;
            if n == 0 || page.total.is_none_or(|t| offset >= t) {
                break;
            }
        }
    }
    (events, client.stats().requests())
}

#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the child's peak RSS
fn peak_rss_of(mut cmd: Command) -> (std::process::Output, Duration, u64) {
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
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out,
        stderr: Vec::new(),
    };
    (output, elapsed, usage.ru_maxrss as u64 / 1024)
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
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("auditwarden collection benchmark: {DAYS} days of history, pages of {PAGE}");
    for n in sizes {
        let t = Instant::now();
        let sim = start_sim(n);
        println!(
            "\n== {n} events (simulator ready in {:.1}s)",
            t.elapsed().as_secs_f64()
        );
        let acct = account(&sim.url);

        // Fetch floor.
        let client = Client::new(&acct).expect("client");
        let t = Instant::now();
        let (fetched, requests) = rt.block_on(fetch_all(&client, |_, _| {}));
        let fetch_s = t.elapsed().as_secs_f64();
        println!(
            "fetch floor : {fetched} events, {requests} requests in {fetch_s:.2}s = {:.0} events/s",
            fetched as f64 / fetch_s
        );

        // Insert floor: the same pages, fetched first (untimed), then written.
        let client = Client::new(&acct).expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("insert.db")).expect("store");
        let mut insert_s = 0.0;
        let mut inserted = 0;
        rt.block_on(fetch_all(&client, |day, items| {
            let evs: Vec<_> = items
                .into_iter()
                .filter_map(|i| match i {
                    ParsedEvent::Event(e) => Some(e),
                    ParsedEvent::Malformed(_) => None,
                })
                .collect();
            // Only the write is timed; pages are written as they come so memory stays small.
            {
                let t = Instant::now();
                let out = store
                    .write_page(&PageWrite {
                        account: "bench",
                        action_filter: "",
                        day: Some(day),
                        events: &evs,
                        malformed: &[],
                        done: Some(WindowDone {
                            server_total: None,
                            received: evs.len() as u64,
                        }),
                    })
                    .expect("write");
                insert_s += t.elapsed().as_secs_f64();
                inserted += out.inserted;
            }
        }));
        println!(
            "insert floor: {inserted} events in {insert_s:.2}s = {:.0} events/s",
            inserted as f64 / insert_s
        );
        drop(store);

        // End to end.
        let cfg = dir.path().join("bench.toml");
        std::fs::write(
            &cfg,
            format!(
                "[store]\npath = \"e2e.db\"\n[collection]\npage_size = {PAGE}\nrate_limits = [{{ requests = 100000, per_secs = 1 }}]\nretry_base_ms = 20\n[[accounts]]\nname = \"bench\"\nkind = \"digicert-one\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_KEY\"\nbackfill_days = {DAYS}\n",
                sim.url
            ),
        )
        .expect("config");
        let mut cmd = Command::new(BIN);
        cmd.args(["collect", "--config"])
            .arg(&cfg)
            .env("BENCH_KEY", KEY)
            .env("AUDITWARDEN_LOG", "warn");
        let (out, elapsed, rss_mib) = peak_rss_of(cmd);
        let e2e_s = elapsed.as_secs_f64();
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "collect failed: {summary}");
        let stored = Store::open_read_only(&dir.path().join("e2e.db"))
            .expect("db")
            .event_ids("bench")
            .expect("ids")
            .len();
        println!(
            "end to end  : {stored} events in {e2e_s:.2}s = {:.0} events/s, peak RSS {rss_mib} MiB",
            stored as f64 / e2e_s
        );
        println!(
            "              {}",
            summary.lines().nth(1).unwrap_or("").trim()
        );
        let slower = fetch_s.max(insert_s);
        println!(
            "ratios      : end-to-end / slower floor = {:.2} (target <= 1.5); fetch {:.2}s, insert {:.2}s",
            e2e_s / slower,
            fetch_s,
            insert_s
        );
        let _ = std::io::stdout().flush();
    }
}
