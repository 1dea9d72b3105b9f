//! Report building from a store filled directly (no network): daylight-saving days in the display
//! zone, empty periods, coverage statements, and strings kept exact in JSON.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use super::*;
use crate::store::{Evidence, PageWrite, RoleChange, Store, UserBatch, UserRow, WindowDone};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn account() -> Account {
    let text = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"acme\"\nkind = \"digicert-one\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"K\"\n";
    let env = |_: &str| Some("k".to_string());
    crate::config::parse(text, std::path::Path::new("/tmp/x.toml"), &env)
        .expect("config")
        .accounts
        .remove(0)
}

const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)> =cmd \"q\" \u{202E}";

/// A store with one user and a grant at each instant, all proven complete by coverage rows.
fn store_with_changes(dir: &std::path::Path, instants: &[&str]) -> Store {
    let mut s = Store::open(&dir.join("r.db")).expect("store");
    let mut batch = UserBatch::default();
    batch.rows.push(UserRow {
        user_id: "u1".into(),
        user_name: Some(HOSTILE_NAME.into()),
        status: crate::domain::UserStatus::Active,
        roles: vec!["AM_ACCOUNT_ADMIN".into()],
        first_seen_ms: 0,
        updated_ms: 0,
        ..Default::default()
    });
    for (i, when) in instants.iter().enumerate() {
        batch.role_changes.push(RoleChange {
            user_id: "u1".into(),
            role: format!("ROLE_{i}"),
            change: crate::domain::RoleChangeKind::Granted,
            observed_ms: None,
            after_ms: None,
            evidence: Some(Evidence {
                event_id: format!("ev-{i}"),
                event_ms: t(when).timestamp_millis(),
                actor_id: Some("admin-id".into()),
                actor_name: Some("admin".into()),
                ip_address: Some("10.0.0.1".into()),
            }),
        });
    }
    s.write_user_batch("acme", &batch).expect("batch");
    let mut d = NaiveDate::from_ymd_opt(2026, 1, 1).expect("day");
    while d <= NaiveDate::from_ymd_opt(2026, 12, 31).expect("day") {
        s.write_page(&PageWrite {
            account: "acme",
            action_filter: "",
            day: Some(d),
            events: &[],
            malformed: &[],
            done: Some(WindowDone {
                server_total: Some(0),
                received: 0,
            }),
        })
        .expect("coverage");
        d = d.succ_opt().expect("day");
    }
    s
}

fn render(
    store: &Store,
    kind: ReportKind,
    period: Period,
    tz: Tz,
    format: ReportFormat,
) -> (String, Outcome) {
    let a = account();
    let req = ReportRequest {
        kind,
        accounts: vec![&a],
        period,
        now: t("2026-12-01T00:00:00Z"),
        time_zone: tz,
        dormant_days: 90,
        credential_warn_days: 30,
        max_credential_age_days: 365,
        stale_invite_days: 14,
    };
    let mut out = Vec::new();
    let o = generate(store, &req, format, &mut out).expect("report");
    (String::from_utf8(out).expect("utf-8"), o)
}

fn local_day(tz: Tz, d: &str) -> Period {
    let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("day");
    Period::Range {
        from: start_of_day(tz, d),
        to: start_of_day(tz, d.succ_opt().expect("next")),
    }
}

