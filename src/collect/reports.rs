//! CertCentral's audit log through the Report Library (contract 2.3, issue 15).
//!
//! One pass of a CertCentral account:
//! 1. **Pending runs** left by earlier passes (remembered in the store) are polled first; their
//!    days are not requested again while they are pending.
//! 2. **Missing days**: every day in `[today - backfill_days, today]` without a complete
//!    coverage row, plus the overlap days (`overlap_days`, today and yesterday: a finished run
//!    covers a day only as it was when the file was made), in ranges of at most
//!    [`REPORT_MAX_DAYS`] days, one on-demand report each. Each run is recorded as it is created.
//! 3. **Polling**: every pending run is looked up in the history in rounds, with a doubling wait
//!    (`retry_base_ms` up to `retry_max_secs`), at most [`POLL_ROUNDS`] rounds: a run still not
//!    ready after them stays pending for the next pass instead of holding this one. A `FAILED`
//!    run is recorded and logged, and its range is requested once more in this pass; a second
//!    failure ends the account's pass with the error (the next pass tries again).
//! 4. **Download**: each file of a ready run (every split part), JSON or ZIP by content, parsed on
//!    a blocking thread row by row and sent to the writer in pages. A row's event id is its
//!    canonical content and its occurrence number among the identical rows of its day in this
//!    run, so a row listed twice is two events and the same rows in an overlapping later run are
//!    the same events (`INSERT OR IGNORE`). Then one coverage row per day of the run (complete),
//!    then the run itself as done: a crash before that re-downloads it, and stores nothing twice.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate};

use super::writer::WriterMsg;
use super::{Plan, Run, RunError};
use crate::api::report::{for_each_row, parse_row, ParsedRow, RunInfo, RunState};
use crate::api::{AuditEvent, Malformed};
use crate::store::{ReportRun, ReportRunState, WindowDone};

/// The most days one report covers: a 90-day backfill is 13 reports, each file well under the
/// 1,000,000 rows of a split part for any real account.
pub(super) const REPORT_MAX_DAYS: u64 = 7;

/// History polls per run and pass before it is left pending for the next pass.
pub(super) const POLL_ROUNDS: u32 = 8;

/// The longest wait between two polls, whatever `retry_max_secs` says.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// The service keeps report runs this many days (contract 2.3).
pub const RUN_RETENTION_DAYS: i64 = 90;

/// `status` warns once an account's audit log has not been collected for this many days.
pub const HISTORY_WARN_DAYS: i64 = 60;

/// `status`'s warning for a CertCentral account whose last successful pass was at `last`: `None`
/// while it is recent enough.
pub fn history_warning(
    last: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let days = (now - last).num_days();
    if days < HISTORY_WARN_DAYS {
        return None;
    }
    let deadline = (last + chrono::Duration::days(RUN_RETENTION_DAYS)).date_naive();
    Some(format!(
        "WARNING: the audit log was last collected {days} days ago; CertCentral keeps report runs {RUN_RETENTION_DAYS} days: collect before {deadline}, or the history since then may be lost"
    ))
}

/// Rows per page sent to the writer.
const PAGE_ROWS: usize = 1000;

/// History pages read to find one run.
const HISTORY_PAGES: u32 = 20;

