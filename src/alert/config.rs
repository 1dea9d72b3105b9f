//! `[alerts]`: the alert rules, the sinks and how deliveries are retried, as types and their
//! parsing. `config` calls [`alert_settings`]; the alert code reads [`AlertSettings`] and never
//! the whole configuration.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::rules::{self, BusinessHours, Cidr, Rule, RuleKind, Severity};
use crate::api::settings::{transport_keys, EnvProxies, ProxySetting, TlsSettings};
use crate::secret::Secret;
use crate::settings::{required_name, resolve, secret_from, table_array, time_zone, Env, Section};

/// `[alerts]`: rules, sinks and how deliveries are retried.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Changes older than this when first evaluated are recorded as suppressed, not sent.
    pub backfill_horizon: Duration,
    pub delivery: DeliveryPolicy,
    /// The configured rules, or [`rules::default_rules`] when none is configured.
    pub rules: Vec<Rule>,
    pub sinks: Vec<SinkConfig>,
    /// How the webhook and Slack sinks verify receivers (`[alerts] tls_roots`, `ca_file`).
    pub tls: TlsSettings,
    /// How they reach them (`[alerts] proxy_url`, or the environment).
    pub proxy: ProxySetting,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            backfill_horizon: Duration::from_secs(default_backfill_horizon_hours() * 3600),
            delivery: DeliveryPolicy::default(),
            rules: rules::default_rules(),
            sinks: Vec::new(),
            tls: TlsSettings::default(),
            proxy: ProxySetting::default(),
        }
    }
}

/// Bounded retries of one delivery within one run; after the last, the delivery waits for a
/// later run (backing off from `later_base_delay` up to `later_max_delay`) until it has been
/// failing for `give_up_after`; then it is failed (the dead letter) until `auditwarden alerts
/// retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
    /// The first wait between runs (doubling per run that could not send it, with jitter).
    pub later_base_delay: Duration,
    pub later_max_delay: Duration,
    /// How long a delivery may keep failing (from the first run that could not send it) before it
    /// becomes a dead letter; zero gives up at the end of the first such run.
    pub give_up_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: default_alert_max_attempts(),
            base_delay: Duration::from_millis(default_alert_retry_base_ms()),
            max_delay: Duration::from_secs(default_alert_retry_max_secs()),
            request_timeout: Duration::from_secs(default_alert_timeout_secs()),
            later_base_delay: Duration::from_secs(default_alert_retry_later_base_secs()),
            later_max_delay: Duration::from_secs(default_alert_retry_later_max_secs()),
            give_up_after: Duration::from_secs(default_alert_give_up_after_hours() * 3600),
        }
    }
}

/// A day: the first collection of a long backfill reports only what happened since yesterday.
fn default_backfill_horizon_hours() -> u64 {
    24
}

fn default_alert_max_attempts() -> u32 {
    5
}

fn default_alert_retry_base_ms() -> u64 {
    1000
}

fn default_alert_retry_max_secs() -> u64 {
    60
}

fn default_alert_timeout_secs() -> u64 {
    10
}

/// A minute after the run that could not send it, doubling per run.
fn default_alert_retry_later_base_secs() -> u64 {
    60
}

/// At least one try an hour during a long outage.
fn default_alert_retry_later_max_secs() -> u64 {
    3600
}

/// A receiver down for a day (a weekend's first day, a broken deploy) still gets its alerts.
fn default_alert_give_up_after_hours() -> u64 {
    24
}

/// Slack allows about one message per second per incoming webhook.
fn default_slack_interval_ms() -> u64 {
    1100
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Signed JSON POST (Standard Webhooks).
    Webhook { url: Url, secret: Secret },
    /// Slack incoming webhook; the URL is itself a credential.
    Slack { url: Secret, min_interval: Duration },
    /// A program run without a shell, the alert JSON on stdin.
    Command {
        program: PathBuf,
        args: Vec<String>,
        timeout: Duration,
    },
}

impl SinkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::Slack { .. } => "slack",
            SinkKind::Command { .. } => "command",
        }
    }
}

