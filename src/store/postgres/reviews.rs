//! Access-review campaigns on PostgreSQL, with the semantics of SQLite's `reviews.rs`: a frozen
//! population of items, decisions appended (never updated), a closure; every row a link of the
//! campaign's own chain (`ChainKind::Reviews`, account `review-<id>`), written in the transaction
//! that inserts it. The canonical bytes come from the `review_links` view (schema migration 4),
//! the same text SQLite's view gives, so the writer and `verify` hash the same bytes on either
//! backend and a campaign copied between them verifies. Writes to one campaign take turns on its
//! `review_campaigns` row (`FOR UPDATE`), so its links follow commit order.

use sha2::{Digest, Sha256};
use tokio_postgres::Transaction;

use super::chain::{load_head, save_head};
use super::{pg_err, Postgres, Wait};
use crate::store::chain::{ChainHead, ChainKind};
use crate::store::types::{join_list as join, split_list as split};
use crate::store::{
    review_chain_account, Campaign, Decision, NewCampaign, Result, ReviewItem, ReviewRefusal,
    ReviewStore, StoreError,
};

/// The canonical bytes of the row `(tbl, seq)` of `review_links`.
fn canonical(tx: &mut Transaction<'_>, location: &str, tbl: &str, seq: i64) -> Result<String> {
    tx.query_one(
        "SELECT canonical FROM review_links WHERE tbl = $1 AND seq = $2",
        &[&tbl, &seq],
    )
    .wait()
    .map(|r| r.get(0))
    .map_err(|e| pg_err(location, "review link bytes", e))
}

/// Give the row `(tbl, seq)` of `review_links` the next link of `head`.
fn link_row(
    tx: &mut Transaction<'_>,
    location: &str,
    head: &mut ChainHead,
    tbl: &str,
    seq: i64,
) -> Result<()> {
    let text = canonical(tx, location, tbl, seq)?;
    *head = head.next(text.as_bytes());
    let update = match tbl {
        "campaign" => "UPDATE review_campaigns SET chain_n = $1, chain_hash = $2 WHERE id = $3",
        "item" => "UPDATE review_items SET chain_n = $1, chain_hash = $2 WHERE seq = $3",
        "decision" => "UPDATE review_decisions SET chain_n = $1, chain_hash = $2 WHERE seq = $3",
        _ => "UPDATE review_closures SET chain_n = $1, chain_hash = $2 WHERE campaign_id = $3",
    };
    tx.execute(update, &[&head.n, &&head.hash[..], &seq])
        .wait()
        .map_err(|e| pg_err(location, "chain review row", e))?;
    Ok(())
}

