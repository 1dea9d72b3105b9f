//! The PostgreSQL SQL of compliance reports (the same rows and order as SQLite's `reports.rs`),
//! streamed: the latest activity of each user is a LATERAL lookup on `events_by_actor`.

use super::users::{role_change_from_row, user_from_row, USER_COLUMNS};
use super::Postgres;
use crate::domain::ACCEPT_SLACK_MS;
use crate::store::{
    ReportStore, Result, RoleChangeRow, UserActivityRow, UserListing, UserSelection,
};

impl ReportStore for Postgres {
    fn visit_role_changes_in(
        &self,
        account: &str,
        from_ms: i64,
        to_ms: i64,
        f: &mut dyn FnMut(RoleChangeRow) -> bool,
    ) -> Result<u64> {
        self.stream(
            "SELECT rc.seq, rc.user_id, rc.role, rc.change, rc.observed_ms, rc.after_ms,
                rc.event_id, rc.event_ms, rc.actor_id, rc.actor_name, rc.ip_address, rc.source,
                COALESCE(u.user_name, u.display_name), COALESCE(rc.event_ms, rc.observed_ms) AS t,
                -- The alerts raised on this change (`alerts.role_change_seq`): the key is not
                -- rebuilt here, so evidence attached later does not unflag it.
                (SELECT string_agg(a.rule, ';' ORDER BY a.id) FROM alerts a
                    WHERE a.role_change_seq = rc.seq)
             FROM role_changes rc
             LEFT JOIN users u ON u.account = rc.account AND u.user_id = rc.user_id
             WHERE rc.account = $1 AND COALESCE(rc.event_ms, rc.observed_ms) >= $2
               AND COALESCE(rc.event_ms, rc.observed_ms) < $3
             ORDER BY t, rc.seq",
            &[&account, &from_ms, &to_ms],
            "role-change report",
            &mut |r| {
                Ok(f(RoleChangeRow {
                    account: account.to_string(),
                    change: role_change_from_row(r, &self.location)?,
                    user_name: r.get(12),
                    at_ms: r.get(13),
                    alert_rules: r
                        .get::<_, Option<String>>(14)
                        .map(|s| s.split(';').map(str::to_string).collect())
                        .unwrap_or_default(),
                }))
            },
        )
    }

    fn visit_user_activity(
        &self,
        account: &str,
        selection: UserSelection,
        f: &mut dyn FnMut(UserActivityRow) -> bool,
    ) -> Result<u64> {
        let cols: Vec<String> = USER_COLUMNS
            .split(',')
            .map(|c| format!("u.{}", c.trim()))
            .collect();
        let cols = cols.join(", ");
        let accept = match selection {
            UserSelection::Invitations => {
                "(SELECT e.event_id || chr(31) || e.ts_ms FROM events e
                    WHERE u.accepted_ms IS NOT NULL AND e.account = u.account
                    AND e.actor_id = u.user_id AND e.action = 'login'
                    AND COALESCE(e.status, '') <> $4
                    AND e.ts_ms BETWEEN COALESCE(u.accepted_after_ms, 0) - $3
                        AND u.accepted_ms + $3
                    ORDER BY e.ts_ms LIMIT 1)"
            }
            _ => "NULL::text",
        };
        let (filter, order) = match selection {
            UserSelection::Current => (
                "status <> 'deleted'",
                "privileged DESC, lower(COALESCE(user_name, display_name, '')) COLLATE \"C\", user_id",
            ),
            UserSelection::InactiveSince(_) => (
                "status <> 'deleted' AND since <= $2",
                "privileged DESC, since, user_id",
            ),
            UserSelection::Invitations => (
                "status = 'invited' OR accepted_ms IS NOT NULL",
                "COALESCE(invited_ms, created_ms, first_seen_ms), user_id",
            ),
        };
        let sql = format!(
            "WITH a AS (
                SELECT u.account AS acc, {cols}, le.ts_ms AS ev_ms, le.event_id AS ev_id,
                    u.privileged AS privileged, {accept} AS accept_ev
                FROM users u LEFT JOIN LATERAL (
                    SELECT e.ts_ms, e.event_id FROM events e WHERE e.account = u.account
                        AND e.actor_id = u.user_id AND COALESCE(e.status, '') <> $4
                    ORDER BY e.ts_ms DESC LIMIT 1) le ON TRUE
                WHERE u.account = $1
             ), b AS (
                SELECT a.*, COALESCE(
                    CASE WHEN COALESCE(last_login_ms, -1) >= COALESCE(ev_ms, -1)
                        THEN last_login_ms ELSE ev_ms END,
                    invited_ms, created_ms, first_seen_ms) AS since
                FROM a
             )
             SELECT * FROM b WHERE ({filter}) AND $2::bigint IS NOT NULL AND $3::bigint IS NOT NULL
                AND $4::text IS NOT NULL
             ORDER BY {order}"
        );
        let cut = match selection {
            UserSelection::InactiveSince(t) => t,
            _ => 0,
        };
        self.stream(
            &sql,
            &[
                &account,
                &cut,
                &ACCEPT_SLACK_MS,
                &crate::domain::FAILED_EVENT_STATUS,
            ],
            "user report",
            &mut |r| {
                let ev_ms: Option<i64> = r.get(21);
                let ev_id: Option<String> = r.get(22);
                let accept: Option<String> = r.get(24);
                let accept_event = accept.and_then(|s| {
                    let (id, t) = s.rsplit_once('\u{1f}')?;
                    Some((t.parse::<i64>().ok()?, id.to_string()))
                });
                Ok(f(UserActivityRow {
                    privileged: r.get(23),
                    inactive_since_ms: r.get(25),
                    listing: UserListing {
                        account: r.get(0),
                        user: user_from_row(r, 1, &self.location)?,
                        last_event: ev_ms.zip(ev_id),
                        accept_event,
                    },
                }))
            },
        )
    }
}
