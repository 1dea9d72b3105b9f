//! The domain clock: what "now" and "today" mean for collection, reports and alerts.
//!
//! Normally the system clock. `--now TIME` (or `AUDITWARDEN_NOW`, read by `cli`) pins it: the
//! clock then reads TIME when the process starts and advances with real elapsed time, so a test or
//! a replay sees the same days, dormancy and report periods at any hour of the day. `TIME@SINCE`
//! says the clock read TIME at the real instant SINCE: several processes given the same value (a
//! test's simulator and each command it runs) then share one timeline that moves forward, instead
//! of each starting again at TIME. The simulator's world uses the same clock, and
//! `POST /_sim/clock` re-pins it in a running simulator.
//!
//! Transport timing (timeouts, `Retry-After`, cron ticks, webhook signature timestamps that a
//! receiver checks against its own clock) stays on the system clock on purpose.

use std::sync::RwLock;

use chrono::{DateTime, NaiveDate, Utc};

/// A pinned clock: it read `at` at the real instant `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub at: DateTime<Utc>,
    pub since: DateTime<Utc>,
}

/// `None`: the system clock. A std lock (not tokio): it is held for a copy, never across an await.
static PIN: RwLock<Option<Pin>> = RwLock::new(None);

/// The current domain time.
pub fn now() -> DateTime<Utc> {
    let pin = PIN.read().map(|p| *p).unwrap_or(None);
    match pin {
        None => Utc::now(),
        Some(p) => p.at + (Utc::now() - p.since),
    }
}

/// The current domain time in epoch milliseconds.
pub fn now_ms() -> i64 {
    now().timestamp_millis()
}

/// Today (UTC) on the domain clock.
pub fn today() -> NaiveDate {
    now().date_naive()
}

/// Pin the clock (it then advances with real time).
pub fn pin(pin: Pin) {
    if let Ok(mut p) = PIN.write() {
        *p = Some(pin);
    }
}

/// Whether the clock is pinned (`GET /_sim/clock` reports it).
pub fn is_pinned() -> bool {
    PIN.read().map(|p| p.is_some()).unwrap_or(false)
}

/// Parse a `--now` value: `TIME` (the clock reads TIME now) or `TIME@SINCE` (it read TIME at the
/// real instant SINCE, RFC 3339).
pub fn parse(text: &str) -> Result<Pin, String> {
    match text.split_once('@') {
        None => Ok(Pin {
            at: parse_time(text)?,
            since: Utc::now(),
        }),
        Some((at, since)) => Ok(Pin {
            at: parse_time(at)?,
            since: DateTime::parse_from_rfc3339(since.trim())
                .map(|d| d.with_timezone(&Utc))
                .map_err(|_| format!("`{}` after @ is not an RFC 3339 time", since.trim()))?,
        }),
    }
}

/// RFC 3339 (`2026-11-16T08:30:00Z`) or a bare date (midday UTC).
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(12, 0, 0) {
            return Ok(dt.and_utc());
        }
    }
    Err(format!(
        "`{t}` is not a time: expected RFC 3339 such as 2026-11-16T08:30:00Z, or a date YYYY-MM-DD"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_rfc3339_and_dates_and_names_bad_input() {
        assert_eq!(
            parse("2026-11-16T08:30:00+01:00").map(|p| p.at.to_rfc3339()),
            Ok("2026-11-16T07:30:00+00:00".to_string())
        );
        assert_eq!(
            parse("2026-11-16").map(|p| p.at.to_rfc3339()),
            Ok("2026-11-16T12:00:00+00:00".to_string())
        );
        let p = parse("2026-11-16T08:30:00Z@2030-01-01T00:00:00Z").unwrap();
        assert_eq!(p.since.to_rfc3339(), "2030-01-01T00:00:00+00:00");
        assert!(parse("yesterday").unwrap_err().contains("`yesterday`"));
        assert!(parse("2026-11-16@soon").unwrap_err().contains("`soon`"));
    }
}
