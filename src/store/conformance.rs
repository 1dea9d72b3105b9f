//! The store's conformance suite: what every [`Backend`](super::Backend) must do, written
//! against the interface only. Each backend runs every case on a fresh, empty store of its own
//! through [`backend_conformance!`] (SQLite below; another backend adds one invocation).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    Claim, Deferred, Deletion, DeliveryUpdate, EventFilter, Evidence, HistoryRow, NewAlert,
    PageWrite, PassRecord, ReportRun, ReportRunState, RoleChange, Store, UserBatch, UserRow,
    UserSelection, WindowDone,
};
use crate::api::wire::{parse_event, ParsedEvent};
use crate::api::{AuditEvent, Malformed};
use crate::store::chain::ChainKind;

/// One `#[test]` per conformance case, each on a store from `$fresh` (an expression returning
/// `(guard, Store)`; the guard lives until the case ends: a temporary directory, a database to
/// drop).
#[macro_export]
#[doc(hidden)]
macro_rules! backend_conformance {
    ($fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (_guard, store) = $fresh;
                $crate::store::conformance::$case(store);
            }
        )*
    };
    ($fresh:expr) => {
        $crate::backend_conformance!($fresh;
            pages_are_idempotent_and_carry_coverage,
            a_claim_excludes_other_runs_until_its_lease_lapses,
            a_claim_of_an_exited_owner_is_void,
            deferred_deliveries_wait_then_give_up_past_the_horizon,
            report_runs_move_from_pending,
            user_batches_chain_their_history_and_verify_clean,
            role_links_attach_evidence_once_and_move_the_watermark,
            reports_stream_in_order_and_stop_when_asked,
            status_exports_and_quarantine_say_what_is_stored,
            a_copy_in_and_out_keeps_the_history_and_its_chains,
            review_campaigns_chain_their_rows_and_verify_clean,
            a_tick_is_claimed_once_whoever_asks,
            alert_facts_reach_the_rules_once,
        );
    };
}

fn event(id: &str) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        timestamp: DateTime::parse_from_rfc3339("2026-11-02T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
        action: "login".into(),
        resource_type: None,
        resource_id: None,
        resource_name: None,
        actor_id: None,
        actor_name: Some("<b>\"x\"</b>\n".into()),
        status: Some("success".into()),
        ip_address: None,
        description: None,
        data: None,
        account_id: None,
        raw: format!("{{\"id\":\"{id}\"}}"),
    }
}

/// Re-storing a page inserts nothing twice; the window's coverage lands with its last page.
pub fn pages_are_idempotent_and_carry_coverage(mut s: Store) {
    let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let evs = [event("a"), event("b")];
    let w = PageWrite {
        account: "acc",
        action_filter: "",
        day: Some(day),
        events: &evs,
        malformed: &[],
        done: Some(WindowDone {
            server_total: Some(2),
            received: 2,
        }),
    };
    assert_eq!(s.write_page(&w).unwrap().inserted, 2);
    let again = s.write_page(&w).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 2));
    let cov = s.coverage("acc", "", day, day).unwrap();
    assert!(cov[0].complete);
    assert_eq!(cov[0].server_total, Some(2));
    assert_eq!(s.event_ids("acc").unwrap(), vec!["a", "b"]);
    s.mark_incomplete("acc", "", day, "paging kept shifting")
        .unwrap();
    let st = s.account_status("acc").unwrap();
    assert_eq!(st.events, 2);
    assert_eq!(st.incomplete.len(), 1);
}

const A: &str = "host-a:100:aaaa";
const B: &str = "host-b:200:bbbb";

fn never_gone(_: &str) -> bool {
    false
}

/// A store with `n` alerts, each with a pending delivery to sink `soc`; their delivery ids.
fn outbox(mut store: Store, n: usize) -> (Store, Vec<i64>) {
    let alerts: Vec<NewAlert> = (0..n)
        .map(|i| NewAlert {
            key: format!("r|a|{i}"),
            uid: format!("aw_{i}"),
            rule: "r".into(),
            severity: "high".into(),
            at_ms: Some(0),
            summary: format!("alert {i}"),
            payload: "{}".into(),
            suppressed: false,
            role_change_seq: None,
        })
        .collect();
    store
        .record_alerts("a", &["soc".into()], 1_000, &mut |_, _| alerts.clone())
        .unwrap();
    let ids = due(&store, 1_000);
    (store, ids)
}

fn due(store: &Store, now_ms: i64) -> Vec<i64> {
    store
        .due_deliveries(&["soc".into()], now_ms)
        .unwrap()
        .due
        .iter()
        .filter_map(|d| d.delivery_id)
        .collect()
}

fn status(store: &Store, id: i64) -> String {
    store
        .list_alerts(None, 100)
        .unwrap()
        .into_iter()
        .find(|d| d.delivery_id == Some(id))
        .map(|d| d.status.as_str().to_string())
        .unwrap()
}

/// A claim keeps other runs off a delivery until its lease lapses; after a takeover only the
/// new holder's outcome is recorded, and a finished delivery cannot be claimed again.
pub fn a_claim_excludes_other_runs_until_its_lease_lapses(store: Store) {
    let (mut store, ids) = outbox(store, 1);
    let id = ids[0];
    assert!(matches!(
        store
            .claim_delivery(id, A, 1_000, 2_000, &never_gone)
            .unwrap(),
        Claim::Claimed { .. }
    ));
    assert_eq!(
        store
            .claim_delivery(id, B, 1_500, 2_500, &never_gone)
            .unwrap(),
        Claim::Held
    );
    // The holder may claim again (renew).
    assert!(matches!(
        store
            .claim_delivery(id, A, 1_600, 2_600, &never_gone)
            .unwrap(),
        Claim::Claimed { .. }
    ));
    assert!(matches!(
        store
            .claim_delivery(id, B, 2_601, 3_600, &never_gone)
            .unwrap(),
        Claim::Claimed { .. }
    ));
    assert!(!store
        .record_delivery(id, A, DeliveryUpdate::Sent, 2_700)
        .unwrap());
    assert_eq!(status(&store, id), "pending");
    assert!(store
        .record_delivery(id, B, DeliveryUpdate::Sent, 2_800)
        .unwrap());
    assert_eq!(status(&store, id), "sent");
    assert_eq!(
        store
            .claim_delivery(id, A, 9_000, 10_000, &never_gone)
            .unwrap(),
        Claim::Gone
    );
}

