//! Access-review campaigns through the real binary against the simulator: start (a frozen
//! population with its SHA-256), export (CSV and XLSX), import (all or nothing, self-review and
//! own-grant refused and named, unknown and altered rows refused with nothing recorded,
//! re-import idempotent, a changed decision kept in history), revocations carried out in the
//! simulator seen as done after the next collection, close (a signed package that
//! `verify-report` passes, and fails once a decision is edited in the database), LibreOffice
//! opening the XLSX with its drop-down, Chromium rendering the package page.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use auditwarden::store::PgTarget;

use crate::helpers::*;
use crate::postgres::PgDb;

fn run(app: &App, args: &[&str]) -> (bool, String, String) {
    let out = app.run(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn run_ok(app: &App, args: &[&str]) -> String {
    let (ok, out, err) = run(app, args);
    assert!(ok, "{args:?} failed: {out}\n{err}");
    out
}

/// The simulator's DigiCert ONE users: (id, user_name, email, roles).
fn users(sim: &Sim) -> Vec<(String, String, String, Vec<String>, String)> {
    sim.truth()["users"]["digicert_one"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap_or_default().to_string(),
                u["user_name"].as_str().unwrap_or_default().to_string(),
                u["email"].as_str().unwrap_or_default().to_string(),
                u["roles"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                u["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A signed app on `sim` ([reports] output_dir "out", the key from `keygen`); the public key.
fn review_app(sim: &Sim) -> (App, PathBuf) {
    let app = App::new(sim, "");
    let key = app.dir.path().join("signing.pem");
    let out = app.run(&["keygen", "--out", key.to_str().expect("path")]);
    assert!(out.status.success());
    let public = app.dir.path().join("public.pem");
    std::fs::write(&public, &out.stdout).expect("public key");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str("\n[reports]\noutput_dir = \"out\"\nsigning_key_file = \"signing.pem\"\n");
    std::fs::write(&app.config, text).expect("config");
    (app, public)
}

/// The rows of a CSV file (header first).
fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .expect("csv");
    rd.records()
        .map(|r| r.expect("record").iter().map(str::to_string).collect())
        .collect()
}

fn write_csv(path: &Path, rows: &[Vec<String>]) {
    let mut w = csv::Writer::from_path(path).expect("csv");
    for r in rows {
        w.write_record(r).expect("row");
    }
    w.flush().expect("flush");
}

fn col(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
}

/// The decision rows of the campaign, as stored (on SQLite or PostgreSQL).
fn decisions_count(c: &Campaign) -> i64 {
    match &c.pg {
        Some(db) => {
            let id: i64 = c.id.parse().expect("campaign id");
            db.store().review_decisions(id).expect("decisions").len() as i64
        }
        None => c.app.sql_count("SELECT COUNT(*) FROM review_decisions"),
    }
}

struct Campaign {
    sim: Sim,
    app: App,
    public: PathBuf,
    id: String,
    /// The sheet as exported: header and rows.
    sheet: Vec<Vec<String>>,
    /// Users whose admin grant was made by `granter`: revoked in the simulator / left alone.
    revoked: String,
    kept_open: String,
    granter_email: String,
    /// The PostgreSQL database the app's store is, or `None`: its SQLite file.
    pg: Option<PgDb>,
}

/// A simulator with three new admin grants (by a known granter), collected; a campaign started
/// on privileged roles, due in a week; its CSV sheet exported. On `pg` when given, else SQLite.
fn started(pg: Option<PgDb>) -> Campaign {
    let sim = Sim::start(&[
        "--users", "20", "--events", "200", "--days", "5", "--seed", "11",
    ]);
    let all = users(&sim);
    let granter = &all[1];
    let targets: Vec<&(String, String, String, Vec<String>, String)> = all
        .iter()
        .skip(2)
        .filter(|u| u.4 == "ACTIVE" && !u.3.iter().any(|r| r == "AM_ACCOUNT_ADMIN"))
        .take(3)
        .collect();
    assert_eq!(targets.len(), 3);
    for t in &targets {
        control(
            &sim,
            "POST",
            &format!("/_sim/users/{}/grant", t.0),
            &format!(
                r#"{{"role":"AM_ACCOUNT_ADMIN","actor_id":"{}"}}"#,
                granter.0
            ),
        );
    }
    let (app, public) = review_app(&sim);
    if let Some(db) = &pg {
        crate::postgres::point(&app, db);
    }
    app.collect_ok();
    let due = (today() + chrono::Duration::days(7)).to_string();
    let (ok, out, err) = run(
        &app,
        &[
            "review",
            "start",
            "--scope",
            "privileged",
            "--name",
            "Q4 admins",
            "--due",
            &due,
        ],
    );
    assert!(ok, "{out}\n{err}");
    let id = out.trim().to_string();
    assert!(id.parse::<i64>().is_ok(), "campaign id: {out:?}");
    assert!(err.contains("population sha256"), "{err}");
    let csv_path = app.dir.path().join("sheet.csv");
    run_ok(
        &app,
        &[
            "review",
            "export",
            &id,
            "--out",
            csv_path.to_str().expect("path"),
        ],
    );
    let sheet = read_csv(&csv_path);
    Campaign {
        revoked: targets[0].0.clone(),
        kept_open: targets[1].0.clone(),
        granter_email: granter.2.clone(),
        sim,
        app,
        public,
        id,
        sheet,
        pg,
    }
}

/// The sheet with every row decided by `reviewer`: revoke for `revoke` users, keep otherwise.
fn filled(c: &Campaign, reviewer: &str, revoke: &[&str]) -> Vec<Vec<String>> {
    let h = &c.sheet[0];
    let (uid, dec, just, rev) = (
        col(h, "user_id"),
        col(h, "decision"),
        col(h, "justification"),
        col(h, "reviewer"),
    );
    let mut rows = vec![h.clone()];
    for r in &c.sheet[1..] {
        let mut r = r.clone();
        let revoke = revoke.contains(&r[uid].as_str());
        r[dec] = if revoke { "revoke" } else { "keep" }.into();
        r[just] = if revoke {
            "no longer needs account administration".into()
        } else {
            "still administers certificates, confirmed with the manager".into()
        };
        r[rev] = reviewer.into();
        rows.push(r);
    }
    rows
}

/// The whole campaign: every privileged grant is an item with its audit evidence; imports are
/// all or nothing with each bad row named; remediation follows the simulator; the closed package
/// verifies with `verify-report` and stops verifying when a decision is edited in the database.
#[test]
fn a_full_campaign_from_start_to_a_verified_package() {
    full_campaign(started(None));
}

/// The same campaign with the store on PostgreSQL (skipped, said so, without a server; failed
/// under CI): the same refusals, decisions, package, and the same edit found by `verify`.
#[test]
fn a_full_campaign_on_postgres() {
    let Some(db) = PgDb::create() else {
        return;
    };
    full_campaign(started(Some(db)));
}

fn full_campaign(c: Campaign) {
    let app = &c.app;
    let h = c.sheet[0].clone();
    let (uid, role, granted, email) = (
        col(&h, "user_id"),
        col(&h, "role"),
        col(&h, "granted"),
        col(&h, "email"),
    );
    // The population: every current user's privileged role, the three new grants with evidence.
    let truth = users(&c.sim);
    let expected: usize = truth
        .iter()
        .filter(|u| u.4 != "DELETED")
        .map(|u| {
            u.3.iter()
                .filter(|r| r.to_lowercase().contains("admin"))
                .count()
        })
        .sum();
    assert_eq!(c.sheet.len() - 1, expected, "{:#?}", c.sheet);
    let row_of = |user: &str| {
        c.sheet[1..]
            .iter()
            .find(|r| r[uid] == user && r[role] == "AM_ACCOUNT_ADMIN")
            .unwrap_or_else(|| panic!("no item for {user}"))
            .clone()
    };
    let granted_cell = &row_of(&c.revoked)[granted];
    assert!(
        granted_cell.starts_with("audit event ") && granted_cell.contains(" by "),
        "{granted_cell}"
    );
    let revoke = [c.revoked.as_str(), c.kept_open.as_str()];
    let reviewer = "auditor@example.test";
    let dir = app.dir.path();

    // A self-review: the holder of a role decides on it. Refused, named, nothing recorded.
    let mut own = filled(&c, reviewer, &revoke);
    let victim = own
        .iter()
        .skip(1)
        .position(|r| !r[email].is_empty())
        .map(|i| i + 1)
        .expect("an item with an email");
    let victim_email = own[victim][email].clone();
    let rev = col(&h, "reviewer");
    own[victim][rev] = victim_email.clone();
    let own_path = dir.join("own.csv");
    write_csv(&own_path, &own);
    let (ok, _, err) = run(
        app,
        &["review", "import", &c.id, own_path.to_str().unwrap()],
    );
    assert!(!ok, "a self-review was accepted");
    assert!(
        err.contains(&format!("{victim_email} may not review their own access")),
        "{err}"
    );
    assert!(err.contains("nothing of this file was recorded"), "{err}");
    assert_eq!(decisions_count(&c), 0);

    // The granter decides on a grant they made: refused and named.
    let mut granter = filled(&c, reviewer, &revoke);
    let gi = granter
        .iter()
        .position(|r| r[uid] == c.revoked && r[role] == "AM_ACCOUNT_ADMIN")
        .unwrap();
    granter[gi][rev] = c.granter_email.clone();
    let granter_path = dir.join("granter.csv");
    write_csv(&granter_path, &granter);
    let (ok, _, err) = run(
        app,
        &["review", "import", &c.id, granter_path.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("granted this role themselves"), "{err}");
    assert_eq!(decisions_count(&c), 0);

    // An unknown item and an altered one: both listed, nothing recorded.
    let mut bad = filled(&c, reviewer, &revoke);
    let mut unknown = bad[1].clone();
    unknown[col(&h, "item")] = "9999".into();
    bad.push(unknown);
    bad[2][role] = "AM_VIEW_ONLY".into();
    let bad_path = dir.join("bad.csv");
    write_csv(&bad_path, &bad);
    let (ok, _, err) = run(
        app,
        &["review", "import", &c.id, bad_path.to_str().unwrap()],
    );
    assert!(!ok);
    assert!(err.contains("item 9999 is not in campaign"), "{err}");
    assert!(
        err.contains("was altered: role is \"AM_VIEW_ONLY\""),
        "{err}"
    );
    assert!(err.contains("2 invalid row(s)"), "{err}");
    assert_eq!(decisions_count(&c), 0);

    // The good file: every row recorded; the same file again changes nothing.
    let good = filled(&c, reviewer, &revoke);
    let good_path = dir.join("good.csv");
    write_csv(&good_path, &good);
    let n = (good.len() - 1) as i64;
    let out = run_ok(
        app,
        &["review", "import", &c.id, good_path.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!("{n} decision(s) recorded, 0 unchanged")),
        "{out}"
    );
    let out = run_ok(
        app,
        &["review", "import", &c.id, good_path.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!("0 decision(s) recorded, {n} unchanged")),
        "{out}"
    );
    assert_eq!(decisions_count(&c), n);

    // A changed decision, from an XLSX sheet: one new row, the earlier one kept as history.
    let xlsx = dir.join("sheet.xlsx");
    run_ok(
        app,
        &["review", "export", &c.id, "--out", xlsx.to_str().unwrap()],
    );
    let mut changed = good.clone();
    let ci = changed
        .iter()
        .position(|r| r[uid] != c.revoked && r[uid] != c.kept_open && r[0] == c.id)
        .unwrap();
    changed[ci][col(&h, "decision")] = "unsure".into();
    changed[ci][col(&h, "justification")] = "owner on leave, ask again in January".into();
    let changed_xlsx = dir.join("changed.xlsx");
    write_xlsx(&changed_xlsx, &changed);
    let out = run_ok(
        app,
        &["review", "import", &c.id, changed_xlsx.to_str().unwrap()],
    );
    assert!(
        out.contains(&format!("1 decision(s) recorded, {} unchanged", n - 1)),
        "{out}"
    );
    assert_eq!(decisions_count(&c), n + 1);

    // One revocation carried out in the simulator; after the next collection it is done, with
    // the audit event that removed it; the other stays open.
    let status = run_ok(app, &["review", "status", &c.id]);
    assert!(status.contains(&format!("decided {n}/{n}")), "{status}");
    assert!(
        status.contains("2 revoke(s): 0 done, 2 open, 0 overdue"),
        "{status}"
    );
    control(
        &c.sim,
        "POST",
        &format!("/_sim/users/{}/revoke", c.revoked),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    app.collect_ok();
    let status = run_ok(app, &["review", "status", &c.id]);
    assert!(
        status.contains("2 revoke(s): 1 done, 1 open, 0 overdue"),
        "{status}"
    );
    let done = status
        .lines()
        .find(|l| l.contains(&c.revoked))
        .expect("revoked line");
    assert!(
        done.contains(" done: ")
            && done.contains(": role removed by ")
            && done.contains("(audit event "),
        "{done}"
    );
    assert!(
        status.contains(&format!("by {reviewer}: {}", n)),
        "{status}"
    );

    // Close: the package, signed; verify-report passes on it.
    let out = run_ok(app, &["review", "close", &c.id]);
    let pkg = PathBuf::from(out.trim());
    assert!(pkg.ends_with(format!("review-{}", c.id)), "{out}");
    let manifest = pkg.join("manifest.json");
    for f in ["html", "csv", "json"] {
        assert!(pkg.join(format!("review-{}.{f}", c.id)).is_file(), "{f}");
    }
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(pkg.join(format!("review-{}.json", c.id))).unwrap(),
    )
    .unwrap();
    assert_eq!(json["summary"]["items"], n);
    assert_eq!(json["summary"]["revocations"]["done"], 1);
    let item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user_id"] == c.revoked.as_str())
        .unwrap();
    assert_eq!(item["remediation"]["state"], "done");
    assert!(
        item["remediation"]["removed"]["event"]["event_id"].is_string(),
        "{item}"
    );
    let hist = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["decision"]["decision"] == "unsure")
        .unwrap();
    assert_eq!(hist["earlier_decisions"][0]["decision"], "keep");
    let args = [
        "verify-report",
        manifest.to_str().unwrap(),
        "--public-key",
        c.public.to_str().unwrap(),
    ];
    let (ok, out, err) = run(app, &args);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(&format!("chain review-{}/reviews", c.id)),
        "{out}"
    );
    // Closed: no more imports, no second close.
    let (ok, _, err) = run(
        app,
        &["review", "import", &c.id, good_path.to_str().unwrap()],
    );
    assert!(!ok && err.contains("is closed"), "{err}");

    // A decision edited behind auditwarden's back: verify and verify-report both find it.
    let edit = "UPDATE review_decisions SET decision = 'keep' WHERE decision = 'revoke' AND seq = (SELECT MIN(seq) FROM review_decisions WHERE decision = 'revoke')";
    match &c.pg {
        Some(db) => {
            let keeps = |c: &Campaign| {
                let id: i64 = c.id.parse().unwrap();
                let store = db.store();
                let ds = store.review_decisions(id).unwrap();
                ds.iter().filter(|d| d.decision == "keep").count()
            };
            let before = keeps(&c);
            PgTarget::parse(&db.url, None)
                .unwrap()
                .execute_batch(edit)
                .unwrap();
            assert_eq!(keeps(&c), before + 1);
        }
        None => {
            let db = rusqlite::Connection::open(&app.db).unwrap();
            assert_eq!(db.execute(edit, []).unwrap(), 1);
        }
    }
    let (ok, out) = app.verify(None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("reviews chain broken") && out.contains("decision on item"),
        "{out}"
    );
    let (ok, out, _) = run(app, &args);
    assert!(!ok, "{out}");
    assert!(out.contains("chains: FAILED"), "{out}");
}

/// An XLSX with these rows (all text), as a reviewer's spreadsheet would save it.
fn write_xlsx(path: &Path, rows: &[Vec<String>]) {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    for (r, row) in rows.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // The item number as a number, as a spreadsheet keeps it.
            if r > 0 && c == 1 {
                ws.write_number(r as u32, c as u16, v.parse::<f64>().unwrap())
                    .unwrap();
            } else {
                ws.write_string(r as u32, c as u16, v).unwrap();
            }
        }
    }
    wb.save(path).unwrap();
}

/// LibreOffice opens the exported XLSX: every item is a row, and the decision column keeps its
/// drop-down (keep, revoke, unsure).
#[test]
fn libreoffice_opens_the_xlsx_sheet_with_its_drop_down() {
    let Some(bin) = tool(
        "soffice",
        "libreoffice_opens_the_xlsx_sheet_with_its_drop_down",
    ) else {
        return;
    };
    let c = started(None);
    let dir = c.app.dir.path();
    let xlsx = dir.join("sheet.xlsx");
    run_ok(
        &c.app,
        &["review", "export", &c.id, "--out", xlsx.to_str().unwrap()],
    );
    let out_dir = dir.join("lo");
    let profile = format!(
        "-env:UserInstallation=file://{}",
        dir.join("lo-profile").display()
    );
    for to in ["csv", "fods"] {
        let out = Command::new(&bin)
            .arg(&profile)
            .args(["--headless", "--convert-to", to, "--outdir"])
            .arg(&out_dir)
            .arg(&xlsx)
            .output()
            .expect("run soffice");
        assert!(out.status.success(), "soffice failed: {out:?}");
    }
    let rows = read_csv(&out_dir.join("sheet.csv"));
    assert_eq!(rows.len(), c.sheet.len(), "{rows:#?}");
    assert_eq!(rows[0], c.sheet[0]);
    let fods = std::fs::read_to_string(out_dir.join("sheet.fods")).unwrap();
    let validation = fods
        .split("<table:content-validation ")
        .nth(1)
        .expect("a content validation (the drop-down)");
    let validation = validation.split('>').next().unwrap();
    assert!(
        validation.contains("&quot;keep&quot;")
            && validation.contains("&quot;revoke&quot;")
            && validation.contains("&quot;unsure&quot;"),
        "{validation}"
    );
    assert!(
        fods.contains("table:content-validation-name="),
        "no cell uses the validation"
    );
}

/// Chromium renders the closed package's page with no console message and every decision row;
/// a screenshot is kept under target/tmp/review-screenshots/.
#[test]
fn chromium_renders_the_package_page() {
    let Some(bin) = tool("chromium", "chromium_renders_the_package_page") else {
        return;
    };
    let c = started(None);
    let app = &c.app;
    let rows = filled(
        &c,
        "auditor@example.test",
        &[c.revoked.as_str(), c.kept_open.as_str()],
    );
    let path = app.dir.path().join("good.csv");
    write_csv(&path, &rows);
    run_ok(app, &["review", "import", &c.id, path.to_str().unwrap()]);
    control(
        &c.sim,
        "POST",
        &format!("/_sim/users/{}/revoke", c.revoked),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    app.collect_ok();
    let out = run_ok(app, &["review", "close", &c.id]);
    let page = PathBuf::from(out.trim()).join(format!("review-{}.html", c.id));
    let chrome = |profile: &str, args: &[&str]| {
        let out = Command::new(&bin)
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
            .arg(format!(
                "--user-data-dir={}",
                app.dir.path().join(profile).display()
            ))
            .args(args)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium failed: {out:?}");
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (dom, log) = chrome("chromium-dom", &["--dump-dom"]);
    let decision_rows = dom.matches("<tr class=\"priv decision\"").count()
        + dom.matches("<tr class=\"decision\"").count();
    assert_eq!(decision_rows, rows.len() - 1, "rendered decision rows");
    assert_eq!(dom.matches("<td class=\"revoke\">revoke</td>").count(), 2);
    assert_eq!(
        dom.matches("<td class=\"done\">done</td>").count(),
        2,
        "table and remediation"
    );
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("review-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("review-package.png");
    let arg = format!("--screenshot={}", shot.display());
    chrome(
        "chromium-shot",
        &["--window-size=1900,1300", "--hide-scrollbars", &arg],
    );
    assert!(std::fs::metadata(&shot)
        .map(|m| m.len() > 10_000)
        .unwrap_or(false));
}
