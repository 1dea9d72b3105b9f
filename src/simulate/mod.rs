//! The built-in DigiCert simulator: serves both APIs of `../shared/digicert-api.md` (DigiCert ONE
//! Account Manager under `/account/api/v1`, CertCentral under `/services/v2`) with deterministic
//! synthetic data and switchable fault injection, plus `/_sim/*` control endpoints that tests use to
//! read the ground truth and to change the world between two collections.
//!
//! It is deliberately independent of `crate::api`: it shares no wire types with the client, so a
//! quirk of one cannot hide a quirk of the other.
//!
//! # The world
//! Everything is drawn from one `ChaCha8Rng` seeded with [`SimOptions::seed`]; only the clock
//! differs between two runs (the events span the `days` days ending at the moment of
//! [`Simulator::new`]; [`Simulator::new_at`] pins that moment).
//! - **DigiCert ONE users** (`max(users, 2)`): user 0 is the service user that owns the API key
//!   (`GET /user/me`, role `AM_VIEW_ONLY`), user 1 is the standard user `admin`
//!   (`AM_ACCOUNT_ADMIN`) who performs role changes; the rest are ~80% standard, ~20% service
//!   users, mostly `ACTIVE`, some `PENDING` (invited), `LOCKED`, `DISABLED`, `EXPIRED`.
//! - **CertCentral users** (`max(users, 1)`): integer ids from 100001; user 0 owns the key
//!   (Administrator). Statuses are lowercase (`active`, `invited`, `pending`, `inactive`,
//!   `disabled`); `last_login_date` is absent for users who never signed in.
//! - **Audit events** (`events`): up to a quarter of them are the role history of the ONE users
//!   (`create` with `roles.added` for users created inside the window, `update` with
//!   `roles.added`/`roles.removed`), generated backwards from each user's current roles so that
//!   replaying them ends in what `GET /user` serves. The rest is routine: sign-ins (10% failed),
//!   sign-outs, API tokens generated/revoked, account and organization updates, client
//!   certificates, lock/unlock. About 30% carry no milliseconds, 3% a non-UTC offset (`+02:00`,
//!   `-05:00`, `+05:30`; still dated by their UTC day), 2% say `SUCCESS`, 10% have no
//!   `ip_address`, 5% an IPv6 one.
//! - **Hostile strings** (markup, spreadsheet formulas, quotes, CR LF, tab, U+202E, emoji, odd
//!   unicode) appear in some user names, first/last names, service-user names and descriptions,
//!   resource names, failed sign-in descriptions and `data`. They are ordinary, correctly escaped
//!   JSON strings.
//!
//! Events are kept in one vector sorted by `(UTC instant, id)`: that is the oldest-first order,
//! and its reverse is the newest-first order, so paging is deterministic even with equal
//! timestamps. See `world.rs` for the storage layout.
//!
//! # Faults
//! See [`FaultSpec`] for the SPEC syntax and [`FAULT_NAMES`] for the names.
//! - *Request faults* (`rate-limit`, `rate-limit-date`, `rate-limit-bare`, `server-error`, `slow`,
//!   `truncate`) are rolled per API request (never for `/_sim/*`) with a seeded rng, in that order;
//!   at most one applies. The first four replace the response; `slow` delays the real response by
//!   `slow-ms`; `truncate` sends the first half of a 200 body (with a matching Content-Length). A
//!   request that draws a fault never changes the world (no `drift`/`late` arrival).
//! - *Shape modes* (`bare`, `user-envelope`, `ignore-sort`, `alt-fields`, `role-objects`,
//!   `error-shapes`) change how responses look, from the next request on. `alt-fields` is the
//!   contract's alternatives of sibling services: `date` (half of those as epoch milliseconds),
//!   flat `user_name`/`user_id`, `client_ip`/`ipAddress`, uppercase `status`.
//! - `huge-body` (size `huge-body-mb=N`, default 64) pads every audit-log page to more than N MiB
//!   and streams it without a Content-Length: a client must stop reading at its cap.
//! - `malformed` is read once, by [`Simulator::new`]: about 1% of the events (at least one) are
//!   generated broken (no `id`, `"timestamp": "yesterday-ish"`, or no timestamp). They keep their
//!   place in the order and their UTC day for filtering, and `/_sim/truth` lists them apart.
//! - *Arrivals*: `drift=N` makes each of the first N audit-log requests with `offset > 0` insert,
//!   before it is served, an event just after the newest event of its date window (so every
//!   newest-first offset shifts by one); `late=N` makes each of the first N audit-log requests
//!   insert an event at a random time of an older day outside its window that already has events.
//! - `POST /_sim/freeze` stops arrivals and request faults; `POST /_sim/faults` replaces the spec,
//!   unfreezes and restarts the `drift`/`late` counts.
//!
//! # The Report Library
//! CertCentral's audit log as asynchronous reports under `/reports/v1` (contract 2.3): see
//! `http/reports.rs` (runs that take `report-polls` history polls, `report-failed` runs,
//! `report-zip-kb` and `report-split-rows` for ZIP and split downloads, a non-Administrator key
//! from `AUDITWARDEN_SIM_NON_ADMIN_KEY`); `GET /_sim/report-rows` is its truth.
//!
//! # HTTPS and mTLS
//! [`serve_tls`] serves the same routes over HTTPS with a server certificate from PEM files
//! ([`server_config`]); with a client CA every connection must present a certificate that CA
//! issued, and DigiCert ONE routes then accept it instead of `x-api-key` (contract 1.1). Beside
//! it, [`serve_control`] can serve `/_sim/*` alone over plain HTTP for test harnesses.
//!
//! # Control endpoints (no authentication, never faulted)
//! `GET /_sim/truth[?events=0]`, `GET /_sim/stats`, `GET /_sim/keys` (per API key: the nodes
//! that worked it and whether two ever had requests in flight at once), `POST /_sim/freeze`, `POST /_sim/faults`
//! (body: a SPEC), `POST /_sim/events` (`{"count": N, "day": "YYYY-MM-DD"?}`),
//! `POST /_sim/users` (create), `POST /_sim/users/{id}/grant|revoke` (`{"role", "actor_id"?}`),
//! `POST /_sim/users/{id}/accept`, `DELETE /_sim/users/{id}`. DigiCert ONE mutations also append
//! the matching audit event (grant/revoke: `update` with `roles.added`/`roles.removed`; create:
//! `create` with `roles.added`; accept: the user's first `login`; delete: `delete`).

