//! CertCentral Report Library runs (issue 15, migration 6): a run is recorded when its report is
//! created and finished (done or failed) through the pass writer, after the rows and coverage it
//! brought, so a pass that stopped waiting for it, or was killed during its download, picks up the
//! same run next time. Plain types only (the store trait absorbs these methods as they are).

use chrono::NaiveDate;
use rusqlite::params;

use super::{day_str, from_ms, ms, parse_day, Batch, Result, Store};

/// Where a run stands, as far as auditwarden is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRunState {
    /// Created, its rows not stored yet.
    Pending,
    /// Its rows and the coverage of its days are stored.
    Done,
    /// The service said FAILED (or no longer lists it): its days are requested again.
    Failed,
}

impl ReportRunState {
    fn as_str(self) -> &'static str {
        match self {
            ReportRunState::Pending => "pending",
            ReportRunState::Done => "done",
            ReportRunState::Failed => "failed",
        }
    }

    fn from_str(s: &str) -> ReportRunState {
        match s {
            "done" => ReportRunState::Done,
            "failed" => ReportRunState::Failed,
            _ => ReportRunState::Pending,
        }
    }
}

/// One run of an `audit-logs` report over the UTC days `[start, end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRun {
    pub account: String,
    pub report_id: String,
    pub run_id: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub state: ReportRunState,
    pub status: Option<String>,
    pub created: chrono::DateTime<chrono::Utc>,
    pub rows: Option<u64>,
    pub note: Option<String>,
}

impl Store {
    /// The account's runs still pending, oldest first.
    pub fn pending_report_runs(&self, account: &str) -> Result<Vec<ReportRun>> {
        self.report_runs_where(account, Some(ReportRunState::Pending), 10_000)
    }

    /// The account's latest runs (any state), newest first, at most `limit`.
    pub fn recent_report_runs(&self, account: &str, limit: u32) -> Result<Vec<ReportRun>> {
        let mut v = self.report_runs_where(account, None, limit)?;
        v.reverse();
        Ok(v)
    }

    /// Record a new run (pending), or its outcome, in a transaction of its own.
    pub fn save_report_run(&mut self, run: &ReportRun) -> Result<()> {
        let b = self.batch()?;
        b.save_report_run(run)?;
        b.commit()
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
            let (Some(start), Some(end)) = (parse_day(&start), parse_day(&end)) else {
                continue;
            };
            out.push(ReportRun {
                account: account.to_string(),
                report_id,
                run_id,
                start,
                end,
                state: ReportRunState::from_str(&state),
                status,
                created: from_ms(created),
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
    pub fn save_report_run(&self, run: &ReportRun) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A run is pending until saved done or failed; saving twice updates, never duplicates.
    #[test]
    fn runs_move_from_pending() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("r.db")).unwrap();
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
}
