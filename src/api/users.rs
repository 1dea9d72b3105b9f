//! User objects of both APIs (contract 1.4 and 2.2), parsed leniently into one [`WireUser`].
//!
//! DigiCert ONE lists users as a bare array (or the audit-log envelope), with uppercase statuses and
//! roles as codes or as objects; CertCentral wraps them in `{"users": [...], "page": {...}}`, with
//! lowercase statuses, integer ids, `access_roles` objects, `last_login_date` and a `container`.
//! Statuses are normalized to [`UserStatus`] with the raw value kept; a status or a role shape that
//! is not understood is kept as a string and counted, never fatal. A user without an id cannot be
//! tracked and becomes a [`Malformed`] item. Also here: the `roles.added/removed` details of an
//! audit event's `data` (contract 1.3), because only this module knows DigiCert's JSON.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::client::Client;
use super::error::ApiError;
use super::settings::AccountKind;
use super::wire::{first_char, preview, split_list, Malformed};

pub use crate::domain::UserStatus;

/// Normalize a raw API status. `PENDING` (DigiCert ONE) and `invited`/`pending` (CertCentral)
/// are invitations not yet accepted; CertCentral's `inactive` is a disabled user.
pub fn status_from_raw(raw: &str) -> UserStatus {
    match raw.trim().to_ascii_lowercase().as_str() {
        "active" | "enabled" => UserStatus::Active,
        "invited" | "pending" => UserStatus::Invited,
        "locked" => UserStatus::Locked,
        "disabled" | "inactive" | "deactivated" => UserStatus::Disabled,
        "expired" => UserStatus::Expired,
        "deleted" => UserStatus::Deleted,
        _ => UserStatus::Unknown,
    }
}

/// One user as served, normalized; `raw` is its JSON exactly as received.
#[derive(Debug, Clone, PartialEq)]
pub struct WireUser {
    /// UUID (DigiCert ONE) or integer (CertCentral), as text.
    pub id: String,
    pub user_name: Option<String>,
    pub email: Option<String>,
    /// `first last`, or a service user's `friendly_name`.
    pub display_name: Option<String>,
    /// `standard`, `service`, or whatever the API says (CertCentral `type`).
    pub user_type: Option<String>,
    pub status: UserStatus,
    /// The status exactly as served ("" when absent).
    pub status_raw: String,
    /// Role codes (DigiCert ONE) or names (CertCentral), sorted, without repeats. A role whose shape
    /// is not understood is kept as its JSON text.
    pub roles: Vec<String>,
    /// Roles whose shape was not understood (kept as JSON text in `roles`).
    pub odd_roles: u32,
    pub created_at: Option<DateTime<Utc>>,
    /// The API's last sign-in (CertCentral `last_login_date`; DigiCert ONE has none).
    pub last_login: Option<DateTime<Utc>>,
    /// Division / container name (CertCentral `container`).
    pub container: Option<String>,
    pub raw: String,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // most items are users
pub enum ParsedUser {
    User(WireUser),
    Malformed(Malformed),
}

/// One page of a user list.
#[derive(Debug)]
pub struct UserPage {
    /// The server's total when it sends one (envelope); `None` for bare arrays.
    pub total: Option<u64>,
    pub items: Vec<ParsedUser>,
}

#[derive(Deserialize)]
struct CcEnvelope<'a> {
    #[serde(borrow, default)]
    users: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    page: Option<CcPage>,
}

#[derive(Deserialize)]
struct CcPage {
    #[serde(default)]
    total: Option<u64>,
}

/// `GET /account/api/v1/user`: a bare array of users, or the `{total, items}` envelope.
pub fn parse_one_user_page(body: &str) -> Result<UserPage, String> {
    let (total, raws) = split_list(body, "users")?;
    Ok(UserPage {
        total,
        items: raws.into_iter().map(|r| parse_user(r.get())).collect(),
    })
}

