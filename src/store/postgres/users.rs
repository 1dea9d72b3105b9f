//! The PostgreSQL SQL of user tracking (the same reads and writes as SQLite's `users.rs`). A
//! user batch and a role-link step each take the account's `users` write lock first, so the
//! user-history chain and the `seq` order of role changes follow commit order.

use std::collections::HashMap;

use tokio_postgres::{Row, Transaction};

use super::{chain, col, lock_account, parse_roles, pg_err, Postgres, Wait};
use crate::domain::{RoleChangeKind, UserRunKind, ACCEPT_SLACK_MS};
use crate::store::chain::{history_bytes, ChainKind};
use crate::store::{
    Evidence, Result, RoleChange, RoleEvent, StoredRoleChange, UserBatch, UserHistoryEntry,
    UserListing, UserRow, UserRun, UserStore,
};

pub(super) const USER_COLUMNS: &str =
    "user_id, user_name, email, display_name, user_type, status, status_raw,
    roles, created_ms, last_login_ms, container, fingerprint, first_seen_ms, updated_ms,
    invited_ms, accepted_ms, accepted_after_ms, accepted_at_ms, deleted_ms, last_seen_ms";

pub(super) fn user_from_row(r: &Row, at: usize, location: &str) -> Result<UserRow> {
    let id: String = r.get(at);
    let row = format!("user {id:?}");
    let c = (location, "users", row.as_str());
    let roles: String = col(r, at + 7, c)?;
    Ok(UserRow {
        user_name: r.get(at + 1),
        email: r.get(at + 2),
        display_name: r.get(at + 3),
        user_type: r.get(at + 4),
        status: col(r, at + 5, c)?,
        status_raw: r.get(at + 6),
        roles: parse_roles(&roles, c)?,
        created_ms: r.get(at + 8),
        last_login_ms: r.get(at + 9),
        container: r.get(at + 10),
        raw: String::new(),
        fingerprint: r.get(at + 11),
        first_seen_ms: r.get(at + 12),
        updated_ms: r.get(at + 13),
        invited_ms: r.get(at + 14),
        accepted_ms: r.get(at + 15),
        accepted_after_ms: r.get(at + 16),
        accepted_at_ms: r.get(at + 17),
        deleted_ms: r.get(at + 18),
        last_seen_ms: r.get(at + 19),
        privileged: false,
        user_id: id,
    })
}

/// A `role_changes` row selected as `seq, user_id, role, change, observed_ms, after_ms,
/// event_id, event_ms, actor_id, actor_name, ip_address, source`.
pub(super) fn role_change_from_row(r: &Row, location: &str) -> Result<StoredRoleChange> {
    let seq: i64 = r.get(0);
    let row = format!("seq {seq}");
    let c = (location, "role_changes", row.as_str());
    let event_id: Option<String> = r.get(6);
    let evidence = match event_id {
        Some(event_id) => Some(Evidence {
            event_id,
            event_ms: col(r, 7, c)?,
            actor_id: r.get(8),
            actor_name: r.get(9),
            ip_address: r.get(10),
        }),
        None => None,
    };
    Ok(StoredRoleChange {
        seq,
        user_id: r.get(1),
        role: r.get(2),
        change: col(r, 3, c)?,
        observed_ms: r.get(4),
        after_ms: r.get(5),
        evidence,
        source: col(r, 11, c)?,
    })
}

const ROLE_CHANGE_COLUMNS: &str = "seq, user_id, role, change, observed_ms, after_ms, event_id,
    event_ms, actor_id, actor_name, ip_address, source";

impl UserStore for Postgres {
    fn load_users(&self, account: &str) -> Result<HashMap<String, UserRow>> {
        self.rows(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE account = $1"),
            &[&account],
            "load users",
        )?
        .iter()
        .map(|r| {
            let u = user_from_row(r, 0, &self.location)?;
            Ok((u.user_id.clone(), u))
        })
        .collect()
    }

