//! Idle daemon cost: `auditwarden run` (the release binary) with two DigiCert ONE accounts on the
//! simulator, every job scheduled every minute, measured over a duration (default 600 s):
//! resident memory (peak and last, from /proc) and CPU time as a share of one core.
//!
//! `cargo bench --bench daemon [-- SECONDS [EVENTS]]` (default 600 s after a backfill of
//! 1,000,000 events per account). Targets: under 20 MiB RSS idle after the backfill, under 1% of a
//! core. The backfill itself is excluded (its peak RSS is printed): measuring starts once both
//! accounts are ready.

// A benchmark program: a failed step panics with its reason, which is its report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
const KEY: &str = "bench-key";

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(600);
    let events = args.get(1).copied().unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sim = Command::new(BIN)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--events",
            &events.to_string(),
            "--days",
            "30",
        ])
        .env("AUDITWARDEN_SIM_API_KEY", KEY)
        .env("AUDITWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulator");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut cfg = String::from(
        "[store]\npath = \"aw.db\"\n[schedule]\ncollect = \"* * * * *\"\npoll_invites = \"* * * * *\"\ndeliver_alerts = \"* * * * *\"\n[daemon]\nlisten = \"127.0.0.1:0\"\n",
    );
    for name in ["first", "second"] {
        cfg.push_str(&format!(
            "[[accounts]]\nname = \"{name}\"\nkind = \"digicert-one\"\nbase_url = \"{url}\"\napi_key_env = \"BENCH_KEY\"\nbackfill_days = 30\n"
        ));
    }
    let config = dir.path().join("auditwarden.toml");
    std::fs::write(&config, cfg).expect("config");
    let mut daemon = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("BENCH_KEY", KEY)
        .env("AUDITWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    let pid = daemon.id();
    let mut addr = String::new();
    let mut out = BufReader::new(daemon.stdout.take().expect("stdout"));
    loop {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap_or(0) == 0 {
            panic!("the daemon exited");
        }
        if let Some(a) = l.trim().strip_prefix("health and metrics on http://") {
            addr = a.to_string();
        }
        if l.starts_with("auditwarden running") {
            break;
        }
    }
    println!("daemon pid {pid}, two accounts, every job every minute; waiting for the first pass (backfill of {events} events per account)");
    let t_backfill = Instant::now();
    let ready_by = t_backfill + Duration::from_secs(1800);
    let mut backfill_peak = 0u64;
    while get(&addr, "/readyz") != 200 {
        assert!(Instant::now() < ready_by, "the accounts never became ready");
        backfill_peak = backfill_peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "ready after {:.0} s (RSS during the backfill up to {:.1} MiB, sampled); measuring for {secs} s",
        t_backfill.elapsed().as_secs_f64(),
        backfill_peak as f64 / 1024.0
    );
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut peak = 0u64;
    let mut last = 0u64;
    let mut sum = 0u64;
    let mut anon_sum = 0u64;
    let mut file_sum = 0u64;
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        last = rss_kib(pid);
        peak = peak.max(last);
        sum += last;
        anon_sum += status_kib(pid, "RssAnon:");
        file_sum += status_kib(pid, "RssFile:");
        n += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(pid).saturating_sub(cpu0) as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_pct = ticks / hz / wall * 100.0;
    let runs = metric_sum(&addr, "auditwarden_job_runs_total");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = sim.kill();
    let _ = sim.wait();
    println!("over {wall:.0} s: {runs} job runs");
    println!(
        "idle RSS after the backfill: peak {:.1} MiB, mean {:.1} MiB, last {:.1} MiB (target < 20 MiB)",
        peak as f64 / 1024.0,
        sum as f64 / n.max(1) as f64 / 1024.0,
        last as f64 / 1024.0
    );
    println!(
        "  of the mean: {:.1} MiB anonymous (heap, stacks), {:.1} MiB file-backed (the binary's and \
         libraries' pages, shared with the page cache)",
        anon_sum as f64 / n.max(1) as f64 / 1024.0,
        file_sum as f64 / n.max(1) as f64 / 1024.0
    );
    println!("CPU: {cpu_pct:.3}% of one core (target < 1%)");
    let _ = std::io::stdout().flush();
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A field of /proc/PID/status in KiB: `VmRSS:` (all resident pages), `RssAnon:` (the heap,
/// stacks and other private memory), `RssFile:` (pages of the binary and libraries mapped in:
/// shared with the page cache, and dropped by the kernel under pressure).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    get(11) + get(12)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn get(addr: &str, path: &str) -> u16 {
    http_get(addr, path).0
}

fn metric_sum(addr: &str, name: &str) -> f64 {
    http_get(addr, "/metrics")
        .1
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
