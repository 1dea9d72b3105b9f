//! PostgreSQL benchmark (`cargo bench --bench postgres [-- EVENTS] [backfill|daemons]`; default
//! 1,000,000 events, both steps), against
//! the server on 127.0.0.1:5432 (or `AUDITWARDEN_TEST_POSTGRES`), each step on a database of its
//! own (created and dropped). In one run it measures:
//! - **backfill**: `auditwarden collect` (release binary, default collection settings) of EVENTS
//!   events over 30 days from the simulator into SQLite, then into PostgreSQL: time, events/s,
//!   peak RSS, and the ratio (target: PostgreSQL within 1.5x of SQLite);
//! - **three daemons vs one**: 60 DigiCert ONE accounts, each with a key of its own, against a
//!   simulator that caps every key (`--faults rate-cap=N`, DigiCert limits per key): time from
//!   the first collection until every account holds every event, with one `auditwarden run` and
//!   then with three on a fresh database (target: three at least 2.5x faster);
//! - **takeover**: with the three daemons still running, one is killed with `kill -9` while it
//!   holds leases; the time until another node holds each of them (target: within `lease_secs`
//!   plus one heartbeat, a third of it).
//!
//! - **inserts**: the page insert's shape: 50,000 events through the store's `write_page` (one
//!   binary COPY per page, with the dedup lookup and the chain) against a plain
//!   tokio-postgres loop of one prepared INSERT per event and a plain binary COPY, all in
//!   transactions of 10 pages of 1,000 events, on the same server.
//!
//! `[backfill|daemons|inserts]` runs that step alone. It prints figures; it asserts only that the
//! runs succeed and store every event.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auditwarden::store::{PgTarget, Store, StoreTarget};

mod common;

use common::{peak_rss_of, start_sim_with_keys as start_sim, BIN, KEY};

/// Accounts of the daemon comparison, and the events each holds.
const ACCOUNTS: usize = 60;
const SHARED_EVENTS: usize = 3000;
/// Requests per second the simulator allows each key in the daemon comparison.
const RATE_CAP: u32 = 4;
/// `[daemon] lease_secs` of the daemons.
const LEASE_SECS: u64 = 5;

