//! Report benchmark (`cargo bench --bench reports`; `-- EVENTS USERS` for other sizes).
//!
//! Fills a database directly through `Store` (default 1,000,000 events over 90 days and 100,000
//! users, 40% never active, 10% invited, 50,000 role changes with audit evidence), then runs the
//! real binary for each report and format as a child process, printing wall time, CPU time
//! (user and system) and peak RSS, next to the floor: `sqlite3 -csv` running the report's main query on
//! the same file (output to /dev/null). Each command runs [`RUNS`] times and the fastest run is
//! kept, for the floor too: on a shared machine a single run's wall time mostly measures the
//! other load, so the ratio is printed for wall time and for CPU time. It prints figures; it
//! asserts only that every run succeeds. The database is kept in target/bench-reports/ and reused
//! when its sizes match.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use auditwarden::api::AuditEvent;
use auditwarden::domain::{RoleChangeKind, UserStatus};
use auditwarden::store::{Evidence, PageWrite, RoleChange, Store, UserBatch, UserRow, WindowDone};
use chrono::{DateTime, Utc};

const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
/// Runs of each command; the fastest is kept.
const RUNS: usize = 3;
const DAY: i64 = 86_400_000;

/// A tiny deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn uid(i: u64) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

fn fill(path: &Path, events: u64, users: u64, now_ms: i64) {
    let mut store = Store::open(path).expect("open");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = now_ms - 90 * DAY;
    // Users: 10% invited, 5% service, 10% admins; created 100..500 days ago.
    let mut batch = UserBatch::default();
    for i in 0..users {
        let invited = i % 10 == 9;
        let roles = if i % 10 == 3 {
            vec!["AM_ACCOUNT_ADMIN".to_string()]
        } else {
            vec!["AM_VIEW_ONLY".to_string()]
        };
        let created = now_ms - (100 + rng.below(400) as i64) * DAY;
        batch.rows.push(UserRow {
            user_id: uid(i),
            user_name: Some(format!("user.{i}")),
            email: Some(format!("user.{i}@example.com")),
            user_type: Some(if i % 20 == 7 { "service" } else { "standard" }.into()),
            status: if invited {
                UserStatus::Invited
            } else {
                UserStatus::Active
            },
            status_raw: if invited { "PENDING" } else { "ACTIVE" }.into(),
            roles,
            created_ms: Some(created),
            raw: "{}".into(),
            first_seen_ms: created,
            updated_ms: created,
            invited_ms: invited.then_some(created),
            ..Default::default()
        });
        if batch.rows.len() == 20_000 {
            store.write_user_batch("bench", &batch).expect("users");
            batch = UserBatch::default();
        }
    }
    // Role changes with evidence, spread over the 90 days.
    for i in 0..50_000u64 {
        let t = start + rng.below(90 * DAY as u64) as i64;
        batch.role_changes.push(RoleChange {
            user_id: uid(rng.below(users)),
            role: if i % 4 == 0 {
                "AM_ACCOUNT_ADMIN"
            } else {
                "AM_USER_MANAGER"
            }
            .into(),
            change: if i % 2 == 0 {
                RoleChangeKind::Granted
            } else {
                RoleChangeKind::Revoked
            },
            observed_ms: Some(t + 60_000),
            after_ms: Some(t - 3_600_000),
            evidence: Some(Evidence {
                event_id: format!("rc-{i}"),
                event_ms: t,
                actor_id: Some(uid(3)),
                actor_name: Some("user.3".into()),
                ip_address: Some("10.0.0.1".into()),
            }),
        });
    }
    store
        .write_user_batch("bench", &batch)
        .expect("role changes");
    // Events: the first 60% of users act; one event per page write batch of 50k.
    let active = users * 6 / 10;
    let mut page = Vec::with_capacity(50_000);
    let mut written = 0u64;
    while written < events {
        let t = start + (written as i64 * 90 * DAY) / events as i64;
        let actor = rng.below(active);
        page.push(AuditEvent {
            id: format!("ev-{written:09}"),
            timestamp: DateTime::from_timestamp_millis(t).unwrap_or_default(),
            action: if written.is_multiple_of(3) {
                "login"
            } else {
                "update"
            }
            .into(),
            resource_type: Some("user".into()),
            resource_id: Some(uid(rng.below(users))),
            resource_name: None,
            actor_id: Some(uid(actor)),
            actor_name: Some(format!("user.{actor}")),
            status: Some(
                if written.is_multiple_of(17) {
                    "failure"
                } else {
                    "success"
                }
                .into(),
            ),
            ip_address: Some("192.0.2.1".into()),
            description: Some("benchmark event".into()),
            data: None,
            account_id: None,
            raw: format!("{{\"id\":\"ev-{written:09}\"}}"),
        });
        written += 1;
        if page.len() == 50_000 || written == events {
            let mut b = store.batch().expect("batch");
            b.write_page(&PageWrite {
                account: "bench",
                action_filter: "",
                day: None,
                events: &page,
                malformed: &[],
                done: None,
            })
            .expect("page");
            b.commit().expect("commit");
            page.clear();
        }
    }
    // Every day of the window complete.
    let mut d = DateTime::from_timestamp_millis(start)
        .unwrap_or_default()
        .date_naive();
    let today = DateTime::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .date_naive();
    while d <= today {
        store
            .write_page(&PageWrite {
                account: "bench",
                action_filter: "",
                day: Some(d),
                events: &[],
                malformed: &[],
                done: Some(WindowDone {
                    server_total: None,
                    received: 0,
                }),
            })
            .expect("coverage");
        d = d.succ_opt().unwrap_or(d);
    }
}

