//! The PostgreSQL side of the credentials report and the CertCentral Report Library runs: the
//! same rows and order as SQLite's `credentials.rs`, `report_runs.rs`.

use super::users::{user_from_row, USER_COLUMNS};
use super::{col, Postgres};
use crate::store::{
    day_str, CredentialEvent, CredentialStore, ReportRun, ReportRunState, Result, UserRow,
};

impl CredentialStore for Postgres {
    fn visit_service_users(
        &self,
        account: &str,
        f: &mut dyn FnMut(UserRow) -> bool,
    ) -> Result<u64> {
        self.stream(
            &format!(
                "SELECT {USER_COLUMNS}, raw FROM users
                 WHERE account = $1 AND status <> 'deleted'
                   AND lower(COALESCE(user_type, '')) LIKE '%service%'
                 ORDER BY lower(COALESCE(display_name, user_name, '')) COLLATE \"C\", user_id"
            ),
            &[&account],
            "service users",
            &mut |r| {
                let mut u = user_from_row(r, 0, &self.location)?;
                u.raw = r.get(20);
                Ok(f(u))
            },
        )
    }

    fn visit_credential_events(
        &self,
        account: &str,
        f: &mut dyn FnMut(CredentialEvent) -> bool,
    ) -> Result<u64> {
        self.stream(
            "SELECT resource_type, resource_id, resource_name, action, event_id, ts_ms,
                actor_id, actor_name, ip_address, status
             FROM events
             WHERE account = $1 AND resource_type IN ('api_token', 'client_auth_certificate')
             ORDER BY resource_type, COALESCE(resource_id, resource_name, event_id), ts_ms, seq",
            &[&account],
            "credential events",
            &mut |r| {
                Ok(f(CredentialEvent {
                    resource_type: r.get(0),
                    resource_id: r.get(1),
                    resource_name: r.get(2),
                    action: r.get(3),
                    event_id: r.get(4),
                    ts_ms: r.get(5),
                    actor_id: r.get(6),
                    actor_name: r.get(7),
                    ip_address: r.get(8),
                    status: r.get(9),
                }))
            },
        )
    }

    fn event_action(&self, account: &str, event_id: &str) -> Result<Option<String>> {
        Ok(self
            .opt(
                "SELECT action FROM events WHERE event_key = $3 AND account = $1 AND event_id = $2",
                &[
                    &account,
                    &event_id,
                    &crate::store::event_key::event_key(event_id),
                ],
                "event action",
            )?
            .map(|r| r.get(0)))
    }
}

impl Postgres {
    /// The account's runs in `state` (any, if `None`), oldest first, at most `limit`.
    pub(super) fn report_runs(
        &self,
        account: &str,
        state: Option<ReportRunState>,
        limit: u32,
    ) -> Result<Vec<ReportRun>> {
        let rows = self.rows(
            "SELECT report_id, run_id, start_day, end_day, state, status, created_ms, rows, note
             FROM report_runs WHERE account = $1 AND ($2::text IS NULL OR state = $2)
             ORDER BY created_ms DESC, run_id DESC LIMIT $3",
            &[
                &account,
                &state.map(ReportRunState::as_str),
                &i64::from(limit),
            ],
            "read report runs",
        )?;
        let mut out = Vec::new();
        for r in &rows {
            let run_id: String = r.get(1);
            let at = format!("account {account:?}, run {run_id:?}");
            let c = (self.location.as_str(), "report_runs", at.as_str());
            let day = |i: usize| -> Result<chrono::NaiveDate> {
                let d: String = col(r, i, c)?;
                chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| {
                    super::corrupt(
                        c.0,
                        c.1,
                        c.2,
                        format!("day {d:?} is not a value auditwarden writes"),
                    )
                })
            };
            let state: String = r.get(4);
            let state = ReportRunState::parse(&state).ok_or_else(|| {
                super::corrupt(
                    c.0,
                    c.1,
                    c.2,
                    format!("state {state:?} is not a value auditwarden writes"),
                )
            })?;
            let created: i64 = r.get(6);
            out.push(ReportRun {
                account: account.to_string(),
                report_id: r.get(0),
                start: day(2)?,
                end: day(3)?,
                state,
                status: r.get(5),
                created: chrono::DateTime::from_timestamp_millis(created).ok_or_else(|| {
                    super::corrupt(c.0, c.1, c.2, format!("created_ms {created} is not a time"))
                })?,
                rows: r.get::<_, Option<i64>>(7).map(|n| n.max(0) as u64),
                note: r.get(8),
                run_id,
            });
        }
        out.reverse();
        Ok(out)
    }
}

/// Insert the run, or update its state, status, rows and note, inside a batch's transaction.
pub(super) fn save_report_run(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
    run: &ReportRun,
) -> Result<()> {
    use super::Wait;
    let now = crate::clock::now().timestamp_millis();
    tx.execute(
        "INSERT INTO report_runs (account, report_id, run_id, start_day, end_day, state,
            status, created_ms, updated_ms, rows, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (account, run_id) DO UPDATE SET state = excluded.state,
            status = excluded.status, updated_ms = excluded.updated_ms,
            rows = excluded.rows, note = excluded.note",
        &[
            &run.account,
            &run.report_id,
            &run.run_id,
            &day_str(run.start),
            &day_str(run.end),
            &run.state.as_str(),
            &run.status,
            &run.created.timestamp_millis(),
            &now,
            &run.rows.map(|n| n as i64),
            &run.note,
        ],
    )
    .wait()
    .map_err(|e| super::pg_err(location, "save report run", e))?;
    Ok(())
}
