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
///
/// One day at a time: `all` serves bare arrays (no totals), and a `late` event put into an old day
/// that was already read cannot be seen without totals (ARCHITECTURE: bare-array servers' old days
/// are not re-checked); reading newest-first one day at a time, this seed's late events land in
/// days not read yet. Concurrent reads are covered by `backfill_reads_concurrent_windows_days_at_once`.
#[test]
fn mixed_faults_lose_nothing() {
    let sim = Sim::start(&[
        "--events", "2500", "--days", "12", "--seed", "5", "--faults", "all",
    ]);
    let app = App::new(&sim, "concurrent_windows = 1");
    let _ = app.run(&["collect"]);
    sim.freeze();
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
}

/// Events arriving while a client pages (newest-first order shifts offsets) push items to higher
/// offsets and never skip one: no day is re-read, every day is complete after the first pass, and
/// the arrivals themselves are picked up by the next pass.
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
    let first = app.collect_ok();
    assert!(first.contains("(0 re-reads, 0 left incomplete)"), "{first}");
    assert_eq!(
        sim.stats()["arrivals"]["drift"],
        25,
        "the drift fault did not fire"
    );
    let status = app.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(!status.contains("INCOMPLETE"), "{status}");
    let second = app.collect_ok();
    assert!(second.contains("(0 re-reads"), "{second}");
    assert_matches_truth(&app, &sim, "one");
}

/// Audit-log requests the simulator served so far.
fn audit_requests(sim: &Sim) -> u64 {
    sim.stats()["routes"]
        .as_object()
        .expect("routes")
        .iter()
        .filter(|(k, _)| k.contains("audit-log"))
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum()
}

/// A busy account on a server that serves newest first whatever `sort` says, with an event
/// arriving on every request: today completes in one read per pass, with no re-read, and `status`
/// shows every day complete.
#[test]
fn busy_newest_first_account_completes_today_in_one_read() {
    let sim = Sim::start(&[
        "--events",
        "200",
        "--days",
        "5",
        "--seed",
        "21",
        "--faults",
        "ignore-sort,busy",
    ]);
    // Pages larger than a busy day, so that reading today is one request.
    let app = App::new(&sim, "page_size = 500\n");
    let first = app.collect_ok();
    assert!(first.contains("(0 re-reads, 0 left incomplete)"), "{first}");
    for pass in 0..3 {
        let before = audit_requests(&sim);
        let out = app.collect_ok();
        let n = audit_requests(&sim) - before;
        // Probe today (moved), read it (one page: under 50 events), probe yesterday, probe the
        // older days: four requests.
        assert!(n <= 4, "pass {pass}: {n} audit-log requests: {out}");
        assert!(out.contains("(0 re-reads, 0 left incomplete)"), "{out}");
        let status = app.run(&["status"]);
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(!status.contains("INCOMPLETE"), "pass {pass}: {status}");
    }
    assert!(sim.stats()["arrivals"]["busy"].as_u64().unwrap_or(0) >= 10);
    // Everything but the arrivals of the last pass's own requests is stored.
    sim.freeze();
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
}

/// Servers that would page for ever: the same page whatever the offset, a total that lies, new
/// ids on every page. Each read stops with an error naming the account, the day and the reason;
/// the pass ends, and a healthy account in the same run is collected completely.
#[test]
fn endless_pages_end_the_pass_with_a_clear_error() {
    let healthy = Sim::start(&["--events", "300", "--days", "5", "--seed", "4"]);
    for (faults, reason) in [
        ("repeat-pages", "does not honour offset"),
        ("repeat-pages,lying-total", "does not honour offset"),
        ("endless", "past the day's total"),
        ("endless,lying-total", "max_pages_per_window = 40"),
    ] {
        let hostile = Sim::start(&["--events", "300", "--days", "5", "--faults", faults]);
        let extra = "max_pages_per_window = 40\n";
        let app = App::with_accounts(&[
            ("bad", "digicert-one", hostile.url().as_str(), extra),
            ("good", "digicert-one", healthy.url().as_str(), extra),
        ]);
        let out = app.command(&["collect"]).output().expect("run collect");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{faults}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("FAILED, account bad, day 2026-11-") && stdout.contains(reason),
            "{faults}: {stdout}"
        );
        // At most one read's worth of requests per concurrent window (the default 4): 40 pages
        // each, plus user listings.
        let served = audit_requests(&hostile);
        assert!(
            served <= 4 * 40 + 1,
            "{faults}: {served} audit-log requests"
        );
        assert_matches_truth(&app, &healthy, "good");
        let status = app.run(&["status", "--account", "bad"]);
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(status.contains(reason), "{faults}: {status}");
    }
}