/// A live lease whose owner is known to have exited does not hold the delivery.
pub fn a_claim_of_an_exited_owner_is_void(store: Store) {
    let (mut store, ids) = outbox(store, 1);
    store
        .claim_delivery(ids[0], A, 1_000, 60_000, &never_gone)
        .unwrap();
    let gone = |o: &str| o == A;
    assert!(matches!(
        store
            .claim_delivery(ids[0], B, 1_100, 60_000, &gone)
            .unwrap(),
        Claim::Claimed { .. }
    ));
}

/// A deferred backlog is not due before its next attempt, and dead-letters only once it has
/// been failing for the horizon; `retry_alert` makes a waiting delivery due at once.
pub fn deferred_deliveries_wait_then_give_up_past_the_horizon(store: Store) {
    let (mut store, ids) = outbox(store, 3);
    store
        .claim_delivery(ids[0], A, 1_000, 2_000, &never_gone)
        .unwrap();
    let later = DeliveryUpdate::Later {
        error: "503",
        next_attempt_ms: 5_000,
    };
    assert!(store.record_delivery(ids[0], A, later, 1_000).unwrap());
    let d = store
        .defer_deliveries(
            &ids[1..],
            A,
            1_000,
            5_000,
            1_000 - 10_000,
            "blocked",
            "gave up",
        )
        .unwrap();
    assert_eq!(
        d,
        Deferred {
            later: 2,
            given_up: 0
        }
    );
    let listed = store.due_deliveries(&["soc".into()], 4_999).unwrap();
    assert!(listed.due.is_empty());
    assert_eq!(listed.waiting.get("soc"), Some(&(3, Some(5_000))));
    assert_eq!(due(&store, 5_000), ids);
    // The first one failed again, its history is handed to the next claim.
    assert_eq!(
        store
            .claim_delivery(ids[0], A, 6_000, 7_000, &never_gone)
            .unwrap(),
        Claim::Claimed {
            failing_since_ms: Some(1_000),
            failed_runs: 1
        }
    );
    // 11 s after the first failure, with a 10 s horizon: the rest give up.
    let d = store
        .defer_deliveries(
            &ids[1..],
            A,
            12_000,
            20_000,
            12_000 - 10_000,
            "blocked",
            "gave up",
        )
        .unwrap();
    assert_eq!(
        d,
        Deferred {
            later: 0,
            given_up: 2
        }
    );
    assert_eq!(status(&store, ids[1]), "failed");
    // The claimed one is untouched by another run's defer while the claim is live.
    let d = store
        .defer_deliveries(&ids[..1], B, 6_500, 20_000, -1, "blocked", "gave up")
        .unwrap();
    assert_eq!(d, Deferred::default());
    let later = DeliveryUpdate::Later {
        error: "503",
        next_attempt_ms: 90_000,
    };
    assert!(store.record_delivery(ids[0], A, later, 6_500).unwrap());
    let alert = store
        .list_alerts(None, 100)
        .unwrap()
        .into_iter()
        .find(|d| d.delivery_id == Some(ids[0]))
        .unwrap();
    assert_eq!(
        store.retry_alert(alert.alert_id, &[], 7_000).unwrap(),
        Some(1)
    );
    assert_eq!(due(&store, 7_000), vec![ids[0]]);
}

/// A run is pending until saved done or failed; saving twice updates, never duplicates.
pub fn report_runs_move_from_pending(mut s: Store) {
    let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
    let mut run = ReportRun {
        account: "cc".into(),
        report_id: "r1".into(),
        run_id: "u1".into(),
        start: d(1),
        end: d(7),
        state: ReportRunState::Pending,
        status: Some("QUEUED".into()),
        // Whole milliseconds, as stored.
        created: chrono::DateTime::from_timestamp_millis(1_764_000_000_000).unwrap(),
        rows: None,
        note: None,
    };
    s.save_report_run(&run).unwrap();
    s.save_report_run(&run).unwrap();
    assert_eq!(s.pending_report_runs("cc").unwrap(), vec![run.clone()]);
    run.state = ReportRunState::Done;
    run.rows = Some(12);
    s.save_report_run(&run).unwrap();
    assert!(s.pending_report_runs("cc").unwrap().is_empty());
    assert_eq!(s.recent_report_runs("cc", 5).unwrap()[0].rows, Some(12));
    assert!(s.pending_report_runs("other").unwrap().is_empty());
}

/// An event as the wire parser makes it from `raw` (so `verify` finds its columns consistent).
fn wire_event(raw: &str) -> AuditEvent {
    match parse_event(raw) {
        ParsedEvent::Event(e) => e,
        ParsedEvent::Malformed(m) => panic!("{}", m.reason),
    }
}

fn login(id: &str, minute: u32, actor: &str) -> AuditEvent {
    wire_event(&format!(
        r#"{{"id":"{id}","timestamp":"2026-11-02T08:{minute:02}:00Z","action":"login","user":{{"id":"{actor}","name":"Ann \"{id}\""}},"status":"SUCCESS"}}"#
    ))
}

