//! `review status ID`: decided/total by reviewer, items still undecided after the due date, and
//! remediation: each "revoke" is *done* when a user snapshot taken after the campaign started
//! shows the role gone (with the audit event that removed it: who, when, from where, when the
//! audit log has it), *open* otherwise, *overdue* when open after the due date.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{at, campaign, current_decisions, overdue, ReviewError};
use crate::export::rfc3339;
use crate::store::{Campaign, Decision, Evidence, ReviewItem, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemediationState {
    Done,
    Open,
    Overdue,
}

impl RemediationState {
    pub fn as_str(self) -> &'static str {
        match self {
            RemediationState::Done => "done",
            RemediationState::Open => "open",
            RemediationState::Overdue => "overdue",
        }
    }
}

/// The snapshot that showed a revoked role gone, and the audit event that removed it.
#[derive(Debug, Clone)]
pub struct Removal {
    /// The snapshot that no longer showed the role, and the one before it.
    pub observed_ms: Option<i64>,
    pub after_ms: Option<i64>,
    pub event: Option<Evidence>,
    /// The user was deleted rather than the role removed.
    pub deleted: bool,
}

impl Removal {
    /// In words: who removed it, when and from where (or the snapshot window).
    pub fn describe(&self) -> String {
        let what = if self.deleted {
            "user deleted"
        } else {
            "role removed"
        };
        match &self.event {
            Some(e) => format!(
                "{what} by {} at {} from {} (audit event {}; snapshot {})",
                e.actor_name
                    .as_deref()
                    .or(e.actor_id.as_deref())
                    .unwrap_or("an unnamed actor"),
                rfc3339(at(e.event_ms)),
                e.ip_address.as_deref().unwrap_or("an unknown address"),
                e.event_id,
                self.observed_ms.map_or("-".into(), |t| rfc3339(at(t)))
            ),
            None => format!(
                "{what}: observed between {} and {} (user snapshots; no audit event)",
                self.after_ms.map_or("-".into(), |t| rfc3339(at(t))),
                self.observed_ms.map_or("-".into(), |t| rfc3339(at(t)))
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Remediation {
    pub item: ReviewItem,
    pub decision: Decision,
    pub state: RemediationState,
    pub removal: Option<Removal>,
}

#[derive(Debug, Clone)]
pub struct ReviewStatus {
    pub campaign: Campaign,
    pub items: Vec<ReviewItem>,
    /// Every decision in the order recorded (history included).
    pub history: Vec<Decision>,
    /// The current decision of each decided item.
    pub current: BTreeMap<i64, Decision>,
    pub by_reviewer: BTreeMap<String, u64>,
    pub by_decision: BTreeMap<String, u64>,
    /// Undecided items after the due date.
    pub overdue_items: Vec<i64>,
    pub remediation: Vec<Remediation>,
    pub as_of_ms: i64,
}

impl ReviewStatus {
    pub fn total(&self) -> u64 {
        self.items.len() as u64
    }
    pub fn decided(&self) -> u64 {
        self.current.len() as u64
    }
    pub fn count(&self, s: RemediationState) -> u64 {
        self.remediation.iter().filter(|r| r.state == s).count() as u64
    }

    /// The summary `review status` prints.
    pub fn text(&self) -> String {
        let c = &self.campaign;
        let mut s = String::new();
        let _ = writeln!(s, "review {}: {}", c.id, c.name);
        let _ = writeln!(
            s,
            "  started {} (scope {}, accounts {}), due {}, {}",
            rfc3339(at(c.started_ms)),
            c.scope,
            c.accounts.join(", "),
            c.due_day.as_deref().unwrap_or("-"),
            match c.closed_ms {
                Some(t) => format!("closed {}", rfc3339(at(t))),
                None => "open".into(),
            }
        );
        let _ = writeln!(s, "  population sha256 {}", c.population_sha256);
        let _ = writeln!(s, "decided {}/{}", self.decided(), self.total());
        for (r, n) in &self.by_reviewer {
            let _ = writeln!(s, "  by {r}: {n}");
        }
        for (d, n) in &self.by_decision {
            let _ = writeln!(s, "  {d}: {n}");
        }
        let _ = writeln!(
            s,
            "overdue items (undecided after the due date): {}",
            self.overdue_items.len()
        );
        for no in &self.overdue_items {
            if let Some(it) = self.items.iter().find(|i| i.item_no == *no) {
                let _ = writeln!(s, "  item {no}: {} {} {}", it.account, it.user_id, it.role);
            }
        }
        let _ = writeln!(
            s,
            "remediation: {} revoke(s): {} done, {} open, {} overdue",
            self.remediation.len(),
            self.count(RemediationState::Done),
            self.count(RemediationState::Open),
            self.count(RemediationState::Overdue)
        );
        for r in &self.remediation {
            let it = &r.item;
            let _ = writeln!(
                s,
                "  item {} {}: {} {} ({}) role {}{}",
                it.item_no,
                r.state.as_str(),
                it.account,
                it.user_name.as_deref().unwrap_or("-"),
                it.user_id,
                it.role,
                r.removal
                    .as_ref()
                    .map(|m| format!(": {}", m.describe()))
                    .unwrap_or_default()
            );
        }
        s
    }
}

/// The state of campaign `id` as of `now`.
pub fn status(store: &Store, id: i64, now: DateTime<Utc>) -> Result<ReviewStatus, ReviewError> {
    let c = campaign(store, id)?;
    let items = store.review_items(id)?;
    let history = store.review_decisions(id)?;
    let current: BTreeMap<i64, Decision> = current_decisions(&history)
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    let mut by_reviewer = BTreeMap::new();
    let mut by_decision = BTreeMap::new();
    for d in current.values() {
        *by_reviewer.entry(d.reviewer.clone()).or_insert(0) += 1;
        *by_decision.entry(d.decision.clone()).or_insert(0) += 1;
    }
    let late = overdue(c.due_day.as_deref(), now);
    let overdue_items = if late {
        items
            .iter()
            .filter(|i| !current.contains_key(&i.item_no))
            .map(|i| i.item_no)
            .collect()
    } else {
        Vec::new()
    };
    // Current users, per account, for deletions.
    let mut deleted: HashMap<(String, String), Option<i64>> = HashMap::new();
    for a in &c.accounts {
        for l in store.list_users(Some(a))? {
            if l.user.status == "deleted" {
                deleted.insert((a.clone(), l.user.user_id.clone()), l.user.deleted_ms);
            }
        }
    }
    let mut remediation = Vec::new();
    for it in &items {
        let Some(d) = current.get(&it.item_no) else {
            continue;
        };
        if d.decision != "revoke" {
            continue;
        }
        // A snapshot after the campaign started that no longer showed the role.
        let removal = store
            .role_changes(&it.account, Some(&it.user_id))?
            .into_iter()
            .filter(|rc| {
                rc.role == it.role
                    && rc.change == "revoked"
                    && rc.observed_ms.is_some_and(|t| t > c.started_ms)
            })
            .min_by_key(|rc| rc.observed_ms)
            .map(|rc| Removal {
                observed_ms: rc.observed_ms,
                after_ms: rc.after_ms,
                event: rc.evidence,
                deleted: false,
            })
            .or_else(|| {
                deleted
                    .get(&(it.account.clone(), it.user_id.clone()))
                    .filter(|t| t.is_none_or(|t| t > c.started_ms))
                    .map(|t| Removal {
                        observed_ms: *t,
                        after_ms: None,
                        event: None,
                        deleted: true,
                    })
            });
        let state = match (&removal, late) {
            (Some(_), _) => RemediationState::Done,
            (None, true) => RemediationState::Overdue,
            (None, false) => RemediationState::Open,
        };
        remediation.push(Remediation {
            item: it.clone(),
            decision: d.clone(),
            state,
            removal,
        });
    }
    Ok(ReviewStatus {
        campaign: c,
        items,
        history,
        current,
        by_reviewer,
        by_decision,
        overdue_items,
        remediation,
        as_of_ms: now.timestamp_millis(),
    })
}
