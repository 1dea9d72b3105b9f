//! Audit-log collection: turns a plan of UTC day windows into stored events, exactly once.
//!
//! One pass, per account and action filter:
//! 1. **Read** every day in `[today - backfill_days, today]` that is not yet complete, newest first,
//!    page by page (`offset`/`limit`, oldest-first `sort` where the server honours it).
//! 2. **Probe** the overlap days that are already complete (`limit=1`): a day whose server total
//!    moved is read again. Without totals (bare-array responses) overlap days are always re-read.
//! 3. **Verify** older complete days with one `limit=1` request per run of days: the server's total
//!    for the run is compared with the totals recorded when each day was read; a mismatch is
//!    bisected (one probe per level) down to the days that changed, which are read again. This is
//!    how late events in days already read are found without re-reading history.
//!
//! A day read is complete when no item was seen twice (a repeat means offsets shifted under the
//! reader, and an item may have been skipped) and, with totals, the distinct items received reach
//! the server's total. Otherwise the day is re-read, at most `max_window_rereads` times.
//!
//! Fetching and storing overlap: account tasks fetch pages and send them to one writer thread that
//! owns the SQLite connection, and while days are missing each account reads up to
//! `concurrent_windows` days at once (each day still page after page, all through the account's
//! one client and throttle). Every page is applied whole inside one transaction, and the page that
//! completes a day carries the coverage row, so a crash at any instant loses nothing and
//! duplicates nothing, whatever order the days' pages arrive in.
//!
//! A pass can be stopped early through [`CollectOptions::cancel`] (the daemon's shutdown): it is
//! checked only between pages, where everything received has been handed to the writer and no
//! transaction is open on this side; the writer still commits what it was sent.

mod reports;
pub mod users;
pub use reports::{history_warning, HISTORY_WARN_DAYS, RUN_RETENTION_DAYS};
mod writer;

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Days, NaiveDate, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::settings::{Account, AccountKind};
use crate::api::{ApiError, AuditQuery, Client, ParsedEvent};
use crate::store::{Coverage, PassRecord, Store, StoreError, WindowDone};
pub use writer::WriteCounts;
use writer::{Writer, WriterMsg};

/// How one account's pass ended.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub account: String,
    pub kind: AccountKind,
    /// `None` when the pass succeeded.
    pub error: Option<String>,
    /// Why the audit log was not collected, when that is expected (CertCentral with
    /// `audit_log = false`, or a key without the Administrator role).
    pub skipped: Option<String>,
    pub written: WriteCounts,
    pub requests: u64,
    pub retries: u64,
    /// Responses by HTTP status (0: transport error or timeout), retries included.
    pub by_status: BTreeMap<u16, u64>,
    /// What the throttle learned of the server's limit (`None` when no client was built).
    pub pace: Option<crate::api::throttle::Pace>,
    /// The pass was stopped at a safe point by [`CollectOptions::cancel`] (not a failure; the
    /// next pass resumes where it stopped).
    pub cancelled: bool,
    pub days_read: u64,
    pub rereads: u64,
    /// Days that stayed incomplete (kept shifting); read again next pass.
    pub unstable_days: u64,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
}

