//! Outbox delivery: every due delivery of every configured sink, one task per sink so a slow or
//! dead sink never holds up another. Within a sink, alerts go out in order; each is **claimed**
//! first (an owner string and a lease, see `store::alerts`), so two runs on one database never
//! send it at once, and its outcome is recorded only while the claim is still this run's. Each
//! delivery gets bounded attempts with exponential backoff (honouring `Retry-After` up to the
//! cap). When the last attempt of a run fails, the sink is taken to be down: that delivery and
//! the sink's other due deliveries wait for a later run, backing off across runs (exponential with
//! jitter, capped), until they have been failing for `give_up_after_hours`; then they are failed
//! (the dead letter) until `alerts retry`. A refusal for good (4xx) is a dead letter at once.
//! Claims and outcomes flow over a channel to this task, the only one touching the store.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::config::{AlertSettings, DeliveryPolicy, SinkConfig, SinkKind};
use super::sinks::{self, Outgoing, SinkError};
use crate::store::{AlertDelivery, Claim, DeliveryUpdate, Store};

/// What one delivery run did for one sink.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkCounts {
    pub sent: u64,
    /// Dead letters made by this run.
    pub failed: u64,
    /// Still pending after this run (waiting for a later attempt, or not reached).
    pub pending: u64,
    /// Due, but another run held their claim (and is sending them).
    pub elsewhere: u64,
    /// The earliest next attempt among the pending ones that wait.
    pub next_attempt: Option<DateTime<Utc>>,
}

