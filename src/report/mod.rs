//! Compliance reports: role changes, dormant accounts, invitations and the access review, built
//! from the store alone (reports never call the network) and rendered as CSV, HTML or JSON.
//!
//! A report is a header ([`Meta`]: period, generation time, version, display time zone and the
//! coverage of the collected data, so a report over incomplete data says so at the top), rows of
//! [`Cell`]s in a fixed column order, and a [`Summary`] (cards and an optional chart) tallied while
//! the rows stream past. Rows go from SQLite to the renderer one at a time: memory stays flat in
//! the number of rows. The HTML renderer spools its table to a temporary file so the summary can
//! sit above it. `run` writes the scheduled set (`auditwarden reports run`).

mod csv;
mod html;
mod json;
pub mod run;
pub mod verify;

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::collect::users::is_stale_invite;
use crate::config::Account;
use crate::coverage::{self, CoverageSummary};
use crate::export::rfc3339;
use crate::report_users::{acceptance, last_activity, role_change_when};
use crate::store::{Store, StoreError, UserActivityRow, UserSelection};

/// The reports there are. One `match` on this shows what each one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ReportKind {
    /// Every role grant and revoke in the period.
    RoleChanges,
    /// Users with no activity for at least the dormancy threshold, as of now.
    Dormant,
    /// Pending invitations, and invitations accepted in the period.
    Invitations,
    /// Current users, their roles, status and last activity, as of now.
    AccessReview,
}

