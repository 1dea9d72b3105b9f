//! Alerts end to end: risky grants made in the simulator reach real receivers on loopback
//! (signed webhooks verified here with an independent HMAC, a Slack-shaped receiver, a command)
//! exactly once per sink, through 500s, timeouts, a kill -9 and a dead sink.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;

pub(crate) const SECRET: &str = "whsec-test-secret-5d1c9e-PLANTED";
/// The environment the alert configs of these tests name their webhook secret in.
pub(crate) const HOOK_ENV: &[(&str, &str)] = &[("HOOK_SECRET", SECRET)];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Ok,
    /// 503 to everything.
    Down,
    /// Take the request and never answer in time.
    Hang,
    /// Answer 200, after 300 ms.
    Slow,
}

#[derive(Default)]
struct RecvState {
    mode: Option<Mode>,
    fail_next: u32,
    delay_next: u32,
    /// Every request with a valid signature, in arrival order: (alert id, body, arrival).
    arrivals: Vec<(String, Value, Instant)>,
    bad_signatures: u32,
}

/// A webhook (or Slack) receiver on 127.0.0.1: verifies Standard Webhooks signatures with its
/// own HMAC code, records every arrival, and misbehaves on request.
pub(crate) struct Receiver {
    addr: String,
    state: Arc<Mutex<RecvState>>,
}

impl Receiver {
    pub(crate) fn start(secret: Option<&str>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(RecvState {
            mode: Some(Mode::Ok),
            ..Default::default()
        }));
        let st = state.clone();
        let secret = secret.map(str::to_string);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = st.clone();
                let secret = secret.clone();
                std::thread::spawn(move || handle(conn, &st, secret.as_deref()));
            }
        });
        Receiver { addr, state }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, f: impl FnOnce(&mut RecvState)) {
        f(&mut self.state.lock().expect("lock"))
    }

    pub(crate) fn arrivals(&self) -> Vec<(String, Value, Instant)> {
        self.state.lock().expect("lock").arrivals.clone()
    }

    fn bad_signatures(&self) -> u32 {
        self.state.lock().expect("lock").bad_signatures
    }

    /// Distinct alerts received (deduplicated by id, as a receiver must), with their bodies.
    pub(crate) fn distinct(&self) -> BTreeMap<String, Value> {
        self.arrivals()
            .into_iter()
            .map(|(id, body, _)| (id, body))
            .collect()
    }
}

fn verify(secret: &str, id: &str, ts: &str, body: &str, sig_header: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let fresh = ts
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    // The header may carry several space-separated signatures.
    fresh
        && sig_header.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .and_then(|b| BASE64.decode(b).ok())
                .is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok())
        })
}

fn handle(mut conn: TcpStream, st: &Mutex<RecvState>, secret: Option<&str>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).to_string();
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let h = |k: &str| headers.get(k).cloned().unwrap_or_default();
    let (ok_sig, id) = match secret {
        Some(s) => (
            verify(
                s,
                &h("webhook-id"),
                &h("webhook-timestamp"),
                &body,
                &h("webhook-signature"),
            ),
            h("webhook-id"),
        ),
        // Slack: the alert id is one of the message's fields.
        None => {
            let text = json.to_string();
            let id = text
                .find("aw_")
                .map(|i| text[i..i + 35].to_string())
                .unwrap_or_default();
            (json["blocks"].is_array(), id)
        }
    };
    let (status, delay) = {
        let mut s = st.lock().expect("lock");
        if !ok_sig {
            s.bad_signatures += 1;
            (401, Duration::ZERO)
        } else {
            s.arrivals.push((id, json, Instant::now()));
            match s.mode {
                _ if s.fail_next > 0 => {
                    s.fail_next -= 1;
                    (500, Duration::ZERO)
                }
                _ if s.delay_next > 0 => {
                    s.delay_next -= 1;
                    (200, Duration::from_secs(3))
                }
                Some(Mode::Down) => (503, Duration::ZERO),
                Some(Mode::Hang) => (200, Duration::from_secs(30)),
                Some(Mode::Slow) => (200, Duration::from_millis(300)),
                _ => (200, Duration::ZERO),
            }
        }
    };
    std::thread::sleep(delay);
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// Users of the simulator's DigiCert ONE account without AM_ACCOUNT_ADMIN, active.
pub(crate) fn grantable(sim: &Sim) -> Vec<String> {
    sim.truth()["users"]["digicert_one"]
        .as_array()
        .expect("users")
        .iter()
        .skip(2)
        .filter(|u| {
            u["status"] == "ACTIVE"
                && !u["roles"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == "AM_ACCOUNT_ADMIN"))
        })
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect()
}

