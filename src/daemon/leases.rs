//! Several daemons on one PostgreSQL database: before a collection (or poll) run, the daemon
//! takes the lease of each API key its accounts use (accounts sharing a key share one lease, as
//! they share DigiCert's limits), works only the accounts whose lease it holds, fences the run's
//! store with them (a write after a takeover commits nothing, see `store::LeaseStore`), renews
//! them from a heartbeat thread of its own every third of `[daemon] lease_secs`, and gives them
//! up when the run ends (unless another run of this node still works them). Between and
//! beside those runs, the takeover watch (`supervisor::takeover_loop`, [`Purpose::Takeover`])
//! takes the keys a dead or frozen node left behind as soon as they lapse.
//!
//! Each daemon also holds a lease of its own, `node:NAME`, for its whole life: the live nodes
//! are the unexpired `node:` rows, and a run takes at most its fair share of the keys (all keys
//! over the live nodes, rounded up), so three daemons started together split the accounts
//! instead of the first one taking them all. A killed node's row lapses with its key leases,
//! and the survivors' shares grow to cover its accounts. On SQLite every lease is granted and
//! nothing changes.

use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::api::settings::{Account, Credential};
use crate::config::Config;
use crate::store::{Lease, Store, StoreError, StoreTarget};

/// The lease an account needs: its API key's (hashed: the key never reaches the database), or
/// its client certificate file's.
pub fn lease_key(a: &Account) -> String {
    let (kind, material): (&str, &[u8]) = match &a.credential {
        Credential::ApiKey(k) => ("key", k.expose().as_bytes()),
        Credential::ClientCert(c) => ("cert", c.pem_file.as_os_str().as_encoded_bytes()),
    };
    let digest = Sha256::digest(material);
    format!("{kind}:{}", hex::encode(&digest[..12]))
}

/// `[daemon] node_name`, else host name and pid.
pub(super) fn node_name(cfg: &Config) -> String {
    cfg.daemon.node_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        format!("{host}:{}", std::process::id())
    })
}

/// The prefix of the lease row each daemon holds for its life (see the module docs).
const NODE_PREFIX: &str = "node:";

/// How many runs of this process hold each lease now (the collect and invite-poll jobs may
/// work the same key at once): a lease is given up only by the last of them, so one run ending
/// never frees a key that another run of this node is still working.
static IN_USE: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn in_use() -> std::sync::MutexGuard<'static, BTreeMap<String, usize>> {
    // A poisoned count only means a panic elsewhere mid-update; the map is still usable.
    IN_USE.lock().unwrap_or_else(|p| p.into_inner())
}

/// `/metrics`' `auditwarden_lease_held`: per configured account, whether a run of this node
/// holds its lease now (PostgreSQL only; empty on SQLite, where there are no leases).
pub(super) fn lease_metrics(cfg: &Config) -> String {
    use std::fmt::Write;
    if !matches!(cfg.store.target, StoreTarget::Postgres(_)) {
        return String::new();
    }
    let node = node_name(cfg);
    let counts = in_use();
    let mut o = String::from("# HELP auditwarden_lease_held 1 while this node holds the account's lease (its API key's) and works it, else 0.\n# TYPE auditwarden_lease_held gauge\n");
    for a in &cfg.accounts {
        let held = counts.get(&lease_key(a)).is_some_and(|n| *n > 0);
        let _ = writeln!(
            o,
            "auditwarden_lease_held{{account=\"{}\",node=\"{}\"}} {}",
            super::metrics::label(&a.name),
            super::metrics::label(&node),
            u8::from(held)
        );
    }
    o
}

/// One run fewer holds `key`; `true` when it was the last (its lease may be given up, while
/// the caller still holds the guard, so no run takes the key between the count and the release).
fn unhold(counts: &mut BTreeMap<String, usize>, key: &str) -> bool {
    match counts.get_mut(key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            counts.remove(key);
            true
        }
    }
}

/// The leases of one run; dropping it stops the heartbeat and gives them up.
pub(super) struct Held {
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The keys this run marked in [`COLLECTING`], unmarked on drop.
    collecting: Vec<String>,
}

