//! `auditwarden demo`, the README's first command, as a new user sees it: run once (in a temporary
//! directory, through the real binary) and shared by the tests below, each of which checks one
//! thing the output or the reports it writes must get right.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::helpers::*;

struct DemoRun {
    _dir: tempfile::TempDir,
    stdout: String,
    stderr: String,
    /// The run directory under `reports/`.
    reports: PathBuf,
}

impl DemoRun {
    /// The report file of `kind` in `ext`.
    fn file(&self, kind: &str, ext: &str) -> PathBuf {
        std::fs::read_dir(&self.reports)
            .expect("run dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with(&format!("{kind}-")) && name.ends_with(&format!(".{ext}"))
            })
            .unwrap_or_else(|| panic!("no {kind}.{ext} in {}", self.reports.display()))
    }

    fn json(&self, kind: &str) -> Value {
        let text = std::fs::read_to_string(self.file(kind, "json")).expect("report json");
        serde_json::from_str(&text).expect("json")
    }

    fn html(&self, kind: &str) -> String {
        std::fs::read_to_string(self.file(kind, "html")).expect("report html")
    }

    fn manifest(&self) -> Value {
        let text = std::fs::read_to_string(self.reports.join("manifest.json")).expect("manifest");
        serde_json::from_str(&text).expect("manifest json")
    }
}

/// The demo, run once for all the tests of this file.
fn demo() -> &'static DemoRun {
    static RUN: OnceLock<DemoRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = std::process::Command::new(BIN)
            .arg("demo")
            .current_dir(dir.path())
            .env_remove("AUDITWARDEN_LOG")
            .env_remove("NO_COLOR")
            .output()
            .expect("run demo");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
        let reports = std::fs::read_dir(dir.path().join("reports"))
            .expect("reports/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.join("manifest.json").is_file())
            .expect("a finished run");
        DemoRun {
            _dir: dir,
            stdout,
            stderr,
            reports,
        }
    })
}

/// Quarantined events are summarized once per account and pass (not once per day), pointing at
/// `status --quarantine`.
#[test]
fn demo_summarizes_quarantine_per_account() {
    let d = demo();
    let lines: Vec<&str> = d
        .stderr
        .lines()
        .filter(|l| l.contains("quarantine"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "one line per account and pass (two passes), got {}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("demo-one") && l.contains("auditwarden status --quarantine")),
        "{lines:?}"
    );
    assert!(d.stdout.contains("quarantined"), "{}", d.stdout);
}

/// The demo collects as far back as its reports look (dormancy, 90 days): no report opens with
/// the "incomplete" banner.
#[test]
fn demo_reports_have_complete_coverage() {
    let d = demo();
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let j = d.json(kind);
        assert_eq!(j["complete"], true, "{kind}: {}", j["accounts"]);
        let html = d.html(kind);
        assert!(
            html.contains("Collected data is complete") && !html.contains("incomplete"),
            "{kind}: the HTML says the data is incomplete"
        );
    }
}

/// Every column of every report has its own header, in JSON and in the HTML table (the display
/// zone is UTC in the demo, where role-changes once had two "When (UTC)").
#[test]
fn report_column_headers_are_distinct() {
    let d = demo();
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let j = d.json(kind);
        assert_eq!(j["display_time_zone"], "UTC");
        let labels: Vec<&str> = j["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["label"].as_str().expect("label"))
            .collect();
        let unique: std::collections::BTreeSet<&str> = labels.iter().copied().collect();
        assert_eq!(unique.len(), labels.len(), "{kind}: {labels:?}");
        let html = d.html(kind);
        let heads: Vec<&str> = html
            .split("<button type=\"button\">")
            .skip(1)
            .filter_map(|s| s.split('<').next())
            .collect();
        let unique: std::collections::BTreeSet<&str> = heads.iter().copied().collect();
        assert_eq!(unique.len(), heads.len(), "{kind} HTML: {heads:?}");
    }
}

/// The dormant report's `inactive_since_source` takes only values docs/report-schema.md lists.
#[test]
fn dormant_sources_are_the_documented_values() {
    let d = demo();
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/report-schema.md"
    ))
    .expect("docs");
    let section = docs
        .split("**dormant**")
        .nth(1)
        .and_then(|s| s.split("**invitations**").next())
        .expect("the dormant section of the docs");
    let rows = d.json("dormant")["rows"].as_array().expect("rows").clone();
    let mut never_active = 0;
    for r in &rows {
        let v = r["inactive_since_source"].as_str().expect("source");
        assert!(
            section.contains(&format!("`{v}`")),
            "{v:?} is not a documented value of inactive_since_source"
        );
        if r["last_activity"].is_null() {
            never_active += 1;
            assert_ne!(v, "last activity", "{r}");
        }
    }
    assert!(never_active > 0, "the demo has never-active dormant users");
}

/// The invitations report says where each invitation time comes from (CertCentral: auditwarden's
/// first sighting) and that it covers users added and not yet activated (JSON, HTML, manifest).
#[test]
fn invitations_say_what_they_cover_and_where_times_come_from() {
    let d = demo();
    let j = d.json("invitations");
    let rows = j["rows"].as_array().expect("rows");
    let cc: Vec<&Value> = rows
        .iter()
        .filter(|r| r["account"] == "demo-certcentral")
        .collect();
    assert!(!cc.is_empty(), "the demo has CertCentral invitations");
    for r in &cc {
        assert_eq!(r["invited_source"], "first seen by auditwarden", "{r}");
    }
    for r in rows.iter().filter(|r| r["account"] == "demo-one") {
        assert_eq!(r["invited_source"], "created_at", "{r}");
    }
    let scope = j["scope"].as_str().expect("scope");
    for needle in ["added", "not yet activated", "User Invitations"] {
        assert!(scope.contains(needle), "{needle:?} in {scope:?}");
    }
    assert!(d.html("invitations").contains("not yet activated"));
    let manifest = d.manifest();
    let csv = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["kind"] == "invitations" && f["format"] == "csv")
        .expect("invitations csv in the manifest");
    assert_eq!(csv["scope"], scope);
}

/// Text logs off a terminal carry no ANSI colour codes.
#[test]
fn demo_logs_have_no_colour_codes() {
    let d = demo();
    assert!(
        d.stderr.contains("WARN") || d.stderr.contains("INFO"),
        "{}",
        d.stderr
    );
    assert!(
        !d.stderr.contains('\u{1b}'),
        "ANSI escape in:\n{}",
        d.stderr
    );
}