impl AccountSummary {
    /// A pass of `account` that began at `started` and has done nothing yet.
    fn new(account: &str, kind: AccountKind, started: DateTime<Utc>) -> AccountSummary {
        AccountSummary {
            account: account.to_string(),
            kind,
            error: None,
            skipped: None,
            written: WriteCounts::default(),
            requests: 0,
            retries: 0,
            by_status: BTreeMap::new(),
            pace: None,
            cancelled: false,
            days_read: 0,
            rereads: 0,
            unstable_days: 0,
            started,
            finished: started,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the database writer stopped unexpectedly")]
    WriterGone,
}

/// Options of one collection run.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The last day collected (UTC); normally today.
    pub today: NaiveDate,
    /// Show progress bars (stderr is a terminal).
    pub progress: bool,
    /// Stops the pass at the next safe point (between pages) when cancelled.
    pub cancel: CancellationToken,
    /// Test-only: make this account's task panic (set by `cli` from
    /// `AUDITWARDEN_TEST_PANIC_ACCOUNT`), to prove that a panic is that account's failure.
    /// `None` in normal use.
    pub panic_account: Option<String>,
    /// Accounts collected at once (`[collection] max_concurrent_accounts`, at least 1); the
    /// others wait for a slot, in the order given.
    pub max_accounts: usize,
}

/// One collection pass over `accounts`, at most `opts.max_accounts` of them at once; one failing
/// account does not stop the others. The store is handed to a writer thread and handed back at the end.
pub async fn collect(
    store: Store,
    accounts: &[&Account],
    opts: &CollectOptions,
) -> Result<(Store, Vec<AccountSummary>), CollectError> {
    let mut plans = Vec::new();
    for a in accounts {
        plans.push(Plan::build(&store, a, opts.today)?);
    }
    // A few pages per account in flight: the writer drains while the fetchers wait on the network,
    // and a slow disk makes the fetchers wait instead of memory growing.
    let max_accounts = opts.max_accounts.max(1);
    let mut widths: Vec<usize> = accounts
        .iter()
        .map(|a| a.collection.concurrent_windows.max(1) as usize)
        .collect();
    widths.sort_unstable_by(|a, b| b.cmp(a));
    let width: usize = widths.iter().take(max_accounts).sum();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_accounts));
    let (tx, rx) = mpsc::channel::<WriterMsg>((2 * width).clamp(8, 64));
    let writer = Writer::spawn(store, rx);
    let multi = opts.progress.then(MultiProgress::new);
    let started = Utc::now();
    let mut tasks = Vec::new();
    for (a, plan) in accounts.iter().zip(plans) {
        let account = (*a).clone();
        let tx = tx.clone();
        let bar = multi.as_ref().map(|m| m.add(progress_bar(&account.name)));
        let cancel = opts.cancel.clone();
        let panic_here = opts.panic_account.as_deref() == Some(account.name.as_str());
        let slots = Arc::clone(&slots);
        tasks.push(tokio::spawn(async move {
            // Waiting for a slot ends with a shutdown: the account then runs only to see the
            // cancellation and record its pass as cancelled, as a running one would.
            let _slot = tokio::select! {
                s = slots.acquire_owned() => s.ok(),
                _ = cancel.cancelled() => None,
            };
            if panic_here {
                panic!("AUDITWARDEN_TEST_PANIC_ACCOUNT: a panic in the task of this account");
            }
            run_account(account, plan, tx, bar, cancel).await
        }));
    }
    let mut summaries = Vec::new();
    for (a, t) in accounts.iter().zip(tasks) {
        match t.await {
            Ok(s) => summaries.push(s),
            Err(e) => {
                // A bug, not a server problem; but it is this account's failed pass all the
                // same: in the exit code, `status` (the pass record), `/readyz` and the metrics.
                let error = format!(
                    "internal error: the collection task failed ({})",
                    join_error_text(e)
                );
                tracing::error!(event = "pass_failed", account = %a.name, error = %error);
                let finished = Utc::now();
                let record = PassRecord {
                    account: a.name.clone(),
                    started,
                    finished,
                    error: Some(error.clone()),
                    new_events: 0,
                    duplicates: 0,
                    quarantined: 0,
                    requests: 0,
                    retries: 0,
                    rate_limited: 0,
                    pace_rps: None,
                };
                // The writer outlives the tasks: it stops once this last sender is dropped.
                let _ = tx.send(WriterMsg::Pass(record)).await;
                summaries.push(AccountSummary {
                    error: Some(error),
                    finished,
                    ..AccountSummary::new(&a.name, a.kind, started)
                });
            }
        }
    }
    drop(tx);
    let (store, counts) = writer.finish().await?;
    release_memory(&store);
    for s in &mut summaries {
        s.written = counts.get(&s.account).copied().unwrap_or_default();
        if s.written.quarantined > 0 {
            // One line per account and pass, however many days held such items.
            tracing::warn!(
                event = "events_quarantined",
                account = %s.account,
                count = s.written.quarantined,
                "events that cannot be understood were kept in quarantine; `auditwarden status --quarantine` lists them"
            );
        }
    }
    Ok((store, summaries))
}

/// What a task's end says: its panic message, or that it was cancelled.
fn join_error_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("panicked: {msg}")
}

/// Give back what a pass used, so a daemon idles small after a backfill of any size: SQLite's
/// page cache (the next pass reads what it needs again), and on glibc the memory freed by the
/// pass's threads, which its allocator otherwise keeps in per-thread arenas for reuse (measured
/// by `cargo bench --bench daemon`: the idle RSS after a large backfill stays near a fresh
/// start's instead of the pass's high-water mark).
pub(crate) fn release_memory(store: &Store) {
    if let Err(e) = store.release_memory() {
        tracing::debug!(event = "release_memory_failed", error = %e);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the kernel; it
    // takes no pointers and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The heap below which glibc gives freed memory back to the kernel at once, and above which an
/// allocation is a mapping of its own (glibc's default for both, fixed): see [`limit_heap_cache`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_RELEASE_BYTES: libc::c_int = 128 * 1024;

/// Make glibc give freed memory back instead of keeping it for reuse, once, before any thread
/// starts (`cli::main`; `keep` when the user tuned it through `MALLOC_TRIM_THRESHOLD_` or
/// `MALLOC_MMAP_THRESHOLD_`). By default glibc raises both thresholds to the largest block freed
/// so far (up to 32 and 64 MiB): after a backfill has freed its page buffers, every thread's arena
/// keeps that much of free memory at its top, and [`release_memory`] cannot return it
/// (`malloc_trim` only trims the main arena's top). Measured with `cargo bench --bench daemon`:
/// the idle daemon after a backfill of 1,000,000 events stayed 13 MiB of heap above a fresh
/// start's, about 5 MiB with the thresholds fixed.
pub fn limit_heap_cache(keep: bool) {
    if keep {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's parameters; it takes no pointers and is called
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, HEAP_RELEASE_BYTES);
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_RELEASE_BYTES);
    }
}

