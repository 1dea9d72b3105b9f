//! The SQL of alerting: the outbox (`alerts`, one row per (rule, account, evidence), ever), its
//! per-sink deliveries, and the scan marks that say which facts the rules have seen. Which rules
//! fire is decided in `alert`; this module gathers the facts and writes the outcome in one
//! transaction, so a crash leaves either the alerts and the moved marks, or neither.
//!
//! Deliveries are **claimed** before they are sent: [`Store::claim_delivery`] gives one run (an
//! owner string, `host:pid:random`) a lease on one delivery in a short IMMEDIATE transaction, and
//! [`Store::record_delivery`] writes an outcome only while that claim is still the run's own. So
//! two runs on one database (a `collect`, the daemon's `deliver_alerts`, a manual `alerts
//! deliver`, later several daemons) never send the same delivery at once. A delivery a run could
//! not send waits for its `next_attempt_ms`; [`Store::due_deliveries`] skips it until then.

use rusqlite::{params, OptionalExtension};

use super::domain_rules::{parse_roles, parse_stored};
use super::{err, Sqlite};
use crate::domain::{self, DeliveryStatus, RoleChangeKind, UserStatus};
use crate::domain::{Grant, GrantCounter, NewUser};
use crate::store::{
    AlertCounts, AlertDelivery, AlertFacts, AlertStore, Claim, Deferred, DeliveryUpdate,
    DueDeliveries, NewAlert, Result,
};

const DELIVERY_SELECT: &str = "SELECT a.id, d.id, a.uid, a.account, a.rule, a.severity, a.at_ms,
    a.summary, a.payload, d.sink,
    COALESCE(d.status, CASE WHEN a.suppressed = 1 THEN 'suppressed' ELSE 'pending' END),
    COALESCE(d.attempts, 0), d.last_error, a.created_ms, d.next_attempt_ms, d.failing_since_ms,
    d.claimed_by, d.claim_until_ms
    FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertDelivery> {
    let delivery: Option<i64> = r.get(1)?;
    let status: String = r.get(10)?;
    let row = match delivery {
        Some(d) => format!("id {d}"),
        None => format!("of alert {}", r.get::<_, i64>(0)?),
    };
    let table = if delivery.is_some() {
        "alert_deliveries"
    } else {
        "alerts"
    };
    Ok(AlertDelivery {
        status: parse_stored(DeliveryStatus::parse, &status, (10, table, &row, "status"))?,
        alert_id: r.get(0)?,
        delivery_id: r.get(1)?,
        uid: r.get(2)?,
        account: r.get(3)?,
        rule: r.get(4)?,
        severity: r.get(5)?,
        at_ms: r.get(6)?,
        summary: r.get(7)?,
        payload: r.get(8)?,
        sink: r.get(9)?,
        attempts: r.get(11)?,
        last_error: r.get(12)?,
        created_ms: r.get(13)?,
        next_attempt_ms: r.get(14)?,
        failing_since_ms: r.get(15)?,
        claimed_by: r.get(16)?,
        claim_until_ms: r.get(17)?,
    })
}

/// How long before a grant a target must have been idle to count: read per grant.
/// Activity as `domain::is_activity` defines it: an event as actor that did not fail (`?4`).
const ACTIVITY_SQL: &str = "SELECT MAX(ts_ms) FROM events WHERE account = ?1 AND actor_id = ?2
    AND COALESCE(status, '') <> ?4 AND ts_ms < ?3";

/// Facts evaluated at a time: the rules judge each fact on its own (failed sign-ins, judged as a
/// set, come in the last chunk), so a first sync of 100,000 users holds a few thousand facts and
/// their alerts, not all of them (the peak RSS of `sync-users` was the facts and alerts).
const FACT_CHUNK: usize = 2_000;

/// The statements that write a chunk's alerts.
struct AlertWriter<'t> {
    ins: rusqlite::Statement<'t>,
    del: rusqlite::Statement<'t>,
}

