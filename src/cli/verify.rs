//! `verify` (the hash chains of the stored history), `verify-report` (a report run for an
//! auditor) and `keygen` (the key that signs report manifests).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use crate::store::{Store, StoreTarget};

use super::{config_path, load_config, Cli, CliError};

/// `auditwarden verify-report`: one line per check as it is decided; exit code 1 on any finding.
pub(super) fn verify_report(
    cli: &Cli,
    manifest: &Path,
    public_key: &str,
    db: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let key_text = if Path::new(public_key).is_file() {
        std::fs::read_to_string(public_key)
            .map_err(|e| CliError::usage(format!("--public-key {public_key}: {e}")))?
    } else {
        public_key.to_string()
    };
    let key = crate::signing::parse_public_key(&key_text)
        .map_err(|e| CliError::usage(format!("--public-key: {e}")))?;
    // The database: --db, else the configuration's when one is given or found.
    let db_target = match db {
        Some(p) => Some(StoreTarget::Sqlite(p.to_path_buf())),
        None if cli.config.is_some() || config_path(cli).exists() => {
            Some(load_config(cli)?.store.target)
        }
        None => None,
    };
    let store = match &db_target {
        Some(t) if !t.exists() => return Err(CliError::failed(format!("no database at {t}"))),
        Some(t) => Some(Store::open_target_read_only(t)?),
        None => None,
    };
    let mut out = std::io::stdout().lock();
    let mut io_err = None;
    let findings = crate::report::verify::verify_report(manifest, &key, store.as_ref(), |c| {
        if let Err(e) = writeln!(out, "{c}") {
            io_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if findings > 0 {
        writeln!(
            out,
            "verify-report: {findings} finding(s) in {}",
            manifest.display()
        )?;
        Ok(ExitCode::from(1))
    } else {
        writeln!(out, "verify-report: ok, {}", manifest.display())?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `auditwarden verify`: stream every finding as it is met, then one line per chain.
pub(super) fn verify(
    cli: &Cli,
    account: Option<&str>,
    db: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let target = match db {
        Some(p) => StoreTarget::Sqlite(p.to_path_buf()),
        None => {
            let cfg = load_config(cli)?;
            if let Some(a) = account {
                cfg.select_accounts(Some(a)).map_err(CliError::usage)?;
            }
            cfg.store.target.clone()
        }
    };
    if !target.exists() {
        return Err(CliError::failed(format!(
            "no database at {target}: nothing to verify"
        )));
    }
    let store = Store::open_target_read_only(&target)?;
    if !store.has_chains()? {
        return Err(CliError::failed(format!(
            "{target} predates hash chains: run `auditwarden collect` once to upgrade it (the upgrade chains the rows stored so far)"
        )));
    }
    let mut out = std::io::stdout().lock();
    let mut findings = 0u64;
    let mut io_err = None;
    let summaries = store.verify_chains(account, |f| {
        findings += 1;
        if let Err(e) = writeln!(out, "FINDING {f}") {
            io_err.get_or_insert(e);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    for s in &summaries {
        writeln!(
            out,
            "{}: {} chain: {} rows, head #{} {}",
            s.account,
            s.chain.as_str(),
            s.rows,
            s.head.n,
            hex::encode(s.head.hash)
        )?;
    }
    if findings > 0 {
        writeln!(out, "verify: {findings} finding(s) in {target}")?;
        Ok(ExitCode::from(1))
    } else {
        writeln!(
            out,
            "verify: ok, {} chain(s) intact in {}",
            summaries.len(),
            target
        )?;
        Ok(ExitCode::SUCCESS)
    }
}

/// `auditwarden keygen`.
pub(super) fn keygen(out: &Path) -> Result<ExitCode, CliError> {
    let key = crate::signing::generate();
    crate::signing::write_private_key(out, &key)
        .map_err(|e| CliError::failed(format!("cannot write the private key: {e}")))?;
    let public = crate::signing::public_key_pem(&key.verifying_key())?;
    eprintln!(
        "wrote the private key to {} (mode 0600); give auditors this public key:",
        out.display()
    );
    print!("{public}");
    Ok(ExitCode::SUCCESS)
}
