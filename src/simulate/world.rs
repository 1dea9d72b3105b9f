//! The synthetic world: users of both APIs and the DigiCert ONE audit log.
//!
//! Events are kept compact (48 bytes each: times, a UUID, indices into shared tables) in one `Vec`
//! sorted by `(timestamp, id)`, and serialized to JSON only when a page is served. That keeps a
//! million events well under 100 MB, makes a date window a binary search, and lets the `alt-fields`
//! fault change the served shape at run time. Actors and acted-on objects are `Party` rows (id +
//! display name), so a user's name is stored once however many events mention it.

use std::collections::HashSet;
use std::fmt::Write as _;

use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, Offset as _, SecondsFormat, Timelike, Utc,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

pub(crate) const MS_PER_DAY: i64 = 86_400_000;
const NO_DATA: u32 = u32::MAX;

/// Strings that break naive HTML, CSV, shell or log handling. All are valid JSON once escaped.
pub(crate) const HOSTILE: &[&str] = &[
    "<script>alert(1)</script>",
    "=HYPERLINK(\"http://evil\",\"x\")",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1)",
    "O'Brien \"the boss\"",
    "two\r\nlines",
    "tab\there",
    "\u{202E}gnp.exe",
    "rocket 🚀 admin 👩\u{200D}💻",
    "Zoë Ünïcødé 名前 ﷽ \u{200B}\u{FEFF}x",
];

/// A DigiCert ONE role: `GET /role` serves these.
pub(crate) struct RoleDef {
    pub id: &'static str,
    pub code: &'static str,
    pub name: &'static str,
    pub app: &'static str,
    pub permissions: &'static [&'static str],
}

pub(crate) const ONE_ROLES: &[RoleDef] = &[
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e01",
        code: "AM_ACCOUNT_ADMIN",
        name: "Account admin",
        app: "account_manager",
        permissions: &[
            "VIEW_AM_USER",
            "MANAGE_AM_USER",
            "VIEW_AM_AUDIT_LOG",
            "MANAGE_AM_ACCOUNT",
        ],
    },
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e02",
        code: "AM_USER_MANAGER",
        name: "User manager",
        app: "account_manager",
        permissions: &["VIEW_AM_USER", "MANAGE_AM_USER", "VIEW_AM_AUDIT_LOG"],
    },
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e03",
        code: "AM_VIEW_ONLY",
        name: "View only",
        app: "account_manager",
        permissions: &["VIEW_AM_USER", "VIEW_AM_AUDIT_LOG"],
    },
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e04",
        code: "TLM_VIEW_ONLY",
        name: "Trust Lifecycle view only",
        app: "trust_lifecycle",
        permissions: &["VIEW_TLM_CERTIFICATE"],
    },
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e05",
        code: "TLM_ADMIN",
        name: "Trust Lifecycle admin",
        app: "trust_lifecycle",
        permissions: &["VIEW_TLM_CERTIFICATE", "MANAGE_TLM_CERTIFICATE"],
    },
    RoleDef {
        id: "3f7c1a52-0b1e-4c7a-9d3e-0a1b2c3d4e06",
        code: "CM_USER",
        name: "CA Manager user",
        app: "ca_manager",
        permissions: &["VIEW_CM_CA"],
    },
];

const ONE_APPS: &[(&str, &str, &str)] = &[
    (
        "account_manager",
        "7b2d6c1e-5f40-4a8b-8c9d-1e2f3a4b5c01",
        "Account Manager",
    ),
    (
        "trust_lifecycle",
        "7b2d6c1e-5f40-4a8b-8c9d-1e2f3a4b5c02",
        "Trust Lifecycle Manager",
    ),
    (
        "ca_manager",
        "7b2d6c1e-5f40-4a8b-8c9d-1e2f3a4b5c03",
        "CA Manager",
    ),
];

/// CertCentral access roles `(id, name)`; 1 and 3 are documented, the others assumed.
pub(crate) const CC_ROLES: &[(u32, &str)] = &[
    (1, "Administrator"),
    (2, "Manager"),
    (3, "Finance Manager"),
    (4, "Standard User"),
    (5, "Limited User"),
];

/// CertCentral containers `(id, name, parent_id, is_active)`.
pub(crate) const CC_CONTAINERS: &[(u64, &str, Option<u64>, bool)] = &[
    (1001, "Example Corp", None, true),
    (1002, "Europe division", Some(1001), true),
    (
        1003,
        "<script>alert(1)</script> division",
        Some(1001),
        false,
    ),
];

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yuki",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "müller", "tanaka", "okafor", "nguyen", "dubois", "rossi",
    "kowalski", "silva", "o'neil", "larsen", "kim", "haddad",
];

/// The actions, resource types and statuses events use; indices are stored in `Event`.
const ACTIONS: &[&str] = &[
    "login", "logout", "create", "update", "delete", "generate", "revoke", "enable", "disable",
    "lock", "unlock",
];
const A_LOGIN: u8 = 0;
const A_LOGOUT: u8 = 1;
const A_CREATE: u8 = 2;
const A_UPDATE: u8 = 3;
const A_DELETE: u8 = 4;
const A_GENERATE: u8 = 5;
const A_REVOKE: u8 = 6;
const A_LOCK: u8 = 9;
const A_UNLOCK: u8 = 10;

const RTYPES: &[&str] = &[
    "user",
    "service_user",
    "api_token",
    "account",
    "organization",
    "client_auth_certificate",
];
const R_USER: u8 = 0;
const R_SERVICE_USER: u8 = 1;
const R_API_TOKEN: u8 = 2;
const R_ACCOUNT: u8 = 3;
const R_ORGANIZATION: u8 = 4;
const R_CLIENT_CERT: u8 = 5;

pub(crate) const STATUSES: &[&str] = &["success", "failure", "SUCCESS"];
const S_SUCCESS: u8 = 0;
const S_FAILURE: u8 = 1;
const S_SUCCESS_UPPER: u8 = 2;

/// Event flag bits.
const F_MS: u8 = 1;
const F_IPV6: u8 = 1 << 3;
const MALFORMED_SHIFT: u8 = 1;
const MALFORMED_MASK: u8 = 0b110;

/// How a malformed event is broken (only with the `malformed` fault at construction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    None = 0,
    NoId = 1,
    BadTimestamp = 2,
    NoTimestamp = 3,
}

impl Malformed {
    fn reason(self) -> &'static str {
        match self {
            Malformed::None => "",
            Malformed::NoId => "missing id",
            Malformed::BadTimestamp => "unparsable timestamp",
            Malformed::NoTimestamp => "missing timestamp",
        }
    }
}

/// An actor or acted-on object: its id and display name.
pub(crate) struct Party {
    pub id: Box<str>,
    pub name: Box<str>,
}

/// One audit event, compact. Serialized by `World::write_event`.
#[derive(Clone, Copy)]
pub(crate) struct Event {
    /// The instant, in UTC milliseconds; whole seconds when `F_MS` is off.
    pub ts_ms: i64,
    /// The UUID (also the tie-break of the sort order).
    pub key: u128,
    pub actor: u32,
    pub resource: u32,
    /// Index into `World::datas`, or `NO_DATA`.
    pub data: u32,
    /// IPv4 address (or the low bits of an IPv6 one with `F_IPV6`); 0 = absent.
    pub ip: u32,
    pub desc: u16,
    pub action: u8,
    pub rtype: u8,
    pub status: u8,
    /// The served offset from UTC, in quarter hours.
    pub offset_q: i8,
    pub flags: u8,
}

impl Event {
    fn malformed(&self) -> Malformed {
        match (self.flags & MALFORMED_MASK) >> MALFORMED_SHIFT {
            1 => Malformed::NoId,
            2 => Malformed::BadTimestamp,
            3 => Malformed::NoTimestamp,
            _ => Malformed::None,
        }
    }

