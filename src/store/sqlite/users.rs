//! The SQL of user tracking: current users, their history, role changes with audit evidence, and
//! the log of syncs and invitation polls. Decisions (what changed, what matches what) are made in
//! `collect::users`; this module only reads and writes, each batch in one transaction.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::chain;
use super::domain_rules::{corrupt, parse_roles, parse_stored};
use super::{err, Sqlite};
use crate::domain::{
    RoleChangeKind, RoleChangeSource, UserRunKind, UserStatus, ACCEPT_SLACK_MS, FAILED_EVENT_STATUS,
};
use crate::store::chain::ChainKind;
use crate::store::{
    Evidence, Result, RoleChange, RoleEvent, StoredRoleChange, UserBatch, UserHistoryEntry,
    UserListing, UserRow, UserRun, UserStore,
};

fn opt_json(roles: &[String]) -> String {
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".into())
}

pub(super) const USER_COLUMNS: &str =
    "user_id, user_name, email, display_name, user_type, status, status_raw,
    roles, created_ms, last_login_ms, container, fingerprint, first_seen_ms, updated_ms,
    invited_ms, accepted_ms, accepted_after_ms, accepted_at_ms, deleted_ms, last_seen_ms";

/// A `users` row selected as [`USER_COLUMNS`] from column `at`; a status outside
/// [`UserStatus`] or roles that are not a JSON array of strings are a corrupt row.
pub(super) fn user_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<UserRow> {
    let user_id: String = r.get(at)?;
    let row = format!("user {user_id:?}");
    let roles: String = r.get(at + 7)?;
    let status: String = r.get(at + 5)?;
    Ok(UserRow {
        status: parse_stored(
            UserStatus::parse,
            &status,
            (at + 5, "users", &row, "status"),
        )?,
        roles: parse_roles(&roles, (at + 7, "users", &row))?,
        user_id,
        user_name: r.get(at + 1)?,
        email: r.get(at + 2)?,
        display_name: r.get(at + 3)?,
        user_type: r.get(at + 4)?,
        status_raw: r.get(at + 6)?,
        created_ms: r.get(at + 8)?,
        last_login_ms: r.get(at + 9)?,
        container: r.get(at + 10)?,
        raw: String::new(),
        fingerprint: r.get(at + 11)?,
        first_seen_ms: r.get(at + 12)?,
        updated_ms: r.get(at + 13)?,
        invited_ms: r.get(at + 14)?,
        accepted_ms: r.get(at + 15)?,
        accepted_after_ms: r.get(at + 16)?,
        accepted_at_ms: r.get(at + 17)?,
        deleted_ms: r.get(at + 18)?,
        last_seen_ms: r.get(at + 19)?,
        privileged: false,
    })
}