/// A server that says a day holds more events than it will page out (a deep-offset cap, or a
/// total that lies): the day is read twice, not six times, and stays incomplete with the reason.
#[test]
fn a_total_the_server_cannot_page_to_is_read_twice_not_six_times() {
    let sim = Sim::start(&["--events", "100", "--days", "2", "--faults", "lying-total"]);
    let app = App::new(&sim, "");
    let out = app.run(&["collect"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // 41 days, each read twice: empty days in one request a read, the two or three days with
    // events in at most three (a page, the empty page after it). Six reads of each day (the old
    // rule) would take over 246 requests.
    let n = audit_requests(&sim);
    assert!(n <= 41 * 2 + 3 * 2 * 2, "{n} audit-log requests: {stdout}");
    assert!(
        stdout.contains("(41 re-reads, 41 left incomplete)"),
        "{stdout}"
    );
    let status = app.run(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("cannot page to its own total"), "{status}");
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
    let today = today();
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

/// A CertCentral account: `check` verifies its key and that it can read the audit log, which
/// `collect` gathers through the Report Library (issue 15; it used to be skipped).
#[test]
fn certcentral_check_and_skip() {
    let sim = Sim::start(&["--events", "50"]);
    let app = App::with_accounts(&[("cc", "certcentral", &sim.url(), "")]);
    let out = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("cc (certcentral): ok"), "{stdout}");
    assert!(
        stdout.contains("audit log: readable through the Report Library"),
        "{stdout}"
    );
    let collect = app.collect_ok();
    assert!(collect.contains("cc: ok"), "{collect}");
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

/// A server that answers 429 above N requests/s, with `Retry-After: 1` (DigiCert ONE publishes no
/// limit, so the client starts with no cap): the client learns a pace near N, draws few 429s and
/// loses nothing.
#[test]
fn adaptive_pace_settles_near_the_server_limit() {
    let sim = Sim::start(&[
        "--events",
        "8000",
        "--days",
        "10",
        "--seed",
        "12",
        "--faults",
        "rate-cap=15",
    ]);
    let app = App::new(&sim, "");
    let out = app.collect_ok();
    assert_matches_truth(&app, &sim, "one");
    let stats = sim.stats();
    let limited = stats["statuses"]["429"].as_u64().unwrap_or(0);
    let total = stats["requests"].as_u64().expect("requests");
    assert!(limited > 0, "the cap was never hit: {out}");
    // Finding the limit from an uncapped start costs a few 429s (each hard cut is 0.6, from a
    // first estimate up to ~10x the limit: about five cuts, each with up to `concurrent_windows`
    // requests in flight); after that a probe past the limit now and then. A storm (a 429 for
    // every few requests, as a client that ignores Retry-After or bursts after a stall draws)
    // is far above this bound.
    let allowed = 12 + total / 50;
    assert!(
        limited <= allowed,
        "{limited} 429s in {total} requests (at most {allowed}): {out}"
    );
    let pace: f64 = out
        .split("pace settled at ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pace in {out}"));
    assert!(
        (9.0..=19.5).contains(&pace),
        "pace {pace}/s for a cap of 15/s: {out}"
    );
    // `status` says what the pass converged to, as the pass did.
    let status: serde_json::Value =
        serde_json::from_slice(&app.run(&["status", "--format", "json"]).stdout).unwrap();
    let one = &status[0];
    let stored = one["pace_rps"]
        .as_f64()
        .unwrap_or_else(|| panic!("{status}"));
    assert!((stored - pace).abs() < 0.06, "{stored} vs {pace}");
    assert!(one["rate_limited"].as_u64().unwrap_or(0) > 0, "{status}");
    let text = String::from_utf8_lossy(&app.run(&["status"]).stdout).into_owned();
    assert!(
        text.contains(&format!("pace settled at {pace:.1} requests/s")),
        "{text}"
    );
    eprintln!("adaptive pace: {pace}/s for a cap of 15/s, {limited} 429s in {total} requests");
}

/// A backfill reads up to `concurrent_windows` days at once and no more: against a server that
/// answers every request slowly, it sees exactly that many audit-log requests at a time (one with
/// `concurrent_windows = 1`), and the stored set is the truth either way.
#[test]
fn backfill_reads_concurrent_windows_days_at_once() {
    for width in [3u64, 1] {
        let sim = Sim::start(&[
            "--events",
            "600",
            "--days",
            "12",
            "--seed",
            "21",
            "--faults",
            "slow=1,slow-ms=150",
        ]);
        let app = App::new(&sim, &format!("concurrent_windows = {width}"));
        let out = app.collect_ok();
        assert_matches_truth(&app, &sim, "one");
        let most = sim.stats()["max_in_flight"]
            .as_u64()
            .expect("max_in_flight");
        assert_eq!(most, width, "concurrent_windows = {width}: {out}");
    }
}

/// `[collection] max_concurrent_accounts` bounds how many accounts one pass works at once: six
/// accounts with keys of their own (one world, slow responses so their requests overlap), at
/// most two keys in flight at the simulator at any moment, every account complete; without the
/// setting (default 8) the same six overlap further.
#[test]
fn a_pass_works_at_most_max_concurrent_accounts_at_once() {
    let keys: Vec<String> = (0..6)
        .map(|i| format!("sk-slots-{i:02}-51d0-PLANTED"))
        .collect();
    let sim = Sim::start_with_env(
        &[
            "--events",
            "600",
            "--days",
            "4",
            "--seed",
            "23",
            "--faults",
            "slow=1.0,slow-ms=40",
        ],
        &[("AUDITWARDEN_SIM_EXTRA_KEYS", &keys.join(","))],
    );
    let url = sim.url();
    let key_dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("acct{i:02}")).collect();
    let limited = App::with_keyed_accounts(&url, &keys, key_dir.path(), "acct");
    let text = std::fs::read_to_string(&limited.config).unwrap();
    std::fs::write(
        &limited.config,
        text.replacen(
            "[collection]\n",
            "[collection]\nmax_concurrent_accounts = 2\n",
            1,
        ),
    )
    .unwrap();
    limited.collect_ok();
    for n in &names {
        assert_matches_truth(&limited, &sim, n);
    }
    let at_once = sim.stats()["max_keys_in_flight"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&at_once),
        "{at_once} accounts were worked at once with max_concurrent_accounts = 2"
    );

    // The default lets all six run together: the bound above is the setting's doing.
    let open = App::with_keyed_accounts(&url, &keys, key_dir.path(), "acct");
    open.collect_ok();
    for n in &names {
        assert_matches_truth(&open, &sim, n);
    }
    let at_once = sim.stats()["max_keys_in_flight"].as_u64().unwrap();
    assert!(
        at_once >= 3,
        "only {at_once} keys in flight at once by default"
    );
}
