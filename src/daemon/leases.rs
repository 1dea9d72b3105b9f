//! Several daemons on one PostgreSQL database: before a collection (or poll) run, the daemon
//! takes the lease of each API key its accounts use (accounts sharing a key share one lease, as
//! they share DigiCert's limits), works only the accounts whose lease it holds, fences the run's
//! store with them (a write after a takeover commits nothing, see `store::LeaseStore`), renews
//! them from a heartbeat thread of its own every third of `[daemon] lease_secs`, and gives them
//! up when the run ends (unless another run of this node still works them).
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
}

impl Held {
    /// No leases (a job that takes none).
    pub(super) fn none() -> Held {
        Held {
            stop: None,
            heartbeat: None,
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

/// This run's share of `keys` lease keys: all of them over the live nodes (unexpired `node:`
/// rows), rounded up.
fn fair_share(rows: &[Lease], keys: usize, now_ms: i64) -> usize {
    let live = rows
        .iter()
        .filter(|l| l.key.starts_with(NODE_PREFIX) && l.expires_ms >= now_ms)
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
    let orphaned = |k: &str| {
        rows.iter()
            .any(|l| l.key == k && l.owner != node && l.expires_ms > 0 && l.expires_ms < now_ms)
    };
    let mut order: Vec<(bool, usize, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (!orphaned(k), (i + n - start) % n, k.clone()))
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
    }
}

/// Take the leases of `accounts`' keys, at most this node's fair share of them (see the module
/// docs); the accounts this node may work now, fenced on `store`.
pub(super) fn take<'a>(
    cfg: &Config,
    store: &mut Store,
    accounts: &[&'a Account],
) -> Result<(Vec<&'a Account>, Held), StoreError> {
    let idle = Held::none();
    if !matches!(cfg.store.target, StoreTarget::Postgres(_)) {
        return Ok((accounts.to_vec(), idle));
    }
    let node = node_name(cfg);
    let ttl = ttl_ms(cfg);
    let mut keys: Vec<String> = Vec::new();
    for a in accounts {
        let k = lease_key(a);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let now_ms = crate::clock::now_ms();
    let rows = store.leases()?;
    let share = fair_share(&rows, keys.len(), now_ms);
    let order = try_order(&keys, &rows, &node, now_ms, share);
    let rank = |a: &Account| {
        let k = lease_key(a);
        order.iter().position(|o| *o == k).unwrap_or(usize::MAX)
    };
    let mut accounts: Vec<&'a Account> = accounts.to_vec();
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
                tracing::info!(event = "lease_share_taken", account = %a.name, node = %node, share, "this node works its share of the keys; this account waits for a later run");
                continue;
            }
            None => {
                // Counted before the acquisition: a run of this node ending meanwhile then
                // keeps the lease instead of giving it up under this one.
                *in_use().entry(key.clone()).or_default() += 1;
                let l = match store.acquire_lease(&key, &node, crate::clock::now_ms(), ttl) {
                    Ok(l) => l,
                    Err(e) => {
                        let mut counts = in_use();
                        unhold(&mut counts, &key);
                        for l in &leases {
                            unhold(&mut counts, &l.key);
                        }
                        return Err(e);
                    }
                };
                match &l {
                    Some(l) => leases.push(l.clone()),
                    None => {
                        unhold(&mut in_use(), &key);
                        refused.push(key);
                    }
                }
                l
            }
        };
        match lease {
            Some(l) => {
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
    let hb = match Store::open_target(&cfg.store.target) {
        Ok(hb) => hb,
        Err(e) => {
            let mut counts = in_use();
            for l in &leases {
                unhold(&mut counts, &l.key);
            }
            return Err(e);
        }
    };
    Ok((held, heartbeat(cfg, hb, leases)?))
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
    })
}