impl SinkCounts {
    fn wait_until(&mut self, ms: Option<i64>) {
        let t = ms.and_then(DateTime::from_timestamp_millis);
        self.next_attempt = match (self.next_attempt, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What one delivery run did, per sink (only sinks that had work or waiting deliveries).
#[derive(Debug, Default, Clone)]
pub struct DeliverySummary {
    pub per_sink: BTreeMap<String, SinkCounts>,
    /// A store error that stopped claiming or recording (deliveries then stay pending).
    pub error: Option<String>,
}

impl DeliverySummary {
    pub fn failed(&self) -> u64 {
        self.per_sink.values().map(|c| c.failed).sum()
    }
}

enum Outcome {
    /// One failed attempt; another follows in this run.
    Attempt(String),
    Sent,
    /// Refused for good, or failing past the give-up horizon: the dead letter.
    Failed(String),
    /// The run's last attempt failed: try again from `next_attempt_ms`.
    Later {
        error: String,
        next_attempt_ms: i64,
    },
}

/// What a sink task asks of the task that owns the store.
enum Msg {
    /// Claim a delivery before sending it; the answer is `None` if the store failed.
    Claim {
        sink: String,
        id: i64,
        lease: Duration,
        reply: oneshot::Sender<Option<Claim>>,
    },
    Record {
        sink: String,
        id: i64,
        lease: Duration,
        outcome: Outcome,
    },
    /// The sink is failing: its untried due deliveries wait with the one that failed.
    Defer {
        sink: String,
        ids: Vec<i64>,
        next_attempt_ms: i64,
        error: String,
    },
}

/// The run's clock: `now` as given, moving with the monotonic clock while the run lasts (so a
/// pinned start time stays consistent within the run).
#[derive(Debug, Clone, Copy)]
struct Clock {
    start_ms: i64,
    started: Instant,
}

impl Clock {
    fn new(now: DateTime<Utc>) -> Clock {
        Clock {
            start_ms: now.timestamp_millis(),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.start_ms.saturating_add(elapsed)
    }
}

/// Deliver every due alert of the configured sinks, now.
pub async fn deliver(store: &mut Store, settings: &AlertSettings) -> DeliverySummary {
    deliver_at(store, settings, crate::clock::now()).await
}

/// Deliver every alert due at `now` (the one place delivery reads the time: leases, next
/// attempts and the give-up horizon all count from it).
pub async fn deliver_at(
    store: &mut Store,
    settings: &AlertSettings,
    now: DateTime<Utc>,
) -> DeliverySummary {
    let clock = Clock::new(now);
    let owner = owner_id();
    let mut summary = DeliverySummary::default();
    let names: Vec<String> = settings.sinks.iter().map(|s| s.name.clone()).collect();
    let listed = match blocking(|| store.due_deliveries(&names, clock.now_ms())) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(event = "alert_delivery_failed", error = %e);
            summary.error = Some(e.to_string());
            return summary;
        }
    };
    for (sink, (n, next)) in &listed.waiting {
        let c = summary.per_sink.entry(sink.clone()).or_default();
        c.pending += n;
        c.wait_until(*next);
    }
    let http = match sinks::http_client(settings) {
        Ok(c) => c,
        Err(e) => {
            summary.error = Some(e);
            return summary;
        }
    };
    let mut by_sink: BTreeMap<String, Vec<AlertDelivery>> = BTreeMap::new();
    for d in listed.due {
        if let Some(s) = &d.sink {
            by_sink.entry(s.clone()).or_default().push(d);
        }
    }
    // Bounded: a sink task waits while the store task catches up.
    let (tx, mut rx) = mpsc::channel::<Msg>(64);
    for (name, items) in by_sink {
        let Some(sink) = settings.sinks.iter().find(|s| s.name == name).cloned() else {
            continue;
        };
        summary.per_sink.entry(name).or_default().pending += items.len() as u64;
        let tx = tx.clone();
        let http = http.clone();
        let policy = settings.delivery.clone();
        tokio::spawn(async move { run_sink(&http, &sink, &policy, items, tx, clock).await });
    }
    drop(tx);
    let horizon_ms = i64::try_from(settings.delivery.give_up_after.as_millis()).unwrap_or(i64::MAX);
    while let Some(msg) = rx.recv().await {
        let now = clock.now_ms();
        match msg {
            Msg::Claim {
                sink,
                id,
                lease,
                reply,
            } => {
                let until = now.saturating_add(millis(lease));
                let claim = blocking(|| store.claim_delivery(id, &owner, now, until, &owner_gone));
                let answer = match claim {
                    Ok(c) => {
                        let counts = summary.per_sink.entry(sink.clone()).or_default();
                        match c {
                            Claim::Claimed { .. } => {}
                            Claim::Held => {
                                tracing::debug!(event = "alert_claimed_elsewhere", sink = %sink, delivery = id);
                                counts.elsewhere += 1;
                                counts.pending = counts.pending.saturating_sub(1);
                            }
                            // Another run finished it since it was listed.
                            Claim::Gone => counts.pending = counts.pending.saturating_sub(1),
                        }
                        Some(c)
                    }
                    Err(e) => {
                        tracing::error!(event = "alert_claim_failed", sink = %sink, delivery = id, error = %e);
                        summary.error.get_or_insert_with(|| e.to_string());
                        None
                    }
                };
                let _ = reply.send(answer);
            }
            Msg::Record {
                sink,
                id,
                lease,
                outcome,
            } => {
                let counts = summary.per_sink.entry(sink.clone()).or_default();
                let update = match &outcome {
                    Outcome::Attempt(e) => DeliveryUpdate::Attempt {
                        error: e,
                        claim_until_ms: now.saturating_add(millis(lease)),
                    },
                    Outcome::Sent => {
                        counts.sent += 1;
                        counts.pending = counts.pending.saturating_sub(1);
                        DeliveryUpdate::Sent
                    }
                    Outcome::Failed(e) => {
                        counts.failed += 1;
                        counts.pending = counts.pending.saturating_sub(1);
                        tracing::warn!(event = "alert_dead_letter", sink = %sink, delivery = id, error = %e, "delivery failed for good; `auditwarden alerts retry` sends it again");
                        DeliveryUpdate::Failed { error: e }
                    }
                    Outcome::Later {
                        error,
                        next_attempt_ms,
                    } => {
                        counts.wait_until(Some(*next_attempt_ms));
                        tracing::warn!(event = "alert_deferred", sink = %sink, delivery = id, error = %error, next_attempt = %fmt_ms(*next_attempt_ms), "the sink is failing; a later run tries again");
                        DeliveryUpdate::Later {
                            error,
                            next_attempt_ms: *next_attempt_ms,
                        }
                    }
                };
                match blocking(|| store.record_delivery(id, &owner, update, now)) {
                    Ok(true) => {}
                    // Another run took the claim over after its lease lapsed; its outcome counts.
                    Ok(false) => {
                        tracing::warn!(event = "alert_claim_lost", sink = %sink, delivery = id, "the claim lapsed and another run took it; outcome not recorded")
                    }
                    Err(e) => {
                        // The receiver deduplicates a resend by its id, so losing this record is harmless.
                        tracing::error!(event = "alert_delivery_unrecorded", sink = %sink, delivery = id, error = %e);
                        summary.error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            Msg::Defer {
                sink,
                ids,
                next_attempt_ms,
                error,
            } => {
                let given_up = given_up(&settings.delivery, &error);
                let deferred = blocking(|| {
                    store.defer_deliveries(
                        &ids,
                        &owner,
                        now,
                        next_attempt_ms,
                        now.saturating_sub(horizon_ms),
                        &error,
                        &given_up,
                    )
                });
                match deferred {
                    Ok(d) => {
                        let counts = summary.per_sink.entry(sink.clone()).or_default();
                        counts.failed += d.given_up;
                        counts.pending = counts.pending.saturating_sub(d.given_up);
                        if d.later > 0 {
                            counts.wait_until(Some(next_attempt_ms));
                        }
                        if d.given_up > 0 {
                            tracing::warn!(event = "alert_dead_letter", sink = %sink, deliveries = d.given_up, error = %given_up, "deliveries failed for good; `auditwarden alerts retry` sends them again");
                        }
                    }
                    Err(e) => {
                        tracing::error!(event = "alert_delivery_unrecorded", sink = %sink, error = %e);
                        summary.error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
    // Claims of deliveries a sink task never finished (it stopped on a store error): due again.
    if let Err(e) = blocking(|| store.release_claims(&owner)) {
        tracing::error!(event = "alert_claims_unreleased", error = %e, "they lapse with their lease");
        summary.error.get_or_insert_with(|| e.to_string());
    }
    summary
}

/// Send a sink's due alerts in order, each claimed first. Stop at a dead letter, or when the
/// run's last attempt on one fails (the sink is down): the untried rest then wait with it.
async fn run_sink(
    http: &reqwest::Client,
    sink: &SinkConfig,
    policy: &DeliveryPolicy,
    items: Vec<AlertDelivery>,
    tx: mpsc::Sender<Msg>,
    clock: Clock,
) {
    let pace = match &sink.kind {
        SinkKind::Slack { min_interval, .. } => *min_interval,
        _ => Duration::ZERO,
    };
    let lease = claim_lease(sink, policy);
    let mut last_send: Option<Instant> = None;
    let record = |id: i64, outcome: Outcome| Msg::Record {
        sink: sink.name.clone(),
        id,
        lease,
        outcome,
    };
    for (i, d) in items.iter().enumerate() {
        let Some(id) = d.delivery_id else { continue };
        let (reply, answer) = oneshot::channel();
        let ask = Msg::Claim {
            sink: sink.name.clone(),
            id,
            lease,
            reply,
        };
        if tx.send(ask).await.is_err() {
            return;
        }
        let (failing_since_ms, failed_runs) = match answer.await {
            Ok(Some(Claim::Claimed {
                failing_since_ms,
                failed_runs,
            })) => (failing_since_ms, failed_runs),
            // Another run is sending it, or has finished it.
            Ok(Some(Claim::Held | Claim::Gone)) => continue,
            // The store failed: nothing can be claimed or recorded.
            _ => return,
        };
        let alert = Outgoing {
            uid: &d.uid,
            payload: &d.payload,
            summary: &d.summary,
        };
        let mut attempt = 0u32;
        let outcome = loop {
            if let Some(t) = last_send {
                if let Some(wait) = pace.checked_sub(t.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            attempt += 1;
            let sent = sinks::send(http, sink, &alert, policy.request_timeout).await;
            // Paced from the end of the previous request: the receiver then sees requests at
            // least `pace` apart however long each took to arrive.
            last_send = Some(Instant::now());
            match sent {
                Ok(()) => break Outcome::Sent,
                Err(e) if !e.retryable => break Outcome::Failed(format!("attempt {attempt}: {e}")),
                Err(e) if attempt >= policy.max_attempts => {
                    let now = clock.now_ms();
                    let error = format!("attempt {attempt}: {e}");
                    let wait = later_delay(policy, failed_runs, e.retry_after, rand::random());
                    let next_attempt_ms = now.saturating_add(millis(wait));
                    let rest: Vec<i64> = items[i + 1..]
                        .iter()
                        .filter_map(|d| d.delivery_id)
                        .collect();
                    let first = if gives_up(policy, failing_since_ms, now) {
                        Outcome::Failed(given_up(policy, &error))
                    } else {
                        Outcome::Later {
                            error: error.clone(),
                            next_attempt_ms,
                        }
                    };
                    if tx.send(record(id, first)).await.is_err() || rest.is_empty() {
                        return;
                    }
                    let _ = tx
                        .send(Msg::Defer {
                            sink: sink.name.clone(),
                            ids: rest,
                            next_attempt_ms,
                            error: format!(
                                "not tried: the sink failed on an earlier alert ({error})"
                            ),
                        })
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::info!(event = "alert_retry", sink = %sink.name, alert = %d.uid, attempt, error = %e);
                    let wait = backoff(policy, attempt, &e);
                    if tx
                        .send(record(id, Outcome::Attempt(e.message)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let dead = matches!(outcome, Outcome::Failed(_));
        if tx.send(record(id, outcome)).await.is_err() || dead {
            return;
        }
    }
}

/// How long a claim lasts: one attempt and the wait after it, with a margin; each recorded
/// attempt renews it, so it lapses only when its run has stopped working on it.
fn claim_lease(sink: &SinkConfig, policy: &DeliveryPolicy) -> Duration {
    let attempt = match &sink.kind {
        SinkKind::Command { timeout, .. } => (*timeout).max(policy.request_timeout),
        SinkKind::Slack { min_interval, .. } => policy.request_timeout + *min_interval,
        SinkKind::Webhook { .. } => policy.request_timeout,
    };
    attempt + policy.max_delay + Duration::from_secs(60)
}

/// The wait before a later run may try a delivery that `failed_runs` earlier runs could not send:
/// `retry_later_base_secs` doubling per run, capped at `retry_later_max_secs`, times a jitter of
/// half to all of it (`jitter` in [0, 1)) so deliveries that failed together spread out; at least
/// the receiver's `Retry-After`, within the cap.
fn later_delay(
    policy: &DeliveryPolicy,
    failed_runs: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = policy
        .later_base_delay
        .saturating_mul(1u32.checked_shl(failed_runs.min(31)).unwrap_or(u32::MAX))
        .min(policy.later_max_delay);
    let wait = exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) * 0.5);
    wait.max(retry_after.unwrap_or_default().min(policy.later_max_delay))
}

/// Whether a delivery failing since `failing_since_ms` (this run, when never before) has been
/// failing for the whole give-up horizon at `now_ms`.
fn gives_up(policy: &DeliveryPolicy, failing_since_ms: Option<i64>, now_ms: i64) -> bool {
    let horizon = i64::try_from(policy.give_up_after.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(failing_since_ms.unwrap_or(now_ms)) >= horizon
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The last error of a delivery given up at the horizon.
fn given_up(policy: &DeliveryPolicy, error: &str) -> String {
    if policy.give_up_after.is_zero() {
        format!("{error} (not retried in later runs: give_up_after_hours = 0)")
    } else {
        format!(
            "failing for {} or more: {error}",
            fmt_duration(policy.give_up_after)
        )
    }
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Store work without stalling the runtime's other tasks: on a multi-threaded runtime the worker
/// hands its other tasks over first (`block_in_place`); on a current-thread runtime it just runs.
/// Each call is one short statement or transaction (it may wait for the busy timeout).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// This host's name, when it can be read (Linux); it names claim owners.
fn host_name() -> Option<&'static str> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && !s.contains(':'))
    })
    .as_deref()
}

/// A claim owner for one delivery run: `host:pid:random`, distinct for every run, process and
/// machine sharing the database.
fn owner_id() -> String {
    format!(
        "{}:{}:{:016x}",
        host_name().unwrap_or("unknown-host"),
        std::process::id(),
        rand::random::<u64>()
    )
}

/// Whether the run owning a claim has certainly exited: it ran on this host, in another process
/// that no longer exists (or is a zombie). Its claim is then void at once instead of after its
/// lease (a `kill -9` mid-delivery). Any doubt (another host, no host name, an owner that does
/// not parse, this very process) counts as alive: the claim lapses with its lease.
fn owner_gone(owner: &str) -> bool {
    let Some(host) = host_name() else {
        return false;
    };
    let mut parts = owner.rsplitn(3, ':');
    let (_random, pid, owner_host) = (parts.next(), parts.next(), parts.next());
    let (Some(pid), Some(owner_host)) = (pid.and_then(|p| p.parse::<u32>().ok()), owner_host)
    else {
        return false;
    };
    if owner_host != host || pid == std::process::id() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        // `pid (comm) S ...`: the state follows the last ')' (comm may contain anything).
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Exponential backoff with jitter, or the receiver's `Retry-After`, never above the cap.
fn backoff(policy: &DeliveryPolicy, attempt: u32, e: &SinkError) -> Duration {
    let exp = policy.base_delay.saturating_mul(
        1u32.checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    let wait = e.retry_after.unwrap_or(exp.mul_f64(jitter));
    wait.min(policy.max_delay)
}

/// Send a test alert through one sink (not stored), with the usual retries.
pub async fn send_test(sink: &SinkConfig, settings: &AlertSettings) -> Result<String, SinkError> {
    let policy = &settings.delivery;
    let now = Utc::now();
    let uid = format!("aw_test_{}", now.timestamp_millis());
    let payload = serde_json::json!({
        "type": "auditwarden.test",
        "id": uid,
        "rule": "test",
        "rule_kind": "test",
        "severity": "low",
        "account": null,
        "summary": format!("auditwarden test alert for sink {}", sink.name),
        "target": null, "role": null, "change": null, "actor": null, "time": now.to_rfc3339(),
        "source_ip": null, "evidence": null, "suppressed_on_backfill": false,
        "created_at": now.to_rfc3339(),
    })
    .to_string();
    let summary = format!("auditwarden test alert for sink {}", sink.name);
    let http = sinks::http_client(settings).map_err(|message| SinkError {
        message,
        retryable: false,
        retry_after: None,
    })?;
    let alert = Outgoing {
        uid: &uid,
        payload: &payload,
        summary: &summary,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sinks::send(&http, sink, &alert, policy.request_timeout).await {
            Ok(()) => return Ok(uid),
            Err(e) if !e.retryable || attempt >= policy.max_attempts => return Err(e),
            Err(e) => tokio::time::sleep(backoff(policy, attempt, &e)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::secret::Secret;
    use crate::store::NewAlert;

    /// A webhook receiver on loopback: counts requests by `webhook-id`, answers 503 while down.
    #[derive(Default)]
    struct Receiver {
        down: bool,
        delay: Duration,
        requests: BTreeMap<String, u32>,
    }

    async fn receiver() -> (url::Url, Arc<Mutex<Receiver>>) {
        let state = Arc::new(Mutex::new(Receiver::default()));
        let st = state.clone();
        let hook = move |headers: axum::http::HeaderMap| {
            let st = st.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let (down, delay) = {
                    let mut s = st.lock().unwrap();
                    *s.requests.entry(id).or_default() += 1;
                    (s.down, s.delay)
                };
                // A slow receiver, not synchronization.
                tokio::time::sleep(delay).await;
                if down {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::OK
                }
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(hook));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url::Url::parse(&url).unwrap(), state)
    }

    fn settings(url: url::Url, max_attempts: u32) -> AlertSettings {
        AlertSettings {
            sinks: vec![SinkConfig {
                name: "soc".into(),
                kind: SinkKind::Webhook {
                    url,
                    secret: Secret::new("whsec-test"),
                },
            }],
            delivery: DeliveryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(10),
                request_timeout: Duration::from_secs(5),
                later_base_delay: Duration::from_secs(60),
                later_max_delay: Duration::from_secs(3600),
                give_up_after: Duration::from_secs(24 * 3600),
            },
            ..AlertSettings::default()
        }
    }

    /// A database with `n` alerts pending for sink `soc` (uids `aw_0`, `aw_1`, ...).
    fn outbox(dir: &tempfile::TempDir, n: usize) -> Store {
        let mut store = Store::open(&dir.path().join("aw.db")).unwrap();
        let alerts: Vec<NewAlert> = (0..n)
            .map(|i| NewAlert {
                key: format!("r|a|{i}"),
                uid: format!("aw_{i}"),
                rule: "r".into(),
                severity: "high".into(),
                at_ms: Some(0),
                summary: format!("alert {i}"),
                payload: format!("{{\"n\":{i}}}"),
                suppressed: false,
                role_change_seq: None,
            })
            .collect();
        store
            .record_alerts("a", &["soc".into()], 0, &mut |_, _| alerts.clone())
            .unwrap();
        store
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-02T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn statuses(store: &Store) -> Vec<String> {
        let mut rows = store.list_alerts(None, 100).unwrap();
        rows.sort_by_key(|r| r.alert_id);
        rows.into_iter()
            .map(|r| r.status.as_str().to_string())
            .collect()
    }

    fn requests(r: &Mutex<Receiver>, uid: &str) -> u32 {
        r.lock().unwrap().requests.get(uid).copied().unwrap_or(0)
    }

    /// A receiver down for longer than a run: nothing is dead-lettered, the backlog waits for a
    /// stored next attempt (runs before it send nothing), and a run after it delivers it all
    /// once the receiver is back, with no `alerts retry`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_longer_than_a_run_backs_off_then_delivers() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = outbox(&dir, 3);
        let (url, r) = receiver().await;
        let cfg = settings(url, 2);
        r.lock().unwrap().down = true;
        let s = deliver_at(&mut store, &cfg, t0()).await;
        let c = &s.per_sink["soc"];
        assert_eq!((c.sent, c.failed, c.pending), (0, 0, 3), "{s:?}");
        let next = c.next_attempt.expect("a next attempt");
        let wait = next - t0();
        assert!(
            wait >= chrono::Duration::seconds(30) && wait <= chrono::Duration::seconds(61),
            "{wait}"
        );
        assert_eq!(statuses(&store), ["pending"; 3]);
        assert_eq!(requests(&r, "aw_0"), 2, "max_attempts in the run");
        assert_eq!(requests(&r, "aw_1"), 0, "the rest waits with the first");
        for row in store.list_alerts(None, 100).unwrap() {
            assert_eq!(row.next_attempt_ms, Some(next.timestamp_millis()));
            assert_eq!(
                row.failing_since_ms.map(|t| t / 1000),
                Some(t0().timestamp())
            );
        }
        // Runs before the next attempt skip the backlog, down or back up.
        let s = deliver_at(&mut store, &cfg, t0() + chrono::Duration::seconds(20)).await;
        assert_eq!(s.per_sink["soc"].pending, 3);
        r.lock().unwrap().down = false;
        let s = deliver_at(&mut store, &cfg, next - chrono::Duration::seconds(1)).await;
        assert_eq!(s.per_sink["soc"].sent, 0);
        assert_eq!(requests(&r, "aw_0"), 2);
        let s = deliver_at(&mut store, &cfg, next).await;
        assert_eq!(s.per_sink["soc"].sent, 3, "{s:?}");
        assert_eq!(statuses(&store), ["sent"; 3]);
        let got: Vec<u32> = (0..3).map(|i| requests(&r, &format!("aw_{i}"))).collect();
        assert_eq!(got, [3, 1, 1]);
    }

    /// A receiver that never comes back: one attempt per due run, backing off up to the cap; the
    /// deliveries become dead letters at the first run after `give_up_after_hours`, not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_failing_past_the_horizon_becomes_a_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = outbox(&dir, 2);
        let (url, r) = receiver().await;
        let cfg = settings(url, 1);
        r.lock().unwrap().down = true;
        let horizon = chrono::Duration::hours(24);
        let mut now = t0();
        let mut runs = 0;
        let last = loop {
            runs += 1;
            assert!(runs < 200, "no dead letter after {runs} runs");
            let s = deliver_at(&mut store, &cfg, now).await;
            let c = s.per_sink["soc"].clone();
            if c.failed > 0 {
                break c;
            }
            assert!(
                now - t0() < horizon,
                "still pending past the horizon: {c:?}"
            );
            let next = c.next_attempt.expect("a next attempt");
            assert!(
                next - now <= chrono::Duration::seconds(3601),
                "{}",
                next - now
            );
            now = next;
        };
        assert_eq!(
            (last.failed, last.pending),
            (2, 0),
            "the backlog gives up together"
        );
        assert!(now - t0() >= horizon && now - t0() < horizon + chrono::Duration::hours(1));
        assert_eq!(statuses(&store), ["failed"; 2]);
        // One request per run, never more: a backing-off run is cheap for the receiver.
        assert_eq!(requests(&r, "aw_0"), runs);
        assert_eq!(requests(&r, "aw_1"), 0);
        // Exponential to the one-hour cap: about 30 runs for a day (a 5-minute job: 288).
        assert!((24..=60).contains(&runs), "{runs} runs");
        let listed = store
            .list_alerts(Some(crate::domain::DeliveryStatus::Failed), 10)
            .unwrap();
        assert!(
            listed.iter().all(|d| d
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("failing for 24 h"))),
            "{listed:?}"
        );
    }

    /// Two runs at once on one database (two connections) against a slow receiver send each
    /// delivery once between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_runs_at_once_send_each_delivery_once() {
        let dir = tempfile::tempdir().unwrap();
        drop(outbox(&dir, 8));
        let (url, r) = receiver().await;
        r.lock().unwrap().delay = Duration::from_millis(100);
        let cfg = settings(url, 2);
        let run = |cfg: AlertSettings| {
            let mut store = Store::open(&dir.path().join("aw.db")).unwrap();
            tokio::spawn(async move { deliver_at(&mut store, &cfg, t0()).await })
        };
        let (a, b) = (run(cfg.clone()), run(cfg));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let sent = a.per_sink["soc"].sent + b.per_sink["soc"].sent;
        assert_eq!(sent, 8, "{a:?} {b:?}");
        let got: Vec<u32> = (0..8).map(|i| requests(&r, &format!("aw_{i}"))).collect();
        assert_eq!(got, [1; 8]);
    }

    /// Backoff across runs doubles from the base, is capped, keeps a jitter of half to all of
    /// it, and respects a longer `Retry-After` within the cap.
    #[test]
    fn later_delay_doubles_with_jitter_up_to_the_cap() {
        let p = DeliveryPolicy::default();
        let secs = |runs, ra: Option<u64>, j| {
            later_delay(&p, runs, ra.map(Duration::from_secs), j).as_secs_f64()
        };
        assert_eq!(secs(0, None, 1.0), 60.0);
        assert_eq!(secs(0, None, 0.0), 30.0);
        assert_eq!(secs(3, None, 1.0), 480.0);
        assert_eq!(secs(10, None, 1.0), 3600.0);
        assert_eq!(secs(400, None, 0.0), 1800.0);
        assert_eq!(secs(0, Some(600), 0.0), 600.0);
        assert_eq!(secs(0, Some(86_400), 0.0), 3600.0);
        let h = p.give_up_after.as_millis() as i64;
        assert!(!gives_up(&p, None, 5));
        assert!(!gives_up(&p, Some(0), h - 1));
        assert!(gives_up(&p, Some(0), h));
        let zero = DeliveryPolicy {
            give_up_after: Duration::ZERO,
            ..p
        };
        assert!(gives_up(&zero, None, 5));
    }

    /// Owners are `host:pid:random`; only an owner on this host whose process is gone is void.
    #[test]
    fn owner_ids_and_exited_owners() {
        let me = owner_id();
        assert_ne!(me, owner_id(), "each run is its own owner");
        assert!(!owner_gone(&me), "this process is alive");
        assert!(!owner_gone("nonsense"));
        assert!(!owner_gone("other-host.example:4000000000:00"));
        if let Some(host) = host_name() {
            assert!(owner_gone(&format!("{host}:4000000000:00")), "no such pid");
            assert!(!owner_gone(&format!("{host}:1:00")), "init is alive");
        }
    }
}
