//! The shared vocabulary: the closed sets of states that every layer stores, shows and decides on,
//! and the rules about them, each written once. A leaf: it imports nothing from the crate, so
//! `api` maps wire JSON into these types, `store` maps rows through them (a stored value outside
//! a set is a corrupt row, never a default), and `alert`, `report` and `collect` decide with the
//! same functions. Where a report needs a rule inside SQL, the store keeps the rule's result in a
//! column written with the row (`users.privileged`), so no backend re-derives it in its dialect.

use sha2::{Digest, Sha256};

/// Defines a closed enum stored as text: `as_str` gives the stored name, `parse` the reverse
/// (`None` for a name outside the set), `ALL` lists the members.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($s => Some($name::$v),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Compared with a stored name (as tests and readers of `--format json` see it).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        /// Shown (JSON output) by its stored name.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// Which DigiCert API an account lives on.
    AccountKind {
        /// DigiCert ONE Account Manager, `/account/api/v1`, header `x-api-key`.
        DigicertOne = "digicert-one",
        /// CertCentral Services API, `/services/v2`, header `X-DC-DEVKEY`.
        CertCentral = "certcentral",
    }
}

stored_enum! {
    /// A user's state, normalized (contract 1.4 and 2.2); `users.status`. `Unknown` keeps the raw
    /// value in `status_raw` (and is the default of a row being built).
    #[derive(Default)]
    UserStatus {
        Invited = "invited",
        Active = "active",
        Locked = "locked",
        Disabled = "disabled",
        Expired = "expired",
        /// Only ever set by auditwarden (a user missing from a complete listing, or a 404).
        Deleted = "deleted",
        /// A value the contract does not list; the raw value is kept and counted.
        #[default]
        Unknown = "unknown",
    }
}

stored_enum! {
    /// The direction of a role change; `role_changes.change`.
    RoleChangeKind {
        Granted = "granted",
        Revoked = "revoked",
    }
}

stored_enum! {
    /// What established a role change; `role_changes.source`.
    RoleChangeSource {
        /// Two snapshots differ (the change happened between them).
        Snapshot = "snapshot",
        /// An audit event alone.
        Audit = "audit",
        /// A snapshot change with the audit event that made it attached.
        SnapshotAndAudit = "snapshot+audit",
    }
}

stored_enum! {
    /// What a user-history row is about; `user_history.field`.
    HistoryField {
        FirstSeen = "first_seen",
        Status = "status",
        Roles = "roles",
    }
}

stored_enum! {
    /// A user sync or an invitation poll; `user_runs.kind` and `user_history.source`.
    #[derive(Default)]
    UserRunKind {
        #[default]
        Sync = "sync",
        Poll = "poll",
    }
}

stored_enum! {
    /// Where one alert stands for one sink; `alert_deliveries.status`, and `suppressed` for an
    /// alert written but never sent (older than the backfill horizon).
    DeliveryStatus {
        Pending = "pending",
        Sent = "sent",
        Failed = "failed",
        Suppressed = "suppressed",
    }
}

/// Whether `role` gives administrative power over the account, per account kind: on DigiCert ONE
/// a role whose code (or name) says "admin" in any case (`AM_ACCOUNT_ADMIN`, `TLM_ADMIN`, "Account
/// admin"); on CertCentral the Administrator and the Manager (who manages the users of a division),
/// not "Finance Manager" (contract 1.1 and 2.2). The one definition of "privileged": alerts,
/// access review and dormant accounts all ask this.
pub fn is_privileged_role(kind: AccountKind, role: &str) -> bool {
    match kind {
        AccountKind::DigicertOne => role.to_ascii_lowercase().contains("admin"),
        AccountKind::CertCentral => {
            let r = role.trim();
            r.eq_ignore_ascii_case("Administrator") || r.eq_ignore_ascii_case("Manager")
        }
    }
}

/// Holds at least one privileged role (see [`is_privileged_role`]).
pub fn is_privileged(kind: AccountKind, roles: &[String]) -> bool {
    roles.iter().any(|r| is_privileged_role(kind, r))
}

/// [`is_privileged_role`] when the account kind is not known (rows written before the kind was
/// recorded with them): privileged on either kind. The two vocabularies do not overlap (DigiCert
/// ONE serves role codes, CertCentral role names), so this agrees with the per-kind rule on every
/// role either API serves.
pub fn is_privileged_role_any_kind(role: &str) -> bool {
    AccountKind::ALL
        .iter()
        .any(|k| is_privileged_role(*k, role))
}

/// The audit-event status that does not count as activity.
pub const FAILED_EVENT_STATUS: &str = "failure";

/// Activity: a user acted in an event that did not fail (a failed sign-in is not activity). The
/// store's SQL uses [`FAILED_EVENT_STATUS`] as a bound parameter, never a copy of the word.
pub fn is_activity(event_status: Option<&str>) -> bool {
    event_status != Some(FAILED_EVENT_STATUS)
}

