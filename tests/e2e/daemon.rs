//! `auditwarden run`: the real binary as a daemon against the simulator: schedules, signals,
//! reloads, health and metrics.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::helpers::*;

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// Daemon settings for tests: a loopback listener on a free port, short grace and backoff.
const DAEMON: &str = "[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 10\nbackoff_base_secs = 1\nbackoff_max_secs = 2\n";

/// Second-level schedules fire on time: several collections and deliveries within seconds, each
/// job's runs spaced by its schedule, and the database matches the simulator.
#[test]
fn jobs_fire_on_schedule() {
    let sim = Sim::start(&["--events", "300", "--days", "5"]);
    let app = App::new(&sim, "");
    app.add_config(&format!(
        "[schedule]\ncollect = \"*/2 * * * * *\"\npoll_invites = \"*/3 * * * * *\"\ndeliver_alerts = \"* * * * * *\"\n{DAEMON}\n[reports]\nschedule = \"*/4 * * * * *\"\nformats = [\"json\"]\noutput_dir = \"out\"\n"
    ));
    let mut d = app.start_daemon();
    let started = Instant::now();
    let m = d.wait_metrics(Duration::from_secs(20), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 3.0
            && metric(
                m,
                "auditwarden_job_runs_total",
                &[("job", "poll_invites"), ("result", "ok")],
            ) >= 2.0
            && metric(
                m,
                "auditwarden_job_runs_total",
                &[("job", "deliver_alerts"), ("result", "ok")],
            ) >= 4.0
            && metric(
                m,
                "auditwarden_job_runs_total",
                &[("job", "reports"), ("result", "ok")],
            ) >= 1.0
    });
    // The report job wrote a set with its manifest (the stamp names a second, so runs may share).
    let runs: Vec<_> = std::fs::read_dir(app.dir.path().join("out"))
        .expect("report output dir")
        .flatten()
        .filter(|e| e.path().join("manifest.json").is_file())
        .collect();
    assert!(!runs.is_empty(), "no report run with a manifest");
    // Three collections every 2 s need at least 4 s after the first tick.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "ran faster than scheduled"
    );
    assert_eq!(
        metric(
            &m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "failed")]
        ),
        0.0
    );
    d.signal(SIGTERM);
    let status = d
        .wait_for_exit(Duration::from_secs(15))
        .expect("daemon did not stop");
    assert!(status.success(), "exit {status:?}\n{}", d.log());
    assert_matches_truth(&app, &sim, "one");
    let log = d.log();
    let collects = log.matches("job_started").count();
    assert!(collects >= 9, "{log}");
}

/// SIGTERM in the middle of a backfill: exit 0 within the grace period, some events stored, and a
/// later collection completes the window with nothing missing and nothing twice.
#[test]
fn sigterm_during_backfill_exits_zero_and_loses_nothing() {
    let sim = Sim::start(&[
        "--events",
        "20000",
        "--days",
        "30",
        "--seed",
        "9",
        "--faults",
        "rate-limit=0.02,server-error=0.02,slow=0.2,slow-ms=20",
    ]);
    let app = App::new(&sim, "");
    app.add_config(&format!(
        "[schedule]\ncollect = \"* * * * * *\"\npoll_invites = \"\"\n{DAEMON}"
    ));
    let mut d = app.start_daemon();
    // Wait until the backfill has stored some pages.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // `status` fails while the database has no schema yet (the daemon is creating it).
        let out = app.run(&["status", "--format", "json"]);
        let stored = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v[0]["events"].as_i64());
        if out.status.success() && stored.is_some_and(|n| n > 200) {
            break;
        }
        assert!(Instant::now() < deadline, "no events stored: {}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopping = Instant::now();
    d.signal(SIGTERM);
    let status = d
        .wait_for_exit(Duration::from_secs(10))
        .expect("not stopped within the grace period");
    assert!(status.success(), "exit {status:?}\n{}", d.log());
    assert!(stopping.elapsed() < Duration::from_secs(10));
    assert!(
        d.log().contains("pass_cancelled"),
        "the pass was not stopped mid-way:\n{}",
        d.log()
    );
    let stored = app.events_stored("one");
    assert!(
        (stored as usize) < sim.truth_ids().len(),
        "the backfill had finished before SIGTERM ({stored} events)"
    );
    let exported = app.exported_events();
    let distinct: BTreeSet<&str> = exported
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(exported.len() as i64, stored);
    assert_eq!(exported.len(), distinct.len(), "an event was stored twice");
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
}

