//! Test helpers: a simulator process on a free loopback port, a config written for it, and the real
//! `auditwarden` binary run against both. Tests go through these so the CLI can change in one place.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
/// The key the simulators in these tests accept; every test output is searched for it.
pub const KEY: &str = "sk-test-3f9a1c77e0d24b5b9c1f-PLANTED";

/// A running `auditwarden simulate`, killed on drop.
pub struct Sim {
    child: Child,
    pub addr: String,
}

impl Sim {
    /// Start a simulator with extra arguments (e.g. `["--events", "500", "--faults", "bare"]`).
    pub fn start(args: &[&str]) -> Sim {
        Sim::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Sim {
        let mut cmd = Command::new(BIN);
        cmd.args(["simulate", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("AUDITWARDEN_SIM_API_KEY", KEY)
            .env("AUDITWARDEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn simulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("simulator address line");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .expect("address")
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "unexpected line {line:?}");
        Sim { child, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A raw HTTP/1.0 exchange with the simulator's control API.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(&self.addr, method, path, body, &[])
    }

    pub fn truth(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/_sim/truth", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("truth json")
    }

    /// Ids of the well-formed events the simulator holds now.
    pub fn truth_ids(&self) -> BTreeSet<String> {
        self.truth()["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn truth_malformed(&self) -> usize {
        self.truth()["malformed"].as_array().map_or(0, |a| a.len())
    }

    pub fn freeze(&self) {
        let (s, b) = self.http("POST", "/_sim/freeze", "");
        assert!(s < 300, "freeze: {s} {b}");
    }

    pub fn stats(&self) -> serde_json::Value {
        let (_, body) = self.http("GET", "/_sim/stats", "");
        serde_json::from_str(&body).expect("stats json")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 client (no chunked encoding, connection closes): enough for control calls.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A config directory with `auditwarden.toml` and the database, removed on drop.
pub struct App {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db: PathBuf,
}

/// Collection settings that suit a local simulator: small pages, short waits, no throttle.
pub const FAST: &str = r#"
page_size = 50
request_timeout_secs = 2
retry_base_ms = 20
retry_max_secs = 3
max_retries = 10
rate_limits = [{ requests = 5000, per_secs = 1 }]
"#;

impl App {
    /// One digicert-one account `one` against `sim`, with `extra` lines appended to the account.
    pub fn new(sim: &Sim, extra: &str) -> App {
        App::with_accounts(&[("one", "digicert-one", sim.url().as_str(), extra)])
    }

    /// Accounts as (name, kind, base_url, extra lines).
    pub fn with_accounts(accounts: &[(&str, &str, &str, &str)]) -> App {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!("[store]\npath = \"aw.db\"\n\n[collection]\n{FAST}\n");
        for (name, kind, url, extra) in accounts {
            // An account whose extra lines name their own credential gets no default one.
            let key = if extra.contains("api_key_") {
                ""
            } else {
                "api_key_env = \"TEST_API_KEY\"\n"
            };
            text.push_str(&format!(
                "[[accounts]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\n{key}backfill_days = 40\n{extra}\n"
            ));
        }
        let config = dir.path().join("auditwarden.toml");
        std::fs::write(&config, text).expect("write config");
        let db = dir.path().join("aw.db");
        App { dir, config, db }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("TEST_API_KEY", KEY)
            .env("AUDITWARDEN_LOG", "info")
            .env_remove("AUDITWARDEN_CONFIG");
        cmd
    }

    /// Run to completion; stdout and stderr are checked for the planted key.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run auditwarden");
        assert_no_key(&out);
        out
    }

    /// `collect`, which must succeed.
    pub fn collect_ok(&self) -> String {
        let out = self.run(&["collect"]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "collect failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub fn stored_ids(&self, account: &str) -> BTreeSet<String> {
        let store = auditwarden::store::Store::open_read_only(&self.db).expect("open db");
        store.event_ids(account).expect("ids").into_iter().collect()
    }

    pub fn quarantined(&self, account: &str) -> u64 {
        let store = auditwarden::store::Store::open_read_only(&self.db).expect("open db");
        store.account_status(account).expect("status").quarantined
    }

    /// `verify` on the configured database, or on `db` if given: (exit success, stdout).
    pub fn verify(&self, db: Option<&Path>) -> (bool, String) {
        let mut args = vec!["verify".to_string()];
        if let Some(db) = db {
            args.push("--db".into());
            args.push(db.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "verify crashed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), stdout)
    }

    pub fn sql_count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.db).expect("open");
        c.query_row(sql, [], |r| r.get(0)).expect("query")
    }
}

/// Requests reported in a collect summary line for `account`.
pub fn requests_in(summary: &str, account: &str) -> u64 {
    let block = summary
        .split(&format!("{account}: "))
        .nth(1)
        .unwrap_or_else(|| panic!("no summary for {account} in {summary}"));
    let before = block.split(" requests").next().unwrap_or("");
    before
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in {block}"))
}

pub fn assert_no_key(out: &Output) {
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(KEY),
            "the API key leaked into {name}:\n{text}"
        );
    }
}

/// Assert the stored set equals the simulator's ground truth exactly.
pub fn assert_matches_truth(app: &App, sim: &Sim, account: &str) {
    let truth = sim.truth_ids();
    let stored = app.stored_ids(account);
    let missing: Vec<_> = truth.difference(&stored).take(5).collect();
    let extra: Vec<_> = stored.difference(&truth).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored {} vs truth {}: missing {missing:?}, extra {extra:?}",
        stored.len(),
        truth.len()
    );
    assert_eq!(
        app.quarantined(account) as usize,
        sim.truth_malformed(),
        "quarantined vs malformed in truth"
    );
    assert!(!truth.is_empty(), "the simulator served no events at all");
}

pub fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}
