//! Where alerts go: one `match` over [`SinkKind`]. Each send is one attempt; [`SinkError`] says
//! whether another attempt may succeed and how long the receiver asked us to wait. Error texts
//! never carry a URL (a Slack URL is a credential) or a secret.

use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use super::config::{AlertSettings, SinkConfig, SinkKind};
use crate::secret::Secret;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// Another attempt may succeed (network, timeout, 408/429/5xx, a failed command).
    pub retryable: bool,
    /// The receiver's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl SinkError {
    fn retry(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }
}

/// One alert as a sink sends it.
pub struct Outgoing<'a> {
    /// The stable id (`webhook-id`).
    pub uid: &'a str,
    /// The JSON payload (documented in `docs/alerts.md`).
    pub payload: &'a str,
    pub summary: &'a str,
}

/// The Standard Webhooks signature: `v1,` + base64 of HMAC-SHA256 over `id.timestamp.body`. A
/// secret written as `whsec_<base64>` (the convention's format) is decoded to its key bytes;
/// any other secret is used as it is.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &str) -> String {
    let raw = secret.expose();
    let key = raw
        .strip_prefix("whsec_")
        .and_then(|b| BASE64.decode(b).ok())
        .unwrap_or_else(|| raw.as_bytes().to_vec());
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// The HTTP client of the webhook and Slack sinks: `[alerts] tls_roots`, `ca_file` and the proxy
/// (`proxy_url`, or the standard environment), as the DigiCert clients take them from
/// `[collection]`.
pub fn http_client(settings: &AlertSettings) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder();
    let (builder, _) = crate::api::tls::configure(builder, &settings.tls, &settings.proxy, None)?;
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Send one alert through one sink, once.
pub async fn send(
    http: &reqwest::Client,
    sink: &SinkConfig,
    alert: &Outgoing<'_>,
    timeout: Duration,
) -> Result<(), SinkError> {
    match &sink.kind {
        SinkKind::Webhook { url, secret } => {
            let ts = chrono::Utc::now().timestamp();
            let req = http
                .post(url.clone())
                .timeout(timeout)
                .header("content-type", "application/json")
                .header("webhook-id", alert.uid)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    sign(secret, alert.uid, ts, alert.payload),
                )
                .body(alert.payload.to_string());
            check(req.send().await).await
        }
        SinkKind::Slack { url, .. } => {
            let req = http
                .post(url.expose())
                .timeout(timeout)
                .header("content-type", "application/json")
                .body(slack_message(alert).to_string());
            check(req.send().await).await
        }
        SinkKind::Command {
            program,
            args,
            timeout,
        } => run_command(program, args, alert, *timeout).await,
    }
}

async fn check(r: Result<reqwest::Response, reqwest::Error>) -> Result<(), SinkError> {
    let resp = r.map_err(|e| {
        if let Some(why) = crate::api::tls::explain_sink_error(&e) {
            // An untrusted receiver or a proxy refusing the tunnel: another attempt cannot help.
            return SinkError {
                message: why,
                retryable: false,
                retry_after: None,
            };
        }
        let e = e.without_url();
        let what = if e.is_timeout() {
            "timed out".to_string()
        } else {
            format!("request failed: {e}")
        };
        SinkError::retry(what)
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let code = status.as_u16();
    Err(SinkError {
        message: format!("the receiver answered {code}"),
        retryable: code == 408 || code == 429 || status.is_server_error(),
        retry_after,
    })
}

fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Slack mrkdwn treats `&`, `<` and `>` as markup; every value is attacker-influenced text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An incoming-webhook message: a header, then the key fields.
pub fn slack_message(alert: &Outgoing<'_>) -> serde_json::Value {
    let p: serde_json::Value = serde_json::from_str(alert.payload).unwrap_or_default();
    let text = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::String(s) => slack_escape(s),
            serde_json::Value::Null => "-".into(),
            other => slack_escape(&other.to_string()),
        }
    };
    let name_or_id = |v: &serde_json::Value| -> String {
        if v["name"].is_string() {
            text(&v["name"])
        } else {
            text(&v["id"])
        }
    };
    let evidence = match p["evidence"]["kind"].as_str() {
        Some("audit_event") => format!("audit event {}", text(&p["evidence"]["event_id"])),
        Some("snapshot") => format!(
            "seen between {} and {}",
            text(&p["evidence"]["observed_after"]),
            text(&p["evidence"]["observed_at"])
        ),
        _ => format!("first seen {}", text(&p["evidence"]["observed_at"])),
    };
    let fields = [
        ("Rule", text(&p["rule"])),
        ("Severity", text(&p["severity"])),
        ("Account", text(&p["account"])),
        ("Target", name_or_id(&p["target"])),
        ("Role", text(&p["role"])),
        ("Actor", name_or_id(&p["actor"])),
        ("Time", text(&p["time"])),
        ("Source IP", text(&p["source_ip"])),
        ("Evidence", evidence),
        ("Alert id", slack_escape(alert.uid)),
    ];
    serde_json::json!({
        "text": slack_escape(alert.summary),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": format!("auditwarden: {}", p["rule"].as_str().unwrap_or("alert"))}},
            {"type": "section", "fields": fields.iter().map(|(k, v)| serde_json::json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")})).collect::<Vec<_>>()},
        ]
    })
}

/// Run the program (no shell) with the alert JSON on stdin; success is exit status 0 in time.
async fn run_command(
    program: &std::path::Path,
    args: &[String],
    alert: &Outgoing<'_>,
    timeout: Duration,
) -> Result<(), SinkError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("AUDITWARDEN_ALERT_ID", alert.uid)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SinkError::retry(format!("cannot start {}: {e}", program.display())))?;
    let payload = alert.payload.as_bytes().to_vec();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading its input is judged by its exit status.
            let _ = stdin.write_all(&payload).await;
            drop(stdin);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(SinkError::retry(format!(
            "{} exited with {status}",
            program.display()
        ))),
        Ok(Err(e)) => Err(SinkError::retry(format!(
            "{} failed: {e}",
            program.display()
        ))),
        Err(_) => {
            let _ = child.kill().await;
            Err(SinkError::retry(format!(
                "{} did not finish within {}s",
                program.display(),
                timeout.as_secs()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature matches the Standard Webhooks reference vector.
    #[test]
    fn standard_webhooks_reference_signature() {
        // From the Standard Webhooks specification's test vectors.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// Hostile text cannot inject Slack markup or links.
    #[test]
    fn slack_fields_are_escaped() {
        let payload = r#"{"rule":"r","target":{"name":"<!channel> & <http://x|y>"},"evidence":{"kind":"audit_event","event_id":"e"}}"#;
        let m = slack_message(&Outgoing {
            uid: "aw_1",
            payload,
            summary: "<!here>",
        });
        let s = m.to_string();
        assert!(!s.contains("<!channel>") && !s.contains("<!here>"), "{s}");
        assert!(s.contains("&lt;!channel&gt; &amp;"), "{s}");
    }
}
