//! Coverage: which days of an account's audit log are known complete, and which are not and why.
//! `status` prints it, and reports state it at the top ("complete from X to Y", or the gaps).
//! Built from the store's per-day coverage rows alone; a day counts as complete only when every
//! configured action filter has it complete.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::api::settings::{Account, AccountKind};
use crate::store::{Store, StoreError};

/// A run of days that is not known complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoverageSummary {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub days: u64,
    pub complete_days: u64,
    pub gaps: Vec<Gap>,
    /// Set when the account has no audit log to cover (CertCentral with `audit_log = false`).
    pub not_applicable: Option<String>,
}

impl CoverageSummary {
    pub fn is_complete(&self) -> bool {
        self.not_applicable.is_none() && self.gaps.is_empty()
    }

    /// One human line, e.g. "complete 2026-08-25..2026-11-23 (91 days)".
    pub fn describe(&self) -> String {
        if let Some(why) = &self.not_applicable {
            return why.clone();
        }
        if self.gaps.is_empty() {
            return format!(
                "complete {}..{} ({} days)",
                self.from, self.to, self.complete_days
            );
        }
        let gaps: Vec<String> = self
            .gaps
            .iter()
            .map(|g| {
                if g.from == g.to {
                    format!("{} ({})", g.from, g.reason)
                } else {
                    format!("{}..{} ({})", g.from, g.to, g.reason)
                }
            })
            .collect();
        format!(
            "INCOMPLETE {}..{}: {} of {} days complete; missing {}",
            self.from,
            self.to,
            self.complete_days,
            self.days,
            gaps.join(", ")
        )
    }
}

/// Coverage of `account` between two days (inclusive).
pub fn summarize(
    store: &Store,
    account: &Account,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<CoverageSummary, StoreError> {
    let mut summary = CoverageSummary {
        from,
        to,
        days: 0,
        complete_days: 0,
        gaps: Vec::new(),
        not_applicable: None,
    };
    if account.kind == AccountKind::CertCentral && !account.audit_log {
        summary.not_applicable = Some(
            "no audit log (CertCentral, audit_log = false): users are tracked from snapshots"
                .into(),
        );
        return Ok(summary);
    }
    // CertCentral's audit log comes whole from the Report Library (no action filters): a day is
    // complete once a finished report run covered it.
    let filters: Vec<String> =
        if account.actions.is_empty() || account.kind == AccountKind::CertCentral {
            vec![String::new()]
        } else {
            account.actions.clone()
        };
    // day -> Some(reason) when not complete for some filter.
    let mut state: BTreeMap<NaiveDate, Option<String>> = BTreeMap::new();
    for (i, f) in filters.iter().enumerate() {
        let rows: BTreeMap<NaiveDate, _> = store
            .coverage(&account.name, f, from, to)?
            .into_iter()
            .map(|c| (c.day, c))
            .collect();
        for day in from.iter_days().take_while(|d| *d <= to) {
            let verdict = match rows.get(&day) {
                Some(c) if c.complete => None,
                Some(c) => Some(c.note.clone().unwrap_or_else(|| "incomplete".into())),
                None => Some("not collected yet".to_string()),
            };
            let verdict = verdict.map(|r| {
                if f.is_empty() {
                    r
                } else {
                    format!("action {f}: {r}")
                }
            });
            let entry = state.entry(day).or_insert(None);
            if i == 0 || entry.is_none() {
                *entry = verdict.or(entry.take());
            }
        }
    }
    for (day, verdict) in state {
        summary.days += 1;
        match verdict {
            None => summary.complete_days += 1,
            Some(reason) => match summary.gaps.last_mut() {
                Some(g) if g.reason == reason && g.to.succ_opt() == Some(day) => g.to = day,
                _ => summary.gaps.push(Gap {
                    from: day,
                    to: day,
                    reason,
                }),
            },
        }
    }
    Ok(summary)
}
