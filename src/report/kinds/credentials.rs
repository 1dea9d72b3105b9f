//! The credentials report: the credentials that stop integrations when nobody watches them. The
//! service users of each account with their end date (a DigiCert ONE service user *is* its
//! token and stops working on that day, contract 1.1 and 1.4): expired, expiring within
//! `[reports] credential_warn_days`, or fine; then every API token and client-authentication
//! certificate the audit log mentions, one row each: created by whom and when, revoked or not,
//! and whether it is older than `[reports] max_credential_age_days`.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{col, earliest_note, ColumnDef, ColumnType as T, CoverageWindow, Info, Kind, DAY_MS};
use crate::report::{card, Cell, Chart, ReportError, ReportRequest, Summary};
use crate::store::{CredentialEvent, Store, UserRow};

pub(in crate::report) struct Credentials;

pub(in crate::report) struct Row {
    account: String,
    /// `service_user`, `api_token` or `client_auth_certificate`.
    credential: &'static str,
    id: Option<String>,
    name: Option<String>,
    roles: Vec<String>,
    created_ms: Option<i64>,
    created_by: Option<String>,
    end_date: Option<NaiveDate>,
    days_left: Option<i64>,
    revoked_ms: Option<i64>,
    revoked_by: Option<String>,
    age_days: Option<i64>,
    state: String,
    last_event: Option<String>,
    events: i64,
    evidence: Vec<String>,
}

const STATE_EXPIRED: &str = "expired";
const STATE_EXPIRING: &str = "expiring";
const STATE_REVOKED: &str = "revoked";
const STATE_TOO_OLD: &str = "older than the maximum age";

impl Kind<16> for Credentials {
    const INFO: Info = Info {
        name: "credentials",
        title: "Credentials",
        period: false,
        scope: "service users with their end dates, and the API tokens and client-authentication certificates the collected audit log mentions",
        empty_text: "No service user, API token or client-authentication certificate is recorded for these accounts.",
    };

    const COLUMNS: [ColumnDef; 16] = [
        col("account", "Account", T::Text),
        col("credential", "Credential", T::Text),
        col("id", "Id", T::Text),
        col("name", "Name", T::Text),
        col("roles", "Roles", T::List),
        col("created", "Created", T::Time),
        col("created_by", "Created by", T::Text),
        col("end_date", "End date", T::Text),
        col("days_left", "Days left", T::Int),
        col("revoked", "Revoked", T::Time),
        col("revoked_by", "Revoked by", T::Text),
        col("age_days", "Age (days)", T::Int),
        col("state", "State", T::Text),
        col("last_event", "Last event", T::Text),
        col("events", "Events", T::Int),
        col("evidence", "Audit events", T::List),
    ];

    fn cells(r: Row) -> [Cell; 16] {
        [
            Cell::Text(r.account),
            Cell::Text(r.credential.to_string()),
            Cell::opt(r.id),
            Cell::opt(r.name),
            Cell::List(r.roles),
            Cell::opt_time(r.created_ms),
            Cell::opt(r.created_by),
            Cell::opt(r.end_date.map(|d| d.format("%Y-%m-%d").to_string())),
            r.days_left.map_or(Cell::Null, Cell::Int),
            Cell::opt_time(r.revoked_ms),
            Cell::opt(r.revoked_by),
            r.age_days.map_or(Cell::Null, Cell::Int),
            Cell::Text(r.state),
            Cell::opt(r.last_event),
            Cell::Int(r.events),
            Cell::List(r.evidence),
        ]
    }

    type Row = Row;
    type Tally = Tally;

    fn parameters(req: &ReportRequest<'_>) -> serde_json::Value {
        serde_json::json!({
            "credential_warn_days": req.credential_warn_days,
            "max_credential_age_days": req.max_credential_age_days,
        })
    }

