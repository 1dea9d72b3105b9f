//! Test helpers: a simulator process on a free loopback port, a config written for it, and the real
//! `auditwarden` binary run against both. Tests go through these so the CLI can change in one place.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
/// The key the simulators in these tests accept; every test output is searched for it.
pub const KEY: &str = "sk-test-3f9a1c77e0d24b5b9c1f-PLANTED";

/// The pinned clock every simulator and command of this test process shares: the domain time
/// reads [`PINNED_AT`] when the first test asks, then moves on with real time. So "today", dormancy
/// and report periods are the same at any hour the suite runs (08:30 UTC is the hour at which the
/// old paging rule left today incomplete).
pub const PINNED_AT: &str = "2026-11-16T08:30:00Z";

/// `AUDITWARDEN_NOW` for this process: `PINNED_AT@<real instant of the first call>`.
pub fn clock_env() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        format!(
            "{PINNED_AT}@{}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    })
}

/// The domain time now, on the shared pinned clock.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let (at, since) = clock_env().split_once('@').expect("pin");
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("at");
    let since = chrono::DateTime::parse_from_rfc3339(since).expect("since");
    (at + (chrono::Utc::now() - since.with_timezone(&chrono::Utc))).with_timezone(&chrono::Utc)
}

/// Today (UTC) on the shared pinned clock.
pub fn today() -> chrono::NaiveDate {
    now().date_naive()
}

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
            .env("AUDITWARDEN_NOW", clock_env())
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
            let key = if extra.contains("api_key_") || extra.contains("client_cert_file") {
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

    /// DigiCert ONE accounts on `url`, one per key, each reading its key from a file written in
    /// `key_dir` (`key00`, `key01`, ...): the names `{prefix}00`, `{prefix}01`, ...
    pub fn with_keyed_accounts(url: &str, keys: &[String], key_dir: &Path, prefix: &str) -> App {
        let accounts: Vec<(String, String)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let p = key_dir.join(format!("key{i:02}"));
                std::fs::write(&p, k).expect("write key file");
                (
                    format!("{prefix}{i:02}"),
                    format!("api_key_file = \"{}\"\n", p.display()),
                )
            })
            .collect();
        let refs: Vec<(&str, &str, &str, &str)> = accounts
            .iter()
            .map(|(n, e)| (n.as_str(), "digicert-one", url, e.as_str()))
            .collect();
        App::with_accounts(&refs)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("TEST_API_KEY", KEY)
            .env("AUDITWARDEN_NOW", clock_env())
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

    /// The stdout of a command that must succeed.
    pub fn stdout_ok(&self, args: &[&str]) -> String {
        self.stdout_ok_env(args, &[])
    }

    /// [`App::stdout_ok`] with more environment (e.g. a webhook secret the config names).
    pub fn stdout_ok_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("run auditwarden");
        assert_no_key(&out);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// One account's entry of `status --format json`.
    pub fn account_status(&self, account: &str) -> Value {
        let out = self.stdout_ok(&["status", "--account", account, "--format", "json"]);
        let all: Value = serde_json::from_str(&out).expect("status json");
        all.as_array()
            .expect("status array")
            .iter()
            .find(|a| a["account"] == account)
            .unwrap_or_else(|| panic!("no {account} in {all}"))
            .clone()
    }

    /// The events `status` says are stored for `account`.
    pub fn events_stored(&self, account: &str) -> i64 {
        self.account_status(account)["events"]
            .as_i64()
            .expect("events")
    }

    /// `users --format json`, of one status (`None`: everyone but deleted users, as `users`
    /// lists by default).
    pub fn users_json(&self, status: Option<&str>) -> Vec<Value> {
        let mut args = vec!["users", "--format", "json"];
        if let Some(s) = status {
            args.extend(["--status", s]);
        }
        let v: Value = serde_json::from_str(&self.stdout_ok(&args)).expect("users json");
        v.as_array().expect("users array").clone()
    }

    /// Every stored user, deleted ones included, as `users` lists them.
    pub fn all_users(&self) -> Vec<Value> {
        let mut all = self.users_json(None);
        all.extend(self.users_json(Some("deleted")));
        all
    }

    /// `alerts --format json` lines (one per alert and sink), of one status if given; `env`
    /// for the secrets the `[alerts]` config names.
    pub fn alert_rows(&self, status: Option<&str>, env: &[(&str, &str)]) -> Vec<Value> {
        let mut args = vec!["alerts", "--format", "json", "--limit", "1000000"];
        if let Some(s) = status {
            args.extend(["--status", s]);
        }
        self.stdout_ok_env(&args, env)
            .lines()
            .map(|l| serde_json::from_str(l).expect("alert json line"))
            .collect()
    }

    /// Deliveries (alert and sink) `alerts` lists in `status` (`None`: all).
    pub fn deliveries(&self, status: Option<&str>, env: &[(&str, &str)]) -> i64 {
        self.alert_rows(status, env)
            .iter()
            .filter(|r| !r["sink"].is_null())
            .count() as i64
    }

    /// `export events --format jsonl`: every stored event, one JSON object each. A database
    /// whose schema is not there yet (created, its first migration rolled back by a kill) holds
    /// none.
    pub fn exported_events(&self) -> Vec<Value> {
        let out = self.run(&["export", "events", "--format", "jsonl"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("no auditwarden schema yet") {
            return Vec::new();
        }
        assert!(out.status.success(), "export failed: {stderr}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("event json line"))
            .collect()
    }

    /// A count from the database, for facts no command shows. A database file whose schema is
    /// not there yet (created, and its first migration not committed, or rolled back by a kill)
    /// counts as empty.
    pub fn sql_count(&self, sql: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.db).expect("open");
        match c.query_row(sql, [], |r| r.get(0)) {
            Ok(n) => n,
            Err(e) if e.to_string().contains("no such table") => 0,
            Err(e) => panic!("query {sql}: {e}"),
        }
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

/// A running `auditwarden run` (the daemon), killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    /// The health and metrics listener, when `[daemon] listen` was configured.
    pub addr: Option<String>,
    stderr_path: PathBuf,
}

impl App {
    /// Append `[schedule]` and `[daemon]` lines to the config (after the accounts).
    pub fn add_config(&self, text: &str) {
        let mut cfg = std::fs::read_to_string(&self.config).expect("read config");
        cfg.push('\n');
        cfg.push_str(text);
        std::fs::write(&self.config, cfg).expect("write config");
    }

    /// Start the daemon; returns once it printed that it runs (and its listener address).
    pub fn start_daemon(&self) -> Daemon {
        self.start_daemon_with_env(&[])
    }

    /// [`App::start_daemon`] with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_daemon_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let stderr_path = self.dir.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let log = std::fs::File::create(&stderr_path).expect("log file");
        let mut cmd = self.command(&["run"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut addr = None;
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("daemon stdout");
            assert!(
                n > 0,
                "the daemon exited before it ran: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
            if let Some(a) = line.trim().strip_prefix("health and metrics on http://") {
                addr = Some(a.to_string());
            }
            if line.starts_with("auditwarden running") {
                break;
            }
        }
        Daemon {
            child,
            addr,
            stderr_path,
        }
    }
}

impl Daemon {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill failed");
    }

    /// A GET on the listener: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http(
            self.addr.as_deref().expect("no listener"),
            "GET",
            path,
            "",
            &[],
        )
    }

    /// Wait for the exit at most `limit`; `None` if still running.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// One scrape of `/metrics`, parsed.
    pub fn get_metrics(&self) -> Vec<Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_prometheus(&body)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Poll `/metrics` until `f` holds on the parsed samples, at most `limit`.
    pub fn wait_metrics(&self, limit: Duration, f: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let (status, body) = self.get("/metrics");
            assert_eq!(status, 200, "{body}");
            let samples = parse_prometheus(&body);
            if f(&samples) {
                return samples;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "condition not reached; metrics:\n{body}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// The value of `name` with the given labels (0 when absent).
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map_or(0.0, |s| s.value)
}

/// A strict parser of the Prometheus text exposition format (0.0.4): `# HELP`/`# TYPE` lines
/// with known types, each sample's family announced by a TYPE line before it, label values
/// quoted with `\\`, `\"`, `\n` escapes, and a float value. Panics on anything else.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut typed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(_), _) => {}
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type in {line:?}"
                    );
                    assert!(typed.insert(name.to_string()), "TYPE twice: {line:?}");
                }
                _ => panic!("bad comment line {line:?}"),
            }
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels.to_string(), Vec::new()),
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line:?}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "label value not quoted: {line:?}");
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c @ ('\\' | '"')) => v.push(c),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some('"') => break,
                            Some(c) => v.push(c),
                            None => panic!("unterminated label in {line:?}"),
                        }
                    }
                    assert!(
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name {key:?} in {line:?}"
                    );
                    labels.push((key, v));
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("unexpected {other:?} in {line:?}"),
                    }
                }
                (n.to_string(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name {name:?}"
        );
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(&name);
        assert!(typed.contains(family), "sample before its TYPE: {line:?}");
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// Run `cmd` to completion: its output and its peak RSS in KiB (`wait4`'s `ru_maxrss`).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the peak RSS
pub fn output_and_peak_rss(cmd: &mut Command) -> (Output, u64) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert_no_key(&output);
    (output, usage.ru_maxrss as u64)
}

