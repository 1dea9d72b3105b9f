//! The store's conformance suite: what every [`Backend`](super::Backend) must do, written
//! against the interface only. Each backend runs every case on a fresh, empty store of its own
//! through [`backend_conformance!`] (SQLite below; another backend adds one invocation).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    Claim, Deferred, DeliveryUpdate, NewAlert, PageWrite, ReportRun, ReportRunState, Store,
    WindowDone,
};
use crate::api::AuditEvent;

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
