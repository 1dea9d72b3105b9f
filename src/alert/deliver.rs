//! Outbox delivery: every pending delivery of every configured sink, one task per sink so a slow
//! or dead sink never holds up another. Within a sink, alerts go out in order, each with bounded
//! attempts and exponential backoff (honouring `Retry-After` up to the cap); after the last
//! attempt the delivery is failed (the dead letter) and the rest of that sink's alerts wait for
//! the next run. Results flow back over a channel to this task, the only one touching the store.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;

use super::sinks::{self, Outgoing, SinkError};
use crate::config::{AlertSettings, DeliveryPolicy, SinkConfig, SinkKind};
use crate::store::{AlertDelivery, Store};

/// What one delivery run did, per sink: (sent, failed now, left pending).
#[derive(Debug, Default, Clone)]
pub struct DeliverySummary {
    pub per_sink: BTreeMap<String, (u64, u64, u64)>,
    /// A store error that stopped recording outcomes (deliveries then stay pending).
    pub error: Option<String>,
}

impl DeliverySummary {
    pub fn failed(&self) -> u64 {
        self.per_sink.values().map(|v| v.1).sum()
    }
}

enum Outcome {
    /// One failed attempt; another follows.
    Attempt(String),
    Sent,
    /// The last attempt failed, or the receiver refused it for good.
    Failed(String),
}

/// Deliver every pending alert of the configured sinks.
pub async fn deliver(store: &mut Store, settings: &AlertSettings) -> DeliverySummary {
    let mut summary = DeliverySummary::default();
    let names: Vec<String> = settings.sinks.iter().map(|s| s.name.clone()).collect();
    let pending = match store.pending_deliveries(&names) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(event = "alert_delivery_failed", error = %e);
            summary.error = Some(e.to_string());
            return summary;
        }
    };
    let http = match sinks::http_client(settings) {
        Ok(c) => c,
        Err(e) => {
            summary.error = Some(e);
            return summary;
        }
    };
    let mut by_sink: BTreeMap<String, Vec<AlertDelivery>> = BTreeMap::new();
    for d in pending {
        if let Some(s) = &d.sink {
            by_sink.entry(s.clone()).or_default().push(d);
        }
    }
    let (tx, mut rx) = mpsc::channel::<(String, i64, Outcome)>(64);
    for (name, items) in by_sink {
        let Some(sink) = settings.sinks.iter().find(|s| s.name == name).cloned() else {
            continue;
        };
        summary.per_sink.insert(name, (0, 0, items.len() as u64));
        let tx = tx.clone();
        let http = http.clone();
        let policy = settings.delivery.clone();
        tokio::spawn(async move { run_sink(&http, &sink, &policy, items, tx).await });
    }
    drop(tx);
    while let Some((sink, id, outcome)) = rx.recv().await {
        let now = Utc::now().timestamp_millis();
        let counts = summary.per_sink.entry(sink.clone()).or_default();
        let (status, error) = match &outcome {
            Outcome::Attempt(e) => ("pending", Some(e.as_str())),
            Outcome::Sent => {
                counts.0 += 1;
                counts.2 = counts.2.saturating_sub(1);
                ("sent", None)
            }
            Outcome::Failed(e) => {
                counts.1 += 1;
                counts.2 = counts.2.saturating_sub(1);
                tracing::warn!(event = "alert_dead_letter", sink = %sink, delivery = id, error = %e, "delivery failed after its last attempt; `auditwarden alerts retry` sends it again");
                ("failed", Some(e.as_str()))
            }
        };
        if let Err(e) = store.record_delivery(id, status, error, now) {
            // The receiver deduplicates a resend by its id, so losing this record is harmless.
            tracing::error!(event = "alert_delivery_unrecorded", sink = %sink, delivery = id, error = %e);
            summary.error.get_or_insert_with(|| e.to_string());
        }
    }
    summary
}

/// Send a sink's alerts in order; stop at the first dead letter (the sink is down).
async fn run_sink(
    http: &reqwest::Client,
    sink: &SinkConfig,
    policy: &DeliveryPolicy,
    items: Vec<AlertDelivery>,
    tx: mpsc::Sender<(String, i64, Outcome)>,
) {
    let pace = match &sink.kind {
        SinkKind::Slack { min_interval, .. } => *min_interval,
        _ => Duration::ZERO,
    };
    let mut last_send: Option<Instant> = None;
    for d in items {
        let Some(id) = d.delivery_id else { continue };
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
            last_send = Some(Instant::now());
            attempt += 1;
            match sinks::send(http, sink, &alert, policy.request_timeout).await {
                Ok(()) => break Outcome::Sent,
                Err(e) if !e.retryable || attempt >= policy.max_attempts => {
                    break Outcome::Failed(format!("attempt {attempt}: {e}"))
                }
                Err(e) => {
                    tracing::info!(event = "alert_retry", sink = %sink.name, alert = %d.uid, attempt, error = %e);
                    let wait = backoff(policy, attempt, &e);
                    if tx
                        .send((sink.name.clone(), id, Outcome::Attempt(e.message)))
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
        if tx.send((sink.name.clone(), id, outcome)).await.is_err() || dead {
            return;
        }
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
