//! Leases and fencing on PostgreSQL (see [`LeaseStore`]): lease rows, not session advisory
//! locks (those break behind PgBouncer's transaction pooling). A takeover is an UPDATE of the
//! lease row; a fenced write transaction reads that row `FOR KEY SHARE` first, so a takeover
//! (which locks the row `FOR UPDATE` before it raises the epoch) waits for a transaction already
//! past its check, and a transaction that starts after the takeover fails its check: the old
//! owner commits nothing after it.
//!
//! `KEY SHARE`, not `SHARE`: the owner's own renewals (a plain UPDATE of the expiry) must never
//! wait for its writers. Under `FOR SHARE` they did, and a node writing back to back (each batch
//! share-locks the row again as the last one commits) starved its heartbeat's UPDATE past the
//! lease: the lease lapsed under a live node, another took it over, and both sent requests with
//! the key at once.

use tokio_postgres::Transaction;

use super::{pg_err, Postgres, Wait};
use crate::store::{Lease, LeaseStore, Result, StoreError};

fn lease_of(key: &str, r: &tokio_postgres::Row) -> Lease {
    Lease {
        key: key.to_string(),
        owner: r.get(0),
        epoch: r.get(1),
        expires_ms: r.get(2),
        acquired_ms: r.get(3),
    }
}

impl LeaseStore for Postgres {
    fn acquire_lease(
        &mut self,
        key: &str,
        owner: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let location = self.location.clone();
        let (tx, _) = self.tx("acquire lease")?;
        // A lease another node held and let lapse (or gave up): lock it first, which waits for
        // that node's write transactions already past their fence check (they hold the row
        // `FOR KEY SHARE`). A row held by a live node is not locked (no wait behind its
        // writers), nor is the owner's own (its epoch does not change).
        tx.query(
            "SELECT 1 FROM leases WHERE lease_key = $1 AND owner <> $2 AND expires_ms < $3::bigint
             FOR UPDATE",
            &[&key, &owner, &now_ms],
        )
        .wait()
        .map_err(|e| pg_err(&location, "lock the lease", e))?;
        let row = tx
            .query_opt(
                "INSERT INTO leases (lease_key, owner, epoch, acquired_ms, expires_ms)
                 VALUES ($1, $2, 1, $3::bigint, $3::bigint + $4::bigint)
                 ON CONFLICT (lease_key) DO UPDATE SET
                    epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch
                        ELSE leases.epoch + 1 END,
                    acquired_ms = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_ms
                        ELSE excluded.acquired_ms END,
                    owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE leases.owner = excluded.owner OR leases.expires_ms < excluded.acquired_ms
                 RETURNING owner, epoch, expires_ms, acquired_ms",
                &[&key, &owner, &now_ms, &ttl_ms],
            )
            .wait()
            .map_err(|e| pg_err(&location, "acquire lease", e))?
            .map(|r| lease_of(key, &r));
        tx.commit()
            .wait()
            .map_err(|e| pg_err(&location, "acquire lease", e))?;
        Ok(row)
    }

    fn renew_lease(&mut self, lease: &Lease, now_ms: i64, ttl_ms: i64) -> Result<Option<Lease>> {
        Ok(self
            .opt(
                "UPDATE leases SET expires_ms = $4::bigint + $5::bigint
                 WHERE lease_key = $1 AND owner = $2 AND epoch = $3
                 RETURNING owner, epoch, expires_ms, acquired_ms",
                &[&lease.key, &lease.owner, &lease.epoch, &now_ms, &ttl_ms],
                "renew lease",
            )?
            .map(|r| lease_of(&lease.key, &r)))
    }

    fn release_lease(&mut self, lease: &Lease) -> Result<()> {
        self.exec(
            "UPDATE leases SET expires_ms = 0 WHERE lease_key = $1 AND owner = $2 AND epoch = $3",
            &[&lease.key, &lease.owner, &lease.epoch],
            "release lease",
        )?;
        Ok(())
    }

    fn claim_tick(&mut self, job: &str, tick_ms: i64, node: &str, now_ms: i64) -> Result<bool> {
        let n = self.exec(
            "INSERT INTO job_ticks (job, tick_ms, node, claimed_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job, tick_ms) DO NOTHING",
            &[&job, &tick_ms, &node, &now_ms],
            "claim tick",
        )?;
        Ok(n == 1)
    }

    fn fence(&mut self, account: &str, lease: Option<Lease>) {
        match lease {
            Some(l) => {
                self.fences.insert(account.to_string(), l);
            }
            None => {
                self.fences.remove(account);
            }
        }
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        Ok(self
            .rows(
                "SELECT lease_key, owner, epoch, expires_ms, acquired_ms FROM leases ORDER BY lease_key",
                &[],
                "leases",
            )?
            .iter()
            .map(|r| Lease {
                key: r.get(0),
                owner: r.get(1),
                epoch: r.get(2),
                expires_ms: r.get(3),
                acquired_ms: r.get(4),
            })
            .collect())
    }
}

/// In a write transaction of `account`: the fence, if any, must still be its owner's lease at
/// its epoch. The key-share lock holds a takeover off until this transaction ends (and lets
/// the owner's renewals through).
pub(super) fn check_fence(
    tx: &Transaction<'_>,
    location: &str,
    account: &str,
    fence: Option<&Lease>,
) -> Result<()> {
    let Some(l) = fence else {
        return Ok(());
    };
    let held = tx
        .query_opt(
            "SELECT 1 FROM leases WHERE lease_key = $1 AND owner = $2 AND epoch = $3 FOR KEY SHARE",
            &[&l.key, &l.owner, &l.epoch],
        )
        .wait()
        .map_err(|e| pg_err(location, "check the lease", e))?;
    if held.is_none() {
        return Err(StoreError::LeaseLost {
            location: location.to_string(),
            what: format!(
                "account {account}: this node ({}) no longer holds lease {} at epoch {}: another node took it over; nothing was committed",
                l.owner, l.key, l.epoch
            ),
        });
    }
    Ok(())
}