impl AlertWriter<'_> {
    /// Judge `facts` with `eval`, write the alerts that fire (a pending delivery per sink unless
    /// suppressed), count them in `counts`, and empty `facts` for the next chunk.
    #[allow(clippy::too_many_arguments)]
    fn flush(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        path: &std::path::Path,
        account: &str,
        sinks: &[String],
        now_ms: i64,
        facts: &mut AlertFacts,
        eval: &mut dyn FnMut(&AlertFacts, &mut dyn GrantCounter) -> Vec<NewAlert>,
        counter: &mut dyn GrantCounter,
        counts: &mut AlertCounts,
    ) -> Result<()> {
        counts.facts +=
            (facts.grants.len() + facts.new_users.len() + facts.credentials.len()) as u64;
        let alerts = eval(facts, counter);
        for a in &alerts {
            let n = self
                .ins
                .execute(params![
                    a.key,
                    a.uid,
                    account,
                    a.rule,
                    a.severity,
                    a.at_ms,
                    a.summary,
                    a.payload,
                    a.suppressed,
                    now_ms,
                    a.role_change_seq
                ])
                .map_err(|e| err(path, "insert alert", e))?;
            if n == 0 {
                continue;
            }
            counts.alerts += 1;
            if a.suppressed {
                counts.suppressed += 1;
                continue;
            }
            let id = tx.last_insert_rowid();
            for s in sinks {
                self.del
                    .execute(params![id, s, now_ms])
                    .map_err(|e| err(path, "insert delivery", e))?;
            }
        }
        facts.grants.clear();
        facts.new_users.clear();
        facts.service_users.clear();
        facts.credentials.clear();
        facts.failed_sign_ins.clear();
        Ok(())
    }
}

