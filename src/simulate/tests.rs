//! Tests of the simulator over real HTTP on 127.0.0.1: each starts a throwaway server through
//! `spawn` and talks to it with reqwest.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::*;

const KEY: &str = "test-key";
const EXPIRED: &str = "expired-key";

struct TestSim {
    base: String,
    sim: Arc<Simulator>,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn opts(events: usize, faults: &str) -> SimOptions {
    SimOptions {
        seed: 7,
        events,
        days: 10,
        users: 30,
        faults: FaultSpec::parse(faults).expect("valid spec"),
        api_key: KEY.into(),
        expired_api_keys: vec![EXPIRED.into()],
        non_admin_api_keys: Vec::new(),
        extra_api_keys: Vec::new(),
    }
}

async fn spawn(opts: SimOptions) -> TestSim {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sim = Arc::new(Simulator::new(opts));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, sim.clone(), async move {
        let _ = rx.await;
    }));
    TestSim {
        base: format!("http://{addr}"),
        sim,
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        _stop: tx,
    }
}

impl TestSim {
    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.expect("body");
        Resp {
            status,
            headers,
            body,
        }
    }

    /// GET a DigiCert ONE path (under /account/api/v1) with the valid key.
    async fn one(&self, path: &str) -> Resp {
        let url = format!("{}/account/api/v1{path}", self.base);
        self.send(self.client.get(url).header("x-api-key", KEY))
            .await
    }

    /// GET a CertCentral path (under /services/v2) with the valid key.
    async fn cc(&self, path: &str) -> Resp {
        let url = format!("{}/services/v2{path}", self.base);
        self.send(self.client.get(url).header("X-DC-DEVKEY", KEY))
            .await
    }

    async fn post(&self, path: &str, body: &str) -> Resp {
        let url = format!("{}{path}", self.base);
        self.send(self.client.post(url).body(body.to_string()))
            .await
    }

    async fn truth(&self) -> Value {
        let r = self
            .send(self.client.get(format!("{}/_sim/truth", self.base)))
            .await;
        assert_eq!(r.status, 200);
        r.json()
    }

    /// Every event of a query, page by page (envelope mode), as served.
    async fn all_events(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let r = self
                .one(&format!(
                    "/audit-log?{query}&offset={}&limit={limit}",
                    out.len()
                ))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            let items = v["items"].as_array().expect("items").clone();
            let total = v["total"].as_u64().expect("total") as usize;
            let n = items.len();
            out.extend(items);
            if n < limit || out.len() >= total {
                assert_eq!(out.len(), total, "pages add up to total");
                return out;
            }
        }
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or("").to_string())
        .collect()
}

fn truth_ids(t: &Value) -> BTreeSet<String> {
    t["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

fn ts(e: &Value) -> DateTime<chrono::FixedOffset> {
    let s = e["timestamp"].as_str().or(e["date"].as_str()).expect("ts");
    DateTime::parse_from_rfc3339(s).expect("rfc3339")
}

fn error_code(v: &Value) -> String {
    let e = if v["errors"].is_array() {
        &v["errors"][0]
    } else if v["errors"].is_object() {
        &v["errors"]
    } else if v["error"].is_object() {
        &v["error"]
    } else {
        v
    };
    e["code"].as_str().unwrap_or("").to_string()
}

/// Paging through the envelope yields every event exactly once, and exactly the truth.
#[tokio::test]
async fn paging_totals_add_up_and_match_truth() {
    let s = spawn(opts(437, "")).await;
    let events = s.all_events("sort=-timestamp", 100).await;
    let got: BTreeSet<String> = ids(&events).into_iter().collect();
    assert_eq!(got.len(), 437, "ids are unique");
    assert_eq!(got, truth_ids(&s.truth().await));
    // A page past the end is empty but still carries the total.
    let v = s.one("/audit-log?offset=5000&limit=10").await.json();
    assert_eq!(v["total"], 437);
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["limit"], 10);
    assert_eq!(v["offset"], 5000);
    // Default limit is 50.
    let v = s.one("/audit-log").await.json();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(50));
}