mod faults;
mod http;
mod tls;
mod world;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use faults::{FaultSpec, RequestFault, DEFAULT_HUGE_BODY_MB, DEFAULT_SLOW_MS, FAULT_NAMES};
pub use http::{serve, serve_control};
pub use tls::{serve_tls, server_config};

use world::World;

/// Options for one simulated world. Same options (and seed) give the same world.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Number of audit events generated up front (well-formed plus malformed).
    pub events: usize,
    /// The events span this many days ending now (UTC).
    pub days: u32,
    /// Number of users per account kind.
    pub users: usize,
    pub faults: FaultSpec,
    /// The API key (x-api-key / X-DC-DEVKEY) the simulator accepts.
    pub api_key: String,
    /// Keys that belong to an expired service user (DigiCert ONE: 401 "expired").
    pub expired_api_keys: Vec<String>,
    /// CertCentral keys of a user without the Administrator role: `/services/v2` accepts them,
    /// the Report Library answers 403 `missing_permission` (contract 2.3).
    pub non_admin_api_keys: Vec<String>,
    /// More keys accepted as `api_key` is: several accounts, each with a key (and so a
    /// `rate-cap` bucket and a `/_sim/keys` record) of its own, on one world.
    pub extra_api_keys: Vec<String>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            events: 1000,
            days: 30,
            users: 50,
            faults: FaultSpec::default(),
            api_key: "sim-key".into(),
            expired_api_keys: Vec::new(),
            non_admin_api_keys: Vec::new(),
            extra_api_keys: Vec::new(),
        }
    }
}