/// One run of a child: whether it succeeded, wall time, CPU time (user + system), peak RSS in MiB.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the child's peak RSS
fn timed_once(cmd: &mut Command) -> (bool, Duration, Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        started.elapsed(),
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64 / 1024,
    )
}

/// [`RUNS`] runs: the fastest wall time, the least CPU time, the largest peak RSS.
fn timed(mut cmd: Command) -> (bool, Duration, Duration, u64) {
    let mut best = (true, Duration::MAX, Duration::MAX, 0);
    for _ in 0..RUNS {
        let (ok, wall, cpu, rss) = timed_once(&mut cmd);
        best = (
            best.0 && ok,
            best.1.min(wall),
            best.2.min(cpu),
            best.3.max(rss),
        );
    }
    best
}

/// The main query of each report, as `sqlite3 -csv` runs it (the floor).
fn floor_sql(kind: &str, now_ms: i64) -> String {
    let from = now_ms - 30 * DAY;
    let users = |filter: &str, order: &str, accept: &str| {
        format!(
            "WITH a AS (SELECT u.*, le.ts_ms AS ev_ms, le.event_id AS ev_id,
                (u.roles LIKE '%admin%') AS privileged, {accept} AS accept_ev
              FROM users u LEFT JOIN events le ON le.seq = (SELECT e.seq FROM events e
                WHERE e.account = u.account AND e.actor_id = u.user_id
                AND COALESCE(e.status, '') <> 'failure' ORDER BY e.ts_ms DESC LIMIT 1)
              WHERE u.account = 'bench'),
             b AS (SELECT a.*, COALESCE(CASE WHEN COALESCE(last_login_ms, -1) >= COALESCE(ev_ms, -1)
                THEN last_login_ms ELSE ev_ms END, invited_ms, created_ms, first_seen_ms) AS since FROM a)
             SELECT account, user_id, user_name, display_name, user_type, status, roles, privileged,
                ev_ms, ev_id, since, accept_ev FROM b WHERE ({filter}) ORDER BY {order};"
        )
    };
    match kind {
        "role-changes" => format!(
            "SELECT rc.*, COALESCE(u.user_name, u.display_name), COALESCE(rc.event_ms, rc.observed_ms) AS t
             FROM role_changes rc LEFT JOIN users u ON u.account = rc.account AND u.user_id = rc.user_id
             WHERE rc.account = 'bench' AND COALESCE(rc.event_ms, rc.observed_ms) >= {from}
               AND COALESCE(rc.event_ms, rc.observed_ms) < {now_ms} ORDER BY t, rc.seq;"
        ),
        "dormant" => users(
            &format!("status <> 'deleted' AND since <= {}", now_ms - 30 * DAY),
            "privileged DESC, since, user_id",
            "NULL",
        ),
        "invitations" => users(
            "status = 'invited' OR accepted_ms IS NOT NULL",
            "COALESCE(invited_ms, created_ms, first_seen_ms), user_id",
            "(SELECT e.event_id FROM events e WHERE u.accepted_ms IS NOT NULL AND e.account = u.account
               AND e.actor_id = u.user_id AND e.action = 'login' ORDER BY e.ts_ms LIMIT 1)",
        ),
        _ => users(
            "status <> 'deleted'",
            "privileged DESC, lower(COALESCE(user_name, display_name, '')), user_id",
            "NULL",
        ),
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let events = args.first().copied().unwrap_or(1_000_000);
    let users = args.get(1).copied().unwrap_or(100_000);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-reports")
        .join(format!("{events}-{users}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("reports.db");
    let now_ms = Utc::now().timestamp_millis();
    if !db.exists() {
        println!(
            "filling {} ({events} events, {users} users) ...",
            db.display()
        );
        let t = Instant::now();
        fill(&db, events, users, now_ms);
        println!("  filled in {:.1}s", t.elapsed().as_secs_f64());
    } else {
        println!("reusing {}", db.display());
    }
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        "[store]\npath = \"reports.db\"\n[reports]\ndormant_days = 30\n[[accounts]]\nname = \"bench\"\nkind = \"digicert-one\"\nbase_url = \"http://127.0.0.1:9\"\napi_key_env = \"BENCH_KEY\"\n",
    )
    .expect("config");
    let sqlite = Command::new("sqlite3").arg("-version").output().is_ok();
    println!(
        "load {}; best of {RUNS} runs each",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "{:<14} {:>6} {:>8} {:>8} {:>9} {:>13} {:>11} {:>11}",
        "report", "format", "time", "CPU", "peak RSS", "sqlite3 floor", "wall ratio", "CPU ratio"
    );
    for kind in ["role-changes", "dormant", "invitations", "access-review"] {
        let floor = if sqlite {
            let mut cmd = Command::new("sqlite3");
            cmd.arg("-csv").arg(&db).arg(floor_sql(kind, now_ms));
            let (ok, wall, cpu, _) = timed(cmd);
            assert!(ok, "sqlite3 failed for {kind}");
            Some((wall, cpu))
        } else {
            None
        };
        for format in ["csv", "json", "html"] {
            let out = dir.join(format!("{kind}.{format}"));
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&config)
                .args(["report", kind, "--format", format, "--out"])
                .arg(&out)
                .env("BENCH_KEY", "unused")
                .env("AUDITWARDEN_LOG", "warn");
            let (ok, t, cpu, rss) = timed(cmd);
            assert!(ok, "report {kind} {format} failed");
            let ratio = |a: Duration, b: Duration| {
                format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-6))
            };
            let (floor_s, wall_ratio, cpu_ratio) = match floor {
                Some((fw, fc)) => (
                    format!("{:.2}s/{:.2}s", fw.as_secs_f64(), fc.as_secs_f64()),
                    ratio(t, fw),
                    ratio(cpu, fc),
                ),
                None => ("n/a".into(), "n/a".into(), "n/a".into()),
            };
            println!(
                "{kind:<14} {format:>6} {:>7.2}s {:>7.2}s {:>5} MiB {floor_s:>13} {wall_ratio:>11} {cpu_ratio:>11}",
                t.as_secs_f64(),
                cpu.as_secs_f64(),
                rss,
            );
        }
    }
}
