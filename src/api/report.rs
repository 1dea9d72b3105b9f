//! CertCentral's audit log through the Report Library API (contract 2.3): create an on-demand
//! `audit-logs` report over a range of UTC days, find its run in `GET /report/history`, and
//! download the run's file(s) as JSON, or the ZIP that files over 2 MB always are (the content
//! decides, not the requested format), every split part in turn.
//!
//! Almost all of it is [A] in the contract, so everything is read leniently: statuses are an open
//! set (only `READY` and `FAILED` are acted on), a file is a JSON array of rows or an object
//! wrapping one (`data`, `rows`), a row's fields have several names each. Rows have no id: a
//! [`ReportRow`] carries its canonical content (the row's JSON with sorted keys, spaces dropped),
//! and the collector numbers identical rows within their day to make the event id
//! ([`ReportRow::into_event`]). The row as received is kept whole, in the event's `data`.
//!
//! Files are parsed row by row from the body (a ZIP entry is decompressed as it is read, at most
//! [`MAX_UNZIPPED_BYTES`]); the body itself is read up to `max_response_bytes` like any other.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::client::Client;
use super::error::ApiError;
use super::wire::{preview, AuditEvent, Malformed};

/// The most bytes one file of a ZIP may decompress to (a ZIP bomb stops here): 1,000,000 rows
/// per file (contract 2.3) at 2 KiB a row.
pub const MAX_UNZIPPED_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// `POST /report`'s answer: the report and its first run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedReport {
    pub report_id: String,
    pub run_id: String,
}

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// `READY`: the file(s) can be downloaded.
    Ready,
    /// `FAILED`: this run will never be ready.
    Failed,
    /// Anything else (`IN_PROGRESS`, `QUEUED`, an unknown value): keep waiting.
    Pending,
}

/// One run of `GET /report/history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub report_id: String,
    pub run_id: String,
    pub state: RunState,
    /// The status as served (an open set).
    pub status: String,
    /// `split_report_count`: how many files to download (at least 1).
    pub parts: u32,
}

impl RunState {
    fn of(status: &str) -> RunState {
        match status.trim().to_ascii_uppercase().as_str() {
            "READY" | "COMPLETED" | "COMPLETE" | "SUCCESS" => RunState::Ready,
            "FAILED" | "FAILURE" | "ERROR" => RunState::Failed,
            _ => RunState::Pending,
        }
    }
}

/// The display name of the report auditwarden creates for `[start, end]`.
pub fn display_name(start: NaiveDate, end: NaiveDate) -> String {
    format!("auditwarden {start}..{end}")
}

impl Client {
    /// Create an on-demand `audit-logs` report over the UTC days `[start, end]`; its first run.
    /// A 403 is [`ApiError::NotAdministrator`] (contract 2.3: only an Administrator's key).
    pub async fn create_audit_report(
        &self,
        start: NaiveDate,
        end: NaiveDate,
    ) -> Result<CreatedReport, ApiError> {
        let body = serde_json::json!({
            "display_name": display_name(start, end),
            "report_metadata": {
                "report_type": "audit-logs",
                "date_range": {"start_date": start.to_string(), "end_date": end.to_string()},
            },
            "schedule": {"frequency": "ONCE"},
            "format": ["JSON"],
        })
        .to_string();
        self.post_json("/report", &body, parse_created)
            .await
            .map_err(not_admin)
    }