/// Fault state shared by all requests.
struct Control {
    spec: FaultSpec,
    /// Set by `POST /_sim/freeze`: no request faults, no arrivals.
    frozen: bool,
    drift_done: u32,
    late_done: u32,
    /// Rolls request faults; seeded so a single-client run is reproducible.
    rng: ChaCha8Rng,
    /// Rotates error body shapes under `error-shapes`.
    error_seq: u64,
    /// `rate-cap`, per API key (DigiCert's limits are per key): tokens left and when they were
    /// counted. Holds at most one entry per accepted key (see `over_rate_cap`).
    buckets: BTreeMap<String, (f64, std::time::Instant)>,
}

/// Request counters served by `/_sim/stats`.
#[derive(Default)]
struct Stats {
    requests: u64,
    routes: BTreeMap<String, u64>,
    faults: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<u16, u64>,
    /// TCP connections accepted by the HTTPS listener (a test's proxy compares its tunnels).
    tls_connections: u64,
    /// API requests being answered now, and the most ever at once (how concurrent a client is).
    in_flight: u64,
    max_in_flight: u64,
    /// Keys with a request in flight now, and the most at once (how many accounts with keys of
    /// their own a client works at once).
    keys_in_flight: u64,
    max_keys_in_flight: u64,
    /// Per API key (labelled like the daemon's lease key, `key:` and 24 hex digits of its
    /// SHA-256, never the key): who worked it, and whether two nodes ever did at once.
    keys: BTreeMap<String, KeyRecord>,
}

/// Most keys and nodes `/_sim/keys` keeps records of (the headers are the client's to choose).
const MAX_KEY_RECORDS: usize = 10_000;
const MAX_NODES_PER_KEY: usize = 64;

/// One API key's requests, told apart by the node that sent them: the daemon names itself in its
/// `User-Agent` (`auditwarden/VERSION (node NAME)`); any other client counts as the node of its
/// whole `User-Agent`. One node may have several requests in flight on a key (concurrent
/// windows); two nodes with requests in flight on one key at once is an overlap.
#[derive(Default)]
struct KeyRecord {
    requests: u64,
    /// Requests in flight now, per node (entries at zero are removed).
    in_flight: BTreeMap<String, u64>,
    /// The most requests in flight on this key at once, all nodes together.
    max_in_flight: u64,
    nodes: std::collections::BTreeSet<String>,
    /// Requests that arrived while another node had one in flight on this key.
    overlaps: u64,
    /// The first such arrival: "NODE while OTHER".
    first_overlap: Option<String>,
}

/// A running simulated world. Share it as `Arc<Simulator>`.
pub struct Simulator {
    api_key: String,
    expired_api_keys: Vec<String>,
    non_admin_api_keys: Vec<String>,
    extra_api_keys: Vec<String>,
    /// The Report Library's runs (`http/reports.rs`).
    reports: Mutex<http::ReportLibrary>,
    /// std (not tokio) locks: every critical section is short and synchronous, none spans an
    /// `.await`. The world is read by every page and written only by arrivals and `/_sim` calls.
    world: RwLock<World>,
    control: Mutex<Control>,
    stats: Mutex<Stats>,
}

impl Simulator {
    /// Build the world; the events end at the current time.
    pub fn new(opts: SimOptions) -> Simulator {
        Simulator::new_at(opts, crate::clock::now())
    }