impl Held {
    /// No leases (a job that takes none).
    pub(super) fn none() -> Held {
        Held {
            stop: None,
            heartbeat: None,
            collecting: Vec::new(),
        }
    }
}

/// Hold `node:NAME` for the daemon's life (PostgreSQL; nothing on SQLite), so the other nodes
/// count this one when they take their share.
pub(super) fn register_node(cfg: &Config) -> Result<Held, StoreError> {
    if !matches!(cfg.store.target, StoreTarget::Postgres(_)) {
        return Ok(Held::none());
    }
    let node = node_name(cfg);
    let ttl = ttl_ms(cfg);
    let mut store = Store::open_target(&cfg.store.target)?;
    let key = format!("{NODE_PREFIX}{node}");
    match store.acquire_lease(&key, &node, crate::clock::now_ms(), ttl)? {
        Some(l) => heartbeat(cfg, store, vec![l]),
        None => {
            tracing::warn!(event = "node_name_in_use", node = %node, "another live daemon has this node_name; the fair share counts the two as one");
            Ok(Held::none())
        }
    }
}

fn ttl_ms(cfg: &Config) -> i64 {
    i64::try_from(cfg.daemon.lease.as_millis()).unwrap_or(30_000)
}

/// Whether `l` is a key a node died (or froze) holding: lapsed, never given up.
fn orphaned(l: &Lease, node: &str, now_ms: i64) -> bool {
    l.owner != node && l.expires_ms > 0 && l.expires_ms < now_ms && !l.key.starts_with(NODE_PREFIX)
}

/// This run's share of `keys` lease keys: all of them over the live nodes (unexpired `node:`
/// rows, less those holding an orphaned key: a node whose key leases lapsed unreleased is dead
/// or frozen, whatever its own row says until it lapses too), rounded up.
fn fair_share(rows: &[Lease], keys: usize, node: &str, now_ms: i64) -> usize {
    let dead: Vec<&str> = rows
        .iter()
        .filter(|l| orphaned(l, node, now_ms))
        .map(|l| l.owner.as_str())
        .collect();
    let live = rows
        .iter()
        .filter(|l| {
            l.key.starts_with(NODE_PREFIX)
                && l.expires_ms >= now_ms
                && !dead.contains(&l.key[NODE_PREFIX.len()..].as_ref())
        })
        .count()
        .max(1);
    keys.div_ceil(live)
}

/// Runs of this process so far: each starts its share at another place in the key list, so a
/// node works every key in turn (in config order alone, the keys past its share would wait for
/// runs of the nodes to overlap).
static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The order in which a run tries `keys` (distinct, in config order): first the keys of a node
/// that died holding them (lapsed, never given up: a takeover waits no longer than it must),
/// then the rest from this run's starting place on, wrapping around.
fn try_order(
    keys: &[String],
    rows: &[Lease],
    node: &str,
    now_ms: i64,
    share: usize,
) -> Vec<String> {
    let n = keys.len().max(1);
    let start = ROUND
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .wrapping_mul(share.max(1))
        % n;
    let is_orphan = |k: &str| rows.iter().any(|l| l.key == k && orphaned(l, node, now_ms));
    let mut order: Vec<(bool, usize, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (!is_orphan(k), (i + n - start) % n, k.clone()))
        .collect();
    order.sort();
    order.into_iter().map(|(_, _, k)| k).collect()
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let mut collecting = collecting();
        for k in &self.collecting {
            collecting.remove(k);
        }
    }
}

/// The keys a collect run of this process works now. The takeover watch runs a collection of
/// its own beside the scheduled one: neither takes a key the other collects (two passes of one
/// account at once would race each other's writes).
static COLLECTING: Mutex<std::collections::BTreeSet<String>> =
    Mutex::new(std::collections::BTreeSet::new());

fn collecting() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<String>> {
    COLLECTING.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a run is for, which decides the keys it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// A scheduled collect run: this node's fair share of the keys, orphaned ones first.
    Collect,
    /// A scheduled invite poll: as a collect run, beside one of this node's own.
    Poll,
    /// The takeover watch: only keys a dead node left behind, split among the survivors.
    Takeover,
}

