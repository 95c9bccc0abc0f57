//! Server processes and what `/proc` says about them: CPU time
//! (`/proc/<pid>/stat` utime + stime) and resident memory (`/proc/<pid>/status`
//! VmRSS).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::systems::System;

/// Clock ticks per second of utime/stime (`getconf CLK_TCK`; 100 on Linux
/// unless the command is missing and it says otherwise).
pub(crate) fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> Result<u64, String> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) of the calling thread so far, in clock ticks.
pub(crate) fn thread_cpu_ticks() -> Result<u64, String> {
    stat_ticks("/proc/thread-self/stat")
}

fn stat_ticks(path: &str) -> Result<u64, String> {
    let stat = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are
    // at indexes 11 and 12.
    let get = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("{path}: no field {i}"))
    };
    Ok(get(11)? + get(12)?)
}

/// Resident set size of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// A `bench-server` child process. Killed when dropped; it also exits by
/// itself when its stdin closes (the bench died).
#[derive(Debug)]
pub(crate) struct ServerProc {
    child: Child,
    _stdin: ChildStdin,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its process id.
    pub(crate) pid: u32,
}

impl ServerProc {
    /// Starts `bench-server --system SYSTEM` (this executable) and waits for its
    /// address.
    pub(crate) fn spawn(system: System, threads: usize) -> Result<ServerProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args([
                "bench-server",
                "--system",
                system.name(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the {system} server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("{system} server: {e}"))?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{system} server did not start (said {line:?})"))?;
        let pid = child.id();
        Ok(ServerProc {
            child,
            _stdin: stdin,
            addr,
            pid,
        })
    }

    /// CPU ticks so far.
    pub(crate) fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.pid)
    }

    /// Resident memory, KiB.
    pub(crate) fn rss_kib(&self) -> Result<u64, String> {
        rss_kib(self.pid)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In `bench-server`: exit when the parent closes our stdin (it finished or died).
pub(crate) fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
}

/// Waits a little for the server to settle (freed buffers, idle timers).
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