    /// Build the world with its events ending at `now` (for reproducible tests).
    pub fn new_at(opts: SimOptions, now: DateTime<Utc>) -> Simulator {
        let world = World::generate(
            opts.seed,
            opts.events,
            opts.days,
            opts.users,
            opts.faults.malformed,
            now,
        );
        Simulator {
            api_key: opts.api_key,
            expired_api_keys: opts.expired_api_keys,
            non_admin_api_keys: opts.non_admin_api_keys,
            extra_api_keys: opts.extra_api_keys,
            reports: Mutex::new(http::ReportLibrary::default()),
            world: RwLock::new(world),
            control: Mutex::new(Control {
                spec: opts.faults,
                frozen: false,
                drift_done: 0,
                late_done: 0,
                rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0xFA17_FA17_FA17_FA17),
                error_seq: 0,
                buckets: BTreeMap::new(),
            }),
            stats: Mutex::new(Stats::default()),
        }
    }

    fn world(&self) -> RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|e| e.into_inner())
    }

    fn world_mut(&self) -> RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|e| e.into_inner())
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reports(&self) -> MutexGuard<'_, http::ReportLibrary> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ground truth (what `GET /_sim/truth` serves): `{"account", "total_events",
    /// "events": [{id, timestamp, day, action, status, resource_type, resource_id, user_id}],
    /// "malformed": [{raw, day, reason}], "users": {"digicert_one": [..], "certcentral": [..]},
    /// "inserted": {drift, late, control}}`. `events` is oldest first and excludes the malformed
    /// ones; `raw` is the exact text served for a malformed event under the current faults.
    pub fn truth_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.truth_text(true)).unwrap_or(serde_json::Value::Null)
    }

    /// The ground truth as JSON text; without `events` when `include_events` is false.
    pub fn truth_text(&self, include_events: bool) -> String {
        let alt = self.control().spec.alt_fields;
        self.world().truth_text(include_events, alt)
    }

    /// Number of events that exist now (well-formed and malformed).
    pub fn event_count(&self) -> usize {
        self.world().events.len()
    }

    /// Add `count` well-formed routine events on the UTC `day` (not after now), like
    /// `POST /_sim/events`.
    pub fn add_events(&self, count: usize, day: chrono::NaiveDate) {
        self.world_mut().insert_on_day(count, day);
    }

    /// The DigiCert ONE account id every event carries.
    pub fn account_id(&self) -> String {
        self.world().account_id.clone()
    }

    /// The counters `GET /_sim/stats` serves.
    pub fn stats_json(&self) -> serde_json::Value {
        let s = self.stats();
        let statuses: BTreeMap<String, u64> = s
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let c = self.control();
        let w = self.world();
        serde_json::json!({
            "requests": s.requests,
            "routes": s.routes,
            "faults": s.faults,
            "statuses": statuses,
            "tls_connections": s.tls_connections,
            "max_in_flight": s.max_in_flight,
            "max_keys_in_flight": s.max_keys_in_flight,
            "frozen": c.frozen,
            "arrivals": {
                "drift": w.inserted_drift,
                "late": w.inserted_late,
                "control": w.inserted_control,
                "busy": w.inserted_arrivals,
            },
        })
    }

    /// What `GET /_sim/keys` serves: per key label, `{requests, max_in_flight, nodes,
    /// overlaps, first_overlap}`; `overlaps` is 0 when no two nodes ever worked the key at once.
    pub fn keys_json(&self) -> serde_json::Value {
        let s = self.stats();
        let keys: serde_json::Map<String, serde_json::Value> = s
            .keys
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    serde_json::json!({
                        "requests": r.requests,
                        "max_in_flight": r.max_in_flight,
                        "nodes": r.nodes,
                        "overlaps": r.overlaps,
                        "first_overlap": r.first_overlap,
                    }),
                )
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    fn count_tls_connection(&self) {
        self.stats().tls_connections += 1;
    }

    /// Stop arrivals and request faults from now on (`POST /_sim/freeze`).
    pub fn freeze(&self) {
        self.control().frozen = true;
    }

    /// Replace the fault spec (`POST /_sim/faults`): unfreezes and restarts the drift/late counts.
    /// `malformed` has no effect here (it is read only when the world is built).
    pub fn set_faults(&self, spec: FaultSpec) {
        let mut c = self.control();
        c.spec = spec;
        c.frozen = false;
        c.drift_done = 0;
        c.late_done = 0;
    }

    /// The fault spec in force.
    pub fn faults(&self) -> FaultSpec {
        self.control().spec.clone()
    }
}
