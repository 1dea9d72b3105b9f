//! The writer thread: owns the [`Store`] during a pass and applies pages in arrival order, one
//! transaction each, while the account tasks go on fetching. SQLite has one writer at a time, so
//! one thread serializes all accounts' writes; the bounded channel (a few pages) keeps memory flat
//! and makes fetchers wait when the disk is the bottleneck.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use tokio::sync::mpsc;

use super::CollectError;
use crate::api::{AuditEvent, Malformed};
use crate::store::{PageWrite, PassRecord, Store, StoreError, WindowDone};

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

fn run(mut store: Store, mut rx: mpsc::Receiver<WriterMsg>) -> WriterResult {
    let mut counts: HashMap<String, WriteCounts> = HashMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            WriterMsg::Page {
                account,
                action,
                day,
                events,
                malformed,
                done,
            } => {
                let out = store.write_page(&PageWrite {
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
            }
            WriterMsg::Incomplete {
                account,
                action,
                day,
                note,
            } => store.mark_incomplete(&account, &action, day, &note)?,
            WriterMsg::Pass(mut p) => {
                let c = counts.get(&p.account).copied().unwrap_or_default();
                p.new_events = c.inserted;
                p.duplicates = c.duplicates;
                p.quarantined = c.quarantined;
                store.record_pass(&p)?;
            }
        }
    }
    Ok((store, counts))
}
