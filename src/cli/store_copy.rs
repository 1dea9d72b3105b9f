//! `auditwarden store copy --from PATH_OR_URL --to PATH_OR_URL`: a whole history from one
//! database to another (see `store::copy`), table by table, printed as it goes.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::secret::Secret;
use crate::store::copy::CopyError;
use crate::store::{PgTarget, Store, StoreTarget};

use super::{config_path, load_config, Cli, CliError};

/// A SQLite file, or a PostgreSQL URL whose password is the configuration's when it names the
/// same URL, else `PGPASSWORD`.
fn target(cli: &Cli, flag: &str, text: &str) -> Result<StoreTarget, CliError> {
    let t = text.trim();
    if !(t.starts_with("postgresql://") || t.starts_with("postgres://")) {
        return Ok(StoreTarget::Sqlite(PathBuf::from(t)));
    }
    let bare = PgTarget::parse(t, None).map_err(|e| CliError::usage(format!("{flag}: {e}")))?;
    if cli.config.is_some() || config_path(cli).exists() {
        if let Ok(cfg) = load_config(cli) {
            if let StoreTarget::Postgres(c) = &cfg.store.target {
                if c.url() == bare.url() {
                    return Ok(cfg.store.target.clone());
                }
            }
        }
    }
    let password = std::env::var("PGPASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Secret::new);
    PgTarget::parse(t, password)
        .map(StoreTarget::Postgres)
        .map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

pub(super) fn copy(cli: &Cli, from: &str, to: &str) -> Result<ExitCode, CliError> {
    let source = target(cli, "--from", from)?;
    let dest = target(cli, "--to", to)?;
    if source == dest {
        return Err(CliError::usage(format!(
            "--from and --to are the same database ({source})"
        )));
    }
    if !source.exists() {
        return Err(CliError::failed(format!("no database at {source}")));
    }
    let from_store = Store::open_target_read_only(&source)?;
    let mut to_store = Store::open_target(&dest)?;
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let report = crate::store::copy::copy(&from_store, &mut to_store, |table, read, inserted| {
        if let Err(e) = writeln!(out, "{table}: {read} rows read, {inserted} copied") {
            io_err.get_or_insert(e);
        }
    })
    .map_err(|e| match e {
        CopyError::Different(msg) => CliError::failed(format!("{dest}: {msg}")),
        CopyError::Store(e) => CliError::from(e),
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    for f in &report.findings {
        writeln!(out, "FINDING {f}")?;
    }
    if report.findings.is_empty() {
        writeln!(
            out,
            "store copy: ok, {source} -> {dest}; {} chain(s) verify on the target",
            report.chains
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(
            out,
            "store copy: {} finding(s) verifying the chains on {dest}",
            report.findings.len()
        )?;
        Ok(ExitCode::from(1))
    }
}
