//! Users: directory sync, role changes joined with audit evidence, invitation polling, deletions,
//! faults cutting a listing, and hostile strings, all against the simulator over real HTTP.

use auditwarden::store::{Store, StoredRoleChange};
use serde_json::Value;

use crate::helpers::*;

fn now_ms() -> i64 {
    now().timestamp_millis()
}

/// A digicert-one account `one` and a certcentral account `cc` on the same simulator.
fn both(sim: &Sim, extra: &str) -> App {
    let url = sim.url();
    App::with_accounts(&[
        ("one", "digicert-one", url.as_str(), extra),
        ("cc", "certcentral", url.as_str(), extra),
    ])
}

fn truth_users(sim: &Sim, kind: &str) -> Vec<Value> {
    sim.truth()["users"][kind]
        .as_array()
        .expect("truth users")
        .clone()
}

fn role_changes(app: &App, account: &str, user: &str) -> Vec<StoredRoleChange> {
    let store = Store::open_read_only(&app.db).expect("db");
    store
        .role_changes(account, Some(user))
        .expect("role changes")
}

fn listed_users(app: &App, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["users", "--format", "json"];
    all.extend_from_slice(args);
    let text = run_ok(app, &all);
    serde_json::from_str::<Value>(&text)
        .expect("users json")
        .as_array()
        .expect("array")
        .clone()
}

fn user_row(app: &App, account: &str, id: &str) -> Value {
    listed_users(app, &["--account", account, "--status", "deleted"])
        .into_iter()
        .chain(listed_users(app, &["--account", account]))
        .find(|u| u["id"] == id)
        .unwrap_or_else(|| panic!("user {id} not listed"))
}

fn ms_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time"))
        .expect("rfc3339")
        .timestamp_millis()
}