/// `[alerts]`, with the proxy the environment names as the sinks' default.
pub fn alert_settings(
    t: &toml::Table,
    base_dir: &Path,
    env: &dyn Env,
    env_proxies: &EnvProxies,
    problems: &mut Vec<String>,
) -> AlertSettings {
    let mut a = AlertSettings {
        proxy: ProxySetting::Environment(env_proxies.clone()),
        ..AlertSettings::default()
    };
    let mut s = Section::new("alerts".into(), t);
    transport_keys(&mut s, &mut a.tls, &mut a.proxy, base_dir, env, problems);
    if let Some(v) = s.integer("backfill_horizon_hours", 0, 24 * 3650, problems) {
        a.backfill_horizon = Duration::from_secs(v as u64 * 3600);
    }
    if let Some(v) = s.integer("max_attempts", 1, 100, problems) {
        a.delivery.max_attempts = v as u32;
    }
    if let Some(v) = s.integer("retry_base_ms", 1, 600_000, problems) {
        a.delivery.base_delay = Duration::from_millis(v as u64);
    }
    if let Some(v) = s.integer("retry_max_secs", 1, 86_400, problems) {
        a.delivery.max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("request_timeout_secs", 1, 3600, problems) {
        a.delivery.request_timeout = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("retry_later_base_secs", 0, 86_400, problems) {
        a.delivery.later_base_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("retry_later_max_secs", 1, 7 * 86_400, problems) {
        a.delivery.later_max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("give_up_after_hours", 0, 24 * 365, problems) {
        a.delivery.give_up_after = Duration::from_secs(v as u64 * 3600);
    }
    if let Some(items) = table_array(&mut s, "rules", problems) {
        let mut names = HashSet::new();
        a.rules = Vec::new();
        for (i, t) in items {
            let key = format!("alerts.rules[{i}]");
            if let Some(r) = alert_rule(&key, t, problems) {
                if !names.insert(r.name.clone()) {
                    problems.push(format!("{key}.name: {:?} is used twice", r.name));
                }
                a.rules.push(r);
            }
        }
    }
    if let Some(items) = table_array(&mut s, "sinks", problems) {
        let mut names = HashSet::new();
        for (i, t) in items {
            let key = format!("alerts.sinks[{i}]");
            if let Some(k) = alert_sink(&key, t, base_dir, env, problems) {
                if !names.insert(k.name.clone()) {
                    problems.push(format!("{key}.name: {:?} is used twice", k.name));
                }
                a.sinks.push(k);
            }
        }
    }
    s.finish(problems);
    a
}

fn alert_rule(key: &str, t: &toml::Table, problems: &mut Vec<String>) -> Option<Rule> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = required_name(&mut s, problems);
    let severity = match s.string("severity", problems) {
        None => Some(Severity::High),
        Some(v) => Severity::parse(&v).or_else(|| {
            problems.push(format!(
                "{key}.severity: {v:?} is not one of low, medium, high, critical"
            ));
            None
        }),
    };
    let kind_name = s.string("kind", problems);
    let roles = s.string_list("roles", problems);
    let kind = match kind_name.as_deref() {
        Some("privileged-role-grant") => Some(RuleKind::PrivilegedRoleGrant),
        Some("self-grant") => Some(RuleKind::SelfGrant),
        Some("service-actor-grant") => Some(RuleKind::ServiceActorGrant),
        Some("off-hours-grant") => {
            let mut h = BusinessHours::default();
            if let Some(z) = time_zone(&mut s, "timezone", problems) {
                h.timezone = z;
            }
            if let Some(v) = s.integer("business_hours_start", 0, 23, problems) {
                h.start_hour = v as u32;
            }
            if let Some(v) = s.integer("business_hours_end", 1, 24, problems) {
                h.end_hour = v as u32;
            }
            if h.start_hour >= h.end_hour {
                problems.push(format!(
                    "{key}.business_hours_end: must be after business_hours_start"
                ));
            }
            if let Some(days) = s.string_list("business_days", problems) {
                h.days = Vec::new();
                for (i, d) in days.iter().enumerate() {
                    match d.parse::<chrono::Weekday>() {
                        Ok(w) => h.days.push(w),
                        Err(_) => problems.push(format!(
                            "{key}.business_days[{i}]: {d:?} is not a weekday (mon .. sun)"
                        )),
                    }
                }
            }
            Some(RuleKind::OffHoursGrant(h))
        }
        Some("source-ip-outside") => {
            let mut nets = Vec::new();
            match s.string_list("cidrs", problems) {
                None if !s.has("cidrs") => problems.push(format!(
                    "{key}.cidrs: missing (the networks grants may come from, e.g. [\"10.0.0.0/8\"])"
                )),
                None => {}
                Some(list) => {
                    for (i, c) in list.iter().enumerate() {
                        match Cidr::parse(c) {
                            Some(n) => nets.push(n),
                            None => problems.push(format!(
                                "{key}.cidrs[{i}]: {c:?} is not an address or network like 10.0.0.0/8"
                            )),
                        }
                    }
                }
            }
            Some(RuleKind::SourceIpOutside(nets))
        }
        Some("dormant-or-invited-grant") => Some(RuleKind::DormantOrInvitedGrant {
            dormant_days: s
                .integer("dormant_days", 1, 3650, problems)
                .map(|v| v as u32)
                .unwrap_or(30),
        }),
        Some("grant-burst") => Some(RuleKind::GrantBurst {
            count: s
                .integer("count", 2, 100_000, problems)
                .map(|v| v as u32)
                .unwrap_or(5),
            window: Duration::from_secs(
                s.integer("window_minutes", 1, 7 * 24 * 60, problems)
                    .map(|v| v as u64)
                    .unwrap_or(10)
                    * 60,
            ),
        }),
        Some("new-privileged-service-user") => Some(RuleKind::NewPrivilegedServiceUser),
        Some("credential-expiring") => Some(RuleKind::CredentialExpiring {
            days: s
                .integer("days", 1, 3650, problems)
                .map(|v| v as u32)
                .unwrap_or(30),
        }),
        Some("credential-created") => Some(RuleKind::CredentialCreated),
        Some("failed-sign-ins") => Some(RuleKind::FailedSignIns {
            count: s
                .integer("count", 2, 100_000, problems)
                .map(|v| v as u32)
                .unwrap_or(5),
            window: Duration::from_secs(
                s.integer("window_minutes", 1, 7 * 24 * 60, problems)
                    .map(|v| v as u64)
                    .unwrap_or(10)
                    * 60,
            ),
        }),
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of {}",
                RuleKind::NAMES.join(", ")
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!(
                    "{key}.kind: missing ({})",
                    RuleKind::NAMES.join(", ")
                ));
            }
            None
        }
    };
    s.finish(problems);
    if problems.len() > before {
        return None;
    }
    let kind = kind?;
    // Rules about privilege default to the privileged roles; the others look at every role.
    let roles = match (roles, &kind) {
        (Some(r), _) => rules::RoleScope::Listed(r),
        (
            None,
            RuleKind::PrivilegedRoleGrant
            | RuleKind::NewPrivilegedServiceUser
            | RuleKind::CredentialCreated,
        ) => rules::RoleScope::Privileged,
        (None, _) => rules::RoleScope::Listed(Vec::new()),
    };
    Some(Rule {
        name: name?,
        severity: severity?,
        roles,
        kind,
    })
}

