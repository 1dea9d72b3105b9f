//! The user directory, built from the store alone (never the network): `auditwarden users` as a
//! table, JSON or CSV, with each user's last activity and where it comes from, and the one-line
//! summaries of `sync-users`, `poll-invites` and the user part of `collect`.
//!
//! Last activity is the latest of the API's last sign-in (`last_login_date`, CertCentral) and the
//! user's latest successful audit event as actor (sign-ins and anything else they did), with its
//! source spelled out so a report can explain it. Every string is attacker-influenced: JSON keeps
//! it exact, CSV neutralizes formula starts (like `export`), the table escapes control characters.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::api::users::UserStatus;
use crate::collect::users::{is_stale_invite, UserSummary};
use crate::export::{neutralize, rfc3339};
use crate::store::{Store, StoreError, UserListing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsersFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// Which users to list.
#[derive(Debug, Clone)]
pub struct UsersQuery {
    pub account: Option<String>,
    /// `None`: everyone but deleted users.
    pub status: Option<UserStatus>,
    pub role: Option<String>,
    pub stale_invite_days: u32,
    pub now: DateTime<Utc>,
}

/// A user's last activity and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct LastActivity {
    pub at: DateTime<Utc>,
    /// `last_login_date` or `audit event <id> at <time>`.
    pub source: String,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn when(ms: Option<i64>) -> Option<String> {
    ms.map(|v| rfc3339(at(v)))
}

/// The latest of the API's last sign-in and the latest audit event the user acted in.
pub fn last_activity(l: &UserListing) -> Option<LastActivity> {
    let login = l.user.last_login_ms.map(|t| LastActivity {
        at: at(t),
        source: "last_login_date".into(),
    });
    let event = l.last_event.as_ref().map(|(t, id)| LastActivity {
        at: at(*t),
        source: format!("audit event {id} at {}", rfc3339(at(*t))),
    });
    match (login, event) {
        (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn selected(l: &UserListing, q: &UsersQuery) -> bool {
    let status_ok = match q.status {
        Some(s) => l.user.status == s,
        None => l.user.status != UserStatus::Deleted,
    };
    status_ok && q.role.as_ref().is_none_or(|r| l.user.roles.contains(r))
}

/// Write the users matching `q`; returns how many were written.
pub fn write_users(
    store: &Store,
    q: &UsersQuery,
    format: UsersFormat,
    out: &mut dyn Write,
) -> Result<u64, UsersError> {
    let users: Vec<UserListing> = store
        .list_users(q.account.as_deref())?
        .into_iter()
        .filter(|l| selected(l, q))
        .collect();
    match format {
        UsersFormat::Json => {
            let items: Vec<serde_json::Value> = users.iter().map(|l| user_json(l, q)).collect();
            serde_json::to_writer_pretty(&mut *out, &items).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        UsersFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(CSV_HEADER)?;
            for l in &users {
                let v = user_json(l, q);
                let cells: Vec<String> = CSV_HEADER
                    .iter()
                    .map(|k| match &v[*k] {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::String(s) => neutralize(s).into_owned(),
                        serde_json::Value::Array(a) => neutralize(
                            &a.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(";"),
                        )
                        .into_owned(),
                        other => other.to_string(),
                    })
                    .collect();
                w.write_record(&cells)?;
            }
            w.flush()?;
        }
        UsersFormat::Table => {
            writeln!(
                out,
                "{:<16} {:<38} {:<28} {:<9} {:<40} LAST ACTIVITY",
                "ACCOUNT", "ID", "USER", "STATUS", "ROLES"
            )?;
            for l in &users {
                let u = &l.user;
                let name = u
                    .user_name
                    .as_deref()
                    .or(u.display_name.as_deref())
                    .unwrap_or("");
                let mut status = u.status.as_str().to_string();
                if is_stale_invite(u, q.now, q.stale_invite_days) {
                    status.push_str(" (stale)");
                }
                let activity = match last_activity(l) {
                    Some(a) => format!("{} ({})", rfc3339(a.at), a.source),
                    None => "never seen active".into(),
                };
                writeln!(
                    out,
                    "{:<16} {:<38} {:<28} {:<9} {:<40} {}",
                    printable(&l.account),
                    printable(&u.user_id),
                    printable(name),
                    status,
                    printable(&u.roles.join(",")),
                    printable(&activity)
                )?;
            }
            writeln!(out, "{} user(s)", users.len())?;
        }
    }
    Ok(users.len() as u64)
}

const CSV_HEADER: &[&str] = &[
    "account",
    "id",
    "user_name",
    "display_name",
    "email",
    "user_type",
    "status",
    "status_raw",
    "roles",
    "container",
    "created",
    "last_login",
    "last_activity",
    "last_activity_source",
    "invited",
    "accepted",
    "accepted_source",
    "accepted_after",
    "invite_to_accept_secs",
    "stale_invite",
    "first_seen",
    "deleted",
    "last_seen",
];

/// When an invitation was accepted, and how that is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Acceptance {
    pub at_ms: i64,
    /// `last_login_date`, `audit event <id>` or `observed`.
    pub source: String,
    /// From the invitation to the acceptance, when the invitation time is known.
    pub to_accept_secs: Option<i64>,
}

/// The acceptance moment: the sign-in the API reported, else the first sign-in in the audit log
/// inside the window, else when it was observed.
pub fn acceptance(l: &UserListing) -> Option<Acceptance> {
    let u = &l.user;
    let (at_ms, source) = match (u.accepted_at_ms, &l.accept_event, u.accepted_ms) {
        (Some(t), _, _) => (t, "last_login_date".to_string()),
        (None, Some((t, id)), _) => (*t, format!("audit event {id}")),
        (None, None, Some(t)) => (t, "observed".to_string()),
        _ => return None,
    };
    // Server times have whole seconds and may trail our own clock a little: never negative.
    let to_accept_secs = u.invited_ms.map(|i| (at_ms - i).max(0) / 1000);
    Some(Acceptance {
        at_ms,
        source,
        to_accept_secs,
    })
}

fn user_json(l: &UserListing, q: &UsersQuery) -> serde_json::Value {
    let u = &l.user;
    let activity = last_activity(l);
    let (accepted, accepted_source, to_accept) = match acceptance(l) {
        Some(a) => (Some(a.at_ms), Some(a.source), a.to_accept_secs),
        None => (None, None, None),
    };
    json!({
        "account": l.account,
        "id": u.user_id,
        "user_name": u.user_name,
        "display_name": u.display_name,
        "email": u.email,
        "user_type": u.user_type,
        "status": u.status,
        "status_raw": u.status_raw,
        "roles": u.roles,
        "container": u.container,
        "created": when(u.created_ms),
        "last_login": when(u.last_login_ms),
        "last_activity": activity.as_ref().map(|a| rfc3339(a.at)),
        "last_activity_source": activity.map(|a| a.source),
        "invited": when(u.invited_ms),
        "accepted": when(accepted),
        "accepted_source": accepted_source,
        "accepted_after": when(u.accepted_after_ms),
        "invite_to_accept_secs": to_accept,
        "stale_invite": is_stale_invite(u, q.now, q.stale_invite_days),
        "first_seen": when(Some(u.first_seen_ms)),
        "deleted": when(u.deleted_ms),
        "last_seen": when(u.last_seen_ms),
    })
}

/// Control and bidirectional-override characters shown escaped, so a name cannot rewrite a line.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// One block per account: what a user sync or invitation poll did and what it cost.
pub fn print_user_summaries(out: &mut dyn Write, summaries: &[UserSummary]) -> std::io::Result<()> {
    for s in summaries {
        let secs = (s.finished - s.started).num_milliseconds() as f64 / 1000.0;
        let what = if s.kind == crate::domain::UserRunKind::Sync {
            "users"
        } else {
            "invitations"
        };
        let head = match &s.error {
            None => "ok".to_string(),
            Some(e) => format!("FAILED, {}", printable(e)),
        };
        writeln!(out, "{} {what}: {head}", s.account)?;
        if s.kind == crate::domain::UserRunKind::Sync {
            writeln!(
                out,
                "  {} listed, {} new, {} status changes, {} role changes ({} with audit evidence, {} from the audit log alone), {} deleted, {} reappeared",
                s.listed, s.new_users, s.status_changes, s.role_changes, s.evidence_attached, s.audit_only, s.deleted, s.reappeared
            )?;
        } else {
            writeln!(
                out,
                "  {} checked, {} accepted, {} vanished, {} still invited ({} stale)",
                s.listed, s.accepted, s.deleted, s.invited, s.stale_invites
            )?;
        }
        if s.unknown_statuses + s.odd_roles + s.malformed > 0 {
            writeln!(
                out,
                "  {} unknown statuses, {} roles of an unknown shape (kept as served), {} users without an id",
                s.unknown_statuses, s.odd_roles, s.malformed
            )?;
        }
        if let Some(why) = &s.incomplete {
            writeln!(
                out,
                "  incomplete, nobody marked deleted: {}",
                printable(why)
            )?;
        }
        writeln!(
            out,
            "  {} rows written; {} requests ({} retries) in {secs:.1}s",
            s.rows_written, s.requests, s.retries
        )?;
    }
    Ok(())
}

/// Which role changes to list.
#[derive(Debug, Clone)]
pub struct RoleChangesQuery {
    pub accounts: Vec<String>,
    pub user: Option<String>,
    pub role: Option<String>,
}

/// When a role change happened, in words: the audit event's time, or the snapshot window.
pub fn role_change_when(c: &crate::store::StoredRoleChange) -> String {
    match (&c.evidence, c.after_ms, c.observed_ms) {
        (Some(e), _, _) => rfc3339(at(e.event_ms)),
        (None, Some(t1), Some(t2)) => format!(
            "observed between {} and {}",
            rfc3339(at(t1)),
            rfc3339(at(t2))
        ),
        (None, None, Some(t2)) => format!("observed by {}", rfc3339(at(t2))),
        _ => "unknown".into(),
    }
}

/// Write the role changes matching `q` (oldest established first); returns how many.
pub fn write_role_changes(
    store: &Store,
    q: &RoleChangesQuery,
    format: UsersFormat,
    out: &mut dyn Write,
) -> Result<u64, UsersError> {
    let mut rows = Vec::new();
    for account in &q.accounts {
        let names: std::collections::HashMap<String, String> = store
            .list_users(Some(account))?
            .into_iter()
            .map(|l| {
                let n = l
                    .user
                    .user_name
                    .clone()
                    .or(l.user.display_name.clone())
                    .unwrap_or_default();
                (l.user.user_id, n)
            })
            .collect();
        for c in store.role_changes(account, q.user.as_deref())? {
            if q.role.as_ref().is_some_and(|r| *r != c.role) {
                continue;
            }
            let ev = c.evidence.as_ref();
            rows.push(json!({
                "account": account,
                "user_id": c.user_id,
                "user_name": names.get(&c.user_id),
                "role": c.role,
                "change": c.change,
                "when": role_change_when(&c),
                "observed_after": when(c.after_ms),
                "observed": when(c.observed_ms),
                "source": c.source,
                "event_id": ev.map(|e| e.event_id.clone()),
                "event_time": ev.map(|e| rfc3339(at(e.event_ms))),
                "actor_id": ev.and_then(|e| e.actor_id.clone()),
                "actor_name": ev.and_then(|e| e.actor_name.clone()),
                "ip_address": ev.and_then(|e| e.ip_address.clone()),
            }));
        }
    }
    const HEADER: &[&str] = &[
        "account",
        "user_id",
        "user_name",
        "role",
        "change",
        "when",
        "observed_after",
        "observed",
        "source",
        "event_id",
        "event_time",
        "actor_id",
        "actor_name",
        "ip_address",
    ];
    match format {
        UsersFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        UsersFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(HEADER)?;
            for r in &rows {
                let cells: Vec<String> = HEADER
                    .iter()
                    .map(|k| match &r[*k] {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::String(s) => neutralize(s).into_owned(),
                        other => other.to_string(),
                    })
                    .collect();
                w.write_record(&cells)?;
            }
            w.flush()?;
        }
        UsersFormat::Table => {
            for r in &rows {
                let s = |k: &str| printable(r[k].as_str().unwrap_or(""));
                let by = match r["actor_name"].as_str() {
                    Some(a) => {
                        let ip = s("ip_address");
                        format!(
                            " by {} from {} (event {})",
                            printable(a),
                            if ip.is_empty() {
                                "an unrecorded address".into()
                            } else {
                                ip
                            },
                            s("event_id")
                        )
                    }
                    None => String::new(),
                };
                writeln!(
                    out,
                    "{} {} ({}): {} {} {}{by}",
                    s("account"),
                    s("user_name"),
                    s("user_id"),
                    s("role"),
                    s("change"),
                    s("when"),
                )?;
            }
            writeln!(out, "{} role change(s)", rows.len())?;
        }
    }
    Ok(rows.len() as u64)
}