/// A Berlin day with the clocks going forward has 23 hours, one going back 25: every change in
/// the local day is listed once, in UTC order, with its own offset, and nothing outside it.
#[test]
fn dst_days_in_the_display_zone_keep_every_row() {
    let dir = tempfile::tempdir().expect("tmp");
    let tz = chrono_tz::Europe::Berlin;
    let spring_in = [
        "2026-03-28T23:00:00Z", // 00:00 CET, the first instant of the day
        "2026-03-29T00:59:59Z", // 01:59:59 CET, just before the jump
        "2026-03-29T01:00:00Z", // 03:00 CEST, just after
        "2026-03-29T21:59:59Z", // 23:59:59 CEST
    ];
    let fall_in = [
        "2026-10-24T22:00:00Z", // 00:00 CEST
        "2026-10-25T00:30:00Z", // 02:30 CEST
        "2026-10-25T01:30:00Z", // 02:30 CET: the same wall time, an hour later
        "2026-10-25T22:59:59Z", // 23:59:59 CET
    ];
    let outside = [
        "2026-03-28T22:59:59Z",
        "2026-03-29T22:00:00Z",
        "2026-10-24T21:59:59Z",
        "2026-10-25T23:00:00Z",
    ];
    let all: Vec<&str> = spring_in
        .iter()
        .chain(&fall_in)
        .chain(&outside)
        .copied()
        .collect();
    let store = store_with_changes(dir.path(), &all);
    for (day, expect, hours) in [("2026-03-29", &spring_in, 23), ("2026-10-25", &fall_in, 25)] {
        let period = local_day(tz, day);
        let Period::Range { from, to } = period else {
            unreachable!()
        };
        assert_eq!((to - from).num_hours(), hours, "{day}");
        let (text, o) = render(
            &store,
            ReportKind::RoleChanges,
            period,
            tz,
            ReportFormat::Json,
        );
        let v: Value = serde_json::from_str(&text).expect("json");
        let rows = v["rows"].as_array().expect("rows");
        let whens: Vec<String> = rows
            .iter()
            .map(|r| r["when"].as_str().expect("when").to_string())
            .collect();
        let want: Vec<String> = expect.iter().map(|s| rfc3339(t(s))).collect();
        assert_eq!(whens, want, "{day}");
        assert_eq!(o.rows, 4);
        assert!(v["complete"].as_bool().expect("complete"), "{text}");
        // The chart has this one local day, holding all four.
        assert_eq!(
            v["summary"]["chart"]["bars"],
            serde_json::json!([[day, 4]]),
            "{day}"
        );
        for r in rows {
            let local = r["when_local"].as_str().expect("local");
            let utc = t(r["when"].as_str().expect("when"));
            assert_eq!(t(local), utc, "the local label is the same instant");
            assert!(local.starts_with(day), "{local} is not on {day}");
        }
    }
    let (text, _) = render(
        &store,
        ReportKind::RoleChanges,
        local_day(tz, "2026-10-25"),
        tz,
        ReportFormat::Json,
    );
    assert!(text.contains("2026-10-25T02:30:00.000+02:00"), "{text}");
    assert!(text.contains("2026-10-25T02:30:00.000+01:00"), "{text}");
    // HTML labels both with their zone abbreviation.
    let (html, _) = render(
        &store,
        ReportKind::RoleChanges,
        local_day(tz, "2026-10-25"),
        tz,
        ReportFormat::Html,
    );
    assert!(html.contains("2026-10-25 02:30:00 CEST"), "no CEST label");
    assert!(html.contains("2026-10-25 02:30:00 CET"), "no CET label");
}

/// A period with nothing in it gives a valid report in each format that says it is empty.
#[test]
fn empty_period_is_a_valid_clearly_empty_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_with_changes(dir.path(), &["2026-06-01T12:00:00Z"]);
    let period = Period::Range {
        from: t("2026-07-01T00:00:00Z"),
        to: t("2026-08-01T00:00:00Z"),
    };
    let tz = chrono_tz::UTC;
    let (json, o) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        tz,
        ReportFormat::Json,
    );
    assert_eq!(o.rows, 0);
    let v: Value = serde_json::from_str(&json).expect("valid json");
    assert_eq!(v["rows"], serde_json::json!([]));
    assert_eq!(v["row_count"], 0);
    assert_eq!(v["schema"], SCHEMA);
    assert_eq!(v["period"]["from"], "2026-07-01T00:00:00.000Z");
    assert!(v["complete"].as_bool().expect("complete"));
    let (csv, _) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        tz,
        ReportFormat::Csv,
    );
    assert_eq!(csv.lines().count(), 1, "{csv}");
    assert!(csv.starts_with("when,when_local,account,"), "{csv}");
    let (html, _) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        tz,
        ReportFormat::Html,
    );
    assert!(html.contains(ReportKind::RoleChanges.empty_text()));
    assert!(!html.contains("<table"), "an empty report has no table");
    assert!(html.ends_with("</html>\n"));
}

