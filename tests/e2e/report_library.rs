//! CertCentral's audit log through the Report Library (issue 15): the real binary against the
//! simulator's `/reports/v1`, a real SQLite file.

use std::collections::BTreeMap;

use crate::helpers::{route_count, App, Sim};

/// The simulator's rows (every day), as a multiset of their JSON texts.
fn truth_rows(sim: &Sim) -> BTreeMap<String, usize> {
    let (status, body) = sim.http("GET", "/_sim/report-rows", "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut m = BTreeMap::new();
    for r in v["rows"].as_array().unwrap() {
        *m.entry(r.as_str().unwrap().to_string()).or_default() += 1;
    }
    m
}

/// The stored CertCentral rows (kept verbatim in `data`), as a multiset.
fn stored_rows(app: &App) -> BTreeMap<String, usize> {
    let c = rusqlite::Connection::open(&app.db).unwrap();
    let mut st = c
        .prepare("SELECT data FROM events WHERE account = 'cc'")
        .unwrap();
    let mut m = BTreeMap::new();
    for r in st.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        *m.entry(r.unwrap()).or_default() += 1;
    }
    m
}

fn assert_rows_match(app: &App, sim: &Sim) {
    let truth = truth_rows(sim);
    let stored = stored_rows(app);
    let n: usize = truth.values().sum();
    assert!(n > 0, "the simulator lists no rows");
    let missing: Vec<_> = truth
        .iter()
        .filter(|(r, k)| stored.get(*r) != Some(k))
        .take(3)
        .collect();
    let extra: Vec<_> = stored
        .iter()
        .filter(|(r, _)| !truth.contains_key(*r))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored {} rows vs truth {n}: differing {missing:?}, extra {extra:?}",
        stored.values().sum::<usize>()
    );
}

fn cc_app(sim: &Sim, extra: &str) -> App {
    App::with_accounts(&[("cc", "certcentral", &sim.url(), extra)])
}

fn runs_in(app: &App, state: &str) -> i64 {
    app.sql_count(&format!(
        "SELECT COUNT(*) FROM report_runs WHERE account = 'cc' AND state = '{state}'"
    ))
}

/// A 40-day backfill through several reports, with ZIP files and split parts, stores every row
/// exactly once (identical rows included), chained; a second pass whose report overlaps the
/// first stores only the rows that arrived since.
#[test]
fn certcentral_audit_log_exactly_once_with_zip_and_parts() {
    let sim = Sim::start(&[
        "--events",
        "3000",
        "--faults",
        "report-zip-kb=16,report-split-rows=150",
    ]);
    let app = cc_app(&sim, "");
    let out = app.collect_ok();
    assert!(out.contains("cc: ok"), "{out}");
    assert_rows_match(&app, &sim);
    let truth = truth_rows(&sim);
    assert!(
        truth.values().any(|k| *k > 1),
        "the simulator lists identical rows"
    );
    let stats = sim.stats();
    let created = route_count(&stats, "POST /reports/v1/report");
    let downloads = route_count(&stats, "GET /reports/v1/report/{id}/{run}/download");
    assert!(created >= 6, "41 days in reports of 7 days: {created}");
    assert!(
        downloads > created,
        "split parts: {downloads} downloads of {created} runs"
    );
    assert_eq!(runs_in(&app, "done"), created as i64);

    // Rows arrive today; the next pass's report (today and yesterday) overlaps the first.
    let (s, b) = sim.http("POST", "/_sim/events", r#"{"count": 40}"#);
    assert_eq!(s, 200, "{b}");
    let before = app.sql_count("SELECT COUNT(*) FROM events WHERE account = 'cc'");
    let out = app.collect_ok();
    assert!(out.contains("cc: ok"), "{out}");
    assert_rows_match(&app, &sim);
    let after = app.sql_count("SELECT COUNT(*) FROM events WHERE account = 'cc'");
    assert!(after > before, "{before} -> {after}");
    assert!(out.contains("already stored"), "{out}");
    let (ok, text) = app.verify(None);
    assert!(ok, "{text}");
    // Sign-ins feed last activity like DigiCert ONE's.
    assert!(
        app.sql_count(
            "SELECT COUNT(*) FROM events WHERE account = 'cc' AND action = 'login' AND status = 'failure'"
        ) > 0
    );
}

/// A run that is not ready when the pass stops waiting stays pending in the store; the next pass
/// picks up the same run (no new report for its days) and stores its rows once.
#[test]
fn pending_report_run_is_picked_up_by_the_next_pass() {
    let sim = Sim::start(&["--events", "400", "--faults", "report-polls=1000"]);
    let app = cc_app(&sim, "");
    let out = app.collect_ok();
    assert!(out.contains("cc: ok"), "{out}");
    let created = route_count(&sim.stats(), "POST /reports/v1/report");
    assert!(created >= 6, "{created}");
    assert_eq!(runs_in(&app, "pending"), created as i64, "{out}");
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM events WHERE account = 'cc'"),
        0
    );
    let status = String::from_utf8_lossy(&app.run(&["status"]).stdout).to_string();
    assert!(
        status.contains(&format!("report runs pending: {created}")),
        "{status}"
    );

    let (s, b) = sim.http("POST", "/_sim/faults", "report-polls=1");
    assert_eq!(s, 200, "{b}");
    app.collect_ok();
    assert_eq!(
        route_count(&sim.stats(), "POST /reports/v1/report"),
        created,
        "the pending run was picked up, not created again"
    );
    assert_eq!(runs_in(&app, "pending"), 0);
    assert_eq!(runs_in(&app, "done"), created as i64);
    assert_rows_match(&app, &sim);
    // Coverage: the 40 days of the backfill from finished runs; today is asked again, since the
    // resumed run was made before today ended.
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM coverage WHERE account = 'cc' AND complete = 1"),
        40
    );
    let status = String::from_utf8_lossy(&app.run(&["status"]).stdout).to_string();
    assert!(
        status.contains("before this day ended; asked again"),
        "{status}"
    );
}

