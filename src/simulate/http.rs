//! The HTTP side of the simulator: one fallback handler that authenticates, rolls request faults,
//! routes by hand (so each API gets its own 404 body and every route its own stats label) and
//! builds the responses.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Router;
use chrono::NaiveDate;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::{FaultSpec, RequestFault};
use super::world::{
    ms_to_day, AuditQuery, CreateUser, Mutation, WorldError, CC_CONTAINERS, CC_ROLES, ONE_ROLES,
};
use super::Simulator;

mod reports;
pub(super) use reports::ReportLibrary;

/// DigiCert ONE paging limits (contract 1.2, 1.4); CertCentral uses the same numbers [A].
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// Serve the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serve `/_sim/*` only (404 for the APIs) on `listener` until `shutdown` completes: the plain
/// control listener beside an HTTPS simulator.
pub async fn serve_control(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, control_router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Both APIs and `/_sim/*`.
pub(super) fn router(sim: Arc<Simulator>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// `/_sim/*` only (the plain-HTTP control listener beside an HTTPS simulator).
pub(super) fn control_router(sim: Arc<Simulator>) -> Router {
    Router::new().fallback(handle_control).with_state(sim)
}

/// Set on the requests of a TLS connection whose client presented a certificate that the
/// `--client-ca` verifier accepted (rustls refuses the handshake otherwise).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientCertVerified;

async fn handle(
    State(sim): State<Arc<Simulator>>,
    cert: Option<Extension<ClientCertVerified>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.dispatch(&method, &uri, &headers, &body, cert.is_some())
        .await
        .into_response()
}

async fn handle_control(
    State(sim): State<Arc<Simulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() != "/_sim" && !uri.path().starts_with("/_sim/") {
        return control_error(
            404,
            "this listener serves /_sim/* only; the APIs are on HTTPS",
        )
        .into_response();
    }
    sim.dispatch(&method, &uri, &headers, &body, false)
        .await
        .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    One,
    Cc,
}

/// A response before it becomes an axum `Response`.
struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
    /// `huge-body`: bytes streamed between the first `at` bytes of `body` and the rest.
    padding: Option<Padding>,
}

/// `len` copies of `fill`, streamed (never held in memory) at byte `at` of the body.
struct Padding {
    at: usize,
    fill: u8,
    len: u64,
}

impl Reply {
    fn json_text(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
            padding: None,
        }
    }

    fn json(status: u16, v: &Value) -> Reply {
        Reply::json_text(status, v.to_string())
    }

    fn with_header(mut self, name: header::HeaderName, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let body = match self.padding {
            None => Body::from(self.body),
            Some(p) => {
                use tokio::io::AsyncReadExt;
                let mut head = self.body;
                let tail = head.split_off(p.at.min(head.len()));
                let reader = std::io::Cursor::new(head)
                    .chain(tokio::io::repeat(p.fill).take(p.len))
                    .chain(std::io::Cursor::new(tail));
                // A stream has no Content-Length: the client cannot tell the size up front.
                Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                    reader,
                    64 * 1024,
                ))
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (k, v) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        r
    }
}

/// Query parameters in order (a name may repeat; the first wins).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(q: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `name`; an empty value counts as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

fn parse_day(name: &str, v: &str) -> Result<NaiveDate, String> {
    let ok_shape = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if !ok_shape {
        return Err(format!("{name} must be a date YYYY-MM-DD, got {v:?}"));
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map_err(|_| format!("{name} is not a valid date: {v:?}"))
}

fn parse_paging(p: &Params) -> Result<(usize, usize), String> {
    let offset = match p.get("offset") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("offset must be a whole number >= 0, got {v:?}"))?,
    };
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(l) if (1..=MAX_LIMIT).contains(&l) => l,
            _ => {
                return Err(format!(
                    "limit must be between 1 and {MAX_LIMIT}, got {v:?}"
                ))
            }
        },
    };
    Ok((offset, limit))
}

fn parse_audit_query(p: &Params) -> Result<AuditQuery, String> {
    let from = p.get("from").map(|v| parse_day("from", v)).transpose()?;
    let to = p.get("to").map(|v| parse_day("to", v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(format!("from ({f}) is after to ({t})"));
        }
    }
    let newest_first = match p.get("sort") {
        None | Some("-timestamp") => true,
        Some("timestamp") => false,
        Some(s) => return Err(format!("sort must be timestamp or -timestamp, got {s:?}")),
    };
    let (offset, limit) = parse_paging(p)?;
    Ok(AuditQuery {
        from,
        to,
        action: p.get("action").map(str::to_string),
        user_name: p.get("user_name").map(str::to_string),
        resource_types: p.get("resource_types").map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        }),
        resource_id: p.get("resource_id").map(str::to_string),
        status: p.get("status").map(str::to_string),
        account_id: p.get("account_id").map(str::to_string),
        newest_first,
        offset,
        limit,
    })
}