/// A database of its own on the server, dropped on drop.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    fn create(tag: &str) -> PgDb {
        let admin = std::env::var("AUDITWARDEN_TEST_POSTGRES").unwrap_or_else(|_| {
            "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        });
        let server = PgTarget::parse(&admin, None).expect("a PostgreSQL URL");
        let name = format!("aw_bench_{tag}_{}", std::process::id());
        server
            .execute_batch(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .expect("PostgreSQL on 127.0.0.1:5432 (or AUDITWARDEN_TEST_POSTGRES)");
        server
            .execute_batch(&format!("CREATE DATABASE \"{name}\""))
            .expect("create database");
        let mut u = url::Url::parse(&admin).expect("url");
        u.set_path(&format!("/{name}"));
        PgDb {
            admin,
            name,
            url: u.to_string(),
        }
    }

    fn target(&self) -> StoreTarget {
        StoreTarget::Postgres(PgTarget::parse(&self.url, None).expect("url"))
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(server) = PgTarget::parse(&self.admin, None) {
            let _ = server.execute_batch(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A GET on `addr` (host:port): (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A running `auditwarden run`, killed on drop.
struct Daemon {
    child: Child,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(config: &std::path::Path, env: &[(String, String)]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped());
        // `AUDITWARDEN_BENCH_LOGS=DIR` keeps each daemon's info log in DIR (named after its
        // config), to see where a figure's time went.
        match std::env::var_os("AUDITWARDEN_BENCH_LOGS") {
            Some(dir) => {
                let name = config.file_stem().unwrap_or_default().to_string_lossy();
                let log =
                    std::fs::File::create(std::path::Path::new(&dir).join(format!("{name}.log")))
                        .expect("bench log file");
                cmd.env("AUDITWARDEN_LOG", "info").stderr(log);
            }
            None => {
                cmd.env("AUDITWARDEN_LOG", "warn").stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().expect("spawn daemon");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addr = None;
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).expect("stdout") > 0,
                "the daemon exited"
            );
            if let Some(a) = line.trim().strip_prefix("health and metrics on http://") {
                addr = Some(a.to_string());
            }
            if line.starts_with("auditwarden running") {
                break;
            }
        }
        // Drain the rest, so a full pipe never blocks the daemon (bounded by its life).
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        Daemon {
            child,
            addr: addr.expect("listener address"),
        }
    }

    /// The accounts whose lease this daemon holds now (`auditwarden_lease_held` 1).
    fn holding(&self) -> Vec<String> {
        let (_, body) = get(&self.addr, "/metrics");
        body.lines()
            .filter(|l| l.starts_with("auditwarden_lease_held{") && l.ends_with(" 1"))
            .filter_map(|l| {
                let rest = l.split("account=\"").nth(1)?;
                Some(rest.split('"').next()?.to_string())
            })
            .collect()
    }
}

/// Wait (at most `limit`) until `f` holds.
fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let events: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // `inserts`, `backfill` or `daemons` runs that step alone (all of them by default).
    let steps = ["inserts", "backfill", "daemons"];
    let only = |step: &str| {
        !args.iter().any(|a| steps.contains(&a.as_str())) || args.iter().any(|a| a == step)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    if only("inserts") {
        inserts();
    }
    if only("backfill") {
        backfill(dir.path(), events);
    }
    if only("daemons") {
        daemons(dir.path());
    }
}

/// The page insert's shape (see the module docs).
fn inserts() {
    use auditwarden::api::AuditEvent;
    use auditwarden::store::PageWrite;
    const N: usize = 50_000;
    println!("inserts: {N} events, transactions of 10 pages of 1,000");
    let evs: Vec<AuditEvent> = (0..N)
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
        .collect();
    let pg = PgDb::create("inserts");
    let mut s = Store::open_target(&pg.target()).unwrap();
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
    let store_secs = t.elapsed().as_secs_f64();
    assert_eq!(s.event_ids("a").unwrap().len(), N);
    // The floor: the same rows into the same table, one INSERT per event, no dedup, no chain.
    let StoreTarget::Postgres(target) = pg.target() else {
        unreachable!()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut c = target.connect().unwrap();
    let t = Instant::now();
    for tx in evs.chunks(10_000) {
        rt.block_on(async {
            let tx_ = c.transaction().await.unwrap();
            let st = tx_
                .prepare(
                    "INSERT INTO events (account, event_id, ts_ms, day, action, actor_id,
                        actor_name, status, raw, collected_ms, chain_n, chain_hash)
                     VALUES ('b', $1, $2, '2026-09-21', $3, $4, $5, $6, $7, 0, 1, $8)
                     ON CONFLICT (account, event_id) DO NOTHING",
                )
                .await
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
                .await
                .unwrap();
            }
            tx_.commit().await.unwrap();
        });
    }
    let plain_secs = t.elapsed().as_secs_f64();
    // The other floor: binary COPY of the same rows (account 'c'), one per 10,000 events.
    let t = Instant::now();
    for tx in evs.chunks(10_000) {
        rt.block_on(async {
            use tokio_postgres::binary_copy::BinaryCopyInWriter;
            use tokio_postgres::types::{ToSql, Type};
            let tx_ = c.transaction().await.unwrap();
            let sink = tx_
                .copy_in(
                    "COPY events (account, event_id, ts_ms, day, action, actor_id, actor_name,
                        status, raw, collected_ms, chain_n, chain_hash) FROM STDIN BINARY",
                )
                .await
                .unwrap();
            let types = [
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::INT8,
                Type::BYTEA,
            ];
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for e in tx {
                let row: [&(dyn ToSql + Sync); 12] = [
                    &"c",
                    &e.id,
                    &e.timestamp.timestamp_millis(),
                    &"2026-09-21",
                    &e.action,
                    &e.actor_id,
                    &e.actor_name,
                    &e.status,
                    &e.raw,
                    &0i64,
                    &1i64,
                    &&[0u8; 32][..],
                ];
                writer.as_mut().write(&row).await.unwrap();
            }
            writer.finish().await.unwrap();
            tx_.commit().await.unwrap();
        });
    }
    let copy_secs = t.elapsed().as_secs_f64();
    println!(
        "  store write_page (a COPY per page, dedup, chain) {store_secs:.2} s ({:.0} events/s); plain INSERT per event {plain_secs:.2} s ({:.0} events/s, {:.2}x); plain binary COPY {copy_secs:.2} s ({:.0} events/s, {:.2}x)",
        N as f64 / store_secs,
        N as f64 / plain_secs,
        store_secs / plain_secs,
        N as f64 / copy_secs,
        store_secs / copy_secs
    );
}

/// One account's backfill into SQLite, then into PostgreSQL.
fn backfill(dir: &std::path::Path, events: usize) {
    println!("backfill: {events} events over 30 days, one DigiCert ONE account, default settings");
    let sim = start_sim(
        &[
            "--events".into(),
            events.to_string(),
            "--days".into(),
            "30".into(),
        ],
        &[],
    );
    let pg = PgDb::create("backfill");
    let account = format!(
        "[[accounts]]\nname = \"one\"\nkind = \"digicert-one\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_KEY\"\nbackfill_days = 31\n",
        sim.url
    );
    let mut secs = Vec::new();
    for (label, store) in [
        ("sqlite", "path = \"aw.db\"".to_string()),
        ("postgresql", format!("url = \"{}\"", pg.url)),
    ] {
        let config = dir.join(format!("backfill-{label}.toml"));
        std::fs::write(&config, format!("[store]\n{store}\n{account}")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .arg("collect")
            .env("BENCH_KEY", KEY)
            .env("AUDITWARDEN_LOG", "warn");
        let (out, elapsed, rss) = peak_rss_of(cmd);
        assert!(
            out.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let target = if label == "sqlite" {
            StoreTarget::Sqlite(dir.join("aw.db"))
        } else {
            pg.target()
        };
        let stored = Store::open_target_read_only(&target)
            .unwrap()
            .account_status("one")
            .unwrap()
            .events;
        assert_eq!(stored as usize, events, "{label}: stored {stored}");
        let s = elapsed.as_secs_f64();
        println!(
            "  {label:<10} {s:7.1} s  {:>9.0} events/s  peak RSS {rss} MiB",
            events as f64 / s
        );
        secs.push(s);
    }
    println!(
        "  PostgreSQL / SQLite time: {:.2}x (target <= 1.5x)",
        secs[1] / secs[0]
    );
}

/// 60 accounts: one daemon, then three; then a kill -9 of one of the three.
fn daemons(dir: &std::path::Path) {
    println!(
        "daemons: {ACCOUNTS} accounts with a key each, {SHARED_EVENTS} events each over 10 days, \
         pages of 100, the simulator capping each key at {RATE_CAP} requests/s, lease_secs = {LEASE_SECS}"
    );
    let keys: Vec<String> = (0..ACCOUNTS).map(|i| format!("bench-key-{i:02}")).collect();
    let sim = start_sim(
        &[
            "--events".into(),
            SHARED_EVENTS.to_string(),
            "--days".into(),
            "10".into(),
            "--faults".into(),
            format!("rate-cap={RATE_CAP}"),
        ],
        &keys,
    );
    let env: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("BENCH_KEY_{i:02}"), k.clone()))
        .collect();
    let names: Vec<String> = (0..ACCOUNTS).map(|i| format!("acct{i:02}")).collect();
    let mut one_secs = 0.0;
    for n in [1usize, 3] {
        let pg = PgDb::create(&format!("daemons{n}"));
        // The schema first, so the watcher can read while the daemons start.
        Store::open_target(&pg.target()).unwrap();
        let configs: Vec<std::path::PathBuf> = (0..n)
            .map(|i| {
                let mut text = format!(
                    "[store]\nurl = \"{}\"\n[collection]\npage_size = 100\n\
                     [schedule]\ncollect = \"\"\npoll_invites = \"\"\ndeliver_alerts = \"\"\n\
                     [reports]\nschedule = \"\"\n\
                     [daemon]\nlisten = \"127.0.0.1:0\"\nlease_secs = {LEASE_SECS}\nnode_name = \"bench-{i}\"\n\
                     backoff_base_secs = 1\nbackoff_max_secs = 2\n",
                    pg.url
                );
                for (j, a) in names.iter().enumerate() {
                    text.push_str(&format!(
                        "[[accounts]]\nname = \"{a}\"\nkind = \"digicert-one\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_KEY_{j:02}\"\nbackfill_days = 11\n",
                        sim.url
                    ));
                }
                let p = dir.join(format!("daemons{n}-{i}.toml"));
                std::fs::write(&p, text).unwrap();
                p
            })
            .collect();
        let mut daemons: Vec<Daemon> = configs.iter().map(|c| Daemon::start(c, &env)).collect();
        let reader = Store::open_target_read_only(&pg.target()).unwrap();
        wait_until(Duration::from_secs(30), "the nodes registered", || {
            reader
                .leases()
                .unwrap()
                .iter()
                .filter(|l| l.key.starts_with("node:"))
                .count()
                == n
        });
        // Collection on (SIGHUP), every second, for all at once.
        for (c, d) in configs.iter().zip(&daemons) {
            let text = std::fs::read_to_string(c).unwrap();
            std::fs::write(
                c,
                text.replacen("collect = \"\"", "collect = \"* * * * * *\"", 1),
            )
            .unwrap();
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(d.child.id() as i32, libc::SIGHUP) };
        }
        let started = Instant::now();
        wait_until(Duration::from_secs(900), "every account collected", || {
            names.iter().all(|a| {
                reader.account_status(a).map(|s| s.events).unwrap_or(0) as usize >= SHARED_EVENTS
            })
        });
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {n} daemon(s): every account collected in {secs:.1} s ({:.0} events/s)",
            (ACCOUNTS * SHARED_EVENTS) as f64 / secs
        );
        if n == 1 {
            one_secs = secs;
            continue;
        }
        println!(
            "  three daemons vs one: {:.2}x faster (target >= 2.5x)",
            one_secs / secs
        );
        // Takeover: kill -9 a daemon while it holds leases (each run holds them briefly).
        let victim = 0;
        wait_until(Duration::from_secs(60), "the victim holds leases", || {
            !daemons[victim].holding().is_empty()
        });
        let killed = Instant::now();
        daemons[victim].child.kill().unwrap();
        let _ = daemons[victim].child.wait();
        let victim_node = format!("bench-{victim}");
        // The key leases it held as it died (not given up, not lapsed).
        let now_ms = chrono::Utc::now().timestamp_millis();
        let held_keys: Vec<String> = reader
            .leases()
            .unwrap()
            .iter()
            .filter(|l| {
                l.owner == victim_node && l.key.starts_with("key:") && l.expires_ms > now_ms
            })
            .map(|l| l.key.clone())
            .collect();
        if held_keys.is_empty() {
            println!("  takeover: the victim held no lease as it died (its run had just ended); not measured");
            return;
        }
        // When the last of them lapses (its expiry as written by the victim's last renewal).
        let lapse_ms = reader
            .leases()
            .unwrap()
            .iter()
            .filter(|l| held_keys.contains(&l.key))
            .map(|l| l.expires_ms)
            .max()
            .unwrap_or(now_ms);
        // `now_ms` was read right after the kill.
        let lapsed = (lapse_ms - now_ms) as f64 / 1000.0;
        // A survivor takes a lapsed key at the start of its next run: one in the middle of a
        // long run takes it when that run ends.
        wait_until(
            Duration::from_secs(300),
            "the victim's leases taken over",
            || {
                let now = reader.leases().unwrap();
                held_keys
                    .iter()
                    .all(|k| now.iter().any(|l| &l.key == k && l.owner != victim_node))
            },
        );
        let took = killed.elapsed().as_secs_f64();
        println!(
            "  takeover after kill -9 of a node holding {} lease(s): {took:.2} s, the last lease lapsing {lapsed:.2} s after the kill (target <= {:.2} s: lease_secs + one heartbeat)",
            held_keys.len(),
            LEASE_SECS as f64 * 4.0 / 3.0
        );
        daemons.clear();
    }
}
