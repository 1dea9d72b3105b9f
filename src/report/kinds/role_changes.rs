//! The role-change report: every role grant and revoke in the period, with its audit evidence
//! (who, from where) or the snapshots that observed it, and the alert rules that fired on it.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{col, ColumnDef, ColumnType as T, CoverageWindow, Info, Kind, Label};
use crate::report::{at, card, Cell, Chart, Period, ReportError, ReportRequest, Summary};
use crate::report_users::role_change_when;
use crate::store::{RoleChangeRow, Store};

pub(in crate::report) struct RoleChanges;

/// One role change.
pub(in crate::report) struct Row {
    /// When it is filed: the audit event's time, else the snapshot that observed it.
    when_ms: i64,
    /// The same instant in the display zone (RFC 3339 with its offset).
    when_local: String,
    account: String,
    user_id: String,
    user_name: Option<String>,
    role: String,
    /// `granted` or `revoked`.
    change: String,
    actor_id: Option<String>,
    actor_name: Option<String>,
    ip_address: Option<String>,
    /// "audit event ID", or the snapshots' window in words.
    evidence: String,
    event_id: Option<String>,
    observed_after_ms: Option<i64>,
    observed_ms: Option<i64>,
    source: String,
    alert_rules: Vec<String>,
    /// For the summary: the chart's day in the display zone, and a privileged role
    /// (`domain::is_privileged_role`).
    local_day: NaiveDate,
    privileged: bool,
}

impl Kind<17> for RoleChanges {
    const INFO: Info = Info {
        name: "role-changes",
        title: "Role changes",
        period: true,
        scope:
            "every role grant and revoke in the period that user snapshots or the audit log show",
        empty_text: "No role was granted or revoked in this period.",
    };

    const COLUMNS: [ColumnDef; 17] = [
        col("when", "When (UTC)", T::Time),
        ColumnDef {
            key: "when_local",
            label: Label::DisplayZone,
            ty: T::Text,
        },
        col("account", "Account", T::Text),
        col("user_id", "User id", T::Text),
        col("user_name", "User", T::Text),
        col("role", "Role", T::Text),
        col("change", "Change", T::Text),
        col("actor_id", "By (id)", T::Text),
        col("actor_name", "By", T::Text),
        col("ip_address", "Source IP", T::Text),
        col("evidence", "Evidence", T::Text),
        col("event_id", "Audit event", T::Text),
        col("observed_after", "Snapshot before", T::Time),
        col("observed", "Snapshot after", T::Time),
        col("source", "Established from", T::Text),
        col("alert_flagged", "Flagged by an alert", T::Bool),
        col("alert_rules", "Alert rules", T::List),
    ];

    fn cells(r: Row) -> [Cell; 17] {
        [
            Cell::Time(r.when_ms),
            Cell::Text(r.when_local),
            Cell::Text(r.account),
            Cell::Text(r.user_id),
            Cell::opt(r.user_name),
            Cell::Text(r.role),
            Cell::Text(r.change),
            Cell::opt(r.actor_id),
            Cell::opt(r.actor_name),
            Cell::opt(r.ip_address),
            Cell::Text(r.evidence),
            Cell::opt(r.event_id),
            Cell::opt_time(r.observed_after_ms),
            Cell::opt_time(r.observed_ms),
            Cell::Text(r.source),
            Cell::Bool(!r.alert_rules.is_empty()),
            Cell::List(r.alert_rules),
        ]
    }

    type Row = Row;
    type Tally = Tally;

    fn parameters(_req: &ReportRequest<'_>) -> serde_json::Value {
        serde_json::json!({})
    }

    fn notes(_req: &ReportRequest<'_>, _window: CoverageWindow) -> Vec<String> {
        vec![
            "a change proven by an audit event is filed at the event's time, with who made it and from which address".into(),
            "a change seen only by comparing user snapshots is filed at the snapshot that observed it, and said to have happened between the two snapshots".into(),
            "flagged: an alert rule ([alerts]) fired on the change; the rules are listed".into(),
        ]
    }

