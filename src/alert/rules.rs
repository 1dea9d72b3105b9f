//! The rule engine: a closed set of rule kinds, each a pure function of one newly established
//! fact (a role grant, or a user seen for the first time) and, for bursts, a count of the actor's
//! other grants. No I/O here: the store gathers the facts and writes what fires (see `alert`).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::domain::{self, AccountKind, UserStatus};
// The facts the rules decide on are domain types (the store produces them): re-exported here.
pub use crate::domain::{
    FailedSignIn, Grant, GrantCounter, NewCredential, NewUser, ServiceUserEnd,
};

/// Which roles a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub enum RoleScope {
    /// The privileged roles of the account's kind (`domain::is_privileged_role`, the one rule the
    /// access review and dormant reports use too): the default of the privilege rules.
    Privileged,
    /// Exactly these roles (any case); empty: every role.
    Listed(Vec<String>),
}

impl RoleScope {
    /// Whether the scope covers `role` on an account of `kind` (`None`: not known, so either
    /// kind's privileged roles).
    pub fn matches(&self, kind: Option<AccountKind>, role: &str) -> bool {
        match self {
            RoleScope::Privileged => match kind {
                Some(k) => domain::is_privileged_role(k, role),
                None => domain::is_privileged_role_any_kind(role),
            },
            RoleScope::Listed(roles) => {
                roles.is_empty() || roles.iter().any(|r| r.eq_ignore_ascii_case(role))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Some(match s {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// An IPv4 or IPv6 network, `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Business hours in a time zone: `[start_hour, end_hour)` on the listed weekdays.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    pub timezone: Tz,
    pub start_hour: u32,
    pub end_hour: u32,
    pub days: Vec<Weekday>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours {
            timezone: Tz::UTC,
            start_hour: 8,
            end_hour: 18,
            days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
        }
    }
}

impl BusinessHours {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        let local = t.with_timezone(&self.timezone);
        self.days.contains(&local.weekday())
            && local.hour() >= self.start_hour
            && local.hour() < self.end_hour
    }
}

/// The kinds of rule: one `match` in [`Rule::fires_on_grant`] shows what each means.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// `privileged-role-grant`: a grant of one of the rule's roles.
    PrivilegedRoleGrant,
    /// `self-grant`: the actor is the user who got the role.
    SelfGrant,
    /// `service-actor-grant`: the grant was made by a service user (an API token).
    ServiceActorGrant,
    /// `off-hours-grant`: outside business hours or on a non-business day.
    OffHoursGrant(BusinessHours),
    /// `source-ip-outside`: from an address outside every listed network.
    SourceIpOutside(Vec<Cidr>),
    /// `dormant-or-invited-grant`: to a user inactive for `dormant_days`, or still invited.
    DormantOrInvitedGrant { dormant_days: u32 },
    /// `grant-burst`: the actor made at least `count` grants within `window`.
    GrantBurst { count: u32, window: Duration },
    /// `new-privileged-service-user`: a service user first seen holding one of the rule's roles.
    NewPrivilegedServiceUser,
    /// `credential-expiring`: a service user whose end date is at most `days` away (and not
    /// past); once per user and end date.
    CredentialExpiring { days: u32 },
    /// `credential-created`: a new API token or client-auth certificate created by a service
    /// user or by a user holding one of the rule's roles.
    CredentialCreated,
    /// `failed-sign-ins`: at least `count` failed sign-ins of one user within `window` (from
    /// the audit log of either API; CertCentral's through the Report Library).
    FailedSignIns { count: u32, window: Duration },
}

impl RuleKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RuleKind::PrivilegedRoleGrant => "privileged-role-grant",
            RuleKind::SelfGrant => "self-grant",
            RuleKind::ServiceActorGrant => "service-actor-grant",
            RuleKind::OffHoursGrant(_) => "off-hours-grant",
            RuleKind::SourceIpOutside(_) => "source-ip-outside",
            RuleKind::DormantOrInvitedGrant { .. } => "dormant-or-invited-grant",
            RuleKind::GrantBurst { .. } => "grant-burst",
            RuleKind::NewPrivilegedServiceUser => "new-privileged-service-user",
            RuleKind::CredentialExpiring { .. } => "credential-expiring",
            RuleKind::CredentialCreated => "credential-created",
            RuleKind::FailedSignIns { .. } => "failed-sign-ins",
        }
    }

    /// Every kind name, for configuration messages.
    pub const NAMES: &'static [&'static str] = &[
        "privileged-role-grant",
        "self-grant",
        "service-actor-grant",
        "off-hours-grant",
        "source-ip-outside",
        "dormant-or-invited-grant",
        "grant-burst",
        "new-privileged-service-user",
        "credential-expiring",
        "credential-created",
        "failed-sign-ins",
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub severity: Severity,
    /// Roles the rule looks at.
    pub roles: RoleScope,
    pub kind: RuleKind,
}

