//! The fault specification (`--faults SPEC`) and its parser.
//!
//! A SPEC is a comma-separated list of `name` or `name=value`. Request faults take a probability in
//! `0..=1` (a bare name means probability 1); arrival faults (`drift`, `late`) take a count (a bare
//! name means 1); modes (`bare`, `alt-fields`, ...) take no value, or `0`/`1`/`true`/`false`.
//! `slow-ms=N` sets the delay of the `slow` fault. `all` switches on a mix of everything, and later
//! items override earlier ones (`all,rate-limit=0` is everything but plain rate limits).

use std::fmt;

/// Default delay of a `slow` response: longer than any sane client timeout in tests.
pub const DEFAULT_SLOW_MS: u64 = 3000;

/// Default padding of a `huge-body` page: twice the client's default `max_response_bytes`.
pub const DEFAULT_HUGE_BODY_MB: u64 = 64;

/// Which faults are switched on, parsed from `--faults` (see [`FaultSpec::parse`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// 429 with `Retry-After: 1` (seconds).
    pub rate_limit: f64,
    /// 429 with `Retry-After` as an HTTP date 1–2 s ahead.
    pub rate_limit_date: f64,
    /// 429 `request_limit_exceeded` without `Retry-After` (CertCentral style).
    pub rate_limit_bare: f64,
    /// 500, 502 (non-JSON body) or 503 (sometimes with `Retry-After: 1`).
    pub server_error: f64,
    /// The response is delayed by `slow_ms`.
    pub slow: f64,
    /// Delay of a `slow` response, in milliseconds.
    pub slow_ms: u64,
    /// Status 200 but only the first half of the body is sent.
    pub truncate: f64,
    /// Audit-log and user lists are bare JSON arrays (no envelope, no total).
    pub bare: bool,
    /// The DigiCert ONE user list uses the `{total, offset, limit, items}` envelope.
    pub user_envelope: bool,
    /// The audit log is always newest first, whatever `sort` says.
    pub ignore_sort: bool,
    /// ~30% of events use the alternative fields of sibling services: `date` (RFC 3339 text, or
    /// epoch milliseconds as a number for half of them), flat `user_name`/`user_id`, the source
    /// address as `client_ip` or `ipAddress`, and an uppercase `status`.
    pub alt_fields: bool,
    /// Every audit-log page is padded to more than `huge_body_mb` MiB (a `"padding"` field of
    /// `x`, or whitespace in a bare array), streamed without a Content-Length.
    pub huge_body: bool,
    /// Size of the `huge-body` padding, in MiB.
    pub huge_body_mb: u64,
    /// DigiCert ONE user roles are objects `{id, code, name}` instead of codes.
    pub role_objects: bool,
    /// ~1% of the generated events are malformed (only read by `Simulator::new`).
    pub malformed: bool,
    /// Error bodies rotate through the documented shapes.
    pub error_shapes: bool,
    /// The first N audit-log requests with `offset > 0` first insert a newest event in their window.
    pub drift: u32,
    /// The first N audit-log requests first insert an event in an older day outside their window.
    pub late: u32,
    /// A busy account: every audit-log request first adds one event timestamped now (with
    /// `ignore-sort` it lands at offset 0 of today, pushing every page along).
    pub busy: bool,
    /// At most N requests per second (a token bucket holding a fifth of a second's worth): above
    /// it, 429 (`Retry-After: 1` on DigiCert ONE, none on CertCentral). 0: no cap.
    pub rate_cap: u32,
    /// Hostile: audit-log and user lists ignore `offset` (every page is the first page).
    pub repeat_pages: bool,
    /// Hostile: envelopes report a total of 1,000,000 whatever they hold.
    pub lying_total: bool,
    /// Hostile: audit-log and user-list pages are always full of new ids, made up on the fly
    /// (never stored, so the simulator's memory stays flat).
    pub endless: bool,
    /// Report Library: history polls a run takes to be `READY` (`report-polls`, default 2).
    pub report_polls: u32,
    /// Report Library: the first N runs created end `FAILED` (`report-failed`).
    pub report_failed: u32,
    /// Report Library: a file whose JSON is larger than this many KiB is served as a ZIP
    /// (`report-zip-kb`, default 2048: contract 2.3's 2 MB).
    pub report_zip_kb: u64,
    /// Report Library: rows per split file (`report-split-rows`, default 1,000,000).
    pub report_split_rows: usize,
}