impl UserStore for Sqlite {
    /// Every stored user of an account (deleted ones included), by id; `raw` is not loaded.
    fn load_users(&self, account: &str) -> Result<HashMap<String, UserRow>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE account = ?1"
            ))
            .map_err(|e| self.err("load users", e))?;
        let rows = st
            .query_map(params![account], |r| user_from_row(r, 0))
            .map_err(|e| self.err("load users", e))?;
        let mut out = HashMap::new();
        for row in rows {
            let u = row.map_err(|e| self.err("load users", e))?;
            out.insert(u.user_id.clone(), u);
        }
        Ok(out)
    }

    /// The stored rows of `ids` in an account (deleted ones included; `raw` is not loaded). A user
    /// sync compares one page at a time with this, so memory follows the page size, not the
    /// number of users.
    fn users_by_id(&self, account: &str, ids: &[&str]) -> Result<HashMap<String, UserRow>> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE account = ?1 AND user_id = ?2"
            ))
            .map_err(|e| self.err("load users", e))?;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(u) = st
                .query_row(params![account, id], |r| user_from_row(r, 0))
                .optional()
                .map_err(|e| self.err("load users", e))?
            {
                out.insert(u.user_id.clone(), u);
            }
        }
        Ok(out)
    }

    /// Start a listing: forget the ids listed by the previous one. The listed ids live in a
    /// temporary table of this connection (on disk, in SQLite's temp file, paged through its
    /// cache), so a listing of any size holds none of them in memory.
    fn begin_listing(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS listed_users (user_id TEXT PRIMARY KEY) WITHOUT ROWID;
                 CREATE TEMP TABLE IF NOT EXISTS staged_users (pos INTEGER PRIMARY KEY, raw TEXT NOT NULL);
                 DELETE FROM temp.listed_users;
                 DELETE FROM temp.staged_users;",
            )
            .map_err(|e| self.err("begin listing", e))
    }

    /// Note `ids` as listed in the current listing; for each, whether it is new to the listing
    /// (false: served twice).
    fn mark_listed(&mut self, ids: &[&str]) -> Result<Vec<bool>> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| err(&path, "begin", e))?;
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut st = tx
                .prepare_cached("INSERT OR IGNORE INTO temp.listed_users (user_id) VALUES (?1)")
                .map_err(|e| err(&path, "mark listed", e))?;
            for id in ids {
                out.push(
                    st.execute(params![id])
                        .map_err(|e| err(&path, "mark listed", e))?
                        == 1,
                );
            }
        }
        tx.commit().map_err(|e| err(&path, "commit listed", e))?;
        Ok(out)
    }

    fn stage_new_users(&mut self, raws: &[&str]) -> Result<()> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| err(&path, "begin", e))?;
        {
            let mut st = tx
                .prepare_cached("INSERT INTO temp.staged_users (raw) VALUES (?1)")
                .map_err(|e| err(&path, "stage users", e))?;
            for raw in raws {
                st.execute(params![raw])
                    .map_err(|e| err(&path, "stage users", e))?;
            }
        }
        tx.commit()
            .map_err(|e| err(&path, "commit staged users", e))
    }

    fn staged_users(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT pos, raw FROM temp.staged_users WHERE pos > ?1 ORDER BY pos LIMIT ?2",
            )
            .map_err(|e| self.err("staged users", e))?;
        let rows = st
            .query_map(params![after, limit], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err("staged users", e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err("staged users", e))
    }

    /// Up to `limit` ids, in id order after `after`, of the account's users not deleted and not in
    /// the current listing: the users a complete listing missed, a chunk at a time.
    fn unlisted_users(&self, account: &str, after: &str, limit: u32) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT user_id FROM users
                 WHERE account = ?1 AND user_id > ?2 AND deleted_ms IS NULL
                   AND user_id NOT IN (SELECT user_id FROM temp.listed_users)
                 ORDER BY user_id LIMIT ?3",
            )
            .map_err(|e| self.err("unlisted users", e))?;
        let rows = st
            .query_map(params![account, after, limit], |r| r.get(0))
            .map_err(|e| self.err("unlisted users", e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err("unlisted users", e))
    }

    /// Ids of the account's users waiting on an invitation (not deleted), in id order.
    fn invited_user_ids(&self, account: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT user_id FROM users
                 WHERE account = ?1 AND status = 'invited' AND deleted_ms IS NULL ORDER BY user_id",
            )
            .map_err(|e| self.err("invited users", e))?;
        let rows = st
            .query_map(params![account], |r| r.get(0))
            .map_err(|e| self.err("invited users", e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| self.err("invited users", e))
    }

    /// (invited users not deleted, those among them invited before `stale_before_ms`).
    fn invite_counts(&self, account: &str, stale_before_ms: i64) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(COALESCE(invited_ms, first_seen_ms) < ?2), 0)
                 FROM users WHERE account = ?1 AND status = 'invited' AND deleted_ms IS NULL",
                params![account, stale_before_ms],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err("invite counts", e))
    }

    /// Write one batch of user changes in one transaction; returns the rows written.
    fn write_user_batch(&mut self, account: &str, b: &UserBatch) -> Result<u64> {
        if b.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let tx = self.write_tx().map_err(|e| err(&path, "begin", e))?;
        let mut n = 0u64;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO users (account, user_id, user_name, email, display_name, user_type,
                        status, status_raw, roles, created_ms, last_login_ms, container, raw,
                        fingerprint, first_seen_ms, updated_ms, invited_ms, accepted_ms,
                        accepted_after_ms, accepted_at_ms, deleted_ms, last_seen_ms, privileged)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                        ?17, ?18, ?19, ?20, ?21, ?22, ?23)
                     ON CONFLICT (account, user_id) DO UPDATE SET user_name = excluded.user_name,
                        email = excluded.email, display_name = excluded.display_name,
                        user_type = excluded.user_type, status = excluded.status,
                        status_raw = excluded.status_raw, roles = excluded.roles,
                        created_ms = excluded.created_ms, last_login_ms = excluded.last_login_ms,
                        container = excluded.container, raw = excluded.raw,
                        fingerprint = excluded.fingerprint, updated_ms = excluded.updated_ms,
                        invited_ms = excluded.invited_ms, accepted_ms = excluded.accepted_ms,
                        accepted_after_ms = excluded.accepted_after_ms,
                        accepted_at_ms = excluded.accepted_at_ms, deleted_ms = excluded.deleted_ms,
                        last_seen_ms = excluded.last_seen_ms, privileged = excluded.privileged",
                )
                .map_err(|e| err(&path, "prepare user upsert", e))?;
            for u in &b.rows {
                n += up
                    .execute(params![
                        account,
                        u.user_id,
                        u.user_name,
                        u.email,
                        u.display_name,
                        u.user_type,
                        u.status,
                        u.status_raw,
                        opt_json(&u.roles),
                        u.created_ms,
                        u.last_login_ms,
                        u.container,
                        u.raw,
                        u.fingerprint,
                        u.first_seen_ms,
                        u.updated_ms,
                        u.invited_ms,
                        u.accepted_ms,
                        u.accepted_after_ms,
                        u.accepted_at_ms,
                        u.deleted_ms,
                        u.last_seen_ms,
                        u.privileged
                    ])
                    .map_err(|e| err(&path, "upsert user", e))? as u64;
            }
            let mut del = tx
                .prepare_cached(
                    "UPDATE users SET status = 'deleted', deleted_ms = ?3, last_seen_ms = ?4,
                        updated_ms = ?3 WHERE account = ?1 AND user_id = ?2",
                )
                .map_err(|e| err(&path, "prepare deletion", e))?;
            for d in &b.deletions {
                n += del
                    .execute(params![account, d.user_id, d.deleted_ms, d.last_seen_ms])
                    .map_err(|e| err(&path, "mark deleted", e))? as u64;
            }
            let mut hist = tx
                .prepare_cached(
                    "INSERT INTO user_history (account, user_id, observed_ms, after_ms, field,
                        before, after, detail, source, chain_n, chain_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(|e| err(&path, "prepare history", e))?;
            // History rows extend the account's user-history chain in this same transaction.
            let mut head = if b.history.is_empty() {
                None
            } else {
                Some(
                    chain::load_head(&tx, ChainKind::UserHistory, account)
                        .map_err(|e| err(&path, "read chain head", e))?,
                )
            };
            for h in &b.history {
                let Some(head) = head.as_mut() else { break };
                *head = head.next(&crate::store::chain::history_bytes(
                    &h.user_id,
                    h.observed_ms,
                    h.after_ms,
                    h.field.as_str(),
                    h.before.as_deref(),
                    h.after.as_deref(),
                    h.detail.as_deref(),
                    h.source.as_str(),
                ));
                n += hist
                    .execute(params![
                        account,
                        h.user_id,
                        h.observed_ms,
                        h.after_ms,
                        h.field,
                        h.before,
                        h.after,
                        h.detail,
                        h.source,
                        head.n,
                        &head.hash[..]
                    ])
                    .map_err(|e| err(&path, "insert history", e))? as u64;
            }
            if let Some(head) = head {
                chain::save_head(&tx, ChainKind::UserHistory, account, &head)
                    .map_err(|e| err(&path, "write chain head", e))?;
            }
            n += insert_role_changes(&tx, &path, account, &b.role_changes)?;
        }
        tx.commit().map_err(|e| err(&path, "commit users", e))?;
        Ok(n)
    }

    /// Audit events after `after_seq` that may carry role details, in insertion order.
    fn role_events_after(&self, account: &str, after_seq: i64) -> Result<Vec<RoleEvent>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, resource_id, data, event_id, ts_ms, actor_id, actor_name, ip_address
                 FROM events WHERE seq > ?2 AND account = ?1
                   AND resource_type IN ('user', 'service_user') AND action IN ('create', 'update')
                   AND data IS NOT NULL AND resource_id IS NOT NULL
                   AND COALESCE(status, 'success') <> ?3
                 ORDER BY seq",
            )
            .map_err(|e| self.err("role events", e))?;
        let rows = st
            .query_map(params![account, after_seq, FAILED_EVENT_STATUS], |r| {
                Ok(RoleEvent {
                    seq: r.get(0)?,
                    user_id: r.get(1)?,
                    data: r.get(2)?,
                    evidence: Evidence {
                        event_id: r.get(3)?,
                        event_ms: r.get(4)?,
                        actor_id: r.get(5)?,
                        actor_name: r.get(6)?,
                        ip_address: r.get(7)?,
                    },
                })
            })
            .map_err(|e| self.err("role events", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("role events", e))
    }

    /// How far the account's audit events have been matched to role changes.
    fn role_event_watermark(&self, account: &str) -> Result<i64> {
        Ok(self
            .conn
            .query_row(
                "SELECT last_seq FROM role_event_scan WHERE account = ?1",
                params![account],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("role watermark", e))?
            .unwrap_or(0))
    }

    /// Role changes seen in snapshots that no audit event explains yet.
    fn open_role_changes(&self, account: &str) -> Result<Vec<StoredRoleChange>> {
        self.read_role_changes(
            "WHERE account = ?1 AND event_id IS NULL AND observed_ms IS NOT NULL",
            account,
            None,
        )
    }

    /// An account's role changes (of one user, if given) in the order they were established.
    fn role_changes(&self, account: &str, user: Option<&str>) -> Result<Vec<StoredRoleChange>> {
        self.read_role_changes(
            "WHERE account = ?1 AND (?2 IS NULL OR user_id = ?2)",
            account,
            user,
        )
    }

    /// Whether an audit event already proves this role change.
    fn role_change_has_event(
        &self,
        account: &str,
        event_id: &str,
        user_id: &str,
        role: &str,
        change: RoleChangeKind,
    ) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT 1 FROM role_changes WHERE account = ?1 AND event_id = ?2 AND user_id = ?3
                    AND role = ?4 AND change = ?5",
                params![account, event_id, user_id, role, change.as_str()],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err("role change lookup", e))
    }

    /// Attach audit evidence to snapshot role changes, add changes only the audit log saw, and
    /// move the account's scan watermark, in one transaction. Returns the rows written.
    fn write_role_links(
        &mut self,
        account: &str,
        attach: &[(i64, Evidence)],
        audit_only: &[RoleChange],
        watermark: i64,
    ) -> Result<u64> {
        let path = self.path.clone();
        let tx = self.write_tx().map_err(|e| err(&path, "begin", e))?;
        let mut n = 0u64;
        {
            let mut up = tx
                .prepare_cached(
                    "UPDATE role_changes SET event_id = ?2, event_ms = ?3, actor_id = ?4,
                        actor_name = ?5, ip_address = ?6, source = 'snapshot+audit'
                     WHERE seq = ?1 AND event_id IS NULL",
                )
                .map_err(|e| err(&path, "prepare evidence", e))?;
            for (seq, ev) in attach {
                n += up
                    .execute(params![
                        seq,
                        ev.event_id,
                        ev.event_ms,
                        ev.actor_id,
                        ev.actor_name,
                        ev.ip_address
                    ])
                    .map_err(|e| err(&path, "attach evidence", e))? as u64;
            }
            n += insert_role_changes(&tx, &path, account, audit_only)?;
            let changed = tx
                .execute(
                    "INSERT INTO role_event_scan (account, last_seq) VALUES (?1, ?2)
                     ON CONFLICT (account) DO UPDATE SET last_seq = excluded.last_seq
                     WHERE last_seq <> excluded.last_seq",
                    params![account, watermark],
                )
                .map_err(|e| err(&path, "role watermark", e))?;
            n += changed as u64;
        }
        tx.commit()
            .map_err(|e| err(&path, "commit role links", e))?;
        Ok(n)
    }

    /// Log one user sync or poll.
    fn record_user_run(&mut self, r: &UserRun) -> Result<()> {
        let _turn = self
            .write_turn()
            .map_err(|e| self.err("record user run", e))?;
        self.conn
            .execute(
                "INSERT INTO user_runs (account, kind, started_ms, finished_ms, complete, listed,
                    changes, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    r.account,
                    r.kind,
                    r.started_ms,
                    r.finished_ms,
                    r.complete,
                    r.listed as i64,
                    r.changes as i64,
                    r.error
                ],
            )
            .map_err(|e| self.err("record user run", e))?;
        Ok(())
    }

    /// Start of the latest complete run of `kind` (`sync` or `poll`) of an account.
    fn last_complete_user_run(&self, account: &str, kind: UserRunKind) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT MAX(started_ms) FROM user_runs WHERE account = ?1 AND kind = ?2 AND complete = 1",
                params![account, kind.as_str()],
                |r| r.get(0),
            )
            .map_err(|e| self.err("last user run", e))
    }

    /// Users of one account (or all), with each user's latest successful audit event as actor.
    fn list_users(&self, account: Option<&str>) -> Result<Vec<UserListing>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT account, {USER_COLUMNS},
                    (SELECT e.seq FROM events e WHERE e.account = users.account
                        AND e.actor_id = users.user_id AND COALESCE(e.status, '') <> ?3
                        ORDER BY e.ts_ms DESC LIMIT 1) AS last_seq,
                    (SELECT e.seq FROM events e WHERE users.accepted_ms IS NOT NULL
                        AND e.account = users.account AND e.actor_id = users.user_id
                        AND e.action = 'login' AND COALESCE(e.status, '') <> ?3
                        AND e.ts_ms BETWEEN COALESCE(users.accepted_after_ms, 0) - ?2
                            AND users.accepted_ms + ?2
                        ORDER BY e.ts_ms LIMIT 1) AS accept_seq
                 FROM users WHERE (?1 IS NULL OR account = ?1) ORDER BY account, user_id"
            ))
            .map_err(|e| self.err("list users", e))?;
        let rows = st
            .query_map(
                params![account, ACCEPT_SLACK_MS, FAILED_EVENT_STATUS],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        user_from_row(r, 1)?,
                        r.get::<_, Option<i64>>(21)?,
                        r.get::<_, Option<i64>>(22)?,
                    ))
                },
            )
            .map_err(|e| self.err("list users", e))?;
        let mut ev = self
            .conn
            .prepare("SELECT ts_ms, event_id FROM events WHERE seq = ?1")
            .map_err(|e| self.err("last event", e))?;
        let mut out = Vec::new();
        let mut event = |seq: Option<i64>| -> Result<Option<(i64, String)>> {
            match seq {
                Some(s) => ev
                    .query_row(params![s], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(|e| err(&self.path, "event", e)),
                None => Ok(None),
            }
        };
        for row in rows {
            let (account, user, last_seq, accept_seq) =
                row.map_err(|e| self.err("list users", e))?;
            out.push(UserListing {
                account,
                user,
                last_event: event(last_seq)?,
                accept_event: event(accept_seq)?,
            });
        }
        Ok(out)
    }

    /// One user's history rows in order: (observed, after, field, before, after, detail, source).
    #[allow(clippy::type_complexity)]
    fn user_history(&self, account: &str, user_id: &str) -> Result<Vec<UserHistoryEntry>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT observed_ms, after_ms, field, before, after, detail, source FROM user_history
                 WHERE account = ?1 AND user_id = ?2 ORDER BY seq",
            )
            .map_err(|e| self.err("user history", e))?;
        let rows = st
            .query_map(params![account, user_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(|e| self.err("user history", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("user history", e))
    }
}

impl Sqlite {
    fn read_role_changes(
        &self,
        filter: &str,
        account: &str,
        user: Option<&str>,
    ) -> Result<Vec<StoredRoleChange>> {
        let two = filter.contains("?2");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT seq, user_id, role, change, observed_ms, after_ms, event_id, event_ms,
                    actor_id, actor_name, ip_address, source FROM role_changes {filter} ORDER BY seq"
            ))
            .map_err(|e| self.err("role changes", e))?;
        let map = role_change_from_row;
        let rows = if two {
            st.query_map(params![account, user], map)
        } else {
            st.query_map(params![account], map)
        }
        .map_err(|e| self.err("role changes", e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err("role changes", e))
    }
}

