//! Helpers shared by the benchmark programs: the simulator as a child process, and running a
//! child to completion with its wall time and peak RSS (from `wait4`).

#![allow(dead_code)] // each benchmark uses the part it needs

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_auditwarden");
pub const KEY: &str = "bench-key";

/// A running `auditwarden simulate` on a free loopback port, killed on drop.
pub struct Sim {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the simulator with extra arguments (`--events`, `--users`, ...) accepting [`KEY`].
pub fn start_sim(args: &[String]) -> Sim {
    start_sim_with_keys(args, &[])
}

/// [`start_sim`], also accepting `extra_keys` on the same world (one account per key).
pub fn start_sim_with_keys(args: &[String], extra_keys: &[String]) -> Sim {
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--seed", "1"])
        .args(args)
        .env("AUDITWARDEN_SIM_API_KEY", KEY)
        .env("AUDITWARDEN_SIM_EXTRA_KEYS", extra_keys.join(","))
        .env("AUDITWARDEN_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn simulator");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("address");
    let url = format!(
        "http://{}",
        line.trim().rsplit("http://").next().unwrap_or("")
    );
    Sim { child, url }
}

/// The high-water mark of a live process's resident memory (`VmHWM`), in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Run `cmd` to completion: its output (stdout only), wall time and peak RSS in MiB.
///
/// The peak is the child's own `VmHWM`, read every 20 ms while it runs (the last reading before
/// it exits). `wait4`'s `ru_maxrss` is not used: the child is spawned with vfork, so it also
/// counts the benchmark's own memory at the time of the spawn.
#[allow(clippy::zombie_processes)] // reaped by wait4 below
pub fn peak_rss_of(mut cmd: Command) -> (Output, Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            // Bounded by the child's life: once it exits (a zombie has no VmHWM), readings stop.
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match vm_hwm_kib(pid as u32) {
                    Some(k) => peak = k,
                    None if peak > 0 => break,
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let mut stdout = child.stdout.expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let elapsed = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = watcher.join().unwrap_or(0);
    let out = reader.join().unwrap_or_default();
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out,
        stderr: Vec::new(),
    };
    (output, elapsed, peak_kib / 1024)
}