/// Grants and revokes made between two passes are role changes observed between the two
/// snapshots, each carrying its audit event (actor, time, IP, id) exactly once; a change seen by a
/// user sync before its event was collected gets the evidence later, still once; CertCentral
/// changes are reported from snapshots alone.
#[test]
fn grants_and_revokes_between_syncs_carry_audit_evidence() {
    let sim = Sim::start(&[
        "--users", "30", "--events", "400", "--days", "5", "--seed", "21",
    ]);
    let app = both(&sim, "");
    app.collect_ok();
    let t1 = now_ms();
    let users = truth_users(&sim, "digicert_one");
    let target = users
        .iter()
        .skip(2)
        .find(|u| {
            u["status"] == "ACTIVE"
                && u["roles"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && !r.iter().any(|x| x == "AM_ACCOUNT_ADMIN"))
        })
        .expect("an active user without AM_ACCOUNT_ADMIN");
    let id = target["id"].as_str().expect("id").to_string();
    let old_role = target["roles"][0].as_str().expect("role").to_string();
    let before = role_changes(&app, "one", &id).len();
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
    let t2 = now_ms();
    let out = app.collect_ok();
    assert!(
        out.contains("2 role changes (2 with audit evidence"),
        "{out}"
    );

    let changes = role_changes(&app, "one", &id);
    let new: Vec<_> = changes[before..].to_vec();
    assert_eq!(new.len(), 2, "{new:#?}");
    let admin_id = users[1]["id"].as_str().expect("admin id");
    // What `role-changes` and `export events` show, for the evidence checks below.
    let role_change_rows: Vec<Value> = serde_json::from_str::<Value>(&app.stdout_ok(&[
        "role-changes",
        "--account",
        "one",
        "--format",
        "json",
    ]))
    .expect("role-changes json")
    .as_array()
    .expect("rows")
    .clone();
    let events = app.exported_events();
    for (role, change) in [
        ("AM_ACCOUNT_ADMIN", "granted"),
        (old_role.as_str(), "revoked"),
    ] {
        let c = new
            .iter()
            .find(|c| c.role == role && c.change == change)
            .unwrap_or_else(|| panic!("no {change} {role}: {new:#?}"));
        assert_eq!(c.source, "snapshot+audit");
        let (after, observed) = (c.after_ms.expect("T1"), c.observed_ms.expect("T2"));
        assert!(
            after <= t1 && observed >= t2,
            "window {after}..{observed} vs {t1}..{t2}"
        );
        let ev = c.evidence.as_ref().expect("evidence");
        assert!(
            ev.event_ms >= t1 - 1000 && ev.event_ms <= t2 + 1000,
            "{ev:?}"
        );
        assert_eq!(ev.actor_id.as_deref(), Some(admin_id));
        assert_eq!(ev.actor_name.as_deref(), Some("admin"));
        assert!(ev.ip_address.is_some(), "{ev:?}");
        let n = role_change_rows
            .iter()
            .filter(|r| r["event_id"] == ev.event_id.as_str())
            .count();
        assert_eq!(n, 1, "event {} counted {n} times", ev.event_id);
        let data = events
            .iter()
            .filter(|e| {
                e["id"] == ev.event_id.as_str()
                    && e["resource_id"] == id.as_str()
                    && e["raw"]["data"].to_string().contains(role)
            })
            .count();
        assert_eq!(data, 1, "the evidence is not the stored grant/revoke event");
    }

    // A user sync that runs before the audit log is collected: snapshot first, evidence later.
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{id}/grant"),
        &format!(r#"{{"role":"{old_role}"}}"#),
    );
    run_ok(&app, &["sync-users", "--account", "one"]);
    let c = role_changes(&app, "one", &id).pop().expect("change");
    assert_eq!(
        (c.role.as_str(), c.change.as_str(), c.source.as_str()),
        (old_role.as_str(), "granted", "snapshot")
    );
    app.collect_ok();
    app.collect_ok();
    let after = role_changes(&app, "one", &id);
    assert_eq!(after.len(), before + 3, "{after:#?}");
    let last = after.last().expect("change");
    assert_eq!(last.source, "snapshot+audit");
    assert_eq!(last.seq, c.seq, "the evidence joined the existing change");

    // CertCentral: no audit log, so the change is "observed between T1 and T2".
    let cc = &truth_users(&sim, "certcentral")[3];
    let cc_id = cc["id"].to_string();
    let has_admin = cc["access_roles"]
        .as_array()
        .is_some_and(|r| r.iter().any(|x| x["id"] == 1));
    let verb = if has_admin { "revoke" } else { "grant" };
    let t3 = now_ms();
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{cc_id}/{verb}"),
        r#"{"role":"Administrator"}"#,
    );
    run_ok(&app, &["sync-users"]);
    let cc_changes = role_changes(&app, "cc", &cc_id);
    assert_eq!(cc_changes.len(), 1, "{cc_changes:#?}");
    let c = &cc_changes[0];
    assert_eq!(c.role, "Administrator");
    assert_eq!(c.source, "snapshot");
    assert!(c.evidence.is_none());
    assert!(c.after_ms.expect("T1") <= t3 && c.observed_ms.expect("T2") >= t3);

    // `role-changes` tells the same story: who, when, from where, or the window.
    let text = run_ok(&app, &["role-changes", "--user", &id, "--format", "json"]);
    let listed: Vec<Value> = serde_json::from_str(&text).expect("json");
    let admin = listed
        .iter()
        .find(|r| {
            r["role"] == "AM_ACCOUNT_ADMIN"
                && r["change"] == "granted"
                && r["source"] == "snapshot+audit"
        })
        .expect("the grant");
    assert_eq!(admin["actor_name"], "admin");
    assert_eq!(admin["when"], admin["event_time"]);
    let text = run_ok(
        &app,
        &["role-changes", "--account", "cc", "--format", "json"],
    );
    let listed: Vec<Value> = serde_json::from_str(&text).expect("json");
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["when"]
        .as_str()
        .is_some_and(|w| w.starts_with("observed between ")));
    let table = run_ok(
        &app,
        &[
            "role-changes",
            "--account",
            "one",
            "--role",
            "AM_ACCOUNT_ADMIN",
        ],
    );
    assert!(table.contains(" by admin from "), "{table}");
}

