//! The PostgreSQL side of the hash chains: heads read and written inside a write transaction
//! (under the account's write lock), and the verifier's streaming walk through
//! [`crate::store::chain::Walker`].

use std::collections::HashMap;

use tokio_postgres::Transaction;

use super::{pg_err, Postgres, Wait};
use crate::store::chain::{
    check_event_columns, history_bytes, ChainHead, ChainKind, ChainRow, ChainSummary, Finding,
    Hash, Walker,
};
use crate::store::{ChainStore, Result};

fn hash_of(bytes: Option<Vec<u8>>) -> Option<Hash> {
    bytes.and_then(|b| <Hash>::try_from(b.as_slice()).ok())
}

/// The recorded head of one chain, or the genesis head when the account has none yet.
pub(super) fn load_head(
    tx: &mut Transaction<'_>,
    location: &str,
    kind: ChainKind,
    account: &str,
) -> Result<ChainHead> {
    let row = tx
        .query_opt(
            "SELECT n, head FROM chain_heads WHERE chain = $1 AND account = $2",
            &[&kind.as_str(), &account],
        )
        .wait()
        .map_err(|e| pg_err(location, "read chain head", e))?;
    Ok(match row {
        Some(r) => ChainHead {
            n: r.get(0),
            hash: hash_of(r.get(1)).unwrap_or([0; 32]),
        },
        None => ChainHead::genesis(kind, account),
    })
}

pub(super) fn save_head(
    tx: &mut Transaction<'_>,
    location: &str,
    kind: ChainKind,
    account: &str,
    head: &ChainHead,
) -> Result<()> {
    tx.execute(
        "INSERT INTO chain_heads (chain, account, n, head) VALUES ($1, $2, $3, $4)
         ON CONFLICT (chain, account) DO UPDATE SET n = excluded.n, head = excluded.head",
        &[&kind.as_str(), &account, &head.n, &&head.hash[..]],
    )
    .wait()
    .map_err(|e| pg_err(location, "write chain head", e))?;
    Ok(())
}

