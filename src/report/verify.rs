//! `auditwarden verify-report`: what an auditor runs on a report run. Checks, each reported as
//! one [`Check`] line as soon as it is decided:
//!
//! 1. the detached Ed25519 signature (`manifest.json.sig`, hex) over the manifest's exact bytes;
//! 2. every listed file's SHA-256 (and size), and that the run directory holds no report file the
//!    manifest does not list;
//! 3. given the database, that each recorded chain head is still link `n` of that account's chain
//!    today (so nothing up to it was rewritten, even with every later link and the head
//!    recomputed), and that today's chains verify.
//!
//! Reading the manifest trusts nothing in it: file names must be plain names in the run directory.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::run::{sha256_file, ManifestHead, SIGNATURE_FILE};
use crate::signing::{verify_manifest, VerifyingKey};
use crate::store::chain::ChainKind;
use crate::store::Store;

/// One decided check: `ok` false is a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    pub text: String,
}

impl Check {
    fn ok(text: impl Into<String>) -> Check {
        Check {
            ok: true,
            text: text.into(),
        }
    }
    fn failed(text: impl Into<String>) -> Check {
        Check {
            ok: false,
            text: text.into(),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Deserialize)]
struct ManifestIn {
    files: Vec<FileIn>,
    #[serde(default)]
    chain_heads: Option<Vec<ManifestHead>>,
}

#[derive(Deserialize)]
struct FileIn {
    file: String,
    sha256: String,
    #[serde(default)]
    bytes: Option<u64>,
}

/// Run every check on the manifest at `manifest_path`; `store` enables the chain checks.
/// Returns the number of findings. Only an unreadable database is an error; everything about the
/// manifest and the files is a finding.
pub fn verify_report(
    manifest_path: &Path,
    key: &VerifyingKey,
    store: Option<&Store>,
    mut out: impl FnMut(Check),
) -> Result<u64, crate::store::StoreError> {
    let mut findings = 0u64;
    let mut emit = |c: Check| {
        if !c.ok {
            findings += 1;
        }
        out(c);
    };
    let shown = manifest_path.display();
    let bytes = match fs::read(manifest_path) {
        Ok(b) => b,
        Err(e) => {
            emit(Check::failed(format!(
                "manifest: FAILED: cannot read {shown}: {e}"
            )));
            return Ok(findings);
        }
    };
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };

    // 1. The signature.
    let sig_path = dir.join(SIGNATURE_FILE);
    emit(match fs::read_to_string(&sig_path) {
        Err(e) => Check::failed(format!(
            "signature: FAILED: cannot read {} ({e}): the run is unsigned or the signature was removed",
            sig_path.display()
        )),
        Ok(sig) => match verify_manifest(&bytes, &sig, key) {
            Ok(()) => Check::ok(format!(
                "signature: ok (Ed25519, {SIGNATURE_FILE}, over {shown})"
            )),
            Err(e) => Check::failed(format!("signature: FAILED: {e}")),
        },
    });

    let manifest: ManifestIn = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            emit(Check::failed(format!(
                "manifest: FAILED: {shown} is not a report manifest: {e}"
            )));
            return Ok(findings);
        }
    };

    // 2. The files.
    let manifest_name = manifest_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        listed.insert(f.file.clone());
        emit(check_file(dir, f));
    }
    match fs::read_dir(dir) {
        Err(e) => emit(Check::failed(format!(
            "files: FAILED: cannot list {}: {e}",
            dir.display()
        ))),
        Ok(entries) => {
            let mut extra = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                // Hidden names are the temporary files of an interrupted write, never a report.
                if name.starts_with('.')
                    || name == manifest_name
                    || name == SIGNATURE_FILE
                    || listed.contains(&name)
                {
                    continue;
                }
                extra.push(name);
            }
            extra.sort();
            for name in extra {
                emit(Check::failed(format!(
                    "file {name}: FAILED: in the run directory but not listed in the manifest"
                )));
            }
        }
    }

    // 3. The chain heads.
    let Some(heads) = manifest.chain_heads else {
        emit(Check::failed(
            "chain heads: FAILED: the manifest records none (written before auditwarden recorded them)",
        ));
        return Ok(findings);
    };
    let Some(store) = store else {
        emit(Check::ok(format!(
            "chain heads: skipped, {} recorded (no database: pass --db PATH or --config PATH)",
            heads.len()
        )));
        return Ok(findings);
    };
    if !store.has_chains()? {
        emit(Check::failed(
            "chain heads: FAILED: the database has no hash chains (it predates them)",
        ));
        return Ok(findings);
    }
    for h in &heads {
        emit(check_head(store, h)?);
    }
    // Today's chains as a whole: a row edited without recomputing the links after it leaves
    // every recorded head in place, and shows here.
    let mut walk_findings = 0u64;
    let mut first = None;
    store.verify_chains(None, |f| {
        walk_findings += 1;
        first.get_or_insert_with(|| f.to_string());
    })?;
    emit(match first {
        None => Check::ok("chains: ok (every link of today's chains verifies)"),
        Some(f) => Check::failed(format!(
            "chains: FAILED: {walk_findings} finding(s), first: {f} (run `auditwarden verify`)"
        )),
    });
    Ok(findings)
}

fn check_file(dir: &Path, f: &FileIn) -> Check {
    let name = &f.file;
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    if !plain {
        return Check::failed(format!(
            "file {name:?}: FAILED: not a plain file name in the run directory"
        ));
    }
    let path = dir.join(name);
    if !path.is_file() {
        return Check::failed(format!("file {name}: FAILED: missing"));
    }
    let found = match sha256_file(&path) {
        Ok(h) => h,
        Err(e) => return Check::failed(format!("file {name}: FAILED: {e}")),
    };
    if !found.eq_ignore_ascii_case(f.sha256.trim()) {
        return Check::failed(format!(
            "file {name}: FAILED: changed (manifest sha256 {}, file sha256 {found})",
            f.sha256
        ));
    }
    if let Some(bytes) = f.bytes {
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(u64::MAX);
        if len != bytes {
            return Check::failed(format!(
                "file {name}: FAILED: {len} bytes, the manifest says {bytes}"
            ));
        }
    }
    Check::ok(format!("file {name}: ok (sha256 {found})"))
}

fn check_head(store: &Store, h: &ManifestHead) -> Result<Check, crate::store::StoreError> {
    let label = format!("chain {}/{} #{}", h.account, h.chain, h.n);
    let Some(kind) = ChainKind::parse(&h.chain) else {
        return Ok(Check::failed(format!(
            "{label}: FAILED: unknown chain {:?}",
            h.chain
        )));
    };
    let recorded: Option<[u8; 32]> = hex::decode(&h.hash).ok().and_then(|b| b.try_into().ok());
    let Some(recorded) = recorded.filter(|_| h.n >= 0) else {
        return Ok(Check::failed(format!(
            "{label}: FAILED: the recorded head is not a position and a 64-hex-digit hash"
        )));
    };
    let found = store.chain_hashes_at(kind, &h.account, h.n)?;
    Ok(match found.as_slice() {
        [] => Check::failed(format!(
            "{label}: FAILED: no row holds this position today (rows up to it were deleted)"
        )),
        [one] if *one == recorded => Check::ok(format!("{label}: ok (still {})", h.hash)),
        [one] => Check::failed(format!(
            "{label}: FAILED: the row there now has hash {}, the manifest recorded {}: history up to it was rewritten",
            hex::encode(one),
            h.hash
        )),
        many => Check::failed(format!(
            "{label}: FAILED: {} rows claim this position (rows were inserted behind auditwarden's back)",
            many.len()
        )),
    })
}