impl ReportKind {
    pub const ALL: [ReportKind; 4] = [
        ReportKind::RoleChanges,
        ReportKind::Dormant,
        ReportKind::Invitations,
        ReportKind::AccessReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::RoleChanges => "role-changes",
            ReportKind::Dormant => "dormant",
            ReportKind::Invitations => "invitations",
            ReportKind::AccessReview => "access-review",
        }
    }

    pub fn from_name(s: &str) -> Option<ReportKind> {
        ReportKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn title(self) -> &'static str {
        match self {
            ReportKind::RoleChanges => "Role changes",
            ReportKind::Dormant => "Dormant accounts",
            ReportKind::Invitations => "Invitations",
            ReportKind::AccessReview => "Access review",
        }
    }

    /// A period report covers `--from..--to` (default: the last 30 days); the others are a
    /// snapshot as of the generation time.
    pub fn is_period(self) -> bool {
        matches!(self, ReportKind::RoleChanges | ReportKind::Invitations)
    }

    /// What the report covers, and what it cannot see.
    fn scope(self) -> &'static str {
        match self {
            ReportKind::RoleChanges => "every role grant and revoke in the period that user snapshots or the audit log show",
            ReportKind::Dormant => "current (not deleted) users with no activity for at least the dormancy threshold",
            ReportKind::Invitations => "users added to an account and not yet activated (DigiCert ONE PENDING, CertCentral invited or pending), and those activated in the period; CertCentral's separate User Invitations (Account > User Invitations) are not users until an administrator approves them and no API lists them, so they are not in this report",
            ReportKind::AccessReview => "every current (not deleted) user of each account",
        }
    }

    fn empty_text(self) -> &'static str {
        match self {
            ReportKind::RoleChanges => "No role was granted or revoked in this period.",
            ReportKind::Dormant => "No dormant users: everyone was active within the threshold.",
            ReportKind::Invitations => "No pending invitations, and none accepted in this period.",
            ReportKind::AccessReview => "No users are recorded for these accounts.",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ReportFormat {
    Csv,
    Html,
    Json,
}

impl ReportFormat {
    pub const ALL: [ReportFormat; 3] = [ReportFormat::Csv, ReportFormat::Html, ReportFormat::Json];

    pub fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Csv => "csv",
            ReportFormat::Html => "html",
            ReportFormat::Json => "json",
        }
    }

    pub fn from_name(s: &str) -> Option<ReportFormat> {
        ReportFormat::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the report: {0}")]
    Csv(#[from] ::csv::Error),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a report covers in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// `[from, to)`.
    Range {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    AsOf(DateTime<Utc>),
}

/// Everything a report is built from, besides the store.
#[derive(Debug, Clone)]
pub struct ReportRequest<'a> {
    pub kind: ReportKind,
    pub accounts: Vec<&'a Account>,
    pub period: Period,
    pub now: DateTime<Utc>,
    pub time_zone: Tz,
    pub dormant_days: u32,
    pub stale_invite_days: u32,
}

/// The start of a calendar day in `tz` (a day that starts inside a DST gap starts when the
/// clocks resume).
pub fn start_of_day(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    let naive = d.and_time(NaiveTime::MIN);
    (0..=180)
        .map(|m| naive + chrono::Duration::minutes(m))
        .find_map(|t| tz.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| naive.and_utc())
}

/// The default period of a period report: the 30 days before `now`.
pub fn default_period(now: DateTime<Utc>) -> Period {
    Period::Range {
        from: now - chrono::Duration::days(30),
        to: now,
    }
}

/// A value in a report row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    /// UTC milliseconds; shown in UTC and, in HTML, also in the display time zone.
    Time(i64),
    Int(i64),
    Bool(bool),
    List(Vec<String>),
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
    fn opt_text(s: Option<&str>) -> Cell {
        s.map_or(Cell::Null, |s| Cell::Text(s.to_string()))
    }
    fn opt_time(t: Option<i64>) -> Cell {
        t.map_or(Cell::Null, Cell::Time)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub key: &'static str,
    pub label: String,
    #[serde(rename = "type")]
    pub ty: &'static str,
}

fn col(key: &'static str, label: &str, ty: &'static str) -> Column {
    Column {
        key,
        label: label.to_string(),
        ty,
    }
}

/// Coverage of one account's audit log over the report's window.
#[derive(Debug, Clone, Serialize)]
pub struct AccountCoverage {
    pub account: String,
    pub kind: &'static str,
    pub statement: String,
    pub complete: bool,
    pub coverage: CoverageSummary,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodMeta {
    /// Inclusive start (period reports).
    pub from: Option<String>,
    /// Exclusive end (period reports).
    pub to: Option<String>,
    /// The instant a point-in-time report describes.
    pub as_of: Option<String>,
    /// In words, in the display time zone.
    pub description: String,
}

/// The header of every report.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub schema: &'static str,
    pub kind: &'static str,
    pub title: String,
    pub period: PeriodMeta,
    pub generated_at: String,
    pub generator: String,
    pub display_time_zone: String,
    /// True when every account's audit log is known complete over the coverage window.
    pub complete: bool,
    pub accounts: Vec<AccountCoverage>,
    pub parameters: serde_json::Value,
    /// What the report covers, and what it cannot (one sentence).
    pub scope: String,
    pub notes: Vec<String>,
    pub columns: Vec<Column>,
}

/// The JSON schema identifier (see `docs/report-schema.md`).
pub const SCHEMA: &str = "auditwarden-report/1";

#[derive(Debug, Clone, Serialize)]
pub struct Card {
    pub label: &'static str,
    pub value: String,
    /// `warn` draws attention (privileged dormant users, stale invitations...).
    pub tone: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub title: String,
    pub bars: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rows: u64,
    pub cards: Vec<Card>,
    pub chart: Option<Chart>,
}

/// A renderer: the header, then each row, then the summary.
trait Sink {
    fn begin(&mut self, meta: &Meta) -> Result<(), ReportError>;
    fn row(&mut self, cells: &[Cell]) -> Result<(), ReportError>;
    fn finish(&mut self, meta: &Meta, summary: &Summary) -> Result<(), ReportError>;
}

/// What a finished report says about itself (for the CLI and the manifest).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub rows: u64,
    pub complete: bool,
    pub coverage: Vec<String>,
    pub period: String,
    /// [`Meta::scope`]: CSV has no header for it, so the manifest and the CLI carry it.
    pub scope: String,
}

const DAY_MS: i64 = 86_400_000;

