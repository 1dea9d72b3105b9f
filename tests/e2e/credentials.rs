//! The credentials report against the simulator: service users whose end dates are past, soon
//! and far are expired, expiring and fine (with the days left); every API token and
//! client-authentication certificate of the simulator's audit log is one row, revoked exactly when
//! the log revoked it; the `[reports]` thresholds apply; `reports run` writes it when listed.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::*;

/// Expired, expiring and fine service users; every token and certificate with its revocation.
#[test]
fn credentials_report_names_expired_expiring_and_revoked_credentials() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "2000", "--days", "20", "--seed", "21",
    ]);
    let day = |d: i64| (today() + chrono::Duration::days(d)).to_string();
    for (name, d) in [("svc-past", -5), ("svc-soon", 10), ("svc-far", 400)] {
        let body = serde_json::json!({
            "kind": "digicert-one", "user_type": "service", "user_name": name,
            "status": "ACTIVE", "roles": ["AM_ACCOUNT_ADMIN"], "end_date": day(d),
        });
        control(&sim, "POST", "/_sim/users", &body.to_string());
    }
    let app = App::new(&sim, "");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str(
        "\n[reports]\ncredential_warn_days = 14\nmax_credential_age_days = 7\nkinds = [\"credentials\"]\nformats = [\"json\", \"html\"]\noutput_dir = \"out\"\n",
    );
    std::fs::write(&app.config, text).expect("config");
    app.collect_ok();
    let json: Value = serde_json::from_str(&run_ok(
        &app,
        &["report", "credentials", "--format", "json"],
    ))
    .expect("json");
    assert_eq!(json["parameters"]["credential_warn_days"], 14);
    let rows = json["rows"].as_array().expect("rows");
    let by_name = |n: &str| {
        rows.iter()
            .find(|r| r["credential"] == "service_user" && r["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {rows:#?}"))
    };
    for (name, state, left) in [
        ("svc-past", "expired", -5),
        ("svc-soon", "expiring", 10),
        ("svc-far", "ok", 400),
    ] {
        let r = by_name(name);
        assert_eq!(r["state"], state, "{r}");
        assert_eq!(r["days_left"], left, "{r}");
        assert_eq!(r["end_date"], day(left).as_str(), "{r}");
    }
    // Service users come first, the soonest end date first.
    let services: Vec<&Value> = rows
        .iter()
        .take_while(|r| r["credential"] == "service_user")
        .collect();
    assert!(services.len() >= 3);
    let lefts: Vec<i64> = services
        .iter()
        .filter_map(|r| r["days_left"].as_i64())
        .collect();
    assert!(lefts.windows(2).all(|w| w[0] <= w[1]), "{lefts:?}");

    // Tokens and certificates: one row per credential of the simulator's log, revoked exactly
    // when a successful revoke event exists.
    let mut expected: BTreeMap<(String, String), bool> = BTreeMap::new();
    for e in sim.truth()["events"].as_array().expect("events") {
        let t = e["resource_type"].as_str().unwrap_or_default();
        if t != "api_token" && t != "client_auth_certificate" {
            continue;
        }
        let id = e["resource_id"].as_str().unwrap_or_default().to_string();
        let ok = !e["status"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case("failure");
        let revoke = ok
            && matches!(
                e["action"].as_str().unwrap_or_default(),
                "revoke" | "delete" | "disable"
            );
        *expected.entry((t.to_string(), id)).or_default() |= revoke;
    }
    assert!(expected.values().any(|r| *r) && expected.values().any(|r| !*r));
    let got: BTreeMap<(String, String), bool> = rows
        .iter()
        .filter(|r| r["credential"] != "service_user")
        .map(|r| {
            (
                (
                    r["credential"].as_str().unwrap().to_string(),
                    r["id"].as_str().unwrap().to_string(),
                ),
                r["state"] == "revoked",
            )
        })
        .collect();
    assert_eq!(got, expected);
    for r in rows.iter().filter(|r| r["credential"] != "service_user") {
        if r["state"] == "revoked" {
            assert!(
                r["revoked"].is_string() && r["revoked_by"].is_string(),
                "{r}"
            );
        } else if let Some(age) = r["age_days"].as_i64() {
            let flagged = r["state"] == "older than the maximum age";
            assert_eq!(flagged, age > 7, "{r}");
            assert!(r["created_by"].is_string(), "{r}");
        }
    }
    // Listed in [reports] kinds: part of the set.
    run_ok(&app, &["reports", "run"]);
    let run = std::fs::read_dir(app.dir.path().join("out"))
        .expect("out")
        .map(|e| e.expect("entry").path())
        .find(|p| p.is_dir())
        .expect("run dir");
    let files: Vec<String> = std::fs::read_dir(&run)
        .expect("run")
        .map(|e| e.expect("e").file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("credentials-") && f.ends_with(".json"))
            && files
                .iter()
                .any(|f| f.starts_with("credentials-") && f.ends_with(".html")),
        "{files:?}"
    );
}

