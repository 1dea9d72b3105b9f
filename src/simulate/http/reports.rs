//! The simulator's CertCentral Report Library (contract 2.3), under `/reports/v1`:
//! `POST /report` creates an on-demand `audit-logs` report and its first run, `GET
//! /report/history` lists runs (each listing is one poll of every pending run it shows: a run is
//! `READY` after `report-polls` of them, default 2, or `FAILED` for the first `report-failed`
//! runs), and `GET /report/{report}/{run}/download` serves the rows of its days as a JSON array,
//! split into parts of `report-split-rows` rows (default 1,000,000), each part a ZIP when its JSON
//! is larger than `report-zip-kb` KiB (default 2048: "files over 2 MB always come back as a ZIP").
//! A key in `non_admin_api_keys` reads `/services/v2` but gets 403 `missing_permission` here.
//!
//! Rows are the world's audit events as CertCentral would list them (sign-ins, failed sign-ins,
//! API keys, user changes) with no id, and about one event in 29 listed twice: identical rows are
//! distinct events. `GET /_sim/report-rows` is the truth: every row of every day, oldest first.
//! A download renders the rows that exist when it is asked for, so events added through `/_sim`
//! appear in later reports (and in an overlapping later report, the old rows again).

use std::fmt::Write as _;
use std::io::Write as _;

use chrono::NaiveDate;
use serde_json::{json, Value};

use super::super::world::{day_start_ms, push_json_str, World, CC_CONTAINERS};
use super::{Api, Params, Reply};
use crate::simulate::Simulator;

/// One run of a report.
#[derive(Debug, Clone)]
pub(crate) struct SimRun {
    report_id: String,
    run_id: String,
    display_name: String,
    start: NaiveDate,
    end: NaiveDate,
    created: String,
    /// History listings that showed it so far.
    polls: u32,
    failed: bool,
}

/// The Report Library's state: every run created, and how many of the next ones fail.
#[derive(Debug, Default)]
pub(crate) struct ReportLibrary {
    runs: Vec<SimRun>,
    failed_so_far: u32,
}

/// Runs kept; older ones are forgotten (the service keeps 90 days).
const MAX_RUNS: usize = 10_000;

impl Simulator {
    pub(super) fn reports_route(
        &self,
        method: &axum::http::Method,
        rest: &str,
        params: &Params,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> (String, Reply) {
        let segs: Vec<&str> = rest
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let label = match segs.as_slice() {
            ["report"] => "/report",
            ["report", "history"] => "/report/history",
            ["report", _, _, "download"] => "/report/{id}/{run}/download",
            _ => "/{unknown}",
        };
        let label = format!("{method} /reports/v1{label}");
        let key = headers.get("x-dc-devkey").and_then(|v| v.to_str().ok());
        if key.is_some_and(|k| self.non_admin_api_keys.iter().any(|n| n == k)) {
            return (
                label,
                self.error(
                    Api::Cc,
                    403,
                    "access_denied|missing_permission",
                    "You do not have permission to access the Report Library (Administrator only)",
                ),
            );
        }
        if key != Some(self.api_key.as_str()) {
            return (
                label,
                self.error(
                    Api::Cc,
                    403,
                    "access_denied|access_denied_invalid_key",
                    "Invalid API key",
                ),
            );
        }
        let reply = match (method.as_str(), segs.as_slice()) {
            ("POST", ["report"]) => self.create_report(body),
            ("GET", ["report", "history"]) => self.report_history(params),
            ("GET", ["report", report, run, "download"]) => {
                self.download_report(report, run, params)
            }
            _ => self.error(
                Api::Cc,
                404,
                "not_found|route",
                &format!("no such route: {rest}"),
            ),
        };
        (label, reply)
    }

    fn create_report(&self, body: &[u8]) -> Reply {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return self.bad_request(Api::Cc, &format!("body is not JSON: {e}")),
        };
        let meta = &v["report_metadata"];
        if meta["report_type"].as_str() != Some("audit-logs") {
            return self.bad_request(Api::Cc, "report_metadata.report_type: only audit-logs");
        }
        let day = |k: &str| {
            meta["date_range"][k]
                .as_str()
                .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        };
        let (Some(start), Some(end)) = (day("start_date"), day("end_date")) else {
            return self.bad_request(
                Api::Cc,
                "report_metadata.date_range: start_date and end_date (YYYY-MM-DD) are required",
            );
        };
        if end < start {
            return self.bad_request(Api::Cc, "date_range: end_date is before start_date");
        }
        let spec = self.faults_view();
        let mut lib = self.reports();
        let n = lib.runs.len() + 1;
        let failed = lib.failed_so_far < spec.report_failed;
        if failed {
            lib.failed_so_far += 1;
        }
        let run = SimRun {
            report_id: format!("rep-{n:06}"),
            run_id: format!(
                "run-{n:06}-{:08x}",
                (n as u64).wrapping_mul(0x9E37_79B9) as u32
            ),
            display_name: v["display_name"].as_str().unwrap_or("").to_string(),
            start,
            end,
            created: crate::clock::now().format("%Y-%m-%d %H:%M:%S").to_string(),
            polls: 0,
            failed,
        };
        let answer =
            json!({"report_identifier": run.report_id, "report_run_identifier": run.run_id});
        lib.runs.push(run);
        if lib.runs.len() > MAX_RUNS {
            lib.runs.remove(0);
        }
        Reply::json(201, &answer)
    }