/// Build the report `req` from `store` and write it to `out` in `format`.
pub fn generate(
    store: &Store,
    req: &ReportRequest<'_>,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<Outcome, ReportError> {
    let meta = meta(store, req)?;
    let mut sink: Box<dyn Sink + '_> = match format {
        ReportFormat::Csv => Box::new(csv::CsvSink::new(out)),
        ReportFormat::Json => Box::new(json::JsonSink::new(out)),
        ReportFormat::Html => Box::new(html::HtmlSink::new(out, req.time_zone)?),
    };
    sink.begin(&meta)?;
    let mut tally = Tally::new(req);
    let mut rows = 0u64;
    let mut emit = |cells: Vec<Cell>, tally_key: TallyRow| -> Result<(), ReportError> {
        tally.add(&tally_key);
        rows += 1;
        sink.row(&cells)
    };
    build_rows(store, req, &mut emit)?;
    let summary = tally.summary(req, rows);
    sink.finish(&meta, &summary)?;
    Ok(Outcome {
        rows,
        complete: meta.complete,
        coverage: meta
            .accounts
            .iter()
            .map(|a| format!("{}: {}", a.account, a.statement))
            .collect(),
        period: meta.period.description.clone(),
        scope: meta.scope.clone(),
    })
}

fn local(tz: Tz, t: DateTime<Utc>) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The window whose audit-log coverage the report depends on.
fn coverage_window(req: &ReportRequest<'_>) -> (NaiveDate, NaiveDate) {
    match req.period {
        Period::Range { from, to } => {
            let last = (to - chrono::Duration::milliseconds(1)).max(from);
            (from.date_naive(), last.date_naive())
        }
        Period::AsOf(t) => {
            let to = t.date_naive();
            let from = to
                .checked_sub_days(Days::new(u64::from(req.dormant_days)))
                .unwrap_or(to);
            (from, to)
        }
    }
}

fn meta(store: &Store, req: &ReportRequest<'_>) -> Result<Meta, ReportError> {
    let (cov_from, cov_to) = coverage_window(req);
    let mut accounts = Vec::new();
    for a in &req.accounts {
        let c = coverage::summarize(store, a, cov_from, cov_to)?;
        accounts.push(AccountCoverage {
            account: a.name.clone(),
            kind: a.kind.as_str(),
            statement: c.describe(),
            // An account without an audit log (CertCentral) is not "incomplete": it says so.
            complete: c.is_complete() || c.not_applicable.is_some(),
            coverage: c,
        });
    }
    let tz = req.time_zone;
    let period = match req.period {
        Period::Range { from, to } => PeriodMeta {
            from: Some(rfc3339(from)),
            to: Some(rfc3339(to)),
            as_of: None,
            description: format!("{} to {} (end exclusive)", local(tz, from), local(tz, to)),
        },
        Period::AsOf(t) => PeriodMeta {
            from: None,
            to: None,
            as_of: Some(rfc3339(t)),
            description: format!("as of {}", local(tz, t)),
        },
    };
    let activity = "a user's activity is their latest successful audit event as actor (sign-ins \
        and anything else they did), or the API's last sign-in date (CertCentral), whichever is later";
    let earliest = format!(
        "activity is known only from the collected audit log: coverage is stated above for \
         {cov_from}..{cov_to}; earlier activity is not seen"
    );
    let (parameters, notes) = match req.kind {
        ReportKind::RoleChanges => (
            serde_json::json!({}),
            vec![
                "a change proven by an audit event is filed at the event's time, with who made it and from which address".into(),
                "a change seen only by comparing user snapshots is filed at the snapshot that observed it, and said to have happened between the two snapshots".into(),
                "flagged: an alert rule ([alerts]) fired on the change; the rules are listed".into(),
            ],
        ),
        ReportKind::Dormant => (
            serde_json::json!({ "dormant_days": req.dormant_days }),
            vec![
                format!("dormant: no activity for at least {} days as of the report time", req.dormant_days),
                activity.into(),
                "a user never seen active counts from their invitation, else their creation, else the first time auditwarden saw them".into(),
                "deleted users are left out; service users are included; privileged users (a role containing \"admin\") come first".into(),
                earliest,
            ],
        ),
        ReportKind::Invitations => (
            serde_json::json!({ "stale_invite_days": req.stale_invite_days }),
            vec![
                format!("pending invitations are those still pending now; stale: pending for more than {} days", req.stale_invite_days),
                "accepted invitations are listed when the acceptance falls in the period; the acceptance is the sign-in the API reports, else the first sign-in event in the window, else when it was observed".into(),
                format!("invited is the API's creation time of the user (invited_source {INVITED_FROM_API:?}) when it has one; CertCentral has none, so there it is when auditwarden first saw the user invited (invited_source {INVITED_FIRST_SEEN:?}): the invitation may be older, and its age and time to accept are counted from that sighting"),
                "CertCentral's User Invitations flow (Account > User Invitations) is invisible to its API until an invitation is approved: only users already added are listed".into(),
            ],
        ),
        ReportKind::AccessReview => (
            serde_json::json!({ "dormant_days": req.dormant_days }),
            vec![
                "every current (not deleted) user of each account with their roles and status; privileged users first".into(),
                activity.into(),
                earliest,
            ],
        ),
    };
    Ok(Meta {
        schema: SCHEMA,
        kind: req.kind.as_str(),
        title: req.kind.title().to_string(),
        period,
        generated_at: rfc3339(req.now),
        generator: format!("auditwarden {}", env!("CARGO_PKG_VERSION")),
        display_time_zone: tz.name().to_string(),
        complete: accounts.iter().all(|a| a.complete),
        accounts,
        parameters,
        scope: req.kind.scope().to_string(),
        notes,
        columns: columns(req),
    })
}

