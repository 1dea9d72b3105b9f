//! Alerts on risky changes of who can do what, delivered exactly once per sink.
//!
//! - [`rules`]: the closed set of rule kinds, pure functions of one fact.
//! - [`evaluate`] runs after each user sync: the store hands over the role grants and first
//!   sightings the rules have not seen (its scan marks), the rules decide, and the alerts are
//!   written to the **outbox** (`alerts` + one pending delivery per sink) in the transaction that
//!   moves the marks. An alert is keyed by (rule, account, evidence), so it is written once ever,
//!   however often a fact is re-read, and a crash leaves both alerts and marks or neither.
//!   Changes older than the backfill horizon are written as suppressed (visible, not sent), so the
//!   first collection of a long history does not flood.
//! - [`deliver`] sends due deliveries, each sink in its own task (a slow or failing sink never
//!   holds up another), each delivery claimed first so two runs never send it at once, with
//!   bounded retries, exponential backoff and `Retry-After`. A delivery a run could not send waits
//!   for a later run (backing off across runs) until it has been failing for `[alerts]
//!   give_up_after_hours`; then it is failed (the dead letter) until `auditwarden alerts retry`.
//!   Delivery is at least once; each alert carries a stable id (`webhook-id`) so receivers drop
//!   repeats, which makes it exactly once as seen by the receiver.
//! - [`sinks`]: webhook (Standard Webhooks signature), Slack, command.
//!
//! Nothing here fails a collection: errors are logged and counted by the caller.

pub mod config;
pub mod deliver;
pub mod rules;
pub mod sinks;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::settings::Account;
use crate::domain::AccountKind;
use crate::store::{AlertCounts, AlertFacts, NewAlert, Store, StoreError};
use config::AlertSettings;
use rules::{Grant, GrantCounter, NewCredential, NewUser, Rule, ServiceUserEnd};

pub use deliver::{deliver, deliver_at, send_test, DeliverySummary, SinkCounts};

/// What evaluation did for one account.
#[derive(Debug)]
pub struct EvaluationSummary {
    pub account: String,
    pub result: Result<AlertCounts, StoreError>,
}

/// Evaluate the rules on each account's new facts and write the alerts to the outbox.
pub fn evaluate(
    store: &mut Store,
    accounts: &[&Account],
    settings: &AlertSettings,
    now: DateTime<Utc>,
) -> Vec<EvaluationSummary> {
    let sinks: Vec<String> = settings.sinks.iter().map(|s| s.name.clone()).collect();
    let now_ms = now.timestamp_millis();
    let horizon_ms = i64::try_from(settings.backfill_horizon.as_millis()).unwrap_or(i64::MAX);
    let oldest_sent = now_ms.saturating_sub(horizon_ms);
    accounts
        .iter()
        .map(|a| {
            let mut eval = |facts: &AlertFacts, counter: &mut dyn GrantCounter| {
                fire(&a.name, &settings.rules, a.kind, facts, counter, oldest_sent, now)
            };
            let result = store.record_alerts(&a.name, &sinks, now_ms, &mut eval);
            match &result {
                Ok(c) if c.alerts > 0 => {
                    tracing::info!(event = "alerts_written", account = %a.name, alerts = c.alerts, suppressed = c.suppressed)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(event = "alerts_failed", account = %a.name, error = %e, "rules not evaluated; they will be on the next run")
                }
            }
            EvaluationSummary {
                account: a.name.clone(),
                result,
            }
        })
        .collect()
}

/// Run every rule on every fact of an account of `kind`; one alert per (rule, evidence). An alert
/// raised on a grant refers to its role change, so the role-change report shows it flagged
/// whatever evidence the change gains later.
fn fire(
    account: &str,
    rules: &[Rule],
    kind: AccountKind,
    facts: &AlertFacts,
    counter: &mut dyn GrantCounter,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for g in &facts.grants {
        let g = Grant {
            account_kind: Some(kind),
            ..g.clone()
        };
        for r in rules {
            if let Some(evidence) = r.fires_on_grant(&g, counter) {
                let mut a = grant_alert(r, &g, &evidence, oldest_sent_ms, now);
                a.role_change_seq = g.role_change_seq;
                out.push(a);
            }
        }
    }
    for u in &facts.new_users {
        let u = NewUser {
            account_kind: Some(kind),
            ..u.clone()
        };
        for r in rules {
            if let Some(evidence) = r.fires_on_new_user(&u) {
                out.push(new_user_alert(r, &u, &evidence, oldest_sent_ms, now));
            }
        }
    }
    let today = now.date_naive();
    for u in &facts.service_users {
        for r in rules {
            if let Some(evidence) = r.fires_on_service_user(u, today) {
                out.push(expiring_alert(r, u, &evidence, now));
            }
        }
    }
    for c in &facts.credentials {
        for r in rules {
            if let Some(evidence) = r.fires_on_credential(Some(kind), c) {
                out.push(credential_alert(r, c, &evidence, oldest_sent_ms, now));
            }
        }
    }
    for r in rules {
        for b in r.sign_in_bursts(&facts.failed_sign_ins) {
            out.extend(sign_in_alert(r, account, &b, oldest_sent_ms, now));
        }
    }
    out
}

