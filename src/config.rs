//! Configuration: the TOML file becomes a validated [`Config`] once, at the boundary.
//!
//! Every problem in a file is collected and reported together, each naming the file and the key
//! (`accounts[1].region`), so an operator fixes a config in one round. Unknown keys are errors (a
//! typo must not silently fall back to a default). Secrets never sit inline: `api_key_env` names an
//! environment variable and `api_key_file` a file (for example a systemd credential); both are read
//! here through a lookup the caller passes in, so nothing below the entry point reads the process
//! environment itself.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::alert::rules::{self, BusinessHours, Cidr, Rule, RuleKind, Severity};
use crate::report::{ReportFormat, ReportKind};
use crate::schedule::{Cron, Job};
use crate::secret::Secret;

/// Which DigiCert API an account lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// DigiCert ONE Account Manager, `/account/api/v1`, header `x-api-key`.
    DigicertOne,
    /// CertCentral Services API, `/services/v2`, header `X-DC-DEVKEY`.
    CertCentral,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::DigicertOne => "digicert-one",
            AccountKind::CertCentral => "certcentral",
        }
    }
}

/// One client-side rate-limit window: at most `requests` per `per_secs` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per_secs: u32,
}

/// How a failed request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts at most).
    pub max_retries: u32,
    /// First backoff delay; doubles each retry, with jitter.
    pub base_delay: Duration,
    /// Longest single wait, also the longest `Retry-After` honoured in a pass.
    pub max_delay: Duration,
}

/// A DigiCert ONE mTLS identity: a PEM file holding the client certificate and its private key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub pem_file: PathBuf,
}

#[derive(Debug, Clone)]
pub enum Credential {
    ApiKey(Secret),
    ClientCert(ClientCert),
}

/// A validated account.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    /// Scheme, host and port; the API paths are appended by the client.
    pub base_url: Url,
    pub credential: Credential,
    /// Audit-log action filter; empty means every action.
    pub actions: Vec<String>,
    pub backfill_days: u32,
    pub collection: CollectionSettings,
}

/// Collection settings: `[collection]` holds the defaults, each `[[accounts]]` may override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSettings {
    pub page_size: u32,
    pub request_timeout: Duration,
    pub overlap_days: u32,
    pub rate_limits: Vec<RateLimit>,
    pub retry: RetryPolicy,
    /// How many times one window is re-read within a pass when paging was seen to shift.
    pub max_window_rereads: u32,
    /// The most pages one read may take: a day window of the audit log, or one user listing. A
    /// server that keeps serving full pages past it (a lying total, new ids on every page) ends
    /// the account's pass with an error instead of running for ever.
    pub max_pages_per_window: u32,
    /// The largest response body read; a larger one fails its request (not retried).
    pub max_response_bytes: u64,
    /// Day windows of one account read at once during a backfill (within the throttle), so the
    /// network and the writer overlap.
    pub concurrent_windows: u32,
}

impl Default for CollectionSettings {
    fn default() -> Self {
        CollectionSettings {
            page_size: default_page_size(),
            request_timeout: Duration::from_secs(default_request_timeout_secs()),
            overlap_days: default_overlap_days(),
            rate_limits: default_rate_limits(),
            retry: RetryPolicy {
                max_retries: default_max_retries(),
                base_delay: Duration::from_millis(default_retry_base_ms()),
                max_delay: Duration::from_secs(default_retry_max_secs()),
            },
            max_window_rereads: default_max_window_rereads(),
            max_pages_per_window: default_max_pages_per_window(),
            max_response_bytes: default_max_response_bytes(),
            concurrent_windows: default_concurrent_windows(),
        }
    }
}

/// The server maximum of the contract (section 1.2): fewer requests per event.
fn default_page_size() -> u32 {
    1000
}
fn default_request_timeout_secs() -> u64 {
    30
}
/// Today and yesterday are re-read every pass: `from`/`to` are day-granular.
fn default_overlap_days() -> u32 {
    2
}
/// None configured: each API's own default (`api::throttle`): CertCentral's documented windows
/// (contract 2.4), and for DigiCert ONE, which publishes none, no fixed cap but a pace learned
/// from the server's 429s.
fn default_rate_limits() -> Vec<RateLimit> {
    Vec::new()
}
fn default_max_retries() -> u32 {
    8
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_secs() -> u64 {
    120
}
fn default_max_window_rereads() -> u32 {
    5
}
/// 500 pages of the default 1000 events: half a million events in one UTC day (or users in one
/// listing), far past any real account; a server that never ends a read costs at most this many
/// requests.
fn default_max_pages_per_window() -> u32 {
    500
}
/// 32 MiB: a full page of 1000 events is about 0.6 MB, so this is 50 times the largest page the
/// contract allows, and still a bounded amount of memory per account.
/// 4 day windows in flight: enough to keep the writer busy while requests wait on the network
/// (`cargo bench --bench collect`), few enough that a server sees a handful of requests at once.
fn default_concurrent_windows() -> u32 {
    4
}
fn default_max_response_bytes() -> u64 {
    32 * 1024 * 1024
}
fn default_backfill_days() -> u32 {
    90
}

/// `[users]`: user sync and invitation polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    /// An invitation not accepted after this many days is stale.
    pub stale_invite_days: u32,
}

impl Default for UserSettings {
    fn default() -> Self {
        UserSettings {
            stale_invite_days: default_stale_invite_days(),
        }
    }
}

/// Two weeks: long enough for holidays, short enough that a forgotten invitation is noticed.
fn default_stale_invite_days() -> u32 {
    14
}

/// `[reports]`: the scheduled report set (`auditwarden reports run`; the scheduler that runs it
/// on `schedule` is the daemon's) and the defaults of `auditwarden report`.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    pub kinds: Vec<ReportKind>,
    pub formats: Vec<ReportFormat>,
    /// Absolute, or relative to the config file's directory.
    pub output_dir: PathBuf,
    /// When the daemon writes the set, in `time_zone` (validated here; run by the scheduler).
    /// `None` (`schedule = ""`): only `auditwarden reports run` writes it.
    pub schedule: Option<Cron>,
    /// Times are shown in UTC and in this zone; `--from`/`--to` dates are days in this zone.
    pub time_zone: chrono_tz::Tz,
    /// Report runs older than this many days are deleted by the next run; 0 keeps them all.
    pub retention_days: u32,
    /// A user with no activity for at least this many days is dormant.
    pub dormant_days: u32,
    /// The Ed25519 private key (PKCS#8 PEM from `auditwarden keygen`; a file or a systemd
    /// credential) that signs each run's manifest. `None`: runs are unsigned. The path only: the
    /// key is read when a run is signed, never printed.
    pub signing_key_file: Option<PathBuf>,
}

/// Every report, in every format.
fn default_report_kinds() -> Vec<ReportKind> {
    ReportKind::ALL.to_vec()
}
fn default_report_formats() -> Vec<ReportFormat> {
    ReportFormat::ALL.to_vec()
}
fn default_report_dir() -> &'static str {
    "reports"
}
/// A year of daily reports: the usual audit look-back.
fn default_report_retention_days() -> u32 {
    400
}
/// The common access-review threshold (e.g. PCI DSS 8.2.6: inactive accounts within 90 days).
fn default_dormant_days() -> u32 {
    90
}

impl ReportSettings {
    /// The defaults, with relative paths under `base_dir`.
    pub fn defaults(base_dir: &Path) -> ReportSettings {
        ReportSettings {
            kinds: default_report_kinds(),
            formats: default_report_formats(),
            output_dir: resolve(base_dir, default_report_dir()),
            // The default expression is a constant covered by a unit test in `schedule`.
            schedule: Job::Reports.default_schedule().parse().ok(),
            time_zone: chrono_tz::UTC,
            retention_days: default_report_retention_days(),
            dormant_days: default_dormant_days(),
            signing_key_file: None,
        }
    }
}

