//! Bad configuration files: each gets a clear error naming the file and the problem, exit code 2,
//! and an existing database is left untouched.

use crate::helpers::*;

fn run_with(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["collect", "--config"])
        .arg(&path)
        .env("TEST_API_KEY", KEY)
        .env_remove("MISSING_KEY_VAR")
        .output()
        .unwrap();
    assert_no_key(&out);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Each malformed config is refused with a message that names the problem.
#[test]
fn each_bad_config_names_its_problem() {
    let ok_account =
        "[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\napi_key_env = \"TEST_API_KEY\"\n";
    let cases: Vec<(String, &str)> = vec![
        ("[store\npath = 1".into(), "not valid TOML"),
        (ok_account.to_string(), "missing section [store]"),
        ("[store]\npath = \"x.db\"\n".to_string(), "no [[accounts]] configured"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}colour = 1\n"), "accounts[0].colour: unknown key"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}backfill_days = -3\n"), "accounts[0].backfill_days: -3 is out of range"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}backfill_days = \"ninety\"\n"), "accounts[0].backfill_days: must be a whole number"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}region = \"eu\"\n"), "accounts[0].region: \"eu\" is not a digicert-one region"),
        ("[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"MISSING_KEY_VAR\"\n".to_string(), "accounts[0].api_key_env: the environment variable MISSING_KEY_VAR is not set"),
        ("[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\n".to_string(), "accounts[0]: no credential"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}{ok_account}"), "accounts[1].name: \"a\" is used twice"),
        ("[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-two\"\napi_key_env = \"TEST_API_KEY\"\n".to_string(), "accounts[0].kind: \"digicert-two\""),
        (format!("[store]\npath = \"x.db\"\n{ok_account}base_url = \"ftp://x\"\n"), "accounts[0].base_url"),
        (format!("[store]\npath = \"x.db\"\n[collection]\nrate_limits = [{{ requests = 0, per_secs = 5 }}]\n{ok_account}"), "collection.rate_limits[0].requests: 0 is out of range"),
        (format!("[store]\npath = \"x.db\"\n{ok_account}api_key = \"inline-secret\"\n"), "accounts[0].api_key: unknown key"),
        (format!("[store]\npath = \"x.db\"\n[collection]\nmax_concurrent_accounts = 0\n{ok_account}"), "collection.max_concurrent_accounts: 0 is out of range"),
        // A limit of the process: an account cannot set it for itself.
        (format!("[store]\npath = \"x.db\"\n{ok_account}max_concurrent_accounts = 4\n"), "accounts[0].max_concurrent_accounts: unknown key"),
    ];
    for (text, expected) in cases {
        let (code, err) = run_with(&text);
        assert_eq!(code, 2, "config {text:?} should be refused: {err}");
        assert!(
            err.contains(expected),
            "config {text:?}: expected {expected:?} in:\n{err}"
        );
        assert!(
            err.contains("bad.toml"),
            "the message should name the file: {err}"
        );
    }
}

/// All problems of one file are reported together.
#[test]
fn all_problems_reported_at_once() {
    let (code, err) = run_with(
        "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\nregion = \"mars\"\napi_key_env = \"MISSING_KEY_VAR\"\npage_size = 0\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("3 problems"), "{err}");
}

/// A config naming an existing file that is not a database is refused, and the file is untouched.
#[test]
fn a_non_database_file_is_left_untouched() {
    let sim = Sim::start(&["--events", "10"]);
    let app = App::new(&sim, "");
    std::fs::write(&app.db, b"precious notes, not a database\n".repeat(100)).unwrap();
    let before = std::fs::read(&app.db).unwrap();
    let out = app.run(&["collect"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aw.db"), "{err}");
    assert_eq!(std::fs::read(&app.db).unwrap(), before);
}

/// `--config` works after the command name and AUDITWARDEN_CONFIG works without it.
#[test]
fn config_flag_positions_and_env_var() {
    let sim = Sim::start(&["--events", "20", "--days", "2"]);
    let app = App::new(&sim, "");
    let out = std::process::Command::new(BIN)
        .args(["check", "--log-format", "json", "--config"])
        .arg(&app.config)
        .env("TEST_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(BIN)
        .arg("check")
        .env("AUDITWARDEN_CONFIG", &app.config)
        .env("TEST_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
