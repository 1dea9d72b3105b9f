//! Access-review campaigns (`auditwarden review start|export|import|status|close`): a population
//! frozen at one instant (one item per account, user and role, with the user's status, type, last
//! activity, dormancy and how the role was granted), a decision sheet reviewers fill in (CSV or
//! XLSX, `sheet`), decisions imported all or nothing with every invalid row listed (`import`),
//! remediation proved from later user snapshots and the audit event that removed the role
//! (`status`), and a signed evidence package (`package`). Campaigns, items, decisions and
//! closures are links of the campaign's hash chain in the store (`ChainKind::Reviews`), so
//! `verify` finds an edited decision and a package's manifest records the chain's head.
//!
//! Reads the store only (never the network); the CLI prints what these functions return.

mod import;
mod package;
mod sheet;
mod status;

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};

pub use import::{import, ImportOutcome};
pub use package::{close, Closed};
pub use sheet::{export, SheetFormat};
pub use status::{status, Remediation, RemediationState, ReviewStatus};

use crate::export::rfc3339;
use crate::report_users::last_activity;
use crate::store::chain::{ChainHead, ChainKind};
use crate::store::{NewCampaign, ReviewItem, Store, StoreError, UserSelection};

const DAY_MS: i64 = 86_400_000;

/// Which roles a campaign reviews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Privileged roles only (`domain::is_privileged_role` of the account's kind).
    Privileged,
    /// Every role of every current user.
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Privileged => "privileged",
            Scope::All => "all",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Refused(String),
    /// An import with invalid rows: nothing of the file was recorded.
    #[error("{file}: {} invalid row(s), nothing of this file was recorded:\n  {}", .rows.len(), .rows.join("\n  "))]
    Invalid { file: String, rows: Vec<String> },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Sheet(String),
    #[error(transparent)]
    Run(#[from] crate::report::run::RunError),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Csv(#[from] csv::Error),
}

impl From<std::io::Error> for ReviewError {
    fn from(source: std::io::Error) -> ReviewError {
        ReviewError::Io {
            path: "output".into(),
            source,
        }
    }
}

impl From<crate::report::ReportError> for ReviewError {
    fn from(e: crate::report::ReportError) -> ReviewError {
        ReviewError::Sheet(e.to_string())
    }
}

/// What `review start` was asked for.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub accounts: Vec<String>,
    /// The kind of each of `accounts` (the privileged roles depend on it).
    pub kinds: Vec<crate::domain::AccountKind>,
    pub scope: Scope,
    pub name: Option<String>,
    pub due: Option<NaiveDate>,
    pub reviewers: Vec<String>,
    /// A user inactive this many days is dormant (`[reports] dormant_days`).
    pub dormant_days: u32,
}

#[derive(Debug, Clone)]
pub struct Started {
    pub id: i64,
    pub items: usize,
    pub population_sha256: String,
}

