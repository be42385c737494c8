//! Facts about this process: resident memory, CPU time.

/// Resident set size in bytes (Linux `/proc/self/status`, `VmRSS`); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this process has used, user and system, in seconds (Linux `/proc/self/stat`,
/// `utime` + `stime` in clock ticks of `USER_HZ`, 100 on every Linux ABI); `None` elsewhere.
pub fn cpu_seconds() -> Option<f64> {
    /// Clock ticks a second as `/proc` counts them (`USER_HZ`, fixed by the kernel ABI).
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the name come field 3 (state) onwards: utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_a_plausible_rss() {
        let rss = super::rss_bytes().expect("linux has /proc/self/status");
        assert!(rss > 1024 * 1024, "rss {rss} is implausibly small");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn cpu_time_grows_with_work() {
        let before = super::cpu_seconds().expect("linux has /proc/self/stat");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Work until the count moves (a clock tick is 10 ms of CPU), for at most 10 s.
        let mut after = before;
        while after <= before && started.elapsed() < std::time::Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            after = super::cpu_seconds().unwrap();
        }
        assert!(after > before, "{before} -> {after}");
    }
}
