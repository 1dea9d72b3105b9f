//! [`Client`]: one DigiCert account's HTTP client. Every request goes through the client-side
//! throttle and a bounded retry loop (exponential backoff with jitter, `Retry-After` honoured);
//! 400/401/403/404 are never retried. Counters of requests, retries and statuses are kept for the
//! pass summary and the benchmark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use chrono::NaiveDate;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use super::counters::{self, Endpoint};
use super::error::ApiError;
use super::settings::{Account, AccountKind, Credential, RetryPolicy};
use super::throttle::{Pace, Throttle};
use super::wire::{self, AuditPage};
use crate::secret::Secret;

/// One `/audit-log` request.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub action: Option<String>,
    pub offset: u64,
    pub limit: u32,
}

/// Counters for one client; shared with whoever reports on the pass.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// HTTP status (or 0 for a transport error / timeout) -> count.
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl RequestStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().map(|m| m.clone()).unwrap_or_default()
    }
    fn count_status(&self, status: u16) {
        if let Ok(mut m) = self.by_status.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
}

pub struct Client {
    /// The account's name: the label of this client's requests in [`counters`].
    account: Arc<str>,
    http: reqwest::Client,
    base: Url,
    /// The API's path below `base`: `/account/api/v1`, `/services/v2`, or the Report Library's
    /// `/reports/v1` (see [`Client::for_reports`]).
    prefix: &'static str,
    kind: AccountKind,
    key: Option<Secret>,
    throttle: Throttle,
    retry: RetryPolicy,
    timeout: Duration,
    /// `max_response_bytes`: reading a body stops here.
    max_body: u64,
    stats: RequestStats,
    /// Cleared when the server refuses `sort=timestamp` with a 400 (the value is an assumption of
    /// the contract); paging then relies on drift detection alone.
    send_sort: AtomicBool,
    /// What this client trusts and presents, for TLS messages and `check`.
    tls: super::tls::TlsContext,
}