/// Contract 2.3: a run takes a while; two history polls here.
pub const DEFAULT_REPORT_POLLS: u32 = 2;
/// Contract 2.3: files over 2 MB always come back as a ZIP.
pub const DEFAULT_REPORT_ZIP_KB: u64 = 2048;
/// Contract 2.3: at most 1,000,000 rows per file.
pub const DEFAULT_REPORT_SPLIT_ROWS: usize = 1_000_000;

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            rate_limit: 0.0,
            rate_limit_date: 0.0,
            rate_limit_bare: 0.0,
            server_error: 0.0,
            slow: 0.0,
            slow_ms: DEFAULT_SLOW_MS,
            truncate: 0.0,
            bare: false,
            user_envelope: false,
            ignore_sort: false,
            alt_fields: false,
            huge_body: false,
            huge_body_mb: DEFAULT_HUGE_BODY_MB,
            role_objects: false,
            malformed: false,
            error_shapes: false,
            drift: 0,
            late: 0,
            busy: false,
            rate_cap: 0,
            repeat_pages: false,
            lying_total: false,
            endless: false,
            report_polls: DEFAULT_REPORT_POLLS,
            report_failed: 0,
            report_zip_kb: DEFAULT_REPORT_ZIP_KB,
            report_split_rows: DEFAULT_REPORT_SPLIT_ROWS,
        }
    }
}

/// The names `FaultSpec::parse` accepts, for help texts and error messages.
pub const FAULT_NAMES: &[&str] = &[
    "all",
    "rate-limit",
    "rate-limit-date",
    "rate-limit-bare",
    "server-error",
    "slow",
    "slow-ms",
    "truncate",
    "bare",
    "user-envelope",
    "ignore-sort",
    "alt-fields",
    "huge-body",
    "huge-body-mb",
    "role-objects",
    "malformed",
    "error-shapes",
    "drift",
    "late",
    "busy",
    "rate-cap",
    "repeat-pages",
    "lying-total",
    "endless",
    "report-polls",
    "report-failed",
    "report-zip-kb",
    "report-split-rows",
];

/// The kinds of request fault, in the order they are rolled for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFault {
    RateLimit,
    RateLimitDate,
    RateLimitBare,
    ServerError,
    Slow,
    Truncate,
    /// Over the `rate-cap` (not rolled: decided by the token bucket).
    RateCap,
}

impl RequestFault {
    pub const ALL: [RequestFault; 6] = [
        RequestFault::RateLimit,
        RequestFault::RateLimitDate,
        RequestFault::RateLimitBare,
        RequestFault::ServerError,
        RequestFault::Slow,
        RequestFault::Truncate,
    ];

    /// The fault's name in a SPEC (and in `/_sim/stats`).
    pub fn name(self) -> &'static str {
        match self {
            RequestFault::RateLimit => "rate-limit",
            RequestFault::RateLimitDate => "rate-limit-date",
            RequestFault::RateLimitBare => "rate-limit-bare",
            RequestFault::ServerError => "server-error",
            RequestFault::Slow => "slow",
            RequestFault::Truncate => "truncate",
            RequestFault::RateCap => "rate-cap",
        }
    }
}

