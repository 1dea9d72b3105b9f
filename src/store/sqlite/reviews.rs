//! The SQL of access-review campaigns (`crate::review`): a frozen population of items, decisions
//! appended as they are imported (never updated: the latest row of an item is its decision, the
//! earlier ones its history), and a closure. Every row is a link of the campaign's own hash chain
//! (`ChainKind::Reviews`, account `review-<id>`), written in the transaction that inserts it; its
//! canonical bytes are the `review_links` view's `json_array` of its columns, so the writer and
//! `verify` hash exactly the same text.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::chain::{load_head, save_head};
use super::{err, Sqlite};
use crate::store::chain::{ChainHead, ChainKind};
use crate::store::types::{join_list as join, split_list as split};
use crate::store::{
    review_chain_account, Campaign, Decision, NewCampaign, Result, ReviewItem, ReviewRefusal,
    ReviewStore,
};

const CAMPAIGN_COLUMNS: &str = "c.id, c.name, c.scope, c.accounts, c.reviewers, c.due_day,
    c.started_ms, c.items, c.population_sha256, c.chain_heads, cl.closed_ms";

fn campaign_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Campaign> {
    Ok(Campaign {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        accounts: split(&r.get::<_, String>(3)?),
        reviewers: split(&r.get::<_, String>(4)?),
        due_day: r.get(5)?,
        started_ms: r.get(6)?,
        items: r.get(7)?,
        population_sha256: r.get(8)?,
        chain_heads: r.get(9)?,
        closed_ms: r.get(10)?,
    })
}

/// Give the row `(tbl, seq)` of `review_links` the next link of `head`.
fn link_row(conn: &Connection, head: &mut ChainHead, tbl: &str, seq: i64) -> rusqlite::Result<()> {
    let canonical: String = conn
        .prepare_cached("SELECT canonical FROM review_links WHERE tbl = ?1 AND seq = ?2")?
        .query_row(params![tbl, seq], |r| r.get(0))?;
    *head = head.next(canonical.as_bytes());
    let update = match tbl {
        "campaign" => "UPDATE review_campaigns SET chain_n = ?1, chain_hash = ?2 WHERE id = ?3",
        "item" => "UPDATE review_items SET chain_n = ?1, chain_hash = ?2 WHERE seq = ?3",
        "decision" => "UPDATE review_decisions SET chain_n = ?1, chain_hash = ?2 WHERE seq = ?3",
        _ => "UPDATE review_closures SET chain_n = ?1, chain_hash = ?2 WHERE campaign_id = ?3",
    };
    conn.prepare_cached(update)?
        .execute(params![head.n, &head.hash[..], seq])?;
    Ok(())
}

/// Why campaign `id` takes no more writes (it does not exist, or it is closed), if it does not.
fn refusal_of(conn: &Connection, id: i64) -> rusqlite::Result<Option<ReviewRefusal>> {
    let state: Option<Option<i64>> = conn
        .query_row(
            "SELECT cl.closed_ms FROM review_campaigns c
             LEFT JOIN review_closures cl ON cl.campaign_id = c.id WHERE c.id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match state {
        None => Some(ReviewRefusal::NoSuchCampaign),
        Some(Some(t)) => Some(ReviewRefusal::Closed(t)),
        Some(None) => None,
    })
}

impl ReviewStore for Sqlite {
    fn location(&self) -> String {
        super::location(&self.path)
    }