    /// Generated broken (the `malformed` fault): never a Report Library row.
    pub(crate) fn is_malformed(&self) -> bool {
        self.malformed() != Malformed::None
    }

    /// The action's name (`login`, `update`, ...).
    pub(crate) fn action_name(&self) -> &'static str {
        ACTIONS
            .get(self.action as usize)
            .copied()
            .unwrap_or("update")
    }

    /// A failed sign-in or other failed action.
    pub(crate) fn failed(&self) -> bool {
        STATUSES.get(self.status as usize) == Some(&"failure")
    }

    /// An IPv6 address (`ip` holds its low bits).
    pub(crate) fn ipv6(&self) -> bool {
        self.flags & F_IPV6 != 0
    }

    fn sort_key(&self) -> (i64, u128) {
        (self.ts_ms, self.key)
    }

    /// Whether this event uses the alternative field names when `alt-fields` is on (~30%).
    fn alt_eligible(&self) -> bool {
        ((self.key >> 64) as u64 ^ self.key as u64) % 10 < 3
    }

    /// An alternative-field event whose `date` is epoch milliseconds (about half of them).
    fn alt_epoch_ms(&self) -> bool {
        (self.key >> 17) & 1 == 1
    }

    /// An alternative-field event whose address is `ipAddress` rather than `client_ip` (about half).
    fn alt_camel_ip(&self) -> bool {
        (self.key >> 29) & 1 == 1
    }
}

/// DigiCert ONE user kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserType {
    Standard,
    Service,
}

impl UserType {
    fn as_str(self) -> &'static str {
        match self {
            UserType::Standard => "standard",
            UserType::Service => "service",
        }
    }
}

/// A DigiCert ONE user.
pub(crate) struct OneUser {
    pub id: String,
    pub party: u32,
    pub user_type: UserType,
    pub user_name: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub friendly_name: String,
    pub description: String,
    pub end_date: Option<String>,
    pub status: String,
    pub roles: Vec<String>,
    pub created_ms: i64,
}

impl OneUser {
    pub(crate) fn user_type_str(&self) -> &'static str {
        self.user_type.as_str()
    }
}

/// A CertCentral user.
pub(crate) struct CcUser {
    pub id: u64,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub job_title: Option<String>,
    pub telephone: Option<String>,
    pub status: String,
    pub last_login_date: Option<String>,
    pub container: usize,
    pub access_roles: Vec<u32>,
    pub user_type: &'static str,
}

/// A parsed audit-log query (DigiCert ONE `GET /audit-log`).
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditQuery {
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub action: Option<String>,
    pub user_name: Option<String>,
    pub resource_types: Option<Vec<String>>,
    pub resource_id: Option<String>,
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub newest_first: bool,
    pub offset: usize,
    pub limit: usize,
}

impl AuditQuery {
    fn has_field_filters(&self) -> bool {
        self.action.is_some()
            || self.user_name.is_some()
            || self.resource_types.is_some()
            || self.resource_id.is_some()
            || self.status.is_some()
            || self.account_id.is_some()
    }

    /// `[lo, hi)` in UTC ms of the date window.
    pub(crate) fn window_ms(&self) -> (i64, i64) {
        let lo = self.from.map(day_start_ms).unwrap_or(i64::MIN);
        let hi = self
            .to
            .map(|d| day_start_ms(d) + MS_PER_DAY)
            .unwrap_or(i64::MAX);
        (lo, hi)
    }
}

/// One page of events selected by a query.
pub(crate) struct Page {
    pub total: usize,
    pub indices: Vec<usize>,
}

/// Kind of user-mutating control request.
pub(crate) enum Mutation {
    Grant(String),
    Revoke(String),
    Accept,
    Delete,
}

/// Why a control request on the world failed: the status and message to send.
pub(crate) struct WorldError {
    pub status: u16,
    pub message: String,
}

fn werr(status: u16, message: impl Into<String>) -> WorldError {
    WorldError {
        status,
        message: message.into(),
    }
}

/// The whole simulated state. Guarded by one `RwLock` in `Simulator`.
pub(crate) struct World {
    pub account_id: String,
    pub account_name: String,
    /// The users that own the API key (`GET /user/me` of each API).
    pub me_one_id: String,
    pub me_cc_id: u64,
    /// `{"id":..,"name":..}`, pre-serialized for every event.
    account_json: String,
    pub parties: Vec<Party>,
    descs: Vec<Box<str>>,
    datas: Vec<Box<str>>,
    pub events: Vec<Event>,
    pub one_users: Vec<OneUser>,
    pub cc_users: Vec<CcUser>,
    /// Party of the admin who performs role changes by default.
    admin_party: u32,
    /// Parties of users who sign in (standard users that have finished sign-up), with created_ms.
    login_parties: Vec<(u32, i64)>,
    token_parties: Vec<u32>,
    org_parties: Vec<u32>,
    cert_parties: Vec<u32>,
    account_party: u32,
    /// Drives every change after construction (inserts, new ids), so a run is reproducible.
    rng: ChaCha8Rng,
    /// Counts of events added after construction, by cause.
    pub inserted_drift: u64,
    pub inserted_late: u64,
    pub inserted_control: u64,
    pub inserted_arrivals: u64,
}

pub(crate) fn day_start_ms(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis())
        .unwrap_or(0)
}

pub(crate) fn ms_to_day(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn rfc3339_utc(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn uuid_key(rng: &mut ChaCha8Rng) -> u128 {
    let raw: u128 = rng.gen();
    // Version 4 and RFC 4122 variant bits, so ids look like real UUIDs.
    let v = (raw & !(0xF << 76)) | (0x4 << 76);
    (v & !(0x3 << 62)) | (0x2 << 62)
}

pub(crate) fn push_uuid(out: &mut String, k: u128) {
    let _ = write!(
        out,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (k >> 96) as u32,
        (k >> 80) as u16,
        (k >> 64) as u16,
        (k >> 48) as u16,
        k & 0xFFFF_FFFF_FFFF
    );
}

fn uuid_string(k: u128) -> String {
    let mut s = String::with_capacity(36);
    push_uuid(&mut s, k);
    s
}

/// Append `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Append the served timestamp text of an instant.
fn push_timestamp(out: &mut String, ts_ms: i64, offset_q: i8, with_ms: bool) {
    let offset_s = i32::from(offset_q) * 900;
    let tz = FixedOffset::east_opt(offset_s).unwrap_or_else(|| Utc.fix());
    let t = DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .with_timezone(&tz);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if with_ms {
        let _ = write!(out, ".{:03}", ts_ms.rem_euclid(1000));
    }
    let sign = if offset_s < 0 { '-' } else { '+' };
    let a = offset_s.abs();
    let _ = write!(out, "{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60);
}

fn role_def(code: &str) -> Option<&'static RoleDef> {
    ONE_ROLES.iter().find(|r| r.code == code)
}

fn roles_data(added: &[String], removed: &[String]) -> String {
    json!({"roles": {"added": added, "removed": removed}}).to_string()
}

/// Generation state for the initial world.
struct Gen {
    rng: ChaCha8Rng,
    start_ms: i64,
    now_ms: i64,
}

impl Gen {
    fn ts_between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            lo
        } else {
            self.rng.gen_range(lo..hi)
        }
    }
}

impl World {
    /// Build the world of `seed` with `events` events over the `days` days ending at `now`.
    pub(crate) fn generate(
        seed: u64,
        events: usize,
        days: u32,
        users: usize,
        malformed: bool,
        now: DateTime<Utc>,
    ) -> World {
        let now_ms = now.timestamp_millis();
        let days = i64::from(days.max(1));
        let mut g = Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            start_ms: now_ms - days * MS_PER_DAY,
            now_ms,
        };
        let account_key = uuid_key(&mut g.rng);
        let account_id = uuid_string(account_key);
        let account_name = "Example Corp".to_string();
        let mut account_json = String::new();
        account_json.push_str("{\"id\":");
        push_json_str(&mut account_json, &account_id);
        account_json.push_str(",\"name\":");
        push_json_str(&mut account_json, &account_name);
        account_json.push('}');

