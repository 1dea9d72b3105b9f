//! The scheduled report set (`auditwarden reports run`; the daemon calls the same function on the
//! `[reports] schedule`): every configured report in every configured format, as of one instant,
//! into a date-stamped run directory `{output_dir}/{stamp}/` with date-stamped file names
//! (`{kind}-{stamp}.{ext}`, so a file copied out keeps its date). Each file is written to a
//! temporary sibling, synced and renamed, so a reader never sees half a report; `manifest.json`
//! (each file with its size, SHA-256, row count and coverage) is written the same way, last, so
//! its presence marks a finished run; it also records the periods, the config's SHA-256, the
//! version and each account's chain heads, and with a signing key a detached Ed25519 signature
//! (`manifest.json.sig`, hex) is written after it the same way. Runs older than `retention_days` are then removed; only
//! directories whose name is a run stamp are ever touched.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{ReportSettings, RunSettings};
use super::{default_period, generate, Outcome, Period, ReportError, ReportFormat, ReportRequest};
use crate::api::settings::Account;
use crate::export::rfc3339;
use crate::signing::SigningKey;
use crate::store::chain::{ChainHead, ChainKind};
use crate::store::Store;

const STAMP: &str = "%Y-%m-%dT%H%M%SZ";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Report {
        path: PathBuf,
        source: Box<ReportError>,
    },
    #[error("encoding the manifest: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("reading the chain heads: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("reports.signing_key_file: {0}")]
    SigningKey(#[from] crate::signing::SigningError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file of a run, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestEntry {
    pub file: String,
    pub kind: &'static str,
    pub format: &'static str,
    pub bytes: u64,
    pub sha256: String,
    pub rows: u64,
    /// False when the collected data behind the report is incomplete (the report says where).
    pub complete: bool,
    pub period: String,
    pub coverage: Vec<String>,
    /// What the report covers (its `scope`; a CSV file has no header to say it).
    pub scope: String,
}

/// One chain's head when the run was written: link `n` of that account's chain had `hash`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestHead {
    pub account: String,
    /// `events` or `user_history`.
    pub chain: String,
    pub n: i64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub schema: &'static str,
    pub generated_at: String,
    pub generator: String,
    /// The bare version (also in `generator`).
    pub version: &'static str,
    /// SHA-256 of the configuration file's bytes as read for this run.
    pub config_sha256: String,
    pub display_time_zone: String,
    /// Every distinct period of the files, in file order.
    pub periods: Vec<String>,
    /// Each selected account's chain heads (events and user history), read after the files were
    /// written, so every row a report used is at or before them.
    pub chain_heads: Vec<ManifestHead>,
    /// `"ed25519"` when a detached `manifest.json.sig` (hex) accompanies this file, else `null`.
    pub signature: Option<&'static str>,
    pub files: Vec<ManifestEntry>,
}

/// What a run records about where it came from, and the key that signs it.
pub struct Provenance<'a> {
    /// SHA-256 (hex) of the configuration the run was made with.
    pub config_sha256: String,
    /// `None`: the run is unsigned.
    pub signing_key: Option<&'a SigningKey>,
}

/// Write the set as configured: the config file's hash in the manifest, signed when
/// `[reports] signing_key_file` is set. `reports run` and the daemon's report job both use it
/// (passing the whole configuration, which `config` turns into [`RunSettings`]).
pub fn run_configured<'a>(
    store: &Store,
    settings: impl Into<RunSettings<'a>>,
    accounts: &[&Account],
    now: DateTime<Utc>,
) -> Result<RunOutcome, RunError> {
    let cfg: RunSettings<'a> = settings.into();
    let key = match &cfg.reports.signing_key_file {
        Some(path) => Some(crate::signing::load_private_key(path)?),
        None => None,
    };
    let provenance = Provenance {
        config_sha256: cfg.config_sha256.to_string(),
        signing_key: key.as_ref(),
    };
    run_scheduled(
        store,
        cfg.reports,
        accounts,
        cfg.stale_invite_days,
        now,
        &provenance,
    )
}

/// The signature file next to a manifest.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";

/// SHA-256 (hex) of a file's bytes, streamed.
pub fn sha256_file(path: &Path) -> Result<String, RunError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(hex::encode(h.finalize()))
}

#[derive(Debug)]
pub struct RunOutcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The detached signature, when the run was signed.
    pub signature: Option<PathBuf>,
    /// Old run directories removed by retention.
    pub pruned: Vec<PathBuf>,
}