/// The dormant report lists users who never signed in and service users, and says which
/// activity each row rests on: the simulator's latest successful event of the user decides
/// between sign-in and API use (always API use for a service user), none when there is none.
#[test]
fn dormant_report_says_which_activity_it_is_based_on() {
    let sim = Sim::start(&[
        "--users", "30", "--events", "600", "--days", "20", "--seed", "23",
    ]);
    let app = App::new(&sim, "");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str("\n[reports]\ndormant_days = 3\n");
    std::fs::write(&app.config, text).expect("config");
    app.collect_ok();
    let json: Value =
        serde_json::from_str(&run_ok(&app, &["report", "dormant", "--format", "json"]))
            .expect("json");
    let rows = json["rows"].as_array().expect("rows");
    // The latest successful event of each actor in the simulator's log.
    let mut latest: BTreeMap<String, (String, String)> = BTreeMap::new();
    for e in sim.truth()["events"].as_array().expect("events") {
        if e["status"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case("failure")
        {
            continue;
        }
        // The actor: a `user` object or flat fields (contract 1.2).
        let Some(actor) = e["user"]["id"].as_str().or(e["user_id"].as_str()) else {
            continue;
        };
        let ts = e["timestamp"].as_str().unwrap_or_default().to_string();
        let action = e["action"].as_str().unwrap_or_default().to_string();
        let entry = latest
            .entry(actor.to_string())
            .or_insert((ts.clone(), action.clone()));
        if chrono::DateTime::parse_from_rfc3339(&ts).ok()
            > chrono::DateTime::parse_from_rfc3339(&entry.0).ok()
        {
            *entry = (ts, action);
        }
    }
    let mut seen = BTreeMap::new();
    for r in rows {
        let id = r["user_id"].as_str().expect("id");
        let service = r["user_type"] == "service";
        let want = match latest.get(id) {
            None if r["last_activity"].is_null() => "none",
            _ if service => "API use",
            Some((_, a)) if a == "login" || a == "logout" => "sign-in",
            Some(_) => "API use",
            None => "sign-in", // the API's last sign-in date (CertCentral only)
        };
        assert_eq!(r["activity_basis"], want, "{r}");
        *seen.entry((want, service)).or_insert(0) += 1;
    }
    assert!(
        seen.contains_key(&("none", false)) || seen.contains_key(&("none", true)),
        "{seen:?}"
    );
    assert!(
        seen.keys().any(|(_, s)| *s),
        "no service user listed: {seen:?}"
    );
    assert!(seen.contains_key(&("sign-in", false)), "{seen:?}");
}

/// The two credential alert kinds: `credential-expiring` fires once for the service user whose
/// end date falls within its days (not for the past or far ones, and not again on the next pass);
/// `credential-created` fires on exactly the token and certificate creations of the simulator's
/// log made by a privileged user or a service user, old ones suppressed, new ones sent.
#[test]
fn credential_alerts_fire_once_on_expiring_users_and_privileged_creations() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "1500", "--days", "10", "--seed", "29",
    ]);
    let day = |d: i64| (today() + chrono::Duration::days(d)).to_string();
    for (name, d) in [("svc-past", -5), ("svc-soon", 10), ("svc-far", 400)] {
        let body = serde_json::json!({
            "kind": "digicert-one", "user_type": "service", "user_name": name,
            "status": "ACTIVE", "roles": [], "end_date": day(d),
        });
        control(&sim, "POST", "/_sim/users", &body.to_string());
    }
    let app = App::new(&sim, "");
    let sink = app.dir.path().join("alerts.jsonl");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str(&format!(
        r#"
[alerts]
[[alerts.rules]]
name = "expiring"
kind = "credential-expiring"
days = 14
severity = "medium"

[[alerts.rules]]
name = "new-credential"
kind = "credential-created"
roles = ["AM_ACCOUNT_ADMIN"]
severity = "high"

[[alerts.sinks]]
name = "file"
kind = "command"
program = "/bin/sh"
args = ["-c", "cat >> '{0}'; echo >> '{0}'"]
timeout_secs = 5
"#,
        sink.display()
    ));
    std::fs::write(&app.config, text).expect("config");
    app.collect_ok();
    // New events today (some are token and certificate creations), then a second pass.
    control(&sim, "POST", "/_sim/events", r#"{"count": 400}"#);
    app.collect_ok();

    let db = rusqlite::Connection::open(&app.db).expect("db");
    let alerts: Vec<(String, bool, Value)> = db
        .prepare("SELECT rule, suppressed, payload FROM alerts ORDER BY id")
        .expect("prepare")
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null),
            ))
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    let expiring: Vec<&(String, bool, Value)> =
        alerts.iter().filter(|a| a.0 == "expiring").collect();
    assert_eq!(expiring.len(), 1, "{expiring:#?}");
    assert_eq!(expiring[0].2["target"]["name"], "svc-soon");
    assert_eq!(expiring[0].2["days_left"], 10);
    assert!(!expiring[0].1, "an expiring user is news, never suppressed");

    // Who is privileged or a service user, per the simulator.
    let truth = sim.truth();
    let mut watched = std::collections::BTreeSet::new();
    for u in truth["users"]["digicert_one"].as_array().expect("users") {
        let admin = u["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "AM_ACCOUNT_ADMIN"));
        if admin || u["user_type"] == "service" {
            watched.insert(u["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let mut expected = std::collections::BTreeSet::new();
    for e in truth["events"].as_array().expect("events") {
        let t = e["resource_type"].as_str().unwrap_or_default();
        let action = e["action"].as_str().unwrap_or_default();
        let failed = e["status"]
            .as_str()
            .unwrap_or_default()
            .eq_ignore_ascii_case("failure");
        let actor = e["user"]["id"].as_str().or(e["user_id"].as_str());
        if (t == "api_token" || t == "client_auth_certificate")
            && (action == "generate" || action == "create")
            && !failed
            && actor.is_some_and(|a| watched.contains(a))
        {
            expected.insert(e["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let created: Vec<&(String, bool, Value)> =
        alerts.iter().filter(|a| a.0 == "new-credential").collect();
    let got: std::collections::BTreeSet<String> = created
        .iter()
        .map(|a| {
            a.2["evidence"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
    assert_eq!(got.len(), created.len(), "one alert per creation");
    // Today's creations were sent to the sink; the backfilled ones are suppressed history.
    let sent = std::fs::read_to_string(&sink).unwrap_or_default();
    for a in &created {
        let id = a.2["id"].as_str().expect("uid");
        assert_eq!(sent.contains(id), !a.1, "{}", a.2);
    }
    assert!(
        created.iter().any(|a| a.1) && created.iter().any(|a| !a.1),
        "both history and today's creations: {created:#?}"
    );
    assert!(sent.contains("svc-soon"), "{sent}");
}