/// An app on `sim` whose config gets `alerts` appended (the webhook secret in its env).
fn app_with_alerts(sim: &Sim, alerts: &str) -> App {
    let app = App::new(sim, "");
    let mut text = std::fs::read_to_string(&app.config).expect("config");
    text.push_str(alerts);
    std::fs::write(&app.config, text).expect("config");
    app
}

fn run(app: &App, args: &[&str]) -> (bool, String) {
    let out = app
        .command(args)
        .env("HOOK_SECRET", SECRET)
        .output()
        .expect("run");
    assert_no_key(&out);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(SECRET), "the webhook secret leaked: {text}");
    (out.status.success(), text)
}

fn run_ok(app: &App, args: &[&str]) -> String {
    let (ok, text) = run(app, args);
    assert!(ok, "{args:?} failed: {text}");
    text
}

/// Alerts of the one rule, AM_ACCOUNT_ADMIN grants: fast retries, a 1 s request timeout.
pub(crate) fn admin_rule(sinks: &str) -> String {
    admin_rule_with("", sinks)
}

/// [`admin_rule`] with more `[alerts]` keys.
pub(crate) fn admin_rule_with(keys: &str, sinks: &str) -> String {
    format!(
        r#"
[alerts]
max_attempts = 6
retry_base_ms = 50
retry_max_secs = 1
request_timeout_secs = 1
{keys}
[[alerts.rules]]
name = "admin-grant"
kind = "privileged-role-grant"
roles = ["AM_ACCOUNT_ADMIN"]
severity = "high"
{sinks}"#
    )
}

pub(crate) fn webhook_sink(name: &str, r: &Receiver) -> String {
    format!(
        "\n[[alerts.sinks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret_env = \"HOOK_SECRET\"\n",
        r.url()
    )
}

/// The ids of alerts about `user` getting AM_ACCOUNT_ADMIN in `got`.
fn ids_for(got: &BTreeMap<String, Value>, user: &str) -> Vec<String> {
    got.iter()
        .filter(|(_, b)| b["target"]["id"] == user && b["role"] == "AM_ACCOUNT_ADMIN")
        .map(|(id, _)| id.clone())
        .collect()
}

