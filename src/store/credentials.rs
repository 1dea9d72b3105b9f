//! The SQL of the credentials report (`report credentials`): the service users of an account
//! with their stored user object (the end date is in it; `api::users::service_end_date` reads
//! it), and the audit events about API tokens and client-authentication certificates, grouped by
//! credential. Both stream in report order, so memory stays flat.

use rusqlite::{params, OptionalExtension};

use super::users::{user_from_row, USER_COLUMNS};
use super::{Store, StoreError, UserRow};

/// One audit event about an API token or a client-authentication certificate.
#[derive(Debug, Clone)]
pub struct CredentialEvent {
    /// `api_token` or `client_auth_certificate`.
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub action: String,
    pub event_id: String,
    pub ts_ms: i64,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub ip_address: Option<String>,
    pub status: Option<String>,
}

impl Store {
    /// The current (not deleted) service users of `account`, with `raw`, by name then id.
    pub fn for_each_service_user<E: From<StoreError>>(
        &self,
        account: &str,
        mut f: impl FnMut(UserRow) -> Result<(), E>,
    ) -> Result<u64, E> {
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
            f(user)?;
            n += 1;
        }
        Ok(n)
    }

    /// The audit events of `account` about API tokens and client-auth certificates, grouped by
    /// credential (type, id, then name) and oldest first within one.
    pub fn for_each_credential_event<E: From<StoreError>>(
        &self,
        account: &str,
        mut f: impl FnMut(CredentialEvent) -> Result<(), E>,
    ) -> Result<u64, E> {
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
            f(ev)?;
            n += 1;
        }
        Ok(n)
    }

    /// The action of one stored event (the dormant report tells a sign-in from API use).
    pub fn event_action(
        &self,
        account: &str,
        event_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT action FROM events WHERE account = ?1 AND event_id = ?2",
                params![account, event_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("event action", e))
    }
}