#[derive(Deserialize)]
struct RoleBody {
    role: String,
    actor_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct ActorBody {
    actor_id: Option<String>,
}

#[derive(Deserialize)]
struct EventsBody {
    count: usize,
    day: Option<String>,
}

/// Most events one `POST /_sim/events` may add.
const MAX_CONTROL_EVENTS: usize = 10_000_000;

fn control_error(status: u16, message: impl Into<String>) -> Reply {
    Reply::json(status, &json!({"error": message.into()}))
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| control_error(400, format!("bad JSON body: {e}")))
}

fn from_world(r: Result<Value, WorldError>) -> Reply {
    match r {
        Ok(v) => Reply::json(200, &v),
        Err(e) => control_error(e.status, e.message),
    }
}

/// Counts an API request as in flight from its arrival until its reply is built (`/_sim/stats`
/// shows the most at once), overall and on its key by its node (`/_sim/keys`).
struct InFlight<'a> {
    sim: &'a Simulator,
    /// (key label, node) when the request carried a key and its record is kept.
    on_key: Option<(String, String)>,
}

impl<'a> InFlight<'a> {
    fn enter(sim: &'a Simulator, key: Option<String>, node: String) -> InFlight<'a> {
        let mut guard = sim.stats();
        let s = &mut *guard;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let on_key = key.and_then(|k| {
            if !s.keys.contains_key(&k) && s.keys.len() >= super::MAX_KEY_RECORDS {
                return None;
            }
            let r = s.keys.entry(k.clone()).or_default();
            r.requests += 1;
            if let Some((other, _)) = r.in_flight.iter().find(|(n, c)| **n != node && **c > 0) {
                r.overlaps += 1;
                if r.first_overlap.is_none() {
                    r.first_overlap = Some(format!("{node} while {other}"));
                }
            }
            let idle = r.in_flight.is_empty();
            *r.in_flight.entry(node.clone()).or_default() += 1;
            let now: u64 = r.in_flight.values().sum();
            if idle {
                s.keys_in_flight += 1;
                s.max_keys_in_flight = s.max_keys_in_flight.max(s.keys_in_flight);
            }
            r.max_in_flight = r.max_in_flight.max(now);
            if r.nodes.len() < super::MAX_NODES_PER_KEY {
                r.nodes.insert(node.clone());
            }
            Some((k, node))
        });
        InFlight { sim, on_key }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut guard = self.sim.stats();
        let s = &mut *guard;
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some((k, node)) = self.on_key.take() {
            if let Some(r) = s.keys.get_mut(&k) {
                if let Some(c) = r.in_flight.get_mut(&node) {
                    *c = c.saturating_sub(1);
                    if *c == 0 {
                        r.in_flight.remove(&node);
                    }
                }
                if r.in_flight.is_empty() {
                    s.keys_in_flight = s.keys_in_flight.saturating_sub(1);
                }
            }
        }
    }
}

/// The label of the API key a request carries (`x-api-key` or `X-DC-DEVKEY`): `key:` and the
/// first 12 bytes of its SHA-256 in hex, as the daemon names the key's lease. Never the key.
fn key_label(headers: &HeaderMap) -> Option<String> {
    use sha2::{Digest, Sha256};
    let key = headers
        .get("x-api-key")
        .or_else(|| headers.get("x-dc-devkey"))?;
    let digest = Sha256::digest(key.as_bytes());
    Some(format!("key:{}", hex::encode(&digest[..12])))
}

/// The node that sent a request: NAME from a `User-Agent` of `... (node NAME)`, else the whole
/// `User-Agent` (at most 100 characters either way).
fn node_of(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no user agent");
    let node = ua
        .split_once("(node ")
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or(ua, |(name, _)| name);
    node.chars().take(100).collect()
}

impl Simulator {
    async fn dispatch(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        client_cert: bool,
    ) -> Reply {
        let path = uri.path();
        let params = Params::parse(uri.query());
        if path == "/_sim" || path.starts_with("/_sim/") {
            let (label, reply) = self.control_route(method, path, &params, body);
            self.count(label, None, reply.status);
            return reply;
        }
        let key = key_label(headers);
        let _in_flight = InFlight::enter(self, key.clone(), node_of(headers));
        if let Some(rest) = path.strip_prefix("/reports/v1") {
            // CertCentral's Report Library: the same request faults as the other endpoints.
            let fault = if self.over_rate_cap(key.as_deref().unwrap_or("")) {
                Some(RequestFault::RateCap)
            } else {
                self.roll_fault()
            };
            if let Some(f) = fault {
                if let Some(reply) = self.fault_reply(Api::Cc, f) {
                    self.count(format!("{method} /reports/v1"), Some(f), reply.status);
                    return reply;
                }
            }
            let (label, mut reply) = self.reports_route(method, rest, &params, headers, body);
            let mut applied = None;
            match fault {
                Some(RequestFault::Slow) => {
                    let slow_ms = self.control().spec.slow_ms;
                    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
                    applied = fault;
                }
                Some(RequestFault::Truncate) if reply.status == 200 => {
                    let half = reply.body.len() / 2;
                    reply.body.truncate(half);
                    applied = fault;
                }
                _ => {}
            }
            self.count(label, applied, reply.status);
            return reply;
        }
        let (api, rest) = if let Some(r) = path.strip_prefix("/account/api/v1") {
            (Api::One, r)
        } else if let Some(r) = path.strip_prefix("/services/v2") {
            (Api::Cc, r)
        } else {
            let reply = self.error(
                Api::One,
                404,
                "resource_not_found",
                &format!("no such path: {path}"),
            );
            self.count("other".into(), None, reply.status);
            return reply;
        };
        let fault = if self.over_rate_cap(key.as_deref().unwrap_or("")) {
            Some(RequestFault::RateCap)
        } else {
            self.roll_fault()
        };
        let slow_ms = self.control().spec.slow_ms;
        if let Some(f) = fault {
            if let Some(reply) = self.fault_reply(api, f) {
                let label = route_label(api, method, rest);
                self.count(label, Some(f), reply.status);
                return reply;
            }
        }
        let (label, mut reply) = self.api_route(
            api,
            method,
            rest,
            &params,
            headers,
            client_cert,
            fault.is_none(),
        );
        let mut applied = None;
        match fault {
            Some(RequestFault::Slow) => {
                tokio::time::sleep(Duration::from_millis(slow_ms)).await;
                applied = fault;
            }
            Some(RequestFault::Truncate) if reply.status == 200 => {
                let half = reply.body.len() / 2;
                reply.body.truncate(half);
                applied = fault;
            }
            _ => {}
        }
        self.count(label, applied, reply.status);
        reply
    }

