//! Collection: completeness across pages and response shapes, every fault kind, drift, late events.

use crate::helpers::*;

/// A backfill over many pages stores exactly the simulator's events; a second pass costs a few
/// requests and stores nothing new.
#[test]
fn complete_collection_across_many_pages_envelope() {
    let sim = Sim::start(&["--events", "3000", "--days", "20", "--seed", "11"]);
    let app = App::new(&sim, "");
    let first = app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    assert!(requests_in(&first, "one") > 60, "{first}");
    let second = app.collect_ok();
    assert!(second.contains("0 new events"), "{second}");
    let n = requests_in(&second, "one");
    assert!(
        n <= 4,
        "an idle pass should cost a few requests, took {n}: {second}"
    );
}

/// Bare-array responses (no total) are paged until a short page, and nothing is missed.
#[test]
fn complete_collection_with_bare_arrays() {
    let sim = Sim::start(&["--events", "2000", "--days", "15", "--faults", "bare"]);
    let app = App::new(&sim, "");
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    let again = app.collect_ok();
    assert!(again.contains("0 new events"), "{again}");
}

/// Each fault kind alone: afterwards the stored set equals the ground truth exactly.
#[test]
fn each_fault_kind_alone_loses_nothing() {
    for fault in [
        "rate-limit=0.2",
        "rate-limit-date=0.15",
        "rate-limit-bare=0.2",
        "server-error=0.2",
        "slow=0.1,slow-ms=2500",
        "truncate=0.2",
        "malformed",
        "alt-fields",
        "ignore-sort",
        "error-shapes,server-error=0.1",
    ] {
        let sim = Sim::start(&[
            "--events", "600", "--days", "6", "--seed", "3", "--faults", fault,
        ]);
        let app = App::new(&sim, "");
        let out = app.run(&["collect"]);
        assert!(
            out.status.success(),
            "fault {fault}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_matches_truth(&app, &sim, "one");
    }
}

/// Every fault at once, then a clean pass: nothing missing, nothing twice.
#[test]
fn mixed_faults_lose_nothing() {
    let sim = Sim::start(&[
        "--events", "2500", "--days", "12", "--seed", "5", "--faults", "all",
    ]);
    let app = App::new(&sim, "");
    let _ = app.run(&["collect"]);
    sim.freeze();
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
}

/// Events arriving while a client pages (newest-first order shifts offsets) are all stored by the
/// same pass, which re-reads the day it saw shift.
#[test]
fn events_arriving_during_paging_are_not_missed() {
    let sim = Sim::start(&[
        "--events",
        "2000",
        "--days",
        "5",
        "--seed",
        "8",
        "--faults",
        "ignore-sort,drift=25",
    ]);
    let app = App::new(&sim, "");
    let out = app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    assert!(
        !out.contains("(0 re-reads"),
        "drift should have forced re-reads: {out}"
    );
}

/// Late events landing in days already read are found by the next pass through totals, without
/// re-reading all of history.
#[test]
fn late_events_in_days_already_read_are_found() {
    let sim = Sim::start(&[
        "--events", "3000", "--days", "30", "--seed", "9", "--faults", "late=15",
    ]);
    let app = App::new(&sim, "");
    app.collect_ok();
    sim.freeze();
    // And some more, for certain in days the first pass has read.
    let today = chrono::Utc::now().date_naive();
    for (back, count) in [(20u64, 3), (7, 2)] {
        let day = today - chrono::Days::new(back);
        let (s, b) = sim.http(
            "POST",
            "/_sim/events",
            &format!("{{\"count\": {count}, \"day\": \"{day}\"}}"),
        );
        assert!(s < 300, "{s} {b}");
    }
    let second = app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    let new_events: u64 = second
        .split(" new events")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        new_events >= 5,
        "the late events should be found by the second pass: {second}"
    );
    let n = requests_in(&second, "one");
    assert!(
        n < 120,
        "finding late events should not re-read history ({n} requests): {second}"
    );
}

