//! Compliance reports from a database the simulator filled: they match what the simulator did,
//! hostile strings stay exact in JSON, are escaped in HTML (checked in headless Chromium) and are
//! neutralized in CSV (checked in LibreOffice), and `reports run` writes a verifiable set.
//! The browser and spreadsheet tests skip when the tool is missing, except under CI (`CI` set),
//! where a missing tool fails them: `.ci/run` installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// Accounts `one` (DigiCert ONE) and `cc` (CertCentral) on `sim`, with `reports` appended.
fn app_with_reports(sim: &Sim, reports: &str) -> App {
    let url = sim.url();
    let app = App::with_accounts(&[
        ("one", "digicert-one", url.as_str(), ""),
        ("cc", "certcentral", url.as_str(), ""),
    ]);
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str(&format!("\n[reports]\n{reports}\n"));
    std::fs::write(&app.config, text).expect("write config");
    app
}

fn report_json(app: &App, args: &[&str]) -> Value {
    let mut all = vec!["report"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    serde_json::from_str(&run_ok(app, &all)).expect("report json")
}

fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().expect("rows")
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time"))
        .expect("rfc3339")
        .timestamp_millis()
}

/// Grants, revokes, sign-ins and invitations made on the simulator come back in the reports: each
/// role change with its audit event, each user's last activity equal to their latest successful
/// event in the simulator's log, dormancy computed from it, and the invitation pending and the one
/// accepted with its time to accept.
#[test]
fn reports_match_what_the_simulator_did() {
    let sim = Sim::start(&[
        "--users", "30", "--events", "600", "--days", "6", "--seed", "33",
    ]);
    let app = app_with_reports(&sim, "dormant_days = 2\ntime_zone = \"America/New_York\"");
    app.collect_ok();
    let users = sim.truth()["users"]["digicert_one"]
        .as_array()
        .expect("users")
        .clone();
    let target = users
        .iter()
        .skip(2)
        .find(|u| {
            u["status"] == "ACTIVE"
                && u["roles"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && !r.iter().any(|x| x == "AM_ACCOUNT_ADMIN"))
        })
        .expect("an active non-admin");
    let id = target["id"].as_str().expect("id").to_string();
    let old_role = target["roles"][0].as_str().expect("role").to_string();
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{id}/grant"),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{id}/revoke"),
        &format!(r#"{{"role":"{old_role}"}}"#),
    );
    let pending = control(
        &sim,
        "POST",
        "/_sim/users",
        r#"{"kind":"digicert-one","user_name":"still.pending","status":"PENDING","roles":["AM_VIEW_ONLY"]}"#,
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    let accepting = control(
        &sim,
        "POST",
        "/_sim/users",
        r#"{"kind":"digicert-one","user_name":"will.accept","status":"PENDING","roles":["AM_VIEW_ONLY"]}"#,
    )["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.collect_ok();
    control(&sim, "POST", &format!("/_sim/users/{accepting}/accept"), "");
    run_ok(&app, &["poll-invites"]);
    app.collect_ok();

    // Role changes: the grant and the revoke, each with the audit event that made it.
    let rc = report_json(&app, &["role-changes"]);
    assert_eq!(rc["display_time_zone"], "America/New_York");
    assert!(
        rc["complete"].as_bool().expect("complete"),
        "{}",
        rc["accounts"]
    );
    let truth = sim.truth();
    let events: BTreeMap<String, Value> = truth["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["id"].as_str().expect("id").to_string(), e.clone()))
        .collect();
    for (role, change) in [
        ("AM_ACCOUNT_ADMIN", "granted"),
        (old_role.as_str(), "revoked"),
    ] {
        let r = rows(&rc)
            .iter()
            .find(|r| r["user_id"] == id.as_str() && r["role"] == role && r["change"] == change)
            .unwrap_or_else(|| panic!("no {change} {role} in {rc}"));
        assert_eq!(r["actor_name"], "admin");
        let ev = r["event_id"].as_str().expect("event id");
        assert_eq!(r["evidence"], format!("audit event {ev}"));
        let e = events.get(ev).expect("the evidence is a simulator event");
        assert_eq!(ms(&e["timestamp"]), ms(&r["when"]));
        assert_eq!(e["resource_id"], id.as_str());
        assert_eq!(ms(&r["when_local"]), ms(&r["when"]));
    }
    // Every row with evidence is a real event of the simulator naming that user and role.
    for r in rows(&rc) {
        if let Some(ev) = r["event_id"].as_str() {
            let e = events
                .get(ev)
                .unwrap_or_else(|| panic!("unknown event {ev}"));
            assert_eq!(e["resource_id"], r["user_id"]);
        }
    }

    // Last activity: each user's latest successful event as actor, in the simulator's log.
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for e in events.values() {
        if e["status"] == "failure" {
            continue;
        }
        if let Some(actor) = e["user_id"].as_str() {
            let t = ms(&e["timestamp"]);
            let slot = latest.entry(actor.to_string()).or_insert(t);
            *slot = (*slot).max(t);
        }
    }
    let review = report_json(&app, &["access-review", "--account", "one"]);
    let listed: BTreeSet<String> = rows(&review)
        .iter()
        .map(|r| r["user_id"].as_str().expect("id").to_string())
        .collect();
    let truth_ids: BTreeSet<String> = sim.truth()["users"]["digicert_one"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        listed, truth_ids,
        "access review lists exactly the current users"
    );
    for r in rows(&review) {
        let uid = r["user_id"].as_str().expect("id");
        match latest.get(uid) {
            Some(t) => assert_eq!(ms(&r["last_activity"]), *t, "{r}"),
            None => assert!(r["last_activity"].is_null(), "{r}"),
        }
        if uid == id {
            assert!(r["roles"]
                .as_array()
                .expect("roles")
                .iter()
                .any(|x| x == "AM_ACCOUNT_ADMIN"));
            assert_eq!(r["privileged"], true);
        }
    }
    // Privileged first.
    let privs: Vec<bool> = rows(&review)
        .iter()
        .map(|r| r["privileged"].as_bool().expect("bool"))
        .collect();
    assert!(privs.windows(2).all(|w| w[0] >= w[1]), "{privs:?}");

    // Dormant (2 days): exactly the users whose latest activity (or, never active, creation or
    // invitation) is at least 2 days old.
    let dormant = report_json(&app, &["dormant", "--account", "one"]);
    assert_eq!(dormant["parameters"]["dormant_days"], 2);
    let now = now().timestamp_millis();
    let cut = now - 2 * 86_400_000;
    for r in rows(&review) {
        let uid = r["user_id"].as_str().expect("id");
        let is_dormant = rows(&dormant).iter().any(|d| d["user_id"] == uid);
        if let Some(t) = latest.get(uid) {
            assert_eq!(is_dormant, *t <= cut, "{uid}: last activity {t}, cut {cut}");
        }
    }
    for d in rows(&dormant) {
        assert!(d["days_inactive"].as_i64().expect("days") >= 2, "{d}");
    }

    // Invitations: one still pending (not stale), one accepted with its time to accept.
    let inv = report_json(&app, &["invitations", "--account", "one"]);
    let p = rows(&inv)
        .iter()
        .find(|r| r["user_id"] == pending.as_str())
        .expect("pending row");
    assert_eq!(
        (p["state"].as_str(), p["stale"].as_bool()),
        (Some("pending"), Some(false))
    );
    let a = rows(&inv)
        .iter()
        .find(|r| r["user_id"] == accepting.as_str())
        .expect("accepted row");
    assert_eq!(a["state"], "accepted");
    let secs = a["time_to_accept_secs"].as_i64().expect("secs");
    assert_eq!(secs, (ms(&a["accepted"]) - ms(&a["invited"])).max(0) / 1000);
}

/// Hostile user names added to the simulator for the browser and spreadsheet tests.
const PLANTED: &[&str] = &[
    "<script>document.documentElement.setAttribute('data-pwned','script')</script>",
    "<img src=x onerror=\"document.documentElement.setAttribute('data-pwned','img')\">",
    "=HYPERLINK(\"http://evil.example/\",\"click\")",
    "@SUM(1+1)*cmd|' /C calc'!A0",
];

fn hostile_app() -> (Sim, App) {
    let sim = Sim::start(&[
        "--users", "40", "--events", "400", "--days", "5", "--seed", "7",
    ]);
    for (i, name) in PLANTED.iter().enumerate() {
        let body = serde_json::json!({
            "kind": "digicert-one", "user_name": name, "status": "ACTIVE",
            "roles": [if i % 2 == 0 { "AM_ACCOUNT_ADMIN" } else { "AM_VIEW_ONLY" }],
        });
        let u = control(&sim, "POST", "/_sim/users", &body.to_string());
        let id = u["id"].as_str().expect("id");
        control(
            &sim,
            "POST",
            &format!("/_sim/users/{id}/grant"),
            r#"{"role":"TLM_ADMIN"}"#,
        );
    }
    let app = app_with_reports(&sim, "time_zone = \"Europe/Berlin\"\ndormant_days = 1");
    app.collect_ok();
    (sim, app)
}

fn chromium(bin: &Path, profile: &Path, args: &[&str], page: &Path) -> (String, String) {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Each HTML report, rendered by headless Chromium: every row is there, the hostile names show
/// as text, no script or handler from the data ran (our sort script did), the console is clean;
/// a screenshot of each is kept under target/tmp/report-screenshots/.
#[test]
fn html_reports_render_safely_in_chromium() {
    let Some(bin) = tool("chromium", "html_reports_render_safely_in_chromium") else {
        return;
    };
    let (_sim, app) = hostile_app();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let page = app.dir.path().join(format!("{kind}.html"));
        run_ok(
            &app,
            &["report", kind, "--out", page.to_str().expect("path")],
        );
        let json = report_json(&app, &[kind]);
        let n = rows(&json).len();
        let profile = app.dir.path().join(format!("chromium-{kind}"));
        let (dom, log) = chromium(&bin, &profile, &["--dump-dom"], &page);
        assert!(
            dom.contains("data-sort-ready=\"1\""),
            "{kind}: our script did not run"
        );
        // The names mention data-pwned as text; only a script would make it an attribute.
        assert!(
            !dom.contains("data-pwned=\""),
            "{kind}: a script from the data ran"
        );
        assert_eq!(
            dom.matches("<script").count(),
            1,
            "{kind}: a script element from the data"
        );
        assert!(!dom.contains("<img"), "{kind}: an element from the data");
        let body_rows = dom.split("<tbody>").nth(1).map_or(0, |b| {
            b.split("</tbody>")
                .next()
                .unwrap_or("")
                .matches("<tr")
                .count()
        });
        assert_eq!(body_rows, n, "{kind}: rendered rows vs JSON rows");
        let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
        assert!(console.is_empty(), "{kind}: console messages: {console:#?}");
        if kind == "access-review" {
            for name in PLANTED {
                let shown = name
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                assert!(dom.contains(&shown), "{kind}: {name} not shown as text");
            }
        }
        let shot = shots.join(format!("{kind}.png"));
        let profile = app.dir.path().join(format!("chromium-shot-{kind}"));
        let shot_arg = format!("--screenshot={}", shot.display());
        chromium(
            &bin,
            &profile,
            &["--window-size=1400,1100", "--hide-scrollbars", &shot_arg],
            &page,
        );
        assert!(std::fs::metadata(&shot)
            .map(|m| m.len() > 10_000)
            .unwrap_or(false));
    }
}

/// LibreOffice opens each CSV report with no cell turned into a formula (a control file shows it
/// would have made one), and the hostile names are there as text.
#[test]
fn csv_reports_have_no_formulas_in_libreoffice() {
    let Some(bin) = tool("soffice", "csv_reports_have_no_formulas_in_libreoffice") else {
        return;
    };
    let (_sim, app) = hostile_app();
    let dir = app.dir.path();
    let control_csv = dir.join("control.csv");
    std::fs::write(&control_csv, "a,b\r\n=1+1,x\r\n").expect("control");
    let mut inputs = vec![control_csv];
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let p = dir.join(format!("{kind}.csv"));
        run_ok(&app, &["report", kind, "--out", p.to_str().expect("path")]);
        inputs.push(p);
    }
    let out_dir = dir.join("lo");
    let profile = format!(
        "-env:UserInstallation=file://{}",
        dir.join("lo-profile").display()
    );
    let out = Command::new(bin)
        .arg(&profile)
        .args([
            "--headless",
            "--infilter=CSV:44,34,76,1",
            "--convert-to",
            "fods",
            "--outdir",
        ])
        .arg(&out_dir)
        .args(&inputs)
        .output()
        .expect("run soffice");
    assert!(out.status.success(), "soffice failed: {out:?}");
    let read = |name: &str| {
        std::fs::read_to_string(out_dir.join(format!("{name}.fods")))
            .unwrap_or_else(|e| panic!("{name}.fods: {e}: {out:?}"))
    };
    assert!(
        read("control").contains("table:formula="),
        "the control made no formula"
    );
    let mut seen = String::new();
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let doc = read(kind);
        assert!(
            !doc.contains("table:formula"),
            "{kind}: a cell became a formula"
        );
        seen.push_str(&doc);
    }
    for needle in ["HYPERLINK(", "@SUM(1+1)", "data-pwned"] {
        assert!(seen.contains(needle), "{needle} not in the spreadsheet");
    }
}