    fn for_each_row(
        store: &Store,
        req: &ReportRequest<'_>,
        account: &str,
        emit: &mut dyn FnMut(Row) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        let Period::Range { from, to } = req.period else {
            return Ok(());
        };
        store.for_each_role_change_in(
            account,
            from.timestamp_millis(),
            to.timestamp_millis(),
            |r: RoleChangeRow| emit(row(r, req)),
        )?;
        Ok(())
    }

    fn tally(req: &ReportRequest<'_>) -> Tally {
        let mut t = Tally::default();
        if let Period::Range { from, to } = req.period {
            let tz = req.time_zone;
            let first = from.with_timezone(&tz).date_naive();
            let last = (to - chrono::Duration::milliseconds(1))
                .max(from)
                .with_timezone(&tz)
                .date_naive();
            t.monthly = (last - first).num_days() > 92;
            let mut d = first;
            while d <= last {
                t.bars.insert(t.bucket(d), 0);
                match d.succ_opt() {
                    Some(n) => d = n,
                    None => break,
                }
            }
        }
        t
    }

    fn count(t: &mut Tally, r: &Row) {
        let granted = r.change == "granted";
        if !r.alert_rules.is_empty() {
            t.flagged += 1;
        }
        if granted {
            t.granted += 1;
        } else {
            t.revoked += 1;
        }
        if granted && r.privileged {
            t.privileged_grants += 1;
        }
        if r.event_id.is_none() {
            t.no_evidence += 1;
        }
        *t.bars.entry(t.bucket(r.local_day)).or_default() += 1;
    }

    fn summary(t: Tally, req: &ReportRequest<'_>, rows: u64) -> Summary {
        Summary {
            rows,
            cards: vec![
                card("Role changes", rows, false),
                card("Grants", t.granted, false),
                card("Revokes", t.revoked, false),
                card("Admin roles granted", t.privileged_grants, true),
                card("Without audit evidence", t.no_evidence, true),
                card("Flagged by an alert", t.flagged, true),
            ],
            chart: Some(Chart {
                title: format!(
                    "Role changes per {} ({})",
                    if t.monthly { "month" } else { "day" },
                    req.time_zone.name()
                ),
                bars: t.bars.into_iter().collect(),
            }),
        }
    }
}

fn row(r: RoleChangeRow, req: &ReportRequest<'_>) -> Row {
    let when = at(r.at_ms).with_timezone(&req.time_zone);
    let c = r.change;
    let privileged = match req.accounts.iter().find(|a| a.name == r.account) {
        Some(a) => crate::domain::is_privileged_role(a.kind, &c.role),
        None => crate::domain::is_privileged_role_any_kind(&c.role),
    };
    let evidence = match &c.evidence {
        Some(e) => format!("audit event {}", e.event_id),
        None => role_change_when(&c).replacen("observed between", "observed between snapshots", 1),
    };
    let (actor_id, actor_name, ip_address, event_id) = match c.evidence {
        Some(e) => (e.actor_id, e.actor_name, e.ip_address, Some(e.event_id)),
        None => (None, None, None, None),
    };
    Row {
        when_ms: r.at_ms,
        when_local: when.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        account: r.account,
        user_id: c.user_id,
        user_name: r.user_name,
        privileged,
        role: c.role,
        change: c.change.as_str().to_string(),
        actor_id,
        actor_name,
        ip_address,
        evidence,
        event_id,
        observed_after_ms: c.after_ms,
        observed_ms: c.observed_ms,
        source: c.source.as_str().to_string(),
        alert_rules: r.alert_rules,
        local_day: when.date_naive(),
    }
}

/// Counters and the chart's buckets (per day, or per month over long periods).
#[derive(Default)]
pub(in crate::report) struct Tally {
    granted: u64,
    revoked: u64,
    privileged_grants: u64,
    no_evidence: u64,
    flagged: u64,
    bars: BTreeMap<String, u64>,
    monthly: bool,
}

impl Tally {
    fn bucket(&self, d: NaiveDate) -> String {
        if self.monthly {
            d.format("%Y-%m").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    }
}