/// An invited user who accepts is seen flipping exactly once, by the poll, with the window it
/// happened in; polls and syncs afterwards add nothing. Polling asks only for invited users.
#[test]
fn invited_user_accepting_flips_exactly_once() {
    let sim = Sim::start(&[
        "--users", "40", "--events", "300", "--days", "3", "--seed", "4",
    ]);
    let app = both(&sim, "");
    run_ok(&app, &["sync-users"]);
    let one = control(
        &sim,
        "POST",
        "/_sim/users",
        r#"{"kind":"digicert-one","user_name":"new.person","status":"PENDING","roles":["AM_VIEW_ONLY"]}"#,
    );
    let cc = control(
        &sim,
        "POST",
        "/_sim/users",
        r#"{"kind":"certcentral","user_name":"cc.new","status":"invited","roles":["Limited User"]}"#,
    );
    let (one_id, cc_id) = (
        one["id"].as_str().expect("id").to_string(),
        cc["id"].to_string(),
    );
    run_ok(&app, &["sync-users"]);
    let invited = listed_users(&app, &["--status", "invited"]);
    let invited_before = invited.len();
    assert!(invited_before >= 2);
    // Stale: invited more than 14 days ago (the default), by the API's created_at when it has one.
    let stale_cut = now_ms() - 14 * 86_400_000;
    for u in &invited {
        let old = ms_of(&u["invited"]) < stale_cut;
        assert_eq!(u["stale_invite"], old, "{u}");
    }
    assert!(invited.iter().any(|u| u["stale_invite"] == true));
    assert!(invited
        .iter()
        .any(|u| u["id"] == one_id.as_str() && u["stale_invite"] == false));
    let t1 = now_ms();
    control(&sim, "POST", &format!("/_sim/users/{one_id}/accept"), "");
    control(&sim, "POST", &format!("/_sim/users/{cc_id}/accept"), "");
    let t2 = now_ms();
    let out = run_ok(&app, &["poll-invites"]);
    assert!(out.contains("1 accepted"), "{out}");
    let checked: u64 = out
        .lines()
        .filter_map(|l| l.trim().split(" checked").next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        checked as usize, invited_before,
        "poll checks the invited users only: {out}"
    );
    run_ok(&app, &["poll-invites"]);
    run_ok(&app, &["sync-users"]);
    app.collect_ok();

    for (account, id) in [("one", &one_id), ("cc", &cc_id)] {
        // Raw SQL: no command lists a user's status history (`users` shows the current state).
        let flips = app.sql_count(&format!(
            "SELECT COUNT(*) FROM user_history WHERE account = '{account}' AND user_id = '{id}'
               AND field = 'status' AND before = 'invited' AND after = 'active'"
        ));
        assert_eq!(flips, 1, "{account} {id} flipped {flips} times");
        let src = app.sql_count(&format!(
            "SELECT COUNT(*) FROM user_history WHERE account = '{account}' AND user_id = '{id}'
               AND field = 'status' AND source = 'poll' AND after_ms <= {t1} AND observed_ms >= {t2}"
        ));
        assert_eq!(
            src, 1,
            "{account}: the flip was seen by the poll within its window"
        );
        let u = user_row(&app, account, id);
        assert_eq!(u["status"], "active");
        let invited = ms_of(&u["invited"]);
        assert!(invited <= t1, "{u}");
        assert!(ms_of(&u["accepted_after"]) <= t1, "{u}");
        // CertCentral's sign-in time has whole seconds.
        let accepted = ms_of(&u["accepted"]);
        assert!(accepted >= t1 - 1000 && accepted <= now_ms(), "{u}");
        let secs = u["invite_to_accept_secs"]
            .as_i64()
            .unwrap_or_else(|| panic!("{u}"));
        assert_eq!(secs, (accepted - invited).max(0) / 1000);
        assert_eq!(u["stale_invite"], false);
    }
    // CertCentral tells the sign-in time; on DigiCert ONE the collected sign-in event does.
    let u = user_row(&app, "cc", &cc_id);
    assert_eq!(u["accepted"], u["last_login"], "{u}");
    assert_eq!(u["accepted_source"], "last_login_date");
    let u = user_row(&app, "one", &one_id);
    assert!(
        u["accepted_source"]
            .as_str()
            .is_some_and(|s| s.starts_with("audit event ")),
        "{u}"
    );
    assert_eq!(u["accepted"], u["last_activity"], "{u}");
}

