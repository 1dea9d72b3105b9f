//! The invitations report: users invited and not yet active (with their age and whether they are
//! stale), and invitations accepted in the period (with the time they took).

use super::{
    col, ColumnDef, ColumnType as T, CoverageWindow, Info, Kind, DAY_MS, INVITED_FIRST_SEEN,
    INVITED_FROM_API,
};
use crate::collect::users::is_stale_invite;
use crate::report::{
    card, human_duration, Card, Cell, Period, ReportError, ReportRequest, Summary,
};
use crate::report_users::acceptance;
use crate::store::{Store, UserActivityRow, UserSelection};

pub(in crate::report) struct Invitations;

/// One invitation, pending or accepted.
pub(in crate::report) struct Row {
    account: String,
    user_id: String,
    /// The user name, else the display name.
    user_name: Option<String>,
    email: Option<String>,
    roles: Vec<String>,
    /// `pending` (still invited now) or `accepted` (in the period).
    pending: bool,
    invited_ms: i64,
    /// Pending only.
    age_days: Option<i64>,
    stale: bool,
    accepted_ms: Option<i64>,
    accepted_source: Option<String>,
    to_accept_secs: Option<i64>,
    invited_source: &'static str,
}

impl Kind<14> for Invitations {
    const INFO: Info = Info {
        name: "invitations",
        title: "Invitations",
        period: true,
        scope: "users added to an account and not yet activated (DigiCert ONE PENDING, CertCentral invited or pending), and those activated in the period; CertCentral's separate User Invitations (Account > User Invitations) are not users until an administrator approves them and no API lists them, so they are not in this report",
        empty_text: "No pending invitations, and none accepted in this period.",
    };

    const COLUMNS: [ColumnDef; 14] = [
        col("account", "Account", T::Text),
        col("user_id", "User id", T::Text),
        col("user_name", "User", T::Text),
        col("email", "Email", T::Text),
        col("roles", "Roles", T::List),
        col("state", "State", T::Text),
        col("invited", "Invited", T::Time),
        col("age_days", "Pending for (days)", T::Int),
        col("stale", "Stale", T::Bool),
        col("accepted", "Accepted", T::Time),
        col("accepted_source", "Acceptance known from", T::Text),
        col("time_to_accept_secs", "Time to accept (s)", T::Int),
        col("time_to_accept", "Time to accept", T::Text),
        col("invited_source", "Invited time from", T::Text),
    ];

    fn cells(r: Row) -> [Cell; 14] {
        let to_accept = r.to_accept_secs.map_or(Cell::Null, |s| {
            Cell::Text(if r.invited_source == INVITED_FIRST_SEEN {
                format!("{} (since first seen)", human_duration(s))
            } else {
                human_duration(s)
            })
        });
        [
            Cell::Text(r.account),
            Cell::Text(r.user_id),
            Cell::opt(r.user_name),
            Cell::opt(r.email),
            Cell::List(r.roles),
            Cell::text(if r.pending { "pending" } else { "accepted" }),
            Cell::Time(r.invited_ms),
            r.age_days.map_or(Cell::Null, Cell::Int),
            Cell::Bool(r.stale),
            Cell::opt_time(r.accepted_ms),
            Cell::opt(r.accepted_source),
            r.to_accept_secs.map_or(Cell::Null, Cell::Int),
            to_accept,
            Cell::text(r.invited_source),
        ]
    }

    type Row = Row;
    type Tally = Tally;

    fn parameters(req: &ReportRequest<'_>) -> serde_json::Value {
        serde_json::json!({ "stale_invite_days": req.stale_invite_days })
    }

    fn notes(req: &ReportRequest<'_>, _window: CoverageWindow) -> Vec<String> {
        vec![
            format!("pending invitations are those still pending now; stale: pending for more than {} days", req.stale_invite_days),
            "accepted invitations are listed when the acceptance falls in the period; the acceptance is the sign-in the API reports, else the first sign-in event in the window, else when it was observed".into(),
            format!("invited is the API's creation time of the user (invited_source {INVITED_FROM_API:?}) when it has one; CertCentral has none, so there it is when auditwarden first saw the user invited (invited_source {INVITED_FIRST_SEEN:?}): the invitation may be older, and its age and time to accept are counted from that sighting"),
            "CertCentral's User Invitations flow (Account > User Invitations) is invisible to its API until an invitation is approved: only users already added are listed".into(),
        ]
    }

    fn for_each_row(
        store: &Store,
        req: &ReportRequest<'_>,
        account: &str,
        emit: &mut dyn FnMut(Row) -> Result<(), ReportError>,
    ) -> Result<(), ReportError> {
        let (from, to) = match req.period {
            Period::Range { from, to } => (from.timestamp_millis(), to.timestamp_millis()),
            Period::AsOf(t) => (i64::MIN, t.timestamp_millis()),
        };
        let now_ms = req.now.timestamp_millis();
        store.for_each_user_activity(
            account,
            UserSelection::Invitations,
            |r: UserActivityRow| {
                let u = &r.listing.user;
                let pending = u.status == crate::domain::UserStatus::Invited;
                let acc = if pending {
                    None
                } else {
                    match acceptance(&r.listing) {
                        Some(a) if a.at_ms >= from && a.at_ms < to => Some(a),
                        // Accepted outside the period: not in this report.
                        _ => return Ok(()),
                    }
                };
                let invited_ms = u.invited_ms.unwrap_or(u.first_seen_ms);
                let invited_source = super::invited_source(u).unwrap_or(INVITED_FIRST_SEEN);
                let stale = is_stale_invite(u, req.now, req.stale_invite_days);
                let (accepted_ms, accepted_source, to_accept_secs) = match acc {
                    Some(a) => (Some(a.at_ms), Some(a.source), a.to_accept_secs),
                    None => (None, None, None),
                };
                let u = r.listing.user;
                emit(Row {
                    account: r.listing.account,
                    user_id: u.user_id,
                    user_name: u.user_name.or(u.display_name),
                    email: u.email,
                    roles: u.roles,
                    pending,
                    invited_ms,
                    age_days: pending.then(|| (now_ms - invited_ms).max(0) / DAY_MS),
                    stale,
                    accepted_ms,
                    accepted_source,
                    to_accept_secs,
                    invited_source,
                })
            },
        )?;
        Ok(())
    }

    fn tally(_req: &ReportRequest<'_>) -> Tally {
        Tally::default()
    }

    fn count(t: &mut Tally, r: &Row) {
        if r.pending {
            t.pending += 1;
        } else {
            t.accepted += 1;
        }
        if r.stale {
            t.stale += 1;
        }
        if let Some(s) = r.to_accept_secs {
            t.timed += 1;
            t.accept_secs_total += s;
        }
    }

    fn summary(t: Tally, _req: &ReportRequest<'_>, rows: u64) -> Summary {
        let mean = if t.timed > 0 {
            human_duration(t.accept_secs_total / t.timed as i64)
        } else {
            "n/a".into()
        };
        Summary {
            rows,
            cards: vec![
                card("Pending", t.pending, false),
                card("Stale (over the threshold)", t.stale, true),
                card("Accepted in period", t.accepted, false),
                Card {
                    label: "Mean time to accept",
                    value: mean,
                    tone: "",
                },
            ],
            chart: None,
        }
    }
}

/// Counters (the mean time to accept is a sum and a count).
#[derive(Default)]
pub(in crate::report) struct Tally {
    pending: u64,
    accepted: u64,
    stale: u64,
    timed: u64,
    accept_secs_total: i64,
}