    fn notes(req: &ReportRequest<'_>, window: CoverageWindow) -> Vec<String> {
        vec![
            format!(
                "a service user stops working on its end date: expired when that day has passed, expiring when it is at most {} days away",
                req.credential_warn_days
            ),
            format!(
                "API tokens and client-authentication certificates come from the audit log (one row per credential): created by the first generate or create event, revoked by a revoke, delete or disable event; one created more than {} days ago and not revoked is flagged for rotation",
                req.max_credential_age_days
            ),
            "service users come first, the soonest end date first; deleted service users are left out".into(),
            earliest_note(window),
        ]
    }

    fn for_each_row(
        store: &Store,
        req: &ReportRequest<'_>,
        account: &str,
        emit: &mut dyn FnMut(Row) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        let today = req.now.date_naive();
        let now_ms = req.now.timestamp_millis();
        let warn = i64::from(req.credential_warn_days);
        // Service users, soonest end date first: at most one account's service users in memory.
        let mut service = Vec::new();
        store.for_each_service_user(account, |u: UserRow| {
            service.push(service_row(account, u, today, now_ms, warn));
            Ok::<(), ReportError>(())
        })?;
        service.sort_by_key(|r| (r.days_left.is_none(), r.days_left));
        for r in service {
            emit(r)?;
        }
        // Tokens and certificates: one group of events at a time.
        let max_age = i64::from(req.max_credential_age_days);
        let mut group: Option<Group> = None;
        store.for_each_credential_event(account, |e: CredentialEvent| {
            let key = group_key(&e);
            match &mut group {
                Some(g) if g.key == key => g.add(e),
                _ => {
                    if let Some(g) = group.take() {
                        emit(g.row(account, now_ms, max_age))?;
                    }
                    let mut g = Group::new(key);
                    g.add(e);
                    group = Some(g);
                }
            }
            Ok::<(), ReportError>(())
        })?;
        if let Some(g) = group {
            emit(g.row(account, now_ms, max_age))?;
        }
        Ok(())
    }

    fn tally(_req: &ReportRequest<'_>) -> Tally {
        Tally::default()
    }

    fn count(t: &mut Tally, r: &Row) {
        *t.bars.entry(r.state.clone()).or_default() += 1;
        match r.state.as_str() {
            STATE_EXPIRED => t.expired += 1,
            STATE_EXPIRING => t.expiring += 1,
            STATE_TOO_OLD => t.too_old += 1,
            STATE_REVOKED => t.revoked += 1,
            _ => {}
        }
        if r.credential == "service_user" {
            t.service += 1;
        } else {
            t.tokens += 1;
        }
    }

    fn summary(t: Tally, _req: &ReportRequest<'_>, rows: u64) -> Summary {
        Summary {
            rows,
            cards: vec![
                card("Service users", t.service, false),
                card("Expired service users", t.expired, true),
                card("Expiring service users", t.expiring, true),
                card("Tokens and certificates", t.tokens, false),
                card("Older than the maximum age", t.too_old, true),
                card("Revoked", t.revoked, false),
            ],
            chart: (!t.bars.is_empty()).then(|| Chart {
                title: "Credentials by state".into(),
                bars: t.bars.into_iter().collect(),
            }),
        }
    }
}

fn service_row(account: &str, u: UserRow, today: NaiveDate, now_ms: i64, warn: i64) -> Row {
    let end = crate::api::users::service_end_date(&u.raw);
    let days_left = end.map(|d| (d - today).num_days());
    let state = match days_left {
        _ if u.status == "expired" => STATE_EXPIRED.to_string(),
        Some(d) if d < 0 => STATE_EXPIRED.to_string(),
        Some(d) if d <= warn => STATE_EXPIRING.to_string(),
        Some(_) => "ok".to_string(),
        None => "no end date".to_string(),
    };
    Row {
        account: account.to_string(),
        credential: "service_user",
        name: u.display_name.clone().or(u.user_name.clone()),
        id: Some(u.user_id),
        roles: u.roles,
        created_ms: u.created_ms,
        created_by: None,
        end_date: end,
        days_left,
        revoked_ms: None,
        revoked_by: None,
        age_days: u.created_ms.map(|t| (now_ms - t).max(0) / DAY_MS),
        state,
        last_event: None,
        events: 0,
        evidence: Vec::new(),
    }
}

