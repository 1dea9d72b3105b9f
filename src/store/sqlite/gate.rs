//! Turns at a database's write lock for the writers of this process, first come first served.
//!
//! SQLite lets one connection write at a time; the others wait in its busy handler, which sleeps
//! and tries again. A writer that commits and begins again at once (the collection's writer
//! thread, fed a page every few milliseconds during a backfill) wins nearly every race, so a
//! short write of another job (an invitation poll's log line) can wait out its whole busy timeout
//! and fail with "database is locked". Inside one process the writers therefore queue here first:
//! a write waits for the transactions queued before it and no longer, and the long-running writer
//! sees that someone is waiting ([`Gate::waiting`]) and commits early. Other processes are still
//! kept apart by SQLite itself (`BEGIN IMMEDIATE` with the busy timeout).
//!
//! Waiting for a turn blocks the calling thread, like every other store call: the daemon runs
//! store work on blocking threads, never on the async runtime's.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// The write queue of one database file.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// A std mutex: held only to look at or change the queue, never while a transaction runs.
    state: Mutex<State>,
    /// Signalled whenever the turn moves or a waiter gives up, so the next in line looks again.
    moved: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets of the writers waiting, in arrival order.
    queue: VecDeque<u64>,
    next_ticket: u64,
    /// A writer holds the turn (its [`Turn`] is alive).
    held: bool,
}

/// The right to write; the next writer in line goes when it is dropped. Drop it only after the
/// transaction has committed or rolled back.
#[derive(Debug)]
pub(crate) struct Turn {
    gate: Arc<Gate>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.gate.lock().held = false;
        self.gate.moved.notify_all();
    }
}

/// One gate per database file in this process. Weak entries: a file nobody has open costs
/// nothing but its map slot, and dead slots are swept when a new file is opened.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Gate>>> {
    static GATES: OnceLock<Mutex<HashMap<PathBuf, Weak<Gate>>>> = OnceLock::new();
    GATES.get_or_init(Default::default)
}

impl Gate {
    /// The gate of the database at `path` (an existing file: resolved, so two spellings of one
    /// file share a gate).
    pub(crate) fn for_path(path: &Path) -> Arc<Gate> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut map = match registry().lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(g) = map.get(&key).and_then(Weak::upgrade) {
            return g;
        }
        map.retain(|_, g| g.strong_count() > 0);
        let g = Arc::new(Gate::default());
        map.insert(key, Arc::downgrade(&g));
        g
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while the queue was being changed by a few plain
        // assignments: the queue itself is still consistent.
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Wait for this thread's turn, at most `limit`; `None` when the writers before it took
    /// longer than that (the place in the queue is given up).
    pub(crate) fn wait_turn(self: &Arc<Self>, limit: Duration) -> Option<Turn> {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        let ticket = s.next_ticket;
        s.next_ticket = s.next_ticket.wrapping_add(1);
        s.queue.push_back(ticket);
        loop {
            if !s.held && s.queue.front() == Some(&ticket) {
                s.queue.pop_front();
                s.held = true;
                return Some(Turn { gate: self.clone() });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.queue.retain(|t| *t != ticket);
                drop(s);
                // The writer behind this one may be first now.
                self.moved.notify_all();
                return None;
            }
            s = match self.moved.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Writers of this process waiting for a turn.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writers get their turns in arrival order, one at a time, and one that gives up does not
    /// block the writers behind it.
    #[test]
    fn turns_are_first_come_first_served() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.db");
        std::fs::write(&p, "").unwrap();
        let gate = Gate::for_path(&p);
        assert!(Arc::ptr_eq(
            &gate,
            &Gate::for_path(&dir.path().join(".").join("g.db"))
        ));
        let first = gate.wait_turn(Duration::from_secs(1)).unwrap();
        // Nobody else can write while the turn is held.
        assert!(gate.wait_turn(Duration::from_millis(20)).is_none());
        assert_eq!(gate.waiting(), 0);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..3 {
            let (g, o) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let t = g.wait_turn(Duration::from_secs(10)).unwrap();
                o.lock().unwrap().push(i);
                drop(t);
            }));
            // Queue them in a known order: wait until this one is in line.
            let deadline = Instant::now() + Duration::from_secs(10);
            while gate.waiting() < i + 1 {
                assert!(Instant::now() < deadline);
                std::thread::yield_now();
            }
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(gate.waiting(), 0);
        assert!(gate.wait_turn(Duration::from_millis(20)).is_some());
    }
}