/// A FAILED run is recorded and its days are requested again in the same pass.
#[test]
fn failed_report_run_is_retried() {
    let sim = Sim::start(&["--events", "300", "--faults", "report-failed=1"]);
    let app = cc_app(&sim, "");
    let out = app.run(&["collect"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("report_run_failed"), "{stderr}");
    let created = route_count(&sim.stats(), "POST /reports/v1/report");
    assert_eq!(runs_in(&app, "failed"), 1);
    assert_eq!(runs_in(&app, "done"), created as i64 - 1);
    assert_rows_match(&app, &sim);
}

/// A key without the Administrator role: a clear message in `collect` and `check`, no failure,
/// and the account's users are still tracked from snapshots.
#[test]
fn non_admin_key_tracks_from_snapshots() {
    let sim = Sim::start_with_env(
        &["--events", "100"],
        &[("AUDITWARDEN_SIM_NON_ADMIN_KEY", "limited-user-key")],
    );
    let app = cc_app(&sim, "api_key_env = \"LIMITED_KEY\"\n");
    let out = app
        .command(&["collect"])
        .env("LIMITED_KEY", "limited-user-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "cc: skipped, this key cannot read the CertCentral audit log (Administrator role needed)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("cc users: ok"), "{stdout}");
    assert!(app.sql_count("SELECT COUNT(*) FROM users WHERE account = 'cc'") > 0);
    let check = app
        .command(&["check"])
        .env("LIMITED_KEY", "limited-user-key")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("audit log: WARNING this key cannot read the CertCentral audit log"),
        "{text}"
    );
}

/// `status` warns when the audit log has not been collected for long enough that the service's
/// 90 days of runs would lose history; `audit_log = false` skips it with a reason.
#[test]
fn status_warns_before_history_is_lost() {
    let sim = Sim::start(&["--events", "100"]);
    let app = cc_app(&sim, "");
    app.collect_ok();
    let now = crate::helpers::now();
    let fresh = String::from_utf8_lossy(&app.run(&["status"]).stdout).to_string();
    assert!(!fresh.contains("WARNING"), "{fresh}");
    let later = (now + chrono::Duration::days(70)).to_rfc3339();
    let out = app
        .command(&["status"])
        .env("AUDITWARDEN_NOW", &later)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("WARNING: the audit log was last collected 70 days ago; CertCentral keeps report runs 90 days"),
        "{text}"
    );
    let off = cc_app(&sim, "audit_log = false\n");
    let out = off.collect_ok();
    assert!(out.contains("cc: skipped, audit_log = false"), "{out}");
}

