//! `collect`, `sync-users`, `poll-invites`, `status` and `check`: the commands that talk to the
//! accounts or say how their collection stands.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::collect::{AccountSummary, CollectOptions};
use crate::config;
use crate::export;
use crate::pass::{PassOptions, Stage};
use crate::store::Store;

use super::alerts::print_alerts;
use super::{
    load_config, open_existing_db, printable, test_panic_account, Cli, CliError, StatusFormat,
};

/// `auditwarden collect`: one pass for each account (or the one named), each stage printed as it
/// finishes; exit code 1 when an account's audit log or users failed.
pub(super) async fn collect(cli: &Cli, account: Option<&str>) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    let store = Store::open_target(&cfg.store.target)?;
    let mut out = std::io::stdout();
    // Each stage is printed as it finishes; the first write error ends the command after
    // the pass.
    let mut io_err = None;
    let mut show = |stage: Stage<'_>| {
        let r = match stage {
            Stage::Collected(summaries) => print_summaries(&mut out, summaries),
            Stage::UsersSynced { users, .. } => {
                crate::report_users::print_user_summaries(&mut out, users)
            }
        };
        if let Err(e) = r {
            io_err.get_or_insert(e);
        }
    };
    let opts = PassOptions {
        collect: CollectOptions {
            today: crate::clock::today(),
            progress: std::io::stderr().is_terminal(),
            cancel: tokio_util::sync::CancellationToken::new(),
            panic_account: test_panic_account(),
            max_accounts: cfg.max_concurrent_accounts,
        },
        // Alerts never fail the collection: their problems are printed and logged only.
        alerts: Some(&cfg.alerts),
        on_stage: Some(&mut show),
    };
    let pass = crate::pass::run_pass(store, &accounts, opts).await?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    let mut out = std::io::stdout().lock();
    if let Some(a) = &pass.alerts {
        print_alerts(&mut out, a)?;
    }
    Ok(if pass.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Which user job `sync-users` / `poll-invites` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UsersJob {
    /// `sync-users`: the directory, then the alert step.
    Sync,
    /// `poll-invites`: one `GET /user/{id}` per invited user.
    Poll,
}

/// `auditwarden sync-users` and `auditwarden poll-invites`.
pub(super) async fn users(
    cli: &Cli,
    account: Option<&str>,
    job: UsersJob,
) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    let mut store = Store::open_target(&cfg.store.target)?;
    let summaries = if job == UsersJob::Sync {
        crate::collect::users::sync_users(&mut store, &accounts).await
    } else {
        crate::collect::users::poll_invites(&mut store, &accounts, cfg.users.stale_invite_days)
            .await
    };
    let mut out = std::io::stdout().lock();
    crate::report_users::print_user_summaries(&mut out, &summaries)?;
    if job == UsersJob::Sync {
        let alerts = crate::pass::alerts(&mut store, &accounts, &cfg.alerts).await;
        print_alerts(&mut out, &alerts)?;
    }
    Ok(if summaries.iter().any(|s| s.error.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `auditwarden status`.
pub(super) fn status(
    cli: &Cli,
    account: Option<&str>,
    format: StatusFormat,
    quarantine: bool,
) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    let store = open_existing_db(&cfg)?;
    let mut out = std::io::stdout().lock();
    print_status(&mut out, &store, &accounts, format, quarantine)?;
    Ok(ExitCode::SUCCESS)
}

/// `auditwarden check`: the configuration, then one cheap call per account.
pub(super) async fn check(cli: &Cli, account: Option<&str>) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    println!("configuration {}: valid", cfg.source.display());
    let mut failed = 0;
    for a in accounts {
        let verdict = match crate::api::Client::new(a) {
            Ok(c) => c.check().await.map(|msg| (msg, c)),
            Err(e) => Err(e),
        };
        match verdict {
            Ok((msg, client)) => {
                println!("{} ({}): ok, {msg}", a.name, a.kind.as_str());
                // Transport facts (validity dates on the system clock, as TLS judges them).
                let now = std::time::SystemTime::now();
                for line in client.tls().report(client.base_url(), now) {
                    println!("  {line}");
                }
                if a.kind == config::AccountKind::CertCentral {
                    match check_audit_log(a).await {
                        Ok(line) => println!("  audit log: {line}"),
                        Err(line) => {
                            failed += 1;
                            println!("  audit log: FAILED, {line}");
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("{} ({}): FAILED, {e}", a.name, a.kind.as_str());
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a CertCentral key can read the audit log (the Report Library, contract 2.3). A key
/// without the Administrator role is a warning, not a failure: the account works from snapshots.
async fn check_audit_log(a: &config::Account) -> Result<String, String> {
    if !a.audit_log {
        return Ok("not collected (audit_log = false); users are tracked from snapshots".into());
    }
    let client = crate::api::Client::for_reports(a).map_err(|e| e.to_string())?;
    match client.check_report_access().await {
        Ok(()) => Ok(format!(
            "readable through the Report Library at {}",
            crate::text::redact_userinfo(client.base_url().as_str())
        )),
        Err(e @ crate::api::ApiError::NotAdministrator { .. }) => {
            Ok(format!("WARNING {e}; users are tracked from snapshots"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// One line per account: what the pass stored and what it cost.
pub(super) fn print_summaries(
    out: &mut dyn Write,
    summaries: &[AccountSummary],
) -> std::io::Result<()> {
    for s in summaries {
        let secs = (s.finished - s.started).num_milliseconds() as f64 / 1000.0;
        if let Some(why) = &s.skipped {
            writeln!(out, "{}: skipped, {why}", s.account)?;
            continue;
        }
        let head = match &s.error {
            None => "ok".to_string(),
            Some(e) => format!("FAILED, {}", printable(e)),
        };
        writeln!(
            out,
            "{}: {head}\n  {} new events, {} already stored, {} quarantined; {} days read ({} re-reads, {} left incomplete); {} requests ({} retries) in {secs:.1}s",
            s.account,
            s.written.inserted,
            s.written.duplicates,
            s.written.quarantined,
            s.days_read,
            s.rereads,
            s.unstable_days,
            s.requests,
            s.retries,
        )?;
        if let Some(p) = s.pace.filter(|p| p.limited > 0) {
            let rate = p
                .rate
                .map_or("no cap".to_string(), |r| format!("{r:.1} requests/s"));
            writeln!(
                out,
                "  the server answered 429 {} time(s); pace settled at {rate}",
                p.limited
            )?;
        }
    }
    Ok(())
}

fn print_status(
    out: &mut dyn Write,
    store: &Store,
    accounts: &[&config::Account],
    format: StatusFormat,
    quarantine: bool,
) -> Result<(), CliError> {
    let mut json = Vec::new();
    // Several daemons on one PostgreSQL database: who works each account (SQLite has no leases).
    let leases = store.leases()?;
    let now_ms = crate::clock::now_ms();
    let ms_time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), export::rfc3339)
    };
    for a in accounts {
        let s = store.account_status(&a.name)?;
        let key = crate::daemon::lease_key(a);
        let lease = leases.iter().find(|l| l.key == key);
        let today = crate::clock::today();
        let from = today
            .checked_sub_days(chrono::Days::new(u64::from(a.backfill_days)))
            .unwrap_or(today);
        let cov = crate::coverage::summarize(store, a, from, today)?;
        let last_error = s.last_pass.as_ref().and_then(|p| p.error.clone());
        match format {
            StatusFormat::Table => {
                writeln!(out, "{} ({})", a.name, a.kind.as_str())?;
                writeln!(
                    out,
                    "  last successful pass: {}",
                    s.last_success
                        .map(export::rfc3339)
                        .unwrap_or_else(|| "never".into())
                )?;
                writeln!(out, "  coverage: {}", cov.describe())?;
                writeln!(
                    out,
                    "  events stored: {}, quarantined: {}",
                    s.events, s.quarantined
                )?;
                if let Some(p) = &s.last_pass {
                    writeln!(
                        out,
                        "  last pass: {}, {} new events, {} requests ({} retries)",
                        export::rfc3339(p.finished),
                        p.new_events,
                        p.requests,
                        p.retries
                    )?;
                    if let Some(rate) = p.pace_rps {
                        writeln!(
                            out,
                            "  rate limit: the server answered 429 {} time(s); pace settled at {rate:.1} requests/s",
                            p.rate_limited
                        )?;
                    }
                }
                writeln!(
                    out,
                    "  last error: {}",
                    last_error.as_deref().unwrap_or("none")
                )?;
                match lease {
                    Some(l) if l.expires_ms > now_ms => writeln!(
                        out,
                        "  lease: held by {} since {} (epoch {}, until {})",
                        crate::text::one_line(&l.owner),
                        ms_time(l.acquired_ms),
                        l.epoch,
                        ms_time(l.expires_ms)
                    )?,
                    Some(l) => writeln!(
                        out,
                        "  lease: free (last held by {}, epoch {})",
                        crate::text::one_line(&l.owner),
                        l.epoch
                    )?,
                    None => {}
                }
                if a.kind == config::AccountKind::CertCentral && a.audit_log {
                    let pending = store.pending_report_runs(&a.name)?;
                    if let Some(oldest) = pending.first() {
                        writeln!(
                            out,
                            "  report runs pending: {} (oldest created {}); the next pass picks them up",
                            pending.len(),
                            export::rfc3339(oldest.created)
                        )?;
                    }
                    if let Some(w) = s
                        .last_success
                        .and_then(|t| crate::collect::history_warning(t, crate::clock::now()))
                    {
                        writeln!(out, "  {w}")?;
                    }
                }
            }
            StatusFormat::Json => json.push(serde_json::json!({
                "account": a.name,
                "kind": a.kind.as_str(),
                "last_success": s.last_success.map(export::rfc3339),
                "coverage": cov,
                "events": s.events,
                "quarantined": s.quarantined,
                "last_error": last_error,
                "lease": lease.map(|l| serde_json::json!({
                    "owner": l.owner,
                    "epoch": l.epoch,
                    "since": ms_time(l.acquired_ms),
                    "until": ms_time(l.expires_ms),
                    "held": l.expires_ms > now_ms,
                })),
                "rate_limited": s.last_pass.as_ref().map_or(0, |p| p.rate_limited),
                "pace_rps": s.last_pass.as_ref().and_then(|p| p.pace_rps),
            })),
        }
    }
    if format == StatusFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        )?;
    }
    if quarantine {
        writeln!(out, "recent quarantined items:")?;
        for q in store.quarantine(None, 20)? {
            writeln!(
                out,
                "  {} {} (day {}): {}: {}",
                q.account,
                q.key,
                q.day,
                q.reason,
                crate::api::wire::preview(&q.raw)
            )?;
        }
    }
    Ok(())
}
