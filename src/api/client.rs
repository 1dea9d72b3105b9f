//! [`Client`]: one DigiCert account's HTTP client. Every request goes through the client-side
//! throttle and a bounded retry loop (exponential backoff with jitter, `Retry-After` honoured);
//! 400/401/403/404 are never retried. Counters of requests, retries and statuses are kept for the
//! pass summary and the benchmark.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;
use chrono::NaiveDate;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use url::Url;

use super::error::ApiError;
use super::wire::{self, AuditPage};
use crate::config::{Account, AccountKind, Credential, RateLimit, RetryPolicy};
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

/// The client-side throttle: every configured window must allow the request.
struct Throttle {
    limiters: Vec<DefaultDirectRateLimiter>,
}

impl Throttle {
    fn new(limits: &[RateLimit]) -> Throttle {
        let limiters = limits
            .iter()
            .filter_map(|l| {
                let burst = NonZeroU32::new(l.requests)?;
                let period = Duration::from_secs(u64::from(l.per_secs)) / l.requests;
                let quota =
                    Quota::with_period(period.max(Duration::from_nanos(1)))?.allow_burst(burst);
                Some(RateLimiter::direct(quota))
            })
            .collect();
        Throttle { limiters }
    }

    async fn acquire(&self) {
        for l in &self.limiters {
            l.until_ready().await;
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    kind: AccountKind,
    key: Option<Secret>,
    throttle: Throttle,
    retry: RetryPolicy,
    timeout: Duration,
    stats: RequestStats,
    /// Cleared when the server refuses `sort=timestamp` with a 400 (the value is an assumption of
    /// the contract); paging then relies on drift detection alone.
    send_sort: AtomicBool,
    /// What this client trusts and presents, for TLS messages and `check`.
    tls: super::tls::TlsContext,
}

impl Client {
    pub fn new(account: &Account) -> Result<Client, ApiError> {
        let c = &account.collection;
        let mut builder = reqwest::Client::builder()
            .timeout(c.request_timeout)
            .connect_timeout(c.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("auditwarden/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none());
        let (b, mut tls) =
            super::tls::configure(builder, &c.tls, &c.proxy, Some(&account.base_url))
                .map_err(ApiError::Tls)?;
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
            http,
            base: account.base_url.clone(),
            kind: account.kind,
            key,
            throttle: Throttle::new(&c.rate_limits),
            retry: c.retry.clone(),
            timeout: c.request_timeout,
            stats: RequestStats::default(),
            send_sort: AtomicBool::new(true),
            tls,
        })
    }

    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The TLS setup: trust anchors, client certificate, proxy (for `check`).
    pub fn tls(&self) -> &super::tls::TlsContext {
        &self.tls
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn prefix(&self) -> &'static str {
        match self.kind {
            AccountKind::DigicertOne => "/account/api/v1",
            AccountKind::CertCentral => "/services/v2",
        }
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
            self.throttle.acquire().await;
            let err = match self.send_once(&url, path).await {
                Ok(body) => match parse(&body) {
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

    async fn send_once(&self, url: &Url, path: &str) -> Result<String, ApiError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self.http.get(url.clone());
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
                self.stats.count_status(0);
                return Err(self.transport_error(e));
            }
        };
        let status = resp.status().as_u16();
        self.stats.count_status(status);
        let retry_after = retry_after(resp.headers());
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) if (200..300).contains(&status) => return Err(self.transport_error(e)),
            Err(_) => String::new(),
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(self.status_error(status, path, &body, retry_after))
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
            ApiError::Transport(msg)
        }
    }

    fn status_error(
        &self,
        status: u16,
        path: &str,
        body: &str,
        retry_after: Option<Duration>,
    ) -> ApiError {
        let pairs = wire::parse_error_body(body);
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
        detail = detail
            .chars()
            .take(300)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if let Some(k) = &self.key {
            if !k.expose().is_empty() {
                detail = detail.replace(k.expose(), "<redacted>");
            }
        }
        let lower = detail.to_lowercase();
        let path = path.to_string();
        match status {
            401 | 403 if lower.contains("expire") => ApiError::CredentialExpired { detail },
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
}

/// `Retry-After` as delta-seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
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
}