    /// The run `run_id` of report `report_id`, looked up in `GET /report/history` (filtered by
    /// the display name of `[start, end]`, paged, at most `max_pages` pages). `None` when the
    /// history does not list it (a run past the 90 days of retention, or not listed yet).
    pub async fn report_run(
        &self,
        report_id: &str,
        run_id: &str,
        start: NaiveDate,
        end: NaiveDate,
        max_pages: u32,
    ) -> Result<Option<RunInfo>, ApiError> {
        let limit = 100u64;
        let mut offset = 0u64;
        for _ in 0..max_pages.max(1) {
            let q = [
                ("offset", offset.to_string()),
                ("limit", limit.to_string()),
                ("report_type", "audit-logs".to_string()),
                ("report_display_name", display_name(start, end)),
            ];
            let (total, runs) = self
                .get("/report/history", &q, parse_history)
                .await
                .map_err(not_admin)?;
            let n = runs.len() as u64;
            if let Some(r) = runs.into_iter().find(|r| {
                r.run_id == run_id && (r.report_id == report_id || r.report_id.is_empty())
            }) {
                return Ok(Some(RunInfo {
                    report_id: report_id.to_string(),
                    ..r
                }));
            }
            offset += n;
            let last = match total {
                Some(t) => n == 0 || offset >= t,
                None => n < limit,
            };
            if last {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Whether this key may read the audit log: one history request (`check`).
    pub async fn check_report_access(&self) -> Result<(), ApiError> {
        let q = [("offset", "0".to_string()), ("limit", "1".to_string())];
        self.get("/report/history", &q, parse_history)
            .await
            .map(|_| ())
            .map_err(not_admin)
    }

    /// One file of a ready run (`part` counts from 0; sent only when the run has several), as
    /// received: JSON or a ZIP, at most `max_response_bytes`.
    pub async fn download_report(
        &self,
        report_id: &str,
        run_id: &str,
        part: Option<u32>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut q = vec![("report_format", "JSON".to_string())];
        if let Some(p) = part {
            q.push(("split_report_sequence", p.to_string()));
        }
        let path = format!(
            "/report/{}/{}/download",
            percent_encoding::utf8_percent_encode(report_id, SEGMENT),
            percent_encoding::utf8_percent_encode(run_id, SEGMENT)
        );
        self.get_bytes(&path, &q, looks_whole)
            .await
            .map_err(not_admin)
    }
}

/// A download that was cut short (no ZIP central directory, JSON that does not end) is a broken
/// body, retried like a 5xx; the full parse comes later, row by row.
fn looks_whole(body: Vec<u8>) -> Result<Vec<u8>, String> {
    if body.starts_with(b"PK") {
        zip::ZipArchive::new(std::io::Cursor::new(&body[..]))
            .map_err(|e| format!("an incomplete ZIP ({} bytes): {e}", body.len()))?;
        return Ok(body);
    }
    match body.iter().rev().find(|b| !b.is_ascii_whitespace()) {
        Some(b']') | Some(b'}') => Ok(body),
        _ => Err(format!(
            "the file ({} bytes) is neither a ZIP nor a whole JSON document",
            body.len()
        )),
    }
}

/// Characters escaped in an identifier used as a path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// A 403 of the Report Library is the key's missing Administrator role (a wrong key is already
/// told apart by the status mapping).
fn not_admin(e: ApiError) -> ApiError {
    match e {
        ApiError::AccessDenied { detail } => ApiError::NotAdministrator { detail },
        other => other,
    }
}

/// A scalar as text: strings as they are, numbers and bools written out.
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn first_of(m: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| text(m.get(*n)))
}

fn parse_created(body: &str) -> Result<CreatedReport, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let m = v
        .as_object()
        .ok_or_else(|| format!("expected an object, got {}", preview(body)))?;
    let report_id = first_of(m, &["report_identifier", "report_id", "id"])
        .ok_or_else(|| "no report_identifier in the answer".to_string())?;
    let run_id = first_of(m, &["report_run_identifier", "report_run_id", "run_id"])
        .ok_or_else(|| "no report_run_identifier in the answer".to_string())?;
    Ok(CreatedReport { report_id, run_id })
}

/// `{"page": {"total"}, "report_history": [...]}`; a bare array is accepted too.
fn parse_history(body: &str) -> Result<(Option<u64>, Vec<RunInfo>), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let (total, items) = match &v {
        Value::Array(a) => (None, a.as_slice()),
        Value::Object(m) => {
            let items = ["report_history", "history", "data", "items"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_array))
                .ok_or_else(|| "the answer has no \"report_history\" array".to_string())?;
            let total = m
                .get("page")
                .and_then(|p| p.get("total"))
                .and_then(|t| t.as_u64().or_else(|| t.as_str()?.parse().ok()));
            (total, items.as_slice())
        }
        _ => return Err(format!("expected JSON, got {}", preview(body))),
    };
    let mut runs = Vec::new();
    for item in items {
        let Some(m) = item.as_object() else { continue };
        let Some(run_id) = first_of(m, &["report_run_identifier", "report_run_id", "run_id"])
        else {
            continue;
        };
        let status = first_of(m, &["status", "report_status"]).unwrap_or_default();
        let parts = m
            .get("split_report_count")
            .and_then(|c| c.as_u64().or_else(|| c.as_str()?.trim().parse().ok()))
            .unwrap_or(1)
            .clamp(1, 10_000) as u32;
        runs.push(RunInfo {
            report_id: first_of(m, &["report_identifier", "report_id"]).unwrap_or_default(),
            run_id,
            state: RunState::of(&status),
            status,
            parts,
        });
    }
    Ok((total, runs))
}