/// A user deleted in DigiCert is recorded as deleted (with when it was last seen) by the next
/// complete listing, stays listed under --status deleted, and an idle sync writes nothing.
#[test]
fn deleted_user_is_recorded() {
    let sim = Sim::start(&[
        "--users", "25", "--events", "200", "--days", "3", "--seed", "9",
    ]);
    let app = both(&sim, "page_size = 7");
    run_ok(&app, &["sync-users"]);
    let idle = run_ok(&app, &["sync-users"]);
    assert_eq!(idle.matches("  0 rows written").count(), 2, "{idle}");
    let t_seen = now_ms();
    let victim = truth_users(&sim, "digicert_one")[5]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cc_victim = truth_users(&sim, "certcentral")[4]["id"].to_string();
    control(&sim, "DELETE", &format!("/_sim/users/{victim}"), "");
    control(&sim, "DELETE", &format!("/_sim/users/{cc_victim}"), "");
    let out = run_ok(&app, &["sync-users"]);
    assert_eq!(out.matches(", 1 deleted").count(), 2, "{out}");
    for (account, id) in [("one", &victim), ("cc", &cc_victim)] {
        let u = user_row(&app, account, id);
        assert_eq!(u["status"], "deleted", "{u}");
        assert!(ms_of(&u["last_seen"]) <= t_seen, "{u}");
        assert!(ms_of(&u["deleted"]) >= t_seen, "{u}");
        assert!(!listed_users(&app, &["--account", account])
            .iter()
            .any(|x| x["id"] == **id));
    }
    let again = run_ok(&app, &["sync-users"]);
    assert!(again.contains(", 0 deleted"), "{again}");
    assert_eq!(app.users_json(Some("deleted")).len(), 2);
}

