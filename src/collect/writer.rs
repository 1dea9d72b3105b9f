//! The writer thread: owns the [`Store`] during a pass and applies pages in arrival order, grouped
//! into transactions (up to 50,000 events or one second), while the account tasks go on fetching.
//! SQLite has one writer at a time, so one thread serializes all accounts' writes; the bounded
//! channel (a few pages per account) keeps memory flat and makes fetchers wait when the disk is
//! the bottleneck. A second thread runs the WAL checkpoints on its own connection, woken after
//! each commit, so the writer never stops to copy the WAL into the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio::sync::mpsc;

use super::CollectError;
use crate::api::{AuditEvent, Malformed};
use crate::store::{EventBatch, PageWrite, PassRecord, Store, StoreError, WindowDone};

pub(super) enum WriterMsg {
    Page {
        account: Arc<str>,
        action: Arc<str>,
        day: NaiveDate,
        events: Vec<AuditEvent>,
        malformed: Vec<Malformed>,
        done: Option<WindowDone>,
    },
    Incomplete {
        account: Arc<str>,
        action: Arc<str>,
        day: NaiveDate,
        note: String,
    },
    /// The account's pass ended; the writer fills in what it stored and records the pass.
    Pass(PassRecord),
    /// A CertCentral report run was created or finished (after the rows and coverage it brought).
    ReportRun(crate::store::ReportRun),
}

/// What the writer stored for one account in this run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    pub inserted: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

/// What the writer hands back: the store and what it wrote per account.
type WriterResult = Result<(Store, HashMap<String, WriteCounts>), StoreError>;

pub(super) struct Writer {
    handle: tokio::task::JoinHandle<WriterResult>,
}

impl Writer {
    pub(super) fn spawn(store: Store, rx: mpsc::Receiver<WriterMsg>) -> Writer {
        Writer {
            handle: tokio::task::spawn_blocking(move || run(store, rx)),
        }
    }

    /// Wait for every sender to hang up and the last page to be stored.
    pub(super) async fn finish(
        self,
    ) -> Result<(Store, HashMap<String, WriteCounts>), CollectError> {
        match self.handle.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(CollectError::WriterGone),
        }
    }
}

/// SQLite's page cache while the writer runs: the whole index of event keys of a million events
/// (about 18 MiB; the text index it replaced was 56 MiB and did not fit in the 40 MiB this was)
/// and the pages the other indexes and the table are appended at.
const WRITE_CACHE_MIB: u32 = 28;

/// A batch commits when it holds this many events ...
const BATCH_MAX_EVENTS: usize = 50_000;
/// ... or is this old, so readers see progress and a crash re-fetches little.
const BATCH_MAX_AGE: Duration = Duration::from_secs(1);
/// How often a batch waiting for pages looks whether another writer waits for it.
const WAITER_CHECK: Duration = Duration::from_millis(20);

fn run(mut store: Store, mut rx: mpsc::Receiver<WriterMsg>) -> WriterResult {
    // Checkpoints run on a thread of their own, woken after each commit, so inserting seldom
    // waits for the WAL to be copied into the database: the checkpoint SQLite runs inside the
    // commit that crosses its threshold finds most of the WAL already copied.
    let checkpoints = match store.checkpointer() {
        Ok(c) => c.map(spawn_checkpointer),
        Err(e) => {
            tracing::debug!(event = "checkpointer_unavailable", error = %e);
            None
        }
    };
    store.set_write_cache(Some(WRITE_CACHE_MIB))?;
    let result = write_all(&mut store, &mut rx, checkpoints.as_ref().map(|(w, _)| w));
    // Back to the default; `collect::release_memory` then frees what the pass used.
    store.set_write_cache(None)?;
    if let Some((wake, thread)) = checkpoints {
        drop(wake);
        let _ = thread.join();
    }
    result.map(|counts| (store, counts))
}

/// The checkpoint thread: one PASSIVE checkpoint per wake-up (coalesced), and a last one when the
/// writer hangs up. Ends with the writer (the loop ends when the sender is dropped).
fn spawn_checkpointer(
    c: Box<dyn crate::store::Checkpoint>,
) -> (std::sync::mpsc::SyncSender<()>, std::thread::JoinHandle<()>) {
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    let thread = std::thread::spawn(move || {
        while woken.recv().is_ok() {
            if let Err(e) = c.checkpoint() {
                tracing::debug!(event = "checkpoint_failed", error = %e);
            }
        }
        if let Err(e) = c.checkpoint() {
            tracing::debug!(event = "checkpoint_failed", error = %e);
        }
    });
    (wake, thread)
}

fn write_all(
    store: &mut Store,
    rx: &mut mpsc::Receiver<WriterMsg>,
    wake: Option<&std::sync::mpsc::SyncSender<()>>,
) -> Result<HashMap<String, WriteCounts>, StoreError> {
    let mut counts: HashMap<String, WriteCounts> = HashMap::new();
    let handle = tokio::runtime::Handle::current();
    // Pages are grouped into transactions: an index on random event ids dirties about one page
    // per row, and a page dirtied many times in one transaction is written once. Each message is
    // still applied whole inside one transaction, so a day's coverage never commits without the
    // rows it covers.
    while let Some(first) = rx.blocking_recv() {
        let started = Instant::now();
        let mut batch = store.batch()?;
        let mut events = apply(&mut *batch, first, &mut counts)?;
        let mut closed = false;
        // Another job of this process waiting to write (an invitation poll) gets its turn after
        // the message being applied, not after the whole batch: the wait is sliced to notice it.
        while events < BATCH_MAX_EVENTS && !batch.others_waiting() {
            let Some(left) = BATCH_MAX_AGE.checked_sub(started.elapsed()) else {
                break;
            };
            match handle.block_on(tokio::time::timeout(left.min(WAITER_CHECK), rx.recv())) {
                Ok(Some(msg)) => events += apply(&mut *batch, msg, &mut counts)?,
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => continue,
            }
        }
        batch.commit()?;
        if let Some(wake) = wake {
            // Full: a checkpoint is already due, and it will see this commit too.
            let _ = wake.try_send(());
        }
        if closed {
            break;
        }
    }
    Ok(counts)
}

/// Apply one message to the open batch; returns how many events it carried.
fn apply(
    batch: &mut dyn EventBatch,
    msg: WriterMsg,
    counts: &mut HashMap<String, WriteCounts>,
) -> Result<usize, StoreError> {
    match msg {
        WriterMsg::Page {
            account,
            action,
            day,
            events,
            malformed,
            done,
        } => {
            let out = batch.write_page(&PageWrite {
                account: &account,
                action_filter: &action,
                day: Some(day),
                events: &events,
                malformed: &malformed,
                done,
            })?;
            let c = counts.entry(account.to_string()).or_default();
            c.inserted += out.inserted;
            c.duplicates += out.duplicates;
            c.quarantined += out.quarantined;
            Ok(events.len() + malformed.len())
        }
        WriterMsg::Incomplete {
            account,
            action,
            day,
            note,
        } => {
            batch.mark_incomplete(&account, &action, day, &note)?;
            Ok(0)
        }
        WriterMsg::ReportRun(run) => {
            batch.save_report_run(&run)?;
            Ok(0)
        }
        WriterMsg::Pass(mut p) => {
            let c = counts.get(&p.account).copied().unwrap_or_default();
            p.new_events = c.inserted;
            p.duplicates = c.duplicates;
            p.quarantined = c.quarantined;
            batch.record_pass(&p)?;
            Ok(0)
        }
    }
}