impl Run {
    pub(super) async fn collect_reports(self: &Arc<Self>, plan: &Plan) -> Result<(), RunError> {
        let coverage = plan.filters.first().map(|(_, c)| c);
        let overlap = u64::from(self.account.collection.overlap_days);
        let overlap_from = plan
            .today
            .checked_sub_days(Days::new(overlap.saturating_sub(1)))
            .unwrap_or(plan.today);
        let mut needed: BTreeSet<NaiveDate> = plan
            .start
            .iter_days()
            .take_while(|d| *d <= plan.today)
            .filter(|d| {
                (overlap > 0 && *d >= overlap_from)
                    || !coverage.is_some_and(|c| c.get(d).is_some_and(|c| c.complete))
            })
            .collect();
        let mut pending: Vec<ReportRun> = Vec::new();
        let mut resumed: BTreeSet<String> = BTreeSet::new();
        for r in &plan.pending_runs {
            resumed.insert(r.run_id.clone());
            tracing::info!(event = "report_run_resumed", account = %self.name, run = %r.run_id, start = %r.start, end = %r.end, "a report run left pending by an earlier pass");
            for d in r.start.iter_days().take_while(|d| *d <= r.end) {
                needed.remove(&d);
            }
            pending.push(r.clone());
        }
        for (start, end) in ranges(&needed, REPORT_MAX_DAYS) {
            pending.push(self.create_run(start, end).await?);
        }
        let mut retried: BTreeSet<(NaiveDate, NaiveDate)> = BTreeSet::new();
        let mut round = 0u32;
        while !pending.is_empty() && round < POLL_ROUNDS {
            if round > 0 {
                self.wait(round).await?;
            }
            round += 1;
            let mut still = Vec::new();
            for run in pending {
                let info = self.poll(&run).await?;
                match info.map(|i| (i.state.clone(), i)) {
                    Some((RunState::Ready, info)) => {
                        let earlier = resumed.contains(&run.run_id);
                        self.store_run(run, &info, earlier).await?
                    }
                    Some((RunState::Pending, info)) => {
                        if run.status.as_deref() != Some(info.status.as_str()) {
                            self.save(&run, ReportRunState::Pending, &info.status, None, None)
                                .await?;
                        }
                        still.push(ReportRun {
                            status: Some(info.status),
                            ..run
                        });
                    }
                    Some((RunState::Failed, info)) => {
                        let note = format!(
                            "the service reports run {} of report {} (days {}..{}) as {}",
                            run.run_id, run.report_id, run.start, run.end, info.status
                        );
                        tracing::warn!(event = "report_run_failed", account = %self.name, run = %run.run_id, start = %run.start, end = %run.end, status = %info.status, "{note}; its days are requested again");
                        self.save(
                            &run,
                            ReportRunState::Failed,
                            &info.status,
                            None,
                            Some(&note),
                        )
                        .await?;
                        if !retried.insert((run.start, run.end)) {
                            return Err(RunError::Report {
                                account: self.name.to_string(),
                                detail: format!("{note}, again; the next pass tries again"),
                            });
                        }
                        round = 0;
                        still.push(self.create_run(run.start, run.end).await?);
                    }
                    None => {
                        // Not listed: past the service's 90 days, or gone. Its days come back as
                        // missing next pass.
                        let note = format!(
                            "run {} of report {} is no longer listed in the report history",
                            run.run_id, run.report_id
                        );
                        tracing::warn!(event = "report_run_gone", account = %self.name, run = %run.run_id, "{note}");
                        self.save(
                            &run,
                            ReportRunState::Failed,
                            "NOT_LISTED",
                            None,
                            Some(&note),
                        )
                        .await?;
                    }
                }
            }
            pending = still;
        }
        for run in &pending {
            tracing::info!(event = "report_run_pending", account = %self.name, run = %run.run_id, start = %run.start, end = %run.end, status = ?run.status, "the report run is not ready yet; the next pass picks it up");
        }
        self.unstable_days.fetch_add(
            pending
                .iter()
                .map(|r| (r.end - r.start).num_days().max(0) as u64 + 1)
                .sum(),
            Relaxed,
        );
        Ok(())
    }

    async fn create_run(&self, start: NaiveDate, end: NaiveDate) -> Result<ReportRun, RunError> {
        self.check_cancel()?;
        let created = tokio::select! {
            r = self.client.create_audit_report(start, end) => r?,
            _ = self.cancel.cancelled() => return Err(RunError::Cancelled),
        };
        tracing::info!(event = "report_created", account = %self.name, report = %created.report_id, run = %created.run_id, start = %start, end = %end);
        let run = ReportRun {
            account: self.name.to_string(),
            report_id: created.report_id,
            run_id: created.run_id,
            start,
            end,
            state: ReportRunState::Pending,
            status: None,
            created: crate::clock::now(),
            rows: None,
            note: None,
        };
        self.send(WriterMsg::ReportRun(run.clone())).await?;
        Ok(run)
    }

