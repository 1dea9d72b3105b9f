//! Job schedules: which jobs the daemon runs ([`Job`], a closed enum: one `match` shows them all)
//! and when ([`Cron`], a parsed cron expression in a time zone).
//!
//! Expressions are parsed once, when the configuration loads. Both spellings an operator may
//! know are accepted: the standard five crontab fields (`minute hour day month weekday`, so
//! `*/15 * * * *` is every 15 minutes), which get a leading `0` seconds field, and the `cron`
//! crate's six or seven fields (`sec min hour day month weekday [year]`), which tests use for
//! second-level schedules. A five-field line is never read as starting with seconds.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Something the daemon runs on a schedule. Adding a job is one variant here, one key in
/// `[schedule]` and one arm in `daemon::jobs::run_job`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Job {
    /// An audit-log pass, then the user sync, alert evaluation and delivery (as `collect`).
    Collect,
    /// One `GET /user/{id}` per invited user (as `poll-invites`).
    PollInvites,
    /// Send pending alerts again (as `alerts deliver`): retries what a collect left pending.
    DeliverAlerts,
    /// Write the configured report set (as `reports run`); scheduled by `[reports] schedule`
    /// in `[reports] time_zone`, not by a `[schedule]` key.
    Reports,
}

impl Job {
    pub const ALL: [Job; 4] = [
        Job::Collect,
        Job::PollInvites,
        Job::DeliverAlerts,
        Job::Reports,
    ];

    /// Its key in `[schedule]` and its `job` label in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Collect => "collect",
            Job::PollInvites => "poll_invites",
            Job::DeliverAlerts => "deliver_alerts",
            Job::Reports => "reports",
        }
    }

    /// The schedule used when `[schedule]` does not name the job.
    pub fn default_schedule(self) -> &'static str {
        match self {
            // Every 15 minutes: an idle pass costs about three requests per account.
            Job::Collect => "*/15 * * * *",
            // Hourly: one request per invited user.
            Job::PollInvites => "7 * * * *",
            // Every 5 minutes: only pending deliveries (receivers that were down) are sent.
            Job::DeliverAlerts => "*/5 * * * *",
            // 06:00 daily in the reports' display zone: a fresh set for the morning read.
            Job::Reports => "0 6 * * *",
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed cron expression, kept with the text it came from (for messages).
#[derive(Debug, Clone)]
pub struct Cron {
    schedule: cron::Schedule,
    text: String,
}

impl Cron {
    /// The first tick strictly after `after`, evaluated in `tz` (so `0 6 * * *` is 06:00 there,
    /// daylight saving included). `None` if the expression never fires again.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&after.with_timezone(&tz))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl FromStr for Cron {
    type Err = String;

    fn from_str(text: &str) -> Result<Cron, String> {
        let trimmed = text.trim();
        let full = match trimmed.split_whitespace().count() {
            5 => format!("0 {trimmed}"),
            6 | 7 => trimmed.to_string(),
            n => {
                return Err(format!(
                    "{text:?} has {n} fields: use five (minute hour day month weekday, e.g. \"*/15 * * * *\") or six with seconds first (e.g. \"*/10 * * * * *\")"
                ))
            }
        };
        let schedule = full
            .parse::<cron::Schedule>()
            .map_err(|e| format!("{text:?} is not a cron expression: {e}"))?;
        Ok(Cron {
            schedule,
            text: trimmed.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Five crontab fields mean minutes first (never seconds); six mean seconds first.
    #[test]
    fn five_fields_are_crontab_six_have_seconds() {
        let c: Cron = "*/15 * * * *".parse().unwrap();
        assert_eq!(
            c.next_after(at("2024-03-01T10:07:30Z"), chrono_tz::UTC),
            Some(at("2024-03-01T10:15:00Z"))
        );
        let s: Cron = "*/10 * * * * *".parse().unwrap();
        assert_eq!(
            s.next_after(at("2024-03-01T10:07:31Z"), chrono_tz::UTC),
            Some(at("2024-03-01T10:07:40Z"))
        );
        assert!("* * * *".parse::<Cron>().is_err());
        assert!("61 * * * *".parse::<Cron>().is_err());
    }

    /// A time zone moves the tick: 06:00 in Zurich in winter is 05:00 UTC.
    #[test]
    fn time_zone_applies() {
        let c: Cron = "0 6 * * *".parse().unwrap();
        let next = c
            .next_after(at("2024-01-10T00:00:00Z"), chrono_tz::Europe::Zurich)
            .unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2024, 1, 10, 5, 0, 0).unwrap());
    }

    /// Every job has a default schedule that parses.
    #[test]
    fn defaults_parse() {
        for j in Job::ALL {
            j.default_schedule().parse::<Cron>().unwrap();
        }
    }
}
