//! The API key never appears in logs, errors, status, exports, the database or process arguments.

use crate::helpers::*;

/// A planted key is searched for in every output of every command, in success and failure.
#[test]
fn the_api_key_never_leaks() {
    let sim = Sim::start(&[
        "--events",
        "300",
        "--days",
        "3",
        "--faults",
        "server-error=0.2,rate-limit=0.2,truncate=0.1",
    ]);
    let app = App::new(&sim, "");
    // Every `run` asserts stdout/stderr are free of the key.
    for args in [
        vec!["collect"],
        vec!["--log-format", "json", "collect"],
        vec!["status"],
        vec!["status", "--format", "json", "--quarantine"],
        vec!["check"],
        vec!["export", "events", "--format", "jsonl"],
        vec!["export", "events", "--format", "csv"],
    ] {
        let _ = app.run(&args);
    }
    // A rejected key: the error says so without repeating it.
    let wrong = "sk-wrong-key-ALSO-PLANTED-77";
    let out = app
        .command(&["collect"])
        .env("TEST_API_KEY", wrong)
        .output()
        .unwrap();
    for bytes in [&out.stdout, &out.stderr] {
        let t = String::from_utf8_lossy(bytes);
        assert!(!t.contains(wrong), "rejected key leaked: {t}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("the API key was rejected"));
    assert!(!file_contains(&app.db, KEY), "key found in the database");
    assert!(
        !file_contains(&app.config, KEY),
        "the config must name the variable, not hold the key"
    );
    // Process arguments: the running collector's command line holds no key.
    let child = app
        .command(&["collect"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains(KEY));
    let _ = child.wait_with_output();
}