/// A listing cut half-way by server errors (no retries) marks nobody deleted, even a user who
/// really is gone; the next complete listing records exactly that one.
#[test]
fn listing_cut_by_faults_deletes_nobody() {
    let sim = Sim::start(&[
        "--users", "40", "--events", "100", "--days", "2", "--seed", "6",
    ]);
    let app = both(&sim, "page_size = 4\nmax_retries = 0");
    run_ok(&app, &["sync-users"]);
    let victim = truth_users(&sim, "digicert_one")[7]["id"]
        .as_str()
        .expect("id")
        .to_string();
    control(&sim, "DELETE", &format!("/_sim/users/{victim}"), "");
    control(&sim, "POST", "/_sim/faults", "server-error=0.25");
    let mut cut_half_way = 0;
    for _ in 0..12 {
        let out = app.run(&["sync-users"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            app.users_json(Some("deleted")).len(),
            0,
            "a faulty listing deleted someone: {text}"
        );
        if !out.status.success() && text.contains("incomplete, nobody marked deleted") {
            let listed_some = text.lines().any(|l| {
                l.trim()
                    .split(" listed")
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            });
            if listed_some {
                cut_half_way += 1;
            }
        }
        if cut_half_way >= 2 {
            break;
        }
    }
    assert!(cut_half_way >= 1, "no listing was cut half-way");
    control(&sim, "POST", "/_sim/faults", "");
    let out = run_ok(&app, &["sync-users"]);
    assert!(out.contains(", 1 deleted"), "{out}");
    assert_eq!(app.users_json(Some("deleted")).len(), 1);
    assert_eq!(user_row(&app, "one", &victim)["status"], "deleted");
}

/// Hostile strings in names come back exactly through the database and JSON, CSV cells that a
/// spreadsheet would run are neutralized, and the table shows no raw control characters.
#[test]
fn hostile_strings_in_names_round_trip_exactly() {
    let sim = Sim::start(&[
        "--users", "60", "--events", "200", "--days", "2", "--seed", "13",
    ]);
    let app = both(&sim, "");
    let hostile = [
        "=HYPERLINK(\"http://evil\",\"x\")",
        "+cmd|' /C calc'!A0",
        "two\r\nlines",
        "tab\there",
        "\u{202E}gnp.exe",
        "Zoë 名前 \u{200B}\u{FEFF}x 🚀",
    ];
    for h in hostile {
        let body =
            serde_json::json!({"kind": "digicert-one", "user_name": h, "roles": ["AM_VIEW_ONLY"]});
        control(&sim, "POST", "/_sim/users", &body.to_string());
        let body = serde_json::json!({"kind": "certcentral", "user_name": h, "last_name": h});
        control(&sim, "POST", "/_sim/users", &body.to_string());
    }
    run_ok(&app, &["sync-users"]);
    let listed = listed_users(&app, &["--status", "active"])
        .into_iter()
        .chain(listed_users(&app, &[]))
        .collect::<Vec<_>>();
    let find = |account: &str, id: &str| {
        listed
            .iter()
            .find(|u| u["account"] == account && u["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{account} {id} not listed"))
    };
    let mut checked = 0;
    for u in truth_users(&sim, "digicert_one") {
        let mine = find("one", u["id"].as_str().expect("id"));
        if let Some(name) = u.get("user_name") {
            assert_eq!(&mine["user_name"], name);
            checked += 1;
        } else {
            assert_eq!(&mine["display_name"], &u["friendly_name"]);
        }
        assert_eq!(&mine["email"], u.get("email").unwrap_or(&Value::Null));
    }
    for u in truth_users(&sim, "certcentral") {
        let mine = find("cc", &u["id"].to_string());
        assert_eq!(&mine["user_name"], &u["username"]);
        let display = format!(
            "{} {}",
            u["first_name"].as_str().unwrap_or(""),
            u["last_name"].as_str().unwrap_or("")
        );
        assert_eq!(
            mine["display_name"].as_str().map(str::trim),
            Some(display.trim())
        );
        checked += 1;
    }
    assert!(checked > 60);
    for h in hostile {
        assert!(
            listed.iter().any(|u| u["user_name"] == h),
            "{h:?} did not round-trip"
        );
    }

    let csv = run_ok(&app, &["users", "--format", "csv"]);
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let header = r.headers().expect("header").clone();
    let col = header
        .iter()
        .position(|h| h == "user_name")
        .expect("user_name column");
    let names: Vec<String> = r
        .records()
        .map(|rec| rec.expect("record")[col].to_string())
        .collect();
    for cell in &names {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "formula cell {cell:?}"
        );
    }
    assert!(names
        .iter()
        .any(|n| n == "'=HYPERLINK(\"http://evil\",\"x\")"));
    assert!(names.iter().any(|n| n == "two\r\nlines"));

    let table = run_ok(&app, &["users"]);
    assert!(
        !table.contains('\r') && !table.contains('\u{202E}'),
        "raw control characters in the table"
    );
}