/// How many requests the simulator served on `route` (e.g. `GET /account/api/v1/audit-log`).
pub fn route_count(stats: &serde_json::Value, route: &str) -> u64 {
    stats["routes"][route].as_u64().unwrap_or(0)
}

impl Sim {
    /// An HTTPS simulator: `args` hold `--tls-cert`, `--tls-key` and maybe `--client-ca`. Its
    /// control endpoints are served on plain HTTP beside it, and that is `addr` (so `truth`,
    /// `stats` and `assert_matches_truth` work unchanged); the https:// base URL is returned.
    pub fn start_tls(args: &[&str]) -> (Sim, String) {
        let mut child = Command::new(BIN)
            .args([
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env("AUDITWARDEN_SIM_API_KEY", KEY)
            .env("AUDITWARDEN_NOW", clock_env())
            .env("AUDITWARDEN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn simulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut lines = [String::new(), String::new()];
        for l in &mut lines {
            reader.read_line(l).expect("simulator address line");
        }
        let https = lines[0]
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| panic!("no https address in {:?}", lines[0]))
            .to_string();
        let addr = lines[1]
            .trim()
            .rsplit("http://")
            .next()
            .expect("control address")
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "unexpected {lines:?}");
        (Sim { child, addr }, https)
    }
}

/// Run a command that must succeed; its stdout (stderr in the message when it fails).
pub fn run_ok(app: &App, args: &[&str]) -> String {
    let out = app.run(args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A simulator control request that must succeed; its JSON answer (`null` when not JSON).
pub fn control(sim: &Sim, method: &str, path: &str, body: &str) -> serde_json::Value {
    let (status, text) = sim.http(method, path, body);
    assert!(status < 300, "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

/// Where a tool is on PATH, or `None` (the test skips, saying so on the terminal) outside CI;
/// under CI it must exist.
pub fn tool(name: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is required under CI (.ci/run installs it)"
        );
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{test}: skipped: {name} not installed");
    }
    found
}