impl ChainStore for Postgres {
    /// One `REPEATABLE READ READ ONLY` transaction: every statement sees the snapshot of its
    /// first.
    fn read_snapshot(&self, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.session("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        let done = f();
        let ended = self.session(if done.is_ok() { "COMMIT" } else { "ROLLBACK" });
        done.and(ended)
    }

    fn has_chains(&self) -> Result<bool> {
        Ok(true)
    }

    /// Whether the schema has access-review campaigns (migration 4; a read-only handle on an
    /// older database does not).
    fn has_reviews(&self) -> Result<bool> {
        Ok(self
            .one(
                "SELECT to_regclass('review_links') IS NOT NULL",
                &[],
                "schema",
            )?
            .get(0))
    }

    fn chain_heads(&self, account: Option<&str>) -> Result<Vec<(ChainKind, String, ChainHead)>> {
        let rows = self.rows(
            "SELECT chain, account, n, head FROM chain_heads
             WHERE ($1::text IS NULL OR account = $1) ORDER BY account, chain",
            &[&account],
            "chain heads",
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let kind = ChainKind::parse(r.get(0))?;
                Some((
                    kind,
                    r.get::<_, String>(1),
                    ChainHead {
                        n: r.get(2),
                        hash: hash_of(r.get(3)).unwrap_or([0; 32]),
                    },
                ))
            })
            .collect())
    }

    fn chain_hashes_at(&self, kind: ChainKind, account: &str, n: i64) -> Result<Vec<Hash>> {
        if n == 0 {
            return Ok(vec![ChainHead::genesis(kind, account).hash]);
        }
        let sql = match kind {
            ChainKind::Events => {
                "SELECT chain_hash FROM events WHERE account = $1 AND chain_n = $2 ORDER BY seq"
            }
            ChainKind::UserHistory => {
                "SELECT chain_hash FROM user_history WHERE account = $1 AND chain_n = $2
                 ORDER BY seq"
            }
            ChainKind::Reviews => {
                if !self.has_reviews()? {
                    return Ok(Vec::new());
                }
                "SELECT chain_hash FROM review_links WHERE account = $1 AND chain_n = $2
                 ORDER BY tbl, seq"
            }
        };
        Ok(self
            .rows(sql, &[&account, &n], &format!("{} link", kind.as_str()))?
            .iter()
            .map(|r| hash_of(r.get(0)).unwrap_or([0; 32]))
            .collect())
    }

    fn walk_chains(
        &self,
        account: Option<&str>,
        found: &mut dyn FnMut(Finding),
    ) -> Result<Vec<ChainSummary>> {
        let mut summaries = Vec::new();
        for kind in ChainKind::EVERY {
            if kind == ChainKind::Reviews && !self.has_reviews()? {
                continue;
            }
            let mut walker = Walker::new(kind);
            let what = format!("verify {}", kind.as_str());
            match kind {
                ChainKind::Events => self.stream(
                    "SELECT seq, account, chain_n, chain_hash, raw, event_id, ts_ms, day, action,
                        resource_type, resource_id, resource_name, actor_id, actor_name, status,
                        ip_address, description, data
                     FROM events WHERE ($1::text IS NULL OR account = $1) ORDER BY seq",
                    &[&account],
                    &what,
                    &mut |r| {
                        let seq: i64 = r.get(0);
                        let acc: &str = r.get(1);
                        let raw: &str = r.get(4);
                        let key: &str = r.get(5);
                        let linked = walker.step(
                            &ChainRow {
                                seq,
                                account: acc,
                                n: r.get(2),
                                stored: hash_of(r.get(3)),
                                key,
                                canonical: raw.as_bytes(),
                            },
                            found,
                        );
                        if linked {
                            let cols: [Option<&str>; 12] = [
                                Some(key),
                                Some(r.get(7)),
                                Some(r.get(8)),
                                r.get(9),
                                r.get(10),
                                r.get(11),
                                r.get(12),
                                r.get(13),
                                r.get(14),
                                r.get(15),
                                r.get(16),
                                r.get(17),
                            ];
                            check_event_columns(raw, acc, seq, Some(r.get(6)), &cols, found);
                        }
                        Ok(true)
                    },
                )?,
                ChainKind::UserHistory => self.stream(
                    "SELECT seq, account, chain_n, chain_hash, user_id, observed_ms, after_ms,
                        field, before, after, detail, source
                     FROM user_history WHERE ($1::text IS NULL OR account = $1) ORDER BY seq",
                    &[&account],
                    &what,
                    &mut |r| {
                        let user: &str = r.get(4);
                        let bytes = history_bytes(
                            user,
                            r.get(5),
                            r.get(6),
                            r.get(7),
                            r.get(8),
                            r.get(9),
                            r.get(10),
                            r.get(11),
                        );
                        walker.step(
                            &ChainRow {
                                seq: r.get(0),
                                account: r.get(1),
                                n: r.get(2),
                                stored: hash_of(r.get(3)),
                                key: user,
                                canonical: &bytes,
                            },
                            found,
                        );
                        Ok(true)
                    },
                )?,
                // Link order: a campaign's rows live in four tables, their positions are one
                // sequence (`review_links`, as on SQLite).
                ChainKind::Reviews => self.stream(
                    "SELECT seq, account, chain_n, chain_hash, canonical, key
                     FROM review_links WHERE ($1::text IS NULL OR account = $1)
                     ORDER BY account, chain_n, tbl, seq",
                    &[&account],
                    &what,
                    &mut |r| {
                        let canonical: &str = r.get(4);
                        walker.step(
                            &ChainRow {
                                seq: r.get(0),
                                account: r.get(1),
                                n: r.get(2),
                                stored: hash_of(r.get(3)),
                                key: r.get(5),
                                canonical: canonical.as_bytes(),
                            },
                            found,
                        );
                        Ok(true)
                    },
                )?,
            };
            let recorded: HashMap<String, ChainHead> = self
                .chain_heads(account)?
                .into_iter()
                .filter(|(k, _, _)| *k == kind)
                .map(|(_, a, h)| (a, h))
                .collect();
            summaries.extend(walker.finish(recorded, found));
        }
        Ok(summaries)
    }
}