/// `[alerts]`: rules, sinks and how deliveries are retried.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Changes older than this when first evaluated are recorded as suppressed, not sent.
    pub backfill_horizon: Duration,
    pub delivery: DeliveryPolicy,
    /// The configured rules, or [`rules::default_rules`] when none is configured.
    pub rules: Vec<Rule>,
    pub sinks: Vec<SinkConfig>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            backfill_horizon: Duration::from_secs(default_backfill_horizon_hours() * 3600),
            delivery: DeliveryPolicy::default(),
            rules: rules::default_rules(),
            sinks: Vec::new(),
        }
    }
}

/// Bounded retries of one delivery within one run; after the last, the delivery waits for a
/// later run (backing off from `later_base_delay` up to `later_max_delay`) until it has been
/// failing for `give_up_after`; then it is failed (the dead letter) until `auditwarden alerts
/// retry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
    /// The first wait between runs (doubling per run that could not send it, with jitter).
    pub later_base_delay: Duration,
    pub later_max_delay: Duration,
    /// How long a delivery may keep failing (from the first run that could not send it) before it
    /// becomes a dead letter; zero gives up at the end of the first such run.
    pub give_up_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: default_alert_max_attempts(),
            base_delay: Duration::from_millis(default_alert_retry_base_ms()),
            max_delay: Duration::from_secs(default_alert_retry_max_secs()),
            request_timeout: Duration::from_secs(default_alert_timeout_secs()),
            later_base_delay: Duration::from_secs(default_alert_retry_later_base_secs()),
            later_max_delay: Duration::from_secs(default_alert_retry_later_max_secs()),
            give_up_after: Duration::from_secs(default_alert_give_up_after_hours() * 3600),
        }
    }
}

/// A day: the first collection of a long backfill reports only what happened since yesterday.
fn default_backfill_horizon_hours() -> u64 {
    24
}
fn default_alert_max_attempts() -> u32 {
    5
}
fn default_alert_retry_base_ms() -> u64 {
    1000
}
fn default_alert_retry_max_secs() -> u64 {
    60
}
fn default_alert_timeout_secs() -> u64 {
    10
}
/// A minute after the run that could not send it, doubling per run.
fn default_alert_retry_later_base_secs() -> u64 {
    60
}
/// At least one try an hour during a long outage.
fn default_alert_retry_later_max_secs() -> u64 {
    3600
}
/// A receiver down for a day (a weekend's first day, a broken deploy) still gets its alerts.
fn default_alert_give_up_after_hours() -> u64 {
    24
}
/// Slack allows about one message per second per incoming webhook.
fn default_slack_interval_ms() -> u64 {
    1100
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Signed JSON POST (Standard Webhooks).
    Webhook { url: Url, secret: Secret },
    /// Slack incoming webhook; the URL is itself a credential.
    Slack { url: Secret, min_interval: Duration },
    /// A program run without a shell, the alert JSON on stdin.
    Command {
        program: PathBuf,
        args: Vec<String>,
        timeout: Duration,
    },
}

impl SinkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SinkKind::Webhook { .. } => "webhook",
            SinkKind::Slack { .. } => "slack",
            SinkKind::Command { .. } => "command",
        }
    }
}

/// `[schedule]`: when `auditwarden run` starts each job.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// The zone cron expressions are read in; UTC unless configured.
    pub time_zone: chrono_tz::Tz,
    /// Each job and its schedule; a job configured with `""` is absent (never runs).
    pub jobs: BTreeMap<Job, Cron>,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        let mut jobs = BTreeMap::new();
        for j in Job::ALL.into_iter().filter(|j| *j != Job::Reports) {
            // The defaults are constants covered by a unit test in `schedule`.
            if let Ok(c) = j.default_schedule().parse() {
                jobs.insert(j, c);
            }
        }
        ScheduleSettings {
            time_zone: chrono_tz::UTC,
            jobs,
        }
    }
}

/// `[daemon]`: how `auditwarden run` stops, backs off and reports its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// After SIGTERM/SIGINT, running jobs get this long to reach a safe point.
    pub shutdown_grace: Duration,
    /// First wait after a failed job run (doubles per consecutive failure, with jitter).
    pub backoff_base: Duration,
    /// Longest wait after failures.
    pub backoff_max: Duration,
    /// The health and metrics listener; `None` when not configured.
    pub listen: Option<SocketAddr>,
    /// `/readyz` fails when an account's last successful collection is older than this.
    pub ready_max_age: Duration,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            shutdown_grace: Duration::from_secs(default_shutdown_grace_secs()),
            backoff_base: Duration::from_secs(default_backoff_base_secs()),
            backoff_max: Duration::from_secs(default_backoff_max_secs()),
            listen: None,
            ready_max_age: Duration::from_secs(default_ready_max_age_secs()),
        }
    }
}

/// Under systemd's default TimeoutStopSec (90 s), leaving room for the final commit.
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_backoff_base_secs() -> u64 {
    30
}
/// One hour: a broken account is still tried every hour, never hammered.
fn default_backoff_max_secs() -> u64 {
    3600
}
/// Two hours: several missed 15-minute passes before monitoring hears about it.
fn default_ready_max_age_secs() -> u64 {
    7200
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Absolute, or relative to the working directory when the config came from elsewhere.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from (for messages).
    pub source: PathBuf,
    pub store: StoreConfig,
    pub accounts: Vec<Account>,
    pub users: UserSettings,
    pub reports: ReportSettings,
    pub alerts: AlertSettings,
    pub schedule: ScheduleSettings,
    pub daemon: DaemonSettings,
}