/// One failing account (rejected key) does not stop the others; the exit code says it failed.
#[test]
fn one_failing_account_does_not_stop_the_others() {
    let sim = Sim::start(&["--events", "500", "--days", "5"]);
    let app = App::with_accounts(&[
        ("good", "digicert-one", &sim.url(), ""),
        (
            "bad",
            "digicert-one",
            &sim.url(),
            "api_key_file = \"wrong.key\"",
        ),
    ]);
    std::fs::write(app.dir.path().join("wrong.key"), "not-the-key\n").unwrap();
    let out = app.run(&["collect"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("bad: FAILED, the API key was rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("good: ok"), "{stdout}");
    assert_eq!(app.stored_ids("good"), sim.truth_ids());
}

/// An expired service-user key is reported as such, distinctly from a wrong key.
#[test]
fn expired_credential_is_named() {
    let sim = Sim::start_with_env(
        &["--events", "50"],
        &[("AUDITWARDEN_SIM_EXPIRED_KEY", "expired-key-1")],
    );
    let app = App::new(&sim, "");
    let out = app
        .command(&["collect"])
        .env("TEST_API_KEY", "expired-key-1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("credential has expired"), "{stdout}");
}

/// A CertCentral account is skipped for audit logs (it has none) and `check` verifies its key.
#[test]
fn certcentral_check_and_skip() {
    let sim = Sim::start(&["--events", "50"]);
    let app = App::with_accounts(&[("cc", "certcentral", &sim.url(), "")]);
    let out = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cc (certcentral): ok"), "{stdout}");
    let collect = app.collect_ok();
    assert!(collect.contains("cc: skipped"), "{collect}");
    let bad = app
        .command(&["check"])
        .env("TEST_API_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("the API key was rejected"));
}

/// Exports stream what was stored: JSONL with the documented fields, CSV safe for spreadsheets,
/// and hostile strings round-trip exactly in JSONL.
#[test]
fn export_jsonl_and_csv() {
    let sim = Sim::start(&["--events", "800", "--days", "5", "--seed", "21"]);
    let app = App::new(&sim, "");
    app.collect_ok();
    let out = app.run(&["export", "events", "--format", "jsonl"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), sim.truth_ids().len());
    let mut hostile = 0;
    for l in &lines {
        for k in [
            "account",
            "id",
            "timestamp",
            "action",
            "resource_type",
            "resource_id",
            "actor",
            "status",
            "raw",
        ] {
            assert!(l.get(k).is_some(), "missing {k} in {l}");
        }
        assert!(l["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(l["raw"]["id"], l["id"]);
        let raw_name = l["raw"]["resource_name"].as_str();
        if let Some(n) = raw_name {
            assert_eq!(
                l["resource_name"].as_str(),
                Some(n),
                "resource_name must round-trip"
            );
            if n.contains('<') || n.starts_with('=') || n.contains('\n') {
                hostile += 1;
            }
        }
    }
    assert!(hostile > 0, "the simulator should serve hostile strings");

    let csv_path = app.dir.path().join("events.csv");
    let out = app.run(&[
        "export",
        "events",
        "--format",
        "csv",
        "--out",
        csv_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut rdr = csv::Reader::from_path(&csv_path).unwrap();
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec.unwrap();
        rows += 1;
        for cell in rec.iter() {
            assert!(
                !matches!(
                    cell.chars().next(),
                    Some('=' | '+' | '-' | '@' | '\t' | '\r')
                ),
                "formula-like cell {cell:?}"
            );
        }
    }
    assert_eq!(rows, lines.len());
}

/// `status` shows coverage, counts and the last pass per account.
#[test]
fn status_reports_coverage_and_counts() {
    let sim = Sim::start(&["--events", "300", "--days", "5", "--faults", "malformed"]);
    let app = App::new(&sim, "");
    app.collect_ok();
    let out = app.run(&["status", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v[0];
    assert_eq!(a["account"], "one");
    assert_eq!(
        a["events"].as_u64().unwrap() as usize,
        sim.truth_ids().len()
    );
    assert_eq!(
        a["quarantined"].as_u64().unwrap() as usize,
        sim.truth_malformed()
    );
    assert_eq!(a["coverage"]["complete_days"], 41);
    assert_eq!(a["coverage"]["gaps"].as_array().map(|g| g.len()), Some(0));
    assert!(a["last_error"].is_null());
    let table = app.run(&["status", "--quarantine"]);
    let t = String::from_utf8_lossy(&table.stdout);
    assert!(
        t.contains("coverage: complete ") && t.contains("(41 days)"),
        "{t}"
    );
}

/// A pass cut short by an outage leaves gaps that `status` names with their reason; the next
/// pass closes them.
#[test]
fn status_names_gaps_after_a_failed_pass_and_the_next_pass_closes_them() {
    let sim = Sim::start(&["--events", "400", "--days", "10"]);
    let app = App::new(&sim, "max_retries = 1");
    let (s, b) = sim.http("POST", "/_sim/faults", "server-error=1");
    assert!(s < 300, "{s} {b}");
    let out = app.run(&["collect"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("one: FAILED, gave up after 2 attempts"),
        "{stdout}"
    );
    let status = app.run(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let gaps = v[0]["coverage"]["gaps"].as_array().unwrap().clone();
    assert!(!gaps.is_empty());
    assert!(
        gaps.iter()
            .any(|g| g["reason"].as_str().unwrap().contains("read failed")),
        "{gaps:?}"
    );
    assert!(v[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("server error"));
    let table = String::from_utf8_lossy(&app.run(&["status"]).stdout).to_string();
    assert!(table.contains("coverage: INCOMPLETE"), "{table}");
    sim.http("POST", "/_sim/faults", "none");
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    let v: serde_json::Value =
        serde_json::from_slice(&app.run(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(
        v[0]["coverage"]["gaps"].as_array().map(|g| g.len()),
        Some(0),
        "{v}"
    );
}