/// A credential's identity in the audit log: type and id (else name, else the event alone).
fn group_key(e: &CredentialEvent) -> (String, String) {
    (
        e.resource_type.clone(),
        e.resource_id
            .clone()
            .or(e.resource_name.clone())
            .unwrap_or_else(|| e.event_id.clone()),
    )
}

fn who(e: &CredentialEvent) -> String {
    e.actor_name
        .clone()
        .or(e.actor_id.clone())
        .unwrap_or_else(|| "an unnamed actor".into())
}

/// The events of one credential, oldest first.
struct Group {
    key: (String, String),
    name: Option<String>,
    created: Option<(i64, String)>,
    revoked: Option<(i64, String)>,
    last: Option<String>,
    events: i64,
    /// The first and the latest event ids (not every event: a busy token has thousands).
    first_id: Option<String>,
    last_id: Option<String>,
}

impl Group {
    fn new(key: (String, String)) -> Group {
        Group {
            key,
            name: None,
            created: None,
            revoked: None,
            last: None,
            events: 0,
            first_id: None,
            last_id: None,
        }
    }

    fn add(&mut self, e: CredentialEvent) {
        let failed = e
            .status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("failure"));
        self.events += 1;
        if self.name.is_none() {
            self.name = e.resource_name.clone();
        }
        let action = e.action.to_ascii_lowercase();
        if !failed {
            if matches!(action.as_str(), "generate" | "create") && self.created.is_none() {
                self.created = Some((e.ts_ms, who(&e)));
            }
            if matches!(action.as_str(), "revoke" | "delete" | "disable") {
                self.revoked = Some((e.ts_ms, who(&e)));
            }
        }
        self.last = Some(format!(
            "{} at {} by {} from {}",
            e.action,
            crate::export::rfc3339(crate::report::at(e.ts_ms)),
            who(&e),
            e.ip_address.as_deref().unwrap_or("an unknown address")
        ));
        if self.first_id.is_none() {
            self.first_id = Some(e.event_id.clone());
        }
        self.last_id = Some(e.event_id);
    }

    fn row(self, account: &str, now_ms: i64, max_age_days: i64) -> Row {
        let credential = if self.key.0 == "api_token" {
            "api_token"
        } else {
            "client_auth_certificate"
        };
        let age = self
            .created
            .as_ref()
            .map(|(t, _)| (now_ms - t).max(0) / DAY_MS);
        let state = match (&self.revoked, age) {
            (Some(_), _) => STATE_REVOKED.to_string(),
            (None, Some(a)) if a > max_age_days => STATE_TOO_OLD.to_string(),
            (None, Some(_)) => "active".to_string(),
            (None, None) => "active (created before the collected log)".to_string(),
        };
        let mut evidence: Vec<String> = self.first_id.into_iter().collect();
        if let Some(l) = self.last_id {
            if !evidence.contains(&l) {
                evidence.push(l);
            }
        }
        Row {
            account: account.to_string(),
            credential,
            id: Some(self.key.1),
            name: self.name,
            roles: Vec::new(),
            created_ms: self.created.as_ref().map(|(t, _)| *t),
            created_by: self.created.map(|(_, w)| w),
            end_date: None,
            days_left: None,
            revoked_ms: self.revoked.as_ref().map(|(t, _)| *t),
            revoked_by: self.revoked.map(|(_, w)| w),
            age_days: age,
            state,
            last_event: self.last,
            events: self.events,
            evidence,
        }
    }
}

#[derive(Default)]
pub(in crate::report) struct Tally {
    service: u64,
    expired: u64,
    expiring: u64,
    tokens: u64,
    too_old: u64,
    revoked: u64,
    bars: BTreeMap<String, u64>,
}