/// `reports run` writes every configured report into a date-stamped directory atomically, with a
/// manifest whose SHA-256 values match the files; an old run is removed by retention.
#[test]
fn reports_run_writes_a_verifiable_set() {
    let sim = Sim::start(&["--users", "10", "--events", "100", "--days", "3"]);
    let app = app_with_reports(
        &sim,
        "kinds = [\"role-changes\", \"dormant\"]\nformats = [\"csv\", \"json\"]\nretention_days = 30\noutput_dir = \"out\"",
    );
    app.collect_ok();
    let old = app.dir.path().join("out/2020-01-01T060000Z");
    std::fs::create_dir_all(&old).expect("old run");
    let keep = app.dir.path().join("out/notes");
    std::fs::create_dir_all(&keep).expect("other dir");
    let stdout = run_ok(&app, &["reports", "run"]);
    let runs: Vec<PathBuf> = std::fs::read_dir(app.dir.path().join("out"))
        .expect("out")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        !old.exists() && keep.exists(),
        "retention: {runs:?}\n{stdout}"
    );
    let run = runs.iter().find(|p| **p != keep).expect("run dir");
    let stamp = run.file_name().expect("name").to_string_lossy().to_string();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let files = manifest["files"].as_array().expect("files");
    assert_eq!(files.len(), 4);
    let mut names: Vec<String> = Vec::new();
    for f in files {
        let name = f["file"].as_str().expect("file");
        assert!(name.contains(&stamp), "{name} is not date-stamped");
        let bytes = std::fs::read(run.join(name)).expect("report file");
        assert_eq!(f["sha256"], hex::encode(Sha256::digest(&bytes)));
        assert_eq!(f["bytes"], bytes.len());
        names.push(name.to_string());
    }
    names.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(run)
        .expect("run")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n != "manifest.json")
        .collect();
    on_disk.sort();
    assert_eq!(names, on_disk, "no temporary files left, nothing unlisted");
}
