//! The daemon's figures: in-memory counters since start, the figures read from the database at
//! scrape time, and their rendering as Prometheus text.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::schedule::Job;
use crate::store::Store;

/// Figures of one job, for `/metrics`.
#[derive(Debug, Default, Clone)]
pub(super) struct JobStats {
    pub(super) runs_ok: u64,
    pub(super) runs_failed: u64,
    pub(super) duration_sum_secs: f64,
    pub(super) last_duration_secs: f64,
    pub(super) last_success: Option<DateTime<Utc>>,
    pub(super) consecutive_failures: u32,
}

/// Health of one account as the daemon's collections saw it.
#[derive(Debug, Default, Clone)]
pub(super) struct AccountHealth {
    pub(super) last_success: Option<DateTime<Utc>>,
    /// The latest pass's error, cleared by a successful pass.
    pub(super) last_error: Option<String>,
}

/// In-memory counters since start (the database-backed figures are read at scrape time; API
/// requests are counted by `api::counters` as they happen).
#[derive(Debug, Default)]
pub(super) struct Metrics {
    pub(super) jobs: BTreeMap<Job, JobStats>,
    pub(super) accounts: BTreeMap<String, AccountHealth>,
    pub(super) events_collected: BTreeMap<String, u64>,
    /// The pace each account's latest pass settled at under the server's rate limit (absent:
    /// never limited).
    pub(super) pace_rps: BTreeMap<String, f64>,
}

/// Figures read from the database at scrape time.
#[derive(Debug, Default)]
pub(super) struct DbFigures {
    /// (account, events stored, quarantined, last successful pass)
    pub(super) accounts: Vec<(String, u64, u64, Option<DateTime<Utc>>)>,
    pub(super) alerts: Vec<(String, u64)>,
}

pub(super) fn read_db_figures(
    store: &Store,
    accounts: &[String],
) -> Result<DbFigures, crate::store::StoreError> {
    let mut out = Vec::new();
    for a in accounts {
        let s = store.account_status(a)?;
        out.push((a.clone(), s.events, s.quarantined, s.last_success));
    }
    Ok(DbFigures {
        accounts: out,
        alerts: store.alert_state_counts()?,
    })
}

