//! The PostgreSQL SQL of alerting (the same outbox as SQLite's `alerts.rs`). `record_alerts`
//! takes the account's `alert_scan` row `FOR UPDATE` first, so two processes evaluating the same
//! account serialize there instead of both reading the same unseen facts; a claim is one
//! `UPDATE ... WHERE` that re-checks the claim under the row lock it takes.

use tokio_postgres::Row;

use super::parse_roles;
use super::{pg_err, Postgres, Wait};
use crate::domain::{self, DeliveryStatus, RoleChangeKind};
use crate::domain::{FailedSignIn, Grant, GrantCounter, NewCredential, NewUser, ServiceUserEnd};
use crate::store::{
    AlertCounts, AlertDelivery, AlertFacts, AlertStore, Claim, Deferred, DeliveryUpdate,
    DueDeliveries, NewAlert, Result,
};

const DELIVERY_SELECT: &str = "SELECT a.id, d.id, a.uid, a.account, a.rule, a.severity, a.at_ms,
    a.summary, a.payload, d.sink,
    COALESCE(d.status, CASE WHEN a.suppressed THEN 'suppressed' ELSE 'pending' END),
    COALESCE(d.attempts, 0), d.last_error, a.created_ms, d.next_attempt_ms, d.failing_since_ms,
    d.claimed_by, d.claim_until_ms
    FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id";

/// How far back failed sign-ins are read on each evaluation (as SQLite's `sign_ins.rs`).
const SIGN_IN_LOOKBACK_MS: i64 = 8 * 86_400_000;
/// The most failures read per evaluation (a bound on outside data).
const MAX_FAILED_SIGN_INS: i64 = 200_000;

/// The credential rules' facts (as SQLite's `credentials.rs`): every current service user with
/// its end date, and the token and certificate events created since `after_seq`; the new mark.
fn credential_facts(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
    account: &str,
    after_seq: i64,
    facts: &mut AlertFacts,
) -> Result<i64> {
    let e = |what: &'static str| move |e: tokio_postgres::Error| pg_err(location, what, e);
    let users = tx
        .query(
            "SELECT user_id, display_name, user_name, roles, raw FROM users
             WHERE account = $1 AND status <> 'deleted'
               AND lower(COALESCE(user_type, '')) LIKE '%service%'
             ORDER BY user_id",
            &[&account],
        )
        .wait()
        .map_err(e("service users"))?;
    for r in &users {
        let user_id: String = r.get(0);
        let roles: String = r.get(3);
        let raw: String = r.get(4);
        facts.service_users.push(ServiceUserEnd {
            account: account.to_string(),
            end_date: crate::api::users::service_end_date(&raw),
            name: r.get::<_, Option<String>>(1).or(r.get(2)),
            roles: parse_roles(&roles, (location, "users", &format!("user {user_id:?}")))?,
            user_id,
        });
    }
    let events = tx
        .query(
            "SELECT e.seq, e.event_id, e.ts_ms, e.resource_type, e.resource_id, e.resource_name,
                e.actor_id, e.actor_name, e.ip_address, e.action, e.status, a.user_type, a.roles
             FROM events e
             LEFT JOIN users a ON a.account = e.account AND a.user_id = e.actor_id
             WHERE e.account = $1 AND e.seq > $2
               AND e.resource_type IN ('api_token', 'client_auth_certificate')
             ORDER BY e.seq",
            &[&account, &after_seq],
        )
        .wait()
        .map_err(e("credential events"))?;
    let mut mark = after_seq;
    for r in &events {
        mark = mark.max(r.get(0));
        let action: String = r.get(9);
        let status: Option<String> = r.get(10);
        let created = matches!(action.to_ascii_lowercase().as_str(), "generate" | "create");
        let failed = status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("failure"));
        if !created || failed {
            continue;
        }
        let roles: Option<String> = r.get(12);
        facts.credentials.push(NewCredential {
            account: account.to_string(),
            event_id: r.get(1),
            event_ms: r.get(2),
            resource_type: r.get(3),
            resource_id: r.get(4),
            resource_name: r.get(5),
            actor_id: r.get(6),
            actor_name: r.get(7),
            ip_address: r.get(8),
            actor_type: r.get(11),
            actor_roles: match roles {
                Some(roles) => parse_roles(&roles, (location, "users", "of a credential's actor"))?,
                None => Vec::new(),
            },
        });
    }
    Ok(mark)
}