/// `credential-expiring`: dated now (the end date is ahead), so never suppressed as history.
fn expiring_alert(
    rule: &Rule,
    u: &ServiceUserEnd,
    evidence_key: &str,
    now: DateTime<Utc>,
) -> NewAlert {
    let name = u.name.as_deref().unwrap_or(&u.user_id);
    let end = u.end_date.map(|d| d.format("%Y-%m-%d").to_string());
    let left = u.end_date.map(|d| (d - now.date_naive()).num_days());
    let summary = format!(
        "[{}] {}: service user {} on {} stops working on {} ({} day(s) left)",
        rule.severity.as_str(),
        rule.name,
        name,
        u.account,
        end.as_deref().unwrap_or("-"),
        left.unwrap_or_default()
    );
    let body = json!({
        "target": {"id": u.user_id, "name": u.name, "type": "service"},
        "roles": u.roles,
        "change": "expiring",
        "end_date": end,
        "days_left": left,
        "actor": Value::Null,
        "source_ip": Value::Null,
        "evidence": {"kind": "service_user_end_date", "end_date": end},
    });
    let now_ms = now.timestamp_millis();
    new_alert(
        rule,
        &u.account,
        evidence_key,
        Some(now_ms),
        i64::MIN,
        now,
        summary,
        body,
    )
}

fn credential_alert(
    rule: &Rule,
    c: &NewCredential,
    evidence_key: &str,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
) -> NewAlert {
    let what = if c.resource_type == "api_token" {
        "API token"
    } else {
        "client-auth certificate"
    };
    let by = c
        .actor_name
        .as_deref()
        .or(c.actor_id.as_deref())
        .unwrap_or("an unnamed actor");
    let summary = format!(
        "[{}] {}: {what} {} created on {} by {by}{}",
        rule.severity.as_str(),
        rule.name,
        c.resource_name
            .as_deref()
            .or(c.resource_id.as_deref())
            .unwrap_or("(unnamed)"),
        c.account,
        c.ip_address
            .as_deref()
            .map(|ip| format!(" from {ip}"))
            .unwrap_or_default()
    );
    let body = json!({
        "target": {"id": c.resource_id, "name": c.resource_name, "type": c.resource_type},
        "change": "created",
        "actor": {"id": c.actor_id, "name": c.actor_name, "type": c.actor_type, "roles": c.actor_roles},
        "source_ip": c.ip_address,
        "evidence": {"kind": "audit_event", "event_id": c.event_id},
    });
    new_alert(
        rule,
        &c.account,
        evidence_key,
        Some(c.event_ms),
        oldest_sent_ms,
        now,
        summary,
        body,
    )
}

fn sign_in_alert(
    rule: &Rule,
    account: &str,
    burst: &rules::SignInBurst<'_>,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
) -> Option<NewAlert> {
    let (first, last) = (burst.failures.first()?, burst.failures.last()?);
    let name = first.user_name.as_deref().unwrap_or(&first.user);
    let minutes = (last.ts_ms - first.ts_ms) / 60_000;
    let from = first
        .ip_address
        .as_deref()
        .map(|ip| format!(" (first from {ip})"))
        .unwrap_or_default();
    let summary = format!(
        "[{}] {}: {} failed sign-ins of {} on {} within {} min{from}",
        rule.severity.as_str(),
        rule.name,
        burst.failures.len(),
        name,
        account,
        minutes
    );
    let body = json!({
        "target": {"id": first.user, "name": first.user_name},
        "role": Value::Null,
        "change": "failed-sign-ins",
        "actor": {"id": first.user, "name": first.user_name},
        "source_ip": first.ip_address,
        "failures": burst.failures.len(),
        "first_at": rfc3339(Some(first.ts_ms)),
        "last_at": rfc3339(Some(last.ts_ms)),
        "evidence": {
            "kind": "audit_events",
            "event_ids": burst.failures.iter().map(|f| f.event_id.as_str()).collect::<Vec<_>>(),
        },
    });
    Some(new_alert(
        rule,
        account,
        &format!("failed-sign-ins:{}:{}", first.user, first.event_id),
        Some(last.ts_ms),
        oldest_sent_ms,
        now,
        summary,
        body,
    ))
}

