//! Facts about the machine and the processes a benchmark ran on: CPU model, memory, date,
//! git commit, CPU time of the bench itself, of the node and of PostgreSQL, and how busy the
//! whole machine was (other work on a shared 2-core box skews every figure).

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine a result was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to the bench.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub total_ram_bytes: u64,
    /// The kernel (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
}

impl Machine {
    /// Reads the machine's facts (unknown values are empty or 0).
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|line| line.starts_with("model name"))
            .and_then(|line| line.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            total_ram_bytes: kib_field(&meminfo, "MemTotal:").unwrap_or(0) * 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// The value in KiB of a `Name:   123 kB` line.
pub(crate) fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|line| line.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The short commit of the working tree `dir` is in; with uncommitted changes to tracked
/// files, followed by the top-level folders they are in (`abc1234 + changes in
/// simulations`). `None` outside git.
pub fn git_commit(dir: &Path) -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let status = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(dir)
        .output()
        .ok()?;
    let mut folders: Vec<String> = String::from_utf8_lossy(&status.stdout)
        .lines()
        .filter_map(|line| line.get(3..))
        .map(|path| path.split('/').next().unwrap_or(path).to_owned())
        .collect();
    folders.sort();
    folders.dedup();
    Some(if folders.is_empty() {
        commit
    } else {
        format!("{commit} + changes in {}", folders.join(", "))
    })
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-since-epoch to proleptic Gregorian date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100 if unknown).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `(comm, user + system CPU seconds)` of a process from `/proc/<pid>/stat`.
fn proc_stat(pid: &str) -> Option<(String, f64)> {
    proc_stat_split(pid).map(|(comm, user, system)| (comm, user + system))
}

/// `(comm, user CPU seconds, system CPU seconds)` of a process from `/proc/<pid>/stat`.
fn proc_stat_split(pid: &str) -> Option<(String, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may contain spaces: split at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // after the comm: state(0) ... utime(11) stime(12)
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime / clock_ticks(), stime / clock_ticks()))
}

/// System (kernel) CPU seconds used so far by process `pid`.
pub fn process_system_secs(pid: u32) -> Option<f64> {
    proc_stat_split(&pid.to_string()).map(|(_, _, system)| system)
}

/// User + system CPU seconds used so far by process `pid` (all its threads).
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    proc_stat(&pid.to_string()).map(|(_, secs)| secs)
}

/// CPU seconds used so far by this process.
pub fn own_cpu_secs() -> f64 {
    process_cpu_secs(std::process::id()).unwrap_or(0.0)
}

/// CPU seconds used so far by every live process named `postgres` (the server and all its
/// backends, including other users' sessions on a shared server).
pub fn postgres_cpu_secs() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let pid = name.to_str()?;
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (comm, secs) = proc_stat(pid)?;
            (comm == "postgres").then_some(secs)
        })
        .sum()
}

/// Busy and total CPU seconds of the whole machine (`/proc/stat`, all CPUs).
pub fn machine_cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = values.iter().take(8).sum();
    // idle (3) and iowait (4) are not busy
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    let ticks = clock_ticks();
    ((total - idle) / ticks, total / ticks)
}

/// A process's memory from `/proc/<pid>/status`, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rss {
    /// `VmRSS`: resident set size.
    pub rss: u64,
    /// `RssAnon`: resident anonymous memory (heap, stacks).
    pub anon: u64,
    /// `RssFile`: resident file-backed pages (the binary, mapped files).
    pub file: u64,
    /// `RssShmem`: resident shared memory (e.g. SQLite's WAL index).
    pub shmem: u64,
}

/// The memory of process `pid`.
pub fn process_rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name| kib_field(&status, name).map(|kib| kib * 1024);
    Some(Rss {
        rss: field("VmRSS:")?,
        anon: field("RssAnon:").unwrap_or(0),
        file: field("RssFile:").unwrap_or(0),
        shmem: field("RssShmem:").unwrap_or(0),
    })
}

/// Where CPU time went during a measured phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUsage {
    /// Wall time of the phase, seconds.
    pub wall_secs: f64,
    /// CPU seconds of the bench process (load generator and fake Cloud API).
    pub bench_secs: f64,
    /// CPU seconds of the node process.
    pub node_secs: f64,
    /// Of those, in the kernel (system calls: sockets, futexes, files).
    pub node_system_secs: f64,
    /// CPU seconds of every `postgres` process (0 on SQLite runs, except other users').
    pub postgres_secs: f64,
    /// CPU seconds the whole machine was busy (all processes, all CPUs).
    pub machine_busy_secs: f64,
    /// CPU seconds the machine had (wall × CPUs).
    pub machine_total_secs: f64,
}

impl CpuUsage {
    /// Busy CPU seconds of everything but the bench, the node and PostgreSQL: other work on
    /// the machine during the phase (approximate: `/proc/stat` is tick-sampled).
    pub fn other_secs(&self) -> f64 {
        (self.machine_busy_secs - self.bench_secs - self.node_secs - self.postgres_secs).max(0.0)
    }

    /// Whether the machine-wide counters can be trusted for this phase: `/proc/stat`
    /// accounted within 10% of wall time × CPUs. On some VMs its tick-based counters lag
    /// behind by seconds; the per-process figures (scheduler-exact) are always usable.
    pub fn machine_consistent(&self, nproc: usize) -> bool {
        let expected = self.wall_secs * nproc as f64;
        expected > 0.0 && (self.machine_total_secs - expected).abs() <= 0.1 * expected
    }
}

/// CPU counters at the start of a phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: std::time::Instant,
    bench: f64,
    node: f64,
    node_system: f64,
    postgres: f64,
    busy: f64,
    total: f64,
    node_pid: u32,
}

impl CpuMark {
    /// Reads the counters now; `node_pid` is the node process.
    pub fn now(node_pid: u32) -> Self {
        let (busy, total) = machine_cpu_secs();
        Self {
            at: std::time::Instant::now(),
            bench: own_cpu_secs(),
            node: process_cpu_secs(node_pid).unwrap_or(0.0),
            node_system: process_system_secs(node_pid).unwrap_or(0.0),
            postgres: postgres_cpu_secs(),
            busy,
            total,
            node_pid,
        }
    }

    /// What was used since this mark.
    pub fn usage(&self) -> CpuUsage {
        let end = Self::now(self.node_pid);
        CpuUsage {
            wall_secs: end.at.duration_since(self.at).as_secs_f64(),
            bench_secs: end.bench - self.bench,
            node_secs: end.node - self.node,
            node_system_secs: end.node_system - self.node_system,
            postgres_secs: end.postgres - self.postgres,
            machine_busy_secs: end.busy - self.busy,
            machine_total_secs: end.total - self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(process_rss(std::process::id()).is_some_and(|r| r.rss > 0));
        assert!(own_cpu_secs() >= 0.0);
        let machine = Machine::detect();
        assert!(machine.nproc >= 1);
    }
}