/// The rules that apply when no `[[alerts.rules]]` is configured.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            name: "privileged-role-grant".into(),
            severity: Severity::High,
            roles: RoleScope::Privileged,
            kind: RuleKind::PrivilegedRoleGrant,
        },
        Rule {
            name: "self-grant".into(),
            severity: Severity::High,
            roles: RoleScope::Listed(Vec::new()),
            kind: RuleKind::SelfGrant,
        },
        Rule {
            name: "off-hours-grant".into(),
            severity: Severity::Medium,
            roles: RoleScope::Listed(Vec::new()),
            kind: RuleKind::OffHoursGrant(BusinessHours::default()),
        },
    ]
}

const DAY_MS: i64 = 86_400_000;

impl Rule {
    /// Whether the rule looks at `role` on an account of `kind`.
    pub fn role_matches(&self, kind: Option<AccountKind>, role: &str) -> bool {
        self.roles.matches(kind, role)
    }

    /// Whether this rule fires on a grant; `Some(key)` replaces the evidence key when one alert
    /// stands for several grants (a burst is keyed by actor and window).
    pub fn fires_on_grant(&self, g: &Grant, counter: &mut dyn GrantCounter) -> Option<String> {
        if !self.role_matches(g.account_kind, &g.role) {
            return None;
        }
        let fired = match &self.kind {
            RuleKind::PrivilegedRoleGrant => true,
            RuleKind::SelfGrant => match (&g.actor_id, &g.actor_name) {
                (Some(a), _) => *a == g.user_id,
                (None, Some(n)) => g.user_name.as_deref() == Some(n.as_str()),
                _ => false,
            },
            RuleKind::ServiceActorGrant => g.actor_type.as_deref() == Some("service"),
            RuleKind::OffHoursGrant(hours) => g
                .at_ms()
                .and_then(DateTime::from_timestamp_millis)
                .is_some_and(|t| !hours.contains(t)),
            // An unknown or unparseable address is not "outside": only evidence fires a rule.
            RuleKind::SourceIpOutside(nets) => g
                .ip_address
                .as_deref()
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| !nets.iter().any(|n| n.contains(ip))),
            RuleKind::DormantOrInvitedGrant { dormant_days } => {
                let at = g.at_ms().unwrap_or_default();
                let limit = at - i64::from(*dormant_days) * DAY_MS;
                g.target_status == Some(UserStatus::Invited)
                    || match g.target_last_active_ms {
                        Some(t) => t < limit,
                        // Never active: dormant if known that long.
                        None => g.target_first_seen_ms.is_some_and(|t| t < limit),
                    }
            }
            RuleKind::GrantBurst { count, window } => {
                let (Some(actor), Some(at)) = (&g.actor_id, g.event_ms) else {
                    return None;
                };
                let w = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
                if counter.grants_by(actor, at.saturating_sub(w), at) < u64::from(*count) {
                    return None;
                }
                // One alert per actor and window bucket, however many grants follow.
                return Some(format!("burst:{actor}:{}", at / w.max(1)));
            }
            RuleKind::NewPrivilegedServiceUser
            | RuleKind::CredentialExpiring { .. }
            | RuleKind::CredentialCreated
            | RuleKind::FailedSignIns { .. } => false,
        };
        fired.then(|| g.evidence_key())
    }

    /// Whether this rule fires on a user seen for the first time.
    pub fn fires_on_new_user(&self, u: &NewUser) -> Option<String> {
        match self.kind {
            RuleKind::NewPrivilegedServiceUser => {
                let service = u.user_type.as_deref() == Some("service");
                let privileged = u.roles.iter().any(|r| self.role_matches(u.account_kind, r));
                (service && privileged).then(|| format!("new-user:{}", u.user_id))
            }
            _ => None,
        }
    }

    /// Whether this rule fires on a service user's end date as of `today`: `credential-expiring`
    /// once per user and end date.
    pub fn fires_on_service_user(
        &self,
        u: &ServiceUserEnd,
        today: chrono::NaiveDate,
    ) -> Option<String> {
        let RuleKind::CredentialExpiring { days } = self.kind else {
            return None;
        };
        let end = u.end_date?;
        let left = (end - today).num_days();
        (0..=i64::from(days))
            .contains(&left)
            .then(|| format!("service-user:{}:{end}", u.user_id))
    }

    /// Whether this rule fires on a new API token or client-auth certificate: created by a
    /// service user, or by a user holding one of the rule's roles.
    pub fn fires_on_credential(
        &self,
        kind: Option<AccountKind>,
        c: &NewCredential,
    ) -> Option<String> {
        if self.kind != RuleKind::CredentialCreated {
            return None;
        }
        let service = c
            .actor_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("service"));
        let privileged = c.actor_roles.iter().any(|r| self.role_matches(kind, r));
        (service || privileged).then(|| format!("event:{}", c.event_id))
    }
}