/// `GET /services/v2/user`: `{"users": [...], "page": {"total", ...}}`.
pub fn parse_cc_user_page(body: &str) -> Result<UserPage, String> {
    if first_char(body) != Some('{') {
        return Err(format!("expected a JSON object, got {}", preview(body)));
    }
    let env: CcEnvelope =
        serde_json::from_str(body).map_err(|e| format!("not a CertCentral user list: {e}"))?;
    let users = env
        .users
        .ok_or_else(|| "the response has no \"users\" array".to_string())?;
    Ok(UserPage {
        total: env.page.and_then(|p| p.total),
        items: users.into_iter().map(|r| parse_user(r.get())).collect(),
    })
}

/// `GET /user/{id}` of either API: one user object.
pub fn parse_single_user(body: &str) -> Result<ParsedUser, String> {
    if first_char(body) != Some('{') {
        return Err(format!("expected a JSON object, got {}", preview(body)));
    }
    // Reject broken JSON here (it is retried like a 5xx), rather than quarantining it.
    serde_json::from_str::<&RawValue>(body).map_err(|e| format!("not JSON: {e}"))?;
    Ok(parse_user(body.trim()))
}

/// A user that cannot be tracked, keyed like a malformed event: `sha256:` of its raw text.
fn malformed(raw: &str, reason: String) -> Malformed {
    use sha2::{Digest, Sha256};
    Malformed {
        key: format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes()))),
        raw: raw.to_string(),
        reason,
    }
}

/// A scalar as text: strings as they are, numbers and bools printed; anything else absent.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let s = v?.as_str()?;
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// One role of either shape: a code string, or an object with `code`, `name` or `id`.
fn role_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => ["code", "name", "id"]
            .iter()
            .find_map(|k| non_empty(text(o.get(*k)))),
        _ => None,
    }
}

/// Parse one user object of either API. Never fails: without an id it is [`Malformed`].
pub fn parse_user(raw: &str) -> ParsedUser {
    let v: Value = match serde_json::from_str(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return ParsedUser::Malformed(malformed(raw, "not a JSON object".into())),
        Err(e) => return ParsedUser::Malformed(malformed(raw, format!("not JSON: {e}"))),
    };
    let Some(id) = non_empty(text(v.get("id"))) else {
        return ParsedUser::Malformed(malformed(raw, "user without an id".into()));
    };
    let status_raw = text(v.get("status")).unwrap_or_default();
    let mut roles = Vec::new();
    let mut odd_roles = 0;
    // DigiCert ONE `roles`, CertCentral `access_roles`; either may be codes or objects.
    for key in ["roles", "access_roles"] {
        match v.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match role_name(item) {
                        Some(r) => roles.push(r),
                        None => {
                            odd_roles += 1;
                            roles.push(item.to_string());
                        }
                    }
                }
            }
            Some(other) => {
                odd_roles += 1;
                roles.push(other.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let first = non_empty(text(v.get("first_name")));
    let last = non_empty(text(v.get("last_name")));
    let display_name = match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(n), None) | (None, Some(n)) => Some(n),
        (None, None) => non_empty(text(v.get("friendly_name"))),
    };
    let container = match v.get("container") {
        Some(Value::Object(o)) => non_empty(text(o.get("name"))).or_else(|| text(o.get("id"))),
        other => non_empty(text(other)),
    };
    ParsedUser::User(WireUser {
        id,
        user_name: non_empty(text(v.get("user_name")).or_else(|| text(v.get("username")))),
        email: non_empty(text(v.get("email"))),
        display_name,
        user_type: non_empty(text(v.get("user_type")).or_else(|| text(v.get("type")))),
        status: status_from_raw(&status_raw),
        status_raw,
        roles,
        odd_roles,
        created_at: time(v.get("created_at")).or_else(|| time(v.get("date_created"))),
        last_login: time(v.get("last_login_date")),
        container,
        raw: raw.to_string(),
    })
}