impl Config {
    /// When `job` runs under `auditwarden run`, and the zone its expression is read in (the
    /// report set follows `[reports]`, every other job `[schedule]`). `None`: switched off.
    pub fn job_schedule(&self, job: Job) -> Option<(&Cron, chrono_tz::Tz)> {
        let tz = match job {
            Job::Reports => self.reports.time_zone,
            _ => self.schedule.time_zone,
        };
        self.schedule.jobs.get(&job).map(|c| (c, tz))
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The accounts a command works on: all, or the one named (an unknown name is an error).
    pub fn select_accounts(&self, name: Option<&str>) -> Result<Vec<&Account>, String> {
        match name {
            None => Ok(self.accounts.iter().collect()),
            Some(n) => match self.account(n) {
                Some(a) => Ok(vec![a]),
                None => Err(format!(
                    "no account named {n:?} in {} (known: {})",
                    self.source.display(),
                    self.accounts
                        .iter()
                        .map(|a| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration {} ({} problem{}):",
            self.file.display(),
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            // No message may show a URL's password, whatever key it came from.
            let p = crate::text::redact_userinfo(p);
            write!(f, "\n  - {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where secrets come from. The binary passes the process environment; tests pass a map.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A TOML syntax error as `line L, column C: message`. Not `toml`'s own rendering: that quotes
/// the offending line, which may hold a password (in a URL, say).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    let lines: Vec<&str> = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let message = crate::text::one_line(&lines.join("; "));
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("not valid TOML at line {line}, column {column}: {message}")
        }
        None => format!("not valid TOML: {message}"),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// Read and validate a configuration file.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![format!("cannot read the file: {e}")],
    })?;
    parse(&text, path, env)
}

/// Validate configuration text; `path` names the file in messages and anchors relative paths.
pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(vec![toml_problem(text, &e)]))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut problems = Vec::new();
    let mut root = Section::new(String::new(), &table);

    let store = match root.table("store", &mut problems) {
        Some(t) => {
            let mut s = Section::new("store".into(), t);
            let p = s.string("path", &mut problems);
            s.finish(&mut problems);
            p.map(|p| resolve(&base_dir, &p))
        }
        None => {
            problems.push("store: missing section [store] (with path = \"...\")".into());
            None
        }
    };
    let store_path = match store {
        Some(p) => Some(p),
        None => {
            if !problems.iter().any(|p| p.starts_with("store")) {
                problems.push("store.path: missing (the SQLite database file)".into());
            }
            None
        }
    };

    let defaults = match root.table("collection", &mut problems) {
        Some(t) => {
            let mut s = Section::new("collection".into(), t);
            let d = collection_settings(&mut s, &CollectionSettings::default(), &mut problems);
            s.finish(&mut problems);
            d
        }
        None => CollectionSettings::default(),
    };

    let users = match root.table("users", &mut problems) {
        Some(t) => {
            let mut s = Section::new("users".into(), t);
            let mut u = UserSettings::default();
            if let Some(v) = s.integer("stale_invite_days", 1, 3650, &mut problems) {
                u.stale_invite_days = v as u32;
            }
            s.finish(&mut problems);
            u
        }
        None => UserSettings::default(),
    };

    let reports = match root.table("reports", &mut problems) {
        Some(t) => {
            let mut s = Section::new("reports".into(), t);
            let r = report_settings(&mut s, &base_dir, &mut problems);
            s.finish(&mut problems);
            r
        }
        None => ReportSettings::defaults(&base_dir),
    };

    let alerts = match root.table("alerts", &mut problems) {
        Some(t) => alert_settings(t, &base_dir, env, &mut problems),
        None => AlertSettings::default(),
    };

    let schedule = match root.table("schedule", &mut problems) {
        Some(t) => schedule_settings(t, &mut problems),
        None => ScheduleSettings::default(),
    };
    let daemon = match root.table("daemon", &mut problems) {
        Some(t) => daemon_settings(t, &mut problems),
        None => DaemonSettings::default(),
    };

    let mut accounts = Vec::new();
    match root.take("accounts") {
        None => problems.push("accounts: no [[accounts]] configured".into()),
        Some(toml::Value::Array(items)) => {
            let mut names = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key = format!("accounts[{i}]");
                let Some(t) = item.as_table() else {
                    problems.push(format!("{key}: must be a table ([[accounts]])"));
                    continue;
                };
                if let Some(a) = account(&key, t, &defaults, &base_dir, env, &mut problems) {
                    if !names.insert(a.name.clone()) {
                        problems.push(format!("{key}.name: {:?} is used twice", a.name));
                    }
                    accounts.push(a);
                }
            }
            if items.is_empty() {
                problems.push("accounts: no [[accounts]] configured".into());
            }
        }
        Some(_) => problems.push("accounts: must be an array of tables ([[accounts]])".into()),
    }
    root.finish(&mut problems);

    let mut schedule = schedule;
    if let Some(c) = &reports.schedule {
        schedule.jobs.insert(Job::Reports, c.clone());
    }
    match store_path {
        Some(path_) if problems.is_empty() => Ok(Config {
            source: path.to_path_buf(),
            store: StoreConfig { path: path_ },
            accounts,
            users,
            reports,
            alerts,
            schedule,
            daemon,
        }),
        _ => Err(fail(problems)),
    }
}

fn report_settings(
    s: &mut Section<'_>,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> ReportSettings {
    let mut r = ReportSettings::defaults(base_dir);
    if let Some(kinds) = s.string_list("kinds", problems) {
        let key = s.key("kinds");
        r.kinds.clear();
        for (i, k) in kinds.iter().enumerate() {
            match ReportKind::from_name(k) {
                Some(k) if !r.kinds.contains(&k) => r.kinds.push(k),
                Some(_) => problems.push(format!("{key}[{i}]: {k:?} is listed twice")),
                None => problems.push(format!(
                    "{key}[{i}]: {k:?} is not one of {}",
                    ReportKind::ALL
                        .map(|k| format!("{:?}", k.as_str()))
                        .join(", ")
                )),
            }
        }
    }
    if let Some(formats) = s.string_list("formats", problems) {
        let key = s.key("formats");
        r.formats.clear();
        for (i, f) in formats.iter().enumerate() {
            match ReportFormat::from_name(f) {
                Some(f) if !r.formats.contains(&f) => r.formats.push(f),
                Some(_) => problems.push(format!("{key}[{i}]: {f:?} is listed twice")),
                None => problems.push(format!(
                    "{key}[{i}]: {f:?} is not one of \"csv\", \"html\", \"json\""
                )),
            }
        }
        if r.formats.is_empty() {
            problems.push(format!("{key}: lists no format"));
        }
    }
    if let Some(d) = s.string("output_dir", problems) {
        if d.trim().is_empty() {
            problems.push(format!("{}: empty path", s.key("output_dir")));
        } else {
            r.output_dir = resolve(base_dir, &d);
        }
    }
    if let Some(text) = s.string("schedule", problems) {
        match text.parse::<Cron>() {
            _ if text.trim().is_empty() => r.schedule = None,
            Ok(sch) => r.schedule = Some(sch),
            Err(e) => problems.push(format!("{}: {e}", s.key("schedule"))),
        }
    }
    if let Some(tz) = s.string("time_zone", problems) {
        match tz.parse::<chrono_tz::Tz>() {
            Ok(z) => r.time_zone = z,
            Err(_) => problems.push(format!(
                "{}: {tz:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Berlin\")",
                s.key("time_zone")
            )),
        }
    }
    if let Some(v) = s.integer("retention_days", 0, 36_500, problems) {
        r.retention_days = v as u32;
    }
    if let Some(v) = s.integer("dormant_days", 1, 3650, problems) {
        r.dormant_days = v as u32;
    }
    if let Some(f) = s.string("signing_key_file", problems) {
        if f.trim().is_empty() {
            problems.push(format!("{}: empty path", s.key("signing_key_file")));
        } else {
            r.signing_key_file = Some(resolve(base_dir, &f));
        }
    }
    r
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

fn schedule_settings(t: &toml::Table, problems: &mut Vec<String>) -> ScheduleSettings {
    let mut out = ScheduleSettings::default();
    let mut s = Section::new("schedule".into(), t);
    if let Some(z) = s.string("time_zone", problems) {
        match z.parse::<chrono_tz::Tz>() {
            Ok(tz) => out.time_zone = tz,
            Err(_) => problems.push(format!(
                "{}: {z:?} is not an IANA time zone (e.g. \"UTC\", \"Europe/Zurich\")",
                s.key("time_zone")
            )),
        }
    }
    // The report set is scheduled by `[reports] schedule` (the reports issue's key).
    for job in Job::ALL.into_iter().filter(|j| *j != Job::Reports) {
        let Some(text) = s.string(job.as_str(), problems) else {
            continue;
        };
        if text.trim().is_empty() {
            out.jobs.remove(&job);
            continue;
        }
        match text.parse::<Cron>() {
            Ok(c) => {
                out.jobs.insert(job, c);
            }
            Err(e) => problems.push(format!("{}: {e}", s.key(job.as_str()))),
        }
    }
    s.finish(problems);
    out
}

fn daemon_settings(t: &toml::Table, problems: &mut Vec<String>) -> DaemonSettings {
    let mut d = DaemonSettings::default();
    let mut s = Section::new("daemon".into(), t);
    if let Some(v) = s.integer("shutdown_grace_secs", 1, 3600, problems) {
        d.shutdown_grace = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("backoff_base_secs", 1, 86_400, problems) {
        d.backoff_base = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("backoff_max_secs", 1, 7 * 86_400, problems) {
        d.backoff_max = Duration::from_secs(v as u64);
    }
    if d.backoff_max < d.backoff_base {
        problems.push(format!(
            "{}: must be at least backoff_base_secs",
            s.key("backoff_max_secs")
        ));
    }
    if let Some(v) = s.integer("ready_max_age_secs", 1, 30 * 86_400, problems) {
        d.ready_max_age = Duration::from_secs(v as u64);
    }
    if let Some(l) = s.string("listen", problems) {
        if !l.is_empty() {
            match l.parse::<SocketAddr>() {
                Ok(a) => d.listen = Some(a),
                Err(_) => problems.push(format!(
                    "{}: {l:?} is not an address:port (e.g. \"127.0.0.1:9464\")",
                    s.key("listen")
                )),
            }
        }
    }
    s.finish(problems);
    d
}

fn alert_settings(
    t: &toml::Table,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> AlertSettings {
    let mut a = AlertSettings::default();
    let mut s = Section::new("alerts".into(), t);
    if let Some(v) = s.integer("backfill_horizon_hours", 0, 24 * 3650, problems) {
        a.backfill_horizon = Duration::from_secs(v as u64 * 3600);
    }
    if let Some(v) = s.integer("max_attempts", 1, 100, problems) {
        a.delivery.max_attempts = v as u32;
    }
    if let Some(v) = s.integer("retry_base_ms", 1, 600_000, problems) {
        a.delivery.base_delay = Duration::from_millis(v as u64);
    }
    if let Some(v) = s.integer("retry_max_secs", 1, 86_400, problems) {
        a.delivery.max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("request_timeout_secs", 1, 3600, problems) {
        a.delivery.request_timeout = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("retry_later_base_secs", 0, 86_400, problems) {
        a.delivery.later_base_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("retry_later_max_secs", 1, 7 * 86_400, problems) {
        a.delivery.later_max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("give_up_after_hours", 0, 24 * 365, problems) {
        a.delivery.give_up_after = Duration::from_secs(v as u64 * 3600);
    }
    if let Some(items) = table_array(&mut s, "rules", problems) {
        let mut names = HashSet::new();
        a.rules = Vec::new();
        for (i, t) in items {
            let key = format!("alerts.rules[{i}]");
            if let Some(r) = alert_rule(&key, t, problems) {
                if !names.insert(r.name.clone()) {
                    problems.push(format!("{key}.name: {:?} is used twice", r.name));
                }
                a.rules.push(r);
            }
        }
    }
    if let Some(items) = table_array(&mut s, "sinks", problems) {
        let mut names = HashSet::new();
        for (i, t) in items {
            let key = format!("alerts.sinks[{i}]");
            if let Some(k) = alert_sink(&key, t, base_dir, env, problems) {
                if !names.insert(k.name.clone()) {
                    problems.push(format!("{key}.name: {:?} is used twice", k.name));
                }
                a.sinks.push(k);
            }
        }
    }
    s.finish(problems);
    a
}

/// An array of tables (`[[alerts.rules]]`), with each item's index.
fn table_array<'a>(
    s: &mut Section<'a>,
    k: &str,
    problems: &mut Vec<String>,
) -> Option<Vec<(usize, &'a toml::Table)>> {
    let key = s.key(k);
    match s.take(k)? {
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_table() {
                    Some(t) => out.push((i, t)),
                    None => problems.push(format!("{key}[{i}]: must be a table ([[{key}]])")),
                }
            }
            Some(out)
        }
        _ => {
            problems.push(format!("{key}: must be an array of tables ([[{key}]])"));
            None
        }
    }
}

fn required_name(s: &mut Section<'_>, problems: &mut Vec<String>) -> Option<String> {
    match s.string("name", problems) {
        None => {
            if !s.has("name") {
                problems.push(format!("{}: missing", s.key("name")));
            }
            None
        }
        Some(n) if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => {
            problems.push(format!(
                "{}: {n:?} must be 1 to 64 printable characters",
                s.key("name")
            ));
            None
        }
        Some(n) => Some(n),
    }
}

fn alert_rule(key: &str, t: &toml::Table, problems: &mut Vec<String>) -> Option<Rule> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = required_name(&mut s, problems);
    let severity = match s.string("severity", problems) {
        None => Some(Severity::High),
        Some(v) => Severity::parse(&v).or_else(|| {
            problems.push(format!(
                "{key}.severity: {v:?} is not one of low, medium, high, critical"
            ));
            None
        }),
    };
    let kind_name = s.string("kind", problems);
    let roles = s.string_list("roles", problems);
    let kind = match kind_name.as_deref() {
        Some("privileged-role-grant") => Some(RuleKind::PrivilegedRoleGrant),
        Some("self-grant") => Some(RuleKind::SelfGrant),
        Some("service-actor-grant") => Some(RuleKind::ServiceActorGrant),
        Some("off-hours-grant") => {
            let mut h = BusinessHours::default();
            if let Some(tz) = s.string("timezone", problems) {
                match tz.parse::<chrono_tz::Tz>() {
                    Ok(z) => h.timezone = z,
                    Err(_) => problems.push(format!(
                        "{key}.timezone: {tz:?} is not an IANA time zone (e.g. \"Europe/Zurich\")"
                    )),
                }
            }
            if let Some(v) = s.integer("business_hours_start", 0, 23, problems) {
                h.start_hour = v as u32;
            }
            if let Some(v) = s.integer("business_hours_end", 1, 24, problems) {
                h.end_hour = v as u32;
            }
            if h.start_hour >= h.end_hour {
                problems.push(format!(
                    "{key}.business_hours_end: must be after business_hours_start"
                ));
            }
            if let Some(days) = s.string_list("business_days", problems) {
                h.days = Vec::new();
                for (i, d) in days.iter().enumerate() {
                    match d.parse::<chrono::Weekday>() {
                        Ok(w) => h.days.push(w),
                        Err(_) => problems.push(format!(
                            "{key}.business_days[{i}]: {d:?} is not a weekday (mon .. sun)"
                        )),
                    }
                }
            }
            Some(RuleKind::OffHoursGrant(h))
        }
        Some("source-ip-outside") => {
            let mut nets = Vec::new();
            match s.string_list("cidrs", problems) {
                None if !s.has("cidrs") => problems.push(format!(
                    "{key}.cidrs: missing (the networks grants may come from, e.g. [\"10.0.0.0/8\"])"
                )),
                None => {}
                Some(list) => {
                    for (i, c) in list.iter().enumerate() {
                        match Cidr::parse(c) {
                            Some(n) => nets.push(n),
                            None => problems.push(format!(
                                "{key}.cidrs[{i}]: {c:?} is not an address or network like 10.0.0.0/8"
                            )),
                        }
                    }
                }
            }
            Some(RuleKind::SourceIpOutside(nets))
        }
        Some("dormant-or-invited-grant") => Some(RuleKind::DormantOrInvitedGrant {
            dormant_days: s
                .integer("dormant_days", 1, 3650, problems)
                .map(|v| v as u32)
                .unwrap_or(30),
        }),
        Some("grant-burst") => Some(RuleKind::GrantBurst {
            count: s
                .integer("count", 2, 100_000, problems)
                .map(|v| v as u32)
                .unwrap_or(5),
            window: Duration::from_secs(
                s.integer("window_minutes", 1, 7 * 24 * 60, problems)
                    .map(|v| v as u64)
                    .unwrap_or(10)
                    * 60,
            ),
        }),
        Some("new-privileged-service-user") => Some(RuleKind::NewPrivilegedServiceUser),
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of {}",
                RuleKind::NAMES.join(", ")
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!(
                    "{key}.kind: missing ({})",
                    RuleKind::NAMES.join(", ")
                ));
            }
            None
        }
    };
    s.finish(problems);
    if problems.len() > before {
        return None;
    }
    let kind = kind?;
    // Rules about privilege default to the privileged roles; the others look at every role.
    let roles = roles.unwrap_or_else(|| match kind {
        RuleKind::PrivilegedRoleGrant | RuleKind::NewPrivilegedServiceUser => {
            rules::default_privileged_roles()
        }
        _ => Vec::new(),
    });
    Some(Rule {
        name: name?,
        severity: severity?,
        roles,
        kind,
    })
}

/// A secret named by `<prefix>_env` or `<prefix>_file` (one of the two).
fn secret_from(
    s: &mut Section<'_>,
    prefix: &str,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    let env_key = format!("{prefix}_env");
    let file_key = format!("{prefix}_file");
    let var = s.string(&env_key, problems);
    let file = s.string(&file_key, problems);
    match (var, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{}: set only one of {env_key}, {file_key}", s.path));
            None
        }
        (Some(var), None) => match env.var(&var) {
            Some(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
            Some(_) => {
                problems.push(format!(
                    "{}: the environment variable {var} is empty",
                    s.key(&env_key)
                ));
                None
            }
            None => {
                problems.push(format!(
                    "{}: the environment variable {var} is not set",
                    s.key(&env_key)
                ));
                None
            }
        },
        (None, Some(file)) => {
            let p = resolve(base_dir, &file);
            match std::fs::read_to_string(&p) {
                Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim())),
                Ok(_) => {
                    problems.push(format!(
                        "{}: the file {} is empty",
                        s.key(&file_key),
                        p.display()
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "{}: cannot read {}: {e}",
                        s.key(&file_key),
                        p.display()
                    ));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

fn http_url(key: &str, raw: &str, problems: &mut Vec<String>) -> Option<Url> {
    match Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        // The text is not echoed: a Slack URL is a credential.
        _ => {
            problems.push(format!("{key}: not an http:// or https:// URL with a host"));
            None
        }
    }
}

fn alert_sink(
    key: &str,
    t: &toml::Table,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<SinkConfig> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = required_name(&mut s, problems);
    let kind = match s.string("kind", problems).as_deref() {
        Some("webhook") => {
            let url = match s.string("url", problems) {
                Some(u) => http_url(&s.key("url"), &u, problems),
                None => {
                    problems.push(format!("{key}.url: missing"));
                    None
                }
            };
            let secret = secret_from(&mut s, "secret", base_dir, env, problems);
            if secret.is_none() && !s.has("secret_env") && !s.has("secret_file") {
                problems.push(format!(
                    "{key}: no signing secret: set secret_env or secret_file"
                ));
            }
            match (url, secret) {
                (Some(url), Some(secret)) => Some(SinkKind::Webhook { url, secret }),
                _ => None,
            }
        }
        Some("slack") => {
            let inline = s.string("url", problems);
            let hidden = secret_from(&mut s, "url", base_dir, env, problems);
            let url = match (inline, hidden) {
                (Some(_), Some(_)) => {
                    problems.push(format!("{key}: set only one of url, url_env, url_file"));
                    None
                }
                (Some(u), None) => Some(Secret::new(u)),
                (None, Some(u)) => Some(u),
                (None, None) => {
                    if !s.has("url_env") && !s.has("url_file") {
                        problems.push(format!("{key}.url: missing (or url_env, url_file)"));
                    }
                    None
                }
            };
            let url = url.filter(|u| http_url(&s.key("url"), u.expose(), problems).is_some());
            let min_interval = Duration::from_millis(
                s.integer("min_interval_ms", 0, 3_600_000, problems)
                    .map(|v| v as u64)
                    .unwrap_or_else(default_slack_interval_ms),
            );
            url.map(|url| SinkKind::Slack { url, min_interval })
        }
        Some("command") => {
            let program = s.string("program", problems);
            let args = s.string_list("args", problems).unwrap_or_default();
            let timeout = Duration::from_secs(
                s.integer("timeout_secs", 1, 3600, problems)
                    .map(|v| v as u64)
                    .unwrap_or(30),
            );
            match program {
                Some(p) if !p.trim().is_empty() => Some(SinkKind::Command {
                    program: if p.contains('/') {
                        resolve(base_dir, &p)
                    } else {
                        PathBuf::from(p)
                    },
                    args,
                    timeout,
                }),
                _ => {
                    problems.push(format!(
                        "{key}.program: missing (the program to run; no shell is involved)"
                    ));
                    None
                }
            }
        }
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of webhook, slack, command"
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!("{key}.kind: missing (webhook, slack or command)"));
            }
            None
        }
    };
    s.finish(problems);
    if problems.len() > before {
        return None;
    }
    Some(SinkConfig {
        name: name?,
        kind: kind?,
    })
}

fn collection_settings(
    s: &mut Section<'_>,
    base: &CollectionSettings,
    problems: &mut Vec<String>,
) -> CollectionSettings {
    let mut c = base.clone();
    if let Some(v) = s.integer("page_size", 1, 1000, problems) {
        c.page_size = v as u32;
    }
    if let Some(v) = s.integer("request_timeout_secs", 1, 3600, problems) {
        c.request_timeout = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("overlap_days", 0, 366, problems) {
        c.overlap_days = v as u32;
    }
    if let Some(v) = s.integer("max_retries", 0, 100, problems) {
        c.retry.max_retries = v as u32;
    }
    if let Some(v) = s.integer("retry_base_ms", 1, 600_000, problems) {
        c.retry.base_delay = Duration::from_millis(v as u64);
    }
    if let Some(v) = s.integer("retry_max_secs", 1, 86_400, problems) {
        c.retry.max_delay = Duration::from_secs(v as u64);
    }
    if let Some(v) = s.integer("max_window_rereads", 0, 100, problems) {
        c.max_window_rereads = v as u32;
    }
    if let Some(v) = s.integer("max_pages_per_window", 1, 1_000_000, problems) {
        c.max_pages_per_window = v as u32;
    }
    if let Some(v) = s.integer("max_response_bytes", 65_536, 4 << 30, problems) {
        c.max_response_bytes = v as u64;
    }
    if let Some(v) = s.integer("concurrent_windows", 1, 64, problems) {
        c.concurrent_windows = v as u32;
    }
    if let Some(v) = s.take("rate_limits") {
        let key = s.key("rate_limits");
        match v {
            toml::Value::Array(items) => {
                let mut limits = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let k = format!("{key}[{i}]");
                    let Some(t) = item.as_table() else {
                        problems.push(format!(
                            "{k}: must be a table like {{ requests = 100, per_secs = 5 }}"
                        ));
                        continue;
                    };
                    let mut r = Section::new(k, t);
                    let req = r.integer("requests", 1, 1_000_000, problems);
                    let per = r.integer("per_secs", 1, 86_400, problems);
                    match (req, per) {
                        (Some(requests), Some(per_secs)) => limits.push(RateLimit {
                            requests: requests as u32,
                            per_secs: per_secs as u32,
                        }),
                        (None, _) if !r.has("requests") => {
                            problems.push(format!("{}: missing", r.key("requests")))
                        }
                        (_, None) if !r.has("per_secs") => {
                            problems.push(format!("{}: missing", r.key("per_secs")))
                        }
                        _ => {}
                    }
                    r.finish(problems);
                }
                c.rate_limits = limits;
            }
            _ => problems.push(format!(
                "{key}: must be an array like [{{ requests = 100, per_secs = 5 }}]"
            )),
        }
    }
    c
}

fn account(
    key: &str,
    t: &toml::Table,
    defaults: &CollectionSettings,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Account> {
    let before = problems.len();
    let mut s = Section::new(key.to_string(), t);
    let name = s.string("name", problems);
    match &name {
        None if !s.has("name") => problems.push(format!("{key}.name: missing")),
        Some(n) if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_control()) => problems
            .push(format!(
                "{key}.name: {n:?} must be 1 to 64 printable characters"
            )),
        _ => {}
    }
    let kind = match s.string("kind", problems).as_deref() {
        Some("digicert-one") => Some(AccountKind::DigicertOne),
        Some("certcentral") => Some(AccountKind::CertCentral),
        Some(other) => {
            problems.push(format!(
                "{key}.kind: {other:?} is not one of \"digicert-one\", \"certcentral\""
            ));
            None
        }
        None => {
            if !s.has("kind") {
                problems.push(format!(
                    "{key}.kind: missing (\"digicert-one\" or \"certcentral\")"
                ));
            }
            None
        }
    };
    let region = s.string("region", problems);
    let environment = s.string("environment", problems);
    let base_url = s.string("base_url", problems);
    let api_key_env = s.string("api_key_env", problems);
    let api_key_file = s.string("api_key_file", problems);
    let client_cert_file = s.string("client_cert_file", problems);
    let actions = s.string_list("actions", problems).unwrap_or_default();
    for (i, a) in actions.iter().enumerate() {
        if a.trim().is_empty() {
            problems.push(format!("{key}.actions[{i}]: empty action name"));
        }
    }
    let dedup: BTreeSet<&String> = actions.iter().collect();
    if dedup.len() != actions.len() {
        problems.push(format!("{key}.actions: lists an action twice"));
    }
    let backfill_days = s
        .integer("backfill_days", 0, 3650, problems)
        .map(|v| v as u32)
        .unwrap_or_else(default_backfill_days);
    let collection = collection_settings(&mut s, defaults, problems);
    s.finish(problems);

    let kind = kind?;
    let url = endpoint(
        key,
        kind,
        region.as_deref(),
        environment.as_deref(),
        base_url.as_deref(),
        client_cert_file.is_some(),
        problems,
    );
    let credential = credential(
        key,
        kind,
        api_key_env.as_deref(),
        api_key_file.as_deref(),
        client_cert_file.as_deref(),
        base_dir,
        env,
        problems,
    );
    if problems.len() > before {
        return None;
    }
    Some(Account {
        name: name?,
        kind,
        base_url: url?,
        credential: credential?,
        actions,
        backfill_days,
        collection,
    })
}

#[allow(clippy::too_many_arguments)]
fn credential(
    key: &str,
    kind: AccountKind,
    api_key_env: Option<&str>,
    api_key_file: Option<&str>,
    client_cert_file: Option<&str>,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<Credential> {
    let given = [api_key_env, api_key_file, client_cert_file]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given > 1 {
        problems.push(format!(
            "{key}: set only one of api_key_env, api_key_file, client_cert_file"
        ));
        return None;
    }
    if let Some(var) = api_key_env {
        return match env.var(var) {
            Some(v) if !v.trim().is_empty() => Some(Credential::ApiKey(Secret::new(v.trim()))),
            Some(_) => {
                problems.push(format!(
                    "{key}.api_key_env: the environment variable {var} is empty"
                ));
                None
            }
            None => {
                problems.push(format!(
                    "{key}.api_key_env: the environment variable {var} is not set"
                ));
                None
            }
        };
    }
    if let Some(file) = api_key_file {
        let p = resolve(base_dir, file);
        return match std::fs::read_to_string(&p) {
            Ok(v) if !v.trim().is_empty() => Some(Credential::ApiKey(Secret::new(v.trim()))),
            Ok(_) => {
                problems.push(format!(
                    "{key}.api_key_file: the file {} is empty",
                    p.display()
                ));
                None
            }
            Err(e) => {
                problems.push(format!(
                    "{key}.api_key_file: cannot read {}: {e}",
                    p.display()
                ));
                None
            }
        };
    }
    if let Some(file) = client_cert_file {
        if kind != AccountKind::DigicertOne {
            problems.push(format!(
                "{key}.client_cert_file: mTLS is only for digicert-one accounts"
            ));
            return None;
        }
        let p = resolve(base_dir, file);
        if !p.is_file() {
            problems.push(format!(
                "{key}.client_cert_file: {} is not a readable file",
                p.display()
            ));
            return None;
        }
        return Some(Credential::ClientCert(ClientCert { pem_file: p }));
    }
    problems.push(format!(
        "{key}: no credential: set api_key_env or api_key_file{}",
        if kind == AccountKind::DigicertOne {
            " (or client_cert_file for mTLS)"
        } else {
            ""
        }
    ));
    None
}

fn endpoint(
    key: &str,
    kind: AccountKind,
    region: Option<&str>,
    environment: Option<&str>,
    base_url: Option<&str>,
    mtls: bool,
    problems: &mut Vec<String>,
) -> Option<Url> {
    let env_name = environment.unwrap_or("production");
    if !matches!(env_name, "production" | "demo") {
        problems.push(format!(
            "{key}.environment: {env_name:?} is not \"production\" or \"demo\""
        ));
        return None;
    }
    if kind == AccountKind::CertCentral && env_name == "demo" {
        problems.push(format!(
            "{key}.environment: \"demo\" exists only for digicert-one accounts"
        ));
        return None;
    }
    if let Some(raw) = base_url {
        // The URL as messages show it: a user name or password in it is never echoed.
        let shown = crate::text::redact_userinfo(raw);
        let url = match Url::parse(raw) {
            Ok(u) => u,
            Err(e) => {
                problems.push(format!("{key}.base_url: {shown:?} is not a URL: {e}"));
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            problems.push(format!(
                "{key}.base_url: {shown:?} must be http:// or https:// with a host"
            ));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            problems.push(format!(
                "{key}.base_url: {shown:?} holds a user name or password; remove it (the API key goes in api_key_env or api_key_file, never in the URL)"
            ));
            return None;
        }
        if (url.path() != "/" && !url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            problems.push(format!(
                "{key}.base_url: {shown:?} must be scheme, host and port only (the client appends /account/api/v1 or /services/v2)"
            ));
            return None;
        }
        return Some(url);
    }
    let region = region.unwrap_or("us");
    let host = match (kind, region, env_name) {
        (AccountKind::DigicertOne, "us", "production") => "one.digicert.com",
        (AccountKind::DigicertOne, "us", _) => "demo.one.digicert.com",
        (AccountKind::DigicertOne, "ch", "production") => "one.ch.digicert.com",
        (AccountKind::DigicertOne, "ch", _) => "demo.one.ch.digicert.com",
        (AccountKind::DigicertOne, "jp", "production") => "one.digicert.co.jp",
        (AccountKind::DigicertOne, "jp", _) => "demo.one.digicert.co.jp",
        (AccountKind::DigicertOne, "nl", "production") => "one.nl.digicert.com",
        (AccountKind::DigicertOne, "nl", _) => "demo.one.nl.digicert.com",
        (AccountKind::CertCentral, "us", _) => "www.digicert.com",
        (AccountKind::CertCentral, "eu", _) => "certcentral.digicert.eu",
        (AccountKind::DigicertOne, other, _) => {
            problems.push(format!(
                "{key}.region: {other:?} is not a digicert-one region (us, ch, jp, nl)"
            ));
            return None;
        }
        (AccountKind::CertCentral, other, _) => {
            problems.push(format!(
                "{key}.region: {other:?} is not a certcentral region (us, eu)"
            ));
            return None;
        }
    };
    let host = if mtls {
        format!("clientauth.{host}")
    } else {
        host.to_string()
    };
    Url::parse(&format!("https://{host}")).ok()
}

/// A TOML table being read: remembers which keys were used so leftovers are reported as unknown.
struct Section<'a> {
    path: String,
    table: &'a toml::Table,
    used: HashSet<String>,
}

impl<'a> Section<'a> {
    fn new(path: String, table: &'a toml::Table) -> Section<'a> {
        Section {
            path,
            table,
            used: HashSet::new(),
        }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn has(&self, k: &str) -> bool {
        self.table.contains_key(k)
    }

    fn take(&mut self, k: &str) -> Option<&'a toml::Value> {
        self.used.insert(k.to_string());
        self.table.get(k)
    }

    fn table(&mut self, k: &str, problems: &mut Vec<String>) -> Option<&'a toml::Table> {
        match self.take(k)? {
            toml::Value::Table(t) => Some(t),
            _ => {
                problems.push(format!("{}: must be a table ([{k}])", self.key(k)));
                None
            }
        }
    }

    fn string(&mut self, k: &str, problems: &mut Vec<String>) -> Option<String> {
        match self.take(k)? {
            toml::Value::String(s) => Some(s.clone()),
            other => {
                problems.push(format!(
                    "{}: must be a string, found {}",
                    self.key(k),
                    other.type_str()
                ));
                None
            }
        }
    }

    fn string_list(&mut self, k: &str, problems: &mut Vec<String>) -> Option<Vec<String>> {
        let key = self.key(k);
        match self.take(k)? {
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => out.push(s.to_string()),
                        None => problems.push(format!("{key}[{i}]: must be a string")),
                    }
                }
                Some(out)
            }
            other => {
                problems.push(format!(
                    "{key}: must be an array of strings, found {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    fn integer(&mut self, k: &str, min: i64, max: i64, problems: &mut Vec<String>) -> Option<i64> {
        let key = self.key(k);
        match self.take(k)? {
            toml::Value::Integer(v) if (min..=max).contains(v) => Some(*v),
            toml::Value::Integer(v) => {
                problems.push(format!("{key}: {v} is out of range ({min} to {max})"));
                None
            }
            other => {
                problems.push(format!(
                    "{key}: must be a whole number, found {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    fn finish(self, problems: &mut Vec<String>) {
        let mut unknown: Vec<&String> = self
            .table
            .keys()
            .filter(|k| !self.used.contains(k.as_str()))
            .collect();
        unknown.sort();
        for k in unknown {
            problems.push(format!("{}: unknown key", self.key(k)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY_A" => Some("secret-a".into()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/auditwarden/test.toml"), &env)
    }

    /// The example config shipped in `config/` parses, and every account in it validates.
    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditwarden.example.toml");
        // Optional keys shown commented out in the example are parsed too.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("# signing_key_file = ", "signing_key_file = ");
        let any_env = |name: &str| {
            Some(if name.ends_with("_URL") {
                "https://hooks.example.com/slack".to_string()
            } else {
                "example-key".to_string()
            })
        };
        let cfg = parse(&text, &path, &any_env).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<&str> = cfg.alerts.rules.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, RuleKind::NAMES, "the example shows every rule kind");
        let sinks: Vec<&str> = cfg.alerts.sinks.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(sinks, ["webhook", "slack", "command"]);
        assert!(cfg.accounts.len() >= 2);
        let one = cfg.account("acme-us").unwrap();
        assert_eq!(one.kind, AccountKind::DigicertOne);
        assert_eq!(one.base_url.as_str(), "https://one.digicert.com/");
        assert_eq!(one.backfill_days, 90);
        assert_eq!(
            one.collection,
            CollectionSettings::default(),
            "the example shows the defaults"
        );
        assert!(cfg.store.path.ends_with("auditwarden.db"));
        assert!(cfg.store.path.starts_with(path.parent().unwrap()));
        assert_eq!(cfg.users.stale_invite_days, 14);
        assert_eq!(
            cfg.reports.signing_key_file.as_deref(),
            Some(Path::new(
                "/run/credentials/auditwarden.service/signing-key"
            ))
        );
        let jobs: Vec<&str> = cfg.schedule.jobs.keys().map(|j| j.as_str()).collect();
        assert_eq!(
            jobs,
            ["collect", "poll_invites", "deliver_alerts", "reports"],
            "every job scheduled"
        );
        assert_eq!(cfg.schedule.time_zone, chrono_tz::UTC);
        assert_eq!(cfg.daemon.listen, "127.0.0.1:9464".parse().ok());
        assert_eq!(cfg.daemon.shutdown_grace, Duration::from_secs(30));
    }

    /// `[schedule]` and `[daemon]`: five- and six-field crons, "" switches off, bad values named.
    #[test]
    fn schedule_and_daemon_sections() {
        let base = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let cfg = parse_str(&format!(
            "[schedule]\ntime_zone = \"Europe/Zurich\"\ncollect = \"*/5 * * * * *\"\npoll_invites = \"\"\n[daemon]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_secs = 5\n{base}"
        ))
        .unwrap();
        assert_eq!(cfg.schedule.time_zone, chrono_tz::Europe::Zurich);
        assert_eq!(cfg.schedule.jobs[&Job::Collect].text(), "*/5 * * * * *");
        assert!(!cfg.schedule.jobs.contains_key(&Job::PollInvites));
        assert!(cfg.schedule.jobs.contains_key(&Job::DeliverAlerts));
        assert_eq!(cfg.daemon.shutdown_grace, Duration::from_secs(5));
        let e = parse_str(&format!(
            "[schedule]\ntime_zone = \"Mars/Base\"\ncollect = \"every hour\"\ncolect = \"* * * * *\"\n[daemon]\nlisten = \"loopback\"\nbackoff_base_secs = 0\n{base}"
        ))
        .unwrap_err()
        .to_string();
        for key in [
            "schedule.time_zone",
            "schedule.collect",
            "schedule.colect: unknown key",
            "daemon.listen",
            "daemon.backoff_base_secs",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    /// `[alerts]`: defaults without rules; every bad rule or sink key is named; secrets stay hidden.
    #[test]
    fn alerts_section() {
        let base = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let cfg = parse_str(base).unwrap();
        assert_eq!(cfg.alerts.rules, rules::default_rules());
        assert!(cfg.alerts.sinks.is_empty());
        let cfg = parse_str(&format!(
            "{base}[[alerts.sinks]]\nname = \"soc\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"KEY_A\"\n"
        ))
        .unwrap();
        assert!(!format!("{:?}", cfg.alerts).contains("secret-a"));
        let err = parse_str(&format!(
            "{base}[alerts]\nbackfill_horizon_hour = 1\n[[alerts.rules]]\nname = \"x\"\nkind = \"self-grant\"\ncidrs = [\"10.0.0.0/8\"]\n\
             [[alerts.rules]]\nname = \"y\"\nkind = \"source-ip-outside\"\ncidrs = [\"10.0.0.300/8\"]\n\
             [[alerts.rules]]\nname = \"z\"\nkind = \"off-hours-grant\"\ntimezone = \"Mars/Olympus\"\n\
             [[alerts.sinks]]\nname = \"s\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\nsecret_env = \"NOPE\"\n\
             [[alerts.sinks]]\nname = \"t\"\nkind = \"pigeon\"\n"
        ))
        .unwrap_err()
        .to_string();
        for needle in [
            "alerts.backfill_horizon_hour: unknown key",
            "alerts.rules[0].cidrs: unknown key",
            "alerts.rules[1].cidrs[0]",
            "alerts.rules[2].timezone",
            "alerts.sinks[0].secret_env: the environment variable NOPE is not set",
            "alerts.sinks[1].kind",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    /// `[users]` takes stale_invite_days and reports unknown keys like every section.
    #[test]
    fn users_section() {
        let base = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let cfg = parse_str(&format!("{base}[users]\nstale_invite_days = 30\n")).unwrap();
        assert_eq!(cfg.users.stale_invite_days, 30);
        let err = parse_str(&format!("{base}[users]\nstale_invite_day = 3\n")).unwrap_err();
        assert!(
            err.to_string()
                .contains("users.stale_invite_day: unknown key"),
            "{err}"
        );
    }

    /// `[reports]` defaults to every report in every format under reports/ next to the config,
    /// daily at 06:00 UTC, 90 dormant days; a bad cron, zone, kind or format names its key.
    #[test]
    fn reports_section() {
        let base = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let cfg = parse_str(base).unwrap();
        let r = &cfg.reports;
        assert_eq!(r.kinds.len(), 4);
        assert_eq!(r.formats.len(), 3);
        assert_eq!(r.output_dir, Path::new("/etc/auditwarden/reports"));
        assert_eq!(r.dormant_days, 90);
        assert_eq!(r.time_zone, chrono_tz::UTC);
        assert!(r.schedule.is_some());
        assert!(r.signing_key_file.is_none());
        let cfg = parse_str(&format!(
            "{base}[reports]\nsigning_key_file = \"keys/sign.pem\"\n"
        ))
        .unwrap();
        assert_eq!(
            cfg.reports.signing_key_file.as_deref(),
            Some(Path::new("/etc/auditwarden/keys/sign.pem"))
        );
        let cfg = parse_str(&format!(
            "{base}[reports]\nkinds = [\"dormant\"]\nformats = [\"html\"]\nschedule = \"30 5 * * 1-5\"\ntime_zone = \"Europe/Berlin\"\noutput_dir = \"/srv/r\"\nretention_days = 0\ndormant_days = 45\n"
        ))
        .unwrap();
        let r = &cfg.reports;
        assert_eq!(r.kinds, vec![ReportKind::Dormant]);
        assert_eq!(r.formats, vec![ReportFormat::Html]);
        assert_eq!(r.time_zone, chrono_tz::Europe::Berlin);
        assert_eq!(r.output_dir, Path::new("/srv/r"));
        assert_eq!((r.retention_days, r.dormant_days), (0, 45));
        let err = parse_str(&format!(
            "{base}[reports]\nkinds = [\"dormnat\"]\nformats = [\"pdf\"]\nschedule = \"every morning\"\ntime_zone = \"Mars/Olympus\"\ndormant_days = 0\ncolour = 1\n"
        ))
        .unwrap_err()
        .to_string();
        for key in [
            "reports.kinds[0]",
            "reports.formats[0]",
            "reports.schedule",
            "reports.time_zone",
            "reports.dormant_days",
            "reports.colour: unknown key",
        ] {
            assert!(err.contains(key), "{key} missing in {err}");
        }
    }

    /// All problems are reported at once, each naming its key.
    #[test]
    fn reports_every_problem_with_its_key() {
        let err = parse_str(
            r#"
            [store]
            path = "x.db"
            colour = "blue"
            [[accounts]]
            name = "a"
            kind = "digicert-one"
            region = "mars"
            api_key_env = "MISSING_VAR"
            page_size = 5000
            [[accounts]]
            name = "a"
            kind = "certcentral"
            api_key_env = "KEY_A"
            backfil_days = 3
            "#,
        )
        .unwrap_err();
        let all = err.to_string();
        for needle in [
            "store.colour: unknown key",
            "accounts[0].region: \"mars\"",
            "accounts[0].api_key_env: the environment variable MISSING_VAR is not set",
            "accounts[0].page_size: 5000 is out of range",
            "accounts[1].backfil_days: unknown key",
            "/etc/auditwarden/test.toml",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    /// base_url takes scheme, host and port only; a path is refused with a reason.
    #[test]
    fn base_url_must_not_have_a_path() {
        let err = parse_str(
            r#"
            [store]
            path = "x.db"
            [[accounts]]
            name = "a"
            kind = "digicert-one"
            base_url = "http://127.0.0.1:8089/account/api/v1"
            api_key_env = "KEY_A"
            "#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("scheme, host and port only"));
    }

    /// A user name or password in base_url is refused without being echoed, parseable or not.
    #[test]
    fn base_url_credentials_are_never_echoed() {
        for url in [
            "https://admin:hunter2@127.0.0.1:8089",
            "https://admin:hunter2@127.0.0.1:8089/account/api/v1",
            "https://admin:hunter2@[bad-host",
        ] {
            let err = parse_str(&format!(
                "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\nbase_url = \"{url}\"\napi_key_env = \"KEY_A\"\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("accounts[0].base_url"), "{err}");
            assert!(err.contains("***@"), "{err}");
        }
    }

    /// A TOML syntax error names its line and column, and does not quote the line.
    #[test]
    fn toml_errors_have_line_and_column() {
        let err = parse_str(
            "[store]\npath = \"x.db\"\n[[accounts]]\nbase_url = \"https://u:hunter2@h\" x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not valid TOML at line 4, column "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é=", 2), (1, 2));
    }

    /// max_response_bytes defaults to 32 MiB and is overridden per account like the other keys.
    #[test]
    fn max_response_bytes_default_and_override() {
        let cfg = parse_str(
            "[store]\npath = \"x.db\"\n[collection]\nmax_response_bytes = 1048576\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n[[accounts]]\nname = \"b\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\nmax_response_bytes = 2097152\n",
        )
        .unwrap();
        assert_eq!(cfg.accounts[0].collection.max_response_bytes, 1 << 20);
        assert_eq!(cfg.accounts[1].collection.max_response_bytes, 2 << 20);
        assert_eq!(CollectionSettings::default().max_response_bytes, 32 << 20);
        assert_eq!(CollectionSettings::default().concurrent_windows, 4);
        let err = parse_str("[store]\npath = \"x.db\"\n[collection]\nmax_response_bytes = 10\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("collection.max_response_bytes: 10 is out of range"),
            "{err}"
        );
    }

    /// An mTLS account uses the clientauth. host and needs no key.
    #[test]
    fn mtls_uses_clientauth_host() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("id.pem");
        std::fs::write(&pem, "x").unwrap();
        let text = format!(
            "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\nregion = \"ch\"\nclient_cert_file = {:?}\n",
            pem.display().to_string()
        );
        let cfg = parse_str(&text).unwrap();
        assert_eq!(
            cfg.accounts[0].base_url.as_str(),
            "https://clientauth.one.ch.digicert.com/"
        );
    }

    /// Account overrides replace the [collection] defaults key by key.
    #[test]
    fn account_overrides_collection_defaults() {
        let cfg = parse_str(
            r#"
            [store]
            path = "/var/lib/a.db"
            [collection]
            page_size = 200
            rate_limits = [{ requests = 10, per_secs = 1 }]
            [[accounts]]
            name = "a"
            kind = "certcentral"
            region = "eu"
            api_key_env = "KEY_A"
            overlap_days = 4
            "#,
        )
        .unwrap();
        let a = &cfg.accounts[0];
        assert_eq!(a.collection.page_size, 200);
        assert_eq!(a.collection.overlap_days, 4);
        assert_eq!(
            a.collection.rate_limits,
            vec![RateLimit {
                requests: 10,
                per_secs: 1
            }]
        );
        assert_eq!(a.base_url.as_str(), "https://certcentral.digicert.eu/");
        assert_eq!(cfg.store.path, PathBuf::from("/var/lib/a.db"));
    }
}
