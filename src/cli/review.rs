//! `review start|export|import|status|close`: access-review campaigns (see `crate::review`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Subcommand;

use super::{load_config, printable, write_atomically, Cli, CliError};
use crate::review::{self, Scope, SheetFormat, StartOptions};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub(super) enum ReviewCommand {
    /// Freeze the population (one item per account, user and role) and print the campaign id.
    Start {
        /// Review this account (repeatable; default: every configured account).
        #[arg(long, value_name = "A")]
        account: Vec<String>,
        #[arg(long, value_enum, default_value_t = Scope::Privileged)]
        scope: Scope,
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Decisions and revocations are overdue after this day (YYYY-MM-DD).
        #[arg(long, value_name = "DATE")]
        due: Option<String>,
        /// Who may decide (repeatable; default: anyone but the holder or granter of a role).
        #[arg(long, value_name = "EMAIL")]
        reviewer: Vec<String>,
    },
    /// Write the decision sheet: one row per item, with decision, justification, reviewer.
    Export {
        id: i64,
        /// Default: from the --out extension, else csv.
        #[arg(long, value_enum)]
        format: Option<SheetFormat>,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Record the decisions of a filled sheet (CSV or XLSX): all rows or none.
    Import {
        id: i64,
        file: PathBuf,
        /// The reviewer of rows whose reviewer cell is empty.
        #[arg(long, value_name = "EMAIL")]
        reviewer: Option<String>,
    },
    /// Decided/total by reviewer, overdue items, and the remediation of each "revoke".
    Status { id: i64 },
    /// Freeze the decisions and write the signed evidence package into reports/review-<id>/.
    Close { id: i64 },
}

pub(super) fn review(cli: &Cli, cmd: &ReviewCommand) -> Result<ExitCode, CliError> {
    let cfg = load_config(cli)?;
    let now = crate::clock::now();
    let open = || -> Result<Store, CliError> {
        if !cfg.store.target.exists() {
            return Err(CliError::failed(format!(
                "no database at {} yet: run `auditwarden collect` first",
                cfg.store.target
            )));
        }
        Ok(Store::open_target(&cfg.store.target)?)
    };
    match cmd {
        ReviewCommand::Start {
            account,
            scope,
            name,
            due,
            reviewer,
        } => {
            let mut accounts = Vec::new();
            let mut kinds = Vec::new();
            if account.is_empty() {
                accounts.extend(cfg.accounts.iter().map(|a| a.name.clone()));
                kinds.extend(cfg.accounts.iter().map(|a| a.kind));
            }
            for a in account {
                let found = cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
                accounts.extend(found.iter().map(|a| a.name.clone()));
                kinds.extend(found.iter().map(|a| a.kind));
            }
            let due = due
                .as_deref()
                .map(|d| {
                    NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                        CliError::usage(format!("--due: {d:?} is not a day (YYYY-MM-DD)"))
                    })
                })
                .transpose()?;
            let mut store = open()?;
            let started = review::start(
                &mut store,
                &StartOptions {
                    accounts,
                    kinds,
                    scope: *scope,
                    name: name.clone(),
                    due,
                    reviewers: reviewer.clone(),
                    dormant_days: cfg.reports.dormant_days,
                },
                now,
            )?;
            println!("{}", started.id);
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "review {}: {} item(s) frozen, population sha256 {}",
                started.id, started.items, started.population_sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Export { id, format, out } => {
            let format = format
                .or_else(|| {
                    out.as_ref()
                        .and_then(|p| p.extension())
                        .and_then(|e| e.to_str())
                        .and_then(|e| match e.to_ascii_lowercase().as_str() {
                            "xlsx" => Some(SheetFormat::Xlsx),
                            "csv" => Some(SheetFormat::Csv),
                            _ => None,
                        })
                })
                .unwrap_or(SheetFormat::Csv);
            let store = super::open_existing_db(&cfg)?;
            let rows = match out {
                Some(p) => write_atomically(p, |w| review::export(&store, *id, format, w))?,
                None => {
                    let mut buf = Vec::new();
                    let n = review::export(&store, *id, format, &mut buf)?;
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&buf)
                        .and_then(|_| stdout.flush())
                        .map_err(|e| CliError::failed(format!("standard output: {e}")))?;
                    n
                }
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "review {id}: {rows} item(s) in the decision sheet");
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Import { id, file, reviewer } => {
            let mut store = open()?;
            let o = review::import(&mut store, *id, file, reviewer.as_deref(), now)?;
            println!(
                "review {id}: {} decision(s) recorded, {} unchanged, {} row(s) undecided (from {})",
                o.recorded,
                o.unchanged,
                o.undecided,
                printable(&file.display().to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Status { id } => {
            let store = super::open_existing_db(&cfg)?;
            let st = review::status(&store, *id, now)?;
            for line in st.text().lines() {
                println!("{}", printable(line));
            }
            Ok(ExitCode::SUCCESS)
        }
        ReviewCommand::Close { id } => {
            let key = match &cfg.reports.signing_key_file {
                Some(p) => Some(crate::signing::load_private_key(p)?),
                None => None,
            };
            let mut store = open()?;
            let closed =
                review::close(&mut store, *id, &cfg.reports.output_dir, key.as_ref(), now)?;
            println!("{}", closed.dir.display());
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "review {id} closed: {}/{} decided, {} revocation(s) done of {}; package {} ({}), chain reviews/review-{id} #{}",
                closed.status.decided(),
                closed.status.total(),
                closed.status.count(review::RemediationState::Done),
                closed.status.remediation.len(),
                closed.dir.display(),
                closed.files.join(", "),
                closed.head.n
            );
            if !closed.signed {
                let _ = writeln!(
                    err,
                    "warning: the package is unsigned: set [reports] signing_key_file (from `auditwarden keygen`)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
