//! [`ApiError`]: what went wrong talking to DigiCert, typed so the caller can decide whether to
//! retry (429, 5xx, timeouts, broken bodies, network errors) or to stop and say why (400, 401, 403,
//! 404). Messages never contain the API key: it travels in a header, and server texts are scrubbed.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 (DigiCert ONE) or 403 `access_denied_invalid_key` (CertCentral).
    #[error("the API key was rejected (wrong or revoked key): {detail}")]
    InvalidKey { detail: String },
    /// The key belongs to a service user past its end date (contract 1.1).
    #[error("the credential has expired (service user past its end date?): {detail}")]
    CredentialExpired { detail: String },
    /// 403 without a key problem: the key's user lacks a role.
    #[error("access denied: the key's user lacks the permission needed (DigiCert ONE audit log: AM_ACCOUNT_ADMIN, AM_VIEW_ONLY or AM_USER_MANAGER): {detail}")]
    AccessDenied { detail: String },
    #[error("not found (404) at {path}: {detail}")]
    NotFound { path: String, detail: String },
    #[error("the request was refused as invalid (400) at {path}: {detail}")]
    BadRequest { path: String, detail: String },
    /// 429: too many requests.
    #[error("rate limited (429){}: {detail}", fmt_wait(.retry_after))]
    RateLimited {
        retry_after: Option<Duration>,
        detail: String,
    },
    /// 5xx, or another status that is worth another try.
    #[error("server error (HTTP {status}){}: {detail}", fmt_wait(.retry_after))]
    Server {
        status: u16,
        retry_after: Option<Duration>,
        detail: String,
    },
    /// Any other 4xx: not retried.
    #[error("unexpected HTTP {status} at {path}: {detail}")]
    Status {
        status: u16,
        path: String,
        detail: String,
    },
    #[error("no answer within {0:?} (request timeout)")]
    Timeout(Duration),
    #[error("network error: {0}")]
    Transport(String),
    /// A 2xx whose body is not what the contract describes (e.g. truncated JSON).
    #[error("broken response body at {path}: {reason}")]
    BadBody { path: String, reason: String },
    /// The server asked us to wait longer than this pass is willing to.
    #[error("the server asked to wait {wait:?}, longer than retry_max_secs ({max:?}); the next pass resumes")]
    WaitTooLong { wait: Duration, max: Duration },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: Box<ApiError> },
    /// The client could not be built (e.g. an unreadable client certificate).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    /// TLS cannot work as configured: an untrusted server certificate, a client certificate that
    /// is expired, not yet valid, mismatched with its key or rejected by the server, an unusable
    /// `ca_file`, or a proxy that refuses the tunnel. Retrying does not help.
    #[error("{0}")]
    Tls(String),
}

fn fmt_wait(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", Retry-After {}s", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

impl ApiError {
    /// Worth another try after a wait.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::RateLimited { .. }
                | ApiError::Server { .. }
                | ApiError::Timeout(_)
                | ApiError::Transport(_)
                | ApiError::BadBody { .. }
        )
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A short stable label for counting (`metrics`, summaries).
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::InvalidKey { .. } => "invalid_key",
            ApiError::CredentialExpired { .. } => "credential_expired",
            ApiError::AccessDenied { .. } => "access_denied",
            ApiError::NotFound { .. } => "not_found",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Server { .. } => "server_error",
            ApiError::Status { .. } => "http_status",
            ApiError::Timeout(_) => "timeout",
            ApiError::Transport(_) => "transport",
            ApiError::BadBody { .. } => "bad_body",
            ApiError::WaitTooLong { .. } => "wait_too_long",
            ApiError::Exhausted { .. } => "exhausted",
            ApiError::Setup(_) => "setup",
            ApiError::Tls(_) => "tls",
        }
    }
}