    async fn poll(&self, run: &ReportRun) -> Result<Option<RunInfo>, RunError> {
        self.check_cancel()?;
        tokio::select! {
            r = self.client.report_run(&run.report_id, &run.run_id, run.start, run.end, HISTORY_PAGES) => Ok(r?),
            _ = self.cancel.cancelled() => Err(RunError::Cancelled),
        }
    }

    /// The wait before poll round `round` (from 1): doubling from `retry_base_ms`, at most
    /// `retry_max_secs` and [`MAX_POLL_WAIT`].
    async fn wait(&self, round: u32) -> Result<(), RunError> {
        let base = self.account.collection.retry.base_delay;
        let cap = self.account.collection.retry.max_delay.min(MAX_POLL_WAIT);
        let wait = base
            .checked_mul(1u32 << (round - 1).min(16))
            .unwrap_or(cap)
            .min(cap);
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = self.cancel.cancelled() => Err(RunError::Cancelled),
        }
    }

    fn check_cancel(&self) -> Result<(), RunError> {
        if self.cancel.is_cancelled() {
            Err(RunError::Cancelled)
        } else {
            Ok(())
        }
    }

    async fn save(
        &self,
        run: &ReportRun,
        state: ReportRunState,
        status: &str,
        rows: Option<u64>,
        note: Option<&str>,
    ) -> Result<(), RunError> {
        self.send(WriterMsg::ReportRun(ReportRun {
            state,
            status: Some(status.to_string()),
            rows,
            note: note.map(str::to_string),
            ..run.clone()
        }))
        .await
    }

    /// Download every file of a ready run and store its rows, then its days' coverage, then the
    /// run as done. A run made by an earlier pass covers the days that had not ended when it was
    /// made only as they were then: those stay incomplete, so they are asked again (this pass's
    /// own runs are as fresh as a DigiCert ONE read, and the overlap days are asked every pass).
    async fn store_run(
        &self,
        run: ReportRun,
        info: &RunInfo,
        earlier_pass: bool,
    ) -> Result<(), RunError> {
        let mut counts = Occurrences::default();
        let mut rows = 0u64;
        for part in 0..info.parts {
            self.check_cancel()?;
            let seq = (info.parts > 1).then_some(part);
            let body = tokio::select! {
                r = self.client.download_report(&run.report_id, &run.run_id, seq) => r?,
                _ = self.cancel.cancelled() => return Err(RunError::Cancelled),
            };
            self.pages_read.fetch_add(1, Relaxed);
            let tx = self.tx.clone();
            let name = self.name.clone();
            let (start, end) = (run.start, run.end);
            let parsed = tokio::task::spawn_blocking(move || {
                let r = parse_file(&body, &name, start, end, &mut counts, &tx);
                (r, counts)
            })
            .await
            .map_err(|e| RunError::Task(e.to_string()))?;
            counts = parsed.1;
            let n = parsed.0.map_err(|detail| RunError::Report {
                account: self.name.to_string(),
                detail: format!(
                    "report run {} of report {} (days {}..{}), file {}: {detail}",
                    run.run_id,
                    run.report_id,
                    run.start,
                    run.end,
                    part + 1
                ),
            })?;
            rows += n;
            self.events_seen.fetch_add(n, Relaxed);
        }
        let made = run.created.date_naive();
        for day in run.start.iter_days().take_while(|d| *d <= run.end) {
            let received = counts.per_day.get(&day).copied().unwrap_or(0);
            if earlier_pass && day >= made {
                self.send(WriterMsg::Incomplete {
                    account: self.name.clone(),
                    action: Arc::from(""),
                    day,
                    note: format!(
                        "report run {} was made on {made}, before this day ended; asked again",
                        run.run_id
                    ),
                })
                .await?;
                continue;
            }
            self.send(WriterMsg::Page {
                account: self.name.clone(),
                action: Arc::from(""),
                day,
                events: Vec::new(),
                malformed: Vec::new(),
                done: Some(WindowDone {
                    server_total: None,
                    received,
                }),
            })
            .await?;
            self.days_read.fetch_add(1, Relaxed);
        }
        tracing::info!(event = "report_run_stored", account = %self.name, run = %run.run_id, start = %run.start, end = %run.end, rows, files = info.parts);
        self.save(&run, ReportRunState::Done, &info.status, Some(rows), None)
            .await
    }
}