/// CertCentral's failed sign-ins (Report Library rows) feed the `failed-sign-ins` rule: each
/// burst of N failures of one user within M minutes is one alert, whose evidence is those stored
/// events, and a second pass (re-reading the same failures) writes none twice.
#[test]
fn failed_sign_in_bursts_raise_one_alert_each() {
    let sim = Sim::start(&["--events", "3000", "--users", "8"]);
    let app = cc_app(&sim, "");
    let mut text = std::fs::read_to_string(&app.config).unwrap();
    text.push_str(
        "\n[alerts]\nbackfill_horizon_hours = 240\n\n[[alerts.rules]]\nname = \"cc-failed\"\nkind = \"failed-sign-ins\"\ncount = 2\nwindow_minutes = 1440\nseverity = \"medium\"\n",
    );
    std::fs::write(&app.config, text).unwrap();
    app.collect_ok();
    let alerts = app.sql_count("SELECT COUNT(*) FROM alerts WHERE rule = 'cc-failed'");
    assert!(alerts >= 1, "no burst of failed sign-ins raised an alert");
    let c = rusqlite::Connection::open(&app.db).unwrap();
    let mut st = c
        .prepare("SELECT payload FROM alerts WHERE rule = 'cc-failed'")
        .unwrap();
    let payloads: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for p in &payloads {
        let v: serde_json::Value = serde_json::from_str(p).unwrap();
        assert_eq!(v["rule_kind"], "failed-sign-ins", "{v}");
        let ids = v["evidence"]["event_ids"].as_array().unwrap();
        assert!(ids.len() >= 2, "{v}");
        let mut times = Vec::new();
        for id in ids {
            let (actor, action, status, ts): (String, String, String, i64) = c
                .query_row(
                    "SELECT actor_id, action, status, ts_ms FROM events WHERE account = 'cc' AND event_id = ?1",
                    [id.as_str().unwrap()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .unwrap();
            assert_eq!((action.as_str(), status.as_str()), ("login", "failure"));
            assert_eq!(serde_json::json!(actor), v["target"]["id"], "{v}");
            times.push(ts);
        }
        let span = times.iter().max().unwrap() - times.iter().min().unwrap();
        assert!(span <= 1440 * 60_000, "{v}");
    }
    app.collect_ok();
    assert_eq!(
        app.sql_count("SELECT COUNT(*) FROM alerts WHERE rule = 'cc-failed'"),
        alerts,
        "a second pass wrote an alert twice"
    );
}

/// A pass killed (`kill -9`) while it downloads a run's files leaves that run pending; the next
/// pass downloads the same run again (no new report) and stores every row exactly once.
#[test]
fn a_kill_during_a_download_resumes_the_same_run() {
    let sim = Sim::start(&[
        "--events",
        "3000",
        "--faults",
        "report-polls=1000,report-split-rows=60,report-zip-kb=4",
    ]);
    let app = cc_app(&sim, "");
    app.collect_ok();
    let created = route_count(&sim.stats(), "POST /reports/v1/report");
    assert_eq!(runs_in(&app, "pending"), created as i64);

    // Ready now, but every request takes 300 ms: the downloads of the parts take seconds.
    let (s, b) = sim.http(
        "POST",
        "/_sim/faults",
        "report-polls=1,report-split-rows=60,report-zip-kb=4,slow=1,slow-ms=300",
    );
    assert_eq!(s, 200, "{b}");
    let mut child = app
        .command(&["collect"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while app.sql_count("SELECT COUNT(*) FROM events WHERE account = 'cc'") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no rows stored within 60 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "collect ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = app.sql_count("SELECT COUNT(*) FROM events WHERE account = 'cc'");
    assert!(stored > 0);
    assert!(
        runs_in(&app, "pending") > 0,
        "the kill came after every run was done"
    );

    let (s, b) = sim.http(
        "POST",
        "/_sim/faults",
        "report-polls=1,report-split-rows=60",
    );
    assert_eq!(s, 200, "{b}");
    app.collect_ok();
    assert_eq!(
        route_count(&sim.stats(), "POST /reports/v1/report"),
        created,
        "the runs were resumed, not created again"
    );
    assert_eq!(runs_in(&app, "pending"), 0);
    assert_rows_match(&app, &sim);
    let (ok, text) = app.verify(None);
    assert!(ok, "{text}");
}