/// The id receivers deduplicate by: derived from the alert key, so it never changes.
pub fn alert_uid(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("aw_{}", &hex::encode(digest)[..32])
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

#[allow(clippy::too_many_arguments)]
fn new_alert(
    rule: &Rule,
    account: &str,
    evidence_key: &str,
    at_ms: Option<i64>,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
    summary: String,
    mut body: Value,
) -> NewAlert {
    let key = format!("{}|{account}|{evidence_key}", rule.name);
    let uid = alert_uid(&key);
    // A change of unknown age seen on a first sync is history too.
    let suppressed = at_ms.is_none_or(|t| t < oldest_sent_ms);
    if let Value::Object(m) = &mut body {
        m.insert("type".into(), json!("auditwarden.alert"));
        m.insert("id".into(), json!(uid));
        m.insert("rule".into(), json!(rule.name));
        m.insert("rule_kind".into(), json!(rule.kind.as_str()));
        m.insert("severity".into(), json!(rule.severity.as_str()));
        m.insert("account".into(), json!(account));
        m.insert("summary".into(), json!(summary));
        m.insert("time".into(), rfc3339(at_ms));
        m.insert("suppressed_on_backfill".into(), json!(suppressed));
        m.insert(
            "created_at".into(),
            json!(now.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
    }
    NewAlert {
        key,
        uid,
        rule: rule.name.clone(),
        severity: rule.severity.as_str().into(),
        at_ms,
        summary,
        payload: body.to_string(),
        suppressed,
        role_change_seq: None,
    }
}

fn grant_alert(
    rule: &Rule,
    g: &Grant,
    evidence_key: &str,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
) -> NewAlert {
    let target = g.user_name.as_deref().unwrap_or(&g.user_id);
    let by = match (&g.actor_name, &g.actor_id) {
        (Some(n), _) => format!(" by {n}"),
        (None, Some(i)) => format!(" by {i}"),
        _ => String::new(),
    };
    let from = g
        .ip_address
        .as_deref()
        .map(|ip| format!(" from {ip}"))
        .unwrap_or_default();
    let summary = format!(
        "[{}] {}: {} granted {} on {}{by}{from}",
        rule.severity.as_str(),
        rule.name,
        target,
        g.role,
        g.account
    );
    let evidence = match &g.event_id {
        Some(e) => json!({"kind": "audit_event", "event_id": e}),
        None => json!({
            "kind": "snapshot",
            "observed_after": rfc3339(g.after_ms),
            "observed_at": rfc3339(g.observed_ms),
        }),
    };
    let actor = if g.actor_id.is_some() || g.actor_name.is_some() {
        json!({"id": g.actor_id, "name": g.actor_name, "type": g.actor_type})
    } else {
        Value::Null
    };
    let body = json!({
        "target": {"id": g.user_id, "name": g.user_name, "status": g.target_status},
        "role": g.role,
        "change": "granted",
        "actor": actor,
        "source_ip": g.ip_address,
        "evidence": evidence,
    });
    new_alert(
        rule,
        &g.account,
        evidence_key,
        g.at_ms(),
        oldest_sent_ms,
        now,
        summary,
        body,
    )
}

fn new_user_alert(
    rule: &Rule,
    u: &NewUser,
    evidence_key: &str,
    oldest_sent_ms: i64,
    now: DateTime<Utc>,
) -> NewAlert {
    let name = u.user_name.as_deref().unwrap_or(&u.user_id);
    let roles: Vec<&String> = u
        .roles
        .iter()
        .filter(|r| rule.role_matches(u.account_kind, r))
        .collect();
    let summary = format!(
        "[{}] {}: new service user {} on {} holds {}",
        rule.severity.as_str(),
        rule.name,
        name,
        u.account,
        roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let at = u.created_ms.or((!u.first_sync).then_some(u.observed_ms));
    let body = json!({
        "target": {"id": u.user_id, "name": u.user_name, "type": u.user_type},
        "role": roles.first(),
        "roles": u.roles,
        "change": "created",
        "actor": Value::Null,
        "source_ip": Value::Null,
        "evidence": {"kind": "first_seen", "observed_at": rfc3339(Some(u.observed_ms))},
    });
    new_alert(
        rule,
        &u.account,
        evidence_key,
        at,
        oldest_sent_ms,
        now,
        summary,
        body,
    )
}
