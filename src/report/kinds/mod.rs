//! One file per report kind: what it is ([`Info`]), its columns, its row type and how a row
//! becomes cells, what its summary counts, and the notes it carries. [`Kind`] ties them together:
//! the columns and a row's cells are arrays of the same length `N`, so a kind whose cells and
//! columns disagree in number does not compile, and each kind's cells are written a few lines
//! below its columns, in the same order. The renderers (`csv`, `html`, `json`) know no kind.

pub(super) mod access_review;
pub(super) mod credentials;
pub(super) mod dormant;
pub(super) mod invitations;
pub(super) mod role_changes;

use chrono::NaiveDate;
use chrono_tz::Tz;

use super::{Cell, Column, ReportError, ReportRequest, Summary};
use crate::store::{Store, UserRow};

/// What a report kind is, in words.
pub(super) struct Info {
    /// The name on the command line, in `[reports] kinds` and in file names.
    pub name: &'static str,
    pub title: &'static str,
    /// A period report covers `--from..--to`; the others are a snapshot as of the generation time.
    pub period: bool,
    /// What the report covers, and what it cannot see (one sentence).
    pub scope: &'static str,
    /// What the HTML says when there is no row.
    pub empty_text: &'static str,
}

/// The value type of a column (`type` in the JSON header; the HTML sorts by it).
#[derive(Debug, Clone, Copy)]
pub(super) enum ColumnType {
    Text,
    /// UTC milliseconds, written as RFC 3339.
    Time,
    Int,
    Bool,
    List,
}

impl ColumnType {
    fn as_str(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Time => "time",
            ColumnType::Int => "int",
            ColumnType::Bool => "bool",
            ColumnType::List => "list",
        }
    }
}

/// A column's label: fixed, or naming the report's display time zone.
#[derive(Debug, Clone, Copy)]
pub(super) enum Label {
    Fixed(&'static str),
    /// "When, display zone (Europe/Berlin)": not "When (UTC)" again when the zone is UTC, so each
    /// header names one column.
    DisplayZone,
}

/// A column as a kind declares it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ColumnDef {
    pub key: &'static str,
    pub label: Label,
    pub ty: ColumnType,
}

/// A column with a fixed label.
pub(super) const fn col(key: &'static str, label: &'static str, ty: ColumnType) -> ColumnDef {
    ColumnDef {
        key,
        label: Label::Fixed(label),
        ty,
    }
}

impl ColumnDef {
    /// The column as the header of a report shown in `tz` describes it.
    pub(super) fn column(&self, tz: Tz) -> Column {
        Column {
            key: self.key,
            label: match self.label {
                Label::Fixed(l) => l.to_string(),
                Label::DisplayZone => format!("When, display zone ({})", tz.name()),
            },
            ty: self.ty.as_str(),
        }
    }
}

/// The window whose audit-log coverage a report depends on (first and last day, UTC).
#[derive(Debug, Clone, Copy)]
pub(super) struct CoverageWindow {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// One report kind. `N` is its number of columns: [`Kind::COLUMNS`] and what [`Kind::cells`]
/// returns are both `[_; N]`, so a column without its cell (or a cell without its column) is a
/// compile error, not a report whose values sit under the wrong headers.
pub(super) trait Kind<const N: usize> {
    const INFO: Info;
    /// The columns, in order (their keys are the CSV header and the JSON field names).
    const COLUMNS: [ColumnDef; N];
    /// One row: its cells, and what the summary counts of it.
    type Row;
    /// What the summary counts (bounded: it never holds rows).
    type Tally;

    /// The report's parameters (JSON header) and its "how to read this report" notes.
    fn parameters(req: &ReportRequest<'_>) -> serde_json::Value;
    fn notes(req: &ReportRequest<'_>, window: CoverageWindow) -> Vec<String>;

    /// Streams the rows of one account from the store, in report order.
    fn for_each_row(
        store: &Store,
        req: &ReportRequest<'_>,
        account: &str,
        emit: &mut dyn FnMut(Self::Row) -> Result<(), ReportError>,
    ) -> Result<(), ReportError>;

    /// The row's cells, in the order of [`Kind::COLUMNS`].
    fn cells(row: Self::Row) -> [Cell; N];

    fn tally(req: &ReportRequest<'_>) -> Self::Tally;
    fn count(tally: &mut Self::Tally, row: &Self::Row);
    fn summary(tally: Self::Tally, req: &ReportRequest<'_>, rows: u64) -> Summary;
}

pub(super) const DAY_MS: i64 = 86_400_000;

/// The "activity" note of the user reports.
pub(super) const ACTIVITY_NOTE: &str = "a user's activity is their latest successful audit event as actor (sign-ins \
        and anything else they did), or the API's last sign-in date (CertCentral), whichever is later";

/// The note saying how far back activity is seen.
pub(super) fn earliest_note(w: CoverageWindow) -> String {
    format!(
        "activity is known only from the collected audit log: coverage is stated above for \
         {}..{}; earlier activity is not seen",
        w.from, w.to
    )
}

/// `invited_source`: the invitation time is the API's creation time of the user.
pub(super) const INVITED_FROM_API: &str = "created_at";
/// `invited_source`: the API gives no creation time; the invitation time is auditwarden's first
/// sighting of the user invited (CertCentral).
pub(super) const INVITED_FIRST_SEEN: &str = "first seen by auditwarden";

/// Where a user's invitation time comes from (`None`: not invited). `invited_ms` is the API's
/// `created_at` when there is one (see `collect::users`), else the first sighting.
pub(super) fn invited_source(u: &UserRow) -> Option<&'static str> {
    let invited = u.invited_ms?;
    Some(if u.created_ms == Some(invited) {
        INVITED_FROM_API
    } else {
        INVITED_FIRST_SEEN
    })
}

pub(super) fn is_service(u: &UserRow) -> bool {
    u.user_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("service"))
}