/// Counts and hashes what passes through.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Write `path` through a temporary sibling and a rename; returns what `f` returned, the size and
/// the SHA-256 of the bytes written.
pub fn write_file_atomically<T>(
    path: &Path,
    f: impl FnOnce(&mut dyn Write) -> Result<T, ReportError>,
) -> Result<(T, u64, String), RunError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut w = Hashing {
            inner: BufWriter::new(file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let v = f(&mut w).map_err(|source| RunError::Report {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        w.flush().map_err(io_err(&tmp))?;
        w.inner.get_ref().sync_all().map_err(io_err(&tmp))?;
        let sha = hex::encode(w.hash.finalize());
        fs::rename(&tmp, path).map_err(io_err(path))?;
        Ok((v, w.bytes, sha))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Write the configured report set as of `now`.
pub fn run_scheduled(
    store: &Store,
    settings: &ReportSettings,
    accounts: &[&Account],
    stale_invite_days: u32,
    now: DateTime<Utc>,
    provenance: &Provenance<'_>,
) -> Result<RunOutcome, RunError> {
    let stamp = now.format(STAMP).to_string();
    let dir = settings.output_dir.join(&stamp);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut files = Vec::new();
    for kind in &settings.kinds {
        let req = ReportRequest {
            kind: *kind,
            accounts: accounts.to_vec(),
            period: if kind.is_period() {
                default_period(now)
            } else {
                Period::AsOf(now)
            },
            now,
            time_zone: settings.time_zone,
            dormant_days: settings.dormant_days,
            credential_warn_days: settings.credential_warn_days,
            max_credential_age_days: settings.max_credential_age_days,
            stale_invite_days,
        };
        for format in &settings.formats {
            let file = format!("{}-{stamp}.{}", kind.as_str(), format.as_str());
            let path = dir.join(&file);
            let (outcome, bytes, sha256): (Outcome, u64, String) =
                write_file_atomically(&path, |w| generate(store, &req, *format, w))?;
            files.push(ManifestEntry {
                file,
                kind: kind.as_str(),
                format: format.as_str(),
                bytes,
                sha256,
                rows: outcome.rows,
                complete: outcome.complete,
                period: outcome.period,
                coverage: outcome.coverage,
                scope: outcome.scope,
            });
        }
    }
    let mut periods: Vec<String> = Vec::new();
    for f in &files {
        if !periods.contains(&f.period) {
            periods.push(f.period.clone());
        }
    }
    let manifest = Manifest {
        schema: "auditwarden-report-manifest/2",
        generated_at: rfc3339(now),
        generator: format!("auditwarden {}", env!("CARGO_PKG_VERSION")),
        version: env!("CARGO_PKG_VERSION"),
        config_sha256: provenance.config_sha256.clone(),
        display_time_zone: settings.time_zone.name().to_string(),
        periods,
        chain_heads: chain_heads(store, accounts)?,
        signature: provenance.signing_key.map(|_| "ed25519"),
        files,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    write_file_atomically(&dir.join("manifest.json"), |w| {
        w.write_all(&text)?;
        Ok(())
    })?;
    // The signature covers the manifest's exact bytes, and follows it (also atomically).
    let signature = match provenance.signing_key {
        Some(key) => {
            let sig = crate::signing::sign_manifest(&text, key);
            let path = dir.join(SIGNATURE_FILE);
            write_file_atomically(&path, |w| {
                w.write_all(sig.as_bytes())?;
                w.write_all(b"\n")?;
                Ok(())
            })?;
            Some(path)
        }
        None => None,
    };
    let pruned = prune(&settings.output_dir, settings.retention_days, now, &stamp)?;
    Ok(RunOutcome {
        dir,
        manifest,
        signature,
        pruned,
    })
}

/// Both chain heads of every account, the genesis (`n = 0`) for a chain with no row yet or a
/// database that predates chains.
fn chain_heads(store: &Store, accounts: &[&Account]) -> Result<Vec<ManifestHead>, RunError> {
    let recorded = if store.has_chains()? {
        store.chain_heads(None)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for a in accounts {
        for kind in ChainKind::ALL {
            let head = recorded
                .iter()
                .find(|(k, acc, _)| *k == kind && *acc == a.name)
                .map(|(_, _, h)| *h)
                .unwrap_or_else(|| ChainHead::genesis(kind, &a.name));
            out.push(ManifestHead {
                account: a.name.clone(),
                chain: kind.as_str().to_string(),
                n: head.n,
                hash: hex::encode(head.hash),
            });
        }
    }
    Ok(out)
}

/// Remove run directories older than `retention_days` (never the current one, never anything
/// whose name is not a run stamp).
fn prune(
    output_dir: &Path,
    retention_days: u32,
    now: DateTime<Utc>,
    current: &str,
) -> Result<Vec<PathBuf>, RunError> {
    let mut pruned = Vec::new();
    if retention_days == 0 {
        return Ok(pruned);
    }
    let cut = now - chrono::Duration::days(i64::from(retention_days));
    for entry in fs::read_dir(output_dir).map_err(io_err(output_dir))? {
        let entry = entry.map_err(io_err(output_dir))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(t) = NaiveDateTime::parse_from_str(&name, STAMP) else {
            continue;
        };
        if name == current || t.and_utc() >= cut || !entry.path().is_dir() {
            continue;
        }
        fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
        pruned.push(entry.path());
    }
    pruned.sort();
    Ok(pruned)
}

/// The format a path's extension names.
pub fn format_of(path: &Path) -> Option<ReportFormat> {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(|e| ReportFormat::from_name(&e.to_ascii_lowercase()))
}
