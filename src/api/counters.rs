//! Request counters of this process: every response (or transport failure) of every
//! [`Client`](super::Client), by account, [`Endpoint`] and HTTP status, counted the moment it
//! arrives. The daemon renders them on `/metrics`, so a pass in progress, a pass cut short by
//! shutdown, user listings, invitation polls and CertCentral accounts are all visible.
//!
//! Process-wide, like a metrics library's default registry: clients are built deep inside
//! collection and user sync, and counting must not depend on each of them being handed a
//! registry. The key space is bounded: configured accounts x a closed set of endpoints x HTTP
//! statuses (three digits).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// What a request was for: a small closed set (never raw paths, which carry user ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `GET /audit-log` (pages and `limit=1` probes).
    AuditLog,
    /// `GET /user`: a user listing page.
    Users,
    /// `GET /user/{id}` (invitation polls, deletion checks) and `GET /user/me`.
    User,
    /// `GET /account` (`check` on DigiCert ONE).
    Account,
    /// CertCentral's Report Library: creating audit-log reports, polling runs, downloads.
    Reports,
    /// Anything else.
    Other,
}

impl Endpoint {
    /// The endpoint of an API path (below the API prefix, e.g. `/user/123`).
    pub fn of_path(path: &str) -> Endpoint {
        let mut segs = path.trim_matches('/').split('/');
        match (segs.next(), segs.next(), segs.next()) {
            (Some("audit-log"), None, _) => Endpoint::AuditLog,
            (Some("user"), None, _) => Endpoint::Users,
            (Some("user"), Some(id), None) if !id.is_empty() => Endpoint::User,
            (Some("account"), None, _) => Endpoint::Account,
            (Some("report"), _, _) => Endpoint::Reports,
            _ => Endpoint::Other,
        }
    }

    /// The `endpoint` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::AuditLog => "audit_log",
            Endpoint::Users => "users",
            Endpoint::User => "user",
            Endpoint::Account => "account",
            Endpoint::Reports => "reports",
            Endpoint::Other => "other",
        }
    }
}

/// Counts since the process started.
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// A std mutex: each update is one map increment, never held across an `.await`.
    inner: Mutex<Counts>,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    /// (account, endpoint, HTTP status; 0 for a transport error or timeout) -> responses.
    responses: BTreeMap<(Arc<str>, Endpoint, u16), u64>,
    /// account -> requests retried.
    retries: BTreeMap<Arc<str>, u64>,
}

/// A copy of the counters, in label order.
#[derive(Debug, Default, Clone)]
pub struct CountsSnapshot {
    pub responses: Vec<(String, Endpoint, u16, u64)>,
    pub retries: Vec<(String, u64)>,
}

impl RequestCounters {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Poisoned only by a panic in the middle of an increment: the counts are still usable.
        match self.inner.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) fn response(&self, account: &Arc<str>, endpoint: Endpoint, status: u16) {
        *self
            .lock()
            .responses
            .entry((account.clone(), endpoint, status))
            .or_default() += 1;
    }

    pub(crate) fn retry(&self, account: &Arc<str>) {
        *self.lock().retries.entry(account.clone()).or_default() += 1;
    }

    pub fn snapshot(&self) -> CountsSnapshot {
        let c = self.lock().clone();
        CountsSnapshot {
            responses: c
                .responses
                .into_iter()
                .map(|((a, e, s), n)| (a.to_string(), e, s, n))
                .collect(),
            retries: c
                .retries
                .into_iter()
                .map(|(a, n)| (a.to_string(), n))
                .collect(),
        }
    }
}

/// The process's counters.
pub fn global() -> &'static RequestCounters {
    static COUNTERS: OnceLock<RequestCounters> = OnceLock::new();
    COUNTERS.get_or_init(RequestCounters::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths map to the closed endpoint set; ids never become labels.
    #[test]
    fn endpoints_of_paths() {
        assert_eq!(Endpoint::of_path("/audit-log"), Endpoint::AuditLog);
        assert_eq!(Endpoint::of_path("/user"), Endpoint::Users);
        assert_eq!(Endpoint::of_path("/user/8d1c-77"), Endpoint::User);
        assert_eq!(Endpoint::of_path("/user/me"), Endpoint::User);
        assert_eq!(Endpoint::of_path("/account"), Endpoint::Account);
        assert_eq!(Endpoint::of_path("/user/1/roles"), Endpoint::Other);
        assert_eq!(Endpoint::of_path("/container"), Endpoint::Other);
        let c = RequestCounters::default();
        let a: Arc<str> = Arc::from("acc");
        c.response(&a, Endpoint::User, 200);
        c.response(&a, Endpoint::User, 200);
        c.response(&a, Endpoint::Users, 0);
        c.retry(&a);
        let s = c.snapshot();
        assert_eq!(
            s.responses,
            vec![
                ("acc".to_string(), Endpoint::Users, 0, 1),
                ("acc".to_string(), Endpoint::User, 200, 2)
            ]
        );
        assert_eq!(s.retries, vec![("acc".to_string(), 1)]);
    }
}
