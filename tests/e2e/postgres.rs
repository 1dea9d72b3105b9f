//! The PostgreSQL backend end to end: the real binary with `[store] url` against the simulator,
//! each test on a database of its own (created on 127.0.0.1:5432 as `postgres`, or on
//! `AUDITWARDEN_TEST_POSTGRES`; dropped afterwards). No server: a visible "skipped" line, or a
//! failure under `CI=true`.

use std::collections::BTreeSet;

use auditwarden::store::{PgTarget, Store, StoreTarget};
use serde_json::Value;

use crate::helpers::*;

/// A database of its own on the test server, dropped (with any connection left) on drop.
pub(crate) struct PgDb {
    admin: String,
    name: String,
    /// The database's URL for `[store] url` (trust authentication: no password).
    pub(crate) url: String,
}

impl PgDb {
    pub(crate) fn create() -> Option<PgDb> {
        let admin = std::env::var("AUDITWARDEN_TEST_POSTGRES").unwrap_or_else(|_| {
            "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable".into()
        });
        let server = PgTarget::parse(&admin, None).expect("AUDITWARDEN_TEST_POSTGRES: a URL");
        match server.execute_batch("SELECT 1") {
            Ok(()) => {}
            Err(e) => {
                // Under CI (any `CI` value, as `.ci/run` sets it) the server must be there.
                if std::env::var_os("CI").is_some() {
                    panic!("no PostgreSQL at {admin} under CI: {e}");
                }
                eprintln!("skipped: no PostgreSQL at {admin} ({e})");
                return None;
            }
        };
        // Unique per process and per call: no clock, so no two tests can share a database.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "aw_e2e_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        server
            .execute_batch(&format!("CREATE DATABASE \"{name}\""))
            .expect("create database");
        let mut u = url::Url::parse(&admin).expect("AUDITWARDEN_TEST_POSTGRES: a URL");
        u.set_path(&format!("/{name}"));
        Some(PgDb {
            admin,
            name,
            url: u.to_string(),
        })
    }

