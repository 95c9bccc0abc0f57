//! This process's resource use (Linux `/proc`), for tests that bound the
//! memory or CPU a hostile peer can make the server spend, and the lock
//! that keeps such measurements of one test binary apart.

/// This process's resident memory, KiB.
pub fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// CPU time (user + system) of the calling thread, in clock ticks.
pub fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("/proc/thread-self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Serialises the tests of one binary that measure process-wide memory
/// (hold the guard for the whole test: `let _serial = MEMORY.lock().await;`).
pub static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