    /// Start a campaign: the campaign row and its items in one transaction, each a link of the
    /// campaign's new chain. Returns the id and the population's SHA-256 (over each item's
    /// canonical bytes followed by a newline, in item order).
    fn create_review(&mut self, c: &NewCampaign, items: &[ReviewItem]) -> Result<(i64, String)> {
        let path = self.path.clone();
        let e = |what: &str| {
            let what = what.to_string();
            let path = path.clone();
            move |x: rusqlite::Error| err(&path, &what, x)
        };
        let tx = self.write_tx().map_err(|x| err(&path, "start review", x))?;
        tx.execute(
            "INSERT INTO review_campaigns (name, scope, accounts, reviewers, due_day, started_ms,
                items, population_sha256, chain_heads) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8)",
            params![
                c.name,
                c.scope,
                join(&c.accounts),
                join(&c.reviewers),
                c.due_day,
                c.started_ms,
                items.len() as i64,
                c.chain_heads
            ],
        )
        .map_err(e("insert review campaign"))?;
        let id = tx.last_insert_rowid();
        let mut seqs = Vec::with_capacity(items.len());
        let mut population = Sha256::new();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO review_items (campaign_id, item_no, account, user_id, user_name,
                        email, user_type, status, role, privileged, last_activity_ms,
                        activity_source, dormant, granted, granted_ms, granted_by_id,
                        granted_by_name, granted_by_email, grant_event_id, grant_ip)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                        ?16, ?17, ?18, ?19, ?20)",
                )
                .map_err(e("insert review items"))?;
            let mut canon = tx
                .prepare_cached(
                    "SELECT canonical FROM review_links WHERE tbl = 'item' AND seq = ?1",
                )
                .map_err(e("insert review items"))?;
            for it in items {
                ins.execute(params![
                    id,
                    it.item_no,
                    it.account,
                    it.user_id,
                    it.user_name,
                    it.email,
                    it.user_type,
                    it.status,
                    it.role,
                    it.privileged,
                    it.last_activity_ms,
                    it.activity_source,
                    it.dormant,
                    it.granted,
                    it.granted_ms,
                    it.granted_by_id,
                    it.granted_by_name,
                    it.granted_by_email,
                    it.grant_event_id,
                    it.grant_ip
                ])
                .map_err(e("insert review item"))?;
                let seq = tx.last_insert_rowid();
                let text: String = canon
                    .query_row(params![seq], |r| r.get(0))
                    .map_err(e("review item bytes"))?;
                population.update(text.as_bytes());
                population.update(b"\n");
                seqs.push(seq);
            }
        }
        let sha = hex::encode(population.finalize());
        tx.execute(
            "UPDATE review_campaigns SET population_sha256 = ?1 WHERE id = ?2",
            params![sha, id],
        )
        .map_err(e("review population hash"))?;
        let account = review_chain_account(id);
        let mut head = ChainHead::genesis(ChainKind::Reviews, &account);
        link_row(&tx, &mut head, "campaign", id).map_err(e("chain review campaign"))?;
        for seq in seqs {
            link_row(&tx, &mut head, "item", seq).map_err(e("chain review item"))?;
        }
        save_head(&tx, ChainKind::Reviews, &account, &head).map_err(e("chain head"))?;
        tx.commit().map_err(e("commit review"))?;
        Ok((id, sha))
    }

    fn review_campaign(&self, id: i64) -> Result<Option<Campaign>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {CAMPAIGN_COLUMNS} FROM review_campaigns c
                     LEFT JOIN review_closures cl ON cl.campaign_id = c.id WHERE c.id = ?1"
                ),
                params![id],
                campaign_from_row,
            )
            .optional()
            .map_err(|e| self.err("review campaign", e))
    }

    /// The frozen items of a campaign, in item order.
    fn review_items(&self, id: i64) -> Result<Vec<ReviewItem>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT item_no, account, user_id, user_name, email, user_type, status, role,
                    privileged, last_activity_ms, activity_source, dormant, granted, granted_ms,
                    granted_by_id, granted_by_name, granted_by_email, grant_event_id, grant_ip
                 FROM review_items WHERE campaign_id = ?1 ORDER BY item_no",
            )
            .map_err(|e| self.err("review items", e))?;
        let rows = st
            .query_map(params![id], |r| {
                Ok(ReviewItem {
                    item_no: r.get(0)?,
                    account: r.get(1)?,
                    user_id: r.get(2)?,
                    user_name: r.get(3)?,
                    email: r.get(4)?,
                    user_type: r.get(5)?,
                    status: r.get(6)?,
                    role: r.get(7)?,
                    privileged: r.get(8)?,
                    last_activity_ms: r.get(9)?,
                    activity_source: r.get(10)?,
                    dormant: r.get(11)?,
                    granted: r.get(12)?,
                    granted_ms: r.get(13)?,
                    granted_by_id: r.get(14)?,
                    granted_by_name: r.get(15)?,
                    granted_by_email: r.get(16)?,
                    grant_event_id: r.get(17)?,
                    grant_ip: r.get(18)?,
                })
            })
            .map_err(|e| self.err("review items", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("review item", e))
    }

    /// Every decision of a campaign in the order it was recorded (the latest of an item is its
    /// decision; the earlier ones are its history).
    fn review_decisions(&self, id: i64) -> Result<Vec<Decision>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT item_no, decision, justification, reviewer, decided_ms, source_file,
                    source_sha256
                 FROM review_decisions WHERE campaign_id = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err("review decisions", e))?;
        let rows = st
            .query_map(params![id], |r| {
                Ok(Decision {
                    item_no: r.get(0)?,
                    decision: r.get(1)?,
                    justification: r.get(2)?,
                    reviewer: r.get(3)?,
                    decided_ms: r.get(4)?,
                    source_file: r.get(5)?,
                    source_sha256: r.get(6)?,
                })
            })
            .map_err(|e| self.err("review decisions", e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err("review decision", e))
    }

    /// Append decisions to an open campaign, all or none, each a link of its chain.
    fn record_review_decisions(
        &mut self,
        id: i64,
        decisions: &[Decision],
    ) -> Result<std::result::Result<u64, ReviewRefusal>> {
        let path = self.path.clone();
        let e = |what: &'static str| {
            let path = path.clone();
            move |x: rusqlite::Error| err(&path, what, x)
        };
        let tx = self
            .write_tx()
            .map_err(|x| err(&path, "record review decisions", x))?;
        if let Some(refusal) = refusal_of(&tx, id).map_err(e("review campaign"))? {
            return Ok(Err(refusal));
        }
        let account = review_chain_account(id);
        let mut head = load_head(&tx, ChainKind::Reviews, &account).map_err(e("chain head"))?;
        for d in decisions {
            tx.prepare_cached(
                "INSERT INTO review_decisions (campaign_id, item_no, decision, justification,
                    reviewer, decided_ms, source_file, source_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    d.item_no,
                    d.decision,
                    d.justification,
                    d.reviewer,
                    d.decided_ms,
                    d.source_file,
                    d.source_sha256
                ])
            })
            .map_err(e("insert review decision"))?;
            let seq = tx.last_insert_rowid();
            link_row(&tx, &mut head, "decision", seq).map_err(e("chain review decision"))?;
        }
        save_head(&tx, ChainKind::Reviews, &account, &head).map_err(e("chain head"))?;
        tx.commit().map_err(e("commit review decisions"))?;
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
        let path = self.path.clone();
        let e = |what: &'static str| {
            let path = path.clone();
            move |x: rusqlite::Error| err(&path, what, x)
        };
        let tx = self.write_tx().map_err(|x| err(&path, "close review", x))?;
        if let Some(refusal) = refusal_of(&tx, id).map_err(e("review campaign"))? {
            return Ok(Err(refusal));
        }
        tx.execute(
            "INSERT INTO review_closures (campaign_id, closed_ms, decided, total)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, closed_ms, decided, total],
        )
        .map_err(e("insert review closure"))?;
        let account = review_chain_account(id);
        let mut head = load_head(&tx, ChainKind::Reviews, &account).map_err(e("chain head"))?;
        link_row(&tx, &mut head, "closure", id).map_err(e("chain review closure"))?;
        save_head(&tx, ChainKind::Reviews, &account, &head).map_err(e("chain head"))?;
        tx.commit().map_err(e("commit review closure"))?;
        Ok(Ok(head))
    }

    /// The recorded head of a campaign's chain.
    fn review_head(&self, id: i64) -> Result<ChainHead> {
        load_head(&self.conn, ChainKind::Reviews, &review_chain_account(id))
            .map_err(|e| self.err("review chain head", e))
    }
}
