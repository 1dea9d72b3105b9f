//! Streaming stored events out: JSONL for machines, CSV for spreadsheets. Rows are streamed from
//! the store (memory stays flat however large the history). CSV cells that a spreadsheet would
//! read as a formula are neutralized (OWASP CSV injection guidance).

use std::io::Write;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::{EventFilter, Store, StoreError, StoredEvent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the export: {0}")]
    Csv(#[from] csv::Error),
    #[error("encoding event {id}: {source}")]
    Json {
        id: String,
        source: serde_json::Error,
    },
}

/// The CSV columns, in their stable order.
pub const CSV_COLUMNS: &[&str] = &[
    "account",
    "id",
    "timestamp",
    "action",
    "resource_type",
    "resource_id",
    "resource_name",
    "actor_id",
    "actor_name",
    "status",
    "ip_address",
    "description",
];

#[derive(Serialize)]
struct Actor<'a> {
    id: Option<&'a str>,
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    account: &'a str,
    id: &'a str,
    timestamp: String,
    action: &'a str,
    resource_type: Option<&'a str>,
    resource_id: Option<&'a str>,
    resource_name: Option<&'a str>,
    actor: Actor<'a>,
    status: Option<&'a str>,
    ip_address: Option<&'a str>,
    description: Option<&'a str>,
    raw: &'a RawValue,
}

/// RFC 3339 in UTC with milliseconds and a `Z`.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    let mut s = String::with_capacity(24);
    push_rfc3339(&mut s, t);
    s
}

/// [`rfc3339`] appended to `buf`: digits written directly (reports format a time per cell, and
/// chrono's general formatter was a large share of a JSON or HTML report's CPU), chrono's own
/// formatting for what the fast path does not cover (years outside 0..=9999, leap seconds).
pub fn push_rfc3339(buf: &mut String, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        buf.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        return;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 3, nanos / 1_000_000);
    // Only ASCII digits and separators were written.
    buf.extend(out.iter().map(|&b| char::from(b)));
}

/// A cell a spreadsheet would run as a formula gets a leading apostrophe.
pub fn neutralize(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Write every event matching `filter` to `out`; returns how many were written.
pub fn export_events(
    store: &Store,
    filter: &EventFilter,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64, ExportError> {
    match format {
        ExportFormat::Jsonl => store.for_each_event(filter, |e: StoredEvent| {
            let fallback;
            let raw: &RawValue = match serde_json::from_str::<&RawValue>(&e.raw) {
                Ok(r) => r,
                Err(_) => {
                    // Stored raw text is always JSON; if it ever is not, export it as a string.
                    fallback =
                        serde_json::to_string(&e.raw).map_err(|source| ExportError::Json {
                            id: e.id.clone(),
                            source,
                        })?;
                    serde_json::from_str::<&RawValue>(&fallback).map_err(|source| {
                        ExportError::Json {
                            id: e.id.clone(),
                            source,
                        }
                    })?
                }
            };
            let line = JsonLine {
                account: &e.account,
                id: &e.id,
                timestamp: rfc3339(e.timestamp),
                action: &e.action,
                resource_type: e.resource_type.as_deref(),
                resource_id: e.resource_id.as_deref(),
                resource_name: e.resource_name.as_deref(),
                actor: Actor {
                    id: e.actor_id.as_deref(),
                    name: e.actor_name.as_deref(),
                },
                status: e.status.as_deref(),
                ip_address: e.ip_address.as_deref(),
                description: e.description.as_deref(),
                raw,
            };
            serde_json::to_writer(&mut *out, &line).map_err(|source| ExportError::Json {
                id: e.id.clone(),
                source,
            })?;
            out.write_all(b"\n")?;
            Ok::<(), ExportError>(())
        }),
        ExportFormat::Csv => {
            let mut w = csv::WriterBuilder::new()
                .terminator(csv::Terminator::CRLF)
                .from_writer(&mut *out);
            w.write_record(CSV_COLUMNS)?;
            let n = store.for_each_event(filter, |e: StoredEvent| {
                let ts = rfc3339(e.timestamp);
                let o = |v: &Option<String>| v.clone().unwrap_or_default();
                let cells = [
                    e.account.clone(),
                    e.id.clone(),
                    ts,
                    e.action.clone(),
                    o(&e.resource_type),
                    o(&e.resource_id),
                    o(&e.resource_name),
                    o(&e.actor_id),
                    o(&e.actor_name),
                    o(&e.status),
                    o(&e.ip_address),
                    o(&e.description),
                ];
                w.write_record(cells.iter().map(|c| neutralize(c).into_owned()))?;
                Ok::<(), ExportError>(())
            })?;
            w.flush()?;
            Ok(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{neutralize, rfc3339};

    /// The fast formatter writes what chrono's RFC 3339 with milliseconds does, at the edges too.
    #[test]
    fn rfc3339_matches_chrono() {
        for ms in [
            0i64,
            1,
            999,
            1_700_000_000_123,
            -1,
            -62_167_219_200_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_001,
        ] {
            let t = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
            assert_eq!(
                rfc3339(t),
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "{ms}"
            );
        }
    }

    /// Formula-looking cells are neutralized; ordinary ones are untouched.
    #[test]
    fn csv_injection_is_neutralized() {
        for bad in ["=HYPERLINK(\"x\")", "+cmd", "-2+3", "@SUM(1)", "\tx", "\rx"] {
            assert!(neutralize(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(neutralize("alice"), "alice");
        assert_eq!(neutralize(""), "");
    }
}