/// One row of an audit-log report, understood as far as the contract allows.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub timestamp: DateTime<Utc>,
    /// The row's JSON with its keys sorted and no spaces: two rows are the same event exactly
    /// when this is equal and they hold the same place among their equals of the day.
    pub canonical: String,
    /// The row exactly as received.
    pub raw: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub activity: String,
    pub source: Option<String>,
    pub ip_address: Option<String>,
    pub division: Option<String>,
    pub country: Option<String>,
    pub details: Option<String>,
}

/// A row, or a row that cannot be understood (kept in quarantine with the reason).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // most rows are good; boxing each would cost an allocation
pub enum ParsedRow {
    Row(ReportRow),
    Malformed(Malformed),
}

/// Parse one row leniently (every alias of contract 2.3).
pub fn parse_row(raw: &str) -> ParsedRow {
    let bad = |reason: String| {
        ParsedRow::Malformed(Malformed {
            key: format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes()))),
            raw: raw.to_string(),
            reason,
        })
    };
    let v: Value = match serde_json::from_str(raw) {
        Ok(v) => v,
        Err(e) => return bad(format!("not a report row: {e}")),
    };
    let Some(m) = v.as_object() else {
        return bad(format!(
            "a report row must be an object, got {}",
            preview(raw)
        ));
    };
    let Some(when) = first_of(m, &["date_time", "date", "timestamp", "datetime", "time"]) else {
        return bad("no date_time".into());
    };
    let Some(timestamp) = parse_row_time(&when) else {
        return bad(format!("bad date_time {}", preview(&when)));
    };
    let (mut actor_name, mut actor_id) = (None, None);
    if let Some(Value::Object(u)) = m.get("user") {
        actor_name = first_of(u, &["name", "user_name", "username", "email"]);
        actor_id = first_of(u, &["id", "user_id"]);
    }
    let actor_name =
        actor_name.or_else(|| first_of(m, &["user_name", "user", "user_email", "username"]));
    let actor_id = actor_id.or_else(|| first_of(m, &["user_id"]));
    ParsedRow::Row(ReportRow {
        timestamp,
        canonical: v.to_string(),
        raw: raw.to_string(),
        actor_id,
        actor_name,
        activity: first_of(m, &["activity", "action", "event"]).unwrap_or_default(),
        source: first_of(m, &["source"]),
        ip_address: first_of(m, &["ip_address", "ip", "ipAddress", "client_ip"]),
        division: first_of(m, &["division", "container"]).or_else(|| {
            m.get("container")
                .and_then(|c| c.as_object())
                .and_then(|c| first_of(c, &["name", "id"]))
        }),
        country: first_of(m, &["country"]),
        details: first_of(m, &["details", "description"]),
    })
}

/// RFC 3339, or `YYYY-MM-DD hh:mm:ss[.fff]` (also with a `T`) meaning UTC.
fn parse_row_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc());
        }
    }
    None
}

impl ReportRow {
    /// The UTC day the row belongs to (its identity counts occurrences within it).
    pub fn day(&self) -> NaiveDate {
        self.timestamp.date_naive()
    }