    pub(crate) fn store(&self) -> Store {
        let t = PgTarget::parse(&self.url, None).expect("url");
        Store::open_target_read_only(&StoreTarget::Postgres(t)).expect("open the database")
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

/// A digicert-one account `one` and a certcentral account `cc` on `sim`; on `db` when given.
fn app(sim: &Sim, db: Option<&PgDb>) -> App {
    let url = sim.url();
    let app = App::with_accounts(&[
        ("one", "digicert-one", url.as_str(), ""),
        ("cc", "certcentral", url.as_str(), ""),
    ]);
    if let Some(db) = db {
        point(&app, db);
    }
    app
}

/// Point `app`'s `[store]` at `db` instead of its SQLite file.
pub(crate) fn point(app: &App, db: &PgDb) {
    let text = std::fs::read_to_string(&app.config).expect("config");
    let pointed = text.replacen(
        "[store]\npath = \"aw.db\"\n",
        &format!("[store]\nurl = \"{}\"\n", db.url),
        1,
    );
    assert_ne!(pointed, text, "no [store] path to replace");
    std::fs::write(&app.config, pointed).expect("config");
}

/// (account, id, status, roles) of `users --format json`.
fn directory(app: &App) -> BTreeSet<(String, String, String, String)> {
    let v: Value = serde_json::from_str(&run_ok(app, &["users", "--format", "json"])).unwrap();
    v.as_array()
        .expect("array")
        .iter()
        .map(|u| {
            (
                u["account"].as_str().unwrap_or("").to_string(),
                u["id"].as_str().unwrap_or("").to_string(),
                u["status"].as_str().unwrap_or("").to_string(),
                u["roles"].to_string(),
            )
        })
        .collect()
}

/// `collect`, `status`, `export events`, `users` and `verify` through the real binary on
/// PostgreSQL: the stored events are the simulator's, each once (a second pass stores nothing),
/// malformed ones quarantined; the export is byte for byte what the same collection into SQLite
/// exports; the directory is SQLite's; the chains verify.
#[test]
fn postgres_store_matches_truth_and_sqlite() {
    let Some(db) = PgDb::create() else { return };
    let sim = Sim::start(&[
        "--events",
        "1200",
        "--days",
        "8",
        "--users",
        "25",
        "--seed",
        "21",
        "--faults",
        "malformed,rate-limit=0.05,server-error=0.05",
    ]);
    let pg = app(&sim, Some(&db));
    let sq = app(&sim, None);
    let first = pg.collect_ok();
    assert!(first.contains("one: "), "{first}");
    sq.collect_ok();
    let again = pg.collect_ok();
    assert!(
        again.contains("0 new events, 0 already stored")
            && again.matches("0 rows written").count() == 2,
        "a second pass stores nothing: {again}"
    );

    let store = db.store();
    let truth = sim.truth_ids();
    let stored: BTreeSet<String> = store.event_ids("one").unwrap().into_iter().collect();
    assert_eq!(stored.len(), truth.len());
    assert!(stored == truth, "stored ids differ from the truth");
    let status = store.account_status("one").unwrap();
    assert_eq!(status.quarantined as usize, sim.truth_malformed());
    assert!(
        sim.truth_malformed() > 0,
        "the fault planted malformed events"
    );

    let shown = run_ok(&pg, &["status"]);
    assert!(
        shown.contains(&format!(
            "events stored: {}, quarantined: {}",
            truth.len(),
            sim.truth_malformed()
        )),
        "{shown}"
    );

    let export = |a: &App| run_ok(a, &["export", "events", "--format", "jsonl"]);
    let pg_export = export(&pg);
    assert_eq!(
        pg_export.lines().count() as u64,
        status.events + store.account_status("cc").unwrap().events
    );
    assert!(pg_export == export(&sq), "the export differs from SQLite's");
    let csv = |a: &App| {
        run_ok(
            a,
            &["export", "events", "--format", "csv", "--account", "one"],
        )
    };
    assert!(csv(&pg) == csv(&sq), "the CSV export differs from SQLite's");

    let dir = directory(&pg);
    assert!(dir.len() >= 25, "{dir:?}");
    assert_eq!(dir, directory(&sq));

    let (ok, out) = pg.verify(None);
    assert!(ok, "{out}");
    assert!(out.contains("chain(s) intact"), "{out}");
    assert!(!out.contains("FINDING"), "{out}");
}

/// `store copy` moves a SQLite history into PostgreSQL and back: the exports and directory are
/// the same, the chains verify on each target, a second run copies nothing new, and a target
/// holding another history is refused before anything is written.
#[test]
fn store_copy_moves_a_history_both_ways_and_refuses_another() {
    let Some(db) = PgDb::create() else { return };
    let sim = Sim::start(&[
        "--events",
        "800",
        "--days",
        "6",
        "--users",
        "20",
        "--seed",
        "5",
        "--faults",
        "malformed",
    ]);
    let sq = app(&sim, None);
    sq.collect_ok();
    let pg = app(&sim, Some(&db));
    let from = sq.db.display().to_string();
    let first = run_ok(&sq, &["store", "copy", "--from", &from, "--to", &db.url]);
    assert!(
        first.contains("events: ") && first.contains("copied"),
        "{first}"
    );
    assert!(first.contains("chain(s) verify on the target"), "{first}");
    let export = |a: &App| run_ok(a, &["export", "events", "--format", "jsonl"]);
    assert!(export(&pg) == export(&sq), "the copied export differs");
    assert_eq!(directory(&pg), directory(&sq));
    let (ok, out) = pg.verify(None);
    assert!(ok, "{out}");
    // Again: nothing new.
    let again = run_ok(&sq, &["store", "copy", "--from", &from, "--to", &db.url]);
    assert!(
        again
            .lines()
            .filter(|l| l.contains(" copied"))
            .all(|l| l.ends_with(" 0 copied")),
        "{again}"
    );
    // The copy collects on: PostgreSQL's keys continue after the copied ones.
    let (status, text) = sim.http("POST", "/_sim/events", "{\"count\": 40}");
    assert!(status < 300, "{status} {text}");
    let before = db.store().event_ids("one").unwrap().len();
    let more = pg.collect_ok();
    assert!(more.contains("40 new events"), "{more}");
    assert_eq!(db.store().event_ids("one").unwrap().len(), before + 40);
    let (ok, out) = pg.verify(None);
    assert!(ok, "{out}");
    // And back into a new SQLite file.
    let back = sq.dir.path().join("back.db");
    let back_s = back.display().to_string();
    run_ok(&sq, &["store", "copy", "--from", &db.url, "--to", &back_s]);
    let (ok, out) = sq.verify(Some(&back));
    assert!(ok, "{out}");
    assert_eq!(
        db.store().event_ids("one").unwrap(),
        Store::open_read_only(&back)
            .unwrap()
            .event_ids("one")
            .unwrap()
    );
    // Another history into the same PostgreSQL database: refused, nothing written.
    let other_sim = Sim::start(&["--events", "300", "--days", "4", "--seed", "99"]);
    let other = app(&other_sim, None);
    other.collect_ok();
    let before = db.store().event_ids("one").unwrap().len();
    let out = other.run(&[
        "store",
        "copy",
        "--from",
        &other.db.display().to_string(),
        "--to",
        &db.url,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("different history"), "{stderr}");
    assert_eq!(db.store().event_ids("one").unwrap().len(), before);
}

/// A daemon on PostgreSQL works only the accounts whose lease it holds: while another node
/// holds the API key's lease it collects nothing (and says so); once that node gives the lease up
/// it takes it over (a higher epoch, under its `node_name`) and collects everything, once.
#[test]
fn a_daemon_works_only_the_accounts_whose_lease_it_holds() {
    use sha2::{Digest, Sha256};
    use std::time::{Duration, Instant};
    let Some(db) = PgDb::create() else { return };
    let sim = Sim::start(&["--events", "300", "--days", "4", "--seed", "8"]);
    let pg = app(&sim, Some(&db));
    pg.add_config(
        "[schedule]\ncollect = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 10\nbackoff_base_secs = 1\nbackoff_max_secs = 2\nlease_secs = 5\nnode_name = \"node-a\"\n",
    );
    let target = StoreTarget::Postgres(PgTarget::parse(&db.url, None).unwrap());
    let mut other = Store::open_target(&target).unwrap();
    let key = format!("key:{}", hex::encode(&Sha256::digest(KEY.as_bytes())[..12]));
    let now_ms = now().timestamp_millis();
    let foreign = other
        .acquire_lease(&key, "node-x", now_ms, 3_600_000)
        .unwrap()
        .expect("the lease is free");
    // `status` says who works the account, and since when.
    let status: serde_json::Value =
        serde_json::from_slice(&pg.run(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(status[0]["lease"]["owner"], "node-x", "{status}");
    assert_eq!(status[0]["lease"]["held"], true, "{status}");
    let table = String::from_utf8_lossy(&pg.run(&["status"]).stdout).into_owned();
    assert!(table.contains("lease: held by node-x since "), "{table}");
    let d = pg.start_daemon();
    d.wait_metrics(Duration::from_secs(30), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 2.0
    });
    assert!(db.store().event_ids("one").unwrap().is_empty());
    assert!(d.log().contains("lease_held_elsewhere"), "{}", d.log());
    other.release_lease(&foreign).unwrap();
    let truth = sim.truth_ids();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored: BTreeSet<String> = db.store().event_ids("one").unwrap().into_iter().collect();
        if stored == truth {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {} of {} events",
            stored.len(),
            truth.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The key's lease (beside each daemon's `node:` row).
    let leases: Vec<_> = db
        .store()
        .leases()
        .unwrap()
        .into_iter()
        .filter(|l| l.key.starts_with("key:"))
        .collect();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!((leases[0].owner.as_str(), leases[0].epoch), ("node-a", 2));
    let (ok, out) = pg.verify(None);
    assert!(ok, "{out}");
}

/// Wait (at most `limit`) until `f` holds; `what` names it in the failure.
fn wait_until(limit: std::time::Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A daemon paused (SIGSTOP) mid-backfill past its lease loses its accounts to another daemon,
/// which collects everything; resumed, the first finds its lease gone and commits nothing: every
/// event is stored once and the chains verify.
#[test]
fn a_paused_daemon_loses_its_lease_and_commits_nothing_after_the_takeover() {
    use std::time::Duration;
    let Some(db) = PgDb::create() else { return };
    let sim = Sim::start(&[
        "--events",
        "12000",
        "--days",
        "12",
        "--seed",
        "4",
        "--faults",
        "slow=1.0,slow-ms=120",
    ]);
    let daemon = |node: &str| {
        let a = app(&sim, Some(&db));
        a.add_config(&format!(
            "[schedule]\ncollect = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\nbackoff_base_secs = 1\nbackoff_max_secs = 2\nlease_secs = 5\nnode_name = \"{node}\"\n"
        ));
        a
    };
    let (a_app, b_app) = (daemon("node-a"), daemon("node-b"));
    // The schema first, so the watcher below can read while the daemons start.
    Store::open_target(&StoreTarget::Postgres(
        PgTarget::parse(&db.url, None).unwrap(),
    ))
    .unwrap();
    let truth = sim.truth_ids();
    let count = || db.store().event_ids("one").unwrap().len();
    let mut a = a_app.start_daemon();
    wait_until(Duration::from_secs(60), "node-a stores events", || {
        count() > 0
    });
    a.signal(libc::SIGSTOP);
    let paused_at = count();
    assert!(
        paused_at < truth.len(),
        "the backfill ended before the pause ({paused_at} events)"
    );
    let mut b = b_app.start_daemon();
    wait_until(
        Duration::from_secs(120),
        "node-b completes the backfill",
        || count() == truth.len(),
    );
    let leases: Vec<_> = db
        .store()
        .leases()
        .unwrap()
        .into_iter()
        .filter(|l| l.key.starts_with("key:"))
        .collect();
    assert_eq!(leases[0].owner, "node-b", "{leases:?}");
    assert!(leases[0].epoch >= 2, "{leases:?}");
    b.signal(libc::SIGTERM);
    assert!(b.wait_for_exit(Duration::from_secs(30)).is_some());
    a.signal(libc::SIGCONT);
    wait_until(
        Duration::from_secs(30),
        "node-a notices the takeover",
        || a.log().contains("lease_lost"),
    );
    a.signal(libc::SIGTERM);
    assert!(a.wait_for_exit(Duration::from_secs(30)).is_some());
    let stored: BTreeSet<String> = db.store().event_ids("one").unwrap().into_iter().collect();
    assert_eq!(stored.len(), truth.len());
    assert!(stored == truth, "stored ids differ from the truth");
    let (ok, out) = a_app.verify(None);
    assert!(ok, "{out}");
}