    fn report_history(&self, params: &Params) -> Reply {
        let (offset, limit) = match (
            params.get("offset").map(str::parse::<usize>),
            params.get("limit").map(str::parse::<usize>),
        ) {
            (Some(Err(_)), _) | (_, Some(Err(_))) => {
                return self.bad_request(Api::Cc, "offset and limit must be whole numbers")
            }
            (o, l) => (
                o.and_then(Result::ok).unwrap_or(0),
                l.and_then(Result::ok).unwrap_or(100).clamp(1, 1000),
            ),
        };
        let names: Option<Vec<&str>> = params
            .get("report_display_name")
            .map(|n| n.split(',').collect());
        let spec = self.faults_view();
        let split_rows = spec.report_split_rows.max(1);
        let mut lib = self.reports();
        let matching: Vec<usize> = (0..lib.runs.len())
            .rev()
            .filter(|i| {
                names
                    .as_ref()
                    .is_none_or(|n| n.contains(&lib.runs[*i].display_name.as_str()))
            })
            .collect();
        let total = matching.len();
        let mut items = Vec::new();
        for i in matching.into_iter().skip(offset).take(limit) {
            let run = &mut lib.runs[i];
            run.polls = run.polls.saturating_add(1);
            let left = spec.report_polls.saturating_sub(run.polls);
            let status = match (left, run.failed) {
                (0, true) => "FAILED",
                (0, false) => "READY",
                (1, _) => "IN_PROGRESS",
                _ => "QUEUED",
            };
            let run = run.clone();
            let parts = if status == "READY" {
                let rows = self.world().report_rows(run.start, run.end).len();
                rows.div_ceil(split_rows).max(1)
            } else {
                0
            };
            items.push(json!({
                "report_identifier": run.report_id,
                "report_run_identifier": run.run_id,
                "report_display_name": run.display_name,
                "report_type": "audit-logs",
                "status": status,
                "created_date": run.created,
                "report_start_date": run.start.to_string(),
                "report_end_date": run.end.to_string(),
                "format": ["JSON"],
                "split_report_count": parts,
            }));
        }
        Reply::json(
            200,
            &json!({"page": {"total": total, "limit": limit, "offset": offset}, "report_history": items}),
        )
    }

    fn download_report(&self, report: &str, run: &str, params: &Params) -> Reply {
        let found = self
            .reports()
            .runs
            .iter()
            .find(|r| r.report_id == report && r.run_id == run)
            .cloned();
        let Some(found) = found else {
            return self.error(
                Api::Cc,
                404,
                "not_found|report",
                &format!("no report run {report}/{run}"),
            );
        };
        if found.polls < self.faults_view().report_polls || found.failed {
            return self.bad_request(Api::Cc, "the report run is not READY");
        }
        let spec = self.faults_view();
        let split_rows = spec.report_split_rows.max(1);
        let rows = self.world().report_rows(found.start, found.end);
        let parts = rows.len().div_ceil(split_rows).max(1);
        let part = match params.get("split_report_sequence").map(str::parse::<usize>) {
            None if parts == 1 => 0,
            None => {
                return self.bad_request(
                    Api::Cc,
                    "split_report_sequence is required: this run has several files",
                )
            }
            Some(Ok(p)) if p < parts => p,
            Some(_) => {
                return self.bad_request(
                    Api::Cc,
                    &format!("split_report_sequence must be from 0 to {}", parts - 1),
                )
            }
        };
        let mut body = String::from("[");
        for (i, r) in rows
            .iter()
            .skip(part * split_rows)
            .take(split_rows)
            .enumerate()
        {
            if i > 0 {
                body.push(',');
            }
            body.push_str(r);
        }
        body.push(']');
        if body.len() as u64 <= spec.report_zip_kb.saturating_mul(1024) {
            return Reply::json_text(200, body);
        }
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(body.len() as u64 > u64::from(u32::MAX) / 2);
        let name = format!("{}_{}_{part}.json", found.report_id, found.run_id);
        let zipped = zip
            .start_file(name, opts)
            .and_then(|()| zip.write_all(body.as_bytes()).map_err(Into::into))
            .and_then(|()| zip.finish());
        match zipped {
            Ok(c) => Reply {
                status: 200,
                content_type: "application/zip",
                headers: Vec::new(),
                body: c.into_inner(),
                padding: None,
            },
            Err(e) => self.error(Api::Cc, 500, "internal_error", &format!("zip: {e}")),
        }
    }
}