/// Freeze the population of the given accounts as of `now` and record the campaign.
pub fn start(
    store: &mut Store,
    opts: &StartOptions,
    now: DateTime<Utc>,
) -> Result<Started, ReviewError> {
    if opts.accounts.is_empty() {
        return Err(ReviewError::Usage("no account to review".into()));
    }
    let now_ms = now.timestamp_millis();
    let threshold_ms = i64::from(opts.dormant_days) * DAY_MS;
    let mut items = Vec::new();
    for (i, account) in opts.accounts.iter().enumerate() {
        let kind = opts.kinds.get(i).copied();
        let mut users = Vec::new();
        store.for_each_user_activity(account, UserSelection::Current, |r| {
            users.push(r);
            Ok::<(), StoreError>(())
        })?;
        // Who a grant's actor is: DigiCert ONE names actors by user id.
        let email_of: HashMap<String, Option<String>> = users
            .iter()
            .map(|u| (u.listing.user.user_id.clone(), u.listing.user.email.clone()))
            .collect();
        for u in &users {
            let user = &u.listing.user;
            let act = last_activity(&u.listing);
            let changes = store.role_changes(account, Some(&user.user_id))?;
            for role in &user.roles {
                let privileged = match kind {
                    Some(k) => crate::domain::is_privileged_role(k, role),
                    None => crate::domain::is_privileged_role_any_kind(role),
                };
                if opts.scope == Scope::Privileged && !privileged {
                    continue;
                }
                // The latest grant of this role: how the user came to hold it.
                let grant = changes
                    .iter()
                    .filter(|c| c.role == *role && c.change == "granted")
                    .max_by_key(|c| (c.evidence.as_ref().map(|e| e.event_ms), c.observed_ms));
                let (granted, granted_ms, by_id, by_name, event_id, ip) = match grant {
                    Some(c) => match &c.evidence {
                        Some(ev) => (
                            format!(
                                "audit event {} at {} by {} from {}",
                                ev.event_id,
                                rfc3339(at(ev.event_ms)),
                                ev.actor_name
                                    .as_deref()
                                    .or(ev.actor_id.as_deref())
                                    .unwrap_or("an unnamed actor"),
                                ev.ip_address.as_deref().unwrap_or("an unknown address")
                            ),
                            Some(ev.event_ms),
                            ev.actor_id.clone(),
                            ev.actor_name.clone(),
                            Some(ev.event_id.clone()),
                            ev.ip_address.clone(),
                        ),
                        None => (
                            format!(
                                "observed between {} and {} (user snapshots; no audit event)",
                                c.after_ms.map_or("-".into(), |t| rfc3339(at(t))),
                                c.observed_ms.map_or("-".into(), |t| rfc3339(at(t)))
                            ),
                            c.observed_ms,
                            None,
                            None,
                            None,
                            None,
                        ),
                    },
                    None => (
                        format!(
                            "held when first seen at {}",
                            rfc3339(at(user.first_seen_ms))
                        ),
                        None,
                        None,
                        None,
                        None,
                        None,
                    ),
                };
                let by_email = by_id
                    .as_ref()
                    .and_then(|id| email_of.get(id).cloned().flatten());
                items.push(ReviewItem {
                    item_no: items.len() as i64 + 1,
                    account: account.clone(),
                    user_id: user.user_id.clone(),
                    user_name: user.user_name.clone().or(user.display_name.clone()),
                    email: user.email.clone(),
                    user_type: user.user_type.clone(),
                    status: user.status.as_str().to_string(),
                    role: role.clone(),
                    privileged,
                    last_activity_ms: act.as_ref().map(|a| a.at.timestamp_millis()),
                    activity_source: act.as_ref().map(|a| a.source.clone()),
                    dormant: now_ms - u.inactive_since_ms >= threshold_ms,
                    granted,
                    granted_ms,
                    granted_by_id: by_id,
                    granted_by_name: by_name,
                    granted_by_email: by_email,
                    grant_event_id: event_id,
                    grant_ip: ip,
                });
            }
        }
    }
    let heads = chain_heads_text(store, &opts.accounts)?;
    let name = opts.name.clone().unwrap_or_else(|| {
        format!(
            "Access review {} ({})",
            now.format("%Y-%m-%d"),
            opts.scope.as_str()
        )
    });
    let campaign = NewCampaign {
        name,
        scope: opts.scope.as_str().into(),
        accounts: opts.accounts.clone(),
        reviewers: opts
            .reviewers
            .iter()
            .map(|r| r.trim().to_string())
            .collect(),
        due_day: opts.due.map(|d| d.format("%Y-%m-%d").to_string()),
        started_ms: now_ms,
        chain_heads: heads,
    };
    let (id, sha) = store.create_review(&campaign, &items)?;
    Ok(Started {
        id,
        items: items.len(),
        population_sha256: sha,
    })
}

/// The events and user-history heads of each account, one "chain account n hash" line each.
fn chain_heads_text(store: &Store, accounts: &[String]) -> Result<String, ReviewError> {
    let recorded = store.chain_heads(None)?;
    let mut out = String::new();
    for a in accounts {
        for kind in ChainKind::ALL {
            let h = recorded
                .iter()
                .find(|(k, acc, _)| *k == kind && acc == a)
                .map(|(_, _, h)| *h)
                .unwrap_or_else(|| ChainHead::genesis(kind, a));
            out.push_str(&format!(
                "{} {} {} {}\n",
                kind.as_str(),
                a,
                h.n,
                hex::encode(h.hash)
            ));
        }
    }
    Ok(out)
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The campaign, or a clear error naming the id.
fn campaign(store: &Store, id: i64) -> Result<crate::store::Campaign, ReviewError> {
    store
        .review_campaign(id)?
        .ok_or_else(|| ReviewError::Usage(format!("no review campaign {id} in this database")))
}

/// Same reviewer, ignoring case and surrounding blanks.
fn same_person(a: &str, b: &str) -> bool {
    let a = a.trim();
    !a.is_empty() && a.eq_ignore_ascii_case(b.trim())
}

/// The current decision of each item: its latest decision row.
fn current_decisions(all: &[crate::store::Decision]) -> HashMap<i64, &crate::store::Decision> {
    let mut m = HashMap::new();
    for d in all {
        m.insert(d.item_no, d);
    }
    m
}

/// The due day has passed (the whole day, UTC).
fn overdue(due_day: Option<&str>, now: DateTime<Utc>) -> bool {
    due_day
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .is_some_and(|d| now.date_naive() > d)
}