impl AlertStore for Sqlite {
    /// Evaluate the rules on the account's role grants and first sightings not evaluated yet,
    /// write the alerts that fire (with a pending delivery per sink unless suppressed) and move
    /// the scan marks, all in one transaction. `eval` is the rule engine.
    fn record_alerts(
        &mut self,
        account: &str,
        sinks: &[String],
        now_ms: i64,
        eval: &mut dyn FnMut(&AlertFacts, &mut dyn GrantCounter) -> Vec<NewAlert>,
    ) -> Result<AlertCounts> {
        let path = self.path.clone();
        // IMMEDIATE: two processes evaluating at once serialize here instead of both reading the
        // same unseen facts.
        let tx = self.write_tx().map_err(|e| err(&path, "begin alerts", e))?;
        let (role_mark, hist_mark, cred_mark): (i64, i64, i64) = tx
            .query_row(
                "SELECT role_seq, history_seq, credential_seq FROM alert_scan WHERE account = ?1",
                params![account],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| err(&path, "alert marks", e))?
            .unwrap_or((0, 0, 0));
        let mut facts = AlertFacts::default();
        let mut new_role_mark = role_mark;
        let mut new_hist_mark = hist_mark;
        let mut counts = AlertCounts::default();
        let new_cred_mark = {
            let mut writer = AlertWriter {
                ins: tx
                    .prepare(
                        "INSERT OR IGNORE INTO alerts (alert_key, uid, account, rule, severity, at_ms,
                            summary, payload, suppressed, created_ms, role_change_seq)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(|e| err(&path, "prepare alert", e))?,
                del: tx
                    .prepare(
                        "INSERT OR IGNORE INTO alert_deliveries (alert_id, sink, status, attempts,
                            updated_ms) VALUES (?1, ?2, 'pending', 0, ?3)",
                    )
                    .map_err(|e| err(&path, "prepare delivery", e))?,
            };
            let mut count = tx
                .prepare(
                    "SELECT COUNT(*) FROM role_changes WHERE account = ?1 AND actor_id = ?2
                        AND change = 'granted' AND event_ms BETWEEN ?3 AND ?4",
                )
                .map_err(|e| err(&path, "prepare burst count", e))?;
            let mut counter = |actor: &str, from: i64, to: i64| -> u64 {
                count
                    .query_row(params![account, actor, from, to], |r| r.get::<_, i64>(0))
                    .map(|n| n.max(0) as u64)
                    .unwrap_or(0)
            };
            // Judge and write the facts gathered so far (when a chunk fills, and at the end).
            macro_rules! flush {
                () => {
                    writer.flush(
                        &tx,
                        &path,
                        account,
                        sinks,
                        now_ms,
                        &mut facts,
                        eval,
                        &mut counter,
                        &mut counts,
                    )?
                };
            }
            let mut st = tx
                .prepare(
                    "SELECT rc.seq, rc.user_id, rc.role, rc.change, rc.observed_ms, rc.after_ms,
                        rc.event_id, rc.event_ms, rc.actor_id, rc.actor_name, rc.ip_address,
                        u.user_name, u.status, u.first_seen_ms, u.last_login_ms, a.user_type
                     FROM role_changes rc
                     LEFT JOIN users u ON u.account = rc.account AND u.user_id = rc.user_id
                     LEFT JOIN users a ON a.account = rc.account AND a.user_id = rc.actor_id
                     WHERE rc.account = ?1 AND rc.seq > ?2 ORDER BY rc.seq",
                )
                .map_err(|e| err(&path, "prepare alert facts", e))?;
            let mut activity = tx
                .prepare(ACTIVITY_SQL)
                .map_err(|e| err(&path, "prepare activity", e))?;
            let mut rows = st
                .query(params![account, role_mark])
                .map_err(|e| err(&path, "alert facts", e))?;
            while let Some(r) = rows.next().map_err(|e| err(&path, "alert facts", e))? {
                let read = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(i64, String, Grant)> {
                    Ok((
                        r.get(0)?,
                        r.get(3)?,
                        Grant {
                            account: account.to_string(),
                            account_kind: None,
                            role_change_seq: Some(r.get(0)?),
                            user_id: r.get(1)?,
                            role: r.get(2)?,
                            observed_ms: r.get(4)?,
                            after_ms: r.get(5)?,
                            event_id: r.get(6)?,
                            event_ms: r.get(7)?,
                            actor_id: r.get(8)?,
                            actor_name: r.get(9)?,
                            ip_address: r.get(10)?,
                            user_name: r.get(11)?,
                            target_status: match r.get::<_, Option<String>>(12)? {
                                Some(s) => Some(parse_stored(
                                    UserStatus::parse,
                                    &s,
                                    (
                                        12,
                                        "users",
                                        &format!("user {:?}", r.get::<_, String>(1)?),
                                        "status",
                                    ),
                                )?),
                                None => None,
                            },
                            target_first_seen_ms: r.get(13)?,
                            target_last_active_ms: r.get(14)?,
                            actor_type: r.get(15)?,
                        },
                    ))
                };
                let (seq, change, mut g) = read(r).map_err(|e| err(&path, "alert fact", e))?;
                let change = parse_stored(
                    RoleChangeKind::parse,
                    &change,
                    (3, "role_changes", &format!("seq {seq}"), "change"),
                )
                .map_err(|e| err(&path, "alert fact", e))?;
                new_role_mark = new_role_mark.max(seq);
                if change != RoleChangeKind::Granted {
                    continue;
                }
                // Last activity before the grant: the API's sign-in time or an event as actor.
                let at = g.at_ms().unwrap_or(now_ms);
                let last_event: Option<i64> = activity
                    .query_row(
                        params![account, g.user_id, at, domain::FAILED_EVENT_STATUS],
                        |r| r.get(0),
                    )
                    .map_err(|e| err(&path, "activity", e))?;
                let login = g.target_last_active_ms.filter(|t| *t < at);
                g.target_last_active_ms = match (last_event, login) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                facts.grants.push(g);
                if facts.grants.len() >= FACT_CHUNK {
                    flush!();
                }
            }
            // `?1` in the subquery, not `h.account`: uncorrelated, it runs once; the correlated
            // one scanned every user of the account for each history row (quadratic: over 20
            // CPU-minutes after a hostile listing of 500,000 made-up users).
            let mut st = tx
                .prepare(
                    "SELECT h.seq, h.user_id, u.user_name, u.user_type, u.roles, u.created_ms,
                        h.observed_ms, h.observed_ms <= (SELECT MIN(first_seen_ms) FROM users
                            WHERE account = ?1)
                     FROM user_history h
                     JOIN users u ON u.account = h.account AND u.user_id = h.user_id
                     WHERE h.account = ?1 AND h.seq > ?2 AND h.field = 'first_seen'
                     ORDER BY h.seq",
                )
                .map_err(|e| err(&path, "prepare new users", e))?;
            let rows = st
                .query_map(params![account, hist_mark], |r| {
                    let roles: String = r.get(4)?;
                    let user_id: String = r.get(1)?;
                    let roles = parse_roles(&roles, (4, "users", &format!("user {user_id:?}")))?;
                    Ok((
                        r.get::<_, i64>(0)?,
                        NewUser {
                            account: account.to_string(),
                            account_kind: None,
                            user_id,
                            user_name: r.get(2)?,
                            user_type: r.get(3)?,
                            roles,
                            created_ms: r.get(5)?,
                            observed_ms: r.get(6)?,
                            first_sync: r.get(7)?,
                        },
                    ))
                })
                .map_err(|e| err(&path, "new users", e))?;
            for row in rows {
                let (seq, u) = row.map_err(|e| err(&path, "new user", e))?;
                new_hist_mark = new_hist_mark.max(seq);
                facts.new_users.push(u);
                if facts.new_users.len() >= FACT_CHUNK {
                    flush!();
                }
            }
            // The highest history seq of the account, so marks move past other history rows too.
            let max_hist: Option<i64> = tx
                .query_row(
                    "SELECT MAX(seq) FROM user_history WHERE account = ?1",
                    params![account],
                    |r| r.get(0),
                )
                .map_err(|e| err(&path, "history mark", e))?;
            new_hist_mark = new_hist_mark.max(max_hist.unwrap_or(0));
            super::credentials::service_user_facts(&tx, account, &mut facts)
                .map_err(|e| err(&path, "service user facts", e))?;
            // A chunk at a time; each read moves the mark past the events it read, so the loop
            // ends (at most one read per FACT_CHUNK events stored after the mark).
            let mut new_cred_mark = cred_mark;
            loop {
                let (mark, read) = super::credentials::credential_facts(
                    &tx,
                    account,
                    new_cred_mark,
                    FACT_CHUNK,
                    &mut facts,
                )
                .map_err(|e| err(&path, "credential facts", e))?;
                new_cred_mark = mark;
                if read < FACT_CHUNK {
                    break;
                }
                flush!();
            }
            facts.failed_sign_ins = super::sign_ins::recent_failed_sign_ins(&tx, account, now_ms)
                .map_err(|e| err(&path, "failed sign-ins", e))?;
            flush!();
            new_cred_mark
        };
        {
            tx.execute(
                "INSERT INTO alert_scan (account, role_seq, history_seq, credential_seq)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (account) DO UPDATE SET role_seq = excluded.role_seq,
                    history_seq = excluded.history_seq, credential_seq = excluded.credential_seq",
                params![account, new_role_mark, new_hist_mark, new_cred_mark],
            )
            .map_err(|e| err(&path, "alert marks", e))?;
        }
        tx.commit().map_err(|e| err(&path, "commit alerts", e))?;
        Ok(counts)
    }

    /// The pending deliveries of the named sinks that are due at `now_ms` (never tried, or their
    /// next attempt has come), oldest alert first, and per sink the count of those still waiting.
    fn due_deliveries(&self, sinks: &[String], now_ms: i64) -> Result<DueDeliveries> {
        let mut out = DueDeliveries::default();
        let mut st = self
            .conn
            .prepare(&format!(
                "{DELIVERY_SELECT} WHERE d.status = 'pending' AND d.sink = ?1
                    AND (d.next_attempt_ms IS NULL OR d.next_attempt_ms <= ?2) ORDER BY a.id"
            ))
            .map_err(|e| self.err("due deliveries", e))?;
        let mut waiting = self
            .conn
            .prepare(
                "SELECT COUNT(*), MIN(next_attempt_ms) FROM alert_deliveries
                 WHERE status = 'pending' AND sink = ?1 AND next_attempt_ms > ?2",
            )
            .map_err(|e| self.err("waiting deliveries", e))?;
        for s in sinks {
            let rows = st
                .query_map(params![s, now_ms], delivery_from_row)
                .map_err(|e| self.err("due deliveries", e))?;
            for r in rows {
                out.due.push(r.map_err(|e| self.err("due delivery", e))?);
            }
            let (n, next): (i64, Option<i64>) = waiting
                .query_row(params![s, now_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.err("waiting deliveries", e))?;
            if n > 0 {
                out.waiting.insert(s.clone(), (n.max(0) as u64, next));
            }
        }
        Ok(out)
    }

    /// Claim one delivery for `owner` until `claim_until_ms`, atomically (IMMEDIATE: two runs
    /// claiming at once serialize here). It is granted if the delivery is still pending and due,
    /// and unclaimed, already the owner's, its lease has lapsed (`claim_until_ms < now_ms`), or
    /// `owner_gone` says its owner has exited.
    fn claim_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        now_ms: i64,
        claim_until_ms: i64,
        owner_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Claim> {
        let path = self.path.clone();
        let tx = self.write_tx().map_err(|e| err(&path, "begin claim", e))?;
        type Row = (
            String,
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            i64,
        );
        let row: Option<Row> = tx
            .query_row(
                "SELECT status, next_attempt_ms, claimed_by, claim_until_ms, failing_since_ms,
                    failed_runs FROM alert_deliveries WHERE id = ?1",
                params![delivery_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| err(&path, "read claim", e))?;
        let Some((status, next, holder, until, failing_since_ms, failed_runs)) = row else {
            return Ok(Claim::Gone);
        };
        let status = parse_stored(
            DeliveryStatus::parse,
            &status,
            (
                0,
                "alert_deliveries",
                &format!("id {delivery_id}"),
                "status",
            ),
        )
        .map_err(|e| err(&path, "read claim", e))?;
        if status != DeliveryStatus::Pending || next.is_some_and(|t| t > now_ms) {
            return Ok(Claim::Gone);
        }
        if let Some(h) = holder.as_deref() {
            let live = until.is_some_and(|t| t >= now_ms);
            if h != owner && live && !owner_gone(h) {
                return Ok(Claim::Held);
            }
        }
        tx.execute(
            "UPDATE alert_deliveries SET claimed_by = ?2, claim_until_ms = ?3 WHERE id = ?1",
            params![delivery_id, owner, claim_until_ms],
        )
        .map_err(|e| err(&path, "claim delivery", e))?;
        tx.commit().map_err(|e| err(&path, "commit claim", e))?;
        Ok(Claim::Claimed {
            failing_since_ms,
            failed_runs: u32::try_from(failed_runs.max(0)).unwrap_or(u32::MAX),
        })
    }

    /// Record what happened to a delivery `owner` holds. Written only while the claim is still
    /// the owner's (another run may have taken a lapsed claim over): returns whether it was.
    /// Every outcome but `Attempt` releases the claim.
    fn record_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        update: DeliveryUpdate<'_>,
        now_ms: i64,
    ) -> Result<bool> {
        const MINE: &str = "WHERE id = ?1 AND claimed_by = ?2 AND status = 'pending'";
        let _turn = self
            .write_turn()
            .map_err(|e| self.err("record delivery", e))?;
        let n = match update {
            DeliveryUpdate::Attempt {
                error,
                claim_until_ms,
            } => self.conn.execute(
                &format!(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ?3,
                        updated_ms = ?4, claim_until_ms = ?5 {MINE}"
                ),
                params![delivery_id, owner, error, now_ms, claim_until_ms],
            ),
            DeliveryUpdate::Sent => self.conn.execute(
                &format!(
                    "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1,
                        last_error = NULL, updated_ms = ?3, sent_ms = ?3, next_attempt_ms = NULL,
                        claimed_by = NULL, claim_until_ms = NULL {MINE}"
                ),
                params![delivery_id, owner, now_ms],
            ),
            DeliveryUpdate::Failed { error } => self.conn.execute(
                &format!(
                    "UPDATE alert_deliveries SET status = 'failed', attempts = attempts + 1,
                        last_error = ?3, updated_ms = ?4, next_attempt_ms = NULL,
                        failing_since_ms = COALESCE(failing_since_ms, ?4),
                        claimed_by = NULL, claim_until_ms = NULL {MINE}"
                ),
                params![delivery_id, owner, error, now_ms],
            ),
            DeliveryUpdate::Later {
                error,
                next_attempt_ms,
            } => self.conn.execute(
                &format!(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ?3,
                        updated_ms = ?4, next_attempt_ms = ?5,
                        failing_since_ms = COALESCE(failing_since_ms, ?4),
                        failed_runs = failed_runs + 1, claimed_by = NULL, claim_until_ms = NULL
                     {MINE}"
                ),
                params![delivery_id, owner, error, now_ms, next_attempt_ms],
            ),
        }
        .map_err(|e| self.err("record delivery", e))?;
        Ok(n > 0)
    }

    /// A sink is failing: move its other due deliveries that this run did not try (`ids`) to
    /// `next_attempt_ms` with it, so the backlog waits together instead of each run hammering the
    /// next alert. Those failing since `give_up_before_ms` or earlier become dead letters.
    /// Deliveries another live run holds are left alone.
    #[allow(clippy::too_many_arguments)]
    fn defer_deliveries(
        &mut self,
        ids: &[i64],
        owner: &str,
        now_ms: i64,
        next_attempt_ms: i64,
        give_up_before_ms: i64,
        error: &str,
        given_up_error: &str,
    ) -> Result<Deferred> {
        let path = self.path.clone();
        let tx = self.write_tx().map_err(|e| err(&path, "begin defer", e))?;
        let mut out = Deferred::default();
        {
            const FREE: &str = "WHERE id = ?1 AND status = 'pending'
                AND (next_attempt_ms IS NULL OR next_attempt_ms <= ?3)
                AND (claimed_by IS NULL OR claimed_by = ?2 OR claim_until_ms < ?3)";
            let mut give_up = tx
                .prepare(&format!(
                    "UPDATE alert_deliveries SET status = 'failed', last_error = ?4,
                        updated_ms = ?3, next_attempt_ms = NULL,
                        failing_since_ms = COALESCE(failing_since_ms, ?3),
                        claimed_by = NULL, claim_until_ms = NULL
                     {FREE} AND COALESCE(failing_since_ms, ?3) <= ?5"
                ))
                .map_err(|e| err(&path, "prepare give up", e))?;
            let mut later = tx
                .prepare(&format!(
                    "UPDATE alert_deliveries SET last_error = ?4, updated_ms = ?3,
                        next_attempt_ms = ?5, failing_since_ms = COALESCE(failing_since_ms, ?3),
                        failed_runs = failed_runs + 1, claimed_by = NULL, claim_until_ms = NULL
                     {FREE}"
                ))
                .map_err(|e| err(&path, "prepare defer", e))?;
            for id in ids {
                let n = give_up
                    .execute(params![
                        id,
                        owner,
                        now_ms,
                        given_up_error,
                        give_up_before_ms
                    ])
                    .map_err(|e| err(&path, "give up delivery", e))?;
                if n > 0 {
                    out.given_up += 1;
                    continue;
                }
                let n = later
                    .execute(params![id, owner, now_ms, error, next_attempt_ms])
                    .map_err(|e| err(&path, "defer delivery", e))?;
                out.later += n as u64;
            }
        }
        tx.commit().map_err(|e| err(&path, "commit defer", e))?;
        Ok(out)
    }

    /// Drop every claim `owner` still holds (its run is ending): those deliveries are due again.
    fn release_claims(&mut self, owner: &str) -> Result<u64> {
        let _turn = self
            .write_turn()
            .map_err(|e| self.err("release claims", e))?;
        let n = self
            .conn
            .execute(
                "UPDATE alert_deliveries SET claimed_by = NULL, claim_until_ms = NULL
                 WHERE claimed_by = ?1",
                params![owner],
            )
            .map_err(|e| self.err("release claims", e))?;
        Ok(n as u64)
    }

    /// How many deliveries are in each state (pending, sent, failed), plus alerts `suppressed` on
    /// backfill and alerts waiting for a sink (`pending` with no delivery row): for `/metrics`.
    fn alert_state_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT COALESCE(d.status, CASE WHEN a.suppressed = 1 THEN 'suppressed'
                    ELSE 'pending' END) AS state, COUNT(*)
                 FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id
                 GROUP BY state ORDER BY state",
            )
            .map_err(|e| self.err("alert state counts", e))?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(|e| self.err("alert state counts", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("alert state counts", e))
    }

    /// Alerts with their deliveries, newest first, optionally of one status.
    fn list_alerts(
        &self,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<AlertDelivery>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "{DELIVERY_SELECT} WHERE ?1 IS NULL OR COALESCE(d.status, CASE WHEN
                    a.suppressed = 1 THEN 'suppressed' ELSE 'pending' END) = ?1
                 ORDER BY a.id DESC, d.sink LIMIT ?2"
            ))
            .map_err(|e| self.err("list alerts", e))?;
        let rows = st
            .query_map(
                params![status.map(DeliveryStatus::as_str), limit],
                delivery_from_row,
            )
            .map_err(|e| self.err("list alerts", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("list alerts", e))
    }

    /// Put an alert's failed deliveries (dead letters) and those waiting for a later attempt back
    /// to pending, due now, with a fresh retry budget; also a suppressed alert, which then gets a delivery per sink. Returns how many
    /// deliveries are pending for it now, or `None` if there is no such alert.
    fn retry_alert(&mut self, alert_id: i64, sinks: &[String], now_ms: i64) -> Result<Option<u64>> {
        let path = self.path.clone();
        let tx = self.write_tx().map_err(|e| err(&path, "begin retry", e))?;
        let exists: Option<bool> = tx
            .query_row(
                "SELECT suppressed FROM alerts WHERE id = ?1",
                params![alert_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| err(&path, "find alert", e))?;
        let Some(suppressed) = exists else {
            return Ok(None);
        };
        // A dead letter, or a delivery waiting for its next attempt: due now, with a fresh budget
        // and a fresh give-up horizon.
        tx.execute(
            "UPDATE alert_deliveries SET status = 'pending', attempts = 0, updated_ms = ?2,
                next_attempt_ms = NULL, failing_since_ms = NULL, failed_runs = 0,
                claimed_by = NULL, claim_until_ms = NULL
             WHERE alert_id = ?1 AND (status = 'failed' OR (status = 'pending'
                AND next_attempt_ms IS NOT NULL AND (claimed_by IS NULL OR claim_until_ms < ?2)))",
            params![alert_id, now_ms],
        )
        .map_err(|e| err(&path, "retry alert", e))?;
        if suppressed {
            tx.execute(
                "UPDATE alerts SET suppressed = 0 WHERE id = ?1",
                params![alert_id],
            )
            .map_err(|e| err(&path, "unsuppress", e))?;
            for s in sinks {
                tx.execute(
                    "INSERT OR IGNORE INTO alert_deliveries (alert_id, sink, status, attempts,
                        updated_ms) VALUES (?1, ?2, 'pending', 0, ?3)",
                    params![alert_id, s, now_ms],
                )
                .map_err(|e| err(&path, "insert delivery", e))?;
            }
        }
        let pending: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM alert_deliveries WHERE alert_id = ?1 AND status = 'pending'",
                params![alert_id],
                |r| r.get(0),
            )
            .map_err(|e| err(&path, "count pending", e))?;
        tx.commit().map_err(|e| err(&path, "commit retry", e))?;
        Ok(Some(pending.max(0) as u64))
    }
}
