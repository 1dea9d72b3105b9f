//! Signed report runs: `reports run` with `[reports] signing_key_file` writes a manifest recording
//! the config's hash, the version, the periods and every chain head, signed in
//! `manifest.json.sig`; `verify-report` passes on it and names each changed, missing or unlisted
//! file, a changed manifest, a wrong key, and a history rewritten so well that `verify` is fooled.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::*;

/// Account `one` on `sim`, a key from `keygen`, and `[reports]` signing with it (if `signed`).
/// Returns the app and the public key file.
fn signed_app(sim: &Sim, signed: bool) -> (App, PathBuf) {
    let app = App::new(sim, "");
    let key = app.dir.path().join("signing.pem");
    let out = app.run(&["keygen", "--out", key.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = app.dir.path().join("public.pem");
    std::fs::write(&public, &out.stdout).expect("public key");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str(
        "\n[reports]\nkinds = [\"role-changes\", \"dormant\"]\nformats = [\"csv\", \"json\"]\noutput_dir = \"out\"\n",
    );
    if signed {
        text.push_str("signing_key_file = \"signing.pem\"\n");
    }
    std::fs::write(&app.config, text).expect("write config");
    (app, public)
}

/// `reports run`, which must succeed; returns the run directory and stderr.
fn reports_run(app: &App) -> (PathBuf, String) {
    let out = app.run(&["reports", "run"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let run = std::fs::read_dir(app.dir.path().join("out"))
        .expect("out")
        .map(|e| e.expect("entry").path())
        .find(|p| p.is_dir())
        .expect("run dir");
    (run, stderr)
}

/// `verify-report` on `manifest` with `key`, plus `extra` arguments: (success, stdout).
fn verify_report(app: &App, manifest: &Path, key: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "verify-report",
        manifest.to_str().expect("utf-8 path"),
        "--public-key",
        key.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out: Output = app.run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "verify-report crashed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

/// A copy of a run directory to tamper with.
fn copy_run(run: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(run).expect("run") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
    to.join("manifest.json")
}

/// A signed run verifies (signature, every file, every chain head); the manifest records what it
/// should; each kind of tampering with the run fails, naming what changed.
#[test]
fn a_signed_run_verifies_and_each_change_fails_by_name() {
    let sim = Sim::start(&[
        "--users", "10", "--events", "300", "--days", "3", "--seed", "5",
    ]);
    let (app, public) = signed_app(&sim, true);
    app.collect_ok();
    let (run, stderr) = reports_run(&app);
    assert!(!stderr.contains("unsigned"), "{stderr}");
    let manifest_path = run.join("manifest.json");
    let sig = std::fs::read_to_string(run.join("manifest.json.sig")).expect("signature");
    assert_eq!(sig.trim().len(), 128, "hex Ed25519 signature: {sig}");
    let key_text = std::fs::read_to_string(app.dir.path().join("signing.pem")).expect("key");
    assert!(
        !stderr.contains(key_text.trim()),
        "the private key was printed"
    );

    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("json");
    let config = std::fs::read(&app.config).expect("config");
    assert_eq!(
        manifest["config_sha256"],
        hex::encode(Sha256::digest(&config))
    );
    assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["signature"], "ed25519");
    assert!(!manifest["periods"].as_array().expect("periods").is_empty());
    let heads = manifest["chain_heads"].as_array().expect("heads");
    let events_n = app.events_stored("one");
    assert!(
        heads
            .iter()
            .any(|h| h["account"] == "one" && h["chain"] == "events" && h["n"] == events_n),
        "{heads:?}"
    );
    assert!(
        heads.iter().any(|h| h["chain"] == "user_history"),
        "{heads:?}"
    );

    // Untouched: every check passes, with and without the database.
    let db = app.db.to_str().expect("utf-8 path");
    let (ok, out) = verify_report(&app, &manifest_path, &public, &["--db", db]);
    assert!(ok, "{out}");
    assert!(out.contains("signature: ok"), "{out}");
    assert!(out.contains("chain one/events #"), "{out}");
    assert!(out.contains("chains: ok"), "{out}");
    let (ok, out) = verify_report(&app, &manifest_path, &public, &[]);
    assert!(ok, "{out}");
    // The configured database is found through --config too.
    assert!(out.contains("chain one/events #"), "{out}");

    let files: Vec<String> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["file"].as_str().expect("name").to_string())
        .collect();
    let csv = files
        .iter()
        .find(|f| f.ends_with(".csv"))
        .expect("a csv file");

    // A changed report file: named, with both hashes; the signature still holds.
    let m = copy_run(&run, &app.dir.path().join("changed-file"));
    let dir = m.parent().expect("dir").to_path_buf();
    let mut bytes = std::fs::read(dir.join(csv)).expect("csv");
    bytes.extend_from_slice(b"planted,row\n");
    std::fs::write(dir.join(csv), bytes).expect("tamper");
    let (ok, out) = verify_report(&app, &m, &public, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("file {csv}: FAILED: changed")),
        "{out}"
    );
    assert!(out.contains("signature: ok"), "{out}");

    // A missing file and an unlisted one, each named.
    let m = copy_run(&run, &app.dir.path().join("missing-file"));
    let dir = m.parent().expect("dir").to_path_buf();
    std::fs::remove_file(dir.join(csv)).expect("remove");
    std::fs::write(dir.join("dormant-extra.csv"), "x\n").expect("extra");
    let (ok, out) = verify_report(&app, &m, &public, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("file {csv}: FAILED: missing")),
        "{out}"
    );
    assert!(
        out.contains("file dormant-extra.csv: FAILED: in the run directory but not listed"),
        "{out}"
    );

    // A changed manifest (a file's hash replaced to match an edited file): the signature fails.
    let m = copy_run(&run, &app.dir.path().join("changed-manifest"));
    let text = std::fs::read_to_string(&m).expect("manifest");
    std::fs::write(&m, text.replace("\"rows\": ", "\"rows\": 1")).expect("tamper");
    let (ok, out) = verify_report(&app, &m, &public, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("signature: FAILED"), "{out}");

    // A wrong key fails the signature; so does a missing signature.
    let other = app.dir.path().join("other.pem");
    let out = app.run(&["keygen", "--out", other.to_str().expect("utf-8 path")]);
    let other_public = app.dir.path().join("other-public.pem");
    std::fs::write(&other_public, &out.stdout).expect("public key");
    let (ok, out) = verify_report(&app, &manifest_path, &other_public, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("signature: FAILED"), "{out}");
    let m = copy_run(&run, &app.dir.path().join("no-signature"));
    std::fs::remove_file(m.with_file_name("manifest.json.sig")).expect("remove");
    let (ok, out) = verify_report(&app, &m, &public, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("signature: FAILED"), "{out}");
}

/// Rewriting an early event's raw text and recomputing every later link and the head, as an
/// attacker with the database would, fools `verify`; the head recorded in the signed manifest
/// does not match the rewritten chain, so `verify-report` fails naming the chain.
#[test]
fn a_history_rewritten_with_recomputed_links_fails_verify_report() {
    let sim = Sim::start(&[
        "--users", "8", "--events", "400", "--days", "4", "--seed", "9",
    ]);
    let (app, public) = signed_app(&sim, true);
    app.collect_ok();
    let (run, _) = reports_run(&app);
    let manifest = run.join("manifest.json");
    let (ok, out) = verify_report(&app, &manifest, &public, &[]);
    assert!(ok, "{out}");

    // The attacker: edit row #50's raw (whitespace only, so its columns still agree), then
    // recompute the chain from there on and the recorded head.
    let c = rusqlite::Connection::open(&app.db).expect("open");
    let prev: Vec<u8> = c
        .query_row(
            "SELECT chain_hash FROM events WHERE account = 'one' AND chain_n = 49",
            [],
            |r| r.get(0),
        )
        .expect("link 49");
    c.execute(
        "UPDATE events SET raw = replace(raw, '\"id\"', '\"id\" ') WHERE account = 'one' AND chain_n = 50",
        [],
    )
    .expect("edit");
    let rows: Vec<(i64, String)> = {
        let mut st = c
            .prepare(
                "SELECT seq, raw FROM events WHERE account = 'one' AND chain_n >= 50 ORDER BY seq",
            )
            .expect("prepare");
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let mut head = prev;
    for (seq, raw) in rows {
        let mut h = Sha256::new();
        h.update(&head);
        h.update(raw.as_bytes());
        head = h.finalize().to_vec();
        c.execute(
            "UPDATE events SET chain_hash = ?1 WHERE seq = ?2",
            rusqlite::params![head, seq],
        )
        .expect("relink");
    }
    c.execute(
        "UPDATE chain_heads SET head = ?1 WHERE chain = 'events' AND account = 'one'",
        [&head],
    )
    .expect("head");
    drop(c);

    let (ok, out) = app.verify(None);
    assert!(ok, "verify cannot see a fully recomputed chain: {out}");
    let (ok, out) = verify_report(&app, &manifest, &public, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("chain one/events #") && out.contains("history up to it was rewritten"),
        "{out}"
    );
    assert!(out.contains("signature: ok"), "{out}");
}

/// Without a signing key a run still works, says so on stderr, and writes no signature.
#[test]
fn an_unsigned_run_says_so() {
    let sim = Sim::start(&["--users", "5", "--events", "50", "--days", "2"]);
    let (app, public) = signed_app(&sim, false);
    app.collect_ok();
    let (run, stderr) = reports_run(&app);
    assert!(stderr.contains("unsigned"), "{stderr}");
    assert!(!run.join("manifest.json.sig").exists());
    let (ok, out) = verify_report(&app, &run.join("manifest.json"), &public, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("signature: FAILED") && out.contains("file "),
        "{out}"
    );
}