/// The distinct lease keys of `accounts`, in config order.
fn keys_of(accounts: &[&Account]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for a in accounts {
        let k = lease_key(a);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// What the takeover watch found in one read of the lease table.
pub(super) struct Watch {
    /// Some configured key was left behind by a dead node and is not worked by this node.
    pub(super) orphans: bool,
    /// When the next lease of a configured key held by another node expires (domain clock, ms):
    /// a live node renews it before then, a dead one's lapses then, so the watch looks again
    /// at that moment instead of up to a heartbeat later.
    pub(super) next_expiry_ms: Option<i64>,
}

/// One look at the lease table for the takeover watch (see [`Watch`]).
pub(super) fn watch(cfg: &Config, store: &Store) -> Result<Watch, StoreError> {
    let node = node_name(cfg);
    let now_ms = crate::clock::now_ms();
    let rows = store.leases()?;
    let accounts: Vec<&Account> = cfg.accounts.iter().collect();
    let keys = keys_of(&accounts);
    let busy = collecting();
    let ours = |l: &&Lease| keys.contains(&l.key);
    Ok(Watch {
        orphans: rows
            .iter()
            .filter(ours)
            .any(|l| !busy.contains(&l.key) && orphaned(l, &node, now_ms)),
        next_expiry_ms: rows
            .iter()
            .filter(ours)
            .filter(|l| l.owner != node && l.expires_ms >= now_ms)
            .map(|l| l.expires_ms)
            .min(),
    })
}

/// Take the leases of `accounts`' keys for a run of `purpose` (see [`Purpose`] and the module
/// docs); the accounts this node may work now, fenced on `store`.
pub(super) fn take<'a>(
    cfg: &Config,
    store: &mut Store,
    accounts: &[&'a Account],
    purpose: Purpose,
) -> Result<(Vec<&'a Account>, Held), StoreError> {
    let idle = Held::none();
    if !matches!(cfg.store.target, StoreTarget::Postgres(_)) {
        return Ok((accounts.to_vec(), idle));
    }
    let node = node_name(cfg);
    let ttl = ttl_ms(cfg);
    let now_ms = crate::clock::now_ms();
    let rows = store.leases()?;
    let all = keys_of(accounts);
    let mut keys = all.clone();
    if purpose != Purpose::Poll {
        let busy = collecting();
        keys.retain(|k| !busy.contains(k));
    }
    let share = match purpose {
        // The orphans split among the survivors.
        Purpose::Takeover => {
            keys.retain(|k| {
                rows.iter()
                    .any(|l| &l.key == k && orphaned(l, &node, now_ms))
            });
            fair_share(&rows, keys.len(), &node, now_ms)
        }
        // The node's share of all the keys, less those its other collect run works.
        Purpose::Collect => {
            fair_share(&rows, all.len(), &node, now_ms).saturating_sub(all.len() - keys.len())
        }
        Purpose::Poll => fair_share(&rows, all.len(), &node, now_ms),
    };
    let order = try_order(&keys, &rows, &node, now_ms, share);
    let rank = |a: &Account| {
        let k = lease_key(a);
        order.iter().position(|o| *o == k)
    };
    let mut accounts: Vec<&'a Account> = accounts
        .iter()
        .copied()
        .filter(|a| rank(a).is_some())
        .collect();
    accounts.sort_by_key(|a| rank(a));
    let mut leases: Vec<Lease> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    let mut held = Vec::new();
    for a in &accounts {
        let key = lease_key(a);
        let lease = match leases.iter().find(|l| l.key == key) {
            Some(l) => Some(l.clone()),
            None if refused.contains(&key) => None,
            None if leases.len() >= share => {
                refused.push(key);
                if purpose != Purpose::Takeover {
                    tracing::info!(event = "lease_share_taken", account = %a.name, node = %node, share, "this node works its share of the keys; this account waits for a later run");
                }
                continue;
            }
            None => {
                // Marked before the acquisition, so the other collect run of this node cannot
                // take the key between the check and the acquisition.
                if purpose != Purpose::Poll && !collecting().insert(key.clone()) {
                    refused.push(key);
                    continue;
                }
                // Counted before the acquisition: a run of this node ending meanwhile then
                // keeps the lease instead of giving it up under this one.
                *in_use().entry(key.clone()).or_default() += 1;
                let l = match store.acquire_lease(&key, &node, crate::clock::now_ms(), ttl) {
                    Ok(l) => l,
                    Err(e) => {
                        let mut marked: Vec<String> = leases.into_iter().map(|l| l.key).collect();
                        marked.push(key);
                        forget(&marked, purpose);
                        return Err(e);
                    }
                };
                match &l {
                    Some(l) => leases.push(l.clone()),
                    None => {
                        forget(std::slice::from_ref(&key), purpose);
                        refused.push(key);
                    }
                }
                l
            }
        };
        match lease {
            Some(l) => {
                if purpose == Purpose::Takeover {
                    tracing::info!(event = "lease_taken_over", account = %a.name, node = %node, epoch = l.epoch, "a node left this account's key behind; this node works it now");
                }
                store.fence(&a.name, Some(l));
                held.push(*a);
            }
            None => {
                tracing::info!(event = "lease_held_elsewhere", account = %a.name, node = %node, "another daemon works this account now");
            }
        }
    }
    if leases.is_empty() {
        return Ok((held, idle));
    }
    let hb =
        Store::open_target(&cfg.store.target).and_then(|hb| heartbeat(cfg, hb, leases.clone()));
    let marked: Vec<String> = leases.into_iter().map(|l| l.key).collect();
    match hb {
        Ok(mut h) => {
            if purpose != Purpose::Poll {
                h.collecting = marked;
            }
            Ok((held, h))
        }
        Err(e) => {
            forget(&marked, purpose);
            Err(e)
        }
    }
}

/// Undo the marks a failed [`take`] made for `keys` (their counts, and for a collect run their
/// [`COLLECTING`] entries); the rows lapse by themselves.
fn forget(keys: &[String], purpose: Purpose) {
    let mut counts = in_use();
    for k in keys {
        unhold(&mut counts, k);
    }
    if purpose != Purpose::Poll {
        let mut busy = collecting();
        for k in keys {
            busy.remove(k);
        }
    }
}

/// Renew `leases` every third of `lease_secs` on a thread of its own until the [`Held`] is
/// dropped; then give up each one no other run of this process still holds.
fn heartbeat(cfg: &Config, mut hb: Store, mut leases: Vec<Lease>) -> Result<Held, StoreError> {
    let ttl = ttl_ms(cfg);
    let (stop, stopped) = mpsc::channel::<()>();
    let every = cfg.daemon.lease / 3;
    let heartbeat = std::thread::Builder::new()
        .name("auditwarden-lease".into())
        .spawn(move || {
            // A timer, not a synchronization: the run ends by dropping `stop`.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(every.max(Duration::from_millis(100)))
            {
                for l in &mut leases {
                    match hb.renew_lease(l, crate::clock::now_ms(), ttl) {
                        Ok(Some(renewed)) => *l = renewed,
                        Ok(None) => {
                            tracing::warn!(event = "lease_lost", lease = %l.key, node = %l.owner, "another daemon took this lease over; this run's writes for it will not commit")
                        }
                        Err(e) => tracing::warn!(event = "lease_renew_failed", node = %l.owner, error = %e),
                    }
                }
            }
            let mut counts = in_use();
            for l in &leases {
                if unhold(&mut counts, &l.key) {
                    let _ = hb.release_lease(l);
                }
            }
        })
        .map_err(|e| StoreError::Io {
            location: "lease heartbeat".into(),
            what: "cannot start the heartbeat thread".into(),
            source: e,
        })?;
    Ok(Held {
        stop: Some(stop),
        heartbeat: Some(heartbeat),
        collecting: Vec::new(),
    })
}
