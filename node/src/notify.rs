//! systemd's readiness protocol (`sd_notify`, `Type=notify`): a datagram of `KEY=VALUE`
//! lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). The node says `READY=1` once it serves and `STOPPING=1` when it starts to
//! drain. Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent.

use std::io;
use std::path::Path;

use tracing::warn;

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Tells systemd the node is ready (it serves HTTP, it has joined its cluster).
pub fn ready() {
    notify("READY=1\nSTATUS=serving");
}

/// Tells systemd the node is stopping (draining its tenants first, on a cluster).
pub fn stopping() {
    notify("STOPPING=1\nSTATUS=draining and stopping");
}

/// Sends `state` to `$NOTIFY_SOCKET` if it is set; a failure is logged, never fatal.
fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET_ENV) else {
        return;
    };
    if let Err(error) = send(Path::new(&socket), state) {
        warn!(%error, socket = %socket.to_string_lossy(), "cannot notify systemd");
    }
}

/// Sends one datagram holding `state` to the notify socket at `socket` (a path, or `@name`
/// for Linux's abstract namespace).
pub fn send(socket: &Path, state: &str) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;
    let sender = UnixDatagram::unbound()?;
    let name = socket.as_os_str().as_encoded_bytes();
    if let Some(abstract_name) = name.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sender.send_to_addr(state.as_bytes(), &address)?;
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = abstract_name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract sockets exist on Linux only",
            ));
        }
    }
    sender.send_to(state.as_bytes(), socket)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn a_state_reaches_a_path_socket_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(&path, "READY=1\nSTATUS=serving").unwrap();
        let mut buffer = [0_u8; 256];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_state_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("salesboy-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send(Path::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buffer = [0_u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(&dir.path().join("absent.sock"), "READY=1").is_err());
    }
}
