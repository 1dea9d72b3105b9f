//! Compliance reports: role changes, dormant accounts, invitations and the access review, built
//! from the store alone (reports never call the network) and rendered as CSV, HTML or JSON.
//!
//! A report is a header ([`Meta`]: period, generation time, version, display time zone and the
//! coverage of the collected data, so a report over incomplete data says so at the top), rows of
//! [`Cell`]s in a fixed column order, and a [`Summary`] (cards and an optional chart) tallied while
//! the rows stream past. Rows go from SQLite to the renderer one at a time: memory stays flat in
//! the number of rows. The HTML renderer spools its table to a temporary file so the summary can
//! sit above it. `run` writes the scheduled set (`auditwarden reports run`).

pub mod config;
mod csv;
mod html;
mod json;
mod kinds;
pub mod run;
pub mod verify;
/// The stylesheet of every HTML page auditwarden writes (the review package uses it too).
pub(crate) use html::CSS as HTML_CSS;

use std::io::Write;

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::api::settings::Account;
use crate::coverage::{self, CoverageSummary};
use crate::export::rfc3339;
use crate::store::{Store, StoreError};
use kinds::access_review::AccessReview;
use kinds::credentials::Credentials;
use kinds::dormant::Dormant;
use kinds::invitations::Invitations;
use kinds::role_changes::RoleChanges;
use kinds::{CoverageWindow, Info, Kind};

/// The reports there are. Each is one file of `kinds/`; [`ReportKind::info`] and [`generate`]
/// are the only `match`es on this.
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
    /// Service users' end dates, API tokens and client-auth certificates, as of now.
    Credentials,
}

impl ReportKind {
    pub const ALL: [ReportKind; 5] = [
        ReportKind::RoleChanges,
        ReportKind::Dormant,
        ReportKind::Invitations,
        ReportKind::AccessReview,
        ReportKind::Credentials,
    ];
    /// The `[reports] kinds` default: the user reports (`credentials` is written when listed).
    pub const DEFAULT: [ReportKind; 4] = [
        ReportKind::RoleChanges,
        ReportKind::Dormant,
        ReportKind::Invitations,
        ReportKind::AccessReview,
    ];

    /// What the kind is, from its file in `kinds/`.
    fn info(self) -> &'static Info {
        match self {
            ReportKind::RoleChanges => &<RoleChanges as Kind<17>>::INFO,
            ReportKind::Dormant => &<Dormant as Kind<14>>::INFO,
            ReportKind::Invitations => &<Invitations as Kind<14>>::INFO,
            ReportKind::AccessReview => &<AccessReview as Kind<13>>::INFO,
            ReportKind::Credentials => &<Credentials as Kind<16>>::INFO,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    pub fn from_name(s: &str) -> Option<ReportKind> {
        ReportKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A period report covers `--from..--to` (default: the last 30 days); the others are a
    /// snapshot as of the generation time.
    pub fn is_period(self) -> bool {
        self.info().period
    }

    fn empty_text(self) -> &'static str {
        self.info().empty_text
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
    /// `[reports] credential_warn_days` and `max_credential_age_days` (the credentials report).
    pub credential_warn_days: u32,
    pub max_credential_age_days: u32,
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
    fn opt(s: Option<String>) -> Cell {
        s.map_or(Cell::Null, Cell::Text)
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

/// Build the report `req` from `store` and write it to `out` in `format`.
pub fn generate(
    store: &Store,
    req: &ReportRequest<'_>,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<Outcome, ReportError> {
    match req.kind {
        ReportKind::RoleChanges => generate_kind(RoleChanges, store, req, format, out),
        ReportKind::Dormant => generate_kind(Dormant, store, req, format, out),
        ReportKind::Invitations => generate_kind(Invitations, store, req, format, out),
        ReportKind::AccessReview => generate_kind(AccessReview, store, req, format, out),
        ReportKind::Credentials => generate_kind(Credentials, store, req, format, out),
    }
}

/// The header, each row as the store streams it (counted by the kind's tally), the summary.
fn generate_kind<K: Kind<N>, const N: usize>(
    _kind: K,
    store: &Store,
    req: &ReportRequest<'_>,
    format: ReportFormat,
    out: &mut dyn Write,
) -> Result<Outcome, ReportError> {
    let meta = meta::<K, N>(store, req)?;
    let mut sink: Box<dyn Sink + '_> = match format {
        ReportFormat::Csv => Box::new(csv::CsvSink::new(out)),
        ReportFormat::Json => Box::new(json::JsonSink::new(out)),
        ReportFormat::Html => Box::new(html::HtmlSink::new(out, req.time_zone)?),
    };
    sink.begin(&meta)?;
    let mut tally = K::tally(req);
    let mut rows = 0u64;
    for a in &req.accounts {
        K::for_each_row(store, req, &a.name, &mut |row| {
            K::count(&mut tally, &row);
            rows += 1;
            sink.row(&K::cells(row))
        })?;
    }
    let summary = K::summary(tally, req, rows);
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

/// A summary card; `warn` draws attention when the count is not zero.
fn card(label: &'static str, v: u64, warn: bool) -> Card {
    Card {
        label,
        value: v.to_string(),
        tone: if warn && v > 0 { "warn" } else { "" },
    }
}

/// The window whose audit-log coverage the report depends on.
fn coverage_window(req: &ReportRequest<'_>) -> CoverageWindow {
    let (from, to) = match req.period {
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
    };
    CoverageWindow { from, to }
}

fn meta<K: Kind<N>, const N: usize>(
    store: &Store,
    req: &ReportRequest<'_>,
) -> Result<Meta, ReportError> {
    let window = coverage_window(req);
    let mut accounts = Vec::new();
    for a in &req.accounts {
        let c = coverage::summarize(store, a, window.from, window.to)?;
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
    Ok(Meta {
        schema: SCHEMA,
        kind: K::INFO.name,
        title: K::INFO.title.to_string(),
        period,
        generated_at: rfc3339(req.now),
        generator: format!("auditwarden {}", env!("CARGO_PKG_VERSION")),
        display_time_zone: tz.name().to_string(),
        complete: accounts.iter().all(|a| a.complete),
        accounts,
        parameters: K::parameters(req),
        scope: K::INFO.scope.to_string(),
        notes: K::notes(req, window),
        columns: K::COLUMNS.iter().map(|c| c.column(tz)).collect(),
    })
}

/// "3 d 4 h", "2 h 5 min", "40 s" (whole seconds; `text::duration` with "0 s" for nothing).
pub fn human_duration(secs: i64) -> String {
    match u64::try_from(secs) {
        Ok(s) if s > 0 => crate::text::duration(std::time::Duration::from_secs(s)),
        _ => "0 s".to_string(),
    }
}

#[cfg(test)]
mod tests;