fn user(id: &str, name: &str, status: &str, roles: &[&str], seen: i64) -> UserRow {
    UserRow {
        user_id: id.into(),
        user_name: Some(name.into()),
        status: crate::domain::UserStatus::parse(status).expect("status"),
        status_raw: status.to_uppercase(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        // As `collect::users` stores it: the one privileged rule.
        privileged: roles
            .iter()
            .any(|r| crate::domain::is_privileged_role_any_kind(r)),
        raw: format!("{{\"id\":\"{id}\"}}"),
        fingerprint: seen,
        first_seen_ms: seen,
        updated_ms: seen,
        invited_ms: (status == "invited").then_some(seen),
        ..Default::default()
    }
}

fn first_seen(id: &str, at: i64) -> HistoryRow {
    HistoryRow {
        user_id: id.into(),
        observed_ms: at,
        after_ms: None,
        field: crate::domain::HistoryField::FirstSeen,
        before: None,
        after: Some("active".into()),
        detail: Some("line\nbreak \"quoted\"".into()),
        source: crate::domain::UserRunKind::Sync,
    }
}

fn findings(s: &Store) -> Vec<String> {
    let mut out = Vec::new();
    s.verify_chains(None, |f| out.push(f.to_string())).unwrap();
    out
}

/// A user batch writes rows, history (extending the account's user-history chain, across
/// batches), role changes and deletions together; listings find the users a listing missed;
/// the chains verify clean.
pub fn user_batches_chain_their_history_and_verify_clean(mut s: Store) {
    let b = UserBatch {
        rows: vec![
            user("u1", "Ann", "active", &["admin"], 1_000),
            user("u2", "Bob", "invited", &["user"], 1_000),
            user("u3", "Cy", "active", &[], 1_000),
        ],
        history: vec![first_seen("u1", 1_000), first_seen("u2", 1_000)],
        role_changes: vec![RoleChange {
            user_id: "u1".into(),
            role: "admin".into(),
            change: crate::domain::RoleChangeKind::Granted,
            observed_ms: Some(1_000),
            after_ms: Some(500),
            evidence: None,
        }],
        ..Default::default()
    };
    assert_eq!(s.write_user_batch("acc", &b).unwrap(), 6);
    let more = UserBatch {
        history: vec![first_seen("u3", 2_000)],
        deletions: vec![Deletion {
            user_id: "u3".into(),
            deleted_ms: 3_000,
            last_seen_ms: 2_000,
        }],
        ..Default::default()
    };
    assert_eq!(s.write_user_batch("acc", &more).unwrap(), 2);
    // Another account's chain is its own.
    s.write_user_batch(
        "other",
        &UserBatch {
            history: vec![first_seen("u1", 5)],
            ..Default::default()
        },
    )
    .unwrap();
    let all = s.load_users("acc").unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all["u1"].roles, vec!["admin"]);
    assert_eq!(all["u1"].raw, "", "raw is not loaded");
    assert_eq!(all["u3"].status, "deleted");
    assert_eq!(all["u3"].deleted_ms, Some(3_000));
    let some = s.load_users_by_id("acc", ["u2", "nobody"]).unwrap();
    assert_eq!(some.keys().collect::<Vec<_>>(), vec!["u2"]);
    assert_eq!(s.invited_user_ids("acc").unwrap(), vec!["u2"]);
    assert_eq!(s.invite_counts("acc", 1_001).unwrap(), (1, 1));
    assert_eq!(s.invite_counts("acc", 1_000).unwrap(), (1, 0));
    let h = s.user_history("acc", "u1").unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].5.as_deref(), Some("line\nbreak \"quoted\""));

    // A listing that served u1 (twice) misses u2; u3 is deleted already.
    s.begin_listing().unwrap();
    assert_eq!(s.mark_listed(&["u1", "u1"]).unwrap(), vec![true, false]);
    assert_eq!(s.mark_listed(&["u1"]).unwrap(), vec![false]);
    assert_eq!(s.unlisted_users("acc", "", 10).unwrap(), vec!["u2"]);
    assert_eq!(
        s.unlisted_users("acc", "u2", 10).unwrap(),
        Vec::<String>::new()
    );
    // Staged users come back in listing order, a chunk at a time; a new listing forgets them.
    s.stage_new_users(&["{\"id\":\"b\"}", "{\"id\":\"a\"}"])
        .unwrap();
    s.stage_new_users(&["{\"id\":\"c\",\"n\":\"é\\n\"}"])
        .unwrap();
    let first = s.staged_users(0, 2).unwrap();
    let raws: Vec<&str> = first.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(raws, ["{\"id\":\"b\"}", "{\"id\":\"a\"}"]);
    let rest = s.staged_users(first[1].0, 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].1, "{\"id\":\"c\",\"n\":\"é\\n\"}");
    assert!(s.staged_users(rest[0].0, 2).unwrap().is_empty());
    s.begin_listing().unwrap();
    assert!(s.staged_users(0, 10).unwrap().is_empty());
    assert_eq!(s.unlisted_users("acc", "", 1).unwrap(), vec!["u1"]);

    let listing = s.list_users(Some("acc")).unwrap();
    assert_eq!(
        listing
            .iter()
            .map(|l| l.user.user_id.as_str())
            .collect::<Vec<_>>(),
        vec!["u1", "u2", "u3"]
    );
    let heads = s.chain_heads(Some("acc")).unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!((heads[0].0, heads[0].2.n), (ChainKind::UserHistory, 3));
    assert_eq!(findings(&s), Vec::<String>::new());
    let mut linked = s.chain_hashes_at(ChainKind::UserHistory, "acc", 3).unwrap();
    assert_eq!(linked.pop(), Some(heads[0].2.hash));
    let summaries = s.verify_chains(None, |_| {}).unwrap();
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries.iter().map(|x| x.rows).sum::<u64>(), 4);
}