/// Each risky grant arrives exactly once per sink (webhook, Slack, command) although one
/// receiver answers 500 twice and then too slowly (so it sees the same id again), Slack
/// messages are paced, and all payloads name rule, account, target, role, actor, IP, evidence.
#[test]
fn each_risky_grant_arrives_once_per_sink_through_500s_and_timeouts() {
    let sim = Sim::start(&[
        "--users", "30", "--events", "300", "--days", "5", "--seed", "5",
    ]);
    let flaky = Receiver::start(Some(SECRET));
    let healthy = Receiver::start(Some(SECRET));
    let slack = Receiver::start(None);
    let dir = tempfile::tempdir().expect("dir");
    let cmd_out = dir.path().join("command.jsonl");
    let sinks = format!(
        "{}{}\n[[alerts.sinks]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\nmin_interval_ms = 300\n\
         \n[[alerts.sinks]]\nname = \"script\"\nkind = \"command\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"cat >> '{}'; echo >> '{}'\"]\ntimeout_secs = 5\n",
        webhook_sink("flaky", &flaky),
        webhook_sink("healthy", &healthy),
        slack.url(),
        cmd_out.display(),
        cmd_out.display()
    );
    let app = app_with_alerts(&sim, &admin_rule(&sinks));
    run_ok(&app, &["collect"]);
    // History the first pass alerted on (if any fell inside the horizon) is not under test.
    let before: Vec<usize> = [&flaky, &healthy, &slack]
        .iter()
        .map(|r| r.distinct().len())
        .collect();
    let users = grantable(&sim);
    let targets = &users[..2];
    for u in targets {
        control(
            &sim,
            "POST",
            &format!("/_sim/users/{u}/grant"),
            r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
        );
    }
    // A plain role is not risky under this rule.
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{}/grant", users[2]),
        r#"{"role":"AM_VIEW_ONLY"}"#,
    );
    flaky.set(|s| {
        s.fail_next = 2;
        s.delay_next = 1;
    });
    let out = run_ok(&app, &["collect"]);
    assert!(out.contains("alerts to flaky: 2 sent, 0 failed"), "{out}");

    for (name, r, n0) in [
        ("flaky", &flaky, before[0]),
        ("healthy", &healthy, before[1]),
        ("chat", &slack, before[2]),
    ] {
        let got = r.distinct();
        assert_eq!(got.len(), n0 + 2, "{name}: {got:#?}");
        if name != "chat" {
            for u in targets {
                assert_eq!(ids_for(&got, u).len(), 1, "{name}: {u}");
            }
        }
    }
    // The flaky receiver saw repeats (two 500s and the timed-out attempt) of the same ids.
    let target_ids: Vec<String> = targets
        .iter()
        .flat_map(|u| ids_for(&flaky.distinct(), u))
        .collect();
    let repeats = flaky
        .arrivals()
        .iter()
        .filter(|a| target_ids.contains(&a.0))
        .count();
    assert_eq!(
        repeats,
        2 + 3,
        "two alerts, one of them tried three more times"
    );
    for u in targets {
        let ids = ids_for(&flaky.distinct(), u);
        assert_eq!(ids.len(), 1, "{u}");
        let body = &flaky.distinct()[&ids[0]];
        assert_eq!(body["rule"], "admin-grant");
        assert_eq!(body["severity"], "high");
        assert_eq!(body["account"], "one");
        assert_eq!(body["change"], "granted");
        assert_eq!(body["evidence"]["kind"], "audit_event");
        assert!(body["evidence"]["event_id"].is_string(), "{body}");
        assert!(body["actor"]["id"].is_string(), "{body}");
        assert!(body["source_ip"].is_string(), "{body}");
        assert!(body["time"].is_string(), "{body}");
        // Same alert, same id at every sink.
        assert!(healthy.distinct().contains_key(&ids[0]));
    }
    // Slack: paced to at least the configured interval.
    let times: Vec<Instant> = slack.arrivals().iter().map(|a| a.2).collect();
    for w in times.windows(2).skip(before[2].saturating_sub(1)) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(290),
            "{:?}",
            w[1] - w[0]
        );
    }
    // Command: the alert JSON on stdin, once per alert.
    let lines: Vec<Value> = std::fs::read_to_string(&cmd_out)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    for u in targets {
        let n = lines
            .iter()
            .filter(|b| b["target"]["id"] == u.as_str() && b["role"] == "AM_ACCOUNT_ADMIN")
            .count();
        assert_eq!(n, 1, "command sink for {u}");
    }
    // Nothing more goes out on the next pass: each (rule, evidence) alerts once, ever.
    let n = flaky.arrivals().len();
    run_ok(&app, &["collect"]);
    assert_eq!(flaky.arrivals().len(), n);
    assert!(run_ok(&app, &["alerts", "--status", "sent"]).contains("admin-grant"));
}