/// What inactivity is counted from (the dormancy anchor): the latest activity (the API's sign-in
/// time or the latest event as actor, whichever is later), else the invitation, else the API's
/// creation time, else the first sighting.
pub fn inactive_since_ms(
    last_login_ms: Option<i64>,
    last_event_ms: Option<i64>,
    invited_ms: Option<i64>,
    created_ms: Option<i64>,
    first_seen_ms: i64,
) -> i64 {
    let active = match (last_login_ms, last_event_ms) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    active
        .or(invited_ms)
        .or(created_ms)
        .unwrap_or(first_seen_ms)
}

/// How far the sign-in that accepted an invitation may lie outside the observed window (clock
/// skew between DigiCert and this host).
pub const ACCEPT_SLACK_MS: i64 = 120_000;

/// The acceptance window of an invitation: the last observation still invited (`after`, 0 when
/// unknown) to the first observation accepted, widened by [`ACCEPT_SLACK_MS`] on both sides. The
/// first sign-in inside it is the acceptance itself.
pub fn acceptance_window(accepted_after_ms: Option<i64>, accepted_ms: i64) -> (i64, i64) {
    (
        accepted_after_ms.unwrap_or(0) - ACCEPT_SLACK_MS,
        accepted_ms + ACCEPT_SLACK_MS,
    )
}

/// A user's fingerprint: the first 8 bytes of SHA-256 over the served object, the raw status and
/// the sorted roles, each length-prefixed. An unchanged user is recognised by it without a write.
/// Stable across Rust releases and platforms (unlike `DefaultHasher`), so an upgrade does not
/// rewrite every user; migration 8 recomputed the fingerprints stored before it.
pub fn user_fingerprint(raw: &str, status_raw: &str, roles: &[String]) -> i64 {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    part(raw.as_bytes());
    part(status_raw.as_bytes());
    part(&(roles.len() as u64).to_be_bytes());
    for r in roles {
        part(r.as_bytes());
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored name parses back to its member, and nothing else parses.
    #[test]
    fn stored_names_round_trip() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
        ) {
            for v in all {
                assert_eq!(parse(as_str(*v)), Some(*v));
                assert_eq!(parse(&as_str(*v).to_uppercase()), None);
            }
            assert_eq!(parse(""), None);
            assert_eq!(parse("bogus"), None);
        }
        check(AccountKind::ALL, AccountKind::as_str, AccountKind::parse);
        check(UserStatus::ALL, UserStatus::as_str, UserStatus::parse);
        check(
            RoleChangeKind::ALL,
            RoleChangeKind::as_str,
            RoleChangeKind::parse,
        );
        check(
            RoleChangeSource::ALL,
            RoleChangeSource::as_str,
            RoleChangeSource::parse,
        );
        check(HistoryField::ALL, HistoryField::as_str, HistoryField::parse);
        check(UserRunKind::ALL, UserRunKind::as_str, UserRunKind::parse);
        check(
            DeliveryStatus::ALL,
            DeliveryStatus::as_str,
            DeliveryStatus::parse,
        );
        assert_eq!(UserStatus::ALL.len(), 7);
    }

    /// Privileged per kind: DigiCert ONE admin roles in any case; CertCentral Administrator and
    /// Manager, not Finance Manager; the any-kind rule agrees with both on their roles.
    #[test]
    fn privileged_roles_per_kind() {
        use AccountKind::*;
        for r in [
            "AM_ACCOUNT_ADMIN",
            "TLM_ADMIN",
            "Account admin",
            "am_account_admin",
        ] {
            assert!(is_privileged_role(DigicertOne, r), "{r}");
            assert!(is_privileged_role_any_kind(r), "{r}");
        }
        for r in [
            "AM_VIEW_ONLY",
            "AM_USER_MANAGER",
            "CM_USER",
            "TLM_VIEW_ONLY",
        ] {
            assert!(!is_privileged_role(DigicertOne, r), "{r}");
            assert!(!is_privileged_role_any_kind(r), "{r}");
        }
        for r in ["Administrator", "Manager", "manager"] {
            assert!(is_privileged_role(CertCentral, r), "{r}");
            assert!(is_privileged_role_any_kind(r), "{r}");
        }
        for r in ["Finance Manager", "Standard User", "Limited User"] {
            assert!(!is_privileged_role(CertCentral, r), "{r}");
            assert!(!is_privileged_role_any_kind(r), "{r}");
        }
        assert!(is_privileged(CertCentral, &["x".into(), "Manager".into()]));
        assert!(!is_privileged(CertCentral, &[]));
    }

    /// The dormancy anchor prefers the later activity, then invitation, creation, first sighting.
    #[test]
    fn inactivity_anchor() {
        assert_eq!(inactive_since_ms(Some(5), Some(7), Some(1), Some(2), 3), 7);
        assert_eq!(inactive_since_ms(Some(9), None, Some(1), Some(2), 3), 9);
        assert_eq!(inactive_since_ms(None, None, Some(1), Some(2), 3), 1);
        assert_eq!(inactive_since_ms(None, None, None, Some(2), 3), 2);
        assert_eq!(inactive_since_ms(None, None, None, None, 3), 3);
        assert!(is_activity(None) && is_activity(Some("success")));
        assert!(!is_activity(Some("failure")));
        assert_eq!(
            acceptance_window(Some(1_000_000), 2_000_000),
            (880_000, 2_120_000)
        );
    }

    /// Fingerprints are fixed values (a change of hasher would show here) and see every part.
    #[test]
    fn fingerprints_are_stable() {
        let roles = vec!["A".to_string(), "B".to_string()];
        let fp = user_fingerprint("{}", "ACTIVE", &roles);
        assert_eq!(fp, user_fingerprint("{}", "ACTIVE", &roles));
        assert_ne!(fp, user_fingerprint("{} ", "ACTIVE", &roles));
        assert_ne!(fp, user_fingerprint("{}", "active", &roles));
        assert_ne!(fp, user_fingerprint("{}", "ACTIVE", &roles[..1]));
        // Length prefixes: moving a byte from one part to the next changes the fingerprint.
        assert_ne!(
            user_fingerprint("ab", "c", &[]),
            user_fingerprint("a", "bc", &[])
        );
        assert_eq!(fp, FINGERPRINT_OF_EMPTY_ACTIVE_AB);
    }

    /// `user_fingerprint("{}", "ACTIVE", ["A", "B"])`, computed once: it must never change.
    const FINGERPRINT_OF_EMPTY_ACTIVE_AB: i64 = 4_427_550_516_430_260_152;
}

