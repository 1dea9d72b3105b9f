//! [`ApiError`]: what went wrong talking to DigiCert, typed so the caller can decide whether to
//! retry (429, 5xx, timeouts, broken bodies, network errors) or to stop and say why (400, 401, 403,
//! 404, a body over `max_response_bytes`, a plain-HTTP answer to TLS). Messages never contain the
//! API key: it travels in a header, and server texts are scrubbed of it and of control and bidi
//! characters. Durations in messages are rounded (`2 min 5 s`).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 (DigiCert ONE) or 403 `access_denied_invalid_key` (CertCentral).
    #[error("the API key was rejected (wrong or revoked key): {detail}")]
    InvalidKey { detail: String },
    /// The key belongs to a service user past its end date (contract 1.1).
    #[error("the credential has expired (service user past its end date?): {detail}")]
    CredentialExpired { detail: String },
    /// 401/403 whose text does not tell a wrong key from an expired one ("invalid or has
    /// expired"): both are said, neither is claimed.
    #[error("the API key was rejected as invalid or expired (a wrong or revoked key, or a service user past its end date): {detail}")]
    InvalidOrExpiredKey { detail: String },
    /// 403 without a key problem: the key's user lacks a role.
    #[error("access denied: the key's user lacks the permission needed (DigiCert ONE audit log: AM_ACCOUNT_ADMIN, AM_VIEW_ONLY or AM_USER_MANAGER): {detail}")]
    AccessDenied { detail: String },
    /// A CertCentral key refused by the Report Library (403 `missing_permission`, contract 2.3):
    /// only an Administrator's key reads the audit log. The account is tracked from snapshots.
    #[error(
        "this key cannot read the CertCentral audit log (Administrator role needed): {detail}"
    )]
    NotAdministrator { detail: String },
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
    #[error("no answer within {} (request timeout)", crate::text::duration(*.0))]
    Timeout(Duration),
    #[error("network error: {0}")]
    Transport(String),
    /// An `https://` base URL whose server answered the TLS handshake with something that is not
    /// TLS (typically plain HTTP). It would answer the same way again: not retried.
    #[error("the TLS handshake failed: the server at {host} answered with something that is not TLS; it may speak plain HTTP (then base_url should start with http://): {detail}")]
    NotTls { host: String, detail: String },
    /// A body longer than `max_response_bytes`: reading stopped there. Not retried, since the
    /// server would send the same body again.
    #[error("the response to GET {path} for account {account} is larger than max_response_bytes ({}); stopped reading it (not retried)", crate::text::bytes(*.max))]
    BodyTooLarge {
        account: String,
        path: String,
        max: u64,
    },
    /// A 2xx whose body is not what the contract describes (e.g. truncated JSON).
    #[error("broken response body at {path}: {reason}")]
    BadBody { path: String, reason: String },
    /// The server asked us to wait longer than this pass is willing to.
    /// `wait` is bounded by the client (see `client::MAX_RETRY_AFTER`).
    #[error("the server asked to wait {}, longer than retry_max_secs ({}); the next pass resumes", crate::text::duration(*.wait), crate::text::duration(*.max))]
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
    /// An id that cannot be put in a URL path as it is (DigiCert ids are UUIDs or integers):
    /// never requested, so never retried.
    #[error("the id {0} cannot be put in a URL path; not requested")]
    UnsafeId(String),
}

fn fmt_wait(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(", Retry-After {}", crate::text::duration(*d)),
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
            ApiError::InvalidOrExpiredKey { .. } => "invalid_or_expired_key",
            ApiError::AccessDenied { .. } => "access_denied",
            ApiError::NotAdministrator { .. } => "not_administrator",
            ApiError::NotFound { .. } => "not_found",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Server { .. } => "server_error",
            ApiError::Status { .. } => "http_status",
            ApiError::Timeout(_) => "timeout",
            ApiError::Transport(_) => "transport",
            ApiError::NotTls { .. } => "not_tls",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BadBody { .. } => "bad_body",
            ApiError::WaitTooLong { .. } => "wait_too_long",
            ApiError::Exhausted { .. } => "exhausted",
            ApiError::Setup(_) => "setup",
            ApiError::Tls(_) => "tls",
            ApiError::UnsafeId(_) => "unsafe_id",
        }
    }
}