/// A label value escaped for the Prometheus text format.
pub(super) fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn render_metrics(
    m: &Metrics,
    db: &DbFigures,
    db_age: Duration,
    requests: &crate::api::counters::CountsSnapshot,
) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let head = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut o,
        "auditwarden_events_stored",
        "gauge",
        "Audit events in the database, per account.",
    );
    for (a, events, _, _) in &db.accounts {
        let _ = writeln!(
            o,
            "auditwarden_events_stored{{account=\"{}\"}} {events}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_quarantined_events",
        "gauge",
        "Items kept in quarantine (not understood), per account.",
    );
    for (a, _, q, _) in &db.accounts {
        let _ = writeln!(
            o,
            "auditwarden_quarantined_events{{account=\"{}\"}} {q}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_request_pace_per_second",
        "gauge",
        "The request rate the latest pass settled at under the server's rate limit, per account (absent: never limited).",
    );
    for (a, rate) in &m.pace_rps {
        let _ = writeln!(
            o,
            "auditwarden_request_pace_per_second{{account=\"{}\"}} {rate:.3}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_events_collected_total",
        "counter",
        "New audit events stored by this process's collections, per account.",
    );
    for (a, _, _, _) in &db.accounts {
        let n = m.events_collected.get(a).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "auditwarden_events_collected_total{{account=\"{}\"}} {n}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_api_requests_total",
        "counter",
        "API responses by account, endpoint and HTTP status (0: transport error or timeout), retries included, counted as they arrive.",
    );
    for (a, endpoint, status, n) in &requests.responses {
        let _ = writeln!(
            o,
            "auditwarden_api_requests_total{{account=\"{}\",endpoint=\"{}\",status=\"{status}\"}} {n}",
            label(a),
            endpoint.as_str()
        );
    }
    head(
        &mut o,
        "auditwarden_api_retries_total",
        "counter",
        "API requests retried, per account.",
    );
    for (a, n) in &requests.retries {
        let _ = writeln!(
            o,
            "auditwarden_api_retries_total{{account=\"{}\"}} {n}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_alerts",
        "gauge",
        "Alert deliveries by state (pending, sent, failed), and alerts suppressed on backfill.",
    );
    for state in ["pending", "sent", "failed", "suppressed"] {
        let n = db
            .alerts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(o, "auditwarden_alerts{{state=\"{state}\"}} {n}");
    }
    head(
        &mut o,
        "auditwarden_metrics_db_age_seconds",
        "gauge",
        "Age of the database figures in this scrape: 0 when read for it, more when the database was busy and the latest figures read are shown.",
    );
    let _ = writeln!(
        o,
        "auditwarden_metrics_db_age_seconds {:.3}",
        db_age.as_secs_f64()
    );
    head(
        &mut o,
        "auditwarden_account_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the account's last successful collection (0: never).",
    );
    for (a, _, _, db_last) in &db.accounts {
        // The database has the passes; the daemon's own record covers a pass not yet written.
        let mem = m.accounts.get(a).and_then(|h| h.last_success);
        let t = (*db_last).max(mem).map_or(0, |t| t.timestamp());
        let _ = writeln!(
            o,
            "auditwarden_account_last_success_timestamp_seconds{{account=\"{}\"}} {t}",
            label(a)
        );
    }
    head(
        &mut o,
        "auditwarden_account_up",
        "gauge",
        "1 when the account's latest collection succeeded, else 0.",
    );
    for (a, _, _, _) in &db.accounts {
        let up = m
            .accounts
            .get(a)
            .is_some_and(|h| h.last_error.is_none() && h.last_success.is_some());
        let _ = writeln!(
            o,
            "auditwarden_account_up{{account=\"{}\"}} {}",
            label(a),
            u8::from(up)
        );
    }
    head(
        &mut o,
        "auditwarden_job_runs_total",
        "counter",
        "Job runs by job and result.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_runs_total{{job=\"{job}\",result=\"ok\"}} {}",
            s.runs_ok
        );
        let _ = writeln!(
            o,
            "auditwarden_job_runs_total{{job=\"{job}\",result=\"failed\"}} {}",
            s.runs_failed
        );
    }
    head(
        &mut o,
        "auditwarden_job_seconds_total",
        "counter",
        "Total seconds spent in each job.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_seconds_total{{job=\"{job}\"}} {:.3}",
            s.duration_sum_secs
        );
    }
    head(
        &mut o,
        "auditwarden_job_last_duration_seconds",
        "gauge",
        "Duration of each job's latest run.",
    );
    for job in Job::ALL {
        let s = m.jobs.get(&job).cloned().unwrap_or_default();
        let _ = writeln!(
            o,
            "auditwarden_job_last_duration_seconds{{job=\"{job}\"}} {:.3}",
            s.last_duration_secs
        );
    }
    head(
        &mut o,
        "auditwarden_job_last_success_timestamp_seconds",
        "gauge",
        "Unix time of each job's last successful run (0: never since start).",
    );
    for job in Job::ALL {
        let t = m
            .jobs
            .get(&job)
            .and_then(|s| s.last_success)
            .map_or(0, |t| t.timestamp());
        let _ = writeln!(
            o,
            "auditwarden_job_last_success_timestamp_seconds{{job=\"{job}\"}} {t}"
        );
    }
    head(
        &mut o,
        "auditwarden_job_consecutive_failures",
        "gauge",
        "Failed runs in a row (0 after a success).",
    );
    for job in Job::ALL {
        let n = m.jobs.get(&job).map_or(0, |s| s.consecutive_failures);
        let _ = writeln!(
            o,
            "auditwarden_job_consecutive_failures{{job=\"{job}\"}} {n}"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pace gauge lists the accounts a server limited, with their settled rate, and
    /// nothing for the others.
    #[test]
    fn the_pace_gauge_lists_limited_accounts_only() {
        let mut m = Metrics::default();
        m.pace_rps.insert("one \"x\"".into(), 14.9);
        let db = DbFigures {
            accounts: vec![("one \"x\"".into(), 1, 0, None), ("two".into(), 1, 0, None)],
            alerts: Vec::new(),
        };
        let text = render_metrics(
            &m,
            &db,
            Duration::ZERO,
            &crate::api::counters::CountsSnapshot::default(),
        );
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("auditwarden_request_pace_per_second"))
            .collect();
        assert_eq!(
            lines,
            vec![r#"auditwarden_request_pace_per_second{account="one \"x\""} 14.900"#]
        );
    }
}