impl World {
    /// The Report Library rows of the UTC days `[start, end]`, oldest first, as served.
    pub(crate) fn report_rows(&self, start: NaiveDate, end: NaiveDate) -> Vec<String> {
        let from = day_start_ms(start);
        let to = end.succ_opt().map(day_start_ms).unwrap_or(i64::MAX);
        let lo = self.events.partition_point(|e| e.ts_ms < from);
        let hi = self.events.partition_point(|e| e.ts_ms < to);
        let mut out = Vec::new();
        for e in self.events.get(lo..hi).unwrap_or(&[]) {
            if e.is_malformed() || self.cc_users.is_empty() {
                continue;
            }
            let user = &self.cc_users[e.actor as usize % self.cc_users.len()];
            let activity = match (e.action_name(), e.failed()) {
                ("login", true) => "Failed sign in attempt",
                ("login", false) => "Sign in",
                ("logout", _) => "Sign out",
                ("generate", _) => "API key created",
                ("revoke", _) => "API key revoked",
                ("create", _) => "User created",
                ("update", _) => "User access role updated",
                ("delete", _) => "User deleted",
                ("lock", _) => "User locked",
                ("unlock", _) => "User unlocked",
                (other, _) => other,
            };
            let mut row = String::with_capacity(256);
            row.push_str("{\"date_time\":\"");
            let t = chrono::DateTime::from_timestamp_millis(e.ts_ms).unwrap_or_default();
            let _ = write!(row, "{}", t.format("%Y-%m-%d %H:%M:%S"));
            row.push_str("\",\"user_name\":");
            push_json_str(&mut row, &user.username);
            let _ = write!(row, ",\"user_id\":{}", user.id);
            row.push_str(",\"activity\":");
            push_json_str(&mut row, activity);
            row.push_str(if e.key % 3 == 0 {
                ",\"source\":\"API\""
            } else {
                ",\"source\":\"UI\""
            });
            if e.ip != 0 {
                if e.ipv6() {
                    let _ = write!(row, ",\"ip_address\":\"2001:db8::{:x}\"", e.ip & 0xffff);
                } else {
                    let ip = e.ip.to_be_bytes();
                    let _ = write!(
                        row,
                        ",\"ip_address\":\"{}.{}.{}.{}\"",
                        ip[0], ip[1], ip[2], ip[3]
                    );
                }
            }
            let (_, division, _, _) = CC_CONTAINERS
                .get(user.container)
                .copied()
                .unwrap_or(CC_CONTAINERS[0]);
            row.push_str(",\"division\":");
            push_json_str(&mut row, division);
            row.push_str(",\"country\":\"US\"}");
            // About one event in 29 is listed twice: identical rows, two events.
            if e.key % 29 == 0 {
                out.push(row.clone());
            }
            out.push(row);
        }
        out
    }
}

/// `GET /_sim/report-rows`: every row the Report Library would list now, oldest first.
pub(super) fn report_rows_truth(w: &World) -> Value {
    let (Some(first), Some(last)) = (w.events.first(), w.events.last()) else {
        return json!({"rows": []});
    };
    let day = |ms: i64| super::super::world::ms_to_day(ms);
    let rows: Vec<Value> = w
        .report_rows(day(first.ts_ms), day(last.ts_ms))
        .into_iter()
        .map(Value::String)
        .collect();
    json!({"total": rows.len(), "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every well-formed event is a row of its UTC day, about one in 29 twice, none of another
    /// day's; the rows are JSON objects without an id.
    #[test]
    fn rows_follow_the_events() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let w = World::generate(7, 800, 10, 20, false, now);
        let day = now.date_naive() - chrono::Days::new(3);
        let rows = w.report_rows(day, day);
        let events = w
            .events
            .iter()
            .filter(|e| super::super::super::world::ms_to_day(e.ts_ms) == day)
            .count();
        assert!(rows.len() > events, "{} rows, {events} events", rows.len());
        assert!(rows.len() < events * 2);
        for r in &rows {
            let v: Value = serde_json::from_str(r).unwrap();
            assert!(v["date_time"]
                .as_str()
                .unwrap()
                .starts_with(&day.to_string()));
            assert!(v.get("id").is_none());
        }
    }
}