    fn users_by_id(&self, account: &str, ids: &[&str]) -> Result<HashMap<String, UserRow>> {
        self.rows(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE account = $1 AND user_id = ANY($2)"),
            &[&account, &ids],
            "load users",
        )?
        .iter()
        .map(|r| {
            let u = user_from_row(r, 0, &self.location)?;
            Ok((u.user_id.clone(), u))
        })
        .collect()
    }

    /// The listed ids live in a temporary table of this connection (the server's, not memory).
    fn begin_listing(&self) -> Result<()> {
        self.session(
            "CREATE TEMP TABLE IF NOT EXISTS listed_users (user_id TEXT COLLATE \"C\" PRIMARY KEY);
             CREATE TEMP TABLE IF NOT EXISTS staged_users (pos BIGSERIAL PRIMARY KEY, raw TEXT NOT NULL);
             TRUNCATE listed_users, staged_users;",
        )
    }

    fn mark_listed(&mut self, ids: &[&str]) -> Result<Vec<bool>> {
        // One statement for the page; the ids that came back are the new ones. A page that
        // repeats an id lists it once, as new the first time only.
        let fresh: std::collections::HashSet<String> = self
            .rows(
                "INSERT INTO listed_users (user_id) SELECT DISTINCT unnest($1::text[])
                 ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
                &[&ids],
                "mark listed",
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut first = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .map(|id| fresh.contains(*id) && first.insert(*id))
            .collect())
    }

    fn stage_new_users(&mut self, raws: &[&str]) -> Result<()> {
        // One statement for the page; `ordinality` keeps the listing's order in `pos`.
        self.rows(
            "INSERT INTO staged_users (raw) SELECT r FROM unnest($1::text[]) WITH ORDINALITY AS t(r, n) ORDER BY n",
            &[&raws],
            "stage users",
        )?;
        Ok(())
    }

