//! `report` and `reports run`: compliance reports from the database only.

use std::io::Write;
use std::process::ExitCode;

use crate::export;

use super::{
    load_config, open_existing_db, parse_when, to_stdout, write_atomically, Cli, CliError,
    ReportArgs,
};

/// `auditwarden report KIND`: one report to a file (atomically) or standard output; what it
/// covers goes to standard error.
pub(super) fn report(cli: &Cli, args: &ReportArgs) -> Result<ExitCode, CliError> {
    use crate::report::{self, Period, ReportFormat, ReportRequest};
    let cfg = load_config(cli)?;
    let accounts = cfg
        .select_accounts(args.account.as_deref())
        .map_err(CliError::usage)?;
    let tz = cfg.reports.time_zone;
    let now = crate::clock::now();
    let period = if args.kind.is_period() {
        let from = args
            .from
            .as_deref()
            .map(|s| parse_when(s, tz, false))
            .transpose()
            .map_err(|e| CliError::usage(format!("--from: {e}")))?;
        let to = args
            .to
            .as_deref()
            .map(|s| parse_when(s, tz, true))
            .transpose()
            .map_err(|e| CliError::usage(format!("--to: {e}")))?;
        let to = to.unwrap_or(now);
        let from = from.unwrap_or(to - chrono::Duration::days(30));
        if from >= to {
            return Err(CliError::usage("--from must be before --to"));
        }
        Period::Range { from, to }
    } else {
        if args.from.is_some() || args.to.is_some() {
            return Err(CliError::usage(format!(
                "{} is a point-in-time report (as of now): --from/--to do not apply",
                args.kind.as_str()
            )));
        }
        Period::AsOf(now)
    };
    let format = args
        .format
        .or_else(|| args.out.as_deref().and_then(report::run::format_of))
        .unwrap_or(ReportFormat::Csv);
    let store = open_existing_db(&cfg)?;
    let req = ReportRequest {
        kind: args.kind,
        accounts,
        period,
        now,
        time_zone: tz,
        dormant_days: cfg.reports.dormant_days,
        credential_warn_days: cfg.reports.credential_warn_days,
        max_credential_age_days: cfg.reports.max_credential_age_days,
        stale_invite_days: cfg.users.stale_invite_days,
    };
    let outcome = match &args.out {
        Some(path) => write_atomically(path, |w| report::generate(&store, &req, format, w))?,
        None => match to_stdout(|w| report::generate(&store, &req, format, w))? {
            Some(o) => o,
            // The reader went away: nothing more to say.
            None => return Ok(ExitCode::SUCCESS),
        },
    };
    // The report states all of this itself (but CSV has only rows): say it here too.
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{} report: {} row(s), {}, generated {} by auditwarden {}",
        args.kind.as_str(),
        outcome.rows,
        outcome.period,
        export::rfc3339(now),
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(err, "  covers {}", outcome.scope)?;
    for c in &outcome.coverage {
        writeln!(err, "  coverage {c}")?;
    }
    if !outcome.complete {
        writeln!(
            err,
            "WARNING: the collected data is incomplete for this report (see coverage)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `auditwarden reports run`: the configured set, with its manifest (and signature).
pub(super) fn run(cli: &Cli, account: Option<&str>) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let accounts = cfg.select_accounts(account).map_err(CliError::usage)?;
    let store = open_existing_db(&cfg)?;
    let run = crate::report::run::run_configured(&store, &cfg, &accounts, crate::clock::now())?;
    if run.signature.is_none() {
        eprintln!(
            "note: the run is unsigned (no [reports] signing_key_file): auditors can check its SHA-256s, not who wrote it"
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "reports written to {}", run.dir.display())?;
    for f in &run.manifest.files {
        writeln!(
            out,
            "  {} ({} rows, {} bytes, sha256 {}){}",
            f.file,
            f.rows,
            f.bytes,
            f.sha256,
            if f.complete { "" } else { " INCOMPLETE DATA" }
        )?;
    }
    writeln!(out, "  manifest.json")?;
    if run.signature.is_some() {
        writeln!(
            out,
            "  {} (Ed25519, hex)",
            crate::report::run::SIGNATURE_FILE
        )?;
    }
    for p in &run.pruned {
        writeln!(out, "removed (retention): {}", p.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
