//! Free TCP ports on 127.0.0.1 for servers a test starts as processes (nodes, nats-server,
//! chromedriver), which bind them a while after they are picked.
//!
//! A port the kernel hands out for `bind(0)` lies in its ephemeral range, the one it also
//! takes every outgoing connection's local port from. Released, such a port can become
//! some connection's local port before the server binds it, and the server then fails with
//! "Address already in use" (a sandbox node that connected to NATS and PostgreSQL before it
//! bound HTTP did). So the ports picked here lie below that range, where only explicit
//! binds go: each is checked free by binding it, and one process never hands out the same
//! port twice.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{LazyLock, Mutex};

/// The lowest port picked: above the well-known and most registered services' ports.
const LOWEST: u16 = 10_000;

/// The kernel's ephemeral range when it cannot be read (Linux's default).
const DEFAULT_EPHEMERAL: (u16, u16) = (32_768, 60_999);

/// Where the kernel's ephemeral range is set (Linux).
const EPHEMERAL_RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Ports this process has handed out.
static HANDED_OUT: LazyLock<Mutex<HashSet<u16>>> = LazyLock::new(Mutex::default);

/// A port on 127.0.0.1 that is free now, outside the kernel's ephemeral range, and not
/// handed out before by this process.
pub fn free_port() -> io::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `count` distinct ports as [`free_port`] picks them.
pub fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let (low, high) = candidate_range(ephemeral_range());
    let size = u32::from(high - low) + 1;
    // Where the search starts differs between processes (the hasher's keys are random),
    // so tests running side by side rarely probe the same ports.
    let start = RandomState::new().hash_one(std::process::id()) % u64::from(size);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut ports = Vec::with_capacity(count);
    for step in 0..size {
        if ports.len() == count {
            break;
        }
        let offset = (start + u64::from(step)) % u64::from(size);
        let port = low + u16::try_from(offset).expect("offset below the range's size");
        if handed_out.contains(&port) || TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        ports.push(port);
    }
    if ports.len() < count {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("fewer than {count} free ports between {low} and {high} on 127.0.0.1"),
        ));
    }
    Ok(ports)
}

/// The kernel's ephemeral port range, from [`EPHEMERAL_RANGE_PATH`] or Linux's default.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string(EPHEMERAL_RANGE_PATH)
        .ok()
        .and_then(|text| parse_range(&text))
        .unwrap_or(DEFAULT_EPHEMERAL)
}

/// "32768\t60999\n" as (32768, 60999).
fn parse_range(text: &str) -> Option<(u16, u16)> {
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    let low = bounds.next()?.ok()?;
    let high = bounds.next()?.ok()?;
    (low <= high).then_some((low, high))
}

/// The ports to pick from: below the ephemeral range when at least a thousand fit there,
/// else above it, else (a kernel that makes nearly every port ephemeral) all above
/// [`LOWEST`].
fn candidate_range((ephemeral_low, ephemeral_high): (u16, u16)) -> (u16, u16) {
    if ephemeral_low >= LOWEST + 1_000 {
        (LOWEST, ephemeral_low - 1)
    } else if ephemeral_high <= u16::MAX - 1_000 {
        (ephemeral_high.max(LOWEST) + 1, u16::MAX)
    } else {
        (LOWEST, u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernels_range() {
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("1024 65535"), Some((1_024, 65_535)));
        assert_eq!(parse_range("60999 32768"), None);
        assert_eq!(parse_range("32768"), None);
    }

    #[test]
    fn picks_below_the_ephemeral_range_or_above_it() {
        assert_eq!(candidate_range((32_768, 60_999)), (10_000, 32_767));
        assert_eq!(candidate_range((10_500, 60_999)), (61_000, 65_535));
        assert_eq!(candidate_range((1_024, 65_535)), (10_000, 65_535));
    }

    #[test]
    fn ports_are_free_outside_the_ephemeral_range_and_never_handed_out_twice() {
        let (ephemeral_low, ephemeral_high) = ephemeral_range();
        let first = free_ports(8).expect("free ports");
        let second = free_ports(8).expect("free ports");
        let all: HashSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 16, "{first:?} {second:?}");
        for port in all {
            assert!(
                !(ephemeral_low..=ephemeral_high).contains(&port) || ephemeral_low < LOWEST + 1_000,
                "{port} is ephemeral"
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }
}
