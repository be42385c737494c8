//! The node's memory limit: the cgroup's (systemd's `MemoryMax=`, a container's limit) or,
//! without one, the machine's memory. Resident memory is [`crate::process::rss_bytes`].

use std::path::{Path, PathBuf};

/// The memory this process may use: the smallest `memory.max` of its cgroup (v2) and the
/// cgroups above it, or its cgroup v1 `memory.limit_in_bytes`, or else the machine's memory
/// (`MemTotal`); `None` where none can be read (not Linux).
pub fn memory_limit_bytes() -> Option<u64> {
    cgroup_limit(Path::new("/"))
        .or_else(|| meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?))
}

/// The cgroup limit, reading `/proc/self/cgroup` and `/sys/fs/cgroup` under `root`.
fn cgroup_limit(root: &Path) -> Option<u64> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    let fs = root.join("sys/fs/cgroup");
    if let Some(path) = cgroups.lines().find_map(|line| line.strip_prefix("0::")) {
        return v2_limit(&fs, path);
    }
    let limit: u64 = std::fs::read_to_string(fs.join("memory/memory.limit_in_bytes"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // cgroup v1 says "no limit" with a number near i64::MAX.
    (limit < 1 << 60).then_some(limit)
}

/// The smallest `memory.max` from the cgroup at `path` up to the root (`max`: no limit).
fn v2_limit(fs: &Path, path: &str) -> Option<u64> {
    let mut dir: PathBuf = fs.join(path.trim_start_matches('/'));
    let mut smallest: Option<u64> = None;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("memory.max"))
            && let Ok(limit) = text.trim().parse::<u64>()
        {
            smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
        }
        if dir == fs || !dir.pop() || !dir.starts_with(fs) {
            return smallest;
        }
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_smallest_cgroup_v2_limit_on_the_way_up_counts() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write(
            root,
            "proc/self/cgroup",
            "0::/system.slice/salesboy.service\n",
        );
        write(
            root,
            "sys/fs/cgroup/system.slice/salesboy.service/memory.max",
            "max\n",
        );
        write(
            root,
            "sys/fs/cgroup/system.slice/memory.max",
            "2147483648\n",
        );
        assert_eq!(cgroup_limit(root), Some(2_147_483_648));
        write(
            root,
            "sys/fs/cgroup/system.slice/salesboy.service/memory.max",
            "1073741824\n",
        );
        assert_eq!(cgroup_limit(root), Some(1_073_741_824));
    }

    #[test]
    fn no_cgroup_limit_is_none() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        write(root, "proc/self/cgroup", "0::/\n");
        write(root, "sys/fs/cgroup/memory.max", "max\n");
        assert_eq!(cgroup_limit(root), None);
        write(root, "proc/self/cgroup", "4:memory:/x\n");
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(cgroup_limit(root), None, "v1 without a limit");
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "536870912\n",
        );
        assert_eq!(cgroup_limit(root), Some(536_870_912));
    }

    #[test]
    fn meminfo_gives_the_machines_memory() {
        let text = "MemTotal:        4012345 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_total(text), Some(4_012_345 * 1024));
        #[cfg(target_os = "linux")]
        assert!(memory_limit_bytes().is_some());
    }
}