fn http_url(key: &str, raw: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        // The text is not echoed: a Slack URL is a credential.
        _ => {
            problems.push(format!("{key}: not an http:// or https:// URL with a host"));
            None
        }
    }
}

fn alert_sink(
    key: &str,
    t: &toml::Table,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<SinkConfig> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = required_name(&mut s, problems);
    let kind = match s.string("kind", problems).as_deref() {
        Some("webhook") => {
            let url = match s.string("url", problems) {
                Some(u) => http_url(&s.key("url"), &u, problems),
                None => {
                    problems.push(format!("{key}.url: missing"));
                    None
                }
            };
            let secret = secret_from(&mut s, "secret", base_dir, env, problems);
            if secret.is_none() && !s.has("secret_env") && !s.has("secret_file") {
                problems.push(format!(
                    "{key}: no signing secret: set secret_env or secret_file"
                ));
            }
            match (url, secret) {
                (Some(url), Some(secret)) => Some(SinkKind::Webhook { url, secret }),
                _ => None,
            }
        }
        Some("slack") => {
            let inline = s.string("url", problems);
            let hidden = secret_from(&mut s, "url", base_dir, env, problems);
            let url = match (inline, hidden) {
                (Some(_), Some(_)) => {
                    problems.push(format!("{key}: set only one of url, url_env, url_file"));
                    None
                }
                (Some(u), None) => Some(Secret::new(u)),
                (None, Some(u)) => Some(u),
                (None, None) => {
                    if !s.has("url_env") && !s.has("url_file") {
                        problems.push(format!("{key}.url: missing (or url_env, url_file)"));
                    }
                    None
                }
            };
            let url = url.filter(|u| http_url(&s.key("url"), u.expose(), problems).is_some());
            let min_interval = Duration::from_millis(
                s.integer("min_interval_ms", 0, 3_600_000, problems)
                    .map(|v| v as u64)
                    .unwrap_or_else(default_slack_interval_ms),
            );
            url.map(|url| SinkKind::Slack { url, min_interval })
        }
        Some("command") => {
            let program = s.string("program", problems);
            let args = s.string_list("args", problems).unwrap_or_default();
            let timeout = Duration::from_secs(
                s.integer("timeout_secs", 1, 3600, problems)
                    .map(|v| v as u64)
                    .unwrap_or(30),
            );
            match program {
                Some(p) if !p.trim().is_empty() => Some(SinkKind::Command {
                    program: if p.contains('/') {
                        resolve(base_dir, &p)
                    } else {
                        PathBuf::from(p)
                    },
                    args,
                    timeout,
                }),
                _ => {
                    problems.push(format!(
                        "{key}.program: missing (the program to run; no shell is involved)"
                    ));
                    None
                }
            }
        }
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of webhook, slack, command"
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!("{key}.kind: missing (webhook, slack or command)"));
            }
            None
        }
    };
    s.finish(problems);
    if problems.len() > before {
        return None;
    }
    Some(SinkConfig {
        name: name?,
        kind: kind?,
    })
}
