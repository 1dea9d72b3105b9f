//! The dormant-accounts report: current users with no activity for at least `dormant_days` as of
//! now, longest inactive first, banded by how long for the chart.

use std::collections::BTreeMap;

use super::{
    col, earliest_note, invited_source, is_service, ColumnDef, ColumnType as T, CoverageWindow,
    Info, Kind, ACTIVITY_NOTE, DAY_MS, INVITED_FROM_API,
};
use crate::report::{card, Cell, Chart, ReportError, ReportRequest, Summary};
use crate::report_users::last_activity;
use crate::store::{Store, UserActivityRow, UserSelection};

pub(in crate::report) struct Dormant;

/// One dormant user.
pub(in crate::report) struct Row {
    account: String,
    user_id: String,
    user_name: Option<String>,
    display_name: Option<String>,
    user_type: Option<String>,
    status: String,
    roles: Vec<String>,
    privileged: bool,
    last_activity_ms: Option<i64>,
    last_activity_source: Option<String>,
    /// Which kind of activity the dormancy is based on: `sign-in`, `API use` or `none`.
    activity_basis: &'static str,
    inactive_since_ms: i64,
    /// What `inactive_since` counts from (the values of `docs/report-schema.md`).
    inactive_since_source: &'static str,
    days_inactive: i64,
    /// For the summary.
    service: bool,
}

impl Kind<14> for Dormant {
    const INFO: Info = Info {
        name: "dormant",
        title: "Dormant accounts",
        period: false,
        scope: "current (not deleted) users with no activity for at least the dormancy threshold",
        empty_text: "No dormant users: everyone was active within the threshold.",
    };

    const COLUMNS: [ColumnDef; 14] = [
        col("account", "Account", T::Text),
        col("user_id", "User id", T::Text),
        col("user_name", "User", T::Text),
        col("display_name", "Name", T::Text),
        col("user_type", "Type", T::Text),
        col("status", "Status", T::Text),
        col("roles", "Roles", T::List),
        col("privileged", "Privileged", T::Bool),
        col("last_activity", "Last activity", T::Time),
        col("last_activity_source", "Activity source", T::Text),
        col("activity_basis", "Based on", T::Text),
        col("inactive_since", "Inactive since", T::Time),
        col("inactive_since_source", "Counted from", T::Text),
        col("days_inactive", "Days inactive", T::Int),
    ];

    fn cells(r: Row) -> [Cell; 14] {
        [
            Cell::Text(r.account),
            Cell::Text(r.user_id),
            Cell::opt(r.user_name),
            Cell::opt(r.display_name),
            Cell::opt(r.user_type),
            Cell::Text(r.status),
            Cell::List(r.roles),
            Cell::Bool(r.privileged),
            Cell::opt_time(r.last_activity_ms),
            Cell::opt(r.last_activity_source),
            Cell::Text(r.activity_basis.to_string()),
            Cell::Time(r.inactive_since_ms),
            Cell::Text(r.inactive_since_source.to_string()),
            Cell::Int(r.days_inactive),
        ]
    }

    type Row = Row;
    type Tally = Tally;

    fn parameters(req: &ReportRequest<'_>) -> serde_json::Value {
        serde_json::json!({ "dormant_days": req.dormant_days })
    }