/// `auditwarden/VERSION`, with ` (node NAME)` in the daemon (NAME kept to visible ASCII, so the
/// header is always valid).
fn user_agent(node: Option<&str>) -> String {
    let base = concat!("auditwarden/", env!("CARGO_PKG_VERSION"));
    match node {
        Some(n) => {
            let n: String = n
                .chars()
                .take(100)
                .map(|c| {
                    if c.is_ascii_graphic() && c != '(' && c != ')' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{base} (node {n})")
        }
        None => base.to_string(),
    }
}

impl Client {
    pub fn new(account: &Account) -> Result<Client, ApiError> {
        let prefix = match account.kind {
            AccountKind::DigicertOne => "/account/api/v1",
            AccountKind::CertCentral => "/services/v2",
        };
        Client::build(account, account.base_url.clone(), prefix)
    }

    /// The client of a CertCentral account's Report Library (contract 2.3): `report_base_url`
    /// (by default the region's API host) under `/reports/v1`, the same key, throttle settings
    /// and limits as the Services API.
    pub fn for_reports(account: &Account) -> Result<Client, ApiError> {
        let base = account
            .report_base_url
            .clone()
            .unwrap_or_else(|| account.base_url.clone());
        Client::build(account, base, "/reports/v1")
    }

    fn build(account: &Account, base: Url, prefix: &'static str) -> Result<Client, ApiError> {
        let c = &account.collection;
        let mut builder = reqwest::Client::builder()
            .timeout(c.request_timeout)
            .connect_timeout(c.request_timeout.min(Duration::from_secs(10)))
            .user_agent(user_agent(account.node.as_deref()))
            .redirect(reqwest::redirect::Policy::none());
        let (b, mut tls) =
            super::tls::configure(builder, &c.tls, &c.proxy, Some(&base)).map_err(ApiError::Tls)?;
        builder = b;
        let key = match &account.credential {
            Credential::ApiKey(k) => Some(k.clone()),
            Credential::ClientCert(cert) => {
                // mTLS: the certificate is the credential; no API key is sent.
                let (id, info) = super::tls::load_client_cert(&cert.pem_file, SystemTime::now())
                    .map_err(ApiError::Tls)?;
                if let Some(w) = info.expiry_warning(SystemTime::now()) {
                    tracing::warn!(event = "client_cert_expiring", account = %account.name, not_after = %info.not_after, "{w}");
                }
                tls.client_cert = Some(info);
                builder = builder.identity(id);
                None
            }
        };
        let http = builder
            .build()
            .map_err(|e| ApiError::Setup(e.to_string()))?;
        Ok(Client {
            account: Arc::from(account.name.as_str()),
            http,
            base,
            prefix,
            kind: account.kind,
            key,
            throttle: Throttle::for_account(account.kind, &c.rate_limits),
            retry: c.retry.clone(),
            timeout: c.request_timeout,
            max_body: c.max_response_bytes,
            stats: RequestStats::default(),
            send_sort: AtomicBool::new(true),
            tls,
        })
    }

    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The pace the throttle has settled on (after the server's 429s, if any).
    pub fn pace(&self) -> Pace {
        self.throttle.pace()
    }

    /// The TLS setup: trust anchors, client certificate, proxy (for `check`).
    pub fn tls(&self) -> &super::tls::TlsContext {
        &self.tls
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// One page of `GET /account/api/v1/audit-log`, oldest first where the server honours `sort`.
    pub async fn audit_log(&self, q: &AuditQuery) -> Result<AuditPage, ApiError> {
        loop {
            let mut query = vec![
                ("from", q.from.format("%Y-%m-%d").to_string()),
                ("to", q.to.format("%Y-%m-%d").to_string()),
                ("offset", q.offset.to_string()),
                ("limit", q.limit.to_string()),
            ];
            let sorted = self.send_sort.load(Ordering::Relaxed);
            if sorted {
                query.push(("sort", "timestamp".into()));
            }
            if let Some(a) = &q.action {
                query.push(("action", a.clone()));
            }
            match self.get("/audit-log", &query, wire::parse_audit_page).await {
                Err(ApiError::BadRequest { ref detail, .. })
                    if sorted && detail.contains("sort") =>
                {
                    tracing::warn!(
                        event = "sort_refused",
                        detail = %detail,
                        "the server refused sort=timestamp; paging newest-first with drift detection"
                    );
                    self.send_sort.store(false, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    /// One cheap authenticated call that proves the credential works: `GET /account` on DigiCert
    /// ONE, `GET /user/me` on CertCentral. Returns a one-line description.
    pub async fn check(&self) -> Result<String, ApiError> {
        let path = match self.kind {
            AccountKind::DigicertOne => "/account",
            AccountKind::CertCentral => "/user/me",
        };
        let v = self.get(path, &[], wire::parse_any_json).await?;
        Ok(match self.kind {
            AccountKind::DigicertOne => {
                let n = v.as_array().map(|a| a.len()).unwrap_or(0);
                format!("credential accepted; {n} account(s) visible")
            }
            AccountKind::CertCentral => {
                let who = v
                    .get("username")
                    .and_then(|u| u.as_str())
                    .unwrap_or("(unknown user)");
                format!("credential accepted; key belongs to {}", wire::preview(who))
            }
        })
    }

    /// GET `path` under the API prefix, retried per the policy; `parse` turns a 2xx body into `T`
    /// (a parse failure is a broken body, retried like a 5xx).
    pub async fn get<T>(
        &self,
        path: &str,
        query: &[(&str, String)],
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.request(Send::Get, path, query, |b| parse(&utf8(b)))
            .await
    }

    /// `POST path` with a JSON body, retried like a GET. A POST that timed out or got a 5xx may
    /// still have created its object: callers must tolerate a duplicate (a second on-demand
    /// report nobody polls is harmless; losing the pass is not).
    pub async fn post_json<T>(
        &self,
        path: &str,
        body: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.request(Send::Post(body), path, &[], |b| parse(&utf8(b)))
            .await
    }

    /// GET `path` whose 2xx body is bytes (a download), at most `max_response_bytes`.
    pub async fn get_bytes<T>(
        &self,
        path: &str,
        query: &[(&str, String)],
        parse: impl Fn(Vec<u8>) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.request(Send::Get, path, query, parse).await
    }

    async fn request<T>(
        &self,
        how: Send<'_>,
        path: &str,
        query: &[(&str, String)],
        parse: impl Fn(Vec<u8>) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{}", self.prefix(), path));
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(self.retry.base_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries as usize)
            .with_jitter()
            .build();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let sent = self.throttle.acquire().await;
            let result = self.send_once(&url, path, how).await;
            match &result {
                Err(ApiError::RateLimited { retry_after, .. }) => {
                    self.throttle.record(sent, true, *retry_after)
                }
                Ok(_) => self.throttle.record(sent, false, None),
                Err(_) => {}
            }
            let err = match result {
                Ok(body) => match parse(body) {
                    Ok(v) => return Ok(v),
                    Err(reason) => ApiError::BadBody {
                        path: path.to_string(),
                        reason,
                    },
                },
                Err(e) => e,
            };
            if !err.is_retryable() {
                return Err(err);
            }
            let Some(backoff) = delays.next() else {
                return Err(ApiError::Exhausted {
                    attempts,
                    last: Box::new(err),
                });
            };
            let wait = match err.retry_after() {
                Some(ra) if ra > self.retry.max_delay => {
                    return Err(ApiError::WaitTooLong {
                        wait: ra,
                        max: self.retry.max_delay,
                    })
                }
                Some(ra) => ra.max(backoff.min(ra + self.retry.base_delay)),
                None => backoff,
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            counters::global().retry(&self.account);
            tracing::warn!(
                event = "request_retry",
                path,
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                error = %err,
                "retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(&self, url: &Url, path: &str, how: Send<'_>) -> Result<Vec<u8>, ApiError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = match how {
            Send::Get => self.http.get(url.clone()),
            Send::Post(body) => self.http.post(url.clone()).body(body.to_string()),
        };
        if let Some(key) = &self.key {
            let header = match self.kind {
                AccountKind::DigicertOne => "x-api-key",
                AccountKind::CertCentral => "X-DC-DEVKEY",
            };
            let mut value = HeaderValue::from_str(key.expose()).map_err(|_| {
                ApiError::Setup(
                    "the API key contains characters not allowed in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            req = req.header(header, value);
        }
        if self.kind == AccountKind::CertCentral {
            req = req.header("Content-Type", "application/json");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.count(path, 0);
                return Err(self.transport_error(e));
            }
        };
        let status = resp.status().as_u16();
        self.count(path, status);
        let retry_after = retry_after(resp.headers());
        if (200..300).contains(&status) {
            return match read_capped(resp, self.max_body).await {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => Err(ApiError::BodyTooLarge {
                    account: self.account.to_string(),
                    path: self.shown_path(url),
                    max: self.max_body,
                }),
                Err(e) => Err(self.transport_error(e)),
            };
        }
        // An error body only feeds a one-line message: its start is enough.
        let body = match read_capped(resp, self.max_body.min(ERROR_BODY_BYTES)).await {
            Ok(Some(bytes)) => utf8(bytes),
            _ => String::new(),
        };
        Err(status_error(
            status,
            path,
            &body,
            retry_after,
            self.key.as_ref(),
        ))
    }

    /// The path and query of `url` for a message (the key travels in a header, never here).
    fn shown_path(&self, url: &Url) -> String {
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// One response (status 0: none, a transport error or timeout), in this client's stats and
    /// the process's counters, as it happens.
    fn count(&self, path: &str, status: u16) {
        self.stats.count_status(status);
        counters::global().response(&self.account, Endpoint::of_path(path), status);
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if let Some(why) = super::tls::explain(&e, &self.tls, &self.base) {
            return ApiError::Tls(why);
        }
        if e.is_timeout() {
            ApiError::Timeout(self.timeout)
        } else {
            // Without the URL: it carries no secret, but error chains stay short and stable.
            let e = e.without_url();
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            // rustls: the first bytes back were not a TLS record (a plain-HTTP server answering).
            if self.base.scheme() == "https" && msg.contains("InvalidContentType") {
                let host = match (self.base.host_str(), self.base.port_or_known_default()) {
                    (Some(h), Some(p)) => format!("{h}:{p}"),
                    (Some(h), None) => h.to_string(),
                    _ => String::new(),
                };
                return ApiError::NotTls { host, detail: msg };
            }
            ApiError::Transport(msg)
        }
    }
}

/// How a request is sent.
#[derive(Debug, Clone, Copy)]
enum Send<'a> {
    Get,
    /// With this JSON body.
    Post(&'a str),
}

/// The most of an error body read for its message.
const ERROR_BODY_BYTES: u64 = 64 * 1024;

/// The longest `Retry-After` kept: a day (the largest `retry_max_secs`). A server's number of
/// seconds or date far ahead is bounded here, before any arithmetic or message sees it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// The body, read chunk by chunk: `None` as soon as it is known to exceed `max` bytes (from
/// `Content-Length`, or once that much has arrived), so an oversize body costs at most `max`.
async fn read_capped(
    mut resp: reqwest::Response,
    max: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > max) {
        return Ok(None);
    }
    let hint = resp.content_length().unwrap_or(0).min(max);
    let mut buf = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await? {
        if (buf.len() + chunk.len()) as u64 > max {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// A body as text: UTF-8, with anything else replaced (the JSON parser then says what is wrong).
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The one-line detail of an error body: its `code: message` pairs, else its start; the key
/// redacted, control and bidi characters escaped, at most 300 characters.
fn error_detail(body: &str, pairs: &[(String, String)], key: Option<&Secret>) -> String {
    let mut detail = if pairs.is_empty() {
        if body.trim().is_empty() {
            "(no body)".to_string()
        } else {
            wire::preview(body)
        }
    } else {
        pairs
            .iter()
            .map(|(c, m)| format!("{c}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    // Redacted before it is cut, so no part of the key survives at the cut.
    if let Some(k) = key {
        if !k.expose().is_empty() {
            detail = detail.replace(k.expose(), "<redacted>");
        }
    }
    crate::text::one_line(&detail).chars().take(300).collect()
}

/// A non-2xx response as an [`ApiError`]. 401/403 are read for what they say: "expired" alone is
/// an expired credential, "invalid or has expired" does not tell which (every DigiCert ONE 401
/// carries the code `invalid_api_key`, so only the messages are read for "invalid").
fn status_error(
    status: u16,
    path: &str,
    body: &str,
    retry_after: Option<Duration>,
    key: Option<&Secret>,
) -> ApiError {
    let pairs = wire::parse_error_body(body);
    let detail = error_detail(body, &pairs, key);
    let lower = detail.to_lowercase();
    let said = if pairs.is_empty() {
        lower.clone()
    } else {
        pairs
            .iter()
            .map(|(_, m)| m.to_lowercase())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let expired = lower.contains("expire");
    let rejected = ["invalid", "wrong", "revoked", "incorrect", "unknown"]
        .iter()
        .any(|w| said.contains(w));
    let path = path.to_string();
    match status {
        401 | 403 if expired && rejected => ApiError::InvalidOrExpiredKey { detail },
        401 | 403 if expired => ApiError::CredentialExpired { detail },
        401 => ApiError::InvalidKey { detail },
        403 if lower.contains("invalid_key") || lower.contains("invalid_api_key") => {
            ApiError::InvalidKey { detail }
        }
        403 => ApiError::AccessDenied { detail },
        404 => ApiError::NotFound { path, detail },
        400 => ApiError::BadRequest { path, detail },
        429 => ApiError::RateLimited {
            retry_after,
            detail,
        },
        500..=599 | 408 => ApiError::Server {
            status,
            retry_after,
            detail,
        },
        _ => ApiError::Status {
            status,
            path,
            detail,
        },
    }
}

/// `Retry-After` as delta-seconds or as an HTTP date, at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry-After is read as seconds and as an HTTP date.
    #[test]
    fn retry_after_both_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(30);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    /// A huge Retry-After (seconds or a date far ahead) is bounded, and messages round it.
    #[test]
    fn huge_retry_after_is_bounded_and_rounded() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("251606185977"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 31 Dec 9999 23:59:59 GMT"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let e = ApiError::WaitTooLong {
            wait: Duration::new(251_606_185_977, 452_649_847),
            max: Duration::from_secs(120),
        };
        assert_eq!(
            e.to_string(),
            "the server asked to wait 2912108 d 15 h, longer than retry_max_secs (2 min 0 s); the next pass resumes"
        );
        let e = ApiError::RateLimited {
            retry_after: Some(Duration::from_millis(1_500)),
            detail: "x".into(),
        };
        assert_eq!(e.to_string(), "rate limited (429), Retry-After 2 s: x");
    }

    /// A 401 saying "invalid or has expired" is not called expired; "expired" alone is.
    #[test]
    fn ambiguous_401_is_invalid_or_expired() {
        let body =
            |m: &str| format!(r#"{{"errors":[{{"code":"invalid_api_key","message":"{m}"}}]}}"#);
        let e = status_error(
            401,
            "/audit-log",
            &body("API key is invalid or has expired"),
            None,
            None,
        );
        assert!(matches!(e, ApiError::InvalidOrExpiredKey { .. }), "{e:?}");
        assert!(e.to_string().contains("invalid or expired"), "{e}");
        let e = status_error(
            401,
            "/audit-log",
            &body("The API key has expired (service user end date passed)"),
            None,
            None,
        );
        assert!(matches!(e, ApiError::CredentialExpired { .. }), "{e:?}");
        let e = status_error(401, "/audit-log", &body("Invalid API key"), None, None);
        assert!(matches!(e, ApiError::InvalidKey { .. }), "{e:?}");
        let e = status_error(
            403,
            "/user",
            r#"{"errors":[{"code":"access_denied|access_denied_invalid_key","message":"Invalid API key"}]}"#,
            None,
            None,
        );
        assert!(matches!(e, ApiError::InvalidKey { .. }), "{e:?}");
    }

    /// A server's error text reaches a message with bidi controls and other controls escaped,
    /// and the key redacted even where the text is cut.
    #[test]
    fn error_text_is_escaped_and_redacted() {
        let key = Secret::new("sk-planted-key");
        let body = r#"{"errors":[{"code":"bad","message":"file \u202Etxt.exe\u202C and \u001b[31m red, key sk-planted-key"}]}"#;
        let e = status_error(400, "/audit-log", body, None, Some(&key));
        let text = e.to_string();
        assert!(
            !text.contains('\u{202E}') && !text.contains('\u{1b}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{202e}txt.exe\\u{202c}"), "{text}");
        assert!(
            text.contains("<redacted>") && !text.contains("sk-planted"),
            "{text}"
        );
        let long = format!(
            r#"{{"code":"x","message":"{}sk-planted-key"}}"#,
            "a".repeat(290)
        );
        let e = status_error(400, "/audit-log", &long, None, Some(&key));
        assert!(!e.to_string().contains("sk-plan"), "{e}");
    }
}