/// kill -9 of auditwarden while a delivery is in flight leaves the alert in the outbox; the next
/// run delivers it with the same webhook-id, so the receiver counts it once.
#[test]
fn a_kill_between_write_and_delivery_still_delivers_once() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "100", "--days", "3", "--seed", "8",
    ]);
    let r = Receiver::start(Some(SECRET));
    let app = app_with_alerts(&sim, &admin_rule(&webhook_sink("soc", &r)));
    run_ok(&app, &["collect"]);
    let n0 = r.distinct().len();
    let target = grantable(&sim)[0].clone();
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{target}/grant"),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    r.set(|s| s.mode = Some(Mode::Hang));
    let mut child = app
        .command(&["collect"])
        .env("HOOK_SECRET", SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while r.distinct().len() == n0 {
        assert!(Instant::now() < deadline, "no delivery attempt arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(app.deliveries(Some("pending"), HOOK_ENV), 1);
    let first_id = ids_for(&r.distinct(), &target);
    r.set(|s| s.mode = Some(Mode::Ok));
    let out = run_ok(&app, &["alerts", "deliver"]);
    assert!(out.contains("alerts to soc: 1 sent"), "{out}");
    let got = r.distinct();
    assert_eq!(got.len(), n0 + 1);
    assert_eq!(
        ids_for(&got, &target),
        first_id,
        "the id changed across the restart"
    );
    let arrivals = r.arrivals().iter().filter(|a| a.0 == first_id[0]).count();
    assert!(
        arrivals >= 2,
        "the resend should repeat the id ({arrivals})"
    );
}

/// A receiver down longer than the retry budget with no retries across runs
/// (`give_up_after_hours = 0`, the horizon reached at once): collect still succeeds, the alert
/// is a dead letter listed as failed, and `alerts retry ID` delivers it once the receiver is back.
#[test]
fn a_dead_sink_gives_a_dead_letter_that_retry_delivers() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "100", "--days", "3", "--seed", "9",
    ]);
    let r = Receiver::start(Some(SECRET));
    let ok = Receiver::start(Some(SECRET));
    let sinks = format!("{}{}", webhook_sink("soc", &r), webhook_sink("other", &ok));
    let app = app_with_alerts(&sim, &admin_rule_with("give_up_after_hours = 0\n", &sinks));
    run_ok(&app, &["collect"]);
    let target = grantable(&sim)[0].clone();
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{target}/grant"),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    r.set(|s| s.mode = Some(Mode::Down));
    let out = run_ok(&app, &["collect"]);
    assert!(out.contains("alerts to soc: 0 sent, 1 failed"), "{out}");
    // The other sink was not held up.
    assert_eq!(ids_for(&ok.distinct(), &target).len(), 1, "{out}");
    let listed = run_ok(&app, &["alerts", "--status", "failed"]);
    assert!(
        listed.contains("admin-grant")
            && listed.contains("503")
            && listed.contains("give_up_after_hours = 0"),
        "{listed}"
    );
    let id = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("alert number")
        .to_string();
    let ids = ids_for(&r.distinct(), &target);
    assert_eq!(ids.len(), 1);
    let tries = || r.arrivals().iter().filter(|a| a.0 == ids[0]).count();
    assert_eq!(tries(), 6, "max_attempts = 6");
    r.set(|s| s.mode = Some(Mode::Ok));
    let out = run_ok(&app, &["alerts", "retry", &id]);
    assert!(out.contains("alerts to soc: 1 sent"), "{out}");
    assert_eq!(ids_for(&r.distinct(), &target).len(), 1);
    assert_eq!(tries(), 7);
    assert!(
        run_ok(&app, &["alerts", "--status", "failed"])
            .lines()
            .count()
            <= 1
    );
}

