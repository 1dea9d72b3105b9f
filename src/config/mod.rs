//! Configuration: the TOML file becomes a validated [`Config`] once, at the boundary.
//!
//! Every problem in a file is collected and reported together, each naming the file and the key
//! (`accounts[1].region`), so an operator fixes a config in one round. Unknown keys are errors (a
//! typo must not silently fall back to a default). Secrets never sit inline: `api_key_env` names an
//! environment variable and `api_key_file` a file (for example a systemd credential); both are read
//! through a lookup the caller passes in ([`Env`]), so nothing below the entry point reads the
//! process environment itself. The standard proxy variables (`HTTPS_PROXY`, `NO_PROXY`, ...) are
//! read the same way, once, into [`EnvProxies`]; the HTTP clients never consult the environment.
//!
//! Each subsystem owns its settings and their parsing: accounts, collection, TLS and proxies in
//! `api::settings`, `[alerts]` in `alert::config`, `[reports]` in `report::config`,
//! `[schedule]` and `[daemon]` in [`daemon`], all written with the toolkit of `crate::settings`
//! (key paths, one secret resolver, one time-zone parser). This module composes them: `[store]`,
//! `[users]`, the order sections are read in, and what spans sections (the report job's schedule,
//! the environment's proxies as every section's default). Subsystems import their own settings,
//! never this module.

mod daemon;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::alert::config::alert_settings;
use crate::api::settings::{account, collection_settings, env_proxies, transport_keys};
use crate::report::config::{report_settings, RunSettings};
use crate::schedule::{Cron, Job};
use crate::settings::{resolve, secret_from, Section};
use crate::store::{PgTarget, StoreTarget};

// Each subsystem's settings, where they have always been found.
pub use crate::alert::config::{AlertSettings, DeliveryPolicy, SinkConfig, SinkKind};
pub use crate::api::settings::{
    Account, AccountKind, ClientCert, CollectionSettings, Credential, EnvProxies, ProxyServer,
    ProxySetting, RateLimit, RetryPolicy, TlsRoots, TlsSettings,
};
pub use crate::report::config::ReportSettings;
pub use crate::settings::Env;
pub use daemon::{DaemonSettings, ScheduleSettings};

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

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `[store] path` (SQLite: absolute, or relative to the config file's directory) or `[store]
    /// url` (PostgreSQL, with `password_env` / `password_file`).
    pub target: StoreTarget,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration was read from (for messages).
    pub source: PathBuf,
    /// SHA-256 (hex) of the text this configuration was parsed from: what report manifests
    /// record, so a manifest names the configuration the process runs, not the file's bytes at
    /// the time of the run (edited since, not yet reloaded).
    pub source_sha256: String,
    pub store: StoreConfig,
    pub accounts: Vec<Account>,
    pub users: UserSettings,
    pub reports: ReportSettings,
    pub alerts: AlertSettings,
    pub schedule: ScheduleSettings,
    pub daemon: DaemonSettings,
    /// `[collection] max_concurrent_accounts`: how many accounts one pass collects at once.
    pub max_concurrent_accounts: usize,
}

/// Accounts one pass collects at once unless `[collection] max_concurrent_accounts` says
/// otherwise. Each account in flight holds `concurrent_windows` connections and as many response
/// bodies (each up to `max_response_bytes`); with DigiCert's limits per API key, accounts beyond
/// this wait for a slot instead of the host opening hundreds of connections at once, and more
/// daemons on PostgreSQL (each working its share) collect more accounts at once.
pub const DEFAULT_MAX_CONCURRENT_ACCOUNTS: usize = 8;

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