        let mut w = World {
            account_id: account_id.clone(),
            account_name: account_name.clone(),
            me_one_id: String::new(),
            me_cc_id: 100_001,
            account_json,
            parties: Vec::new(),
            descs: Vec::new(),
            datas: Vec::new(),
            events: Vec::with_capacity(events),
            one_users: Vec::new(),
            cc_users: Vec::new(),
            admin_party: 0,
            login_parties: Vec::new(),
            token_parties: Vec::new(),
            org_parties: Vec::new(),
            cert_parties: Vec::new(),
            account_party: 0,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_CAFE_F00D_D00D),
            inserted_drift: 0,
            inserted_late: 0,
            inserted_control: 0,
            inserted_arrivals: 0,
        };
        w.account_party = w.add_party(&account_id, &account_name);
        for d in DESCS {
            w.descs.push((*d).into());
        }
        for d in DATA_TEMPLATES {
            w.datas.push((*d).into());
        }
        for i in 0..12 {
            let k = uuid_key(&mut g.rng);
            let name = if i == 7 {
                format!("token {}", HOSTILE[1])
            } else {
                format!("ci-token-{i:02}")
            };
            let p = w.add_party(&uuid_string(k), &name);
            w.token_parties.push(p);
        }
        for (i, name) in [
            "Example Corp",
            "Example EU B.V.",
            HOSTILE[0],
            "Ex\u{202E}ample",
        ]
        .iter()
        .enumerate()
        {
            let k = uuid_key(&mut g.rng);
            let p = w.add_party(&uuid_string(k), &format!("{name} {i}"));
            w.org_parties.push(p);
        }
        for i in 0..6 {
            let k = uuid_key(&mut g.rng);
            let p = w.add_party(&uuid_string(k), &format!("client-auth-{i}.example.com"));
            w.cert_parties.push(p);
        }

        w.generate_one_users(&mut g, users.max(2));
        w.generate_cc_users(&mut g, users.max(1));
        w.generate_events(&mut g, events, malformed);
        w
    }

    fn add_party(&mut self, id: &str, name: &str) -> u32 {
        self.parties.push(Party {
            id: id.into(),
            name: name.into(),
        });
        (self.parties.len() - 1) as u32
    }

    fn generate_one_users(&mut self, g: &mut Gen, n: usize) {
        let mut names = HashSet::new();
        for i in 0..n {
            let k = uuid_key(&mut g.rng);
            let id = uuid_string(k);
            let hostile = if i >= 2 && i % 7 == 3 {
                Some(HOSTILE[(i / 7) % HOSTILE.len()])
            } else {
                None
            };
            let user_type = match i {
                0 => UserType::Service,
                1 => UserType::Standard,
                _ if g.rng.gen_bool(0.2) => UserType::Service,
                _ => UserType::Standard,
            };
            let status = match i {
                0 | 1 => "ACTIVE",
                _ => {
                    let r: u32 = g.rng.gen_range(0..100);
                    match r {
                        0..=69 => "ACTIVE",
                        70..=81 => "PENDING",
                        82..=87 => "LOCKED",
                        88..=93 => "DISABLED",
                        _ => "EXPIRED",
                    }
                }
            };
            let roles: Vec<String> = match i {
                0 => vec!["AM_VIEW_ONLY".into()],
                1 => vec!["AM_ACCOUNT_ADMIN".into(), "TLM_ADMIN".into()],
                _ => {
                    let mut r: Vec<String> = Vec::new();
                    let first = if g.rng.gen_bool(0.15) {
                        "AM_ACCOUNT_ADMIN"
                    } else {
                        ONE_ROLES[g.rng.gen_range(1..ONE_ROLES.len())].code
                    };
                    r.push(first.into());
                    if g.rng.gen_bool(0.3) {
                        let extra = ONE_ROLES[g.rng.gen_range(0..ONE_ROLES.len())].code;
                        if !r.iter().any(|x| x == extra) {
                            r.push(extra.into());
                        }
                    }
                    r
                }
            };
            let first = FIRST[g.rng.gen_range(0..FIRST.len())];
            let last = LAST[g.rng.gen_range(0..LAST.len())];
            let mut user = OneUser {
                id: id.clone(),
                party: 0,
                user_type,
                user_name: String::new(),
                email: String::new(),
                first_name: String::new(),
                last_name: String::new(),
                friendly_name: String::new(),
                description: String::new(),
                end_date: None,
                status: status.into(),
                roles,
                // Before the window; generate_events may move it into the window.
                created_ms: g.start_ms - g.rng.gen_range(1..400) * MS_PER_DAY
                    + g.rng.gen_range(0..MS_PER_DAY),
            };
            let display;
            match user_type {
                UserType::Standard => {
                    let mut base = format!("{first}.{last}").replace('\'', "");
                    if i == 1 {
                        base = "admin".into();
                    }
                    let mut name = base.clone();
                    let mut n = 2;
                    while !names.insert(name.clone()) {
                        name = format!("{base}{n}");
                        n += 1;
                    }
                    user.email = format!("{name}@example.com");
                    user.first_name = capitalize(first);
                    user.last_name = capitalize(last);
                    if let Some(h) = hostile {
                        if i % 2 == 1 {
                            name = format!("{h}{i}");
                            user.email = format!("user{i}@example.com");
                        } else {
                            user.first_name = h.into();
                        }
                    }
                    user.user_name = name.clone();
                    display = name;
                }
                UserType::Service => {
                    user.friendly_name = match i {
                        0 => "auditwarden collector".into(),
                        _ => match hostile {
                            Some(h) => format!("{h} svc {i}"),
                            None => format!("automation-{i:03}"),
                        },
                    };
                    user.description = match hostile {
                        Some(h) => format!("Deploys things; note: {h}"),
                        None => "Service user for automation".into(),
                    };
                    let end = if status == "EXPIRED" {
                        g.now_ms - g.rng.gen_range(1..90) * MS_PER_DAY
                    } else {
                        g.now_ms + g.rng.gen_range(30..700) * MS_PER_DAY
                    };
                    user.end_date = Some(ms_to_day(end).format("%Y-%m-%d").to_string());
                    display = user.friendly_name.clone();
                }
            }
            user.party = self.add_party(&id, &display);
            if i == 0 {
                self.me_one_id = id.clone();
            }
            if i == 1 {
                self.admin_party = user.party;
            }
            self.one_users.push(user);
        }
    }

    fn generate_cc_users(&mut self, g: &mut Gen, n: usize) {
        for i in 0..n {
            let id = 100_001 + i as u64;
            let first = FIRST[g.rng.gen_range(0..FIRST.len())];
            let last = LAST[g.rng.gen_range(0..LAST.len())];
            let status = if i == 0 {
                "active"
            } else {
                match g.rng.gen_range(0..100) {
                    0..=71 => "active",
                    72..=83 => "invited",
                    84..=87 => "pending",
                    88..=93 => "inactive",
                    _ => "disabled",
                }
            };
            let never = matches!(status, "invited" | "pending")
                || (status == "active" && i != 0 && g.rng.gen_bool(0.1))
                || (status != "active" && g.rng.gen_bool(0.4));
            let last_login_date = if never {
                None
            } else {
                let t = g.ts_between(g.start_ms, g.now_ms);
                Some(rfc3339_utc(t - t.rem_euclid(1000)))
            };
            let role = if i == 0 {
                1
            } else {
                CC_ROLES[g.rng.gen_range(0..CC_ROLES.len())].0
            };
            let mut u = CcUser {
                id,
                username: format!("{first}.{last}{i}").replace('\'', ""),
                first_name: capitalize(first),
                last_name: capitalize(last),
                email: format!("{first}.{last}{i}@example.com").replace('\'', ""),
                job_title: g.rng.gen_bool(0.5).then(|| "Engineer".to_string()),
                telephone: g.rng.gen_bool(0.3).then(|| "+1 555 0100".to_string()),
                status: status.into(),
                last_login_date,
                container: if i % 5 == 4 { 1 } else { 0 },
                access_roles: vec![role],
                user_type: if i % 9 == 8 { "sso_only" } else { "standard" },
            };
            if i >= 1 && i % 7 == 2 {
                let h = HOSTILE[(i / 7 + 3) % HOSTILE.len()];
                if i % 2 == 0 {
                    u.last_name = h.into();
                } else {
                    u.job_title = Some(h.into());
                }
            }
            if i % 13 == 12 {
                u.container = 2;
            }
            self.cc_users.push(u);
        }
    }

    fn generate_events(&mut self, g: &mut Gen, n: usize, malformed: bool) {
        // Role history first (creates and grants/revokes), so users' current roles are the end
        // state of their events; the rest of the budget is filler.
        let mut budget = n / 4;
        let admin = self.admin_party;
        for ui in 0..self.one_users.len() {
            if budget == 0 {
                break;
            }
            let rtype = match self.one_users[ui].user_type {
                UserType::Standard => R_USER,
                UserType::Service => R_SERVICE_USER,
            };
            let party = self.one_users[ui].party;
            let final_roles = self.one_users[ui].roles.clone();
            // Plan changes backwards from the current roles: each step undoes one change.
            let n_changes = g.rng.gen_range(0..=2usize).min(budget);
            let mut roles = final_roles.clone();
            let mut changes: Vec<(Vec<String>, Vec<String>)> = Vec::new();
            for _ in 0..n_changes {
                if roles.len() > 1 && g.rng.gen_bool(0.6) {
                    // The last change added this role: before it, the role was absent.
                    let idx = g.rng.gen_range(0..roles.len());
                    let r = roles.remove(idx);
                    changes.push((vec![r], vec![]));
                } else {
                    let candidates: Vec<&str> = ONE_ROLES
                        .iter()
                        .map(|r| r.code)
                        .filter(|c| !roles.iter().any(|x| x == c))
                        .collect();
                    let Some(r) = candidates.choose(&mut g.rng) else {
                        break;
                    };
                    roles.push((*r).to_string());
                    changes.push((vec![], vec![(*r).to_string()]));
                }
            }
            changes.reverse();
            budget -= changes.len();
            let created_in_window = ui >= 2 && budget > 0 && g.rng.gen_bool(0.3);
            let mut t = g.start_ms;
            if created_in_window {
                budget -= 1;
                let created = g.ts_between(g.start_ms, g.now_ms - MS_PER_DAY / 4);
                let created = created - created.rem_euclid(1000);
                self.one_users[ui].created_ms = created;
                t = created;
                let data = self.push_data(roles_data(&roles, &[]));
                let ev = self.event_at(g, created, admin, party, A_CREATE, rtype, data, 7);
                self.events.push(ev);
            }
            let mut times: Vec<i64> = (0..changes.len())
                .map(|_| g.ts_between(t + 1000, g.now_ms))
                .collect();
            times.sort_unstable();
            for ((added, removed), ts) in changes.into_iter().zip(times) {
                let data = self.push_data(roles_data(&added, &removed));
                let ev = self.event_at(g, ts, admin, party, A_UPDATE, rtype, data, 8);
                self.events.push(ev);
            }
        }
        for u in &self.one_users {
            if u.user_type == UserType::Standard && u.status != "PENDING" {
                self.login_parties.push((u.party, u.created_ms));
            }
        }
        let structured = self.events.len();
        while self.events.len() < n {
            let ts = g.ts_between(g.start_ms, g.now_ms);
            let ev = self.filler_event(&mut g.rng, ts);
            self.events.push(ev);
        }
        if malformed && n > 0 {
            // Only routine events break, so the role history stays complete; distinct indices so
            // exactly `m` events are malformed.
            let filler = self.events.len() - structured;
            let m = (n / 100).max(1).min(filler);
            let picked = rand::seq::index::sample(&mut g.rng, filler, m);
            for (j, k) in picked.iter().enumerate() {
                let kind = match j % 3 {
                    0 => Malformed::NoId,
                    1 => Malformed::BadTimestamp,
                    _ => Malformed::NoTimestamp,
                };
                let e = &mut self.events[structured + k];
                e.flags = (e.flags & !MALFORMED_MASK) | ((kind as u8) << MALFORMED_SHIFT);
            }
        }
        self.events.sort_unstable_by_key(Event::sort_key);
    }

    fn push_data(&mut self, s: String) -> u32 {
        self.datas.push(s.into());
        (self.datas.len() - 1) as u32
    }

    /// A well-formed event with the presentation details (offset, ms, ip) drawn at random.
    #[allow(clippy::too_many_arguments)]
    fn event_at(
        &self,
        g: &mut Gen,
        ts_ms: i64,
        actor: u32,
        resource: u32,
        action: u8,
        rtype: u8,
        data: u32,
        desc: u16,
    ) -> Event {
        let mut e = decorate(&mut g.rng, ts_ms);
        e.actor = actor;
        e.resource = resource;
        e.action = action;
        e.rtype = rtype;
        e.data = data;
        e.desc = desc;
        e
    }

    /// A routine event (sign-ins, tokens, account changes ...) at `ts_ms`.
    fn filler_event(&self, rng: &mut ChaCha8Rng, ts_ms: i64) -> Event {
        let mut e = decorate(rng, ts_ms);
        let user = self.pick_login(rng, ts_ms);
        let r: u32 = rng.gen_range(0..1000);
        let pick = |rng: &mut ChaCha8Rng, v: &[u32], fallback: u32| -> u32 {
            v.choose(rng).copied().unwrap_or(fallback)
        };
        let (action, rtype, actor, resource, desc, data) = match r {
            0..=549 => (
                A_LOGIN,
                R_USER,
                user,
                user,
                0,
                D_LOGIN_PASSWORD + rng.gen_range(0..2),
            ),
            550..=649 => {
                e.status = S_FAILURE;
                let desc = if rng.gen_bool(0.2) {
                    D_FAIL_HOSTILE + rng.gen_range(0..HOSTILE.len() as u16)
                } else {
                    1 + rng.gen_range(0..3)
                };
                (A_LOGIN, R_USER, user, user, desc, D_LOGIN_PASSWORD)
            }
            650..=749 => (A_LOGOUT, R_USER, user, user, 4, NO_DATA),
            750..=799 => {
                let t = pick(rng, &self.token_parties, self.account_party);
                (A_GENERATE, R_API_TOKEN, user, t, 5, D_TOKEN)
            }
            800..=829 => {
                let t = pick(rng, &self.token_parties, self.account_party);
                (A_REVOKE, R_API_TOKEN, user, t, 6, NO_DATA)
            }
            830..=859 => (
                A_UPDATE,
                R_ACCOUNT,
                self.admin_party,
                self.account_party,
                9,
                D_ACCOUNT + rng.gen_range(0..2),
            ),
            860..=889 => {
                let o = pick(rng, &self.org_parties, self.account_party);
                (A_UPDATE, R_ORGANIZATION, user, o, 10, NO_DATA)
            }
            890..=929 => {
                let c = pick(rng, &self.cert_parties, self.account_party);
                (A_CREATE, R_CLIENT_CERT, user, c, 11, NO_DATA)
            }
            930..=969 => {
                let target = self.pick_login(rng, ts_ms);
                (A_LOCK, R_USER, self.admin_party, target, 12, NO_DATA)
            }
            _ => {
                let target = self.pick_login(rng, ts_ms);
                (A_UNLOCK, R_USER, self.admin_party, target, 13, NO_DATA)
            }
        };
        if e.status == S_SUCCESS && rng.gen_ratio(1, 50) {
            e.status = S_SUCCESS_UPPER;
        }
        e.action = action;
        e.rtype = rtype;
        e.actor = actor;
        e.resource = resource;
        e.desc = desc;
        e.data = data;
        e
    }

    fn pick_login(&self, rng: &mut ChaCha8Rng, ts_ms: i64) -> u32 {
        match self.login_parties.choose(rng) {
            Some(&(p, created)) if created <= ts_ms => p,
            _ => self.admin_party,
        }
    }

    // ---- queries -------------------------------------------------------------------------

    fn window_range(&self, lo: i64, hi: i64) -> (usize, usize) {
        let a = self.events.partition_point(|e| e.ts_ms < lo);
        let b = self.events.partition_point(|e| e.ts_ms < hi);
        (a, b.max(a))
    }

    /// Select a page of events (indices into `events`, in serving order).
    pub(crate) fn select(&self, q: &AuditQuery) -> Page {
        let (lo, hi) = q.window_ms();
        let (a, b) = self.window_range(lo, hi);
        if !q.has_field_filters() {
            let total = b - a;
            let start = q.offset.min(total);
            let end = (q.offset.saturating_add(q.limit)).min(total);
            let indices = if q.newest_first {
                (start..end).map(|k| b - 1 - k).collect()
            } else {
                (start..end).map(|k| a + k).collect()
            };
            return Page { total, indices };
        }
        if q.account_id
            .as_deref()
            .is_some_and(|a| a != self.account_id)
        {
            return Page {
                total: 0,
                indices: Vec::new(),
            };
        }
        let action = match &q.action {
            Some(a) => match ACTIONS.iter().position(|x| x == a) {
                Some(i) => Some(i as u8),
                None => {
                    return Page {
                        total: 0,
                        indices: Vec::new(),
                    }
                }
            },
            None => None,
        };
        let rtypes: Option<Vec<u8>> = q.resource_types.as_ref().map(|v| {
            RTYPES
                .iter()
                .enumerate()
                .filter(|(_, r)| v.iter().any(|x| x == *r))
                .map(|(i, _)| i as u8)
                .collect()
        });
        let statuses: Option<Vec<u8>> = q.status.as_ref().map(|s| {
            STATUSES
                .iter()
                .enumerate()
                .filter(|(_, x)| x.eq_ignore_ascii_case(s))
                .map(|(i, _)| i as u8)
                .collect()
        });
        let actor_ok: Option<Vec<bool>> = q.user_name.as_ref().map(|n| {
            self.parties
                .iter()
                .map(|p| p.name.contains(n.as_str()))
                .collect()
        });
        let resource_ok: Option<Vec<bool>> = q
            .resource_id
            .as_ref()
            .map(|r| self.parties.iter().map(|p| &*p.id == r.as_str()).collect());
        let matches = |e: &Event| -> bool {
            action.is_none_or(|a| e.action == a)
                && rtypes.as_ref().is_none_or(|v| v.contains(&e.rtype))
                && statuses.as_ref().is_none_or(|v| v.contains(&e.status))
                && actor_ok
                    .as_ref()
                    .is_none_or(|v| v.get(e.actor as usize).copied().unwrap_or(false))
                && resource_ok
                    .as_ref()
                    .is_none_or(|v| v.get(e.resource as usize).copied().unwrap_or(false))
        };
        let mut all: Vec<usize> = (a..b).filter(|&i| matches(&self.events[i])).collect();
        if q.newest_first {
            all.reverse();
        }
        let total = all.len();
        let start = q.offset.min(total);
        let end = (q.offset.saturating_add(q.limit)).min(total);
        Page {
            total,
            indices: all[start..end].to_vec(),
        }
    }

    /// Serialize event `i` as served. `alt_fields`: the fault is on.
    pub(crate) fn write_event(&self, out: &mut String, i: usize, alt_fields: bool) {
        if let Some(e) = self.events.get(i) {
            self.write_one(out, e, alt_fields);
        }
    }

    /// `endless`: write a made-up event with a new id at `ts_ms`, never stored.
    pub(crate) fn write_phantom(&self, out: &mut String, seq: u64, ts_ms: i64, alt_fields: bool) {
        let mut rng = ChaCha8Rng::seed_from_u64(seq ^ 0x9e37_79b9_7f4a_7c15);
        let mut e = self.filler_event(&mut rng, ts_ms);
        e.ts_ms = ts_ms;
        e.key = uuid_key(&mut rng);
        self.write_one(out, &e, alt_fields);
    }

    fn write_one(&self, out: &mut String, e: &Event, alt_fields: bool) {
        let alt = alt_fields && e.alt_eligible();
        let mal = e.malformed();
        out.push('{');
        if mal != Malformed::NoId {
            out.push_str("\"id\":\"");
            push_uuid(out, e.key);
            out.push_str("\",");
        }
        match mal {
            Malformed::BadTimestamp => out.push_str("\"timestamp\":\"yesterday-ish\","),
            Malformed::NoTimestamp => {}
            // Sibling services send epoch milliseconds, a number (contract 1.2).
            _ if alt && e.alt_epoch_ms() => {
                let _ = write!(out, "\"date\":{},", e.ts_ms);
            }
            _ => {
                out.push_str(if alt {
                    "\"date\":\""
                } else {
                    "\"timestamp\":\""
                });
                push_timestamp(out, e.ts_ms, e.offset_q, e.flags & F_MS != 0);
                out.push_str("\",");
            }
        }
        out.push_str("\"account\":");
        out.push_str(&self.account_json);
        let empty = Party {
            id: "".into(),
            name: "".into(),
        };
        let actor = self.parties.get(e.actor as usize).unwrap_or(&empty);
        if alt {
            out.push_str(",\"user_name\":");
            push_json_str(out, &actor.name);
            out.push_str(",\"user_id\":");
            push_json_str(out, &actor.id);
        } else {
            out.push_str(",\"user\":{\"id\":");
            push_json_str(out, &actor.id);
            out.push_str(",\"name\":");
            push_json_str(out, &actor.name);
            out.push('}');
        }
        let res = self.parties.get(e.resource as usize).unwrap_or(&empty);
        out.push_str(",\"resource_type\":\"");
        out.push_str(RTYPES.get(e.rtype as usize).copied().unwrap_or("user"));
        out.push_str("\",\"resource_id\":");
        push_json_str(out, &res.id);
        if !res.name.is_empty() {
            out.push_str(",\"resource_name\":");
            push_json_str(out, &res.name);
        }
        out.push_str(",\"action\":\"");
        out.push_str(ACTIONS.get(e.action as usize).copied().unwrap_or("update"));
        out.push_str("\",\"status\":\"");
        let status = STATUSES
            .get(e.status as usize)
            .copied()
            .unwrap_or("success");
        if alt {
            out.push_str(&status.to_uppercase());
        } else {
            out.push_str(status);
        }
        out.push_str("\",\"description\":");
        push_json_str(
            out,
            self.descs.get(e.desc as usize).map(|d| &**d).unwrap_or(""),
        );
        if e.ip != 0 {
            // Aliases of sibling services (contract 1.2).
            let name = match (alt, e.alt_camel_ip()) {
                (false, _) => "ip_address",
                (true, false) => "client_ip",
                (true, true) => "ipAddress",
            };
            if e.flags & F_IPV6 != 0 {
                let _ = write!(out, ",\"{name}\":\"2001:db8::{:x}\"", e.ip);
            } else {
                let [a, b, c, d] = e.ip.to_be_bytes();
                let _ = write!(out, ",\"{name}\":\"{a}.{b}.{c}.{d}\"");
            }
        }
        if let Some(d) = self.datas.get(e.data as usize) {
            out.push_str(",\"data\":");
            push_json_str(out, d);
        }
        out.push('}');
    }

    /// The served text of one event, for the ground truth.
    fn event_text(&self, i: usize, alt_fields: bool) -> String {
        let mut s = String::with_capacity(512);
        self.write_event(&mut s, i, alt_fields);
        s
    }

    // ---- inserts -------------------------------------------------------------------------

    fn insert(&mut self, e: Event) -> usize {
        let key = e.sort_key();
        let pos = self.events.partition_point(|x| x.sort_key() < key);
        self.events.insert(pos, e);
        pos
    }

    fn utc_now_ms() -> i64 {
        crate::clock::now_ms()
    }

    /// `drift`: a new event timestamped as the newest of the window `[lo, hi)`.
    pub(crate) fn insert_drift(&mut self, q: &AuditQuery) {
        let (lo, hi) = q.window_ms();
        let (a, b) = self.window_range(lo, hi);
        let now = Self::utc_now_ms();
        let newest = (b > a).then(|| self.events[b - 1].sort_key());
        let ts = match newest {
            // Just after the newest event of the window, if that is still inside the window.
            Some((t, _)) if t + 1 < hi => t + 1,
            Some((t, _)) => t,
            None => now.max(lo).min(hi.saturating_sub(1)),
        };
        let mut rng = self.rng.clone();
        let mut e = self.filler_event(&mut rng, ts);
        e.flags |= F_MS;
        e.ts_ms = ts;
        // Same instant as the newest: draw ids until this one sorts after it (p = 1/2 per draw).
        if let Some((t, k)) = newest {
            for _ in 0..128 {
                if ts > t || e.key > k {
                    break;
                }
                e.key = uuid_key(&mut rng);
            }
        }
        self.rng = rng;
        self.insert(e);
        self.inserted_drift += 1;
    }

    /// `late`: a new event at a random time of a day outside the window that already has events.
    pub(crate) fn insert_late(&mut self, q: &AuditQuery) {
        if self.events.is_empty() {
            return;
        }
        let (lo, hi) = q.window_ms();
        let (a, b) = self.window_range(lo, hi);
        let outside = self.events.len() - (b - a);
        let mut rng = self.rng.clone();
        let pick = if outside > 0 {
            let k = rng.gen_range(0..outside);
            if k < a {
                k
            } else {
                k - a + b
            }
        } else {
            rng.gen_range(0..self.events.len())
        };
        let day_start = ms_to_day(self.events[pick].ts_ms);
        let lo_day = day_start_ms(day_start);
        let now = Self::utc_now_ms();
        let hi_day = (lo_day + MS_PER_DAY).min(now.max(lo_day + 1));
        let ts = rng.gen_range(lo_day..hi_day);
        let e = self.filler_event(&mut rng, ts);
        self.rng = rng;
        self.insert(e);
        self.inserted_late += 1;
    }

    /// `busy`: one event happening now (the newest of all, so newest-first paging shifts).
    pub(crate) fn insert_arrival(&mut self) {
        let now = Self::utc_now_ms();
        let mut rng = self.rng.clone();
        let mut e = self.filler_event(&mut rng, now);
        e.ts_ms = now;
        e.offset_q = 0;
        e.flags |= F_MS;
        self.rng = rng;
        self.insert(e);
        self.inserted_arrivals += 1;
    }

    /// `POST /_sim/events`: `count` routine events on `day` (not after now).
    pub(crate) fn insert_on_day(&mut self, count: usize, day: NaiveDate) {
        let lo = day_start_ms(day);
        let now = Self::utc_now_ms();
        let hi = if lo <= now && now < lo + MS_PER_DAY {
            now + 1
        } else {
            lo + MS_PER_DAY
        };
        let mut rng = self.rng.clone();
        for _ in 0..count {
            let ts = rng.gen_range(lo..hi);
            let e = self.filler_event(&mut rng, ts);
            self.insert(e);
        }
        self.rng = rng;
        self.inserted_control += count as u64;
    }

    /// Append an event happening now (user mutations).
    fn insert_now(
        &mut self,
        actor: u32,
        resource: u32,
        action: u8,
        rtype: u8,
        data: u32,
        desc: u16,
    ) {
        let mut rng = self.rng.clone();
        let mut e = decorate(&mut rng, Self::utc_now_ms());
        e.ts_ms = Self::utc_now_ms();
        e.offset_q = 0;
        e.flags |= F_MS;
        e.actor = actor;
        e.resource = resource;
        e.action = action;
        e.rtype = rtype;
        e.data = data;
        e.desc = desc;
        self.rng = rng;
        self.insert(e);
        self.inserted_control += 1;
    }

    // ---- users ---------------------------------------------------------------------------

    pub(crate) fn one_user_json(&self, u: &OneUser, role_objects: bool) -> Value {
        let roles: Vec<Value> = u
            .roles
            .iter()
            .map(|c| {
                if role_objects {
                    match role_def(c) {
                        Some(r) => json!({"id": r.id, "code": r.code, "name": r.name}),
                        None => json!({"id": format!("custom-{c}"), "code": c, "name": c}),
                    }
                } else {
                    json!(c)
                }
            })
            .collect();
        let mut apps: Vec<Value> = Vec::new();
        for (code, app_id, app_name) in ONE_APPS {
            let perms: Vec<&str> = u
                .roles
                .iter()
                .filter_map(|c| role_def(c))
                .filter(|r| r.app == *code)
                .flat_map(|r| r.permissions.iter().copied())
                .collect();
            if !perms.is_empty() {
                let mut p = perms;
                p.sort_unstable();
                p.dedup();
                apps.push(json!({"id": app_id, "name": app_name, "permissions": p}));
            }
        }
        let mut v = json!({
            "id": u.id,
            "status": u.status,
            "user_type": u.user_type.as_str(),
            "access_scope": "account",
            "created_at": rfc3339_utc(u.created_ms),
            "roles": roles,
            "applications": apps,
        });
        if let Some(obj) = v.as_object_mut() {
            match u.user_type {
                UserType::Standard => {
                    obj.insert("user_name".into(), json!(u.user_name));
                    obj.insert("email".into(), json!(u.email));
                    obj.insert("first_name".into(), json!(u.first_name));
                    obj.insert("last_name".into(), json!(u.last_name));
                }
                UserType::Service => {
                    obj.insert("friendly_name".into(), json!(u.friendly_name));
                    obj.insert("description".into(), json!(u.description));
                    if let Some(e) = &u.end_date {
                        obj.insert("end_date".into(), json!(e));
                    }
                }
            }
        }
        v
    }

    pub(crate) fn cc_user_json(&self, u: &CcUser) -> Value {
        let (cid, cname, _, _) = CC_CONTAINERS
            .get(u.container)
            .copied()
            .unwrap_or(CC_CONTAINERS[0]);
        let roles: Vec<Value> = u
            .access_roles
            .iter()
            .map(|id| {
                let name = CC_ROLES
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, n)| *n)
                    .unwrap_or("Custom");
                json!({"id": id, "name": name})
            })
            .collect();
        let mut v = json!({
            "id": u.id,
            "username": u.username,
            "account_id": 5_550_001,
            "first_name": u.first_name,
            "last_name": u.last_name,
            "email": u.email,
            "status": u.status,
            "container": {"id": cid, "name": cname, "is_active": true},
            "access_roles": roles,
            "type": u.user_type,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(j) = &u.job_title {
                obj.insert("job_title".into(), json!(j));
            }
            if let Some(t) = &u.telephone {
                obj.insert("telephone".into(), json!(t));
            }
            if let Some(l) = &u.last_login_date {
                obj.insert("last_login_date".into(), json!(l));
            }
        }
        v
    }

    pub(crate) fn one_user_by_id(&self, id: &str) -> Option<&OneUser> {
        self.one_users.iter().find(|u| u.id == id)
    }

    pub(crate) fn cc_user_by_id(&self, id: u64) -> Option<&CcUser> {
        self.cc_users.iter().find(|u| u.id == id)
    }

    fn one_index(&self, id: &str) -> Option<usize> {
        self.one_users.iter().position(|u| u.id == id)
    }

    fn cc_index(&self, id: &str) -> Option<usize> {
        let n: u64 = id.parse().ok()?;
        self.cc_users.iter().position(|u| u.id == n)
    }

    fn actor_party(&self, actor_id: Option<&str>) -> Result<u32, WorldError> {
        match actor_id {
            None => Ok(self.admin_party),
            Some(a) => self
                .one_users
                .iter()
                .find(|u| u.id == a)
                .map(|u| u.party)
                .ok_or_else(|| werr(400, format!("unknown actor_id {a:?}"))),
        }
    }

    /// Apply a user mutation (`/_sim/users/{id}/...`); returns the user as it is now.
    pub(crate) fn mutate_user(
        &mut self,
        id: &str,
        m: Mutation,
        actor_id: Option<&str>,
    ) -> Result<Value, WorldError> {
        if let Some(i) = self.one_index(id) {
            let actor = self.actor_party(actor_id)?;
            let party = self.one_users[i].party;
            let rtype = match self.one_users[i].user_type {
                UserType::Standard => R_USER,
                UserType::Service => R_SERVICE_USER,
            };
            match m {
                Mutation::Grant(role) => {
                    if self.one_users[i].roles.contains(&role) {
                        return Err(werr(409, format!("user already has role {role}")));
                    }
                    self.one_users[i].roles.push(role.clone());
                    let d = self.push_data(roles_data(&[role], &[]));
                    self.insert_now(actor, party, A_UPDATE, rtype, d, 8);
                }
                Mutation::Revoke(role) => {
                    let Some(pos) = self.one_users[i].roles.iter().position(|r| *r == role) else {
                        return Err(werr(409, format!("user does not have role {role}")));
                    };
                    self.one_users[i].roles.remove(pos);
                    let d = self.push_data(roles_data(&[], &[role]));
                    self.insert_now(actor, party, A_UPDATE, rtype, d, 8);
                }
                Mutation::Accept => {
                    if self.one_users[i].status != "PENDING" {
                        return Err(werr(409, "user is not PENDING"));
                    }
                    self.one_users[i].status = "ACTIVE".into();
                    if self.one_users[i].user_type == UserType::Standard {
                        let created = self.one_users[i].created_ms;
                        self.login_parties.push((party, created));
                    }
                    self.insert_now(party, party, A_LOGIN, rtype, D_LOGIN_PASSWORD, 0);
                }
                Mutation::Delete => {
                    let u = self.one_users.remove(i);
                    self.login_parties.retain(|(p, _)| *p != u.party);
                    self.insert_now(actor, party, A_DELETE, rtype, NO_DATA, 14);
                    return Ok(self.one_user_json(&u, false));
                }
            }
            return Ok(self.one_user_json(&self.one_users[i], false));
        }
        if let Some(i) = self.cc_index(id) {
            match m {
                Mutation::Grant(role) => {
                    let r = cc_role(&role)?;
                    if self.cc_users[i].access_roles.contains(&r) {
                        return Err(werr(409, format!("user already has role {role}")));
                    }
                    self.cc_users[i].access_roles.push(r);
                }
                Mutation::Revoke(role) => {
                    let r = cc_role(&role)?;
                    let Some(pos) = self.cc_users[i].access_roles.iter().position(|x| *x == r)
                    else {
                        return Err(werr(409, format!("user does not have role {role}")));
                    };
                    self.cc_users[i].access_roles.remove(pos);
                }
                Mutation::Accept => {
                    if !matches!(self.cc_users[i].status.as_str(), "invited" | "pending") {
                        return Err(werr(409, "user is not invited"));
                    }
                    self.cc_users[i].status = "active".into();
                    let now = Self::utc_now_ms();
                    self.cc_users[i].last_login_date =
                        Some(rfc3339_utc(now - now.rem_euclid(1000)));
                }
                Mutation::Delete => {
                    let u = self.cc_users.remove(i);
                    return Ok(self.cc_user_json(&u));
                }
            }
            return Ok(self.cc_user_json(&self.cc_users[i]));
        }
        Err(werr(404, format!("no user with id {id:?}")))
    }

    /// `POST /_sim/users`: create a user of either API.
    pub(crate) fn create_user(&mut self, req: &CreateUser) -> Result<Value, WorldError> {
        let now = Self::utc_now_ms();
        match req.kind.as_str() {
            "digicert-one" | "one" => {
                let key = uuid_key(&mut self.rng);
                let id = uuid_string(key);
                let user_type = match req.user_type.as_deref() {
                    None | Some("standard") => UserType::Standard,
                    Some("service") => UserType::Service,
                    Some(t) => return Err(werr(400, format!("unknown user_type {t:?}"))),
                };
                let actor = self.actor_party(req.actor_id.as_deref())?;
                let name = req
                    .user_name
                    .clone()
                    .unwrap_or_else(|| format!("user-{}", &id[..8]));
                let mut u = OneUser {
                    id: id.clone(),
                    party: 0,
                    user_type,
                    user_name: String::new(),
                    email: String::new(),
                    first_name: String::new(),
                    last_name: String::new(),
                    friendly_name: String::new(),
                    description: String::new(),
                    end_date: None,
                    status: req.status.clone().unwrap_or_else(|| "ACTIVE".into()),
                    roles: req.roles.clone(),
                    created_ms: now - now.rem_euclid(1000),
                };
                match user_type {
                    UserType::Standard => {
                        u.email = req
                            .email
                            .clone()
                            .unwrap_or_else(|| format!("{name}@example.com"));
                        u.first_name = req.first_name.clone().unwrap_or_default();
                        u.last_name = req.last_name.clone().unwrap_or_default();
                        u.user_name = name.clone();
                    }
                    UserType::Service => {
                        u.friendly_name = name.clone();
                        u.description = "Created by the simulator".into();
                        u.end_date = Some(req.end_date.clone().unwrap_or_else(|| {
                            ms_to_day(now + 365 * MS_PER_DAY)
                                .format("%Y-%m-%d")
                                .to_string()
                        }));
                    }
                }
                u.party = self.add_party(&id, &name);
                let rtype = if user_type == UserType::Service {
                    R_SERVICE_USER
                } else {
                    R_USER
                };
                let d = self.push_data(roles_data(&req.roles, &[]));
                self.insert_now(actor, u.party, A_CREATE, rtype, d, 7);
                if user_type == UserType::Standard && u.status != "PENDING" {
                    self.login_parties.push((u.party, u.created_ms));
                }
                let v = self.one_user_json(&u, false);
                self.one_users.push(u);
                Ok(v)
            }
            "certcentral" | "cc" => {
                let id = self.cc_users.iter().map(|u| u.id).max().unwrap_or(100_000) + 1;
                let mut roles = Vec::new();
                for r in &req.roles {
                    roles.push(cc_role(r)?);
                }
                if roles.is_empty() {
                    roles.push(4);
                }
                let name = req.user_name.clone().unwrap_or_else(|| format!("user{id}"));
                let status = req.status.clone().unwrap_or_else(|| "active".into());
                let u = CcUser {
                    id,
                    email: req
                        .email
                        .clone()
                        .unwrap_or_else(|| format!("{name}@example.com")),
                    username: name,
                    first_name: req.first_name.clone().unwrap_or_default(),
                    last_name: req.last_name.clone().unwrap_or_default(),
                    job_title: None,
                    telephone: None,
                    status,
                    last_login_date: None,
                    container: 0,
                    access_roles: roles,
                    user_type: "standard",
                };
                let v = self.cc_user_json(&u);
                self.cc_users.push(u);
                Ok(v)
            }
            k => Err(werr(
                400,
                format!("unknown kind {k:?} (digicert-one or certcentral)"),
            )),
        }
    }

    // ---- ground truth --------------------------------------------------------------------

    /// The ground truth as JSON text (see `Simulator::truth_json`).
    pub(crate) fn truth_text(&self, include_events: bool, alt_fields: bool) -> String {
        let mut out = String::with_capacity(if include_events {
            self.events.len() * 220 + 4096
        } else {
            4096
        });
        out.push_str("{\"account\":");
        out.push_str(&self.account_json);
        let _ = write!(out, ",\"total_events\":{}", self.events.len());
        let mut malformed = Vec::new();
        if include_events {
            out.push_str(",\"events\":[");
            let mut first = true;
            for (i, e) in self.events.iter().enumerate() {
                if e.malformed() != Malformed::None {
                    malformed.push(i);
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str("{\"id\":\"");
                push_uuid(&mut out, e.key);
                out.push_str("\",\"timestamp\":\"");
                push_timestamp(&mut out, e.ts_ms, e.offset_q, e.flags & F_MS != 0);
                let _ = write!(
                    out,
                    "\",\"day\":\"{}\",\"action\":\"{}\",\"status\":\"{}\",\"resource_type\":\"{}\",\"resource_id\":",
                    ms_to_day(e.ts_ms).format("%Y-%m-%d"),
                    ACTIONS.get(e.action as usize).copied().unwrap_or(""),
                    STATUSES.get(e.status as usize).copied().unwrap_or(""),
                    RTYPES.get(e.rtype as usize).copied().unwrap_or(""),
                );
                push_json_str(
                    &mut out,
                    self.parties
                        .get(e.resource as usize)
                        .map(|p| &*p.id)
                        .unwrap_or(""),
                );
                out.push_str(",\"user_id\":");
                push_json_str(
                    &mut out,
                    self.parties
                        .get(e.actor as usize)
                        .map(|p| &*p.id)
                        .unwrap_or(""),
                );
                out.push('}');
            }
            out.push(']');
        } else {
            malformed = (0..self.events.len())
                .filter(|&i| self.events[i].malformed() != Malformed::None)
                .collect();
        }
        out.push_str(",\"malformed\":[");
        for (n, &i) in malformed.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            let e = &self.events[i];
            out.push_str("{\"raw\":");
            push_json_str(&mut out, &self.event_text(i, alt_fields));
            let _ = write!(
                out,
                ",\"day\":\"{}\",\"reason\":\"{}\"}}",
                ms_to_day(e.ts_ms).format("%Y-%m-%d"),
                e.malformed().reason()
            );
        }
        out.push(']');
        let one: Vec<Value> = self
            .one_users
            .iter()
            .map(|u| self.one_user_json(u, false))
            .collect();
        let cc: Vec<Value> = self.cc_users.iter().map(|u| self.cc_user_json(u)).collect();
        out.push_str(",\"users\":");
        out.push_str(&json!({"digicert_one": one, "certcentral": cc}).to_string());
        let _ = write!(
            out,
            ",\"inserted\":{{\"drift\":{},\"late\":{},\"control\":{}}}}}",
            self.inserted_drift, self.inserted_late, self.inserted_control
        );
        out
    }
}