fn role_event(id: &str, target: &str, minute: u32) -> AuditEvent {
    let mut e = wire_event(&format!(
        r#"{{"id":"{id}","timestamp":"2026-11-02T09:{minute:02}:00Z","action":"update","user":{{"id":"boss","name":"Boss"}},"resource_type":"user","resource_id":"{target}","status":"SUCCESS","ip_address":"10.0.0.1"}}"#
    ));
    // The role details (contract 1.3) as collected; `verify` is not asked here.
    e.data = Some(r#"{"roles":["admin"]}"#.into());
    e
}

/// Audit evidence attaches to an open snapshot change once; changes only the audit log saw are
/// stored once per event; the watermark moves with them.
pub fn role_links_attach_evidence_once_and_move_the_watermark(mut s: Store) {
    let evs = [
        role_event("e1", "u1", 1),
        role_event("e2", "u2", 2),
        login("e3", 3, "u1"),
    ];
    s.write_page(&PageWrite {
        account: "acc",
        events: &evs,
        ..Default::default()
    })
    .unwrap();
    let role_events = s.role_events_after("acc", 0).unwrap();
    assert_eq!(
        role_events
            .iter()
            .map(|r| r.evidence.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["e1", "e2"]
    );
    assert_eq!(role_events[0].user_id, "u1");
    assert_eq!(role_events[0].evidence.actor_id.as_deref(), Some("boss"));
    assert_eq!(role_events[0].data, r#"{"roles":["admin"]}"#);
    assert!(s
        .role_events_after("acc", role_events[1].seq)
        .unwrap()
        .is_empty());
    s.write_user_batch(
        "acc",
        &UserBatch {
            role_changes: vec![RoleChange {
                user_id: "u1".into(),
                role: "admin".into(),
                change: crate::domain::RoleChangeKind::Granted,
                observed_ms: Some(10_000),
                after_ms: Some(1_000),
                evidence: None,
            }],
            ..Default::default()
        },
    )
    .unwrap();
    let open = s.open_role_changes("acc").unwrap();
    assert_eq!(open.len(), 1);
    let ev = |e: &super::RoleEvent| Evidence {
        ..e.evidence.clone()
    };
    let audit_only = vec![RoleChange {
        user_id: "u2".into(),
        role: "admin".into(),
        change: crate::domain::RoleChangeKind::Granted,
        observed_ms: None,
        after_ms: None,
        evidence: Some(ev(&role_events[1])),
    }];
    let mark = role_events[1].seq;
    let n = s
        .write_role_links(
            "acc",
            &[(open[0].seq, ev(&role_events[0]))],
            &audit_only,
            mark,
        )
        .unwrap();
    assert_eq!(n, 3);
    assert!(s.open_role_changes("acc").unwrap().is_empty());
    assert_eq!(s.role_event_watermark("acc").unwrap(), mark);
    assert_eq!(s.role_event_watermark("other").unwrap(), 0);
    // Again: the same evidence is neither attached nor inserted twice; the mark did not move.
    let n = s
        .write_role_links(
            "acc",
            &[(open[0].seq, ev(&role_events[0]))],
            &audit_only,
            mark,
        )
        .unwrap();
    assert_eq!(n, 0);
    let all = s.role_changes("acc", None).unwrap();
    assert_eq!(
        all.iter()
            .map(|c| (c.user_id.as_str(), c.source.as_str()))
            .collect::<Vec<_>>(),
        vec![("u1", "snapshot+audit"), ("u2", "audit")]
    );
    assert_eq!(all[0].evidence.as_ref().unwrap().event_id, "e1");
    assert_eq!(all[0].observed_ms, Some(10_000));
    assert_eq!(s.role_changes("acc", Some("u2")).unwrap().len(), 1);
    assert!(s
        .role_change_has_event(
            "acc",
            "e2",
            "u2",
            "admin",
            crate::domain::RoleChangeKind::Granted
        )
        .unwrap());
    assert!(!s
        .role_change_has_event(
            "acc",
            "e2",
            "u2",
            "admin",
            crate::domain::RoleChangeKind::Revoked
        )
        .unwrap());
    s.record_user_run(&super::UserRun {
        account: "acc".into(),
        kind: crate::domain::UserRunKind::Sync,
        started_ms: 50,
        finished_ms: 60,
        complete: true,
        listed: 2,
        changes: 1,
        error: None,
    })
    .unwrap();
    assert_eq!(
        s.last_complete_user_run("acc", crate::domain::UserRunKind::Sync)
            .unwrap(),
        Some(50)
    );
    assert_eq!(
        s.last_complete_user_run("acc", crate::domain::UserRunKind::Poll)
            .unwrap(),
        None
    );
}

/// The report reads: role changes filed in a period in time order, and the user selections in
/// their orders (privileged first, whatever the case of "admin"), each stopping when told.
pub fn reports_stream_in_order_and_stop_when_asked(mut s: Store) {
    let evs = [
        login("l1", 1, "u2"),
        login("l2", 5, "u2"),
        login("l3", 2, "u3"),
    ];
    s.write_page(&PageWrite {
        account: "acc",
        events: &evs,
        ..Default::default()
    })
    .unwrap();
    let t0 = evs[0].timestamp.timestamp_millis();
    let mut invited = user("u4", "dana", "invited", &[], t0 - 100);
    invited.created_ms = Some(t0 - 200);
    s.write_user_batch(
        "acc",
        &UserBatch {
            rows: vec![
                user("u1", "zed", "active", &["Account ADMIN"], t0 - 1_000),
                user("u2", "Amy", "active", &["user"], t0 - 1_000),
                user("u3", "bert", "active", &["user"], t0 - 1_000),
                invited,
                user("u5", "gone", "deleted", &["admin"], t0 - 1_000),
            ],
            role_changes: ["u2", "u1", "u3"]
                .iter()
                .enumerate()
                .map(|(i, u)| RoleChange {
                    user_id: u.to_string(),
                    role: "admin".into(),
                    change: crate::domain::RoleChangeKind::Granted,
                    observed_ms: Some(3_000 - i as i64 * 1_000),
                    after_ms: Some(0),
                    evidence: None,
                })
                .collect(),
            ..Default::default()
        },
    )
    .unwrap();
    let mut seen = Vec::new();
    let n = s
        .for_each_role_change_in("acc", 1_000, 3_000, |r| {
            seen.push((r.change.user_id.clone(), r.at_ms, r.user_name.clone()));
            Ok::<_, super::StoreError>(())
        })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        seen,
        vec![
            ("u3".to_string(), 1_000, Some("bert".to_string())),
            ("u1".to_string(), 2_000, Some("zed".to_string()))
        ]
    );
    let order = |sel| {
        let mut out = Vec::new();
        s.for_each_user_activity("acc", sel, |r| {
            out.push((
                r.listing.user.user_id.clone(),
                r.privileged,
                r.inactive_since_ms,
            ));
            Ok::<_, super::StoreError>(())
        })
        .unwrap();
        out
    };
    let current = order(UserSelection::Current);
    assert_eq!(
        current
            .iter()
            .map(|c| (c.0.as_str(), c.1))
            .collect::<Vec<_>>(),
        vec![("u1", true), ("u2", false), ("u3", false), ("u4", false)],
        "privileged first, then by name ignoring case"
    );
    // Amy's latest event is l2 (minute 5); bert's l3; zed never acted; dana was invited.
    let since: std::collections::HashMap<_, _> =
        current.iter().map(|c| (c.0.clone(), c.2)).collect();
    assert_eq!(since["u2"], evs[1].timestamp.timestamp_millis());
    assert_eq!(since["u3"], evs[2].timestamp.timestamp_millis());
    assert_eq!(since["u1"], t0 - 1_000);
    assert_eq!(since["u4"], t0 - 100);
    let dormant = order(UserSelection::InactiveSince(t0));
    assert_eq!(
        dormant.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        vec!["u1", "u4"]
    );
    let inv = order(UserSelection::Invitations);
    assert_eq!(
        inv.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        vec!["u4"]
    );
    let mut first = None;
    let n = s
        .for_each_user_activity("acc", UserSelection::Current, |r| {
            first = Some(r.listing.user.user_id);
            Err(super::StoreError::NotOurs {
                location: "test".into(),
                what: "stop".into(),
            })
        })
        .map_err(|e| e.to_string());
    assert_eq!(n, Err("test: stop".to_string()));
    assert_eq!(first.as_deref(), Some("u1"));
}

/// `status`, exports and the quarantine: counts, covered days, incomplete days with their
/// reasons, the last pass and last success, events in (account, time, id) order with filters,
/// quarantined items once each, newest first.
pub fn status_exports_and_quarantine_say_what_is_stored(mut s: Store) {
    let d1 = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let d3 = NaiveDate::from_ymd_opt(2026, 11, 3).unwrap();
    let bad = |k: &str| Malformed {
        key: k.into(),
        raw: format!("{{\"id\":\"{k}\",\"timestamp\":null}}"),
        reason: "no timestamp".into(),
    };
    let evs = [
        login("b", 2, "u1"),
        login("a", 2, "u2"),
        login("c", 1, "u1"),
    ];
    let out = s
        .write_page(&PageWrite {
            account: "acc",
            action_filter: "",
            day: Some(d2),
            events: &evs,
            malformed: &[bad("q1"), bad("q2"), bad("q1")],
            done: Some(WindowDone {
                server_total: Some(5),
                received: 5,
            }),
        })
        .unwrap();
    assert_eq!((out.inserted, out.quarantined), (3, 2));
    let again = s
        .write_page(&PageWrite {
            account: "acc",
            day: Some(d1),
            malformed: &[bad("q2"), bad("q3")],
            done: Some(WindowDone {
                server_total: None,
                received: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(again.quarantined, 1);
    {
        let b = s.batch().unwrap();
        b.mark_incomplete("acc", "", d3, "the server kept shifting pages")
            .unwrap();
        b.record_pass(&PassRecord {
            account: "acc".into(),
            started: DateTime::from_timestamp_millis(1_000).unwrap(),
            finished: DateTime::from_timestamp_millis(2_000).unwrap(),
            error: None,
            new_events: 3,
            duplicates: 0,
            quarantined: 3,
            requests: 4,
            retries: 1,
            rate_limited: 0,
            pace_rps: None,
        })
        .unwrap();
        b.record_pass(&PassRecord {
            account: "acc".into(),
            started: DateTime::from_timestamp_millis(3_000).unwrap(),
            finished: DateTime::from_timestamp_millis(4_000).unwrap(),
            error: Some("429 for too long".into()),
            new_events: 0,
            duplicates: 0,
            quarantined: 0,
            requests: 9,
            retries: 8,
            rate_limited: 0,
            pace_rps: None,
        })
        .unwrap();
        b.commit().unwrap();
    }
    // A batch dropped without commit leaves nothing.
    {
        let mut b = s.batch().unwrap();
        b.write_page(&PageWrite {
            account: "acc",
            events: &[login("z", 9, "u9")],
            ..Default::default()
        })
        .unwrap();
    }
    let st = s.account_status("acc").unwrap();
    assert_eq!((st.events, st.quarantined, st.complete_days), (3, 3, 2));
    assert_eq!((st.first_complete, st.last_complete), (Some(d1), Some(d2)));
    assert_eq!(
        st.incomplete,
        vec![(d3, "the server kept shifting pages".to_string())]
    );
    let last = st.last_pass.unwrap();
    assert_eq!(last.error.as_deref(), Some("429 for too long"));
    assert_eq!((last.requests, last.retries), (9, 8));
    assert_eq!(st.last_success.map(|t| t.timestamp_millis()), Some(2_000));
    let empty = s.account_status("nobody").unwrap();
    assert_eq!((empty.events, empty.last_pass.is_none()), (0, true));
    let cov = s.coverage("acc", "", d1, d3).unwrap();
    assert_eq!(
        cov.iter().map(|c| (c.day, c.complete)).collect::<Vec<_>>(),
        vec![(d1, true), (d2, true), (d3, false)]
    );
    assert_eq!(cov[0].server_total, None);
    assert_eq!(
        cov[2].note.as_deref(),
        Some("the server kept shifting pages")
    );

    let q = s.quarantine(Some("acc"), 2).unwrap();
    assert_eq!(
        q.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(),
        vec!["q3", "q2"]
    );
    assert_eq!(q[0].day, "2026-11-01");
    assert!(s.quarantine(Some("other"), 10).unwrap().is_empty());
    assert_eq!(s.quarantine(None, 10).unwrap().len(), 3);

    let mut ids = Vec::new();
    s.for_each_event(&EventFilter::default(), |e| {
        ids.push(e.id);
        Ok::<_, super::StoreError>(())
    })
    .unwrap();
    assert_eq!(ids, vec!["c", "a", "b"], "by time, then id");
    let mut ids = Vec::new();
    let filter = EventFilter {
        account: Some("acc".into()),
        from: Some(evs[0].timestamp),
        to: None,
        action: Some("login".into()),
    };
    s.for_each_event(&filter, |e| {
        assert_eq!(e.actor_name.as_deref(), Some(&*format!("Ann \"{}\"", e.id)));
        ids.push(e.id);
        Ok::<_, super::StoreError>(())
    })
    .unwrap();
    assert_eq!(ids, vec!["a", "b"]);
    assert_eq!(findings(&s), Vec::<String>::new());
}

fn export(s: &Store) -> Vec<String> {
    let mut out = Vec::new();
    s.for_each_event(&EventFilter::default(), |e| {
        out.push(format!("{} {} {}", e.account, e.id, e.raw));
        Ok::<_, super::StoreError>(())
    })
    .unwrap();
    out
}

/// `store copy` into this backend (from SQLite) and out of it (into SQLite): the same events,
/// users, history and alerts, chains verifying on each target, keys continuing after the copied
/// ones, a second copy inserting nothing, and another history refused.
pub fn a_copy_in_and_out_keeps_the_history_and_its_chains(mut s: Store) {
    use super::copy::{copy, CopyError};
    let dir = tempfile::tempdir().unwrap();
    let mut src = Store::open(&dir.path().join("src.db")).unwrap();
    let evs = [
        login("a", 1, "u1"),
        login("b", 2, "u1"),
        login("c", 3, "u2"),
    ];
    src.write_page(&PageWrite {
        account: "acc",
        events: &evs[..2],
        ..Default::default()
    })
    .unwrap();
    src.write_user_batch(
        "acc",
        &UserBatch {
            rows: vec![user("u1", "Ann", "active", &["admin"], 1_000)],
            history: vec![first_seen("u1", 1_000)],
            ..Default::default()
        },
    )
    .unwrap();
    // A pass with its settled pace (a float column).
    src.record_pass(&PassRecord {
        account: "acc".into(),
        started: DateTime::from_timestamp_millis(1_000).unwrap(),
        finished: DateTime::from_timestamp_millis(2_000).unwrap(),
        error: None,
        new_events: 2,
        duplicates: 0,
        quarantined: 0,
        requests: 3,
        retries: 0,
        rate_limited: 2,
        pace_rps: Some(14.5),
    })
    .unwrap();
    let (src, _ids) = outbox(src, 2);
    let report = copy(&src, &mut s, |_, _, _| {}).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.chains, 2);
    assert_eq!(export(&s), export(&src));
    assert_eq!(s.list_alerts(None, 10).unwrap().len(), 2);
    assert_eq!(s.load_users("acc").unwrap()["u1"].roles, vec!["admin"]);
    // Again: nothing new.
    let again = copy(&src, &mut s, |_, _, _| {}).unwrap();
    assert!(again.tables.iter().all(|t| t.2 == 0), "{:?}", again.tables);
    // The target goes on from the copied keys and heads.
    s.write_page(&PageWrite {
        account: "acc",
        events: &evs[2..],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(findings(&s), Vec::<String>::new());
    let (mut s, _) = outbox(s, 3);
    // Out into SQLite.
    let mut back = Store::open(&dir.path().join("back.db")).unwrap();
    let out = copy(&s, &mut back, |_, _, _| {}).unwrap();
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(export(&back), export(&s));
    assert_eq!(back.list_alerts(None, 10).unwrap().len(), 3);
    for store in [&s, &back] {
        let pass = store.account_status("acc").unwrap().last_pass.unwrap();
        assert_eq!((pass.rate_limited, pass.pace_rps), (2, Some(14.5)));
    }
    // A source with another history: refused, nothing written.
    let mut other = Store::open(&dir.path().join("other.db")).unwrap();
    other
        .write_page(&PageWrite {
            account: "acc",
            events: &[login("zz", 9, "u9")],
            ..Default::default()
        })
        .unwrap();
    let e = copy(&other, &mut s, |_, _, _| {}).unwrap_err();
    assert!(matches!(e, CopyError::Different(_)), "{e}");
    assert_eq!(export(&s).len(), 3);
}

fn review_item(no: i64, user: &str, role: &str, privileged: bool) -> super::ReviewItem {
    super::ReviewItem {
        item_no: no,
        account: "acc".into(),
        user_id: user.into(),
        // What the canonical bytes must escape the same on every backend.
        user_name: Some("Ann \"the admin\" \\ O'Neil\n\tnew\u{1}line \u{7f} é 漢 \u{2028}".into()),
        email: (no % 2 == 1).then(|| format!("{user}@example.com")),
        user_type: None,
        status: "active".into(),
        role: role.into(),
        privileged,
        last_activity_ms: (no == 1).then_some(1_700_000_000_000),
        activity_source: (no == 1).then(|| "audit log".into()),
        dormant: !privileged,
        granted: "granted by admin@example.com (event e1)".into(),
        granted_ms: Some(1_699_000_000_000 + no),
        granted_by_id: Some("u0".into()),
        granted_by_name: None,
        granted_by_email: Some("admin@example.com".into()),
        grant_event_id: Some("e1".into()),
        grant_ip: Some("192.0.2.1".into()),
    }
}

fn decision(item: i64, what: &str, at: i64) -> super::Decision {
    super::Decision {
        item_no: item,
        decision: what.into(),
        justification: format!("because \"{what}\"\n\u{1f}"),
        reviewer: "rev@example.com".into(),
        decided_ms: at,
        source_file: "decisions.csv".into(),
        source_sha256: "ab".repeat(32),
    }
}

/// An access-review campaign: started with its population frozen, decisions appended all or
/// nothing (refused on a campaign that does not exist or is closed), closed once; every row a
/// link of the campaign's chain, which verifies clean. The canonical bytes are SQLite's: a
/// campaign copied from SQLite goes on here, the same campaign started here and on SQLite has
/// the same population hash and chain heads, and a copy back into SQLite verifies there.
pub fn review_campaigns_chain_their_rows_and_verify_clean(mut s: Store) {
    use super::copy::copy;
    use super::{NewCampaign, ReviewRefusal};
    assert!(s.has_reviews().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let campaign = NewCampaign {
        name: "Q4 \"privileged\" review".into(),
        scope: "privileged".into(),
        accounts: vec!["acc".into(), "other".into()],
        reviewers: vec!["rev@example.com".into(), "boss@example.com".into()],
        due_day: Some("2026-12-31".into()),
        started_ms: 1_700_000_000_000,
        chain_heads: "events acc 3 00ff\nuser_history acc 1 ee11".into(),
    };
    let items = [
        review_item(1, "u1", "admin", true),
        review_item(2, "u2", "user", false),
    ];
    // A campaign started on SQLite with a decision, copied in.
    let mut src = Store::open(&dir.path().join("src.db")).unwrap();
    let (first, _) = src.create_review(&campaign, &items).unwrap();
    assert_eq!(
        src.record_review_decisions(first, &[decision(1, "keep", 1)])
            .unwrap(),
        Ok(1)
    );
    let report = copy(&src, &mut s, |_, _, _| {}).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(s.review_items(first).unwrap(), items.to_vec());
    assert_eq!(
        s.review_head(first).unwrap(),
        src.review_head(first).unwrap()
    );
    let mut twin = Store::open(&dir.path().join("twin.db")).unwrap();
    copy(&src, &mut twin, |_, _, _| {}).unwrap();

    // The same campaign started here and on SQLite: the same id, population and links.
    let (id, sha) = s.create_review(&campaign, &items).unwrap();
    assert_eq!(
        twin.create_review(&campaign, &items).unwrap(),
        (id, sha.clone())
    );
    assert_ne!(id, first);
    let c = s.review_campaign(id).unwrap().unwrap();
    assert_eq!(c.name, campaign.name);
    assert_eq!(c.accounts, campaign.accounts);
    assert_eq!(c.reviewers, campaign.reviewers);
    assert_eq!(c.due_day, campaign.due_day);
    assert_eq!(c.items, 2);
    assert_eq!(c.population_sha256, sha);
    assert_eq!(c.closed_ms, None);
    assert_eq!(s.review_items(id).unwrap(), items.to_vec());
    assert_eq!(s.review_head(id).unwrap().n, 3);

    // Decisions: appended in order, a changed one is a new row.
    let ds = [decision(1, "keep", 10), decision(2, "revoke", 10)];
    let again = [decision(2, "unsure", 20)];
    for st in [&mut s, &mut twin] {
        assert_eq!(st.record_review_decisions(id, &ds).unwrap(), Ok(2));
        assert_eq!(st.record_review_decisions(id, &again).unwrap(), Ok(1));
        // The copied campaign's chain goes on here too.
        assert_eq!(
            st.record_review_decisions(first, &[decision(2, "revoke", 30)])
                .unwrap(),
            Ok(1)
        );
    }
    assert_eq!(
        s.review_decisions(id).unwrap(),
        [ds[0].clone(), ds[1].clone(), again[0].clone()].to_vec()
    );
    assert_eq!(s.review_decisions(first).unwrap().len(), 2);
    assert_eq!(
        s.record_review_decisions(id + 100, &ds).unwrap(),
        Err(ReviewRefusal::NoSuchCampaign)
    );

    // Closed once; afterwards nothing more is recorded, not even in part.
    let head = s.close_review(id, 50, 2, 2).unwrap().unwrap();
    assert_eq!(head.n, 7);
    assert_eq!(twin.close_review(id, 50, 2, 2).unwrap().unwrap(), head);
    assert_eq!(s.review_head(id).unwrap(), head);
    assert_eq!(s.review_campaign(id).unwrap().unwrap().closed_ms, Some(50));
    assert_eq!(
        s.record_review_decisions(id, &[decision(1, "revoke", 60)])
            .unwrap(),
        Err(ReviewRefusal::Closed(50))
    );
    assert_eq!(
        s.close_review(id, 70, 2, 2).unwrap(),
        Err(ReviewRefusal::Closed(50))
    );
    assert_eq!(
        s.close_review(id + 100, 70, 2, 2).unwrap(),
        Err(ReviewRefusal::NoSuchCampaign)
    );
    assert_eq!(s.review_decisions(id).unwrap().len(), 3);
    assert_eq!(s.review_head(id).unwrap(), head);
    assert_eq!(
        s.review_head(first).unwrap(),
        twin.review_head(first).unwrap()
    );

    // The chains verify clean, and each campaign is a chain of its own.
    assert_eq!(findings(&s), Vec::<String>::new());
    let summaries = s.verify_chains(None, |_| {}).unwrap();
    let reviews: Vec<(String, i64)> = summaries
        .iter()
        .filter(|x| x.chain == ChainKind::Reviews)
        .map(|x| (x.account.clone(), x.head.n))
        .collect();
    assert_eq!(
        reviews,
        vec![
            (super::review_chain_account(first), 5),
            (super::review_chain_account(id), 7)
        ]
    );
    assert_eq!(
        s.chain_hashes_at(ChainKind::Reviews, &super::review_chain_account(id), 7)
            .unwrap(),
        vec![head.hash]
    );

    // Out into SQLite: verifies there, the same decisions.
    let mut back = Store::open(&dir.path().join("back.db")).unwrap();
    let out = copy(&s, &mut back, |_, _, _| {}).unwrap();
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(
        back.review_decisions(id).unwrap(),
        s.review_decisions(id).unwrap()
    );
    assert_eq!(back.review_head(id).unwrap(), head);
}

/// A read snapshot does not see what another handle commits during it: `verify` beside a
/// running daemon must not read a batch's moved head without its rows (reported as deleted
/// rows). Run by each backend with two handles on one database.
pub fn a_read_snapshot_does_not_see_commits_made_during_it(reader: Store, mut writer: Store) {
    let one = |id: &str, at: i64| UserBatch {
        history: vec![first_seen(id, at)],
        ..Default::default()
    };
    writer.write_user_batch("acc", &one("u1", 1_000)).unwrap();
    let mut seen = Vec::new();
    let mut walked = 0;
    reader
        .read_snapshot(&mut || {
            seen.push(reader.chain_heads(None)?);
            writer.write_user_batch("acc", &one("u2", 2_000))?;
            walked = reader.walk_chains(None, &mut |f| panic!("{f}"))?.len();
            seen.push(reader.chain_heads(None)?);
            Ok(())
        })
        .unwrap();
    assert_eq!(seen[0], seen[1], "the snapshot saw a commit made during it");
    assert!(walked > 0);
    assert_ne!(
        reader.chain_heads(None).unwrap(),
        seen[0],
        "nothing was committed"
    );
    let mut findings = Vec::new();
    reader
        .verify_chains(None, |f| findings.push(f.to_string()))
        .unwrap();
    assert!(findings.is_empty(), "{findings:?}");
}

/// A job's tick is claimed by the first node that asks, once: no node (that one neither) wins
/// it again; another tick, or another job at that tick, is free.
pub fn a_tick_is_claimed_once_whoever_asks(mut s: Store) {
    let tick = 1_700_000_000_000;
    assert!(s.claim_tick("reports", tick, "node-a", tick + 5).unwrap());
    assert!(!s.claim_tick("reports", tick, "node-b", tick + 6).unwrap());
    assert!(!s.claim_tick("reports", tick, "node-a", tick + 7).unwrap());
    assert!(s
        .claim_tick("reports", tick + 1000, "node-b", tick + 1005)
        .unwrap());
    assert!(s.claim_tick("collect", tick, "node-b", tick + 8).unwrap());
}

/// The alert rules get every credential event stored since their last evaluation once, however
/// many arrived (a backfill's thousands, which a backend may hand over a chunk at a time), and on
/// every evaluation the failed sign-ins of the lookback window, not older ones nor successes.
pub fn alert_facts_reach_the_rules_once(mut s: Store) {
    let day = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
    let n = 4_500;
    let mut evs: Vec<AuditEvent> = (0..n)
        .map(|i| AuditEvent {
            action: "create".into(),
            resource_type: Some("api_token".into()),
            resource_id: Some(format!("t{i}")),
            actor_id: Some("admin".into()),
            ..event(&format!("tok-{i}"))
        })
        .collect();
    let sign_in = |id: &str, status: &str, at: &str| AuditEvent {
        timestamp: DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&Utc),
        actor_id: Some("ann".into()),
        status: Some(status.into()),
        ..event(id)
    };
    evs.push(sign_in("fail-new", "failure", "2026-11-02T08:00:00Z"));
    evs.push(sign_in("ok-new", "success", "2026-11-02T08:01:00Z"));
    evs.push(sign_in("fail-old", "failure", "2026-10-20T08:00:00Z"));
    s.write_page(&PageWrite {
        account: "acc",
        action_filter: "",
        day: Some(day),
        events: &evs,
        malformed: &[],
        done: None,
    })
    .unwrap();
    let now_ms = DateTime::parse_from_rfc3339("2026-11-03T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let evaluate = |s: &mut Store| {
        let mut credentials = Vec::new();
        let mut failed = Vec::new();
        s.record_alerts("acc", &[], now_ms, &mut |facts, _| {
            credentials.extend(facts.credentials.iter().map(|c| c.event_id.clone()));
            failed.extend(facts.failed_sign_ins.iter().map(|f| f.event_id.clone()));
            Vec::new()
        })
        .unwrap();
        credentials.sort();
        (credentials, failed)
    };
    let (credentials, failed) = evaluate(&mut s);
    let mut all: Vec<String> = (0..n).map(|i| format!("tok-{i}")).collect();
    all.sort();
    assert_eq!(credentials, all);
    assert_eq!(failed, vec!["fail-new"]);
    let (credentials, failed) = evaluate(&mut s);
    assert!(credentials.is_empty(), "credential events judged twice");
    assert_eq!(failed, vec!["fail-new"]);
}
