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

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use auditwarden::api::{AuditQuery, Client, ParsedEvent};
use auditwarden::config::{Account, AccountKind, CollectionSettings, Credential, RateLimit};
use auditwarden::secret::Secret;
use auditwarden::store::{PageWrite, Store, WindowDone};
use chrono::{Days, Utc};

mod common;

use common::{peak_rss_of, start_sim, BIN, KEY};

const DAYS: u32 = 30;
const PAGE: u32 = 1000;

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
        let sim = start_sim(&[
            "--days".into(),
            DAYS.to_string(),
            "--events".into(),
            n.to_string(),
        ]);
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
        // Pages are written in batches of 50 (50,000 events), as the collector's writer does.
        type Pending = Vec<(chrono::NaiveDate, Vec<auditwarden::api::AuditEvent>)>;
        let mut pending: Pending = Vec::new();
        let mut write = |pending: &mut Pending| {
            let t = Instant::now();
            let mut batch = store.batch().expect("batch");
            for (day, evs) in pending.drain(..) {
                let out = batch
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
                inserted += out.inserted;
            }
            batch.commit().expect("commit");
            insert_s += t.elapsed().as_secs_f64();
        };
        rt.block_on(fetch_all(&client, |day, items| {
            let evs: Vec<_> = items
                .into_iter()
                .filter_map(|i| match i {
                    ParsedEvent::Event(e) => Some(e),
                    ParsedEvent::Malformed(_) => None,
                })
                .collect();
            pending.push((day, evs));
            if pending.len() == 50 {
                write(&mut pending);
            }
        }));
        write(&mut pending);
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