/// Days not collected make the report say it is incomplete, at the top, naming the gap.
#[test]
fn incomplete_coverage_is_stated_at_the_top() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_with_changes(dir.path(), &["2026-06-01T12:00:00Z"]);
    let period = Period::Range {
        from: t("2026-12-30T00:00:00Z"),
        to: t("2027-01-02T00:00:00Z"),
    };
    let (html, o) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        chrono_tz::UTC,
        ReportFormat::Html,
    );
    assert!(!o.complete);
    let warn = html
        .find("WARNING: the collected data is incomplete")
        .expect("warning");
    let gap = html.find("2027-01-01..2027-01-01").unwrap_or(usize::MAX);
    let gap = gap.min(
        html.find("2027-01-01 (not collected yet)")
            .unwrap_or(usize::MAX),
    );
    assert!(gap < usize::MAX, "the gap is named: {html}");
    assert!(warn < html.find("class=\"cards\"").expect("cards"));
}

/// Stored strings come back exactly in JSON, escaped in HTML, neutralized in CSV.
#[test]
fn hostile_names_exact_in_json_escaped_in_html_neutralized_in_csv() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_with_changes(dir.path(), &["2026-06-01T12:00:00Z"]);
    let period = Period::Range {
        from: t("2026-06-01T00:00:00Z"),
        to: t("2026-06-02T00:00:00Z"),
    };
    let tz = chrono_tz::UTC;
    let (json, _) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        tz,
        ReportFormat::Json,
    );
    let v: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["rows"][0]["user_name"], HOSTILE_NAME);
    let (html, _) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        tz,
        ReportFormat::Html,
    );
    assert!(!html.contains("<img src=x"), "unescaped markup");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; =cmd &quot;q&quot;"));
    let (csv, _) = render(
        &store,
        ReportKind::AccessReview,
        Period::AsOf(t("2026-12-01T00:00:00Z")),
        tz,
        ReportFormat::Csv,
    );
    assert!(csv.contains("<img src=x onerror=alert(1)> =cmd"), "{csv}");
}

/// A role change an alert rule fired on is flagged with the rule's name; the others are not.
#[test]
fn role_changes_flagged_by_alerts_say_so() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = store_with_changes(
        dir.path(),
        &["2026-06-01T12:00:00Z", "2026-06-01T13:00:00Z"],
    );
    // The rule engine's way in: the alert refers to the first grant's role change.
    let mut store = store;
    store
        .record_alerts("acme", &[], 0, &mut |facts, _| {
            let g = &facts.grants[0];
            vec![crate::store::NewAlert {
                key: "privileged-role-grant|acme|event:ev-0:u1:ROLE_0".into(),
                uid: "msg_1".into(),
                rule: "privileged-role-grant".into(),
                severity: "high".into(),
                at_ms: Some(0),
                summary: "s".into(),
                payload: "{}".into(),
                suppressed: false,
                role_change_seq: g.role_change_seq,
            }]
        })
        .expect("alert");
    let period = Period::Range {
        from: t("2026-06-01T00:00:00Z"),
        to: t("2026-06-02T00:00:00Z"),
    };
    let (json, _) = render(
        &store,
        ReportKind::RoleChanges,
        period,
        chrono_tz::UTC,
        ReportFormat::Json,
    );
    let v: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["rows"][0]["alert_flagged"], true);
    assert_eq!(
        v["rows"][0]["alert_rules"],
        serde_json::json!(["privileged-role-grant"])
    );
    assert_eq!(v["rows"][1]["alert_flagged"], false);
    assert_eq!(v["rows"][1]["alert_rules"], serde_json::json!([]));
}