/// `invited_source`: the invitation time is the API's creation time of the user.
const INVITED_FROM_API: &str = "created_at";
/// `invited_source`: the API gives no creation time; the invitation time is auditwarden's first
/// sighting of the user invited (CertCentral).
const INVITED_FIRST_SEEN: &str = "first seen by auditwarden";

/// Where a user's invitation time comes from (`None`: not invited). `invited_ms` is the API's
/// `created_at` when there is one (see `collect::users`), else the first sighting.
fn invited_source(u: &crate::store::UserRow) -> Option<&'static str> {
    let invited = u.invited_ms?;
    Some(if u.created_ms == Some(invited) {
        INVITED_FROM_API
    } else {
        INVITED_FIRST_SEEN
    })
}

fn columns(req: &ReportRequest<'_>) -> Vec<Column> {
    // Not "When (UTC)" again when the display zone is UTC: each header names one column.
    let local_label = format!("When, display zone ({})", req.time_zone.name());
    match req.kind {
        ReportKind::RoleChanges => vec![
            col("when", "When (UTC)", "time"),
            Column {
                key: "when_local",
                label: local_label,
                ty: "text",
            },
            col("account", "Account", "text"),
            col("user_id", "User id", "text"),
            col("user_name", "User", "text"),
            col("role", "Role", "text"),
            col("change", "Change", "text"),
            col("actor_id", "By (id)", "text"),
            col("actor_name", "By", "text"),
            col("ip_address", "Source IP", "text"),
            col("evidence", "Evidence", "text"),
            col("event_id", "Audit event", "text"),
            col("observed_after", "Snapshot before", "time"),
            col("observed", "Snapshot after", "time"),
            col("source", "Established from", "text"),
            col("alert_flagged", "Flagged by an alert", "bool"),
            col("alert_rules", "Alert rules", "list"),
        ],
        ReportKind::Dormant => vec![
            col("account", "Account", "text"),
            col("user_id", "User id", "text"),
            col("user_name", "User", "text"),
            col("display_name", "Name", "text"),
            col("user_type", "Type", "text"),
            col("status", "Status", "text"),
            col("roles", "Roles", "list"),
            col("privileged", "Privileged", "bool"),
            col("last_activity", "Last activity", "time"),
            col("last_activity_source", "Activity source", "text"),
            col("inactive_since", "Inactive since", "time"),
            col("inactive_since_source", "Counted from", "text"),
            col("days_inactive", "Days inactive", "int"),
        ],
        ReportKind::Invitations => vec![
            col("account", "Account", "text"),
            col("user_id", "User id", "text"),
            col("user_name", "User", "text"),
            col("email", "Email", "text"),
            col("roles", "Roles", "list"),
            col("state", "State", "text"),
            col("invited", "Invited", "time"),
            col("age_days", "Pending for (days)", "int"),
            col("stale", "Stale", "bool"),
            col("accepted", "Accepted", "time"),
            col("accepted_source", "Acceptance known from", "text"),
            col("time_to_accept_secs", "Time to accept (s)", "int"),
            col("time_to_accept", "Time to accept", "text"),
            col("invited_source", "Invited time from", "text"),
        ],
        ReportKind::AccessReview => vec![
            col("account", "Account", "text"),
            col("user_id", "User id", "text"),
            col("user_name", "User", "text"),
            col("display_name", "Name", "text"),
            col("email", "Email", "text"),
            col("user_type", "Type", "text"),
            col("status", "Status", "text"),
            col("roles", "Roles", "list"),
            col("privileged", "Privileged", "bool"),
            col("last_activity", "Last activity", "time"),
            col("last_activity_source", "Activity source", "text"),
            col("days_since_activity", "Days since activity", "int"),
            col("created", "Created", "time"),
        ],
    }
}

