//! The SQL of the credentials report (`report credentials`): the service users of an account
//! with their stored user object (the end date is in it; `api::users::service_end_date` reads
//! it), and the audit events about API tokens and client-authentication certificates, grouped by
//! credential. Both stream in report order, so memory stays flat.

use rusqlite::{params, OptionalExtension};

use super::users::{user_from_row, USER_COLUMNS};
use super::Sqlite;
use crate::domain::{NewCredential, ServiceUserEnd};
use crate::store::{AlertFacts, CredentialEvent, CredentialStore, Result, UserRow};

impl CredentialStore for Sqlite {
    /// The current (not deleted) service users of `account`, with `raw`, by name then id.
    fn visit_service_users(
        &self,
        account: &str,
        f: &mut dyn FnMut(UserRow) -> bool,
    ) -> Result<u64> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {USER_COLUMNS}, raw FROM users
                 WHERE account = ?1 AND status <> 'deleted'
                   AND lower(COALESCE(user_type, '')) LIKE '%service%'
                 ORDER BY lower(COALESCE(display_name, user_name, '')), user_id"
            ))
            .map_err(|e| self.err("prepare service users", e))?;
        let mut rows = st
            .query(params![account])
            .map_err(|e| self.err("service users", e))?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.err("service users", e))? {
            let user = (|| -> rusqlite::Result<UserRow> {
                let mut u = user_from_row(r, 0)?;
                u.raw = r.get(20)?;
                Ok(u)
            })()
            .map_err(|e| self.err("service user row", e))?;
            if !f(user) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The audit events of `account` about API tokens and client-auth certificates, grouped by
    /// credential (type, id, then name) and oldest first within one.
    fn visit_credential_events(
        &self,
        account: &str,
        f: &mut dyn FnMut(CredentialEvent) -> bool,
    ) -> Result<u64> {
        let mut st = self
            .conn
            .prepare(
                "SELECT resource_type, resource_id, resource_name, action, event_id, ts_ms,
                    actor_id, actor_name, ip_address, status
                 FROM events
                 WHERE account = ?1 AND resource_type IN ('api_token', 'client_auth_certificate')
                 ORDER BY resource_type, COALESCE(resource_id, resource_name, event_id), ts_ms, seq",
            )
            .map_err(|e| self.err("prepare credential events", e))?;
        let mut rows = st
            .query(params![account])
            .map_err(|e| self.err("credential events", e))?;
        let mut n = 0;
        while let Some(r) = rows.next().map_err(|e| self.err("credential events", e))? {
            let ev = (|| -> rusqlite::Result<CredentialEvent> {
                Ok(CredentialEvent {
                    resource_type: r.get(0)?,
                    resource_id: r.get(1)?,
                    resource_name: r.get(2)?,
                    action: r.get(3)?,
                    event_id: r.get(4)?,
                    ts_ms: r.get(5)?,
                    actor_id: r.get(6)?,
                    actor_name: r.get(7)?,
                    ip_address: r.get(8)?,
                    status: r.get(9)?,
                })
            })()
            .map_err(|e| self.err("credential event row", e))?;
            if !f(ev) {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// The action of one stored event (the dormant report tells a sign-in from API use).
    fn event_action(&self, account: &str, event_id: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT action FROM events WHERE event_key = ?3 AND account = ?1 AND event_id = ?2",
                params![
                    account,
                    event_id,
                    crate::store::event_key::event_key(event_id)
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("event action", e))
    }
}

/// The service-user facts of one account for the alert rules, read in the alert transaction:
/// every current service user with its end date.
pub(super) fn service_user_facts(
    conn: &rusqlite::Connection,
    account: &str,
    facts: &mut AlertFacts,
) -> rusqlite::Result<()> {
    let mut st = conn.prepare(&format!(
        "SELECT {USER_COLUMNS}, raw FROM users
         WHERE account = ?1 AND status <> 'deleted'
           AND lower(COALESCE(user_type, '')) LIKE '%service%'
         ORDER BY user_id"
    ))?;
    let mut rows = st.query(params![account])?;
    while let Some(r) = rows.next()? {
        let mut u = user_from_row(r, 0)?;
        u.raw = r.get(20)?;
        facts.service_users.push(ServiceUserEnd {
            account: account.to_string(),
            end_date: crate::api::users::service_end_date(&u.raw),
            name: u.display_name.or(u.user_name),
            user_id: u.user_id,
            roles: u.roles,
        });
    }
    Ok(())
}

/// The next credential facts of one account for the alert rules, read in the alert transaction:
/// the successful `generate`/`create` events about API tokens and client-auth certificates after
/// `after_seq`, with their creator's type and roles, at most `limit` events read (by the partial
/// index `events_credentials`), so a backfill's credential events are judged a chunk at a time
/// instead of held together (they were most of `collect`'s peak RSS after a million events).
/// Returns the new mark (the highest credential event seq read) and how many events were read:
/// fewer than `limit` means there are no more.
pub(super) fn credential_facts(
    conn: &rusqlite::Connection,
    account: &str,
    after_seq: i64,
    limit: usize,
    facts: &mut AlertFacts,
) -> rusqlite::Result<(i64, usize)> {
    let mut st = conn.prepare_cached(
        "SELECT e.seq, e.event_id, e.ts_ms, e.resource_type, e.resource_id, e.resource_name,
            e.actor_id, e.actor_name, e.ip_address, e.action, e.status, a.user_type, a.roles
         FROM events e
         LEFT JOIN users a ON a.account = e.account AND a.user_id = e.actor_id
         WHERE e.account = ?1 AND e.seq > ?2
           AND e.resource_type IN ('api_token', 'client_auth_certificate')
         ORDER BY e.seq LIMIT ?3",
    )?;
    let mut rows = st.query(params![account, after_seq, limit as i64])?;
    let mut mark = after_seq;
    let mut read = 0;
    while let Some(r) = rows.next()? {
        read += 1;
        mark = mark.max(r.get(0)?);
        let action: String = r.get(9)?;
        let status: Option<String> = r.get(10)?;
        let created = matches!(action.to_ascii_lowercase().as_str(), "generate" | "create");
        let failed = status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("failure"));
        if !created || failed {
            continue;
        }
        let roles: Option<String> = r.get(12)?;
        facts.credentials.push(NewCredential {
            account: account.to_string(),
            event_id: r.get(1)?,
            event_ms: r.get(2)?,
            resource_type: r.get(3)?,
            resource_id: r.get(4)?,
            resource_name: r.get(5)?,
            actor_id: r.get(6)?,
            actor_name: r.get(7)?,
            ip_address: r.get(8)?,
            actor_type: r.get(11)?,
            actor_roles: match roles {
                Some(roles) => super::domain_rules::parse_roles(
                    &roles,
                    (12, "users", "of a credential's actor"),
                )?,
                None => Vec::new(),
            },
        });
    }
    Ok((mark, read))
}
