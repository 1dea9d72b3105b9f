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
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--seed", "1"])
        .args(args)
        .env("AUDITWARDEN_SIM_API_KEY", KEY)
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

/// Run `cmd` to completion: its output (stdout only), wall time and peak RSS in MiB.
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives the child's peak RSS
pub fn peak_rss_of(mut cmd: Command) -> (Output, Duration, u64) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
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
    let out = reader.join().unwrap_or_default();
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out,
        stderr: Vec::new(),
    };
    (output, elapsed, usage.ru_maxrss as u64 / 1024)
}