/// What the summary counts of one row.
enum TallyRow {
    RoleChange {
        local_day: NaiveDate,
        granted: bool,
        privileged: bool,
        evidenced: bool,
        flagged: bool,
    },
    Dormant {
        privileged: bool,
        never_active: bool,
        service: bool,
        days: i64,
    },
    Invitation {
        pending: bool,
        stale: bool,
        to_accept_secs: Option<i64>,
    },
    Access {
        privileged: bool,
        status: String,
        service: bool,
        inactive: bool,
    },
}

/// Bounded counters: the summary never holds rows.
struct Tally {
    kind: ReportKind,
    counts: BTreeMap<&'static str, u64>,
    bars: BTreeMap<String, u64>,
    /// Role-change chart buckets: per day, or per month over long periods.
    monthly: bool,
    accept_secs_total: i64,
    dormant_days: u32,
}

fn is_privileged(roles: &[String]) -> bool {
    roles
        .iter()
        .any(|r| r.to_ascii_lowercase().contains("admin"))
}

fn is_service(u: &crate::store::UserRow) -> bool {
    u.user_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("service"))
}

impl Tally {
    fn new(req: &ReportRequest<'_>) -> Tally {
        let mut t = Tally {
            kind: req.kind,
            counts: BTreeMap::new(),
            bars: BTreeMap::new(),
            monthly: false,
            accept_secs_total: 0,
            dormant_days: req.dormant_days,
        };
        match (req.kind, req.period) {
            (ReportKind::RoleChanges, Period::Range { from, to }) => {
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
            (ReportKind::Dormant, _) => {
                for b in dormant_bands(req.dormant_days) {
                    t.bars.insert(b, 0);
                }
            }
            _ => {}
        }
        t
    }

    fn bucket(&self, d: NaiveDate) -> String {
        if self.monthly {
            d.format("%Y-%m").to_string()
        } else {
            d.format("%Y-%m-%d").to_string()
        }
    }

    fn inc(&mut self, k: &'static str) {
        *self.counts.entry(k).or_default() += 1;
    }

    fn add(&mut self, r: &TallyRow) {
        match r {
            TallyRow::RoleChange {
                local_day,
                granted,
                privileged,
                evidenced,
                flagged,
            } => {
                if *flagged {
                    self.inc("flagged");
                }
                self.inc(if *granted { "granted" } else { "revoked" });
                if *granted && *privileged {
                    self.inc("privileged_grants");
                }
                if !*evidenced {
                    self.inc("no_evidence");
                }
                *self.bars.entry(self.bucket(*local_day)).or_default() += 1;
            }
            TallyRow::Dormant {
                privileged,
                never_active,
                service,
                days,
            } => {
                if *privileged {
                    self.inc("privileged");
                }
                if *never_active {
                    self.inc("never_active");
                }
                if *service {
                    self.inc("service");
                }
                let band = dormant_band(self.dormant_days, *days, *never_active);
                *self.bars.entry(band).or_default() += 1;
            }
            TallyRow::Invitation {
                pending,
                stale,
                to_accept_secs,
            } => {
                if *pending {
                    self.inc("pending");
                } else {
                    self.inc("accepted");
                }
                if *stale {
                    self.inc("stale");
                }
                if let Some(s) = to_accept_secs {
                    self.inc("timed");
                    self.accept_secs_total += s;
                }
            }
            TallyRow::Access {
                privileged,
                status,
                service,
                inactive,
            } => {
                if *privileged {
                    self.inc("privileged");
                }
                if *service {
                    self.inc("service");
                }
                if *inactive {
                    self.inc("inactive");
                }
                *self.bars.entry(status.clone()).or_default() += 1;
            }
        }
    }

    fn summary(self, req: &ReportRequest<'_>, rows: u64) -> Summary {
        let c = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        let card = |label, v: u64, warn: bool| Card {
            label,
            value: v.to_string(),
            tone: if warn && v > 0 { "warn" } else { "" },
        };
        let bars: Vec<(String, u64)> = self.bars.clone().into_iter().collect();
        match self.kind {
            ReportKind::RoleChanges => Summary {
                rows,
                cards: vec![
                    card("Role changes", rows, false),
                    card("Grants", c("granted"), false),
                    card("Revokes", c("revoked"), false),
                    card("Admin roles granted", c("privileged_grants"), true),
                    card("Without audit evidence", c("no_evidence"), true),
                    card("Flagged by an alert", c("flagged"), true),
                ],
                chart: Some(Chart {
                    title: format!(
                        "Role changes per {} ({})",
                        if self.monthly { "month" } else { "day" },
                        req.time_zone.name()
                    ),
                    bars,
                }),
            },
            ReportKind::Dormant => Summary {
                rows,
                cards: vec![
                    card("Dormant users", rows, false),
                    card("Privileged and dormant", c("privileged"), true),
                    card("Never active", c("never_active"), false),
                    card("Service users", c("service"), false),
                ],
                chart: Some(Chart {
                    title: "Dormant users by days inactive".into(),
                    bars,
                }),
            },
            ReportKind::Invitations => {
                let timed = c("timed");
                let mean = if timed > 0 {
                    human_duration(self.accept_secs_total / timed as i64)
                } else {
                    "n/a".into()
                };
                Summary {
                    rows,
                    cards: vec![
                        card("Pending", c("pending"), false),
                        card("Stale (over the threshold)", c("stale"), true),
                        card("Accepted in period", c("accepted"), false),
                        Card {
                            label: "Mean time to accept",
                            value: mean,
                            tone: "",
                        },
                    ],
                    chart: None,
                }
            }
            ReportKind::AccessReview => Summary {
                rows,
                cards: vec![
                    card("Users", rows, false),
                    card("Privileged", c("privileged"), false),
                    card("Service users", c("service"), false),
                    card("Inactive over the dormancy threshold", c("inactive"), true),
                ],
                chart: (!bars.is_empty()).then(|| Chart {
                    title: "Users by status".into(),
                    bars,
                }),
            },
        }
    }
}

fn dormant_bands(n: u32) -> Vec<String> {
    let n = i64::from(n);
    // "1 day" rather than "1-1 days" for tiny thresholds.
    let range = |lo: i64, hi: i64| match (lo, hi) {
        (1, 1) => "1 day".to_string(),
        (lo, hi) if lo == hi => format!("{lo} days"),
        (lo, hi) => format!("{lo}-{hi} days"),
    };
    vec![
        range(n, 2 * n - 1),
        range(2 * n, 4 * n - 1),
        format!("{}+ days", 4 * n),
        "never active".into(),
    ]
}

fn dormant_band(n: u32, days: i64, never: bool) -> String {
    let b = dormant_bands(n);
    let n = i64::from(n);
    let i = if never {
        3
    } else if days < 2 * n {
        0
    } else if days < 4 * n {
        1
    } else {
        2
    };
    b[i].clone()
}

/// "3 d 4 h", "2 h 5 min", "40 s".
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min {} s", s % 60)
    } else {
        format!("{s} s")
    }
}