    fn staged_users(&self, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        Ok(self
            .rows(
                "SELECT pos, raw FROM staged_users WHERE pos > $1 ORDER BY pos LIMIT $2",
                &[&after, &i64::from(limit)],
                "staged users",
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    fn unlisted_users(&self, account: &str, after: &str, limit: u32) -> Result<Vec<String>> {
        Ok(self
            .rows(
                "SELECT user_id FROM users u
                 WHERE account = $1 AND user_id > $2 AND deleted_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM listed_users l WHERE l.user_id = u.user_id)
                 ORDER BY user_id LIMIT $3",
                &[&account, &after, &i64::from(limit)],
                "unlisted users",
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn invited_user_ids(&self, account: &str) -> Result<Vec<String>> {
        Ok(self
            .rows(
                "SELECT user_id FROM users
                 WHERE account = $1 AND status = 'invited' AND deleted_ms IS NULL ORDER BY user_id",
                &[&account],
                "invited users",
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn invite_counts(&self, account: &str, stale_before_ms: i64) -> Result<(u64, u64)> {
        let r = self.one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE COALESCE(invited_ms, first_seen_ms) < $2)
             FROM users WHERE account = $1 AND status = 'invited' AND deleted_ms IS NULL",
            &[&account, &stale_before_ms],
            "invite counts",
        )?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
    }

    fn write_user_batch(&mut self, account: &str, b: &UserBatch) -> Result<u64> {
        if b.is_empty() {
            return Ok(0);
        }
        let fence = self.fences.get(account).cloned();
        let (mut tx, location) = self.tx("begin")?;
        lock_account(&mut tx, location, "users", account)?;
        super::leases::check_fence(&tx, location, account, fence.as_ref())?;
        let mut n = 0u64;
        let up = tx
            .prepare(
                "INSERT INTO users (account, user_id, user_name, email, display_name, user_type,
                    status, status_raw, roles, created_ms, last_login_ms, container, raw,
                    fingerprint, first_seen_ms, updated_ms, invited_ms, accepted_ms,
                    accepted_after_ms, accepted_at_ms, deleted_ms, last_seen_ms, privileged)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    $17, $18, $19, $20, $21, $22, $23)
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
            .wait()
            .map_err(|e| pg_err(location, "prepare user upsert", e))?;
        for u in &b.rows {
            let roles = serde_json::to_string(&u.roles).unwrap_or_else(|_| "[]".into());
            n += tx
                .execute(
                    &up,
                    &[
                        &account,
                        &u.user_id,
                        &u.user_name,
                        &u.email,
                        &u.display_name,
                        &u.user_type,
                        &u.status,
                        &u.status_raw,
                        &roles,
                        &u.created_ms,
                        &u.last_login_ms,
                        &u.container,
                        &u.raw,
                        &u.fingerprint,
                        &u.first_seen_ms,
                        &u.updated_ms,
                        &u.invited_ms,
                        &u.accepted_ms,
                        &u.accepted_after_ms,
                        &u.accepted_at_ms,
                        &u.deleted_ms,
                        &u.last_seen_ms,
                        &u.privileged,
                    ],
                )
                .wait()
                .map_err(|e| pg_err(location, "upsert user", e))?;
        }
        for d in &b.deletions {
            n += tx
                .execute(
                    "UPDATE users SET status = 'deleted', deleted_ms = $3, last_seen_ms = $4,
                        updated_ms = $3 WHERE account = $1 AND user_id = $2",
                    &[&account, &d.user_id, &d.deleted_ms, &d.last_seen_ms],
                )
                .wait()
                .map_err(|e| pg_err(location, "mark deleted", e))?;
        }
        if !b.history.is_empty() {
            let mut head = chain::load_head(&mut tx, location, ChainKind::UserHistory, account)?;
            let hist = tx
                .prepare(
                    "INSERT INTO user_history (account, user_id, observed_ms, after_ms, field,
                        before, after, detail, source, chain_n, chain_hash)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .wait()
                .map_err(|e| pg_err(location, "prepare history", e))?;
            for h in &b.history {
                head = head.next(&history_bytes(
                    &h.user_id,
                    h.observed_ms,
                    h.after_ms,
                    h.field.as_str(),
                    h.before.as_deref(),
                    h.after.as_deref(),
                    h.detail.as_deref(),
                    h.source.as_str(),
                ));
                n += tx
                    .execute(
                        &hist,
                        &[
                            &account,
                            &h.user_id,
                            &h.observed_ms,
                            &h.after_ms,
                            &h.field,
                            &h.before,
                            &h.after,
                            &h.detail,
                            &h.source,
                            &head.n,
                            &&head.hash[..],
                        ],
                    )
                    .wait()
                    .map_err(|e| pg_err(location, "insert history", e))?;
            }
            chain::save_head(&mut tx, location, ChainKind::UserHistory, account, &head)?;
        }
        n += insert_role_changes(&mut tx, location, account, &b.role_changes)?;
        tx.commit()
            .wait()
            .map_err(|e| pg_err(location, "commit users", e))?;
        Ok(n)
    }

    fn role_events_after(&self, account: &str, after_seq: i64) -> Result<Vec<RoleEvent>> {
        Ok(self
            .rows(
                "SELECT seq, resource_id, data, event_id, ts_ms, actor_id, actor_name, ip_address
                 FROM events WHERE account = $1 AND seq > $2
                   AND resource_type IN ('user', 'service_user') AND action IN ('create', 'update')
                   AND data IS NOT NULL AND resource_id IS NOT NULL
                   AND COALESCE(status, 'success') <> 'failure'
                 ORDER BY seq",
                &[&account, &after_seq],
                "role events",
            )?
            .iter()
            .map(|r| RoleEvent {
                seq: r.get(0),
                user_id: r.get(1),
                data: r.get(2),
                evidence: Evidence {
                    event_id: r.get(3),
                    event_ms: r.get(4),
                    actor_id: r.get(5),
                    actor_name: r.get(6),
                    ip_address: r.get(7),
                },
            })
            .collect())
    }

    fn role_event_watermark(&self, account: &str) -> Result<i64> {
        Ok(self
            .opt(
                "SELECT last_seq FROM role_event_scan WHERE account = $1",
                &[&account],
                "role watermark",
            )?
            .map(|r| r.get(0))
            .unwrap_or(0))
    }

    fn open_role_changes(&self, account: &str) -> Result<Vec<StoredRoleChange>> {
        self
            .rows(
                &format!(
                    "SELECT {ROLE_CHANGE_COLUMNS} FROM role_changes
                     WHERE account = $1 AND event_id IS NULL AND observed_ms IS NOT NULL ORDER BY seq"
                ),
                &[&account],
                "role changes",
            )?
            .iter()
            .map(|r| role_change_from_row(r, &self.location))
            .collect()
    }

    fn role_changes(&self, account: &str, user: Option<&str>) -> Result<Vec<StoredRoleChange>> {
        self.rows(
            &format!(
                "SELECT {ROLE_CHANGE_COLUMNS} FROM role_changes
                     WHERE account = $1 AND ($2::text IS NULL OR user_id = $2) ORDER BY seq"
            ),
            &[&account, &user],
            "role changes",
        )?
        .iter()
        .map(|r| role_change_from_row(r, &self.location))
        .collect()
    }

    fn role_change_has_event(
        &self,
        account: &str,
        event_id: &str,
        user_id: &str,
        role: &str,
        change: RoleChangeKind,
    ) -> Result<bool> {
        Ok(self
            .opt(
                "SELECT 1 FROM role_changes WHERE account = $1 AND event_id = $2 AND user_id = $3
                    AND role = $4 AND change = $5",
                &[&account, &event_id, &user_id, &role, &change],
                "role change lookup",
            )?
            .is_some())
    }

    fn write_role_links(
        &mut self,
        account: &str,
        attach: &[(i64, Evidence)],
        audit_only: &[RoleChange],
        watermark: i64,
    ) -> Result<u64> {
        let fence = self.fences.get(account).cloned();
        let (mut tx, location) = self.tx("begin")?;
        lock_account(&mut tx, location, "users", account)?;
        super::leases::check_fence(&tx, location, account, fence.as_ref())?;
        let mut n = 0u64;
        for (seq, ev) in attach {
            n += tx
                .execute(
                    "UPDATE role_changes SET event_id = $2, event_ms = $3, actor_id = $4,
                        actor_name = $5, ip_address = $6, source = 'snapshot+audit'
                     WHERE seq = $1 AND event_id IS NULL",
                    &[
                        seq,
                        &ev.event_id,
                        &ev.event_ms,
                        &ev.actor_id,
                        &ev.actor_name,
                        &ev.ip_address,
                    ],
                )
                .wait()
                .map_err(|e| pg_err(location, "attach evidence", e))?;
        }
        n += insert_role_changes(&mut tx, location, account, audit_only)?;
        n += tx
            .execute(
                "INSERT INTO role_event_scan (account, last_seq) VALUES ($1, $2)
                 ON CONFLICT (account) DO UPDATE SET last_seq = excluded.last_seq
                 WHERE role_event_scan.last_seq <> excluded.last_seq",
                &[&account, &watermark],
            )
            .wait()
            .map_err(|e| pg_err(location, "role watermark", e))?;
        tx.commit()
            .wait()
            .map_err(|e| pg_err(location, "commit role links", e))?;
        Ok(n)
    }

    fn record_user_run(&mut self, r: &UserRun) -> Result<()> {
        self.exec(
            "INSERT INTO user_runs (account, kind, started_ms, finished_ms, complete, listed,
                changes, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &r.account,
                &r.kind,
                &r.started_ms,
                &r.finished_ms,
                &r.complete,
                &(r.listed as i64),
                &(r.changes as i64),
                &r.error,
            ],
            "record user run",
        )?;
        Ok(())
    }

    fn last_complete_user_run(&self, account: &str, kind: UserRunKind) -> Result<Option<i64>> {
        Ok(self
            .one(
                "SELECT MAX(started_ms) FROM user_runs WHERE account = $1 AND kind = $2 AND complete",
                &[&account, &kind],
                "last user run",
            )?
            .get(0))
    }

    fn list_users(&self, account: Option<&str>) -> Result<Vec<UserListing>> {
        let cols: Vec<String> = USER_COLUMNS
            .split(',')
            .map(|c| format!("u.{}", c.trim()))
            .collect();
        let cols = cols.join(", ");
        let rows = self.rows(
            &format!(
                "SELECT u.account, {cols}, le.ts_ms, le.event_id, ae.ts_ms, ae.event_id
                 FROM users u
                 LEFT JOIN LATERAL (SELECT e.ts_ms, e.event_id FROM events e
                    WHERE e.account = u.account AND e.actor_id = u.user_id
                      AND COALESCE(e.status, '') <> 'failure'
                    ORDER BY e.ts_ms DESC LIMIT 1) le ON TRUE
                 LEFT JOIN LATERAL (SELECT e.ts_ms, e.event_id FROM events e
                    WHERE u.accepted_ms IS NOT NULL AND e.account = u.account
                      AND e.actor_id = u.user_id AND e.action = 'login'
                      AND COALESCE(e.status, '') <> 'failure'
                      AND e.ts_ms BETWEEN COALESCE(u.accepted_after_ms, 0) - $2
                          AND u.accepted_ms + $2
                    ORDER BY e.ts_ms LIMIT 1) ae ON TRUE
                 WHERE ($1::text IS NULL OR u.account = $1) ORDER BY u.account, u.user_id"
            ),
            &[&account, &ACCEPT_SLACK_MS],
            "list users",
        )?;
        rows.iter()
            .map(|r| {
                Ok(UserListing {
                    account: r.get(0),
                    user: user_from_row(r, 1, &self.location)?,
                    last_event: r
                        .get::<_, Option<i64>>(21)
                        .zip(r.get::<_, Option<String>>(22)),
                    accept_event: r
                        .get::<_, Option<i64>>(23)
                        .zip(r.get::<_, Option<String>>(24)),
                })
            })
            .collect()
    }

    fn user_history(&self, account: &str, user_id: &str) -> Result<Vec<UserHistoryEntry>> {
        Ok(self
            .rows(
                "SELECT observed_ms, after_ms, field, before, after, detail, source FROM user_history
                 WHERE account = $1 AND user_id = $2 ORDER BY seq",
                &[&account, &user_id],
                "user history",
            )?
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect())
    }
}

fn insert_role_changes(
    tx: &mut Transaction<'_>,
    location: &str,
    account: &str,
    changes: &[RoleChange],
) -> Result<u64> {
    if changes.is_empty() {
        return Ok(0);
    }
    let ins = tx
        .prepare(
            "INSERT INTO role_changes (account, user_id, role, change, observed_ms,
                after_ms, event_id, event_ms, actor_id, actor_name, ip_address, source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT DO NOTHING",
        )
        .wait()
        .map_err(|e| pg_err(location, "prepare role change", e))?;
    let mut n = 0u64;
    for c in changes {
        let ev = c.evidence.as_ref();
        let source = match (c.observed_ms.is_some(), ev.is_some()) {
            (true, true) => "snapshot+audit",
            (true, false) => "snapshot",
            _ => "audit",
        };
        n += tx
            .execute(
                &ins,
                &[
                    &account,
                    &c.user_id,
                    &c.role,
                    &c.change,
                    &c.observed_ms,
                    &c.after_ms,
                    &ev.map(|e| e.event_id.as_str()),
                    &ev.map(|e| e.event_ms),
                    &ev.and_then(|e| e.actor_id.as_deref()),
                    &ev.and_then(|e| e.actor_name.as_deref()),
                    &ev.and_then(|e| e.ip_address.as_deref()),
                    &source,
                ],
            )
            .wait()
            .map_err(|e| pg_err(location, "insert role change", e))?;
    }
    Ok(n)
}