    /// The digest of the canonical content, which with the occurrence number is the event id.
    pub fn content_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical.as_bytes()).into()
    }

    /// The row as an audit event. `occurrence` (from 1) is its place among the identical rows of
    /// its day: the event id is `cc:<sha256 of the canonical row>:<occurrence>`. Sign-ins become
    /// `login` events (a failed one with status `failure`), so last activity, dormancy and the
    /// failed-sign-in rule read CertCentral like DigiCert ONE [A: the activity names]. The stored
    /// `raw` is a DigiCert ONE-shaped event holding the row exactly as received under `data`, so
    /// the chain covers the row and `verify` re-derives every column from `raw`.
    pub fn into_event(self, occurrence: u64) -> AuditEvent {
        let id = format!("cc:{}:{occurrence}", hex::encode(self.content_hash()));
        let lower = self.activity.to_lowercase();
        let sign_in = [
            "sign in",
            "signed in",
            "sign-in",
            "login",
            "log in",
            "logged in",
        ]
        .iter()
        .any(|w| lower.contains(w))
            && !lower.contains("out");
        let failed = ["fail", "invalid", "denied", "locked out"]
            .iter()
            .any(|w| lower.contains(w));
        let action = if sign_in {
            "login".to_string()
        } else {
            self.activity.clone()
        };
        let status = if failed { "failure" } else { "success" };
        let timestamp = self
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Built as text so the row goes in verbatim (`RawValue`), not re-serialized.
        let mut raw = String::with_capacity(self.raw.len() + 256);
        raw.push_str("{\"id\":");
        raw.push_str(&Value::from(id.as_str()).to_string());
        raw.push_str(",\"timestamp\":");
        raw.push_str(&Value::from(timestamp).to_string());
        raw.push_str(",\"action\":");
        raw.push_str(&Value::from(action.as_str()).to_string());
        raw.push_str(",\"resource_type\":\"certcentral_audit_row\"");
        for (k, v) in [
            ("user_id", &self.actor_id),
            ("user_name", &self.actor_name),
            ("ip_address", &self.ip_address),
            ("description", &self.details),
            ("resource_name", &self.division),
        ] {
            if let Some(v) = v {
                raw.push_str(&format!(",\"{k}\":"));
                raw.push_str(&Value::from(v.as_str()).to_string());
            }
        }
        raw.push_str(",\"status\":");
        raw.push_str(&Value::from(status).to_string());
        raw.push_str(",\"data\":");
        raw.push_str(self.raw.trim());
        raw.push('}');
        AuditEvent {
            id,
            timestamp: self.timestamp,
            action,
            resource_type: Some("certcentral_audit_row".into()),
            resource_id: None,
            resource_name: self.division,
            actor_id: self.actor_id,
            actor_name: self.actor_name,
            status: Some(status.into()),
            ip_address: self.ip_address,
            description: self.details,
            data: Some(self.raw.trim().to_string()),
            account_id: None,
            raw,
        }
    }
}

/// What a downloaded file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Json,
    Zip,
}

/// Parse a downloaded file row by row: a ZIP (by its signature, whatever was asked for) whose
/// files are each parsed in turn, else JSON. `on_row` gets each row's raw text; an error it
/// returns stops the parse and is returned as is. Returns what the file was and the row count.
pub fn for_each_row(
    body: &[u8],
    mut on_row: impl FnMut(&str) -> Result<(), String>,
) -> Result<(FileKind, u64), String> {
    if body.starts_with(b"PK\x03\x04") || body.starts_with(b"PK\x05\x06") {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(body))
            .map_err(|e| format!("a broken ZIP: {e}"))?;
        let mut rows = 0;
        for i in 0..zip.len() {
            let file = zip
                .by_index(i)
                .map_err(|e| format!("a broken ZIP entry {i}: {e}"))?;
            if file.is_dir() {
                continue;
            }
            let name = file.name().map(|n| n.to_string()).unwrap_or_default();
            let mut capped = file.take(MAX_UNZIPPED_BYTES + 1);
            rows += parse_rows(&mut capped, &mut on_row)
                .map_err(|e| format!("ZIP entry {}: {e}", preview(&name)))?;
            if capped.limit() == 0 {
                return Err(format!(
                    "ZIP entry {} decompresses to more than {}",
                    preview(&name),
                    crate::text::bytes(MAX_UNZIPPED_BYTES)
                ));
            }
        }
        return Ok((FileKind::Zip, rows));
    }
    let rows = parse_rows(body, &mut on_row)?;
    Ok((FileKind::Json, rows))
}