fn delivery_from_row(r: &Row) -> AlertDelivery {
    AlertDelivery {
        alert_id: r.get(0),
        delivery_id: r.get(1),
        uid: r.get(2),
        account: r.get(3),
        rule: r.get(4),
        severity: r.get(5),
        at_ms: r.get(6),
        summary: r.get(7),
        payload: r.get(8),
        sink: r.get(9),
        status: r.get(10),
        attempts: r.get(11),
        last_error: r.get(12),
        created_ms: r.get(13),
        next_attempt_ms: r.get(14),
        failing_since_ms: r.get(15),
        claimed_by: r.get(16),
        claim_until_ms: r.get(17),
    }
}

impl AlertStore for Postgres {
    fn record_alerts(
        &mut self,
        account: &str,
        sinks: &[String],
        now_ms: i64,
        eval: &mut dyn FnMut(&AlertFacts, &mut dyn GrantCounter) -> Vec<NewAlert>,
    ) -> Result<AlertCounts> {
        let fence = self.fences.get(account).cloned();
        let (mut tx, location) = self.tx("begin alerts")?;
        super::leases::check_fence(&tx, location, account, fence.as_ref())?;
        let e = |what: &'static str| move |e: tokio_postgres::Error| pg_err(location, what, e);
        let marks = tx
            .query_one(
                "INSERT INTO alert_scan (account, role_seq, history_seq) VALUES ($1, 0, 0)
                 ON CONFLICT (account) DO UPDATE SET role_seq = alert_scan.role_seq
                 RETURNING role_seq, history_seq, credential_seq",
                &[&account],
            )
            .wait()
            .map_err(e("alert marks"))?;
        let (role_mark, hist_mark, cred_mark): (i64, i64, i64) =
            (marks.get(0), marks.get(1), marks.get(2));
        let mut facts = AlertFacts::default();
        let mut new_role_mark = role_mark;
        let mut new_hist_mark = hist_mark;
        let grants = tx
            .query(
                "SELECT rc.seq, rc.user_id, rc.role, rc.change, rc.observed_ms, rc.after_ms,
                    rc.event_id, rc.event_ms, rc.actor_id, rc.actor_name, rc.ip_address,
                    u.user_name, u.status, u.first_seen_ms, u.last_login_ms, a.user_type
                 FROM role_changes rc
                 LEFT JOIN users u ON u.account = rc.account AND u.user_id = rc.user_id
                 LEFT JOIN users a ON a.account = rc.account AND a.user_id = rc.actor_id
                 WHERE rc.account = $1 AND rc.seq > $2 ORDER BY rc.seq",
                &[&account, &role_mark],
            )
            .wait()
            .map_err(e("alert facts"))?;
        let activity = tx
            .prepare(
                "SELECT MAX(ts_ms) FROM events WHERE account = $1 AND actor_id = $2
                    AND COALESCE(status, '') <> $4 AND ts_ms < $3",
            )
            .wait()
            .map_err(e("prepare activity"))?;
        for r in &grants {
            let seq: i64 = r.get(0);
            new_role_mark = new_role_mark.max(seq);
            let change: RoleChangeKind = r.try_get(3).map_err(e("alert facts"))?;
            if change != RoleChangeKind::Granted {
                continue;
            }
            let mut g = Grant {
                account: account.to_string(),
                user_id: r.get(1),
                role: r.get(2),
                observed_ms: r.get(4),
                after_ms: r.get(5),
                event_id: r.get(6),
                event_ms: r.get(7),
                actor_id: r.get(8),
                actor_name: r.get(9),
                ip_address: r.get(10),
                user_name: r.get(11),
                target_status: r.try_get(12).map_err(e("alert facts"))?,
                target_first_seen_ms: r.get(13),
                target_last_active_ms: r.get(14),
                actor_type: r.get(15),
                role_change_seq: Some(seq),
                account_kind: None,
            };
            let at = g.at_ms().unwrap_or(now_ms);
            let last_event: Option<i64> = tx
                .query_one(
                    &activity,
                    &[&account, &g.user_id, &at, &domain::FAILED_EVENT_STATUS],
                )
                .wait()
                .map_err(e("activity"))?
                .get(0);
            let login = g.target_last_active_ms.filter(|t| *t < at);
            g.target_last_active_ms = match (last_event, login) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            facts.grants.push(g);
        }
        let users = tx
            .query(
                "SELECT h.seq, h.user_id, u.user_name, u.user_type, u.roles, u.created_ms,
                    h.observed_ms, h.observed_ms <= (SELECT MIN(first_seen_ms) FROM users
                        WHERE account = $1)
                 FROM user_history h
                 JOIN users u ON u.account = h.account AND u.user_id = h.user_id
                 WHERE h.account = $1 AND h.seq > $2 AND h.field = 'first_seen'
                 ORDER BY h.seq",
                &[&account, &hist_mark],
            )
            .wait()
            .map_err(e("new users"))?;
        for r in &users {
            let seq: i64 = r.get(0);
            new_hist_mark = new_hist_mark.max(seq);
            let roles: String = r.get(4);
            facts.new_users.push(NewUser {
                account: account.to_string(),
                user_id: r.get(1),
                user_name: r.get(2),
                user_type: r.get(3),
                roles: parse_roles(
                    &roles,
                    (
                        location,
                        "users",
                        &format!("user {:?}", r.get::<_, String>(1)),
                    ),
                )?,
                account_kind: None,
                created_ms: r.get(5),
                observed_ms: r.get(6),
                first_sync: r.get::<_, Option<bool>>(7).unwrap_or(false),
            });
        }
        let max_hist: Option<i64> = tx
            .query_one(
                "SELECT MAX(seq) FROM user_history WHERE account = $1",
                &[&account],
            )
            .wait()
            .map_err(e("history mark"))?
            .get(0);
        new_hist_mark = new_hist_mark.max(max_hist.unwrap_or(0));
        let new_cred_mark = credential_facts(&tx, location, account, cred_mark, &mut facts)?;
        facts.failed_sign_ins = tx
            .query(
                "SELECT event_id, ts_ms, COALESCE(actor_id, actor_name), actor_name, ip_address
                 FROM events WHERE account = $1 AND ts_ms >= $2 AND action = 'login'
                    AND status = 'failure' AND COALESCE(actor_id, actor_name) IS NOT NULL
                 ORDER BY ts_ms LIMIT $3",
                &[
                    &account,
                    &now_ms.saturating_sub(SIGN_IN_LOOKBACK_MS),
                    &MAX_FAILED_SIGN_INS,
                ],
            )
            .wait()
            .map_err(e("failed sign-ins"))?
            .iter()
            .map(|r| FailedSignIn {
                event_id: r.get(0),
                ts_ms: r.get(1),
                user: r.get(2),
                user_name: r.get(3),
                ip_address: r.get(4),
            })
            .collect();
        let mut counts = AlertCounts {
            facts: (facts.grants.len() + facts.new_users.len() + facts.credentials.len()) as u64,
            ..Default::default()
        };
        let alerts = {
            let count = tx
                .prepare(
                    "SELECT COUNT(*) FROM role_changes WHERE account = $1 AND actor_id = $2
                        AND change = 'granted' AND event_ms BETWEEN $3 AND $4",
                )
                .wait()
                .map_err(e("prepare burst count"))?;
            let tx = &mut tx;
            let mut counter = |actor: &str, from: i64, to: i64| -> u64 {
                tx.query_one(&count, &[&account, &actor, &from, &to])
                    .wait()
                    .map(|r| r.get::<_, i64>(0).max(0) as u64)
                    .unwrap_or(0)
            };
            eval(&facts, &mut counter)
        };
        for a in &alerts {
            let id = tx
                .query_opt(
                    "INSERT INTO alerts (alert_key, uid, account, rule, severity, at_ms,
                        summary, payload, suppressed, created_ms, role_change_seq)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT DO NOTHING RETURNING id",
                    &[
                        &a.key,
                        &a.uid,
                        &account,
                        &a.rule,
                        &a.severity,
                        &a.at_ms,
                        &a.summary,
                        &a.payload,
                        &a.suppressed,
                        &now_ms,
                        &a.role_change_seq,
                    ],
                )
                .wait()
                .map_err(e("insert alert"))?;
            let Some(id) = id.map(|r| r.get::<_, i64>(0)) else {
                continue;
            };
            counts.alerts += 1;
            if a.suppressed {
                counts.suppressed += 1;
                continue;
            }
            for s in sinks {
                tx.execute(
                    "INSERT INTO alert_deliveries (alert_id, sink, status, attempts, updated_ms)
                     VALUES ($1, $2, 'pending', 0, $3) ON CONFLICT DO NOTHING",
                    &[&id, s, &now_ms],
                )
                .wait()
                .map_err(e("insert delivery"))?;
            }
        }
        tx.execute(
            "UPDATE alert_scan SET role_seq = $2, history_seq = $3, credential_seq = $4
             WHERE account = $1",
            &[&account, &new_role_mark, &new_hist_mark, &new_cred_mark],
        )
        .wait()
        .map_err(e("alert marks"))?;
        tx.commit().wait().map_err(e("commit alerts"))?;
        Ok(counts)
    }

    fn due_deliveries(&self, sinks: &[String], now_ms: i64) -> Result<DueDeliveries> {
        let mut out = DueDeliveries::default();
        for s in sinks {
            for r in self.rows(
                &format!(
                    "{DELIVERY_SELECT} WHERE d.status = 'pending' AND d.sink = $1
                        AND (d.next_attempt_ms IS NULL OR d.next_attempt_ms <= $2) ORDER BY a.id"
                ),
                &[s, &now_ms],
                "due deliveries",
            )? {
                out.due.push(delivery_from_row(&r));
            }
            let w = self.one(
                "SELECT COUNT(*), MIN(next_attempt_ms) FROM alert_deliveries
                 WHERE status = 'pending' AND sink = $1 AND next_attempt_ms > $2",
                &[s, &now_ms],
                "waiting deliveries",
            )?;
            let n: i64 = w.get(0);
            if n > 0 {
                out.waiting.insert(s.clone(), (n.max(0) as u64, w.get(1)));
            }
        }
        Ok(out)
    }

    fn claim_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        now_ms: i64,
        claim_until_ms: i64,
        owner_gone: &dyn Fn(&str) -> bool,
    ) -> Result<Claim> {
        let (tx, location) = self.tx("begin claim")?;
        let row = tx
            .query_opt(
                "SELECT status, next_attempt_ms, claimed_by, claim_until_ms, failing_since_ms,
                    failed_runs FROM alert_deliveries WHERE id = $1 FOR UPDATE",
                &[&delivery_id],
            )
            .wait()
            .map_err(|e| pg_err(location, "read claim", e))?;
        let Some(r) = row else {
            return Ok(Claim::Gone);
        };
        let status: String = r.get(0);
        let next: Option<i64> = r.get(1);
        let holder: Option<String> = r.get(2);
        let until: Option<i64> = r.get(3);
        let failing_since_ms: Option<i64> = r.get(4);
        let failed_runs: i64 = r.get(5);
        if status != "pending" || next.is_some_and(|t| t > now_ms) {
            return Ok(Claim::Gone);
        }
        if let Some(h) = holder.as_deref() {
            let live = until.is_some_and(|t| t >= now_ms);
            if h != owner && live && !owner_gone(h) {
                return Ok(Claim::Held);
            }
        }
        tx.execute(
            "UPDATE alert_deliveries SET claimed_by = $2, claim_until_ms = $3 WHERE id = $1",
            &[&delivery_id, &owner, &claim_until_ms],
        )
        .wait()
        .map_err(|e| pg_err(location, "claim delivery", e))?;
        tx.commit()
            .wait()
            .map_err(|e| pg_err(location, "commit claim", e))?;
        Ok(Claim::Claimed {
            failing_since_ms,
            failed_runs: u32::try_from(failed_runs.max(0)).unwrap_or(u32::MAX),
        })
    }

    fn record_delivery(
        &mut self,
        delivery_id: i64,
        owner: &str,
        update: DeliveryUpdate<'_>,
        now_ms: i64,
    ) -> Result<bool> {
        const MINE: &str = "WHERE id = $1 AND claimed_by = $2 AND status = 'pending'";
        let n = match update {
            DeliveryUpdate::Attempt {
                error,
                claim_until_ms,
            } => self.exec(
                &format!(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $3,
                        updated_ms = $4, claim_until_ms = $5 {MINE}"
                ),
                &[&delivery_id, &owner, &error, &now_ms, &claim_until_ms],
                "record delivery",
            ),
            DeliveryUpdate::Sent => self.exec(
                &format!(
                    "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1,
                        last_error = NULL, updated_ms = $3, sent_ms = $3, next_attempt_ms = NULL,
                        claimed_by = NULL, claim_until_ms = NULL {MINE}"
                ),
                &[&delivery_id, &owner, &now_ms],
                "record delivery",
            ),
            DeliveryUpdate::Failed { error } => self.exec(
                &format!(
                    "UPDATE alert_deliveries SET status = 'failed', attempts = attempts + 1,
                        last_error = $3, updated_ms = $4, next_attempt_ms = NULL,
                        failing_since_ms = COALESCE(failing_since_ms, $4),
                        claimed_by = NULL, claim_until_ms = NULL {MINE}"
                ),
                &[&delivery_id, &owner, &error, &now_ms],
                "record delivery",
            ),
            DeliveryUpdate::Later {
                error,
                next_attempt_ms,
            } => self.exec(
                &format!(
                    "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $3,
                        updated_ms = $4, next_attempt_ms = $5,
                        failing_since_ms = COALESCE(failing_since_ms, $4),
                        failed_runs = failed_runs + 1, claimed_by = NULL, claim_until_ms = NULL
                     {MINE}"
                ),
                &[&delivery_id, &owner, &error, &now_ms, &next_attempt_ms],
                "record delivery",
            ),
        }?;
        Ok(n > 0)
    }

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
        let (tx, location) = self.tx("begin defer")?;
        let mut out = Deferred::default();
        const FREE: &str = "WHERE id = $1 AND status = 'pending'
            AND (next_attempt_ms IS NULL OR next_attempt_ms <= $3)
            AND (claimed_by IS NULL OR claimed_by = $2 OR claim_until_ms < $3)";
        let give_up = tx
            .prepare(&format!(
                "UPDATE alert_deliveries SET status = 'failed', last_error = $4,
                    updated_ms = $3, next_attempt_ms = NULL,
                    failing_since_ms = COALESCE(failing_since_ms, $3),
                    claimed_by = NULL, claim_until_ms = NULL
                 {FREE} AND COALESCE(failing_since_ms, $3) <= $5"
            ))
            .wait()
            .map_err(|e| pg_err(location, "prepare give up", e))?;
        let later = tx
            .prepare(&format!(
                "UPDATE alert_deliveries SET last_error = $4, updated_ms = $3,
                    next_attempt_ms = $5, failing_since_ms = COALESCE(failing_since_ms, $3),
                    failed_runs = failed_runs + 1, claimed_by = NULL, claim_until_ms = NULL
                 {FREE}"
            ))
            .wait()
            .map_err(|e| pg_err(location, "prepare defer", e))?;
        for id in ids {
            let n = tx
                .execute(
                    &give_up,
                    &[id, &owner, &now_ms, &given_up_error, &give_up_before_ms],
                )
                .wait()
                .map_err(|e| pg_err(location, "give up delivery", e))?;
            if n > 0 {
                out.given_up += 1;
                continue;
            }
            out.later += tx
                .execute(&later, &[id, &owner, &now_ms, &error, &next_attempt_ms])
                .wait()
                .map_err(|e| pg_err(location, "defer delivery", e))?;
        }
        tx.commit()
            .wait()
            .map_err(|e| pg_err(location, "commit defer", e))?;
        Ok(out)
    }

    fn release_claims(&mut self, owner: &str) -> Result<u64> {
        self.exec(
            "UPDATE alert_deliveries SET claimed_by = NULL, claim_until_ms = NULL
             WHERE claimed_by = $1",
            &[&owner],
            "release claims",
        )
    }

    fn alert_state_counts(&self) -> Result<Vec<(String, u64)>> {
        Ok(self
            .rows(
                "SELECT COALESCE(d.status, CASE WHEN a.suppressed THEN 'suppressed'
                    ELSE 'pending' END) AS state, COUNT(*)
                 FROM alerts a LEFT JOIN alert_deliveries d ON d.alert_id = a.id
                 GROUP BY state ORDER BY state",
                &[],
                "alert state counts",
            )?
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    fn list_alerts(
        &self,
        status: Option<DeliveryStatus>,
        limit: u32,
    ) -> Result<Vec<AlertDelivery>> {
        Ok(self
            .rows(
                &format!(
                    "{DELIVERY_SELECT} WHERE $1::text IS NULL OR COALESCE(d.status, CASE WHEN
                        a.suppressed THEN 'suppressed' ELSE 'pending' END) = $1
                     ORDER BY a.id DESC, d.sink LIMIT $2"
                ),
                &[&status.map(DeliveryStatus::as_str), &i64::from(limit)],
                "list alerts",
            )?
            .iter()
            .map(delivery_from_row)
            .collect())
    }

    fn retry_alert(&mut self, alert_id: i64, sinks: &[String], now_ms: i64) -> Result<Option<u64>> {
        let (tx, location) = self.tx("begin retry")?;
        let e = |what: &'static str| move |e: tokio_postgres::Error| pg_err(location, what, e);
        let Some(row) = tx
            .query_opt(
                "SELECT suppressed FROM alerts WHERE id = $1 FOR UPDATE",
                &[&alert_id],
            )
            .wait()
            .map_err(e("find alert"))?
        else {
            return Ok(None);
        };
        let suppressed: bool = row.get(0);
        tx.execute(
            "UPDATE alert_deliveries SET status = 'pending', attempts = 0, updated_ms = $2,
                next_attempt_ms = NULL, failing_since_ms = NULL, failed_runs = 0,
                claimed_by = NULL, claim_until_ms = NULL
             WHERE alert_id = $1 AND (status = 'failed' OR (status = 'pending'
                AND next_attempt_ms IS NOT NULL AND (claimed_by IS NULL OR claim_until_ms < $2)))",
            &[&alert_id, &now_ms],
        )
        .wait()
        .map_err(e("retry alert"))?;
        if suppressed {
            tx.execute(
                "UPDATE alerts SET suppressed = FALSE WHERE id = $1",
                &[&alert_id],
            )
            .wait()
            .map_err(e("unsuppress"))?;
            for s in sinks {
                tx.execute(
                    "INSERT INTO alert_deliveries (alert_id, sink, status, attempts, updated_ms)
                     VALUES ($1, $2, 'pending', 0, $3) ON CONFLICT DO NOTHING",
                    &[&alert_id, s, &now_ms],
                )
                .wait()
                .map_err(e("insert delivery"))?;
            }
        }
        let pending: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM alert_deliveries WHERE alert_id = $1 AND status = 'pending'",
                &[&alert_id],
            )
            .wait()
            .map_err(e("count pending"))?
            .get(0);
        tx.commit().wait().map_err(e("commit retry"))?;
        Ok(Some(pending.max(0) as u64))
    }
}