fn insert_role_changes(
    tx: &rusqlite::Transaction<'_>,
    path: &std::path::Path,
    account: &str,
    changes: &[RoleChange],
) -> Result<u64> {
    let mut ins = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO role_changes (account, user_id, role, change, observed_ms,
                after_ms, event_id, event_ms, actor_id, actor_name, ip_address, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(|e| err(path, "prepare role change", e))?;
    let mut n = 0u64;
    for c in changes {
        let ev = c.evidence.as_ref();
        let source = match (c.observed_ms.is_some(), ev.is_some()) {
            (true, true) => RoleChangeSource::SnapshotAndAudit,
            (true, false) => RoleChangeSource::Snapshot,
            _ => RoleChangeSource::Audit,
        };
        n += ins
            .execute(params![
                account,
                c.user_id,
                c.role,
                c.change,
                c.observed_ms,
                c.after_ms,
                ev.map(|e| &e.event_id),
                ev.map(|e| e.event_ms),
                ev.and_then(|e| e.actor_id.as_ref()),
                ev.and_then(|e| e.actor_name.as_ref()),
                ev.and_then(|e| e.ip_address.as_ref()),
                source
            ])
            .map_err(|e| err(path, "insert role change", e))? as u64;
    }
    Ok(n)
}

/// A `role_changes` row selected as `seq, user_id, role, change, observed_ms, after_ms, event_id,
/// event_ms, actor_id, actor_name, ip_address, source` (columns 0 to 11, in that order).
pub(super) fn role_change_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRoleChange> {
    let event_id: Option<String> = r.get(6)?;
    let evidence = match event_id {
        Some(event_id) => Some(Evidence {
            // Evidence is written with its event's time: without one the row is corrupt, not 1970.
            event_ms: r.get::<_, Option<i64>>(7)?.ok_or_else(|| {
                let seq = r.get::<_, i64>(0).unwrap_or_default();
                corrupt(7, "role_changes", &format!("seq {seq}"), "event_ms", "NULL")
            })?,
            event_id,
            actor_id: r.get(8)?,
            actor_name: r.get(9)?,
            ip_address: r.get(10)?,
        }),
        None => None,
    };
    let seq: i64 = r.get(0)?;
    let row = format!("seq {seq}");
    let change: String = r.get(3)?;
    let source: String = r.get(11)?;
    Ok(StoredRoleChange {
        seq,
        user_id: r.get(1)?,
        role: r.get(2)?,
        change: parse_stored(
            RoleChangeKind::parse,
            &change,
            (3, "role_changes", &row, "change"),
        )?,
        observed_ms: r.get(4)?,
        after_ms: r.get(5)?,
        evidence,
        source: parse_stored(
            RoleChangeSource::parse,
            &source,
            (11, "role_changes", &row, "source"),
        )?,
    })
}
