//! `alerts` (list), `alerts deliver`, `alerts retry`, `alerts test`, and the alert lines that
//! `collect` and `sync-users` print.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat};

use crate::domain::DeliveryStatus;
use crate::store::Store;

use super::{
    load_config, open_existing_db, printable, AlertStatus, AlertsArgs, AlertsCommand, Cli,
    CliError, StatusFormat,
};

pub(super) async fn alerts(cli: &Cli, args: &AlertsArgs) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let sinks: Vec<String> = cfg.alerts.sinks.iter().map(|s| s.name.clone()).collect();
    let mut out = std::io::stdout().lock();
    match &args.command {
        Some(AlertsCommand::Test { sink }) => {
            let Some(s) = cfg.alerts.sinks.iter().find(|s| s.name == *sink) else {
                return Err(CliError::usage(format!(
                    "no sink named {sink:?} in {} (known: {})",
                    cfg.source.display(),
                    sinks.join(", ")
                )));
            };
            match crate::alert::send_test(s, &cfg.alerts).await {
                Ok(uid) => {
                    writeln!(out, "test alert {uid} delivered to {sink}")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(CliError::failed(format!(
                    "test alert to {sink} failed: {e}"
                ))),
            }
        }
        Some(AlertsCommand::Deliver) => {
            let mut store = Store::open_target(&cfg.store.target)?;
            let d = crate::alert::deliver(&mut store, &cfg.alerts).await;
            print_delivery(&mut out, &d)?;
            Ok(if d.failed() > 0 || d.error.is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(AlertsCommand::Retry { id }) => {
            let mut store = Store::open_target(&cfg.store.target)?;
            match store.retry_alert(*id, &sinks, crate::clock::now_ms())? {
                None => Err(CliError::failed(format!("no alert {id}"))),
                Some(0) => Err(CliError::failed(format!(
                    "alert {id} has nothing to send again (no failed delivery, or no sink configured)"
                ))),
                Some(n) => {
                    writeln!(out, "alert {id}: {n} delivery(ies) pending again")?;
                    let d = crate::alert::deliver(&mut store, &cfg.alerts).await;
                    print_delivery(&mut out, &d)?;
                    Ok(if d.failed() > 0 || d.error.is_some() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
        None => {
            let store = open_existing_db(&cfg)?;
            let status = args.status.map(|s| match s {
                AlertStatus::Pending => DeliveryStatus::Pending,
                AlertStatus::Sent => DeliveryStatus::Sent,
                AlertStatus::Failed => DeliveryStatus::Failed,
                AlertStatus::Suppressed => DeliveryStatus::Suppressed,
            });
            let rows = store.list_alerts(status, args.limit)?;
            match args.format {
                StatusFormat::Json => {
                    for r in &rows {
                        let payload: serde_json::Value =
                            serde_json::from_str(&r.payload).unwrap_or_default();
                        let rfc = |ms: Option<i64>| {
                            ms.and_then(DateTime::from_timestamp_millis)
                                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                        };
                        let line = serde_json::json!({
                            "alert": r.alert_id, "id": r.uid, "sink": r.sink, "status": r.status,
                            "attempts": r.attempts, "last_error": r.last_error,
                            "next_attempt": rfc(r.next_attempt_ms.filter(|_| r.status == DeliveryStatus::Pending)),
                            "failing_since": rfc(r.failing_since_ms),
                            "payload": payload,
                        });
                        writeln!(out, "{line}")?;
                    }
                }
                StatusFormat::Table => {
                    writeln!(
                        out,
                        "{:>6}  {:<10}  {:<12}  {:>3}  {:<8}  {:<20}  summary",
                        "alert", "status", "sink", "try", "severity", "time"
                    )?;
                    for r in &rows {
                        let time = r
                            .at_ms
                            .and_then(DateTime::from_timestamp_millis)
                            .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into());
                        writeln!(
                            out,
                            "{:>6}  {:<10}  {:<12}  {:>3}  {:<8}  {:<20}  {}",
                            r.alert_id,
                            r.status,
                            r.sink.as_deref().unwrap_or("-"),
                            r.attempts,
                            r.severity,
                            time,
                            printable(&r.summary)
                        )?;
                        if let (Some(e), DeliveryStatus::Failed | DeliveryStatus::Pending) =
                            (&r.last_error, r.status)
                        {
                            writeln!(out, "{:>6}  last error: {}", "", printable(e))?;
                        }
                        let at = |ms: Option<i64>| {
                            ms.and_then(DateTime::from_timestamp_millis)
                                .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
                        };
                        if let (Some(next), DeliveryStatus::Pending) =
                            (at(r.next_attempt_ms), r.status)
                        {
                            let since = at(r.failing_since_ms).unwrap_or_else(|| "-".into());
                            writeln!(
                                out,
                                "{:>6}  next attempt: {next} (failing since {since}, {} attempt(s) so far)",
                                "", r.attempts
                            )?;
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What the alert step did: one line per account that got alerts and one per sink that had work.
pub(super) fn print_alerts(
    out: &mut dyn Write,
    a: &crate::pass::AlertsOutcome,
) -> std::io::Result<()> {
    for e in &a.evaluated {
        match &e.result {
            Ok(c) if c.alerts > 0 => writeln!(
                out,
                "{}: {} new alert(s), {} suppressed on backfill",
                e.account, c.alerts, c.suppressed
            )?,
            Ok(_) => {}
            Err(err) => writeln!(out, "{}: alerts not evaluated: {err}", e.account)?,
        }
    }
    print_delivery(out, &a.delivery)
}

fn print_delivery(out: &mut dyn Write, d: &crate::alert::DeliverySummary) -> std::io::Result<()> {
    for (sink, c) in &d.per_sink {
        write!(
            out,
            "alerts to {sink}: {} sent, {} failed, {} still pending",
            c.sent, c.failed, c.pending
        )?;
        if let Some(t) = c.next_attempt.filter(|_| c.pending > 0) {
            write!(out, " (next attempt {})", t.format("%Y-%m-%d %H:%M:%SZ"))?;
        }
        if c.elsewhere > 0 {
            write!(out, ", {} being sent by another run", c.elsewhere)?;
        }
        writeln!(out)?;
    }
    if let Some(e) = &d.error {
        writeln!(out, "alerts: {e}")?;
    }
    Ok(())
}
