//! Failed sign-ins for the `failed-sign-ins` alert rule (issue 15): the `login` events with
//! status `failure` of the last [`LOOKBACK_MS`], by the partial index of failed logins
//! (`events_failed_sign_ins`; its WHERE is this query's, or SQLite cannot use it). Both APIs' events
//! qualify (CertCentral's come from the Report Library rows).

use rusqlite::params;

use crate::domain::FailedSignIn;

/// How far back failures are read on each evaluation: CertCentral's rows arrive a pass or a day
/// late, and a burst older than the alerts' backfill horizon is written suppressed anyway.
pub const LOOKBACK_MS: i64 = 8 * 86_400_000;

/// The most failures read per evaluation (a bound on outside data).
const MAX_FAILURES: i64 = 200_000;

pub(super) fn recent_failed_sign_ins(
    conn: &rusqlite::Connection,
    account: &str,
    now_ms: i64,
) -> rusqlite::Result<Vec<FailedSignIn>> {
    let mut st = conn.prepare_cached(
        "SELECT event_id, ts_ms, COALESCE(actor_id, actor_name), actor_name, ip_address
         FROM events WHERE account = ?1 AND ts_ms >= ?2 AND action = 'login'
            AND status = 'failure' AND COALESCE(actor_id, actor_name) IS NOT NULL
         ORDER BY ts_ms LIMIT ?3",
    )?;
    let rows = st.query_map(
        params![account, now_ms.saturating_sub(LOOKBACK_MS), MAX_FAILURES],
        |r| {
            Ok(FailedSignIn {
                event_id: r.get(0)?,
                ts_ms: r.get(1)?,
                user: r.get(2)?,
                user_name: r.get(3)?,
                ip_address: r.get(4)?,
            })
        },
    )?;
    rows.collect()
}