/// The roles an audit event says were granted and revoked (contract 1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDelta {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// `{"roles": {"added": [...], "removed": [...]}}` from an event's `data` text; `None` when the
/// data says nothing about roles. Roles may be codes or objects, as in user objects.
pub fn parse_role_delta(data: &str) -> Option<RoleDelta> {
    let v: Value = serde_json::from_str(data).ok()?;
    let roles = v.get("roles")?.as_object()?;
    let list = |k: &str| -> Vec<String> {
        roles
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| role_name(r).unwrap_or_else(|| r.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let d = RoleDelta {
        added: list("added"),
        removed: list("removed"),
    };
    (!d.added.is_empty() || !d.removed.is_empty()).then_some(d)
}

/// A DigiCert ONE service user's `end_date` (contract 1.4), from the user object as stored: a day
/// (`YYYY-MM-DD`) or an RFC 3339 time (its UTC day). `None` when absent or not a date: the
/// credentials report then says the user has no known end date.
pub fn service_end_date(raw: &str) -> Option<chrono::NaiveDate> {
    let v: Value = serde_json::from_str(raw).ok()?;
    let s = v.get("end_date")?.as_str()?.trim();
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&Utc).date_naive())
        })
}

// ---- Requests: the user endpoints' paths and paging (contract 1.4 and 2.2) ------------------

/// A user-list page parser of one API.
type ParsePage = fn(&str) -> Result<UserPage, String>;

/// One user listing of an account, paged by `offset`/`limit`: DigiCert ONE lists standard and
/// service users separately (`GET /user?user_type=...`, a bare array or the envelope),
/// CertCentral all users at once (`GET /user`, the `page` envelope).
#[derive(Clone, Copy)]
pub struct UserList {
    user_type: Option<&'static str>,
    parse: ParsePage,
}

impl UserList {
    /// The listings that together serve every user of an account of `kind`, in order.
    pub fn all(kind: AccountKind) -> Vec<UserList> {
        match kind {
            AccountKind::DigicertOne => vec![
                UserList {
                    user_type: Some("standard"),
                    parse: parse_one_user_page,
                },
                UserList {
                    user_type: Some("service"),
                    parse: parse_one_user_page,
                },
            ],
            AccountKind::CertCentral => vec![UserList {
                user_type: None,
                parse: parse_cc_user_page,
            }],
        }
    }

    /// What to call it in messages: `users`, `standard users`, `service users`.
    pub fn name(&self) -> String {
        self.user_type
            .map_or("users".to_string(), |t| format!("{t} users"))
    }

    /// One page: at most `limit` users from `offset`.
    pub async fn page(
        &self,
        client: &Client,
        offset: u64,
        limit: u32,
    ) -> Result<UserPage, ApiError> {
        let mut query = vec![("offset", offset.to_string()), ("limit", limit.to_string())];
        if let Some(t) = self.user_type {
            query.push(("user_type", t.to_string()));
        }
        client.get("/user", &query, self.parse).await
    }
}

/// Whether an id can be put in a URL path as it is (ids are UUIDs or integers): others are
/// never requested.
pub fn id_is_path_safe(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && id != "."
        && id != ".."
}