/// A burst of failed sign-ins of one user: the failures, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInBurst<'a> {
    pub failures: Vec<&'a FailedSignIn>,
}

impl Rule {
    /// `failed-sign-ins`: per user, the bursts of at least `count` failures within `window`.
    /// Each burst starts at the first failure not in an earlier burst and takes every failure
    /// within `window` of it, so one burst is one alert (keyed by its first event).
    pub fn sign_in_bursts<'a>(&self, failures: &'a [FailedSignIn]) -> Vec<SignInBurst<'a>> {
        let RuleKind::FailedSignIns { count, window } = &self.kind else {
            return Vec::new();
        };
        let w = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let mut by_user: std::collections::BTreeMap<&str, Vec<&FailedSignIn>> =
            std::collections::BTreeMap::new();
        for f in failures {
            by_user.entry(f.user.as_str()).or_default().push(f);
        }
        let mut out = Vec::new();
        for (_, mut fs) in by_user {
            fs.sort_by(|a, b| (a.ts_ms, &a.event_id).cmp(&(b.ts_ms, &b.event_id)));
            let mut i = 0;
            while i < fs.len() {
                let end = fs[i].ts_ms.saturating_add(w);
                let j = i + fs[i..].iter().take_while(|f| f.ts_ms <= end).count();
                if (j - i) as u64 >= u64::from(*count) {
                    out.push(SignInBurst {
                        failures: fs[i..j].to_vec(),
                    });
                    i = j;
                } else {
                    i += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three failures of one user within ten minutes are one burst; two of another user, or
    /// three spread over an hour, are none.
    #[test]
    fn failed_sign_in_bursts() {
        let rule = Rule {
            name: "failed-sign-ins".into(),
            severity: Severity::Medium,
            roles: RoleScope::Listed(Vec::new()),
            kind: RuleKind::FailedSignIns {
                count: 3,
                window: Duration::from_secs(600),
            },
        };
        let f = |user: &str, id: &str, min: i64| FailedSignIn {
            user: user.into(),
            user_name: None,
            event_id: id.into(),
            ts_ms: min * 60_000,
            ip_address: None,
        };
        let fs = vec![
            f("ann", "a1", 0),
            f("ann", "a2", 4),
            f("ann", "a3", 9),
            f("ann", "a4", 11),
            f("bob", "b1", 0),
            f("bob", "b2", 1),
            f("eve", "e1", 0),
            f("eve", "e2", 30),
            f("eve", "e3", 60),
        ];
        let bursts = rule.sign_in_bursts(&fs);
        assert_eq!(bursts.len(), 1, "{bursts:?}");
        let ids: Vec<&str> = bursts[0]
            .failures
            .iter()
            .map(|f| f.event_id.as_str())
            .collect();
        assert_eq!(ids, vec!["a1", "a2", "a3"]);
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    /// A weekday-noon grant of a plain role by another user from 10.1.2.3.
    fn plain() -> Grant {
        Grant {
            account: "acc".into(),
            user_id: "u1".into(),
            user_name: Some("alice".into()),
            role: "AM_VIEW_ONLY".into(),
            event_id: Some("ev1".into()),
            event_ms: Some(ms("2026-11-04T12:00:00Z")), // a Wednesday
            actor_id: Some("admin".into()),
            actor_name: Some("bob".into()),
            ip_address: Some("10.1.2.3".into()),
            target_status: Some(UserStatus::Active),
            target_first_seen_ms: Some(ms("2026-10-01T00:00:00Z")),
            target_last_active_ms: Some(ms("2026-11-03T00:00:00Z")),
            actor_type: Some("standard".into()),
            ..Default::default()
        }
    }

    fn rule(kind: RuleKind, roles: &[&str]) -> Rule {
        Rule {
            name: "r".into(),
            severity: Severity::High,
            roles: RoleScope::Listed(roles.iter().map(|r| r.to_string()).collect()),
            kind,
        }
    }

    fn none(_: &str, _: i64, _: i64) -> u64 {
        0
    }

    fn fires(r: &Rule, g: &Grant) -> bool {
        r.fires_on_grant(g, &mut none).is_some()
    }

    /// The default privileged-role-grant looks at the privileged roles of the account's kind,
    /// the one rule the access review uses: a CertCentral Manager fires, a Finance Manager not.
    #[test]
    fn default_privileged_roles_follow_the_account_kind() {
        let r = default_rules().remove(0);
        assert_eq!(r.kind, RuleKind::PrivilegedRoleGrant);
        let grant = |kind, role: &str| Grant {
            account_kind: Some(kind),
            role: role.into(),
            ..plain()
        };
        assert!(fires(&r, &grant(AccountKind::CertCentral, "Manager")));
        assert!(fires(&r, &grant(AccountKind::CertCentral, "Administrator")));
        assert!(!fires(
            &r,
            &grant(AccountKind::CertCentral, "Finance Manager")
        ));
        assert!(fires(
            &r,
            &grant(AccountKind::DigicertOne, "AM_ACCOUNT_ADMIN")
        ));
        assert!(fires(&r, &grant(AccountKind::DigicertOne, "TLM_ADMIN")));
        assert!(!fires(&r, &grant(AccountKind::DigicertOne, "AM_VIEW_ONLY")));
        assert!(!fires(&r, &grant(AccountKind::DigicertOne, "Manager")));
    }

    /// privileged-role-grant fires on a listed role and not on another.
    #[test]
    fn privileged_role_grant() {
        let r = rule(RuleKind::PrivilegedRoleGrant, &["AM_ACCOUNT_ADMIN"]);
        assert!(!fires(&r, &plain()));
        let g = Grant {
            role: "AM_ACCOUNT_ADMIN".into(),
            ..plain()
        };
        assert!(fires(&r, &g));
        assert_eq!(
            r.fires_on_grant(&g, &mut none).as_deref(),
            Some("event:ev1:u1:AM_ACCOUNT_ADMIN")
        );
    }

    /// self-grant fires when the actor is the target, by id or (without ids) by name.
    #[test]
    fn self_grant() {
        let r = rule(RuleKind::SelfGrant, &[]);
        assert!(!fires(&r, &plain()));
        let by_id = Grant {
            actor_id: Some("u1".into()),
            ..plain()
        };
        assert!(fires(&r, &by_id));
        let by_name = Grant {
            actor_id: None,
            actor_name: Some("alice".into()),
            ..plain()
        };
        assert!(fires(&r, &by_name));
        let snapshot_only = Grant {
            actor_id: None,
            actor_name: None,
            ..plain()
        };
        assert!(!fires(&r, &snapshot_only));
    }

    /// service-actor-grant fires when the actor is a service user.
    #[test]
    fn service_actor_grant() {
        let r = rule(RuleKind::ServiceActorGrant, &[]);
        assert!(!fires(&r, &plain()));
        let g = Grant {
            actor_type: Some("service".into()),
            ..plain()
        };
        assert!(fires(&r, &g));
    }

    /// off-hours-grant fires at night and on weekends in the configured zone, not at noon midweek.
    #[test]
    fn off_hours_grant() {
        let r = rule(RuleKind::OffHoursGrant(BusinessHours::default()), &[]);
        assert!(!fires(&r, &plain()));
        let night = Grant {
            event_ms: Some(ms("2026-11-04T03:00:00Z")),
            ..plain()
        };
        assert!(fires(&r, &night));
        let saturday = Grant {
            event_ms: Some(ms("2026-11-07T12:00:00Z")),
            ..plain()
        };
        assert!(fires(&r, &saturday));
        // 03:00 UTC is 12:00 in Tokyo: business hours there.
        let tokyo = rule(
            RuleKind::OffHoursGrant(BusinessHours {
                timezone: chrono_tz::Asia::Tokyo,
                ..BusinessHours::default()
            }),
            &[],
        );
        assert!(!fires(&tokyo, &night));
        // Without an event, the snapshot time is used.
        let snap = Grant {
            event_id: None,
            event_ms: None,
            observed_ms: Some(ms("2026-11-04T23:30:00Z")),
            ..plain()
        };
        assert!(fires(&r, &snap));
    }

    /// source-ip-outside fires for an address outside every network, not inside or unknown.
    #[test]
    fn source_ip_outside() {
        let nets = vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("2001:db8::/32").unwrap(),
        ];
        let r = rule(RuleKind::SourceIpOutside(nets), &[]);
        assert!(!fires(&r, &plain()));
        for ip in ["203.0.113.9", "2001:db9::1", "11.0.0.1"] {
            let g = Grant {
                ip_address: Some(ip.into()),
                ..plain()
            };
            assert!(fires(&r, &g), "{ip}");
        }
        for ip in ["2001:db8::7", "::ffff:10.9.9.9"] {
            let g = Grant {
                ip_address: Some(ip.into()),
                ..plain()
            };
            assert!(!fires(&r, &g), "{ip}");
        }
        let unknown = Grant {
            ip_address: None,
            ..plain()
        };
        assert!(!fires(&r, &unknown));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    /// dormant-or-invited-grant fires for a long-inactive user or a pending invitation.
    #[test]
    fn dormant_or_invited_grant() {
        let r = rule(RuleKind::DormantOrInvitedGrant { dormant_days: 30 }, &[]);
        assert!(!fires(&r, &plain()));
        let dormant = Grant {
            target_last_active_ms: Some(ms("2026-09-01T00:00:00Z")),
            ..plain()
        };
        assert!(fires(&r, &dormant));
        let invited = Grant {
            target_status: Some(UserStatus::Invited),
            ..plain()
        };
        assert!(fires(&r, &invited));
        let never_active_new = Grant {
            target_last_active_ms: None,
            target_first_seen_ms: Some(ms("2026-11-01T00:00:00Z")),
            ..plain()
        };
        assert!(!fires(&r, &never_active_new));
    }

    /// grant-burst fires once the actor's grants in the window reach the count, keyed per window.
    #[test]
    fn grant_burst() {
        let r = rule(
            RuleKind::GrantBurst {
                count: 3,
                window: Duration::from_secs(600),
            },
            &[],
        );
        let mut two = |_: &str, _: i64, _: i64| 2u64;
        assert!(r.fires_on_grant(&plain(), &mut two).is_none());
        let mut three = |a: &str, from: i64, to: i64| {
            assert_eq!((a, to - from), ("admin", 600_000));
            3u64
        };
        let key = r.fires_on_grant(&plain(), &mut three).unwrap();
        assert!(key.starts_with("burst:admin:"), "{key}");
    }

    /// new-privileged-service-user fires for a new service user with a listed role only.
    #[test]
    fn new_privileged_service_user() {
        let r = rule(RuleKind::NewPrivilegedServiceUser, &["AM_ACCOUNT_ADMIN"]);
        let mut u = NewUser {
            account: "acc".into(),
            user_id: "svc".into(),
            user_type: Some("service".into()),
            roles: vec!["AM_ACCOUNT_ADMIN".into()],
            observed_ms: 1,
            ..Default::default()
        };
        assert!(r.fires_on_new_user(&u).is_some());
        u.roles = vec!["AM_VIEW_ONLY".into()];
        assert!(r.fires_on_new_user(&u).is_none());
        u.roles = vec!["AM_ACCOUNT_ADMIN".into()];
        u.user_type = Some("standard".into());
        assert!(r.fires_on_new_user(&u).is_none());
        // Grant rules ignore new users and vice versa.
        assert!(rule(RuleKind::PrivilegedRoleGrant, &[])
            .fires_on_new_user(&u)
            .is_none());
        assert!(!fires(&r, &plain()));
    }

    /// `credential-expiring` fires from `days` before the end date to the day itself, keyed by
    /// user and end date; `credential-created` needs a service or privileged creator.
    #[test]
    fn credential_rules() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 16).unwrap();
        let r = rule(RuleKind::CredentialExpiring { days: 14 }, &[]);
        let user = |d: i64| ServiceUserEnd {
            user_id: "s1".into(),
            end_date: Some(today + chrono::Duration::days(d)),
            ..Default::default()
        };
        assert_eq!(
            r.fires_on_service_user(&user(14), today).as_deref(),
            Some("service-user:s1:2026-11-30")
        );
        assert!(r.fires_on_service_user(&user(0), today).is_some());
        assert!(r.fires_on_service_user(&user(15), today).is_none());
        assert!(r.fires_on_service_user(&user(-1), today).is_none());
        let c = rule(RuleKind::CredentialCreated, &["AM_ACCOUNT_ADMIN"]);
        let mut cred = NewCredential {
            event_id: "e1".into(),
            actor_roles: vec!["AM_VIEW_ONLY".into()],
            actor_type: Some("standard".into()),
            ..Default::default()
        };
        assert!(c
            .fires_on_credential(Some(AccountKind::DigicertOne), &cred)
            .is_none());
        cred.actor_type = Some("service".into());
        assert_eq!(
            c.fires_on_credential(Some(AccountKind::DigicertOne), &cred)
                .as_deref(),
            Some("event:e1")
        );
        cred.actor_type = None;
        cred.actor_roles.push("AM_ACCOUNT_ADMIN".into());
        assert!(c
            .fires_on_credential(Some(AccountKind::DigicertOne), &cred)
            .is_some());
        assert!(r
            .fires_on_credential(Some(AccountKind::DigicertOne), &cred)
            .is_none());
    }
}
