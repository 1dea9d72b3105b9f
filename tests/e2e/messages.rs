//! What the binary says when something is wrong, and what it will not do: read an oversized
//! body, retry a request that cannot succeed, echo a password, or colour a log file.

use crate::helpers::*;

const AUDIT_LOG: &str = "GET /account/api/v1/audit-log";

/// A page larger than `max_response_bytes` fails that request with a message naming the account,
/// the path and the cap; it is not retried, and it is never read whole: the pass's peak RSS stays
/// within a few MiB of a normal pass, although the page is 64 MiB.
#[test]
fn a_huge_page_fails_clearly_and_memory_stays_flat() {
    let sim = Sim::start(&["--events", "300", "--days", "3"]);
    let app = App::new(&sim, "max_response_bytes = 1048576");
    let (normal, normal_rss) = output_and_peak_rss(&mut app.command(&["collect"]));
    assert!(
        normal.status.success(),
        "{}",
        String::from_utf8_lossy(&normal.stderr)
    );

    let (status, body) = sim.http("POST", "/_sim/faults", "huge-body,huge-body-mb=64");
    assert_eq!(status, 200, "{body}");
    let before = route_count(&sim.stats(), AUDIT_LOG);
    let (out, huge_rss) = output_and_peak_rss(&mut app.command(&["collect"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in [
        "one: FAILED",
        "for account one",
        "GET /account/api/v1/audit-log?",
        "larger than max_response_bytes (1 MiB)",
        "not retried",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
    assert_eq!(
        route_count(&sim.stats(), AUDIT_LOG) - before,
        1,
        "an oversized body is not retried"
    );
    assert!(
        huge_rss < normal_rss + 16 * 1024,
        "peak RSS {huge_rss} KiB with a 64 MiB page vs {normal_rss} KiB for a normal pass"
    );
    // The failure is recorded like any other: status names it.
    let status = app.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("max_response_bytes"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}

/// https:// against a plain-HTTP server says the TLS handshake failed and that the server may
/// speak plain HTTP, once (no retries: it would answer the same way again).
#[test]
fn https_against_plain_http_says_so() {
    let sim = Sim::start(&["--events", "20", "--days", "1"]);
    let url = format!("https://{}", sim.addr);
    let app = App::with_accounts(&[("one", "digicert-one", url.as_str(), "")]);
    let out = app.run(&["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for needle in ["TLS handshake failed", "may speak plain HTTP", "http://"] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("gave up after"), "retried: {stdout}");
    let out = app.run(&["collect"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("TLS handshake failed"), "{stdout}");
    assert!(stdout.contains("(0 retries)"), "{stdout}");
}

fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).expect("write");
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env("TEST_API_KEY", KEY)
        .output()
        .expect("run");
    assert_no_key(&out);
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A password in base_url is never echoed, whatever else is wrong with the URL; a TOML syntax
/// error names its line and column without quoting the line.
#[test]
fn config_errors_hide_passwords_and_give_line_and_column() {
    for url in [
        "https://admin:hunter2@127.0.0.1:9",
        "https://admin:hunter2@127.0.0.1:9/account/api/v1",
        "https://admin:hunter2@[::1",
    ] {
        let err = refused(&format!(
            "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\nbase_url = \"{url}\"\napi_key_env = \"TEST_API_KEY\"\n"
        ));
        assert!(!err.contains("hunter2"), "password echoed: {err}");
        assert!(err.contains("accounts[0].base_url"), "{err}");
    }
    let err = refused(
        "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nbase_url = \"https://admin:hunter2@h\" ,\n",
    );
    assert!(err.contains("not valid TOML at line 5, column "), "{err}");
    assert!(!err.contains("hunter2"), "the line was quoted: {err}");
}

/// Text logs written to a pipe or a file have no ANSI colour codes.
#[test]
fn logs_off_a_terminal_have_no_colour_codes() {
    let sim = Sim::start(&[
        "--events",
        "100",
        "--days",
        "2",
        "--faults",
        "server-error=0.3",
    ]);
    let app = App::new(&sim, "");
    let out = app.run(&["collect"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pass_finished"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in:\n{stderr}");
}
