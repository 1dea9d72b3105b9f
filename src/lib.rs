//! auditwarden keeps watch over who can do what in DigiCert accounts.
//!
//! Layout (see `ARCHITECTURE.md` for the full map and its invariants):
//! - [`cli`]: the command line and the dispatch of each command; the only place that prints results.
//! - [`config`]: raw TOML to a validated [`config::Config`], once, with every problem reported.
//! - [`domain`]: the leaf vocabulary: closed enums of stored states and the rules (privileged,
//!   activity, dormancy, acceptance window, fingerprints), once.
//! - [`api`]: the only code that knows DigiCert's JSON: HTTP client, retries, throttle, wire parsing.
//! - [`store`]: the one interface to the history (`Backend`), and the only code that issues SQL;
//!   SQLite is one backend behind it.
//! - [`collect`]: audit-log collection: windows, paging, drift detection, the writer thread.
//! - [`pass`]: one collection pass (audit log, users, alerts), for `collect`, the daemon and the demo.
//! - [`coverage`]: which days are known complete, and the gaps with their reasons.
//! - [`report_users`]: the user directory (`auditwarden users`) as a table, JSON or safe CSV.
//! - [`export`]: streaming stored events out as JSONL or spreadsheet-safe CSV.
//! - [`review`]: access-review campaigns: a frozen population, decision sheets, remediation, a signed package.
//! - [`simulate`]: the built-in DigiCert simulator used by tests, the demo and new users.
//! - [`alert`]: rules on role grants and new users, the outbox, delivery to webhook/Slack/command.
//! - [`daemon`]: `auditwarden run`: job loops on cron schedules ([`schedule`]), shutdown, health.
//! - [`demo`]: `auditwarden demo` on the in-process simulator; reports its steps to [`cli`], prints nothing.
//! - [`clock`]: the domain clock ("today"), pinned by `--now` for tests and replays.
//! - [`secret`]: a string that never prints itself.
//! - [`logging`]: structured logs on stderr (text, or JSON lines with `--log-format json`).
//! - [`settings`]: the toolkit of every settings parser: key paths, secrets, time zones.
//! - [`signing`]: Ed25519 keys (`keygen`) and detached signatures over report manifests.
//! - [`text`]: outside text made safe for a terminal (controls, bidi, URL userinfo), rounded figures.

pub mod alert;
pub mod api;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod config;
pub mod coverage;
pub mod daemon;
pub mod demo;
pub mod domain;
pub mod export;
pub mod logging;
pub mod pass;
pub mod report;
pub mod report_users;
pub mod review;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod signing;
pub mod simulate;
pub mod store;
pub mod text;