/// Occurrences of each row content within its day, across the files of one run; and rows per
/// day. A 128-bit prefix of the SHA-256 is plenty to tell rows of one day apart.
#[derive(Default)]
struct Occurrences {
    seen: HashMap<(NaiveDate, u128), u64>,
    per_day: HashMap<NaiveDate, u64>,
}

/// Parse one downloaded file (on a blocking thread) and send its rows to the writer in pages.
/// Rows dated outside the run's days are left to the report that covers their day.
fn parse_file(
    body: &[u8],
    account: &Arc<str>,
    start: NaiveDate,
    end: NaiveDate,
    counts: &mut Occurrences,
    tx: &tokio::sync::mpsc::Sender<WriterMsg>,
) -> Result<u64, String> {
    let mut events: Vec<AuditEvent> = Vec::with_capacity(PAGE_ROWS);
    let mut malformed: Vec<Malformed> = Vec::new();
    let mut outside = 0u64;
    let flush = |events: &mut Vec<AuditEvent>, malformed: &mut Vec<Malformed>| {
        if events.is_empty() && malformed.is_empty() {
            return Ok(());
        }
        let day = events
            .first()
            .map(|e| e.timestamp.date_naive())
            .unwrap_or(start);
        tx.blocking_send(WriterMsg::Page {
            account: account.clone(),
            action: Arc::from(""),
            day,
            events: std::mem::take(events),
            malformed: std::mem::take(malformed),
            done: None,
        })
        .map_err(|_| "the database writer stopped".to_string())
    };
    let (_, n) = for_each_row(body, |raw| {
        match parse_row(raw) {
            ParsedRow::Row(row) => {
                let day = row.day();
                if day < start || day > end {
                    outside += 1;
                    return Ok(());
                }
                let h = row.content_hash();
                let mut prefix = [0u8; 16];
                prefix.copy_from_slice(&h[..16]);
                let n = counts
                    .seen
                    .entry((day, u128::from_be_bytes(prefix)))
                    .or_default();
                *n += 1;
                *counts.per_day.entry(day).or_default() += 1;
                events.push(row.into_event(*n));
            }
            ParsedRow::Malformed(m) => malformed.push(m),
        }
        if events.len() + malformed.len() >= PAGE_ROWS {
            flush(&mut events, &mut malformed)?;
        }
        Ok(())
    })?;
    flush(&mut events, &mut malformed)?;
    if outside > 0 {
        tracing::debug!(event = "report_rows_outside", account = %account, outside, "rows dated outside the report's days were left to the report of their day");
    }
    Ok(n)
}

/// Contiguous runs of `days`, each cut into ranges of at most `max` days.
fn ranges(days: &BTreeSet<NaiveDate>, max: u64) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for d in days {
        match out.last_mut() {
            Some((s, e)) if e.succ_opt() == Some(*d) && (*d - *s).num_days() < max as i64 => {
                *e = *d
            }
            _ => out.push((*d, *d)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Missing days become contiguous ranges of at most `max` days.
    #[test]
    fn ranges_are_contiguous_and_bounded() {
        let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
        let days: BTreeSet<NaiveDate> = (1..=10).chain([12, 13, 20]).map(d).collect();
        assert_eq!(
            ranges(&days, 7),
            vec![(d(1), d(7)), (d(8), d(10)), (d(12), d(13)), (d(20), d(20))]
        );
        assert!(ranges(&BTreeSet::new(), 7).is_empty());
    }
}