/// Lock an open campaign's row for this transaction, or say why it cannot be written.
fn lock_open(
    tx: &mut Transaction<'_>,
    location: &str,
    id: i64,
) -> Result<std::result::Result<(), ReviewRefusal>> {
    let found = tx
        .query_opt(
            "SELECT id FROM review_campaigns WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .wait()
        .map_err(|e| pg_err(location, "review campaign", e))?;
    if found.is_none() {
        return Ok(Err(ReviewRefusal::NoSuchCampaign));
    }
    let closed = tx
        .query_opt(
            "SELECT closed_ms FROM review_closures WHERE campaign_id = $1",
            &[&id],
        )
        .wait()
        .map_err(|e| pg_err(location, "review closure", e))?;
    Ok(match closed {
        Some(r) => Err(ReviewRefusal::Closed(r.get(0))),
        None => Ok(()),
    })
}

fn commit(tx: Transaction<'_>, location: &str, what: &str) -> Result<()> {
    tx.commit().wait().map_err(|e| pg_err(location, what, e))
}

impl ReviewStore for Postgres {
    fn location(&self) -> String {
        self.location.clone()
    }

    /// Start a campaign: the campaign row and its items in one transaction, each a link of the
    /// campaign's new chain. Returns the id and the population's SHA-256 (over each item's
    /// canonical bytes followed by a newline, in item order).
    fn create_review(&mut self, c: &NewCampaign, items: &[ReviewItem]) -> Result<(i64, String)> {
        let (mut tx, location) = self.tx("start review")?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO review_campaigns (name, scope, accounts, reviewers, due_day,
                    started_ms, items, population_sha256, chain_heads)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8) RETURNING id",
                &[
                    &c.name,
                    &c.scope,
                    &join(&c.accounts),
                    &join(&c.reviewers),
                    &c.due_day,
                    &c.started_ms,
                    &(items.len() as i64),
                    &c.chain_heads,
                ],
            )
            .wait()
            .map_err(|e| pg_err(location, "insert review campaign", e))?
            .get(0);
        let ins = tx
            .prepare(
                "INSERT INTO review_items (campaign_id, item_no, account, user_id, user_name,
                    email, user_type, status, role, privileged, last_activity_ms,
                    activity_source, dormant, granted, granted_ms, granted_by_id,
                    granted_by_name, granted_by_email, grant_event_id, grant_ip)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                    $16, $17, $18, $19, $20) RETURNING seq",
            )
            .wait()
            .map_err(|e| pg_err(location, "insert review items", e))?;
        let mut seqs = Vec::with_capacity(items.len());
        let mut population = Sha256::new();
        for it in items {
            let seq: i64 = tx
                .query_one(
                    &ins,
                    &[
                        &id,
                        &it.item_no,
                        &it.account,
                        &it.user_id,
                        &it.user_name,
                        &it.email,
                        &it.user_type,
                        &it.status,
                        &it.role,
                        &it.privileged,
                        &it.last_activity_ms,
                        &it.activity_source,
                        &it.dormant,
                        &it.granted,
                        &it.granted_ms,
                        &it.granted_by_id,
                        &it.granted_by_name,
                        &it.granted_by_email,
                        &it.grant_event_id,
                        &it.grant_ip,
                    ],
                )
                .wait()
                .map_err(|e| pg_err(location, "insert review item", e))?
                .get(0);
            let text = canonical(&mut tx, location, "item", seq)?;
            population.update(text.as_bytes());
            population.update(b"\n");
            seqs.push(seq);
        }
        let sha = hex::encode(population.finalize());
        tx.execute(
            "UPDATE review_campaigns SET population_sha256 = $1 WHERE id = $2",
            &[&sha, &id],
        )
        .wait()
        .map_err(|e| pg_err(location, "review population hash", e))?;
        let account = review_chain_account(id);
        let mut head = ChainHead::genesis(ChainKind::Reviews, &account);
        link_row(&mut tx, location, &mut head, "campaign", id)?;
        for seq in seqs {
            link_row(&mut tx, location, &mut head, "item", seq)?;
        }
        save_head(&mut tx, location, ChainKind::Reviews, &account, &head)?;
        commit(tx, location, "commit review")?;
        Ok((id, sha))
    }

    fn review_campaign(&self, id: i64) -> Result<Option<Campaign>> {
        let Some(r) = self.opt(
            "SELECT c.id, c.name, c.scope, c.accounts, c.reviewers, c.due_day, c.started_ms,
                c.items, c.population_sha256, c.chain_heads, cl.closed_ms
             FROM review_campaigns c
             LEFT JOIN review_closures cl ON cl.campaign_id = c.id WHERE c.id = $1",
            &[&id],
            "review campaign",
        )?
        else {
            return Ok(None);
        };
        Ok(Some(Campaign {
            id: r.get(0),
            name: r.get(1),
            scope: r.get(2),
            accounts: split(r.get(3)),
            reviewers: split(r.get(4)),
            due_day: r.get(5),
            started_ms: r.get(6),
            items: r.get(7),
            population_sha256: r.get(8),
            chain_heads: r.get(9),
            closed_ms: r.get(10),
        }))
    }

    /// The frozen items of a campaign, in item order.
    fn review_items(&self, id: i64) -> Result<Vec<ReviewItem>> {
        let rows = self.rows(
            "SELECT item_no, account, user_id, user_name, email, user_type, status, role,
                privileged, last_activity_ms, activity_source, dormant, granted, granted_ms,
                granted_by_id, granted_by_name, granted_by_email, grant_event_id, grant_ip
             FROM review_items WHERE campaign_id = $1 ORDER BY item_no",
            &[&id],
            "review items",
        )?;
        Ok(rows
            .iter()
            .map(|r| ReviewItem {
                item_no: r.get(0),
                account: r.get(1),
                user_id: r.get(2),
                user_name: r.get(3),
                email: r.get(4),
                user_type: r.get(5),
                status: r.get(6),
                role: r.get(7),
                privileged: r.get(8),
                last_activity_ms: r.get(9),
                activity_source: r.get(10),
                dormant: r.get(11),
                granted: r.get(12),
                granted_ms: r.get(13),
                granted_by_id: r.get(14),
                granted_by_name: r.get(15),
                granted_by_email: r.get(16),
                grant_event_id: r.get(17),
                grant_ip: r.get(18),
            })
            .collect())
    }

    /// Every decision of a campaign in the order it was recorded (the latest of an item is its
    /// decision; the earlier ones are its history).
    fn review_decisions(&self, id: i64) -> Result<Vec<Decision>> {
        let rows = self.rows(
            "SELECT item_no, decision, justification, reviewer, decided_ms, source_file,
                source_sha256
             FROM review_decisions WHERE campaign_id = $1 ORDER BY seq",
            &[&id],
            "review decisions",
        )?;
        Ok(rows
            .iter()
            .map(|r| Decision {
                item_no: r.get(0),
                decision: r.get(1),
                justification: r.get(2),
                reviewer: r.get(3),
                decided_ms: r.get(4),
                source_file: r.get(5),
                source_sha256: r.get(6),
            })
            .collect())
    }

    /// Append decisions to an open campaign, all or none, each a link of its chain.
    fn record_review_decisions(
        &mut self,
        id: i64,
        decisions: &[Decision],
    ) -> Result<std::result::Result<u64, ReviewRefusal>> {
        let (mut tx, location) = self.tx("record review decisions")?;
        if let Err(refused) = lock_open(&mut tx, location, id)? {
            return Ok(Err(refused));
        }
        let account = review_chain_account(id);
        let mut head = load_head(&mut tx, location, ChainKind::Reviews, &account)?;
        let ins = tx
            .prepare(
                "INSERT INTO review_decisions (campaign_id, item_no, decision, justification,
                    reviewer, decided_ms, source_file, source_sha256)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
            )
            .wait()
            .map_err(|e| pg_err(location, "insert review decision", e))?;
        for d in decisions {
            let seq: i64 = tx
                .query_one(
                    &ins,
                    &[
                        &id,
                        &d.item_no,
                        &d.decision,
                        &d.justification,
                        &d.reviewer,
                        &d.decided_ms,
                        &d.source_file,
                        &d.source_sha256,
                    ],
                )
                .wait()
                .map_err(|e| pg_err(location, "insert review decision", e))?
                .get(0);
            link_row(&mut tx, location, &mut head, "decision", seq)?;
        }
        save_head(&mut tx, location, ChainKind::Reviews, &account, &head)?;
        commit(tx, location, "commit review decisions")?;
        Ok(Ok(decisions.len() as u64))
    }

    /// Close a campaign (its closure row is the last link of its chain). Returns the head after it.
    fn close_review(
        &mut self,
        id: i64,
        closed_ms: i64,
        decided: i64,
        total: i64,
    ) -> Result<std::result::Result<ChainHead, ReviewRefusal>> {
        let (mut tx, location) = self.tx("close review")?;
        if let Err(refused) = lock_open(&mut tx, location, id)? {
            return Ok(Err(refused));
        }
        tx.execute(
            "INSERT INTO review_closures (campaign_id, closed_ms, decided, total)
             VALUES ($1, $2, $3, $4)",
            &[&id, &closed_ms, &decided, &total],
        )
        .wait()
        .map_err(|e| pg_err(location, "insert review closure", e))?;
        let account = review_chain_account(id);
        let mut head = load_head(&mut tx, location, ChainKind::Reviews, &account)?;
        link_row(&mut tx, location, &mut head, "closure", id)?;
        save_head(&mut tx, location, ChainKind::Reviews, &account, &head)?;
        commit(tx, location, "commit review closure")?;
        Ok(Ok(head))
    }

    /// The recorded head of a campaign's chain.
    fn review_head(&self, id: i64) -> Result<ChainHead> {
        let account = review_chain_account(id);
        let row = self.opt(
            "SELECT n, head FROM chain_heads WHERE chain = $1 AND account = $2",
            &[&ChainKind::Reviews.as_str(), &account],
            "review chain head",
        )?;
        let Some(r) = row else {
            return Ok(ChainHead::genesis(ChainKind::Reviews, &account));
        };
        let hash: Vec<u8> = r.get(1);
        let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| StoreError::Corrupt {
            location: self.location.clone(),
            table: "chain_heads".into(),
            row: format!("(reviews, {account})"),
            what: "the head is not 32 bytes".into(),
        })?;
        Ok(ChainHead { n: r.get(0), hash })
    }
}