// ---- The facts the alert rules decide on (the store gathers them, `alert::rules` judges) ----

/// A role granted, with what is known about the target and the actor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    pub account: String,
    /// The account's kind, for the privileged roles (`None`: not known).
    pub account_kind: Option<AccountKind>,
    /// The role change (`role_changes.seq`) this grant is: alerts raised on it refer to it.
    pub role_change_seq: Option<i64>,
    pub user_id: String,
    pub user_name: Option<String>,
    pub role: String,
    /// The audit event that made it, when known.
    pub event_id: Option<String>,
    pub event_ms: Option<i64>,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub ip_address: Option<String>,
    /// The snapshots between which it was seen (`None`: the audit log alone).
    pub after_ms: Option<i64>,
    pub observed_ms: Option<i64>,
    /// The target's status now (`invited` for a pending invitation) and first sighting.
    pub target_status: Option<UserStatus>,
    pub target_first_seen_ms: Option<i64>,
    /// The target's latest activity before the grant (sign-in or event as actor).
    pub target_last_active_ms: Option<i64>,
    /// The actor's `user_type` when the actor is a known user (`service` for API tokens).
    pub actor_type: Option<String>,
}

impl Grant {
    /// When it happened: the event's time, else the snapshot that showed it.
    pub fn at_ms(&self) -> Option<i64> {
        self.event_ms.or(self.observed_ms)
    }

    /// What proves it, stable across runs: the audit event, or the snapshot window.
    pub fn evidence_key(&self) -> String {
        match &self.event_id {
            Some(e) => format!("event:{e}:{}:{}", self.user_id, self.role),
            None => format!(
                "snapshot:{}:{}:{}..{}",
                self.user_id,
                self.role,
                self.after_ms.unwrap_or_default(),
                self.observed_ms.unwrap_or_default()
            ),
        }
    }
}

/// A user seen for the first time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewUser {
    pub account: String,
    /// The account's kind, for the privileged roles (`None`: not known).
    pub account_kind: Option<AccountKind>,
    pub user_id: String,
    pub user_name: Option<String>,
    pub user_type: Option<String>,
    pub roles: Vec<String>,
    pub created_ms: Option<i64>,
    pub observed_ms: i64,
    /// Seen in the account's first sync: everything is "new" then, so only `created_ms` dates it.
    pub first_sync: bool,
}

/// A current service user and its end date (a service user *is* its token: it stops working on
/// that day, contract 1.1 and 1.4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceUserEnd {
    pub account: String,
    pub user_id: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub end_date: Option<chrono::NaiveDate>,
}

/// An API token or client-auth certificate created (a `generate` or `create` audit event), with
/// what is known about the user who created it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewCredential {
    pub account: String,
    pub event_id: String,
    pub event_ms: i64,
    /// `api_token` or `client_auth_certificate`.
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub ip_address: Option<String>,
    /// The creator's `user_type` and roles, when the creator is a known user.
    pub actor_type: Option<String>,
    pub actor_roles: Vec<String>,
}

/// Counts an actor's grants with an event time in `[from_ms, to_ms]` (for `grant-burst`).
pub trait GrantCounter {
    fn grants_by(&mut self, actor_id: &str, from_ms: i64, to_ms: i64) -> u64;
}

impl<F: FnMut(&str, i64, i64) -> u64> GrantCounter for F {
    fn grants_by(&mut self, actor_id: &str, from_ms: i64, to_ms: i64) -> u64 {
        self(actor_id, from_ms, to_ms)
    }
}

/// A failed sign-in from the audit log: `user` is the actor's id (else its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedSignIn {
    pub user: String,
    pub user_name: Option<String>,
    pub event_id: String,
    pub ts_ms: i64,
    pub ip_address: Option<String>,
}