/// Stream the rows of one JSON file (an array, or an object with the array under `data`, `rows`,
/// `items`, `records` or `audit_logs`) to `on_row`, without holding the file's rows.
fn parse_rows(
    reader: impl Read,
    on_row: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<u64, String> {
    let stop: RefCell<Option<String>> = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
        256 * 1024,
        reader,
    ));
    let cell = RefCell::new(on_row);
    let seed = FileSeed {
        on_row: &cell,
        stop: &stop,
    };
    let result = seed.deserialize(&mut de).and_then(|n| de.end().map(|()| n));
    match (result, stop.into_inner()) {
        (_, Some(e)) => Err(e),
        (Ok(n), None) => Ok(n),
        (Err(e), None) => Err(format!("not a JSON array of rows: {e}")),
    }
}

/// What is called with each row's raw text.
type OnRow<'b> = &'b mut dyn FnMut(&str) -> Result<(), String>;

/// The callback and the error it stopped with, shared by the seeds of nested values.
#[derive(Clone, Copy)]
struct FileSeed<'a, 'b> {
    on_row: &'a RefCell<OnRow<'b>>,
    stop: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_, '_> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_, '_> {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of report rows, or an object holding one")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        while let Some(row) = seq.next_element::<Box<RawValue>>()? {
            n += 1;
            let mut f = self.on_row.borrow_mut();
            if let Err(e) = f(row.get()) {
                *self.stop.borrow_mut() = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(n)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<u64, A::Error> {
        let mut rows = None;
        while let Some(k) = m.next_key::<String>()? {
            if rows.is_none()
                && matches!(
                    k.as_str(),
                    "data" | "rows" | "items" | "records" | "audit_logs"
                )
            {
                rows = Some(m.next_value_seed(self)?);
            } else {
                m.next_value::<de::IgnoredAny>()?;
            }
        }
        rows.ok_or_else(|| de::Error::custom("the object holds no array of rows (data, rows)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn rows_of(body: &[u8]) -> Result<(FileKind, Vec<String>), String> {
        let mut out = Vec::new();
        let (kind, n) = for_each_row(body, |r| {
            out.push(r.to_string());
            Ok(())
        })?;
        assert_eq!(n as usize, out.len());
        Ok((kind, out))
    }

    /// A bare array, `{"data": [...]}` and `{"rows": [...]}` give the same rows, verbatim.
    #[test]
    fn json_shapes() {
        let a = br#"[{"date_time":"2026-11-02 08:00:00","user_name":"ann","activity":"Sign in"}, {"x" : 1}]"#;
        let (k, rows) = rows_of(a).unwrap();
        assert_eq!(k, FileKind::Json);
        assert_eq!(rows[1], r#"{"x" : 1}"#);
        for wrapped in [
            r#"{"page":{"total":2},"data":[{"a":1},{"b":2}]}"#,
            r#"{"rows":[{"a":1},{"b":2}],"extra":true}"#,
        ] {
            let (_, rows) = rows_of(wrapped.as_bytes()).unwrap();
            assert_eq!(rows, vec![r#"{"a":1}"#, r#"{"b":2}"#]);
        }
        let e = rows_of(br#"{"nothing":[]}"#).unwrap_err();
        assert!(e.contains("no array of rows"), "{e}");
        let e = rows_of(br#"[{"a":1},"#).unwrap_err();
        assert!(e.contains("not a JSON array"), "{e}");
    }

    /// A ZIP is recognized by its content and each of its files is read.
    #[test]
    fn zip_files() {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("audit-logs.json", opts).unwrap();
        w.write_all(br#"[{"a":1},{"a":2}]"#).unwrap();
        let zipped = w.finish().unwrap().into_inner();
        let (k, rows) = rows_of(&zipped).unwrap();
        assert_eq!((k, rows.len()), (FileKind::Zip, 2));
        let e = rows_of(&zipped[..zipped.len() / 2]).unwrap_err();
        assert!(e.contains("ZIP"), "{e}");
    }

    /// Every alias of a row's fields is read; identical rows have identical canonical text
    /// whatever their key order and spacing; a row without a usable time is malformed.
    #[test]
    fn rows_are_lenient() {
        let a = parse_row(
            r#"{"date_time":"2026-11-02 08:15:30","user_name":"ann@example.com","user_id":42,"activity":"Failed sign in attempt","source":"UI","ip_address":"203.0.113.5","division":"Sales","country":"US","details":"bad password"}"#,
        );
        let b = parse_row(
            r#"{ "details":"bad password","country":"US","division":"Sales","ip_address":"203.0.113.5","source":"UI","activity":"Failed sign in attempt","user_id":42, "user_name":"ann@example.com","date_time":"2026-11-02 08:15:30"}"#,
        );
        let (ParsedRow::Row(a), ParsedRow::Row(b)) = (a, b) else {
            panic!("rows")
        };
        assert_eq!(a.canonical, b.canonical);
        assert_eq!(a.actor_id.as_deref(), Some("42"));
        let ev = a.clone().into_event(1);
        assert_eq!(ev.action, "login");
        assert_eq!(ev.status.as_deref(), Some("failure"));
        assert!(
            ev.id.starts_with("cc:") && ev.id.ends_with(":1"),
            "{}",
            ev.id
        );
        // The stored raw is understood by the event parser as the same event (verify relies
        // on it), and holds the row verbatim.
        match super::super::wire::parse_event(&ev.raw) {
            super::super::wire::ParsedEvent::Event(p) => assert_eq!(p, ev),
            other => panic!("{other:?}"),
        }
        let c = parse_row(
            r#"{"timestamp":"2026-11-02T10:15:30+02:00","user":"bob","action":"API key created","ip":"::1","container":"Ops","description":"key k1"}"#,
        );
        let ParsedRow::Row(c) = c else { panic!() };
        assert_eq!(c.timestamp.to_rfc3339(), "2026-11-02T08:15:30+00:00");
        assert_eq!(c.actor_name.as_deref(), Some("bob"));
        assert_eq!(c.division.as_deref(), Some("Ops"));
        assert_eq!(c.into_event(2).action, "API key created");
        for bad in [r#"{"user":"x"}"#, r#"{"date":"yesterday"}"#, "[1]", "nope"] {
            assert!(matches!(parse_row(bad), ParsedRow::Malformed(_)), "{bad}");
        }
    }

    /// History: statuses are an open set; the split count defaults to one file.
    #[test]
    fn history_is_lenient() {
        let body = r#"{"page":{"total":2,"limit":100,"offset":0},"report_history":[
            {"report_identifier":"r1","report_run_identifier":"u1","status":"IN_PROGRESS"},
            {"report_identifier":"r1","report_run_identifier":"u2","status":"READY","split_report_count":"3"},
            {"report_identifier":"r2","report_run_identifier":"u3","status":"FAILED"},
            {"report_identifier":"r2","report_run_identifier":"u4","status":"SOMETHING_NEW"}]}"#;
        let (total, runs) = parse_history(body).unwrap();
        assert_eq!(total, Some(2));
        let states: Vec<_> = runs.iter().map(|r| (r.state.clone(), r.parts)).collect();
        assert_eq!(
            states,
            vec![
                (RunState::Pending, 1),
                (RunState::Ready, 3),
                (RunState::Failed, 1),
                (RunState::Pending, 1)
            ]
        );
        assert_eq!(
            parse_created(r#"{"report_identifier":"r9","report_run_identifier":"u9"}"#).unwrap(),
            CreatedReport {
                report_id: "r9".into(),
                run_id: "u9".into()
            }
        );
        assert!(parse_created("{}").is_err());
    }
}
