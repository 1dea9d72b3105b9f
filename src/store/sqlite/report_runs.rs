//! CertCentral Report Library runs (issue 15, migration 6): a run is recorded when its report is
//! created and finished (done or failed) through the pass writer, after the rows and coverage it
//! brought, so a pass that stopped waiting for it, or was killed during its download, picks up the
//! same run next time. Plain types only (the store trait absorbs these methods as they are).

use rusqlite::params;

use super::domain_rules::{corrupt, parse_stored};
use super::{from_ms, ms, parse_day, Batch, Sqlite};
use crate::store::{day_str, ReportRun, ReportRunState, Result};

impl Sqlite {
    /// The account's runs still pending, oldest first.
    pub(super) fn runs_pending(&self, account: &str) -> Result<Vec<ReportRun>> {
        self.report_runs_where(account, Some(ReportRunState::Pending), 10_000)
    }

    /// The account's latest runs (any state), newest first, at most `limit`.
    pub(super) fn runs_recent(&self, account: &str, limit: u32) -> Result<Vec<ReportRun>> {
        let mut v = self.report_runs_where(account, None, limit)?;
        v.reverse();
        Ok(v)
    }

    fn report_runs_where(
        &self,
        account: &str,
        state: Option<ReportRunState>,
        limit: u32,
    ) -> Result<Vec<ReportRun>> {
        let sql =
            "SELECT report_id, run_id, start_day, end_day, state, status, created_ms, rows, note
             FROM report_runs WHERE account = ?1 AND (?2 IS NULL OR state = ?2)
             ORDER BY created_ms DESC, run_id DESC LIMIT ?3";
        let mut st = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| self.err("prepare report runs", e))?;
        let rows = st
            .query_map(
                params![account, state.map(ReportRunState::as_str), i64::from(limit)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                    ))
                },
            )
            .map_err(|e| self.err("read report runs", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (report_id, run_id, start, end, state, status, created, n, note) =
                row.map_err(|e| self.err("read report runs", e))?;
            let at = format!("account {account:?}, run {run_id:?}");
            let day = |col: usize, column: &str, d: &str| {
                parse_day(d).ok_or_else(|| corrupt(col, "report_runs", &at, column, d))
            };
            let read = (|| -> rusqlite::Result<_> {
                Ok((
                    day(2, "start_day", &start)?,
                    day(3, "end_day", &end)?,
                    parse_stored(
                        ReportRunState::parse,
                        &state,
                        (4, "report_runs", &at, "state"),
                    )?,
                    from_ms(created, (6, "report_runs", &at, "created_ms"))?,
                ))
            })();
            let (start, end, state, created) = read.map_err(|e| self.err("read report runs", e))?;
            out.push(ReportRun {
                account: account.to_string(),
                report_id,
                run_id,
                start,
                end,
                state,
                status,
                created,
                rows: n.map(|n| n as u64),
                note,
            });
        }
        out.reverse();
        Ok(out)
    }
}

impl Batch<'_> {
    /// Insert the run, or update its state, status, rows and note (by account and run id).
    pub(super) fn save_run(&self, run: &ReportRun) -> Result<()> {
        let now = ms(crate::clock::now());
        self.tx
            .execute(
                "INSERT INTO report_runs (account, report_id, run_id, start_day, end_day, state,
                    status, created_ms, updated_ms, rows, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (account, run_id) DO UPDATE SET state = excluded.state,
                    status = excluded.status, updated_ms = excluded.updated_ms,
                    rows = excluded.rows, note = excluded.note",
                params![
                    run.account,
                    run.report_id,
                    run.run_id,
                    day_str(run.start),
                    day_str(run.end),
                    run.state.as_str(),
                    run.status,
                    ms(run.created),
                    now,
                    run.rows.map(|n| n as i64),
                    run.note
                ],
            )
            .map_err(|e| super::err(self.path, "save report run", e))?;
        Ok(())
    }
}