    fn count(&self, label: String, fault: Option<RequestFault>, status: u16) {
        let mut s = self.stats();
        s.requests += 1;
        *s.routes.entry(label).or_default() += 1;
        if let Some(f) = fault {
            *s.faults.entry(f.name()).or_default() += 1;
        }
        *s.statuses.entry(status).or_default() += 1;
    }

    /// `rate-cap=N`: take a token from `key`'s bucket (DigiCert limits each key); `true` when
    /// there is none (answer 429). Keys past the record limit share one bucket.
    fn over_rate_cap(&self, key: &str) -> bool {
        let mut c = self.control();
        let cap = c.spec.rate_cap;
        if cap == 0 {
            return false;
        }
        let now = std::time::Instant::now();
        let rate = f64::from(cap);
        let burst = (rate / 5.0).max(1.0);
        let key = if c.buckets.contains_key(key) || c.buckets.len() < super::MAX_KEY_RECORDS {
            key
        } else {
            ""
        };
        let (tokens, at) = c.buckets.get(key).copied().unwrap_or((burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
        let (left, over) = if tokens >= 1.0 {
            (tokens - 1.0, false)
        } else {
            (tokens, true)
        };
        c.buckets.insert(key.to_string(), (left, now));
        over
    }

    fn roll_fault(&self) -> Option<RequestFault> {
        let mut c = self.control();
        if c.frozen {
            return None;
        }
        for f in RequestFault::ALL {
            let p = c.spec.probability_of(f);
            if p > 0.0 && c.rng.gen_bool(p.clamp(0.0, 1.0)) {
                return Some(f);
            }
        }
        None
    }

    /// The response of a fault that replaces the real one (`None` for `slow` and `truncate`).
    fn fault_reply(&self, api: Api, f: RequestFault) -> Option<Reply> {
        let limited = "Too many requests; slow down";
        match f {
            RequestFault::RateLimit => {
                let code = match api {
                    Api::One => "too_many_requests",
                    Api::Cc => "request_limit_exceeded",
                };
                Some(
                    self.error(api, 429, code, limited)
                        .with_header(header::RETRY_AFTER, "1".into()),
                )
            }
            RequestFault::RateLimitDate => {
                let code = match api {
                    Api::One => "too_many_requests",
                    Api::Cc => "request_limit_exceeded",
                };
                // HTTP dates have whole seconds: 2 s ahead is 1-2 s from now.
                let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
                Some(
                    self.error(api, 429, code, limited)
                        .with_header(header::RETRY_AFTER, at),
                )
            }
            RequestFault::RateCap => {
                let r = self.error(api, 429, "request_limit_exceeded", limited);
                Some(match api {
                    Api::One => r.with_header(header::RETRY_AFTER, "1".into()),
                    Api::Cc => r,
                })
            }
            RequestFault::RateLimitBare => {
                Some(self.error(api, 429, "request_limit_exceeded", limited))
            }
            RequestFault::ServerError => {
                let (kind, retry) = {
                    let mut c = self.control();
                    (c.rng.gen_range(0..3u8), c.rng.gen_bool(0.5))
                };
                Some(match kind {
                    0 => self.error(api, 500, "internal_error", "Internal server error"),
                    1 => Reply {
                        status: 502,
                        content_type: "text/html",
                        headers: Vec::new(),
                        body: b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
                        padding: None,
                    },
                    _ => {
                        let r = self.error(api, 503, "service_unavailable", "Down for maintenance");
                        if retry {
                            r.with_header(header::RETRY_AFTER, "1".into())
                        } else {
                            r
                        }
                    }
                })
            }
            RequestFault::Slow | RequestFault::Truncate => None,
        }
    }

    /// An API error body in the documented shape (rotating through the alternatives under
    /// `error-shapes`).
    fn error(&self, api: Api, status: u16, code: &str, message: &str) -> Reply {
        let shape = {
            let mut c = self.control();
            if c.spec.error_shapes {
                c.error_seq += 1;
                c.error_seq
            } else {
                0
            }
        };
        let e = json!({"code": code, "message": message});
        let body = match (api, shape % 3) {
            (_, 0) => json!({"errors": [e]}),
            (Api::One, 1) => json!({"error": e}),
            (Api::One, _) => e,
            (Api::Cc, 1) => json!({"errors": e}),
            (Api::Cc, _) => json!({"errors": [e]}),
        };
        Reply::json(status, &body)
    }

    fn bad_request(&self, api: Api, message: &str) -> Reply {
        let code = match api {
            Api::One => "invalid_request",
            Api::Cc => "invalid_input",
        };
        self.error(api, 400, code, message)
    }

    /// DigiCert ONE takes a verified client certificate instead of the key (contract 1.1: mTLS,
    /// no `x-api-key`); CertCentral always needs its key.
    fn authenticate(&self, api: Api, headers: &HeaderMap, client_cert: bool) -> Result<(), Reply> {
        if client_cert && api == Api::One {
            return Ok(());
        }
        let name = match api {
            Api::One => "x-api-key",
            Api::Cc => "x-dc-devkey",
        };
        let key = headers.get(name).and_then(|v| v.to_str().ok());
        match (api, key) {
            (_, Some(k)) if k == self.api_key || self.extra_api_keys.iter().any(|e| e == k) => {
                Ok(())
            }
            (Api::Cc, Some(k)) if self.non_admin_api_keys.iter().any(|n| n == k) => Ok(()),
            (Api::One, Some(k)) if self.expired_api_keys.iter().any(|e| e == k) => Err(self.error(
                api,
                401,
                "invalid_api_key",
                "The API key has expired (service user end date passed)",
            )),
            (Api::One, None) => Err(self.error(api, 401, "invalid_api_key", "Missing API key")),
            (Api::One, Some(_)) => Err(self.error(api, 401, "invalid_api_key", "Invalid API key")),
            (Api::Cc, _) => Err(self.error(
                api,
                403,
                "access_denied|access_denied_invalid_key",
                "Invalid API key",
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn api_route(
        &self,
        api: Api,
        method: &Method,
        rest: &str,
        params: &Params,
        headers: &HeaderMap,
        client_cert: bool,
        may_change: bool,
    ) -> (String, Reply) {
        let label = route_label(api, method, rest);
        if let Err(r) = self.authenticate(api, headers, client_cert) {
            return (label, r);
        }
        let segs: Vec<&str> = rest
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let not_found = |s: &Simulator| match api {
            Api::One => s.error(
                api,
                404,
                "resource_not_found",
                &format!("no such resource: {rest}"),
            ),
            Api::Cc => s.error(
                api,
                404,
                "not_found|route",
                &format!("no such route: {rest}"),
            ),
        };
        if !rest.is_empty() && !rest.starts_with('/') {
            return (label, not_found(self));
        }
        if *method != Method::GET {
            let known = match api {
                Api::One => matches!(
                    segs.as_slice(),
                    ["audit-log"] | ["user", ..] | ["role"] | ["account"]
                ),
                Api::Cc => matches!(segs.as_slice(), ["user", ..] | ["container"]),
            };
            if known {
                let code = match api {
                    Api::One => "method_not_allowed",
                    Api::Cc => "not_found|route",
                };
                let status = if api == Api::One { 405 } else { 404 };
                return (label, self.error(api, status, code, "method not allowed"));
            }
            return (label, not_found(self));
        }
        let reply = match (api, segs.as_slice()) {
            (Api::One, ["audit-log"]) => self.one_audit_log(params, may_change),
            (Api::One, ["user"]) => self.one_users(params),
            (Api::One, ["user", "me"]) => self.one_user_me(),
            (Api::One, ["user", id]) => self.one_user(id),
            (Api::One, ["role"]) => self.one_roles(params),
            (Api::One, ["account"]) => {
                let w = self.world();
                Reply::json(
                    200,
                    &json!([{"id": w.account_id, "name": w.account_name, "active": true}]),
                )
            }
            (Api::Cc, ["user"]) => self.cc_users(params),
            (Api::Cc, ["user", "me"]) => self.cc_user_me(),
            (Api::Cc, ["user", "access_roles"]) => {
                let roles: Vec<Value> = CC_ROLES
                    .iter()
                    .map(|(id, name)| json!({"id": id, "name": name}))
                    .collect();
                Reply::json(200, &json!({"access_roles": roles}))
            }
            (Api::Cc, ["user", id]) => self.cc_user(id),
            (Api::Cc, ["container"]) => {
                let cs: Vec<Value> = CC_CONTAINERS
                    .iter()
                    .map(|(id, name, parent, active)| {
                        json!({"id": id, "name": name, "parent_id": parent, "is_active": active})
                    })
                    .collect();
                Reply::json(200, &json!({"containers": cs}))
            }
            _ => not_found(self),
        };
        (label, reply)
    }

    fn one_audit_log(&self, params: &Params, may_change: bool) -> Reply {
        let mut q = match parse_audit_query(params) {
            Ok(q) => q,
            Err(m) => return self.bad_request(Api::One, &m),
        };
        let (bare, alt, drift, late, busy, spec, huge) = {
            let mut c = self.control();
            if c.spec.ignore_sort {
                q.newest_first = true;
            }
            let mut drift = false;
            let mut late = false;
            let busy = may_change && !c.frozen && c.spec.busy;
            if may_change && !c.frozen {
                if q.offset > 0 && c.drift_done < c.spec.drift {
                    c.drift_done += 1;
                    drift = true;
                }
                if c.late_done < c.spec.late {
                    c.late_done += 1;
                    late = true;
                }
            }
            let huge = c.spec.huge_body.then_some(c.spec.huge_body_mb);
            (
                c.spec.bare,
                c.spec.alt_fields,
                drift,
                late,
                busy,
                c.spec.clone(),
                huge,
            )
        };
        if drift || late || busy {
            let mut w = self.world_mut();
            if drift {
                w.insert_drift(&q);
            }
            if late {
                w.insert_late(&q);
            }
            if busy {
                w.insert_arrival();
            }
        }
        // Hostile servers: `offset` ignored, or pages of new ids for ever.
        let served_offset = q.offset;
        if spec.repeat_pages {
            q.offset = 0;
        }
        let w = self.world();
        let page = w.select(&q);
        let mut out = String::with_capacity(page.indices.len() * 560 + 80);
        let mut padding = None;
        if !bare {
            let total = if spec.lying_total {
                1_000_000
            } else if spec.endless {
                served_offset + 2 * q.limit
            } else {
                page.total
            };
            out.push_str(&format!(
                "{{\"total\":{},\"offset\":{},\"limit\":{},",
                total, served_offset, q.limit
            ));
            if let Some(mb) = huge {
                // A large field the client does not know: `"padding":"xxx…"`.
                out.push_str("\"padding\":\"");
                padding = Some(Padding {
                    at: out.len(),
                    fill: b'x',
                    len: mb << 20,
                });
                out.push_str("\",");
            }
            out.push_str("\"items\":");
        }
        out.push('[');
        if bare {
            if let Some(mb) = huge {
                // Whitespace between array elements: still the same JSON array.
                padding = Some(Padding {
                    at: out.len(),
                    fill: b' ',
                    len: mb << 20,
                });
            }
        }
        if spec.endless {
            let (lo, hi) = q.window_ms();
            for n in 0..q.limit {
                if n > 0 {
                    out.push(',');
                }
                let seq = (served_offset + n) as u64;
                let ts = lo + (seq as i64 % (hi - lo).max(1));
                w.write_phantom(&mut out, seq, ts, alt);
            }
        } else {
            for (n, &i) in page.indices.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                w.write_event(&mut out, i, alt);
            }
        }
        out.push(']');
        if !bare {
            out.push('}');
        }
        let mut reply = Reply::json_text(200, out);
        reply.padding = padding;
        reply
    }

    fn one_users(&self, params: &Params) -> Reply {
        let user_type = params.get("user_type");
        if let Some(t) = user_type {
            if t != "standard" && t != "service" {
                return self.bad_request(
                    Api::One,
                    &format!("user_type must be standard or service, got {t:?}"),
                );
            }
        }
        let (offset, limit) = match parse_paging(params) {
            Ok(p) => p,
            Err(m) => return self.bad_request(Api::One, &m),
        };
        let spec = self.faults_view();
        let w = self.world();
        let matching: Vec<_> = w
            .one_users
            .iter()
            .filter(|u| user_type.is_none_or(|t| u.user_type_str() == t))
            .collect();
        let mut total = matching.len();
        let skip = if spec.repeat_pages { 0 } else { offset };
        let mut items: Vec<Value> = matching
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|u| w.one_user_json(u, spec.role_objects))
            .collect();
        if spec.endless {
            items = (offset..offset + limit)
                .map(|n| phantom_one_user(n, user_type))
                .collect();
            total = offset + 2 * limit;
        }
        if spec.lying_total {
            total = 1_000_000;
        }
        if spec.user_envelope && !spec.bare {
            Reply::json(
                200,
                &json!({"total": total, "offset": offset, "limit": limit, "items": items}),
            )
        } else {
            Reply::json(200, &Value::Array(items))
        }
    }

    fn one_user_me(&self) -> Reply {
        let role_objects = self.faults_view().role_objects;
        let w = self.world();
        match w.one_user_by_id(&w.me_one_id) {
            Some(u) => Reply::json(200, &w.one_user_json(u, role_objects)),
            None => self.error(
                Api::One,
                404,
                "resource_not_found",
                "the key's user is gone",
            ),
        }
    }

    fn one_user(&self, id: &str) -> Reply {
        let role_objects = self.faults_view().role_objects;
        let w = self.world();
        match w.one_user_by_id(id) {
            Some(u) => Reply::json(200, &w.one_user_json(u, role_objects)),
            None => self.error(
                Api::One,
                404,
                "resource_not_found",
                &format!("user {id} not found"),
            ),
        }
    }

    fn one_roles(&self, params: &Params) -> Reply {
        let app = params.get("application_code");
        let roles: Vec<Value> = ONE_ROLES
            .iter()
            .filter(|r| app.is_none_or(|a| r.app == a))
            .map(|r| json!({"id": r.id, "code": r.code, "name": r.name, "application_code": r.app}))
            .collect();
        Reply::json(200, &Value::Array(roles))
    }

    fn cc_users(&self, params: &Params) -> Reply {
        let (offset, limit) = match parse_paging(params) {
            Ok(p) => p,
            Err(m) => return self.bad_request(Api::Cc, &m),
        };
        let status = params.get("filters[status]");
        let search = params.get("filters[search]").map(str::to_lowercase);
        let sort = params.get("sort").unwrap_or("id");
        let (desc, key) = match sort.strip_prefix('-') {
            Some(k) => (true, k),
            None => (false, sort),
        };
        if !matches!(key, "id" | "username" | "status" | "last_login_date") {
            return self.bad_request(Api::Cc, &format!("cannot sort by {sort:?}"));
        }
        let w = self.world();
        let mut users: Vec<_> = w
            .cc_users
            .iter()
            .filter(|u| status.is_none_or(|s| u.status == s))
            .filter(|u| {
                search.as_deref().is_none_or(|s| {
                    u.username.to_lowercase().contains(s)
                        || u.email.to_lowercase().contains(s)
                        || u.first_name.to_lowercase().contains(s)
                        || u.last_name.to_lowercase().contains(s)
                })
            })
            .collect();
        match key {
            "username" => users.sort_by(|a, b| a.username.cmp(&b.username).then(a.id.cmp(&b.id))),
            "status" => users.sort_by(|a, b| a.status.cmp(&b.status).then(a.id.cmp(&b.id))),
            "last_login_date" => users.sort_by(|a, b| {
                a.last_login_date
                    .cmp(&b.last_login_date)
                    .then(a.id.cmp(&b.id))
            }),
            _ => users.sort_by_key(|u| u.id),
        }
        if desc {
            users.reverse();
        }
        let spec = self.faults_view();
        let mut total = users.len();
        let skip = if spec.repeat_pages { 0 } else { offset };
        let mut items: Vec<Value> = users
            .into_iter()
            .skip(skip)
            .take(limit)
            .map(|u| w.cc_user_json(u))
            .collect();
        if spec.endless {
            items = (offset..offset + limit).map(phantom_cc_user).collect();
            total = offset + 2 * limit;
        }
        if spec.lying_total {
            total = 1_000_000;
        }
        Reply::json(
            200,
            &json!({"users": items, "page": {"total": total, "limit": limit, "offset": offset}}),
        )
    }

    fn cc_user_me(&self) -> Reply {
        let w = self.world();
        match w.cc_user_by_id(w.me_cc_id) {
            Some(u) => Reply::json(200, &w.cc_user_json(u)),
            None => self.error(Api::Cc, 404, "not_found|user", "the key's user is gone"),
        }
    }

    fn cc_user(&self, id: &str) -> Reply {
        let Ok(n) = id.parse::<u64>() else {
            return self.error(
                Api::Cc,
                404,
                "not_found|route",
                &format!("no such route: /user/{id}"),
            );
        };
        let w = self.world();
        match w.cc_user_by_id(n) {
            Some(u) => Reply::json(200, &w.cc_user_json(u)),
            None => self.error(
                Api::Cc,
                404,
                "not_found|user",
                &format!("user {n} not found"),
            ),
        }
    }

    fn faults_view(&self) -> FaultSpec {
        self.control().spec.clone()
    }

    // ---- /_sim ---------------------------------------------------------------------------

    fn control_route(
        &self,
        method: &Method,
        path: &str,
        params: &Params,
        body: &[u8],
    ) -> (String, Reply) {
        let segs: Vec<&str> = path.trim_matches('/').split('/').skip(1).collect();
        let label = format!(
            "{method} /_sim/{}",
            match segs.as_slice() {
                ["users", _, action] => format!("users/{{id}}/{action}"),
                ["users", _] => "users/{id}".to_string(),
                s => s.join("/"),
            }
        );
        let reply = match (method.clone(), segs.as_slice()) {
            (Method::GET, ["truth"]) => {
                let events = params.get("events") != Some("0");
                Reply::json_text(200, self.truth_text(events))
            }
            (Method::GET, ["stats"]) => Reply::json(200, &self.stats_json()),
            (Method::GET, ["keys"]) => Reply::json(200, &self.keys_json()),
            (Method::GET, ["report-rows"]) => {
                Reply::json(200, &reports::report_rows_truth(&self.world()))
            }
            (Method::POST, ["freeze"]) => {
                self.freeze();
                Reply::json(200, &json!({"frozen": true}))
            }
            (Method::POST, ["faults"]) => {
                let text = String::from_utf8_lossy(body);
                // Accept the SPEC as plain text or as a JSON string.
                let spec_text = serde_json::from_str::<String>(&text).unwrap_or(text.to_string());
                match FaultSpec::parse(&spec_text) {
                    Ok(spec) => {
                        self.set_faults(spec);
                        Reply::json(200, &json!({"faults": spec_text.trim()}))
                    }
                    Err(e) => control_error(400, e),
                }
            }
            (Method::GET, ["clock"]) => Reply::json(
                200,
                &json!({"now": crate::clock::now().to_rfc3339(), "pinned": crate::clock::is_pinned()}),
            ),
            (Method::POST, ["clock"]) => {
                // `{"now": "RFC3339"}` (or the time as plain text) re-pins the world's clock.
                let text = String::from_utf8_lossy(body);
                let value = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("now").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| text.trim().to_string());
                match crate::clock::parse(&value) {
                    Ok(pin) => {
                        crate::clock::pin(pin);
                        Reply::json(
                            200,
                            &json!({"now": crate::clock::now().to_rfc3339(), "pinned": true}),
                        )
                    }
                    Err(e) => control_error(400, e),
                }
            }
            (Method::POST, ["events"]) => self.control_events(body),
            (Method::POST, ["users"]) => match parse_body::<CreateUser>(body) {
                Ok(req) => from_world(self.world_mut().create_user(&req)),
                Err(r) => r,
            },
            (Method::POST, ["users", id, action]) => self.control_mutation(id, action, body),
            (Method::DELETE, ["users", id]) => {
                let actor = if body.is_empty() {
                    Ok(ActorBody::default())
                } else {
                    parse_body::<ActorBody>(body)
                };
                match actor {
                    Ok(a) => from_world(self.world_mut().mutate_user(
                        id,
                        Mutation::Delete,
                        a.actor_id.as_deref().or(params.get("actor_id")),
                    )),
                    Err(r) => r,
                }
            }
            _ => control_error(404, format!("no control endpoint {method} {path}")),
        };
        (label, reply)
    }

    fn control_events(&self, body: &[u8]) -> Reply {
        let req = match parse_body::<EventsBody>(body) {
            Ok(r) => r,
            Err(r) => return r,
        };
        if req.count > MAX_CONTROL_EVENTS {
            return control_error(400, format!("count must be at most {MAX_CONTROL_EVENTS}"));
        }
        let day = match req.day.as_deref() {
            None => ms_to_day(crate::clock::now_ms()),
            Some(d) => match parse_day("day", d) {
                Ok(d) => d,
                Err(e) => return control_error(400, e),
            },
        };
        let mut w = self.world_mut();
        w.insert_on_day(req.count, day);
        Reply::json(
            200,
            &json!({"added": req.count, "day": day.to_string(), "total_events": w.events.len()}),
        )
    }

    fn control_mutation(&self, id: &str, action: &str, body: &[u8]) -> Reply {
        let (m, actor) = match action {
            "grant" | "revoke" => match parse_body::<RoleBody>(body) {
                Ok(b) if action == "grant" => (Mutation::Grant(b.role), b.actor_id),
                Ok(b) => (Mutation::Revoke(b.role), b.actor_id),
                Err(r) => return r,
            },
            "accept" => {
                let a = if body.is_empty() {
                    ActorBody::default()
                } else {
                    match parse_body::<ActorBody>(body) {
                        Ok(a) => a,
                        Err(r) => return r,
                    }
                };
                (Mutation::Accept, a.actor_id)
            }
            _ => return control_error(404, format!("unknown user action {action:?}")),
        };
        from_world(self.world_mut().mutate_user(id, m, actor.as_deref()))
    }
}

/// The stats label of an API route: ids are replaced by `{id}`.
/// `endless`: a made-up DigiCert ONE user with a new id (never stored).
fn phantom_one_user(n: usize, user_type: Option<&str>) -> Value {
    let t = user_type.unwrap_or("standard");
    json!({
        "id": format!("00000000-0000-4000-8000-{n:012x}"),
        "user_name": format!("phantom-{n}"),
        "email": format!("phantom-{n}@example.test"),
        "status": "ACTIVE",
        "user_type": t,
        "access_scope": "account",
        "created_at": "2020-01-01T00:00:00Z",
        "roles": [],
    })
}

/// `endless`: a made-up CertCentral user with a new id (never stored).
fn phantom_cc_user(n: usize) -> Value {
    json!({
        "id": 900_000_000u64 + n as u64,
        "username": format!("phantom-{n}"),
        "email": format!("phantom-{n}@example.test"),
        "status": "active",
        "access_roles": [],
        "type": "regular",
    })
}

fn route_label(api: Api, method: &Method, rest: &str) -> String {
    let prefix = match api {
        Api::One => "/account/api/v1",
        Api::Cc => "/services/v2",
    };
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let shape = match segs.as_slice() {
        ["user", "me"] => "/user/me".to_string(),
        ["user", "access_roles"] => "/user/access_roles".to_string(),
        ["user", _] => "/user/{id}".to_string(),
        [one @ ("audit-log" | "user" | "role" | "account" | "container")] => format!("/{one}"),
        _ => "/{unknown}".to_string(),
    };
    format!("{method} {prefix}{shape}")
}