fn progress_bar(name: &str) -> ProgressBar {
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>16} [{bar:30}] {pos}/{len} days {msg} ({elapsed}, ETA {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(name.to_string());
    pb
}

/// What a pass will look at for one account: the days and what is known of each.
struct Plan {
    start: NaiveDate,
    today: NaiveDate,
    /// Per action filter ('' = all actions): the coverage rows already stored.
    filters: Vec<(String, BTreeMap<NaiveDate, Coverage>)>,
    /// CertCentral: the Report Library runs still pending from earlier passes.
    pending_runs: Vec<crate::store::ReportRun>,
}

impl Plan {
    fn build(store: &Store, a: &Account, today: NaiveDate) -> Result<Plan, StoreError> {
        let start = today
            .checked_sub_days(Days::new(u64::from(a.backfill_days)))
            .unwrap_or(today);
        let certcentral = a.kind == AccountKind::CertCentral;
        let keys: Vec<String> = if a.actions.is_empty() || certcentral {
            vec![String::new()]
        } else {
            a.actions.clone()
        };
        let mut filters = Vec::new();
        for k in keys {
            let rows = store.coverage(&a.name, &k, start, today)?;
            filters.push((k, rows.into_iter().map(|c| (c.day, c)).collect()));
        }
        let pending_runs = if certcentral && a.audit_log {
            store.pending_report_runs(&a.name)?
        } else {
            Vec::new()
        };
        Ok(Plan {
            start,
            today,
            filters,
            pending_runs,
        })
    }
}

/// The state of one account's pass, shared by the tasks reading its day windows (counters are
/// atomics because several days are read at once; they are only ever added to).
struct Run {
    account: Account,
    name: Arc<str>,
    client: Client,
    tx: mpsc::Sender<WriterMsg>,
    bar: Option<ProgressBar>,
    /// A child of the pass's token: cancelled by the pass (shutdown), or by this account when one
    /// of its day reads failed, so the reads still in flight stop at their next safe point.
    cancel: CancellationToken,
    /// Learned from the first response: does the server send totals (envelope) or bare arrays?
    totals: OnceLock<bool>,
    days_read: AtomicU64,
    rereads: AtomicU64,
    unstable_days: AtomicU64,
    pages_read: AtomicU64,
    events_seen: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the database writer stopped (see the error above)")]
    WriterGone,
    #[error("stopped at a safe point for shutdown")]
    Cancelled,
    #[error("a day read stopped unexpectedly: {0}")]
    Task(String),
    /// A CertCentral report run failed twice, or its file could not be read.
    #[error("account {account}: CertCentral audit log: {detail}")]
    Report { account: String, detail: String },
    /// The server would have paged without end; the day stays incomplete.
    #[error("account {account}, day {day}: {reason}")]
    Unbounded {
        account: String,
        day: NaiveDate,
        reason: String,
    },
}

async fn run_account(
    account: Account,
    plan: Plan,
    tx: mpsc::Sender<WriterMsg>,
    bar: Option<ProgressBar>,
    cancel: CancellationToken,
) -> AccountSummary {
    let started = crate::clock::now();
    let mut summary = AccountSummary::new(&account.name, account.kind, started);
    if account.kind == AccountKind::CertCentral && !account.audit_log {
        summary.skipped = Some("audit_log = false: its users are tracked from snapshots".into());
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        return summary;
    }
    let client = match account.kind {
        AccountKind::CertCentral => Client::for_reports(&account),
        AccountKind::DigicertOne => Client::new(&account),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            summary.error = Some(e.to_string());
            return summary;
        }
    };
    let run = Arc::new(Run {
        name: Arc::from(account.name.as_str()),
        account,
        client,
        tx: tx.clone(),
        bar,
        cancel: cancel.child_token(),
        totals: OnceLock::new(),
        days_read: AtomicU64::new(0),
        rereads: AtomicU64::new(0),
        unstable_days: AtomicU64::new(0),
        pages_read: AtomicU64::new(0),
        events_seen: AtomicU64::new(0),
    });
    let mut result = Ok(());
    if run.account.kind == AccountKind::CertCentral {
        match run.collect_reports(&plan).await {
            Err(RunError::Api(ApiError::NotAdministrator { detail })) => {
                // Not a failure of the account: its users are still tracked from snapshots.
                let why = ApiError::NotAdministrator { detail }.to_string();
                tracing::warn!(event = "audit_log_unreadable", account = %run.name, reason = %why);
                summary.skipped = Some(format!("{why}; its users are tracked from snapshots"));
            }
            other => result = other,
        }
    } else {
        for (filter, coverage) in &plan.filters {
            result = run.collect_filter(&plan, filter, coverage).await;
            if result.is_err() {
                break;
            }
        }
    }
    if let Some(b) = &run.bar {
        b.finish();
    }
    summary.cancelled = matches!(result, Err(RunError::Cancelled));
    summary.error = result
        .err()
        .filter(|_| !summary.cancelled)
        .map(|e| e.to_string());
    summary.requests = run.client.stats().requests();
    summary.retries = run.client.stats().retries();
    summary.by_status = run.client.stats().by_status();
    summary.pace = Some(run.client.pace());
    summary.days_read = run.days_read.load(Relaxed);
    summary.rereads = run.rereads.load(Relaxed);
    summary.unstable_days = run.unstable_days.load(Relaxed);
    summary.finished = crate::clock::now();
    if summary.cancelled {
        // Not a pass: nothing is recorded, and the next pass resumes from the coverage rows.
        tracing::info!(event = "pass_cancelled", account = %summary.account, requests = summary.requests);
        return summary;
    }
    match &summary.error {
        None => tracing::info!(
            event = "pass_finished",
            account = %summary.account,
            requests = summary.requests,
            retries = summary.retries,
            days_read = summary.days_read,
        ),
        Some(e) => tracing::error!(event = "pass_failed", account = %summary.account, error = %e),
    }
    let record = PassRecord {
        account: summary.account.clone(),
        started: summary.started,
        finished: summary.finished,
        error: summary.error.clone(),
        new_events: 0,
        duplicates: 0,
        quarantined: 0,
        requests: summary.requests,
        retries: summary.retries,
        rate_limited: summary.pace.map_or(0, |p| p.limited),
        pace_rps: summary.pace.and_then(|p| p.rate),
    };
    if tx.send(WriterMsg::Pass(record)).await.is_err() && summary.error.is_none() {
        summary.error = Some(RunError::WriterGone.to_string());
    }
    summary
}