/// `POST /_sim/users` body.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CreateUser {
    pub kind: String,
    pub user_name: Option<String>,
    pub status: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub user_type: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub actor_id: Option<String>,
    /// Service users: the end date (YYYY-MM-DD); default a year from now.
    #[serde(default)]
    pub end_date: Option<String>,
}

fn cc_role(role: &str) -> Result<u32, WorldError> {
    if let Ok(id) = role.parse::<u32>() {
        if CC_ROLES.iter().any(|(i, _)| *i == id) {
            return Ok(id);
        }
    }
    CC_ROLES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(role))
        .map(|(i, _)| *i)
        .ok_or_else(|| werr(400, format!("unknown CertCentral role {role:?}")))
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A blank event at `ts_ms` with presentation details drawn at random: the id, whether ms are
/// shown, the served UTC offset and the source address.
fn decorate(rng: &mut ChaCha8Rng, ts_ms: i64) -> Event {
    let with_ms = rng.gen_bool(0.7);
    let ts_ms = if with_ms {
        ts_ms
    } else {
        ts_ms - ts_ms.rem_euclid(1000)
    };
    let offset_q = match rng.gen_range(0..100) {
        0 => 8,   // +02:00
        1 => -20, // -05:00
        2 => 22,  // +05:30
        _ => 0,
    };
    let mut flags = if with_ms { F_MS } else { 0 };
    let ip = match rng.gen_range(0..100) {
        0..=9 => 0,
        10..=14 => {
            flags |= F_IPV6;
            rng.gen_range(1..u32::MAX)
        }
        15..=54 => u32::from_be_bytes([203, 0, 113, rng.gen_range(1..255)]),
        55..=79 => u32::from_be_bytes([198, 51, 100, rng.gen_range(1..255)]),
        _ => u32::from_be_bytes([10, rng.gen(), rng.gen(), rng.gen_range(1..255)]),
    };
    Event {
        ts_ms,
        key: uuid_key(rng),
        actor: 0,
        resource: 0,
        data: NO_DATA,
        ip,
        desc: 0,
        action: A_LOGIN,
        rtype: R_USER,
        status: S_SUCCESS,
        offset_q,
        flags,
    }
}