/// Grant AM_ACCOUNT_ADMIN to `n` users in the simulator; their ids.
pub(crate) fn grant_admin(sim: &Sim, n: usize) -> Vec<String> {
    let users = grantable(sim);
    assert!(users.len() >= n, "only {} grantable users", users.len());
    for u in &users[..n] {
        control(
            sim,
            "POST",
            &format!("/_sim/users/{u}/grant"),
            r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
        );
    }
    users[..n].to_vec()
}

/// The number before " sent" in `alerts to {sink}: N sent, ...` (0 when the line is absent).
fn sent_in(out: &str, sink: &str) -> i64 {
    out.lines()
        .filter_map(|l| l.strip_prefix(&format!("alerts to {sink}: ")))
        .filter_map(|l| l.split(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Two `alerts deliver` started together against a slow receiver send each pending alert once
/// between them (each delivery is claimed before it is sent), where both used to send all.
#[test]
fn two_deliver_runs_started_together_send_each_alert_once() {
    let sim = Sim::start(&[
        "--users", "40", "--events", "100", "--days", "3", "--seed", "12",
    ]);
    let r = Receiver::start(Some(SECRET));
    // Retried at the next run: the deliveries the down receiver left are due at once.
    let app = app_with_alerts(
        &sim,
        &admin_rule_with("retry_later_base_secs = 0\n", &webhook_sink("soc", &r)),
    );
    run_ok(&app, &["collect"]);
    grant_admin(&sim, 12);
    r.set(|s| s.mode = Some(Mode::Down));
    let out = run_ok(&app, &["collect"]);
    assert!(out.contains("alerts to soc: 0 sent, 0 failed"), "{out}");
    let pending = app.deliveries(Some("pending"), HOOK_ENV);
    assert!(pending >= 12, "{pending} pending: {out}");
    r.set(|s| {
        s.mode = Some(Mode::Slow);
        s.arrivals.clear();
    });
    let start = || {
        app.command(&["alerts", "deliver"])
            .env("HOOK_SECRET", SECRET)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (start(), start());
    let mut sent = 0;
    let mut outputs = String::new();
    for child in [a, b] {
        let out = child.wait_with_output().expect("wait");
        assert_no_key(&out);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sent += sent_in(&text, "soc");
        outputs.push_str(&text);
    }
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for (id, _, _) in r.arrivals() {
        *per_id.entry(id).or_default() += 1;
    }
    assert_eq!(per_id.len() as i64, pending, "{outputs}");
    assert!(
        per_id.values().all(|n| *n == 1),
        "sent more than once: {per_id:?}\n{outputs}"
    );
    assert_eq!(sent, pending, "{outputs}");
    assert_eq!(
        app.deliveries(Some("sent"), HOOK_ENV),
        app.deliveries(None, HOOK_ENV)
    );
}

/// A receiver down for longer than a run: the delivery is not a dead letter but waits with a
/// stored next attempt (listed), and once the receiver is back the daemon's `deliver_alerts`
/// delivers it by itself, with no `alerts retry` and no request while it was not due.
#[test]
fn a_receiver_down_longer_than_a_run_gets_its_alert_when_it_is_back() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "100", "--days", "3", "--seed", "13",
    ]);
    let r = Receiver::start(Some(SECRET));
    // The secret in a file (relative to the config): the daemon helper sets no HOOK_SECRET.
    let sink = webhook_sink("soc", &r).replace(
        "secret_env = \"HOOK_SECRET\"",
        "secret_file = \"hook.secret\"",
    );
    let app = app_with_alerts(&sim, &admin_rule_with("retry_later_base_secs = 1\n", &sink));
    std::fs::write(app.dir.path().join("hook.secret"), SECRET).expect("secret file");
    run_ok(&app, &["collect"]);
    let target = grant_admin(&sim, 1).remove(0);
    r.set(|s| s.mode = Some(Mode::Down));
    let out = run_ok(&app, &["collect"]);
    assert!(
        out.contains("alerts to soc: 0 sent, 0 failed, 1 still pending (next attempt "),
        "{out}"
    );
    let failed = run_ok(&app, &["alerts", "--status", "failed"]);
    assert_eq!(
        failed.lines().count(),
        1,
        "a dead letter after one run: {failed}"
    );
    let listed = run_ok(&app, &["alerts", "--status", "pending"]);
    assert!(
        listed.contains("next attempt: ") && listed.contains("6 attempt(s) so far"),
        "{listed}"
    );
    let json = run_ok(&app, &["alerts", "--status", "pending", "--format", "json"]);
    let row: Value = serde_json::from_str(json.lines().next().expect("a row")).expect("json");
    assert!(
        row["next_attempt"].is_string() && row["failing_since"].is_string(),
        "{row}"
    );
    assert_eq!(row["attempts"], 6);
    let ids = ids_for(&r.distinct(), &target);
    assert_eq!(ids.len(), 1);
    let tries = || r.arrivals().iter().filter(|a| a.0 == ids[0]).count();
    assert_eq!(tries(), 6, "max_attempts = 6 in the run");

    r.set(|s| s.mode = Some(Mode::Ok));
    app.add_config(
        "[schedule]\ncollect = \"\"\npoll_invites = \"\"\ndeliver_alerts = \"* * * * * *\"\n",
    );
    let d = app.start_daemon();
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.deliveries(Some("sent"), HOOK_ENV) < app.deliveries(None, HOOK_ENV) {
        assert!(
            Instant::now() < deadline,
            "not delivered after the receiver came back:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    assert_eq!(tries(), 7, "one more request, once it was due");
    assert_eq!(ids_for(&r.distinct(), &target), ids);
    assert_eq!(app.deliveries(Some("failed"), HOOK_ENV), 0);
}

/// The first collection of a long history records old grants as suppressed, sends none of them.
#[test]
fn backfill_does_not_flood() {
    let sim = Sim::start(&[
        "--users", "60", "--events", "3000", "--days", "30", "--seed", "3",
    ]);
    let r = Receiver::start(Some(SECRET));
    let app = app_with_alerts(
        &sim,
        &format!(
            "\n[alerts]\nretry_base_ms = 50\n\n[[alerts.rules]]\nname = \"any-grant\"\nkind = \"privileged-role-grant\"\nroles = []\n{}",
            webhook_sink("soc", &r)
        ),
    );
    run_ok(&app, &["collect"]);
    let suppressed = app.alert_rows(Some("suppressed"), HOOK_ENV).len() as i64;
    let sent = r.distinct();
    assert!(suppressed >= 10, "only {suppressed} suppressed");
    let day_ago = now() - chrono::Duration::hours(24);
    for b in sent.values() {
        let t =
            chrono::DateTime::parse_from_rfc3339(b["time"].as_str().expect("time")).expect("time");
        assert!(t > day_ago, "an old change was sent: {b}");
    }
    assert!(
        (sent.len() as i64) < suppressed,
        "{} sent vs {suppressed} suppressed",
        sent.len()
    );
    let listed = run_ok(&app, &["alerts", "--status", "suppressed", "--limit", "5"]);
    assert_eq!(listed.lines().count(), 6, "{listed}");
}

/// A receiver with another secret rejects every delivery; nothing it accepts is forged, the
/// delivery is a dead letter after one try (401 is not retried), and no output shows a secret.
#[test]
fn a_wrong_secret_fails_verification() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "100", "--days", "3", "--seed", "4",
    ]);
    let r = Receiver::start(Some("the-receivers-own-secret"));
    let app = app_with_alerts(&sim, &admin_rule(&webhook_sink("soc", &r)));
    run_ok(&app, &["collect"]);
    let target = grantable(&sim)[0].clone();
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{target}/grant"),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    let out = run_ok(&app, &["collect"]);
    assert!(out.contains("alerts to soc: 0 sent, 1 failed"), "{out}");
    assert!(r.arrivals().is_empty());
    assert!(r.bad_signatures() >= 1);
    let listed = run_ok(&app, &["alerts", "--status", "failed"]);
    assert!(listed.contains("401"), "{listed}");
    assert!(!file_contains(&app.db, SECRET));
}

