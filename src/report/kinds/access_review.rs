//! The access review: every current user of each account with their roles, status and last
//! activity, privileged users first.

use std::collections::BTreeMap;

use super::{
    col, earliest_note, is_service, ColumnDef, ColumnType as T, CoverageWindow, Info, Kind,
    ACTIVITY_NOTE, DAY_MS,
};
use crate::report::{card, Cell, Chart, ReportError, ReportRequest, Summary};
use crate::report_users::last_activity;
use crate::store::{Store, UserActivityRow, UserSelection};

pub(in crate::report) struct AccessReview;

/// One current user.
pub(in crate::report) struct Row {
    account: String,
    user_id: String,
    user_name: Option<String>,
    display_name: Option<String>,
    email: Option<String>,
    user_type: Option<String>,
    status: String,
    roles: Vec<String>,
    privileged: bool,
    last_activity_ms: Option<i64>,
    last_activity_source: Option<String>,
    days_since_activity: Option<i64>,
    created_ms: Option<i64>,
    /// For the summary: a service user; inactive for at least the dormancy threshold.
    service: bool,
    inactive: bool,
}

impl Kind<13> for AccessReview {
    const INFO: Info = Info {
        name: "access-review",
        title: "Access review",
        period: false,
        scope: "every current (not deleted) user of each account",
        empty_text: "No users are recorded for these accounts.",
    };

    const COLUMNS: [ColumnDef; 13] = [
        col("account", "Account", T::Text),
        col("user_id", "User id", T::Text),
        col("user_name", "User", T::Text),
        col("display_name", "Name", T::Text),
        col("email", "Email", T::Text),
        col("user_type", "Type", T::Text),
        col("status", "Status", T::Text),
        col("roles", "Roles", T::List),
        col("privileged", "Privileged", T::Bool),
        col("last_activity", "Last activity", T::Time),
        col("last_activity_source", "Activity source", T::Text),
        col("days_since_activity", "Days since activity", T::Int),
        col("created", "Created", T::Time),
    ];

    fn cells(r: Row) -> [Cell; 13] {
        [
            Cell::Text(r.account),
            Cell::Text(r.user_id),
            Cell::opt(r.user_name),
            Cell::opt(r.display_name),
            Cell::opt(r.email),
            Cell::opt(r.user_type),
            Cell::Text(r.status),
            Cell::List(r.roles),
            Cell::Bool(r.privileged),
            Cell::opt_time(r.last_activity_ms),
            Cell::opt(r.last_activity_source),
            r.days_since_activity.map_or(Cell::Null, Cell::Int),
            Cell::opt_time(r.created_ms),
        ]
    }

    type Row = Row;
    type Tally = Tally;

    fn parameters(req: &ReportRequest<'_>) -> serde_json::Value {
        serde_json::json!({ "dormant_days": req.dormant_days })
    }

    fn notes(_req: &ReportRequest<'_>, window: CoverageWindow) -> Vec<String> {
        vec![
            "every current (not deleted) user of each account with their roles and status; privileged users first".into(),
            ACTIVITY_NOTE.into(),
            earliest_note(window),
        ]
    }

    fn for_each_row(
        store: &Store,
        req: &ReportRequest<'_>,
        account: &str,
        emit: &mut dyn FnMut(Row) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        let now_ms = req.now.timestamp_millis();
        let threshold_ms = i64::from(req.dormant_days) * DAY_MS;
        store.for_each_user_activity(account, UserSelection::Current, |r: UserActivityRow| {
            let act = last_activity(&r.listing);
            let (last_activity_ms, last_activity_source) = match act {
                Some(a) => (Some(a.at.timestamp_millis()), Some(a.source)),
                None => (None, None),
            };
            let u = r.listing.user;
            emit(Row {
                account: r.listing.account,
                service: is_service(&u),
                user_id: u.user_id,
                user_name: u.user_name,
                display_name: u.display_name,
                email: u.email,
                user_type: u.user_type,
                status: u.status.as_str().to_string(),
                roles: u.roles,
                privileged: r.privileged,
                last_activity_ms,
                last_activity_source,
                days_since_activity: last_activity_ms.map(|t| (now_ms - t).max(0) / DAY_MS),
                created_ms: u.created_ms,
                inactive: (now_ms - r.inactive_since_ms) >= threshold_ms,
            })
        })?;
        Ok(())
    }

    fn tally(_req: &ReportRequest<'_>) -> Tally {
        Tally::default()
    }

    fn count(t: &mut Tally, r: &Row) {
        if r.privileged {
            t.privileged += 1;
        }
        if r.service {
            t.service += 1;
        }
        if r.inactive {
            t.inactive += 1;
        }
        *t.bars.entry(r.status.clone()).or_default() += 1;
    }

    fn summary(t: Tally, _req: &ReportRequest<'_>, rows: u64) -> Summary {
        Summary {
            rows,
            cards: vec![
                card("Users", rows, false),
                card("Privileged", t.privileged, false),
                card("Service users", t.service, false),
                card("Inactive over the dormancy threshold", t.inactive, true),
            ],
            chart: (!t.bars.is_empty()).then(|| Chart {
                title: "Users by status".into(),
                bars: t.bars.into_iter().collect(),
            }),
        }
    }
}

/// Counters and users by status (the chart).
#[derive(Default)]
pub(in crate::report) struct Tally {
    privileged: u64,
    service: u64,
    inactive: u64,
    bars: BTreeMap<String, u64>,
}