/// Under every request fault (with retries) and in every response shape, a sync stores exactly
/// the simulator's users: same ids, statuses and roles, and nobody deleted.
#[test]
fn user_sync_under_faults_and_shapes_matches_truth() {
    for faults in [
        "rate-limit=0.1,rate-limit-bare=0.15,server-error=0.15,truncate=0.15",
        "user-envelope,role-objects,error-shapes,server-error=0.1",
        "bare,slow=0.05,slow-ms=2500",
    ] {
        let sim = Sim::start(&[
            "--users", "45", "--events", "200", "--days", "2", "--faults", faults,
        ]);
        let app = both(&sim, "page_size = 6");
        run_ok(&app, &["sync-users"]);
        let mine = listed_users(&app, &[]);
        assert_eq!(app.users_json(Some("deleted")).len(), 0);
        let truth_one = truth_users(&sim, "digicert_one");
        let truth_cc = truth_users(&sim, "certcentral");
        assert_eq!(mine.len(), truth_one.len() + truth_cc.len(), "{faults}");
        let status = |raw: &str| match raw.to_ascii_lowercase().as_str() {
            "pending" | "invited" => "invited".to_string(),
            "inactive" => "disabled".to_string(),
            s => s.to_string(),
        };
        for (account, truth, roles_key, role_field) in [
            ("one", &truth_one, "roles", None),
            ("cc", &truth_cc, "access_roles", Some("name")),
        ] {
            for t in truth.iter() {
                let id = match &t["id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let u = mine
                    .iter()
                    .find(|u| u["account"] == account && u["id"] == id.as_str())
                    .unwrap_or_else(|| panic!("{faults}: {account} {id} missing"));
                assert_eq!(
                    u["status"],
                    status(t["status"].as_str().unwrap_or("")),
                    "{faults}: {u}"
                );
                let mut roles: Vec<String> = t[roles_key]
                    .as_array()
                    .expect("roles")
                    .iter()
                    .map(|r| match role_field {
                        Some(f) => r[f].as_str().unwrap_or("").to_string(),
                        None => r.as_str().unwrap_or("").to_string(),
                    })
                    .collect();
                roles.sort();
                roles.dedup();
                let got: Vec<String> = u["roles"]
                    .as_array()
                    .expect("roles")
                    .iter()
                    .map(|r| r.as_str().unwrap_or("").to_string())
                    .collect();
                assert_eq!(got, roles, "{faults}: {account} {id}");
            }
        }
    }
}

/// User listings that would never end (the same page whatever the offset, new ids on every page,
/// a total that lies) stop within `max_pages_per_window` with an error naming the listing;
/// nobody is marked deleted and none of the users such a listing made up is recorded.
#[test]
fn endless_user_listings_stop_and_delete_nobody() {
    let sim = Sim::start(&["--events", "50", "--days", "2", "--users", "120"]);
    let app = both(&sim, "max_pages_per_window = 30\n");
    run_ok(&app, &["sync-users"]);
    let known = app.all_users().len();
    assert!(known >= 200, "{known} users");
    for (faults, reason) in [
        ("repeat-pages", "does not honour offset"),
        ("endless", "kept growing past its total"),
        ("endless,lying-total", "did not end after 30 pages"),
    ] {
        let (s, b) = sim.http("POST", "/_sim/faults", faults);
        assert!(s < 300, "{s} {b}");
        let out = app.run(&["sync-users"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(1), "{faults}: {stdout}");
        assert!(
            stdout.contains("listing") && stdout.contains(reason),
            "{faults}: {stdout}"
        );
        assert!(
            stdout.contains("nobody marked deleted"),
            "{faults}: {stdout}"
        );
        assert_eq!(
            app.users_json(Some("deleted")).len(),
            0,
            "{faults}: a user was marked deleted"
        );
        let phantoms: Vec<Value> = app
            .all_users()
            .into_iter()
            .filter(|u| {
                u["user_name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("phantom-"))
            })
            .collect();
        assert_eq!(phantoms.len(), 0, "{faults}: made-up users recorded");
        assert_eq!(app.all_users().len(), known, "{faults}");
    }
    // Back to a faithful server: every real user is still there, and there is no made-up user
    // to find gone (none was recorded), so nobody is deleted.
    let (s, b) = sim.http("POST", "/_sim/faults", "");
    assert!(s < 300, "{s} {b}");
    run_ok(&app, &["sync-users"]);
    let deleted = app.users_json(Some("deleted"));
    assert_eq!(deleted.len(), 0, "{deleted:?}");
    assert_eq!(app.all_users().len(), known);
}