/// `GET /user/{id}`: the user, or `None` on 404. An id that is not [`id_is_path_safe`] is not
/// requested (`None` would claim a 404, so it is an error).
pub async fn fetch_user(client: &Client, id: &str) -> Result<Option<ParsedUser>, ApiError> {
    if !id_is_path_safe(id) {
        return Err(ApiError::UnsafeId(preview(id)));
    }
    match client
        .get(&format!("/user/{id}"), &[], parse_single_user)
        .await
    {
        Ok(u) => Ok(Some(u)),
        Err(ApiError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    /// Only ids fit for a URL path as they are are requested: UUIDs and integers pass; empty,
    /// dot segments, separators, query or percent characters and overlong ids do not.
    #[test]
    fn only_path_safe_ids_are_requested() {
        for ok in ["3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e01", "12345", "a.b_c"] {
            assert!(id_is_path_safe(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".", "..", "a/b", "a?b", "%2e", "a b", long.as_str()] {
            assert!(!id_is_path_safe(bad), "{bad}");
        }
    }

    use super::*;

    fn user(raw: &str) -> WireUser {
        match parse_user(raw) {
            ParsedUser::User(u) => u,
            ParsedUser::Malformed(m) => panic!("malformed: {}", m.reason),
        }
    }

    /// DigiCert ONE: uppercase statuses, roles as codes or objects, service users' friendly names.
    #[test]
    fn digicert_one_users_in_both_role_shapes() {
        let a = user(
            r#"{"id":"u-1","user_name":"=cmd","email":"a@x","first_name":"A","last_name":"B","status":"PENDING","user_type":"standard","created_at":"2026-01-02T03:04:05Z","roles":["TLM_ADMIN","AM_ACCOUNT_ADMIN","AM_ACCOUNT_ADMIN"]}"#,
        );
        assert_eq!(a.status, UserStatus::Invited);
        assert_eq!(a.status_raw, "PENDING");
        assert_eq!(a.roles, vec!["AM_ACCOUNT_ADMIN", "TLM_ADMIN"]);
        assert_eq!(a.user_name.as_deref(), Some("=cmd"));
        assert_eq!(a.display_name.as_deref(), Some("A B"));
        assert!(a.created_at.is_some());
        let b = user(
            r#"{"id":"u-2","friendly_name":"bot","status":"SLEEPING","user_type":"service","roles":[{"id":"r1","code":"AM_VIEW_ONLY","name":"View"},{"weird":1},7]}"#,
        );
        assert_eq!(b.status, UserStatus::Unknown);
        assert_eq!(b.status_raw, "SLEEPING");
        assert_eq!(b.display_name.as_deref(), Some("bot"));
        assert_eq!(b.odd_roles, 2);
        assert!(b.roles.contains(&"AM_VIEW_ONLY".to_string()));
        assert!(b.roles.contains(&"7".to_string()));
        assert!(b.roles.contains(&"{\"weird\":1}".to_string()));
    }

    /// CertCentral: integer ids, lowercase statuses, access_roles, last_login_date, container.
    #[test]
    fn certcentral_users() {
        let page = parse_cc_user_page(
            r#"{"users":[{"id":100001,"username":"jo","status":"invited","access_roles":[{"id":1,"name":"Administrator"}],"container":{"id":7,"name":"Ops"},"type":"standard"},{"id":100002,"status":"active","last_login_date":"2026-03-01T10:00:00+01:00"},{"username":"noid"}],"page":{"total":3,"limit":100,"offset":0}}"#,
        )
        .unwrap();
        assert_eq!(page.total, Some(3));
        let ParsedUser::User(u) = &page.items[0] else {
            panic!()
        };
        assert_eq!(u.id, "100001");
        assert_eq!(u.status, UserStatus::Invited);
        assert_eq!(u.roles, vec!["Administrator"]);
        assert_eq!(u.container.as_deref(), Some("Ops"));
        let ParsedUser::User(u) = &page.items[1] else {
            panic!()
        };
        assert_eq!(
            u.last_login.unwrap().to_rfc3339(),
            "2026-03-01T09:00:00+00:00"
        );
        assert!(matches!(page.items[2], ParsedUser::Malformed(_)));
    }

    /// Envelope or bare array, and role deltas from audit data.
    #[test]
    fn pages_and_role_deltas() {
        assert_eq!(parse_one_user_page("[]").unwrap().total, None);
        let p =
            parse_one_user_page(r#"{"total":1,"items":[{"id":"x","status":"ACTIVE"}]}"#).unwrap();
        assert_eq!(p.total, Some(1));
        assert!(parse_one_user_page("[{\"id\":").is_err());
        let d = parse_role_delta(r#"{"roles":{"added":["A"],"removed":[{"code":"B"}]}}"#).unwrap();
        assert_eq!(d.added, vec!["A"]);
        assert_eq!(d.removed, vec!["B"]);
        assert_eq!(parse_role_delta(r#"{"method":"password"}"#), None);
        assert_eq!(parse_role_delta("not json"), None);
    }
}