/// SIGHUP with a broken config keeps the daemon running on the old one (and says why); a good
/// config after that is taken (its new schedule switches collection off).
#[test]
fn sighup_with_broken_config_keeps_running() {
    let sim = Sim::start(&["--events", "100", "--days", "3"]);
    let app = App::new(&sim, "");
    app.add_config(&format!("[schedule]\ncollect = \"* * * * * *\"\n{DAEMON}"));
    let good = std::fs::read_to_string(&app.config).unwrap();
    let mut d = app.start_daemon();
    d.wait_metrics(Duration::from_secs(15), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 1.0
    });
    std::fs::write(&app.config, good.replace("[store]", "[store]\nbogus = 1\n")).unwrap();
    d.signal(SIGHUP);
    wait_for_log(&d, "reload_rejected", Duration::from_secs(10));
    // Rejected and said so: the daemon still answers and runs.
    assert_eq!(d.get("/healthz").0, 200, "the daemon died on a bad reload");
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon died on a bad reload"
    );
    assert!(d.log().contains("store.bogus: unknown key"), "{}", d.log());
    assert_eq!(d.get("/healthz").0, 200);
    let before = metric(
        &d.get_metrics(),
        "auditwarden_job_runs_total",
        &[("job", "collect"), ("result", "ok")],
    );
    d.wait_metrics(Duration::from_secs(10), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) > before
    });
    // A valid config that switches collection off. Delivery runs every second instead: its
    // runs are the clock that shows time passing on the daemon's own schedule.
    std::fs::write(
        &app.config,
        good.replace(
            "collect = \"* * * * * *\"",
            "collect = \"\"\ndeliver_alerts = \"* * * * * *\"",
        ),
    )
    .unwrap();
    d.signal(SIGHUP);
    wait_for_log(&d, "config_reloaded", Duration::from_secs(10));
    let deliveries = |m: &[Sample]| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "deliver_alerts"), ("result", "ok")],
        )
    };
    let collects = |m: &[Sample]| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        )
    };
    // One delivery on the new schedule: a collection begun before the reload has had its turn.
    let d0 = deliveries(&d.get_metrics());
    let m = d.wait_metrics(Duration::from_secs(10), |m| deliveries(m) > d0);
    let (a, d1) = (collects(&m), deliveries(&m));
    // Three more ticks of a schedule that fires every second span at least two seconds, in
    // which the old collect schedule (every second) would have fired.
    let m = d.wait_metrics(Duration::from_secs(15), |m| deliveries(m) >= d1 + 3.0);
    let b = collects(&m);
    assert_eq!(a, b, "collection still ran after it was switched off");
    d.signal(SIGTERM);
    assert!(d
        .wait_for_exit(Duration::from_secs(15))
        .expect("stop")
        .success());
}