impl fmt::Display for RequestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FaultSpec {
    /// Parse a SPEC. An empty SPEC (or `none`) switches everything off.
    pub fn parse(spec: &str) -> Result<FaultSpec, String> {
        let mut out = FaultSpec::default();
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() || item == "none" {
                continue;
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (item, None),
            };
            match name {
                "all" => {
                    if value.is_some() {
                        return Err(format!("fault `all` takes no value: {item}"));
                    }
                    out = FaultSpec::all();
                }
                "rate-limit" => out.rate_limit = probability(name, value)?,
                "rate-limit-date" => out.rate_limit_date = probability(name, value)?,
                "rate-limit-bare" => out.rate_limit_bare = probability(name, value)?,
                "server-error" => out.server_error = probability(name, value)?,
                "slow" => out.slow = probability(name, value)?,
                "truncate" => out.truncate = probability(name, value)?,
                "slow-ms" => {
                    let v = value.ok_or_else(|| "fault `slow-ms` needs a value".to_string())?;
                    out.slow_ms = v
                        .parse()
                        .map_err(|_| format!("fault `slow-ms`: not a number of ms: {v:?}"))?;
                }
                "bare" => out.bare = switch(name, value)?,
                "user-envelope" => out.user_envelope = switch(name, value)?,
                "ignore-sort" => out.ignore_sort = switch(name, value)?,
                "alt-fields" => out.alt_fields = switch(name, value)?,
                "huge-body" => out.huge_body = switch(name, value)?,
                "huge-body-mb" => {
                    let v =
                        value.ok_or_else(|| "fault `huge-body-mb` needs a value".to_string())?;
                    out.huge_body_mb = v
                        .parse()
                        .ok()
                        .filter(|mb| (1..=4096).contains(mb))
                        .ok_or_else(|| {
                            format!(
                                "fault `huge-body-mb`: a number of MiB from 1 to 4096, got {v:?}"
                            )
                        })?;
                }
                "role-objects" => out.role_objects = switch(name, value)?,
                "malformed" => out.malformed = switch(name, value)?,
                "error-shapes" => out.error_shapes = switch(name, value)?,
                "drift" => out.drift = count(name, value)?,
                "late" => out.late = count(name, value)?,
                "busy" => out.busy = switch(name, value)?,
                "rate-cap" => {
                    let v = value
                        .ok_or_else(|| "fault `rate-cap` needs requests per second".to_string())?;
                    out.rate_cap = v.parse().map_err(|_| {
                        format!("fault `rate-cap`: not a number of requests per second: {v:?}")
                    })?;
                }
                "repeat-pages" => out.repeat_pages = switch(name, value)?,
                "lying-total" => out.lying_total = switch(name, value)?,
                "endless" => out.endless = switch(name, value)?,
                "report-polls" => out.report_polls = count(name, value)?,
                "report-failed" => out.report_failed = count(name, value)?,
                "report-zip-kb" => out.report_zip_kb = u64::from(count(name, value)?),
                "report-split-rows" => out.report_split_rows = count(name, value)?.max(1) as usize,
                _ => {
                    return Err(format!(
                        "unknown fault `{name}` (known: {})",
                        FAULT_NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The mix `all` switches on: every kind, request faults at a few percent each, so a client
    /// with sane retries still finishes (so not `huge-body`, which no client should read).
    pub fn all() -> FaultSpec {
        FaultSpec {
            rate_limit: 0.03,
            rate_limit_date: 0.02,
            rate_limit_bare: 0.02,
            server_error: 0.03,
            slow: 0.01,
            slow_ms: DEFAULT_SLOW_MS,
            truncate: 0.02,
            bare: true,
            user_envelope: true,
            ignore_sort: true,
            alt_fields: true,
            huge_body: false,
            huge_body_mb: DEFAULT_HUGE_BODY_MB,
            role_objects: true,
            malformed: true,
            error_shapes: true,
            drift: 3,
            late: 3,
            // The hostile modes and `busy` are never part of `all`: a client cannot finish
            // against them by design.
            ..FaultSpec::default()
        }
    }

    /// The probability of one request fault.
    pub fn probability_of(&self, fault: RequestFault) -> f64 {
        match fault {
            RequestFault::RateLimit => self.rate_limit,
            RequestFault::RateLimitDate => self.rate_limit_date,
            RequestFault::RateLimitBare => self.rate_limit_bare,
            RequestFault::ServerError => self.server_error,
            RequestFault::Slow => self.slow,
            RequestFault::Truncate => self.truncate,
            RequestFault::RateCap => 0.0,
        }
    }
}

fn probability(name: &str, value: Option<&str>) -> Result<f64, String> {
    let Some(v) = value else { return Ok(1.0) };
    match v.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "fault `{name}`: probability must be between 0 and 1, got {v:?}"
        )),
    }
}

fn count(name: &str, value: Option<&str>) -> Result<u32, String> {
    let Some(v) = value else { return Ok(1) };
    v.parse::<u32>()
        .map_err(|_| format!("fault `{name}`: count must be a whole number, got {v:?}"))
}

fn switch(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("1") | Some("true") | Some("on") => Ok(true),
        Some("0") | Some("false") | Some("off") => Ok(false),
        Some(v) => Err(format!("fault `{name}` is on or off, got {v:?}")),
    }
}