    fn notes(req: &ReportRequest<'_>, window: CoverageWindow) -> Vec<String> {
        vec![
            format!("dormant: no activity for at least {} days as of the report time", req.dormant_days),
            ACTIVITY_NOTE.into(),
            "a user never seen active counts from their invitation, else their creation, else the first time auditwarden saw them".into(),
            "deleted users are left out; users who never signed in and service users are included; privileged users (DigiCert ONE: a role whose code or name says \"admin\"; CertCentral: Administrator or Manager) come first".into(),
            "\"Based on\" says which activity the dormancy rests on: sign-in (the latest activity is a sign-in or sign-out, or the API's last sign-in date), API use (the latest activity is another action, as a service user's token makes; service users cannot sign in) or none (never seen active)".into(),
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
        let cut = now_ms - i64::from(req.dormant_days) * DAY_MS;
        store.for_each_user_activity(
            account,
            UserSelection::InactiveSince(cut),
            |r: UserActivityRow| {
                let basis = activity_basis(store, &r)?;
                emit(row(r, now_ms, basis))
            },
        )?;
        Ok(())
    }

    fn tally(req: &ReportRequest<'_>) -> Tally {
        Tally {
            privileged: 0,
            never_active: 0,
            api_use: 0,
            service: 0,
            bars: bands(req.dormant_days)
                .into_iter()
                .map(|b| (b, 0))
                .collect(),
            dormant_days: req.dormant_days,
        }
    }

    fn count(t: &mut Tally, r: &Row) {
        let never_active = r.last_activity_ms.is_none();
        if r.privileged {
            t.privileged += 1;
        }
        if never_active {
            t.never_active += 1;
        }
        if r.service {
            t.service += 1;
        }
        if r.activity_basis == BASIS_API {
            t.api_use += 1;
        }
        let band = band(t.dormant_days, r.days_inactive, never_active);
        *t.bars.entry(band).or_default() += 1;
    }

    fn summary(t: Tally, _req: &ReportRequest<'_>, rows: u64) -> Summary {
        Summary {
            rows,
            cards: vec![
                card("Dormant users", rows, false),
                card("Privileged and dormant", t.privileged, true),
                card("Never active", t.never_active, false),
                card("Service users", t.service, false),
                card("Based on API use", t.api_use, false),
            ],
            chart: Some(Chart {
                title: "Dormant users by days inactive".into(),
                bars: t.bars.into_iter().collect(),
            }),
        }
    }
}

const BASIS_SIGN_IN: &str = "sign-in";
const BASIS_API: &str = "API use";
const BASIS_NONE: &str = "none";

/// Which kind of activity a user's last activity is: a sign-in (the API's last sign-in date, or
/// a `login` or `logout` event), API use (any other action; always for service users, who have no sign-in),
/// or none.
fn activity_basis(store: &Store, r: &UserActivityRow) -> Result<&'static str, ReportError> {
    let Some(act) = last_activity(&r.listing) else {
        return Ok(BASIS_NONE);
    };
    if is_service(&r.listing.user) {
        return Ok(BASIS_API);
    }
    let from_event = r
        .listing
        .last_event
        .as_ref()
        .filter(|(t, _)| *t == act.at.timestamp_millis());
    match from_event {
        // The API's last sign-in date is the latest activity.
        None => Ok(BASIS_SIGN_IN),
        Some((_, id)) => Ok(
            match store.event_action(&r.listing.account, id)?.as_deref() {
                // A session's events: the user signed in interactively.
                Some("login" | "logout") => BASIS_SIGN_IN,
                _ => BASIS_API,
            },
        ),
    }
}

fn row(r: UserActivityRow, now_ms: i64, activity_basis: &'static str) -> Row {
    let act = last_activity(&r.listing);
    let u = r.listing.user;
    // The documented values (docs/report-schema.md); "never active" is what a null
    // last_activity says.
    let inactive_since_source = match (&act, invited_source(&u), u.created_ms) {
        (Some(_), _, _) => "last activity",
        (None, Some(INVITED_FROM_API), _) => "invitation",
        (None, Some(_), _) => "first seen by auditwarden",
        (None, None, Some(_)) => "creation",
        (None, None, None) => "first seen by auditwarden",
    };
    let service = is_service(&u);
    let (last_activity_ms, last_activity_source) = match act {
        Some(a) => (Some(a.at.timestamp_millis()), Some(a.source)),
        None => (None, None),
    };
    Row {
        account: r.listing.account,
        user_id: u.user_id,
        user_name: u.user_name,
        display_name: u.display_name,
        user_type: u.user_type,
        status: u.status.as_str().to_string(),
        roles: u.roles,
        privileged: r.privileged,
        last_activity_ms,
        last_activity_source,
        activity_basis,
        inactive_since_ms: r.inactive_since_ms,
        inactive_since_source,
        days_inactive: (now_ms - r.inactive_since_ms).max(0) / DAY_MS,
        service,
    }
}

/// Counters and the chart's bands.
pub(in crate::report) struct Tally {
    privileged: u64,
    never_active: u64,
    service: u64,
    api_use: u64,
    bars: BTreeMap<String, u64>,
    dormant_days: u32,
}

/// The chart's bands for a threshold of `n` days: `n..2n-1`, `2n..4n-1`, `4n+`, never active.
fn bands(n: u32) -> [String; 4] {
    let n = i64::from(n);
    // "1 day" rather than "1-1 days" for tiny thresholds.
    let range = |lo: i64, hi: i64| match (lo, hi) {
        (1, 1) => "1 day".to_string(),
        (lo, hi) if lo == hi => format!("{lo} days"),
        (lo, hi) => format!("{lo}-{hi} days"),
    };
    [
        range(n, 2 * n - 1),
        range(2 * n, 4 * n - 1),
        format!("{}+ days", 4 * n),
        "never active".into(),
    ]
}

fn band(n: u32, days: i64, never: bool) -> String {
    let [low, middle, high, never_active] = bands(n);
    let n = i64::from(n);
    if never {
        never_active
    } else if days < 2 * n {
        low
    } else if days < 4 * n {
        middle
    } else {
        high
    }
}