fn build_rows(
    store: &Store,
    req: &ReportRequest<'_>,
    emit: &mut dyn FnMut(Vec<Cell>, TallyRow) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let now_ms = req.now.timestamp_millis();
    let tz = req.time_zone;
    for a in &req.accounts {
        let account = a.name.as_str();
        match req.kind {
            ReportKind::RoleChanges => {
                let Period::Range { from, to } = req.period else {
                    continue;
                };
                store.for_each_role_change_in(
                    account,
                    from.timestamp_millis(),
                    to.timestamp_millis(),
                    |r| {
                        let c = &r.change;
                        let ev = c.evidence.as_ref();
                        let when = at(r.at_ms).with_timezone(&tz);
                        let evidence = match ev {
                            Some(e) => format!("audit event {}", e.event_id),
                            None => role_change_when(c).replacen(
                                "observed between",
                                "observed between snapshots",
                                1,
                            ),
                        };
                        let cells = vec![
                            Cell::Time(r.at_ms),
                            Cell::text(when.to_rfc3339_opts(chrono::SecondsFormat::Millis, false)),
                            Cell::text(&r.account),
                            Cell::text(&c.user_id),
                            Cell::opt_text(r.user_name.as_deref()),
                            Cell::text(&c.role),
                            Cell::text(&c.change),
                            Cell::opt_text(ev.and_then(|e| e.actor_id.as_deref())),
                            Cell::opt_text(ev.and_then(|e| e.actor_name.as_deref())),
                            Cell::opt_text(ev.and_then(|e| e.ip_address.as_deref())),
                            Cell::Text(evidence),
                            Cell::opt_text(ev.map(|e| e.event_id.as_str())),
                            Cell::opt_time(c.after_ms),
                            Cell::opt_time(c.observed_ms),
                            Cell::text(&c.source),
                            Cell::Bool(!r.alert_rules.is_empty()),
                            Cell::List(r.alert_rules.clone()),
                        ];
                        emit(
                            cells,
                            TallyRow::RoleChange {
                                local_day: when.date_naive(),
                                granted: c.change == "granted",
                                privileged: is_privileged(std::slice::from_ref(&c.role)),
                                evidenced: ev.is_some(),
                                flagged: !r.alert_rules.is_empty(),
                            },
                        )
                    },
                )?;
            }
            ReportKind::Dormant => {
                let cut = now_ms - i64::from(req.dormant_days) * DAY_MS;
                store.for_each_user_activity(
                    account,
                    UserSelection::InactiveSince(cut),
                    |r: UserActivityRow| {
                        let u = &r.listing.user;
                        let act = last_activity(&r.listing);
                        let days = (now_ms - r.inactive_since_ms).max(0) / DAY_MS;
                        // The documented values (docs/report-schema.md); "never active" is
                        // what a null last_activity says.
                        let from_what = match (&act, invited_source(u), u.created_ms) {
                            (Some(_), _, _) => "last activity",
                            (None, Some(INVITED_FROM_API), _) => "invitation",
                            (None, Some(_), _) => "first seen by auditwarden",
                            (None, None, Some(_)) => "creation",
                            (None, None, None) => "first seen by auditwarden",
                        };
                        let cells = vec![
                            Cell::text(&r.listing.account),
                            Cell::text(&u.user_id),
                            Cell::opt_text(u.user_name.as_deref()),
                            Cell::opt_text(u.display_name.as_deref()),
                            Cell::opt_text(u.user_type.as_deref()),
                            Cell::text(&u.status),
                            Cell::List(u.roles.clone()),
                            Cell::Bool(r.privileged),
                            Cell::opt_time(act.as_ref().map(|a| a.at.timestamp_millis())),
                            Cell::opt_text(act.as_ref().map(|a| a.source.as_str())),
                            Cell::Time(r.inactive_since_ms),
                            Cell::text(from_what),
                            Cell::Int(days),
                        ];
                        emit(
                            cells,
                            TallyRow::Dormant {
                                privileged: r.privileged,
                                never_active: act.is_none(),
                                service: is_service(u),
                                days,
                            },
                        )
                    },
                )?;
            }
            ReportKind::Invitations => {
                let (from, to) = match req.period {
                    Period::Range { from, to } => (from.timestamp_millis(), to.timestamp_millis()),
                    Period::AsOf(t) => (i64::MIN, t.timestamp_millis()),
                };
                store.for_each_user_activity(
                    account,
                    UserSelection::Invitations,
                    |r: UserActivityRow| {
                        let u = &r.listing.user;
                        let pending = u.status == "invited";
                        let acc = if pending {
                            None
                        } else {
                            match acceptance(&r.listing) {
                                Some(a) if a.at_ms >= from && a.at_ms < to => Some(a),
                                _ => return Ok(()),
                            }
                        };
                        let invited = u.invited_ms.unwrap_or(u.first_seen_ms);
                        let invited_from = invited_source(u).unwrap_or(INVITED_FIRST_SEEN);
                        let stale = is_stale_invite(u, req.now, req.stale_invite_days);
                        let cells = vec![
                            Cell::text(&r.listing.account),
                            Cell::text(&u.user_id),
                            Cell::opt_text(u.user_name.as_deref().or(u.display_name.as_deref())),
                            Cell::opt_text(u.email.as_deref()),
                            Cell::List(u.roles.clone()),
                            Cell::text(if pending { "pending" } else { "accepted" }),
                            Cell::Time(invited),
                            if pending {
                                Cell::Int((now_ms - invited).max(0) / DAY_MS)
                            } else {
                                Cell::Null
                            },
                            Cell::Bool(stale),
                            Cell::opt_time(acc.as_ref().map(|a| a.at_ms)),
                            Cell::opt_text(acc.as_ref().map(|a| a.source.as_str())),
                            acc.as_ref()
                                .and_then(|a| a.to_accept_secs)
                                .map_or(Cell::Null, Cell::Int),
                            acc.as_ref()
                                .and_then(|a| a.to_accept_secs)
                                .map_or(Cell::Null, |s| {
                                    Cell::Text(if invited_from == INVITED_FIRST_SEEN {
                                        format!("{} (since first seen)", human_duration(s))
                                    } else {
                                        human_duration(s)
                                    })
                                }),
                            Cell::text(invited_from),
                        ];
                        emit(
                            cells,
                            TallyRow::Invitation {
                                pending,
                                stale,
                                to_accept_secs: acc.and_then(|a| a.to_accept_secs),
                            },
                        )
                    },
                )?;
            }
            ReportKind::AccessReview => {
                store.for_each_user_activity(
                    account,
                    UserSelection::Current,
                    |r: UserActivityRow| {
                        let u = &r.listing.user;
                        let act = last_activity(&r.listing);
                        let days = act
                            .as_ref()
                            .map(|a| (now_ms - a.at.timestamp_millis()).max(0) / DAY_MS);
                        let inactive =
                            (now_ms - r.inactive_since_ms) >= i64::from(req.dormant_days) * DAY_MS;
                        let cells = vec![
                            Cell::text(&r.listing.account),
                            Cell::text(&u.user_id),
                            Cell::opt_text(u.user_name.as_deref()),
                            Cell::opt_text(u.display_name.as_deref()),
                            Cell::opt_text(u.email.as_deref()),
                            Cell::opt_text(u.user_type.as_deref()),
                            Cell::text(&u.status),
                            Cell::List(u.roles.clone()),
                            Cell::Bool(r.privileged),
                            Cell::opt_time(act.as_ref().map(|a| a.at.timestamp_millis())),
                            Cell::opt_text(act.as_ref().map(|a| a.source.as_str())),
                            days.map_or(Cell::Null, Cell::Int),
                            Cell::opt_time(u.created_ms),
                        ];
                        emit(
                            cells,
                            TallyRow::Access {
                                privileged: r.privileged,
                                status: u.status.clone(),
                                service: is_service(u),
                                inactive,
                            },
                        )
                    },
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