/// `alerts test --sink` sends one signed test alert; an unknown sink is a usage error.
#[test]
fn alerts_test_sends_a_signed_test_alert() {
    let sim = Sim::start(&["--users", "5", "--events", "10", "--days", "1"]);
    let r = Receiver::start(Some(SECRET));
    let app = app_with_alerts(&sim, &admin_rule(&webhook_sink("soc", &r)));
    let out = run_ok(&app, &["alerts", "test", "--sink", "soc"]);
    assert!(out.contains("delivered to soc"), "{out}");
    let got = r.distinct();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got.values().next().expect("one")["type"],
        "auditwarden.test"
    );
    let (ok, text) = run(&app, &["alerts", "test", "--sink", "nope"]);
    assert!(!ok && text.contains("no sink named"), "{text}");
}

/// A grant seen first by a snapshot (`sync-users` before the audit log was read) is alerted on
/// with snapshot evidence; when the next `collect` attaches the audit event to that role change,
/// the role-change report still shows it flagged by the rule (the alert refers to the role
/// change, not to a key rebuilt from its evidence), and no second alert is written.
#[test]
fn a_grant_alerted_from_snapshots_stays_flagged_when_its_audit_event_arrives() {
    let sim = Sim::start(&[
        "--users", "20", "--events", "100", "--days", "3", "--seed", "12",
    ]);
    let hook = Receiver::start(Some(SECRET));
    let app = app_with_alerts(&sim, &admin_rule(&webhook_sink("soc", &hook)));
    run_ok(&app, &["collect"]);
    let user = grantable(&sim).remove(0);
    control(
        &sim,
        "POST",
        &format!("/_sim/users/{user}/grant"),
        r#"{"role":"AM_ACCOUNT_ADMIN"}"#,
    );
    // Snapshots only: the grant's audit event is not stored yet.
    run_ok(&app, &["sync-users"]);
    let report = |app: &App| -> Value {
        let out = app.stdout_ok_env(&["report", "role-changes", "--format", "json"], HOOK_ENV);
        let v: Value = serde_json::from_str(&out).expect("report json");
        v["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| {
                r["user_id"] == user.as_str()
                    && r["role"] == "AM_ACCOUNT_ADMIN"
                    && r["change"] == "granted"
            })
            .cloned()
            .unwrap_or_else(|| panic!("no grant of AM_ACCOUNT_ADMIN to {user} in {v}"))
    };
    let before = report(&app);
    assert_eq!(before["source"], "snapshot", "{before}");
    assert_eq!(before["alert_flagged"], true, "{before}");
    // The audit pass stores the event and the user sync attaches it to the snapshot row.
    run_ok(&app, &["collect"]);
    let after = report(&app);
    assert_eq!(after["source"], "snapshot+audit", "{after}");
    assert!(after["event_id"].is_string(), "{after}");
    assert_eq!(after["alert_flagged"], true, "{after}");
    assert_eq!(after["alert_rules"], serde_json::json!(["admin-grant"]));
    // One alert for the grant, ever: listed once (one sink), delivered once.
    let about_user: Vec<Value> = app
        .alert_rows(None, HOOK_ENV)
        .into_iter()
        .filter(|a| a["payload"]["target"]["id"] == user.as_str())
        .collect();
    assert_eq!(about_user.len(), 1, "{about_user:?}");
    assert_eq!(about_user[0]["payload"]["evidence"]["kind"], "snapshot");
    assert_eq!(ids_for(&hook.distinct(), &user).len(), 1);
}