/// Description texts; events store an index. `D_FAIL_HOSTILE..` are failed sign-ins whose
/// description quotes a hostile user name.
const DESCS: &[&str] = &[
    "User signed in",                          // 0
    "Sign-in failed: invalid credentials",     // 1
    "Sign-in failed: account locked",          // 2
    "Sign-in failed: MFA code rejected",       // 3
    "User signed out",                         // 4
    "API token generated",                     // 5
    "API token revoked",                       // 6
    "User created",                            // 7
    "User roles changed",                      // 8
    "Account settings updated",                // 9
    "Organization updated",                    // 10
    "Client authentication certificate added", // 11
    "User locked after failed sign-ins",       // 12
    "User unlocked",                           // 13
    "User deleted",                            // 14
    // 15.. hostile: one per HOSTILE entry, in order.
    "Sign-in failed for user '<script>alert(1)</script>'",
    "Sign-in failed for user '=HYPERLINK(\"http://evil\",\"x\")'",
    "Sign-in failed for user '+cmd|' /C calc'!A0'",
    "Sign-in failed for user '-2+3'",
    "Sign-in failed for user '@SUM(1)'",
    "Sign-in failed for user 'O'Brien \"the boss\"'",
    "Sign-in failed for user 'two\r\nlines'",
    "Sign-in failed for user 'tab\there'",
    "Sign-in failed for user '\u{202E}gnp.exe'",
    "Sign-in failed for user 'rocket 🚀 admin'",
    "Sign-in failed: Zoë Ünïcødé 名前 ﷽ \u{200B}\u{FEFF}x",
];
const D_FAIL_HOSTILE: u16 = 15;

/// Shared `data` texts; events store an index.
const DATA_TEMPLATES: &[&str] = &[
    "{\"auth_method\":\"password\"}",                  // 0
    "{\"auth_method\":\"saml\",\"idp\":\"corp-sso\"}", // 1
    "{\"token_name\":\"ci\",\"expires_in_days\":90}",  // 2
    "{\"changed\":[\"name\"]}",                        // 3
    "{\"changed\":[\"session_timeout\"],\"note\":\"<img src=x onerror=alert(1)>\"}", // 4
];
const D_LOGIN_PASSWORD: u32 = 0;
const D_TOKEN: u32 = 2;
const D_ACCOUNT: u32 = 3;
