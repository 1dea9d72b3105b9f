//! `[reports]`: the scheduled report set and the defaults of `auditwarden report`, as types and
//! their parsing. `config` calls [`report_settings`]; the report code reads [`ReportSettings`]
//! and [`RunSettings`], never the whole configuration.

use std::path::{Path, PathBuf};

use super::{ReportFormat, ReportKind};
use crate::schedule::{Cron, Job};
use crate::settings::{resolve, time_zone, Section};

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
    /// The credentials report: a service user whose end date is at most this many days away is
    /// expiring.
    pub credential_warn_days: u32,
    /// The credentials report: an API token or client-auth certificate created longer ago than
    /// this and not revoked is flagged for rotation.
    pub max_credential_age_days: u32,
    /// The Ed25519 private key (PKCS#8 PEM from `auditwarden keygen`; a file or a systemd
    /// credential) that signs each run's manifest. `None`: runs are unsigned. The path only: the
    /// key is read when a run is signed, never printed.
    pub signing_key_file: Option<PathBuf>,
}

/// The user reports, in every format (`credentials` when listed).
fn default_report_kinds() -> Vec<ReportKind> {
    ReportKind::DEFAULT.to_vec()
}

/// A month's notice before a service user stops working.
fn default_credential_warn_days() -> u32 {
    30
}

/// The common yearly rotation of API keys and certificates.
fn default_max_credential_age_days() -> u32 {
    365
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
            credential_warn_days: default_credential_warn_days(),
            max_credential_age_days: default_max_credential_age_days(),
            signing_key_file: None,
        }
    }
}

/// The keys of `[reports]` (the caller reports the unknown ones).
pub fn report_settings(
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
    if let Some(z) = time_zone(s, "time_zone", problems) {
        r.time_zone = z;
    }
    if let Some(v) = s.integer("retention_days", 0, 36_500, problems) {
        r.retention_days = v as u32;
    }
    if let Some(v) = s.integer("dormant_days", 1, 3650, problems) {
        r.dormant_days = v as u32;
    }
    if let Some(v) = s.integer("credential_warn_days", 1, 3650, problems) {
        r.credential_warn_days = v as u32;
    }
    if let Some(v) = s.integer("max_credential_age_days", 1, 36_500, problems) {
        r.max_credential_age_days = v as u32;
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

/// What a configured run of the set needs besides the store: `[reports]`, the SHA-256 of the
/// configuration the process runs (it goes in the manifest) and `[users] stale_invite_days`. `config` makes it
/// from a whole configuration.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings<'a> {
    pub reports: &'a ReportSettings,
    pub config_sha256: &'a str,
    pub stale_invite_days: u32,
}