/// `from`/`to` are inclusive UTC days, whatever offset a timestamp is served with.
#[tokio::test]
async fn from_and_to_are_inclusive_utc_days() {
    let s = spawn(opts(2000, "")).await;
    let t = s.truth().await;
    let mut per_day: HashMap<String, usize> = HashMap::new();
    for e in t["events"].as_array().expect("events") {
        *per_day
            .entry(e["day"].as_str().expect("day").to_string())
            .or_default() += 1;
    }
    let mut days: Vec<&String> = per_day.keys().collect();
    days.sort();
    let (d1, d2) = (days[3].clone(), days[4].clone());
    let one_day = s.all_events(&format!("from={d1}&to={d1}"), 1000).await;
    assert_eq!(one_day.len(), per_day[&d1]);
    let want = NaiveDate::parse_from_str(&d1, "%Y-%m-%d").expect("day");
    for e in &one_day {
        assert_eq!(ts(e).naive_utc().date(), want, "{e}");
    }
    let two = s.all_events(&format!("from={d1}&to={d2}"), 1000).await;
    assert_eq!(two.len(), per_day[&d1] + per_day[&d2]);
    let open_end = s.all_events(&format!("from={d2}"), 1000).await;
    let later: usize = per_day
        .iter()
        .filter(|(d, _)| **d >= d2)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(open_end.len(), later);
    // Some events are served with a non-UTC offset.
    assert!(t["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| !e["timestamp"].as_str().unwrap_or("").ends_with("+00:00")));
}

/// `-timestamp` (default) is newest first, `timestamp` oldest first, with a stable tie order.
#[tokio::test]
async fn sort_orders() {
    let s = spawn(opts(300, "")).await;
    let newest = s.all_events("", 1000).await;
    let oldest = s.all_events("sort=timestamp", 1000).await;
    for w in newest.windows(2) {
        assert!(ts(&w[0]) >= ts(&w[1]));
    }
    let mut rev = ids(&oldest);
    rev.reverse();
    assert_eq!(rev, ids(&newest));
    // ignore-sort: always newest first.
    s.post("/_sim/faults", "ignore-sort").await;
    let ignored = s.all_events("sort=timestamp", 1000).await;
    assert_eq!(ids(&ignored), ids(&newest));
}

/// Bad parameters are 400 invalid_request.
#[tokio::test]
async fn bad_parameters_are_400() {
    let s = spawn(opts(10, "")).await;
    for q in [
        "limit=1001",
        "limit=0",
        "limit=ten",
        "offset=-1",
        "from=2024-13-01",
        "from=yesterday",
        "to=2024-1-5",
        "from=2024-05-02&to=2024-05-01",
        "sort=name",
    ] {
        let r = s.one(&format!("/audit-log?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(error_code(&r.json()), "invalid_request", "{q}");
    }
    assert_eq!(s.one("/audit-log?limit=1000").await.status, 200);
    assert_eq!(s.one("/user?limit=5000").await.status, 400);
    assert_eq!(s.cc("/user?limit=abc").await.status, 400);
}

/// `bare`: the audit log and user lists are bare arrays; `user-envelope` wraps ONE users.
#[tokio::test]
async fn bare_and_user_envelope_modes() {
    let s = spawn(opts(120, "")).await;
    assert!(
        s.one("/user").await.json().is_array(),
        "users are bare by default"
    );
    s.post("/_sim/faults", "bare").await;
    let v = s.one("/audit-log?limit=100").await.json();
    assert_eq!(v.as_array().map(Vec::len), Some(100));
    s.post("/_sim/faults", "user-envelope").await;
    let v = s.one("/user?limit=7").await.json();
    assert_eq!(v["total"], 30);
    assert_eq!(v["items"].as_array().map(Vec::len), Some(7));
    s.post("/_sim/faults", "user-envelope,bare").await;
    assert!(s.one("/user").await.json().is_array());
}

/// The three kinds of 429.
#[tokio::test]
async fn rate_limit_faults() {
    let s = spawn(opts(10, "rate-limit")).await;
    let r = s.one("/audit-log").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["retry-after"], "1");
    assert!(!error_code(&r.json()).is_empty());

    s.post("/_sim/faults", "rate-limit-date").await;
    let r = s.cc("/user").await;
    assert_eq!(r.status, 429);
    let at = r.headers["retry-after"].to_str().expect("ascii");
    let at = httpdate::parse_http_date(at).expect("http date");
    let ahead = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(ahead <= Duration::from_secs(3), "{ahead:?}");

    s.post("/_sim/faults", "rate-limit-bare").await;
    let r = s.cc("/user").await;
    assert_eq!(r.status, 429);
    assert!(r.headers.get("retry-after").is_none());
    assert_eq!(error_code(&r.json()), "request_limit_exceeded");

    // Never for /_sim, and freeze stops them.
    assert_eq!(s.truth().await["total_events"], 10);
    s.post("/_sim/freeze", "").await;
    assert_eq!(s.one("/audit-log").await.status, 200);
    let stats = s
        .send(s.client.get(format!("{}/_sim/stats", s.base)))
        .await
        .json();
    assert_eq!(stats["faults"]["rate-limit"], 1);
    assert_eq!(stats["faults"]["rate-limit-date"], 1);
    assert_eq!(stats["faults"]["rate-limit-bare"], 1);
    assert_eq!(stats["statuses"]["429"], 3);
}

/// `server-error` gives 500, 502 and 503 (some 503s with Retry-After).
#[tokio::test]
async fn server_error_fault() {
    let s = spawn(opts(10, "server-error")).await;
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let r = s.one("/account").await;
        seen.insert(r.status);
        if r.status == 503 {
            if let Some(v) = r.headers.get("retry-after") {
                assert_eq!(v, "1");
            }
        }
    }
    assert_eq!(seen, BTreeSet::from([500, 502, 503]));
}

/// `slow` delays a correct response by `slow-ms`.
#[tokio::test]
async fn slow_fault() {
    let s = spawn(opts(10, "slow,slow-ms=300")).await;
    let t0 = Instant::now();
    let r = s.one("/audit-log").await;
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["total"], 10);
}

/// `truncate` sends a 200 with half the body and a matching Content-Length.
#[tokio::test]
async fn truncate_fault() {
    let s = spawn(opts(50, "truncate")).await;
    let url = format!("{}/account/api/v1/audit-log", s.base);
    let r = s
        .client
        .get(&url)
        .header("x-api-key", KEY)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["content-length"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let body = r.bytes().await.expect("body");
    assert_eq!(body.len(), len);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    s.post("/_sim/freeze", "").await;
    let full = s.one("/audit-log").await.body;
    assert_eq!(body.len(), full.len() / 2);
    assert_eq!(&body[..], &full.as_bytes()[..body.len()]);
}

/// `error-shapes` rotates the documented error bodies, for both APIs.
#[tokio::test]
async fn error_shapes_rotate() {
    let s = spawn(opts(10, "error-shapes")).await;
    let mut shapes = BTreeSet::new();
    for _ in 0..3 {
        let v = s.one("/nope").await.json();
        assert_eq!(error_code(&v), "resource_not_found");
        shapes.insert(if v["errors"].is_array() {
            "errors"
        } else if v["error"].is_object() {
            "error"
        } else {
            "bare"
        });
    }
    assert_eq!(shapes.len(), 3);
    let mut cc_shapes = BTreeSet::new();
    for _ in 0..3 {
        let v = s.cc("/nope").await.json();
        assert_eq!(error_code(&v), "not_found|route");
        cc_shapes.insert(v["errors"].is_array());
    }
    assert_eq!(cc_shapes.len(), 2, "array and single object");
}

/// `alt-fields` serves ~30% of events with the fields of sibling services (`date`, half of them
/// epoch milliseconds; flat user; `client_ip`/`ipAddress`; uppercase status); `role-objects`
/// serves roles as objects.
#[tokio::test]
async fn alt_fields_and_role_objects() {
    let s = spawn(opts(500, "alt-fields,role-objects")).await;
    let events = s.all_events("", 1000).await;
    let alt = events.iter().filter(|e| e.get("date").is_some()).count();
    assert!((100..=200).contains(&alt), "{alt} of 500");
    let (mut epoch, mut client_ip, mut camel) = (0, 0, 0);
    for e in &events {
        let is_alt = e.get("date").is_some();
        assert_eq!(is_alt, e.get("timestamp").is_none());
        assert_eq!(
            is_alt,
            e.get("user_name").is_some() && e.get("user_id").is_some()
        );
        assert_eq!(is_alt, e.get("user").is_none());
        if is_alt {
            epoch += usize::from(e["date"].is_i64());
            client_ip += usize::from(e.get("client_ip").is_some());
            camel += usize::from(e.get("ipAddress").is_some());
            assert!(e.get("ip_address").is_none(), "{e}");
            let st = e["status"].as_str().expect("status");
            assert_eq!(st, st.to_uppercase(), "{e}");
        }
    }
    assert!(epoch > alt / 4 && epoch < alt * 3 / 4, "{epoch} of {alt}");
    assert!(
        client_ip > alt / 4 && camel > alt / 4,
        "{client_ip} {camel} of {alt}"
    );
    let users = s.one("/user").await.json();
    let role = &users[0]["roles"][0];
    assert!(role["code"].is_string() && role["id"].is_string() && role["name"].is_string());
}

/// `huge-body`: audit-log pages are padded past the size asked for and streamed without a
/// Content-Length; the JSON is still the page (envelope: a `padding` field; bare: whitespace).
#[tokio::test]
async fn huge_body_pads_pages() {
    let s = spawn(opts(50, "huge-body,huge-body-mb=2")).await;
    let r = s.one("/audit-log?limit=10").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("content-length").is_none(), "{:?}", r.headers);
    assert!(r.body.len() > 2 << 20, "{} bytes", r.body.len());
    let v = r.json();
    assert_eq!(v["items"].as_array().map(Vec::len), Some(10));
    assert_eq!(v["padding"].as_str().map(str::len), Some(2 << 20));
    s.post("/_sim/faults", "huge-body,huge-body-mb=1,bare")
        .await;
    let r = s.one("/audit-log?limit=10").await;
    assert!(r.body.len() > 1 << 20, "{} bytes", r.body.len());
    assert_eq!(r.json().as_array().map(Vec::len), Some(10));
    // Other routes are not padded.
    assert!(s.one("/user").await.body.len() < 1 << 20);
}

/// `malformed`: a few events are broken, served in place and listed in the truth with their raw text.
#[tokio::test]
async fn malformed_events() {
    let s = spawn(opts(400, "malformed")).await;
    let t = s.truth().await;
    let bad = t["malformed"].as_array().expect("malformed");
    assert_eq!(bad.len(), 4);
    assert_eq!(t["events"].as_array().map(Vec::len), Some(396));
    let body = s.one("/audit-log?limit=1000").await.body;
    for m in bad {
        let raw = m["raw"].as_str().expect("raw");
        assert!(body.contains(raw), "served verbatim: {raw}");
        let day = m["day"].as_str().expect("day");
        let v = s
            .one(&format!("/audit-log?from={day}&to={day}&limit=1000"))
            .await
            .body;
        assert!(v.contains(raw), "filtered by its UTC day");
    }
    let reasons: BTreeSet<&str> = bad.iter().filter_map(|m| m["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
}

/// `drift`: a request with offset > 0 first inserts a newest event, shifting every offset by one.
#[tokio::test]
async fn drift_shifts_offsets() {
    let s = spawn(opts(100, "drift=1")).await;
    let p1 = s.one("/audit-log?limit=10").await.json();
    assert_eq!(p1["total"], 100);
    let p2 = s.one("/audit-log?offset=10&limit=10").await.json();
    assert_eq!(p2["total"], 101);
    assert_eq!(p2["items"][0]["id"], p1["items"][9]["id"], "shifted by one");
    let p3 = s.one("/audit-log?offset=20&limit=10").await.json();
    assert_eq!(p3["total"], 101, "only the first N requests drift");
    let fresh = s.one("/audit-log?limit=1").await.json();
    assert!(ts(&fresh["items"][0]) >= ts(&p1["items"][0]));
    let t = s.truth().await;
    assert!(truth_ids(&t).contains(fresh["items"][0]["id"].as_str().expect("id")));
    assert_eq!(t["inserted"]["drift"], 1);
}

/// `late`: a request first inserts an event in an older day outside its window.
#[tokio::test]
async fn late_arrivals_land_outside_the_window() {
    let s = spawn(opts(200, "late=2")).await;
    let before = truth_ids(&s.truth().await);
    let today = chrono::Utc::now().date_naive().to_string();
    let r = s.one(&format!("/audit-log?from={today}&to={today}")).await;
    assert_eq!(r.status, 200);
    let t = s.truth().await;
    let new: Vec<&Value> = t["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| !before.contains(e["id"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0]["day"], today.as_str());
    let day = new[0]["day"].as_str().expect("day");
    assert!(
        t["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["day"] == day)
            .count()
            > 1
    );
}

/// Faulted requests never change the world.
#[tokio::test]
async fn faulted_requests_do_not_drift() {
    let s = spawn(opts(50, "drift=5,late=5,rate-limit")).await;
    for _ in 0..5 {
        assert_eq!(s.one("/audit-log?offset=5").await.status, 429);
    }
    assert_eq!(s.truth().await["total_events"], 50);
}

/// Authentication: DigiCert ONE 401 (wrong, missing, expired), CertCentral 403.
#[tokio::test]
async fn authentication() {
    let s = spawn(opts(10, "")).await;
    let url = format!("{}/account/api/v1/account", s.base);
    let r = s.send(s.client.get(&url)).await;
    assert_eq!(r.status, 401);
    assert_eq!(error_code(&r.json()), "invalid_api_key");
    let r = s.send(s.client.get(&url).header("x-api-key", "nope")).await;
    assert_eq!(r.status, 401);
    let r = s
        .send(s.client.get(&url).header("x-api-key", EXPIRED))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("expired"));
    let r = s.send(s.client.get(&url).header("X-API-KEY", KEY)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["active"], true);
    let cc = format!("{}/services/v2/user", s.base);
    let r = s
        .send(s.client.get(&cc).header("x-dc-devkey", "nope"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        error_code(&r.json()),
        "access_denied|access_denied_invalid_key"
    );
    // The ONE header does not open CertCentral.
    let r = s.send(s.client.get(&cc).header("x-api-key", KEY)).await;
    assert_eq!(r.status, 403);
}

/// DigiCert ONE user endpoints and roles.
#[tokio::test]
async fn digicert_one_users() {
    let s = spawn(opts(10, "")).await;
    let all = s.one("/user?limit=1000").await.json();
    let all = all.as_array().expect("array");
    assert_eq!(all.len(), 30);
    let page = s.one("/user?offset=25").await.json();
    assert_eq!(page.as_array().map(Vec::len), Some(5));
    let service = s.one("/user?user_type=service").await.json();
    assert!(service
        .as_array()
        .expect("array")
        .iter()
        .all(|u| u["user_type"] == "service" && u["friendly_name"].is_string()));
    let me = s.one("/user/me").await.json();
    assert_eq!(me["user_type"], "service");
    let id = all[5]["id"].as_str().expect("id");
    assert_eq!(s.one(&format!("/user/{id}")).await.json()["id"], id);
    let r = s.one("/user/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r.json()), "resource_not_found");
    let statuses: BTreeSet<&str> = all.iter().filter_map(|u| u["status"].as_str()).collect();
    assert!(
        statuses.contains("ACTIVE") && statuses.contains("PENDING"),
        "{statuses:?}"
    );
    let text = serde_json::to_string(all).expect("json");
    assert!(text.contains("<script>alert(1)</script>") || text.contains("\\r\\n"));
    let roles = s.one("/role?application_code=account_manager").await.json();
    assert!(roles
        .as_array()
        .expect("array")
        .iter()
        .all(|r| r["application_code"] == "account_manager"));
    assert!(roles.as_array().expect("array").len() >= 3);
}

/// CertCentral user endpoints.
#[tokio::test]
async fn certcentral_users() {
    let s = spawn(opts(10, "")).await;
    let v = s.cc("/user?limit=20&offset=0").await.json();
    assert_eq!(v["page"]["total"], 30);
    assert_eq!(v["page"]["limit"], 20);
    assert_eq!(v["users"].as_array().map(Vec::len), Some(20));
    let v2 = s.cc("/user?limit=20&offset=20").await.json();
    assert_eq!(v2["users"].as_array().map(Vec::len), Some(10));
    for u in v["users"].as_array().expect("users") {
        assert!(u["id"].is_u64());
        assert!(u["access_roles"][0]["id"].is_u64());
        if u["status"] == "invited" {
            assert!(u.get("last_login_date").is_none());
        }
    }
    let invited = s.cc("/user?filters[status]=invited").await.json();
    assert!(invited["page"]["total"].as_u64() > Some(0));
    assert_eq!(
        s.cc("/user/me").await.json()["access_roles"][0]["name"],
        "Administrator"
    );
    assert_eq!(s.cc("/user/100003").await.json()["id"], 100003);
    let r = s.cc("/user/9").await;
    assert_eq!(r.status, 404);
    let r = s.cc("/bogus").await;
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r.json()), "not_found|route");
    let roles = s.cc("/user/access_roles").await.json();
    assert_eq!(
        roles["access_roles"][0],
        json!({"id": 1, "name": "Administrator"})
    );
    assert!(s.cc("/container").await.json()["containers"].is_array());
}

/// Role history in the audit log replays to the roles `GET /user` serves.
#[tokio::test]
async fn role_history_matches_users() {
    let s = spawn(opts(3000, "")).await;
    let events = s
        .all_events("sort=timestamp&resource_types=user,service_user", 1000)
        .await;
    let mut replayed: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut checked = 0;
    for e in &events {
        let id = e["resource_id"].as_str().expect("rid").to_string();
        let action = e["action"].as_str().expect("action");
        if action != "create" && !(action == "update" && e["data"].is_string()) {
            continue;
        }
        let data: Value = serde_json::from_str(e["data"].as_str().expect("data")).expect("json");
        let set = replayed.entry(id.clone()).or_default();
        if action == "create" {
            set.clear();
        }
        for r in data["roles"]["added"].as_array().expect("added") {
            set.insert(r.as_str().expect("role").to_string());
        }
        for r in data["roles"]["removed"].as_array().expect("removed") {
            set.remove(r.as_str().expect("role"));
        }
    }
    for e in events.iter().filter(|e| e["action"] == "create") {
        let id = e["resource_id"].as_str().expect("rid");
        let u = s.one(&format!("/user/{id}")).await.json();
        let roles: BTreeSet<String> = u["roles"]
            .as_array()
            .expect("roles")
            .iter()
            .map(|r| r.as_str().expect("code").to_string())
            .collect();
        assert_eq!(roles, replayed[id], "user {id}");
        checked += 1;
    }
    assert!(checked > 0);
}

/// User mutations change what is served and append the matching DigiCert ONE events.
#[tokio::test]
async fn user_mutations() {
    let s = spawn(opts(20, "")).await;
    let users = s.one("/user?limit=1000").await.json();
    let users = users.as_array().expect("array");
    let target = users
        .iter()
        .find(|u| u["status"] == "PENDING")
        .expect("a pending user");
    let id = target["id"].as_str().expect("id");

    let r = s
        .post(
            &format!("/_sim/users/{id}/grant"),
            r#"{"role":"AM_USER_MANAGER"}"#,
        )
        .await;
    let r = if r.status == 409 {
        s.post(&format!("/_sim/users/{id}/grant"), r#"{"role":"CM_USER"}"#)
            .await
    } else {
        r
    };
    assert_eq!(r.status, 200, "{}", r.body);
    let granted = r.json()["roles"].clone();
    assert_eq!(s.one(&format!("/user/{id}")).await.json()["roles"], granted);
    let ev = s
        .one(&format!(
            "/audit-log?resource_id={id}&action=update&limit=1"
        ))
        .await
        .json();
    let data: Value =
        serde_json::from_str(ev["items"][0]["data"].as_str().expect("data")).expect("json");
    assert_eq!(data["roles"]["removed"], json!([]));
    let added = data["roles"]["added"][0].as_str().expect("added");

    let r = s
        .post(
            &format!("/_sim/users/{id}/revoke"),
            &json!({"role": added}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.post(&format!("/_sim/users/{id}/accept"), "").await;
    assert_eq!(r.json()["status"], "ACTIVE");
    let logins = s
        .one(&format!("/audit-log?resource_id={id}&action=login"))
        .await
        .json();
    assert_eq!(logins["total"], 1);

    let r = s
        .send(s.client.delete(format!("{}/_sim/users/{id}", s.base)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.one(&format!("/user/{id}")).await.status, 404);

    let r = s
        .post(
            "/_sim/users",
            r#"{"kind":"digicert-one","user_name":"new.person","status":"PENDING","roles":["AM_VIEW_ONLY"]}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let new_id = r.json()["id"].as_str().expect("id").to_string();
    let created = s
        .one(&format!("/audit-log?resource_id={new_id}&action=create"))
        .await
        .json();
    assert_eq!(created["total"], 1);

    // CertCentral: create invited, accept, grant by name.
    let r = s
        .post(
            "/_sim/users",
            r#"{"kind":"certcentral","user_name":"cc.new","status":"invited","roles":["Limited User"]}"#,
        )
        .await;
    let cc_id = r.json()["id"].as_u64().expect("id");
    assert!(s
        .cc(&format!("/user/{cc_id}"))
        .await
        .json()
        .get("last_login_date")
        .is_none());
    let r = s.post(&format!("/_sim/users/{cc_id}/accept"), "").await;
    assert_eq!(r.json()["status"], "active");
    let r = s
        .post(
            &format!("/_sim/users/{cc_id}/grant"),
            r#"{"role":"Administrator"}"#,
        )
        .await;
    assert_eq!(r.json()["access_roles"].as_array().map(Vec::len), Some(2));
    assert!(s.cc(&format!("/user/{cc_id}")).await.json()["last_login_date"].is_string());
    assert_eq!(s.post("/_sim/users/12/accept", "").await.status, 404);

    // POST /_sim/events adds well-formed events on a day.
    let before = s.sim.event_count();
    let r = s
        .post("/_sim/events", r#"{"count":5,"day":"2020-02-29"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.sim.event_count(), before + 5);
    let v = s
        .one("/audit-log?from=2020-02-29&to=2020-02-29")
        .await
        .json();
    assert_eq!(v["total"], 5);
}

/// Same seed and clock give the same world.
#[test]
fn generation_is_deterministic() {
    let now = chrono::Utc::now();
    let a = Simulator::new_at(opts(500, "malformed"), now).truth_text(true);
    let b = Simulator::new_at(opts(500, "malformed"), now).truth_text(true);
    assert_eq!(a, b);
    let c = Simulator::new_at(
        SimOptions {
            seed: 8,
            ..opts(500, "")
        },
        now,
    )
    .truth_text(true);
    assert_ne!(a, c);
}

/// The fault SPEC parser accepts the documented names and rejects anything else by name.
#[test]
fn fault_spec_parse() {
    let f = FaultSpec::parse("rate-limit=0.5,slow,slow-ms=100,drift=3,bare").expect("ok");
    assert_eq!(f.rate_limit, 0.5);
    assert_eq!(f.slow, 1.0);
    assert_eq!(f.slow_ms, 100);
    assert_eq!(f.drift, 3);
    assert!(f.bare);
    assert_eq!(FaultSpec::parse("").expect("ok"), FaultSpec::default());
    let all = FaultSpec::parse("all,rate-limit=0").expect("ok");
    assert!(all.malformed && all.alt_fields && all.drift > 0 && all.rate_limit == 0.0);
    for bad in [
        "nope",
        "rate-limit=2",
        "rate-limit=x",
        "drift=-1",
        "bare=maybe",
        "slow-ms",
    ] {
        let e = FaultSpec::parse(bad).expect_err(bad);
        let name = bad.split('=').next().unwrap_or(bad);
        assert!(e.contains(name), "{e}");
    }
}

/// `serve` returns soon after the shutdown future completes, even with an idle keep-alive client.
#[tokio::test]
async fn shutdown_with_idle_connections() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sim = Arc::new(Simulator::new(opts(10, "")));
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, sim, async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let r = client
        .get(format!("http://{addr}/_sim/stats"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let _ = tx.send(());
    let done = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    drop(client);
}

/// `/_sim/keys` records per key who worked it: one node's concurrent requests are no overlap,
/// two nodes on different keys neither, two nodes on one key at once are; the key never shows.
#[tokio::test]
async fn key_records_tell_nodes_apart_and_catch_an_overlap() {
    const OTHER: &str = "second-account-key";
    let sim = spawn(SimOptions {
        extra_api_keys: vec![OTHER.into()],
        ..opts(50, "slow=1,slow-ms=300")
    })
    .await;
    let get = |key: &'static str, node: &'static str| {
        let url = format!("{}/account/api/v1/audit-log?limit=5", sim.base);
        let req = sim
            .client
            .get(url)
            .header("x-api-key", key)
            .header("user-agent", format!("auditwarden/0 (node {node})"));
        sim.send(req)
    };
    // One node, two requests at once on one key; two nodes at once on two keys.
    let (a, b, c) = tokio::join!(get(KEY, "a"), get(KEY, "a"), get(OTHER, "b"));
    assert!([a.status, b.status, c.status].iter().all(|s| *s == 200));
    let keys = sim
        .send(sim.client.get(format!("{}/_sim/keys", sim.base)))
        .await;
    assert!(!keys.body.contains(KEY) && !keys.body.contains(OTHER));
    let v = keys.json();
    let records = v["keys"].as_object().expect("keys");
    assert_eq!(records.len(), 2, "{v}");
    assert!(records.values().all(|r| r["overlaps"] == 0), "{v}");
    assert!(records.values().any(|r| r["max_in_flight"] == 2), "{v}");
    // Two nodes on one key at once.
    let (a, b) = tokio::join!(get(OTHER, "a"), get(OTHER, "b"));
    assert_eq!((a.status, b.status), (200, 200));
    let v = sim
        .send(sim.client.get(format!("{}/_sim/keys", sim.base)))
        .await
        .json();
    let overlapped: Vec<&Value> = v["keys"]
        .as_object()
        .expect("keys")
        .values()
        .filter(|r| r["overlaps"].as_u64() > Some(0))
        .collect();
    assert_eq!(overlapped.len(), 1, "{v}");
    assert_eq!(overlapped[0]["nodes"], json!(["a", "b"]), "{v}");
}
