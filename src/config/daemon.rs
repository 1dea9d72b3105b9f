//! `[schedule]` and `[daemon]`: when `auditwarden run` starts each job, and how it stops, backs
//! off and reports its health, as types and their parsing. Here rather than next to the daemon's
//! code so the daemon can be reorganized without touching its settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::schedule::{Cron, Job};
use crate::settings::{time_zone, Section};

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
    /// On PostgreSQL, how long an account's lease lasts without a heartbeat: a daemon that
    /// stopped (`kill -9`, paused, partitioned) has its accounts taken over after this long.
    pub lease: Duration,
    /// Names this daemon in lease rows and logs; `None`: host name and pid.
    pub node_name: Option<String>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            shutdown_grace: Duration::from_secs(default_shutdown_grace_secs()),
            backoff_base: Duration::from_secs(default_backoff_base_secs()),
            backoff_max: Duration::from_secs(default_backoff_max_secs()),
            listen: None,
            ready_max_age: Duration::from_secs(default_ready_max_age_secs()),
            lease: Duration::from_secs(30),
            node_name: None,
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

/// `[schedule]` (the report set's schedule is `[reports] schedule`).
pub fn schedule_settings(t: &toml::Table, problems: &mut Vec<String>) -> ScheduleSettings {
    let mut out = ScheduleSettings::default();
    let mut s = Section::new("schedule".into(), t);
    if let Some(tz) = time_zone(&mut s, "time_zone", problems) {
        out.time_zone = tz;
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

/// `[daemon]`.
pub fn daemon_settings(t: &toml::Table, problems: &mut Vec<String>) -> DaemonSettings {
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
    // At least 2 s: the heartbeat renews every third of it, so a lease survives a renewal
    // that comes late by a third; short leases are for tests and benchmarks (quick takeovers).
    if let Some(v) = s.integer("lease_secs", 2, 3600, problems) {
        d.lease = Duration::from_secs(v as u64);
    }
    if let Some(n) = s.string("node_name", problems) {
        if n.trim().is_empty() || n.len() > 200 {
            problems.push(format!(
                "{}: must be a non-empty name of at most 200 characters",
                s.key("node_name")
            ));
        } else {
            d.node_name = Some(n.trim().to_string());
        }
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