/// Wait until the daemon's log holds `needle`, at most `limit`.
fn wait_for_log(d: &Daemon, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !d.log().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log within {limit:?}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/metrics` is valid Prometheus text and its figures equal the database's.
#[test]
fn metrics_parse_and_match_the_database() {
    let sim = Sim::start(&[
        "--events",
        "1500",
        "--days",
        "10",
        "--faults",
        "malformed,rate-limit=0.05",
    ]);
    let app = App::new(&sim, "");
    app.add_config(&format!("[schedule]\ncollect = \"*/2 * * * * *\"\npoll_invites = \"\"\ndeliver_alerts = \"\"\n{DAEMON}"));
    let mut d = app.start_daemon();
    // A deadline, not a pace: a loaded CI machine took over 30 s for this first pass.
    d.wait_metrics(Duration::from_secs(120), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 1.0
    });
    d.signal(SIGTERM);
    // Stop scheduling; read the figures of a quiet daemon: restart with collection off.
    assert!(d
        .wait_for_exit(Duration::from_secs(15))
        .expect("stop")
        .success());
    drop(d);
    let cfg = std::fs::read_to_string(&app.config).unwrap();
    std::fs::write(
        &app.config,
        cfg.replace("collect = \"*/2 * * * * *\"", "collect = \"\""),
    )
    .unwrap();
    let d = app.start_daemon();
    let m = parse_prometheus(&d.get("/metrics").1);
    let one = [("account", "one")];
    assert_eq!(
        metric(&m, "auditwarden_events_stored", &one) as i64,
        app.events_stored("one")
    );
    assert_eq!(
        metric(&m, "auditwarden_quarantined_events", &one) as i64,
        app.account_status("one")["quarantined"]
            .as_i64()
            .expect("quarantined")
    );
    assert!(
        metric(&m, "auditwarden_quarantined_events", &one) > 0.0,
        "the malformed fault put nothing in quarantine"
    );
    let last = chrono::DateTime::parse_from_rfc3339(
        app.account_status("one")["last_success"]
            .as_str()
            .expect("last success"),
    )
    .expect("rfc3339")
    .timestamp();
    assert_eq!(
        metric(
            &m,
            "auditwarden_account_last_success_timestamp_seconds",
            &one
        ) as i64,
        last
    );
    for state in ["pending", "sent", "failed", "suppressed"] {
        assert!(m
            .iter()
            .any(|s| s.name == "auditwarden_alerts" && s.label("state") == Some(state)));
    }
    assert_matches_truth(&app, &sim, "one");
    drop(d);

    // Counters of one daemon's collections against a fresh database.
    std::fs::remove_file(&app.db).unwrap();
    let _ = std::fs::remove_file(app.db.with_extension("db-wal"));
    let _ = std::fs::remove_file(app.db.with_extension("db-shm"));
    std::fs::write(&app.config, cfg).unwrap();
    let d = app.start_daemon();
    let m = d.wait_metrics(Duration::from_secs(30), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 1.0
    });
    let collected = metric(&m, "auditwarden_events_collected_total", &one) as i64;
    let stored = metric(&m, "auditwarden_events_stored", &one) as i64;
    // Another pass may have stored more between the two reads of one scrape; never fewer.
    assert!(
        collected > 0 && collected <= stored,
        "collected {collected}, stored {stored}"
    );
    let requests: f64 = m
        .iter()
        .filter(|s| s.name == "auditwarden_api_requests_total")
        .map(|s| s.value)
        .sum();
    let ok = metric(
        &m,
        "auditwarden_api_requests_total",
        &[("account", "one"), ("status", "200")],
    );
    assert!(ok > 0.0 && requests >= ok);
    // Raw SQL: no command shows the requests of every recorded pass (`status` shows the last).
    let passes_requests =
        app.sql_count("SELECT SUM(requests) FROM passes WHERE account = 'one'") as f64;
    assert!(
        requests >= passes_requests,
        "requests {requests} < recorded {passes_requests}"
    );
}

/// `/readyz` is 200 once every account collected, and 503 naming the account once it fails.
#[test]
fn readyz_turns_unready_when_an_account_fails() {
    let sim = Sim::start(&["--events", "200", "--days", "3"]);
    let app = App::new(
        &sim,
        "max_retries = 1\nretry_max_secs = 1\nretry_base_ms = 10\n",
    );
    app.add_config(&format!(
        "[schedule]\ncollect = \"* * * * * *\"\npoll_invites = \"\"\n{DAEMON}"
    ));
    let d = app.start_daemon();
    let (s, body) = d.get("/readyz");
    assert_eq!(s, 503, "ready before any pass: {body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.get("/healthz").0, 200);
    let (s, b) = sim.http("POST", "/_sim/faults", "server-error=1");
    assert!(s < 300, "{b}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, body) = d.get("/readyz");
        if s == 503 {
            assert!(body.contains("one: last pass failed"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still ready: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        d.get("/healthz").0,
        200,
        "liveness does not depend on accounts"
    );
    // And ready again once the account recovers (the failing job backs off, then retries).
    sim.http("POST", "/_sim/faults", "none");
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready again: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `sd_notify` side of systemd: a unix datagram socket the daemon is pointed at with
/// `NOTIFY_SOCKET`, and every message received on it with its arrival time.
struct NotifySocket {
    path: std::path::PathBuf,
    received: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(path: std::path::PathBuf) -> NotifySocket {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        // Wakes the reader now and then to see whether the test is over.
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                    r.lock().unwrap().push((Instant::now(), msg));
                }
            }
        });
        NotifySocket {
            path,
            received,
            stop,
            reader: Some(reader),
        }
    }

    /// Arrival times of the `WATCHDOG=1` pings so far.
    fn pings(&self) -> Vec<Instant> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A long backfill and invitation polls every second overlap, on one runtime worker thread: the
/// watchdog pings keep coming (largest gap under a second, `WATCHDOG_USEC` asking for one every
/// 0.2 s), `/metrics` answers within a second throughout, and the polls succeed instead of
/// failing on a locked database.
#[test]
fn overlapping_jobs_keep_the_watchdog_and_metrics_prompt() {
    let sim = Sim::start(&[
        "--events",
        "30000",
        "--days",
        "30",
        "--users",
        "300",
        "--seed",
        "4",
        "--faults",
        "slow=0.1,slow-ms=40",
    ]);
    let app = App::new(&sim, "");
    // The users (and their invitations) are known before the daemon starts, so every poll has
    // invitations to check and results to write while the backfill writes pages.
    let out = app.run(&["sync-users"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let invited = app.users_json(Some("invited")).len();
    assert!(invited >= 10, "only {invited} invited users");
    app.add_config(&format!(
        "[schedule]\ncollect = \"* * * * * *\"\npoll_invites = \"* * * * * *\"\ndeliver_alerts = \"\"\n{DAEMON}"
    ));
    let notify = NotifySocket::bind(app.dir.path().join("notify.sock"));
    let socket = notify.path.display().to_string();
    let mut d = app.start_daemon_with_env(&[
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
        // One runtime worker, as on a one-CPU host (or `CPUQuota=100%`): a store call on the
        // runtime would stall everything, so none may run there.
        ("TOKIO_WORKER_THREADS", "1"),
    ]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0u32;
    let mut polls_during_backfill = 0.0;
    let backfill = loop {
        let asked = Instant::now();
        let (status, body) = d.get("/metrics");
        let took = asked.elapsed();
        assert_eq!(status, 200, "{body}");
        let m = parse_prometheus(&body);
        let collected = metric(
            &m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        );
        if collected >= 1.0 {
            break started.elapsed();
        }
        slowest = slowest.max(took);
        scrapes += 1;
        polls_during_backfill = metric(
            &m,
            "auditwarden_job_runs_total",
            &[("job", "poll_invites"), ("result", "ok")],
        );
        assert_eq!(
            metric(
                &m,
                "auditwarden_job_runs_total",
                &[("job", "collect"), ("result", "failed")],
            ),
            0.0,
            "{}",
            d.log()
        );
        assert!(
            Instant::now() < deadline,
            "the backfill did not finish: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pings = notify.pings();
    let gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "backfill {backfill:?}; {} watchdog pings, largest gap {gap:?}; {scrapes} scrapes during it, slowest {slowest:?}; {polls_during_backfill} polls finished during it",
        pings.len()
    );
    let log = d.log();
    assert!(!log.contains("database is locked"), "{log}");
    assert!(
        polls_during_backfill >= 2.0,
        "only {polls_during_backfill} invitation polls succeeded during the backfill:\n{log}"
    );
    assert!(
        scrapes >= 10 && pings.len() >= 10,
        "the backfill was too short to overlap ({backfill:?})"
    );
    assert!(gap < Duration::from_secs(1), "watchdog pings {gap:?} apart");
    assert!(
        slowest < Duration::from_secs(1),
        "/metrics took {slowest:?}"
    );
    d.signal(SIGTERM);
    assert!(d
        .wait_for_exit(Duration::from_secs(15))
        .expect("stop")
        .success());
    assert_matches_truth(&app, &sim, "one");
}

/// Every API request is counted when it happens, by account, endpoint and status: audit-log
/// pages while the first pass is still running, user listings and invitation polls of both APIs
/// (a CertCentral account has series of its own), and never more than the simulator served.
#[test]
fn every_request_is_counted_when_it_happens() {
    let sim = Sim::start(&[
        "--events",
        "20000",
        "--days",
        "30",
        "--seed",
        "5",
        "--faults",
        "slow=0.2,slow-ms=50",
    ]);
    let url = sim.url();
    let app = App::with_accounts(&[
        ("one", "digicert-one", url.as_str(), ""),
        ("cc", "certcentral", url.as_str(), ""),
    ]);
    app.add_config(&format!(
        "[schedule]\ncollect = \"* * * * * *\"\npoll_invites = \"* * * * * *\"\ndeliver_alerts = \"\"\n{DAEMON}"
    ));
    let d = app.start_daemon();
    let requests = |m: &[Sample], account: &str, endpoint: &str| -> f64 {
        m.iter()
            .filter(|s| {
                s.name == "auditwarden_api_requests_total"
                    && s.label("account") == Some(account)
                    && s.label("endpoint") == Some(endpoint)
            })
            .map(|s| s.value)
            .sum()
    };
    let passes = |m: &[Sample]| -> f64 {
        ["ok", "failed"]
            .iter()
            .map(|r| {
                metric(
                    m,
                    "auditwarden_job_runs_total",
                    &[("job", "collect"), ("result", r)],
                )
            })
            .sum()
    };
    // During the first pass: its audit-log requests are there already.
    let m = d.wait_metrics(Duration::from_secs(60), |m| {
        requests(m, "one", "audit_log") > 0.0
    });
    assert_eq!(
        passes(&m),
        0.0,
        "the first pass ended before its requests were seen"
    );
    // After it: the user listings of both accounts, then the invitation polls of both.
    let m = d.wait_metrics(Duration::from_secs(120), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "ok")],
        ) >= 1.0
            && ["one", "cc"]
                .iter()
                .all(|a| requests(m, a, "users") > 0.0 && requests(m, a, "user") > 0.0)
    });
    assert_eq!(requests(&m, "cc", "audit_log"), 0.0);
    // CertCentral's audit log comes through the Report Library (issue 15).
    assert!(requests(&m, "cc", "reports") > 0.0);
    // Each count is at most what the simulator answered on that route (it counts a request
    // before the client sees the response); the sum over accounts and endpoints is complete.
    let stats = sim.stats();
    let served = |route: &str| stats["routes"][route].as_f64().unwrap_or(0.0);
    let answered = |account: &str, endpoint: &str| -> f64 {
        m.iter()
            .filter(|s| {
                s.name == "auditwarden_api_requests_total"
                    && s.label("account") == Some(account)
                    && s.label("endpoint") == Some(endpoint)
                    && s.label("status") != Some("0")
            })
            .map(|s| s.value)
            .sum()
    };
    for (account, endpoint, route) in [
        ("one", "audit_log", "GET /account/api/v1/audit-log"),
        ("one", "users", "GET /account/api/v1/user"),
        ("one", "user", "GET /account/api/v1/user/{id}"),
        ("cc", "users", "GET /services/v2/user"),
        ("cc", "user", "GET /services/v2/user/{id}"),
    ] {
        let counted = answered(account, endpoint);
        assert!(
            counted > 0.0 && counted <= served(route),
            "{account} {endpoint}: counted {counted}, the simulator served {}",
            served(route)
        );
    }
    let others: f64 = m
        .iter()
        .filter(|s| s.name == "auditwarden_api_requests_total")
        .filter(|s| {
            !matches!(
                s.label("endpoint"),
                Some("audit_log" | "users" | "user" | "reports")
            )
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(others, 0.0, "requests counted under an unexpected endpoint");
}

/// A panic in one account's collection task is that account's failed pass: under the daemon
/// `/readyz` is 503 naming it and its `auditwarden_account_up` is 0; `collect` exits 1 naming it
/// and `status` shows the error; the other account collects normally throughout.
#[test]
fn a_panicking_account_task_is_that_accounts_failure() {
    let sim = Sim::start(&["--events", "300", "--days", "3"]);
    let url = sim.url();
    let app = App::with_accounts(&[
        ("one", "digicert-one", url.as_str(), ""),
        ("two", "digicert-one", url.as_str(), ""),
    ]);
    let panic_two = [("AUDITWARDEN_TEST_PANIC_ACCOUNT", "two")];
    app.add_config(&format!(
        "[schedule]\ncollect = \"* * * * * *\"\npoll_invites = \"\"\ndeliver_alerts = \"\"\n{DAEMON}"
    ));
    let mut d = app.start_daemon_with_env(&panic_two);
    let m = d.wait_metrics(Duration::from_secs(30), |m| {
        metric(
            m,
            "auditwarden_job_runs_total",
            &[("job", "collect"), ("result", "failed")],
        ) >= 1.0
    });
    assert_eq!(
        metric(&m, "auditwarden_account_up", &[("account", "one")]),
        1.0
    );
    assert_eq!(
        metric(&m, "auditwarden_account_up", &[("account", "two")]),
        0.0
    );
    let (status, body) = d.get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(
            "two: last pass failed: internal error: the collection task failed (panicked"
        ),
        "{body}"
    );
    assert!(!body.contains("one:"), "{body}");
    d.signal(SIGTERM);
    assert!(d
        .wait_for_exit(Duration::from_secs(15))
        .expect("stop")
        .success());
    drop(d);

    let mut cmd = app.command(&["collect"]);
    cmd.envs(panic_two);
    let out = cmd.output().expect("collect");
    assert_no_key(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("panicked"), "{stdout}");
    let out = app.run(&["status", "--account", "two"]);
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains("last error: internal error: the collection task failed (panicked"),
        "{status}"
    );
    assert_matches_truth(&app, &sim, "one");
}

/// Several `collect`s and `status`es started together on a fresh database: every collect
/// succeeds (each migration runs once, the writers queue), the chains verify, and a `status`
/// either reads the database or says plainly that it is not there yet: never an SQL error text.
#[test]
fn concurrent_commands_on_a_fresh_database() {
    let sim = Sim::start(&["--events", "300", "--days", "3"]);
    let app = App::new(&sim, "");
    for round in 0..3 {
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(app.db.with_extension(ext));
        }
        let children: Vec<_> = [
            "collect", "collect", "status", "collect", "collect", "status",
        ]
        .iter()
        .map(|cmd| {
            let child = app
                .command(&[cmd])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            (*cmd, child)
        })
        .collect();
        for (cmd, child) in children {
            let out = child.wait_with_output().expect("wait");
            assert_no_key(&out);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if cmd == "collect" {
                assert!(
                    out.status.success(),
                    "round {round}: collect failed:\n{stderr}"
                );
            } else {
                assert!(
                    out.status.success()
                        || stderr.contains("no database at")
                        || stderr.contains("no auditwarden schema yet: another auditwarden is probably creating it"),
                    "round {round}: status failed:\n{stderr}"
                );
            }
        }
        assert_matches_truth(&app, &sim, "one");
        let (ok, report) = app.verify(None);
        assert!(ok, "round {round}: {report}");
    }
}
