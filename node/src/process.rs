//! Facts about this process: resident memory.

/// Resident set size in bytes (Linux `/proc/self/status`, `VmRSS`); `None` elsewhere.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_a_plausible_rss() {
        let rss = super::rss_bytes().expect("linux has /proc/self/status");
        assert!(rss > 1024 * 1024, "rss {rss} is implausibly small");
    }
}