/// Step 3 of a pass's plan: the runs of consecutive complete days, outside the overlap window and
/// not read this pass, with their recorded totals (each run is checked with one range probe), and
/// the complete days recorded without a total (read once to learn it; they split runs).
fn verify_runs(
    days: &[NaiveDate],
    coverage: &BTreeMap<NaiveDate, Coverage>,
    overlap_from: NaiveDate,
    overlap: u64,
    read_now: &HashSet<NaiveDate>,
) -> (Vec<Vec<(NaiveDate, u64)>>, Vec<NaiveDate>) {
    let mut runs: Vec<Vec<(NaiveDate, u64)>> = Vec::new();
    let mut learn = Vec::new();
    let mut cur: Vec<(NaiveDate, u64)> = Vec::new();
    for d in days {
        let usable = (overlap == 0 || *d < overlap_from) && !read_now.contains(d);
        match coverage.get(d) {
            Some(c) if usable && c.complete => match c.server_total {
                Some(t) => cur.push((*d, t)),
                None => {
                    if !cur.is_empty() {
                        runs.push(std::mem::take(&mut cur));
                    }
                    learn.push(c.day);
                }
            },
            _ => {
                if !cur.is_empty() {
                    runs.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    (runs, learn)
}

/// The days of `run` (consecutive complete days with their recorded totals) whose server total
/// grew: one `probe(from, to)` for the whole run, and where it disagrees, one probe per level of
/// a bisection (the right half's total is the parent's minus the left's). A part whose total
/// shrank is reported through `shrank` and not read again (nothing can be recovered by reading).
/// `probe` answering `None` (no totals) ends the search with what was found.
async fn bisect_changed<E, Fut>(
    run: &[(NaiveDate, u64)],
    mut probe: impl FnMut(NaiveDate, NaiveDate) -> Fut,
    mut shrank: impl FnMut(NaiveDate, NaiveDate, u64, u64),
) -> Result<Vec<NaiveDate>, E>
where
    Fut: std::future::Future<Output = Result<Option<u64>, E>>,
{
    let mut changed = Vec::new();
    if run.is_empty() {
        return Ok(changed);
    }
    // (slice bounds, server total if already known from the parent's split)
    let mut stack: Vec<(usize, usize, Option<u64>)> = vec![(0, run.len(), None)];
    while let Some((lo, hi, known)) = stack.pop() {
        let part = &run[lo..hi];
        let (first, last) = (part[0].0, part[part.len() - 1].0);
        let expected: u64 = part.iter().map(|(_, t)| t).sum();
        let total = match known {
            Some(t) => t,
            None => match probe(first, last).await? {
                Some(t) => t,
                None => return Ok(changed),
            },
        };
        if total == expected {
            continue;
        }
        if total < expected {
            shrank(first, last, expected, total);
            continue;
        }
        if part.len() == 1 {
            changed.push(first);
            continue;
        }
        let mid = lo + part.len() / 2;
        let left = &run[lo..mid];
        let lt = match probe(left[0].0, left[left.len() - 1].0).await? {
            Some(t) => t,
            None => return Ok(changed),
        };
        stack.push((mid, hi, Some(total.saturating_sub(lt))));
        stack.push((lo, mid, Some(lt)));
    }
    changed.sort();
    Ok(changed)
}

/// How far a read (a day of the audit log, a user listing) may grow past the total its first page
/// announced, for arrivals during the read, before the server is taken to be serving without end.
pub(crate) fn read_slack(first_total: u64, limit: u32) -> u64 {
    (first_total / 4).max(2 * u64::from(limit))
}

/// Order-independent fingerprint of an item key, for spotting repeats within one read.
fn key_hash(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl Run {
    fn totals(&self) -> Option<bool> {
        self.totals.get().copied()
    }

    fn learn_totals(&self, page: &crate::api::AuditPage) {
        let _ = self.totals.set(page.total.is_some());
    }

    async fn collect_filter(
        self: &Arc<Self>,
        plan: &Plan,
        filter: &str,
        coverage: &BTreeMap<NaiveDate, Coverage>,
    ) -> Result<(), RunError> {
        let overlap = u64::from(self.account.collection.overlap_days);
        let overlap_from = plan
            .today
            .checked_sub_days(Days::new(overlap.saturating_sub(1)))
            .unwrap_or(plan.today);
        let is_complete = |d: &NaiveDate| coverage.get(d).is_some_and(|c| c.complete);
        let days: Vec<NaiveDate> = plan
            .start
            .iter_days()
            .take_while(|d| *d <= plan.today)
            .collect();
        let mut read_now: HashSet<NaiveDate> = HashSet::new();

        // 1. Days never proven complete, newest first.
        let pending: Vec<NaiveDate> = days
            .iter()
            .rev()
            .filter(|d| !is_complete(d))
            .copied()
            .collect();
        if let Some(b) = &self.bar {
            b.set_length(pending.len() as u64);
        }
        read_now.extend(self.read_days(pending, filter).await?);

        // 2. Complete overlap days: probe, and re-read the ones whose total moved.
        if overlap > 0 {
            for d in days
                .iter()
                .rev()
                .filter(|d| **d >= overlap_from && is_complete(d))
            {
                let recorded = coverage.get(d).and_then(|c| c.server_total);
                let changed = match (self.totals(), recorded) {
                    (Some(false), _) => true,
                    _ => {
                        let now = self.probe(*d, *d, filter).await?;
                        now.is_none() || now != recorded
                    }
                };
                if changed && !read_now.contains(d) {
                    self.read_day(*d, filter).await?;
                    read_now.insert(*d);
                }
            }
        }

        // 3. Older complete days: compare run totals, bisect mismatches, re-read what changed.
        if self.totals().is_none() && days.iter().any(|d| !read_now.contains(d)) {
            // Nothing asked yet this pass: learn whether the server sends totals.
            self.probe(plan.today, plan.today, filter).await?;
        }
        if self.totals() == Some(false) {
            return Ok(());
        }
        let (runs, learn) = verify_runs(&days, coverage, overlap_from, overlap, &read_now);
        for d in learn {
            // Read without totals before (bare arrays); read once to learn its total.
            self.read_day(d, filter).await?;
        }
        for run in runs {
            for d in self.changed_days(&run, filter).await? {
                tracing::info!(event = "late_events", account = %self.name, day = %d, "a day already read has new events; reading it again");
                self.read_day(d, filter).await?;
            }
        }
        Ok(())
    }

    /// Read `days` (newest first), up to `concurrent_windows` at once; the days read completely
    /// or left incomplete by a re-read limit. The first failure stops the account: no new day is
    /// started, the reads in flight stop at their next safe point, and that error is returned.
    async fn read_days(
        self: &Arc<Self>,
        days: Vec<NaiveDate>,
        filter: &str,
    ) -> Result<Vec<NaiveDate>, RunError> {
        let width = self.account.collection.concurrent_windows.max(1) as usize;
        let mut queue = days.into_iter();
        let mut set: JoinSet<(NaiveDate, Result<(), RunError>)> = JoinSet::new();
        let mut done = Vec::new();
        let mut failure: Option<RunError> = None;
        loop {
            while failure.is_none() && set.len() < width {
                let Some(d) = queue.next() else { break };
                let run = Arc::clone(self);
                let filter = filter.to_string();
                set.spawn(async move { (d, run.read_day(d, &filter).await) });
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let result = match joined {
                Ok((d, r)) => r.map(|()| d),
                Err(e) => Err(RunError::Task(e.to_string())),
            };
            match result {
                Ok(d) => {
                    done.push(d);
                    if let Some(b) = &self.bar {
                        b.inc(1);
                    }
                }
                Err(e) => {
                    // Keep the first real failure; the reads it stops report `Cancelled`.
                    let first_real = !matches!(e, RunError::Cancelled)
                        && failure
                            .as_ref()
                            .is_none_or(|f| matches!(f, RunError::Cancelled));
                    if failure.is_none() || first_real {
                        failure = Some(e);
                    }
                    self.cancel.cancel();
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// The server's total for `[from, to]` (a `limit=1` request), or `None` for bare arrays.
    async fn probe(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        filter: &str,
    ) -> Result<Option<u64>, RunError> {
        let q = AuditQuery {
            from,
            to,
            action: (!filter.is_empty()).then(|| filter.to_string()),
            offset: 0,
            limit: 1,
        };
        let page = self.fetch(&q).await?;
        self.learn_totals(&page);
        Ok(page.total)
    }

    /// Days of a run of complete days whose server total no longer matches what was recorded.
    async fn changed_days(
        &self,
        run: &[(NaiveDate, u64)],
        filter: &str,
    ) -> Result<Vec<NaiveDate>, RunError> {
        let name = &self.name;
        bisect_changed(run, |from, to| self.probe(from, to, filter), |from, to, expected, total| {
            tracing::warn!(event = "total_shrank", account = %name, from = %from, to = %to, expected, total, "the server reports fewer events than it did when these days were read");
        })
        .await
    }

    /// Read one day completely.
    ///
    /// The audit log is append-only: an event arriving at an offset before the reader pushes the
    /// items after it to higher offsets, never to lower ones, so forward paging sees repeats but
    /// never skips. A read is therefore complete once it has seen every item that existed when it
    /// began: distinct items >= the `total` of its first page (envelope responses), or a page
    /// shorter than `limit` (bare arrays). Arrivals during the read are left to the next pass,
    /// which finds them because the recorded total counts only what was seen. Only a shrinking
    /// total or too few distinct items (deletion, retention) can hide an item: those re-read, at
    /// most `max_window_rereads` times.
    ///
    /// Every read is bounded: a page made only of items already seen in this read means the server
    /// ignores `offset`; more distinct items than the first total plus a slack for arrivals, or
    /// more than `max_pages_per_window` pages, mean it would serve for ever. Each ends the account's
    /// pass with [`RunError::Unbounded`].
    async fn read_day(&self, day: NaiveDate, filter: &str) -> Result<(), RunError> {
        let limit = self.account.collection.page_size;
        let max_rereads = self.account.collection.max_window_rereads;
        let max_pages = self.account.collection.max_pages_per_window;
        let action: Arc<str> = Arc::from(filter);
        self.days_read.fetch_add(1, Relaxed);
        let mut why_incomplete = String::new();
        // (distinct, first total, last total) of the previous attempt: a re-read that ends the
        // same way proves nothing moved, so the shortfall is the server's (an offset cap, a total
        // that lies) and reading again cannot fix it.
        let mut previous: Option<(u64, Option<u64>, Option<u64>)> = None;
        'attempts: for attempt in 0..=max_rereads {
            if attempt > 0 {
                self.rereads.fetch_add(1, Relaxed);
            }
            let mut seen: HashSet<u64> = HashSet::new();
            let mut first_total: Option<u64> = None;
            let mut offset = 0u64;
            let mut pages = 0u32;
            loop {
                if pages >= max_pages {
                    return Err(self
                        .unbounded(
                            day,
                            &action,
                            format!(
                                "the server kept serving full pages: {pages} pages ({} distinct events) without reaching the end of the day (max_pages_per_window = {max_pages})",
                                seen.len()
                            ),
                        )
                        .await);
                }
                pages += 1;
                let q = AuditQuery {
                    from: day,
                    to: day,
                    action: (!filter.is_empty()).then(|| filter.to_string()),
                    offset,
                    limit,
                };
                let page = match self.fetch(&q).await {
                    Ok(p) => p,
                    Err(RunError::Api(e)) => {
                        self.send(WriterMsg::Incomplete {
                            account: self.name.clone(),
                            action: action.clone(),
                            day,
                            note: format!("read failed: {e}"),
                        })
                        .await?;
                        return Err(e.into());
                    }
                    Err(e) => return Err(e),
                };
                self.learn_totals(&page);
                if pages == 1 {
                    first_total = page.total;
                }
                let n = page.items.len() as u64;
                let before = seen.len();
                let mut events = Vec::with_capacity(page.items.len());
                let mut malformed = Vec::new();
                for item in page.items {
                    seen.insert(key_hash(item.key()));
                    match item {
                        ParsedEvent::Event(e) => events.push(e),
                        ParsedEvent::Malformed(m) => malformed.push(m),
                    }
                }
                if let Some(first) = malformed.first() {
                    // Per day at debug: `collect` warns once per account at the end of the pass.
                    tracing::debug!(event = "events_quarantined_day", account = %self.name, day = %day, count = malformed.len(), first_key = %first.key, first_reason = %first.reason, "events that cannot be understood are kept in quarantine");
                }
                let fresh = (seen.len() - before) as u64;
                if n > 0 && fresh == 0 {
                    // Nothing new on a non-empty page: the same items again, so `offset` is not
                    // honoured and paging would never end. Store nothing more of this day.
                    return Err(self
                        .unbounded(
                            day,
                            &action,
                            format!("the page at offset {offset} held only events already read (the server does not honour offset)"),
                        )
                        .await);
                }
                if let Some(t) = first_total {
                    if seen.len() as u64 > t + read_slack(t, limit) {
                        return Err(self
                            .unbounded(
                                day,
                                &action,
                                format!(
                                    "the server kept serving new events past the day's total of {t} ({} distinct so far)",
                                    seen.len()
                                ),
                            )
                            .await);
                    }
                }
                let events_seen = self.events_seen.fetch_add(n, Relaxed) + n;
                let pages_read = self.pages_read.fetch_add(1, Relaxed) + 1;
                let last = match page.total {
                    Some(t) => n == 0 || offset + n >= t,
                    None => n < u64::from(limit),
                };
                let distinct = seen.len() as u64;
                let complete = last
                    && match (first_total, page.total) {
                        (Some(first), Some(now)) => distinct >= first && now >= first,
                        _ => true,
                    };
                // Record only what was seen: arrivals during the read raise the server's total
                // past it, so the next pass's probe finds them.
                let done = complete.then_some(WindowDone {
                    server_total: page.total.map(|t| t.min(distinct)),
                    received: distinct,
                });
                self.send(WriterMsg::Page {
                    account: self.name.clone(),
                    action: action.clone(),
                    day,
                    events,
                    malformed,
                    done,
                })
                .await?;
                if let Some(b) = &self.bar {
                    b.set_message(format!("{pages_read} pages, {events_seen} events"));
                }
                offset += n;
                if complete {
                    return Ok(());
                }
                if last {
                    why_incomplete = match (first_total, page.total) {
                        (Some(first), Some(now)) if now < first => {
                            format!("the server's total shrank from {first} to {now} while reading")
                        }
                        (Some(first), _) => format!(
                            "{distinct} distinct events read, fewer than the day's total of {first}"
                        ),
                        _ => "the read ended early".to_string(),
                    };
                    let outcome = (distinct, first_total, page.total);
                    if previous == Some(outcome) {
                        why_incomplete.push_str(
                            " twice in a row (the server cannot page to its own total: an offset cap or a wrong total)",
                        );
                        break 'attempts;
                    }
                    previous = Some(outcome);
                    tracing::info!(event = "window_short", account = %self.name, day = %day, received = distinct, first_total = ?first_total, total = ?page.total, reason = %why_incomplete, "reading the day again");
                    break;
                }
            }
        }
        self.unstable_days.fetch_add(1, Relaxed);
        tracing::warn!(event = "window_unstable", account = %self.name, day = %day, reason = %why_incomplete, "the day stays incomplete until the next pass");
        self.send(WriterMsg::Incomplete {
            account: self.name.clone(),
            action,
            day,
            note: why_incomplete,
        })
        .await
    }

    /// Mark `day` incomplete with `reason` and build the error that ends the account's pass.
    async fn unbounded(&self, day: NaiveDate, action: &Arc<str>, reason: String) -> RunError {
        tracing::error!(event = "read_unbounded", account = %self.name, day = %day, reason = %reason);
        let note = format!("stopped: {reason}");
        if let Err(e) = self
            .send(WriterMsg::Incomplete {
                account: self.name.clone(),
                action: action.clone(),
                day,
                note,
            })
            .await
        {
            return e;
        }
        RunError::Unbounded {
            account: self.name.to_string(),
            day,
            reason,
        }
    }

    /// One request, abandoned if the pass is cancelled first. This is a safe point: the previous
    /// page was already handed to the writer and nothing of this one has been.
    async fn fetch(&self, q: &AuditQuery) -> Result<crate::api::AuditPage, RunError> {
        if self.cancel.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        tokio::select! {
            r = self.client.audit_log(q) => Ok(r?),
            _ = self.cancel.cancelled() => Err(RunError::Cancelled),
        }
    }

    async fn send(&self, msg: WriterMsg) -> Result<(), RunError> {
        self.tx.send(msg).await.map_err(|_| RunError::WriterGone)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn day(i: u64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 1)
            .and_then(|d| d.checked_add_days(Days::new(i)))
            .expect("day")
    }

    fn complete(d: NaiveDate, total: Option<u64>) -> Coverage {
        Coverage {
            day: d,
            complete: true,
            server_total: total,
            received: total.unwrap_or(3),
            read_at: Utc::now(),
            note: None,
        }
    }

    /// Step 3 checks runs of complete days with totals, split by a missing day, a day recorded
    /// without a total (read once to learn it), a day read this pass, and the overlap window.
    #[test]
    fn verify_runs_split_where_a_range_probe_cannot_answer() {
        let days: Vec<NaiveDate> = (0..10).map(day).collect();
        let mut coverage = BTreeMap::new();
        for i in [0, 1, 2, 5, 6, 7, 8, 9] {
            coverage.insert(day(i), complete(day(i), Some(10 + i)));
        }
        coverage.insert(day(4), complete(day(4), None));
        let mut incomplete = complete(day(3), Some(1));
        incomplete.complete = false;
        coverage.insert(day(3), incomplete);
        let read_now: HashSet<NaiveDate> = [day(6)].into_iter().collect();
        let (runs, learn) = verify_runs(&days, &coverage, day(8), 2, &read_now);
        assert_eq!(
            runs,
            vec![
                vec![(day(0), 10), (day(1), 11), (day(2), 12)],
                vec![(day(5), 15)],
                vec![(day(7), 17)],
            ]
        );
        assert_eq!(learn, vec![day(4)]);
        // Without an overlap window every complete day is checked.
        let (runs, _) = verify_runs(&days, &coverage, day(8), 0, &HashSet::new());
        assert_eq!(
            runs.last(),
            Some(&vec![
                (day(5), 15),
                (day(6), 16),
                (day(7), 17),
                (day(8), 18),
                (day(9), 19)
            ])
        );
    }

    /// The server's totals now: `recorded` with some days changed.
    fn server(recorded: &[(NaiveDate, u64)], now: &[(u64, u64)]) -> BTreeMap<NaiveDate, u64> {
        let mut m: BTreeMap<NaiveDate, u64> = recorded.iter().copied().collect();
        for (i, t) in now {
            m.insert(day(*i), *t);
        }
        m
    }

    fn run_bisect(
        recorded: &[(NaiveDate, u64)],
        truth: &BTreeMap<NaiveDate, u64>,
        totals: bool,
    ) -> (Vec<NaiveDate>, Vec<(NaiveDate, NaiveDate)>, Vec<NaiveDate>) {
        let probes = RefCell::new(Vec::new());
        let mut shrunk = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let changed = rt
            .block_on(bisect_changed::<(), _>(
                recorded,
                |from, to| {
                    probes.borrow_mut().push((from, to));
                    let t: u64 = truth.range(from..=to).map(|(_, t)| t).sum();
                    std::future::ready(Ok(totals.then_some(t)))
                },
                |from, _, _, _| shrunk.push(from),
            ))
            .expect("bisect");
        (changed, probes.into_inner(), shrunk)
    }

    /// One probe proves an unchanged run; a late event in one day of eight is found with one
    /// probe per level (the right half's total is derived), two changed days with a few more; a
    /// shrunk day is reported, not read; a server without totals ends the search.
    #[test]
    fn bisection_finds_changed_days_with_one_probe_per_level() {
        let recorded: Vec<(NaiveDate, u64)> = (0..8).map(|i| (day(i), 10)).collect();
        let (changed, probes, _) = run_bisect(&recorded, &server(&recorded, &[]), true);
        assert!(changed.is_empty());
        assert_eq!(probes, vec![(day(0), day(7))]);

        let (changed, probes, _) = run_bisect(&recorded, &server(&recorded, &[(5, 12)]), true);
        assert_eq!(changed, vec![day(5)]);
        assert_eq!(
            probes,
            vec![
                (day(0), day(7)),
                (day(0), day(3)),
                (day(4), day(5)),
                (day(4), day(4))
            ],
            "whole run, then the left half of each level"
        );

        let truth = server(&recorded, &[(1, 11), (6, 14)]);
        let (changed, probes, _) = run_bisect(&recorded, &truth, true);
        assert_eq!(changed, vec![day(1), day(6)]);
        assert!(probes.len() <= 7, "{probes:?}");

        let (changed, _, shrunk) = run_bisect(&recorded, &server(&recorded, &[(2, 9)]), true);
        assert!(changed.is_empty());
        assert_eq!(shrunk, vec![day(0)], "the whole run shrank: reported once");

        let (changed, probes, _) = run_bisect(&recorded, &server(&recorded, &[(5, 12)]), false);
        assert!(changed.is_empty());
        assert_eq!(probes.len(), 1);

        let (changed, probes, _) = run_bisect(&[], &BTreeMap::new(), true);
        assert!(changed.is_empty() && probes.is_empty());
    }
}