impl<'a> From<&'a Config> for RunSettings<'a> {
    fn from(cfg: &'a Config) -> RunSettings<'a> {
        RunSettings {
            reports: &cfg.reports,
            config_sha256: &cfg.source_sha256,
            stale_invite_days: cfg.users.stale_invite_days,
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
/// `[store]`: `path` (SQLite) or `url` (PostgreSQL), not both; a PostgreSQL password only from
/// `password_env` / `password_file`, never in the URL (such a URL is refused without being shown).
fn store_target(
    mut s: Section<'_>,
    base_dir: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<StoreTarget> {
    let path = s.string("path", problems);
    let url_key = s.key("url");
    let url = s.string("url", problems);
    let has_password = s.has("password_env") || s.has("password_file");
    let password = secret_from(&mut s, "password", base_dir, env, problems);
    let out = match (path, url) {
        (Some(_), Some(_)) => {
            problems.push("store: set either path (SQLite) or url (PostgreSQL), not both".into());
            None
        }
        (Some(p), None) => {
            if has_password {
                problems.push(
                    "store.password_env/password_file: only for url (PostgreSQL); a SQLite path needs none"
                        .into(),
                );
            }
            Some(StoreTarget::Sqlite(resolve(base_dir, &p)))
        }
        (None, Some(u)) => match PgTarget::parse(&u, password) {
            Ok(t) => Some(StoreTarget::Postgres(t)),
            Err(e) => {
                problems.push(format!("{url_key}: {e}"));
                None
            }
        },
        (None, None) => {
            if !problems.iter().any(|p| p.starts_with("store")) {
                problems.push(
                    "store.path: missing (the SQLite database file; or url for PostgreSQL)".into(),
                );
            }
            None
        }
    };
    s.finish(problems);
    out
}

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

    let store_path = match root.table("store", &mut problems) {
        Some(t) => store_target(
            Section::new("store".into(), t),
            &base_dir,
            env,
            &mut problems,
        ),
        None => {
            problems.push(
                "store: missing section [store] (with path = \"...\", or url = \"postgresql://...\")"
                    .into(),
            );
            None
        }
    };

    let env_proxies = env_proxies(env, &mut problems);
    let base = CollectionSettings {
        proxy: ProxySetting::Environment(env_proxies.clone()),
        ..CollectionSettings::default()
    };
    let mut max_concurrent_accounts = DEFAULT_MAX_CONCURRENT_ACCOUNTS;
    let defaults = match root.table("collection", &mut problems) {
        Some(t) => {
            let mut s = Section::new("collection".into(), t);
            let mut d = collection_settings(&mut s, &base, &mut problems);
            // A limit of the process, not of one account: only here, never in [[accounts]].
            if let Some(v) = s.integer("max_concurrent_accounts", 1, 1024, &mut problems) {
                max_concurrent_accounts = v as usize;
            }
            transport_keys(
                &mut s,
                &mut d.tls,
                &mut d.proxy,
                &base_dir,
                env,
                &mut problems,
            );
            s.finish(&mut problems);
            d
        }
        None => base,
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
        Some(t) => alert_settings(t, &base_dir, env, &env_proxies, &mut problems),
        None => AlertSettings {
            proxy: ProxySetting::Environment(env_proxies.clone()),
            ..AlertSettings::default()
        },
    };

    let schedule = match root.table("schedule", &mut problems) {
        Some(t) => daemon::schedule_settings(t, &mut problems),
        None => ScheduleSettings::default(),
    };
    let daemon = match root.table("daemon", &mut problems) {
        Some(t) => daemon::daemon_settings(t, &mut problems),
        None => DaemonSettings::default(),
    };
    // A paused daemon's open transaction holds its accounts' locks: the server ends it after
    // twice the lease, so the node taking over waits about as long as the lease says.
    let store_path = store_path.map(|t| match t {
        StoreTarget::Postgres(pg) => {
            StoreTarget::Postgres(pg.with_idle_in_transaction(daemon.lease * 2))
        }
        other => other,
    });

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
            source_sha256: {
                use sha2::Digest;
                hex::encode(sha2::Sha256::digest(text.as_bytes()))
            },
            store: StoreConfig { target: path_ },
            accounts,
            users,
            reports,
            alerts,
            schedule,
            daemon,
            max_concurrent_accounts,
        }),
        _ => Err(fail(problems)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::alert::rules::{self, RuleKind};
    use crate::report::{ReportFormat, ReportKind};
    use crate::secret::Secret;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY_A" => Some("secret-a".into()),
            "PG_PW" => Some("pg-secret-planted".into()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/auditwarden/test.toml"), &env)
    }

    /// The configuration's hash is of the text it was parsed from (what a report manifest
    /// records), so an edit on disk that was not reloaded does not change it.
    #[test]
    fn the_source_hash_is_of_the_parsed_text() {
        let text = "[store]\npath = \"aw.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\napi_key_env = \"KEY_A\"\n";
        let a = parse_str(text).unwrap_or_else(|e| panic!("{e}"));
        let b = parse_str(&format!("{text}# a comment\n")).unwrap();
        use sha2::Digest;
        assert_eq!(a.source_sha256, hex::encode(sha2::Sha256::digest(text)));
        assert_ne!(a.source_sha256, b.source_sha256);
    }

    /// The example config shipped in `config/` parses, and every account in it validates.
    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/auditwarden.example.toml");
        // Optional keys shown commented out in the example are parsed too.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("# signing_key_file = ", "signing_key_file = ")
            .replace("# proxy_url = ", "proxy_url = ")
            .replace("# proxy_password_env = ", "proxy_password_env = ");
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
        // Every default, except the proxy that this test uncomments (checked below).
        assert_eq!(
            one.collection,
            CollectionSettings {
                proxy: one.collection.proxy.clone(),
                ..CollectionSettings::default()
            },
            "the example shows the defaults"
        );
        assert!(cfg
            .store
            .target
            .sqlite_path()
            .unwrap()
            .ends_with("auditwarden.db"));
        assert!(cfg
            .store
            .target
            .sqlite_path()
            .unwrap()
            .starts_with(path.parent().unwrap()));
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
        for (what, tls, proxy) in [
            ("collection", &one.collection.tls, &one.collection.proxy),
            ("alerts", &cfg.alerts.tls, &cfg.alerts.proxy),
        ] {
            assert_eq!(tls, &TlsSettings::default(), "{what}");
            let ProxySetting::Explicit(p) = proxy else {
                panic!("{what}: {proxy:?}")
            };
            assert_eq!(p.url.as_str(), "http://proxy.example.com:3128/", "{what}");
            assert_eq!(p.username.as_deref(), Some("auditwarden"), "{what}");
            assert!(p.password.is_some(), "{what}");
        }
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
        assert_eq!(cfg.daemon.lease, Duration::from_secs(30));
        assert_eq!(cfg.daemon.node_name, None);
        let cfg = parse_str(&format!(
            "[daemon]\nlease_secs = 12\nnode_name = \" collector-1 \"\n{base}"
        ))
        .unwrap();
        assert_eq!(cfg.daemon.lease, Duration::from_secs(12));
        assert_eq!(cfg.daemon.node_name.as_deref(), Some("collector-1"));
        let e = parse_str(&format!(
            "[schedule]\ntime_zone = \"Mars/Base\"\ncollect = \"every hour\"\ncolect = \"* * * * *\"\n[daemon]\nlisten = \"loopback\"\nbackoff_base_secs = 0\nlease_secs = 1\nnode_name = \"\"\n{base}"
        ))
        .unwrap_err()
        .to_string();
        for key in [
            "schedule.time_zone",
            "schedule.collect",
            "schedule.colect: unknown key",
            "daemon.listen",
            "daemon.backoff_base_secs",
            "daemon.lease_secs",
            "daemon.node_name",
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

    /// `tls_roots` and `ca_file` in [collection], overridden per account, and in [alerts]; bad
    /// values are named.
    #[test]
    fn tls_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("corp.pem");
        std::fs::write(&ca, "x").unwrap();
        let text = format!(
            "[store]\npath = \"x.db\"\n[collection]\ntls_roots = \"system\"\nca_file = {ca:?}\n\
             [alerts]\nca_file = {ca:?}\n\
             [[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n\
             [[accounts]]\nname = \"b\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\ntls_roots = \"builtin\"\nca_file = \"\"\n"
        );
        let cfg = parse_str(&text).unwrap();
        let (a, b) = (
            &cfg.accounts[0].collection.tls,
            &cfg.accounts[1].collection.tls,
        );
        assert_eq!(
            (a.roots, a.ca_file.as_deref()),
            (TlsRoots::System, Some(ca.as_path()))
        );
        assert_eq!((b.roots, b.ca_file.as_deref()), (TlsRoots::Builtin, None));
        assert_eq!(cfg.alerts.tls.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(cfg.alerts.tls.roots, TlsRoots::Builtin);
        let err = parse_str(
            "[store]\npath = \"x.db\"\n[collection]\ntls_roots = \"os\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\nca_file = \"/nonexistent/ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "collection.tls_roots: \"os\" is not \"builtin\"",
            "accounts[0].ca_file: /nonexistent/ca.pem is not a readable file",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    /// `proxy_url` takes a user but never a password (refused without echoing it); the password
    /// comes from proxy_password_env/_file; "" means direct; an account's own proxy_url does not
    /// inherit another proxy's password.
    #[test]
    fn proxy_keys() {
        let env = |name: &str| match name {
            "KEY_A" => Some("secret-a".to_string()),
            "PROXY_PW" => Some("pw-planted-1".to_string()),
            _ => None,
        };
        let acct = "[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let text = format!(
            "[store]\npath = \"x.db\"\n[collection]\nproxy_url = \"http://svc%40corp@proxy.corp:3128\"\nproxy_password_env = \"PROXY_PW\"\n\
             {acct}{}{}",
            acct.replace("\"a\"", "\"b\"") + "proxy_url = \"\"\n",
            acct.replace("\"a\"", "\"c\"") + "proxy_url = \"http://other:8080\"\n",
        );
        let cfg = parse(&text, Path::new("/etc/aw.toml"), &env).unwrap_or_else(|e| panic!("{e}"));
        let ProxySetting::Explicit(p) = &cfg.accounts[0].collection.proxy else {
            panic!("{:?}", cfg.accounts[0].collection.proxy)
        };
        assert_eq!(p.url.as_str(), "http://proxy.corp:3128/");
        assert_eq!(p.username.as_deref(), Some("svc@corp"));
        assert_eq!(
            p.password.as_ref().map(Secret::expose),
            Some("pw-planted-1")
        );
        assert!(!format!("{cfg:?}").contains("pw-planted-1"));
        assert_eq!(cfg.accounts[1].collection.proxy, ProxySetting::Direct);
        let ProxySetting::Explicit(c) = &cfg.accounts[2].collection.proxy else {
            panic!()
        };
        assert!(c.password.is_none() && c.username.is_none());
        // [alerts] is not [collection]: without its own proxy_url it follows the environment.
        assert_eq!(
            cfg.alerts.proxy,
            ProxySetting::Environment(EnvProxies::default())
        );

        let err = parse(
            &format!(
                "[store]\npath = \"x.db\"\n[collection]\nproxy_url = \"http://u:hunter2-planted@proxy:3128\"\n[alerts]\nproxy_url = \"http://proxy:3128\"\nproxy_password_env = \"PROXY_PW\"\n{acct}proxy_password_env = \"PROXY_PW\"\nproxy_url = \"socks5://proxy:1080\"\n"
            ),
            Path::new("/etc/aw.toml"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        for needle in [
            "collection.proxy_url: the URL holds a password",
            "alerts.proxy_password_env: alerts.proxy_url names no user",
            "accounts[0].proxy_url: a proxy must be http:// or https://",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    /// The standard proxy environment is read through `Env`: HTTPS_PROXY (with its password kept
    /// secret), ALL_PROXY as the fallback, NO_PROXY; a bad value is named, never shown.
    #[test]
    fn proxy_environment() {
        let base = "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let env = |name: &str| match name {
            "KEY_A" => Some("k".to_string()),
            "https_proxy" => Some("http://u:env-pw-planted@proxy.corp:3128".to_string()),
            "ALL_PROXY" => Some("proxy.corp:8080".to_string()),
            "no_proxy" => Some("localhost, .internal".to_string()),
            _ => None,
        };
        let cfg = parse(base, Path::new("/etc/aw.toml"), &env).unwrap();
        let ProxySetting::Environment(e) = &cfg.accounts[0].collection.proxy else {
            panic!()
        };
        let https = e.https.as_ref().unwrap();
        assert_eq!(https.source, "https_proxy");
        assert_eq!(https.url.as_str(), "http://proxy.corp:3128/");
        assert_eq!(
            https.password.as_ref().map(Secret::expose),
            Some("env-pw-planted")
        );
        let http = e.http.as_ref().unwrap();
        assert_eq!(
            (http.source.as_str(), http.url.as_str()),
            ("ALL_PROXY", "http://proxy.corp:8080/")
        );
        assert_eq!(e.no_proxy.as_deref(), Some("localhost, .internal"));
        assert!(!format!("{cfg:?}").contains("env-pw-planted"));
        let bad = |name: &str| match name {
            "KEY_A" => Some("k".to_string()),
            "HTTPS_PROXY" => Some("ftp://u:bad-pw-planted@x".to_string()),
            _ => None,
        };
        let err = parse(base, Path::new("/etc/aw.toml"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("environment variable HTTPS_PROXY"), "{err}");
        assert!(!err.contains("bad-pw-planted"), "{err}");
    }

    /// A client certificate is only presented over https://.
    #[test]
    fn mtls_needs_https() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("id.pem");
        std::fs::write(&pem, "x").unwrap();
        let err = parse_str(&format!(
            "[store]\npath = \"x.db\"\n[[accounts]]\nname = \"a\"\nkind = \"digicert-one\"\nbase_url = \"http://127.0.0.1:8089\"\nclient_cert_file = {:?}\n",
            pem.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("accounts[0].client_cert_file: a client certificate is only presented over https://"), "{err}");
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
        assert_eq!(
            cfg.store.target.sqlite_path(),
            Some(Path::new("/var/lib/a.db"))
        );
    }

    /// `[store] url`: PostgreSQL with the password from `password_env`; exclusive with `path`; a
    /// URL holding a password is refused without the password (or the URL) in the message.
    #[test]
    fn store_url_is_postgres_with_its_password_elsewhere() {
        let acct = "[[accounts]]\nname = \"a\"\nkind = \"certcentral\"\napi_key_env = \"KEY_A\"\n";
        let cfg = parse_str(&format!(
            "[store]\nurl = \"postgresql://aw@db.internal:5432/audit?sslmode=verify-full\"\npassword_env = \"PG_PW\"\n{acct}"
        ))
        .unwrap();
        let StoreTarget::Postgres(t) = &cfg.store.target else {
            panic!("{:?}", cfg.store.target)
        };
        assert_eq!(t.url(), "postgresql://aw@db.internal:5432/audit");
        assert!(!format!("{t:?}").contains("pg-secret-planted"));
        let err = parse_str(&format!(
            "[store]\nurl = \"postgresql://aw:hunter2-planted@db:5432/audit\"\n{acct}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("store.url") && err.contains("password_env"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2-planted") && !err.contains("db:5432"),
            "{err}"
        );
        let err = parse_str(&format!(
            "[store]\npath = \"x.db\"\nurl = \"postgresql://aw@db/audit\"\n{acct}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = parse_str(&format!(
            "[store]\nurl = \"postgresql://aw@db/audit?sslmode=maybe\"\npassword_env = \"NOPE\"\n{acct}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sslmode=maybe") && err.contains("NOPE is not set"),
            "{err}"
        );
    }
}
