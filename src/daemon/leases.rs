//! Several daemons on one PostgreSQL database: before a collection (or poll) run, the daemon
//! takes the lease of each API key its accounts use (accounts sharing a key share one lease, as
//! they share DigiCert's limits), works only the accounts whose lease it holds, fences the run's
//! store with them (a write after a takeover commits nothing, see `store::LeaseStore`), renews
//! them from a heartbeat thread of its own every third of `[daemon] lease_secs`, and gives them
//! up when the run ends. On SQLite every lease is granted and nothing changes.

use std::sync::mpsc;
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

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

/// Take the leases of `accounts`' keys; the accounts this node may work now, fenced on `store`.
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
    let ttl = i64::try_from(cfg.daemon.lease.as_millis()).unwrap_or(30_000);
    let mut leases: Vec<Lease> = Vec::new();
    let mut held = Vec::new();
    for a in accounts {
        let key = lease_key(a);
        let lease = match leases.iter().find(|l| l.key == key) {
            Some(l) => Some(l.clone()),
            None => {
                let l = store.acquire_lease(&key, &node, crate::clock::now_ms(), ttl)?;
                if let Some(l) = &l {
                    leases.push(l.clone());
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
    let mut hb = Store::open_target(&cfg.store.target)?;
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
                        Err(e) => tracing::warn!(event = "lease_renew_failed", error = %e),
                    }
                }
            }
            for l in &leases {
                let _ = hb.release_lease(l);
            }
        })
        .map_err(|e| StoreError::Io {
            location: "lease heartbeat".into(),
            what: "cannot start the heartbeat thread".into(),
            source: e,
        })?;
    Ok((
        held,
        Held {
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        },
    ))
}
