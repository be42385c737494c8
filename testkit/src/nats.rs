//! A real nats-server per test: random port, JetStream store in a temp dir, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The line nats-server logs once it accepts clients; the address follows it.
const LISTENING: &str = "Listening for client connections on ";

/// Why a test nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// The binary could not be run.
    #[error(
        "cannot run {binary}: {source} (install Debian's nats-server or set SALESBOY_TEST_NATS_SERVER_BIN)"
    )]
    Spawn {
        /// The binary tried.
        binary: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The temp dir for JetStream (and the config file) could not be made or written.
    #[error("cannot create a jetstream directory or config file: {0}")]
    TempDir(std::io::Error),
    /// No free ports were found for a cluster's servers.
    #[error("cannot find free ports for the nats-servers: {0}")]
    NoFreePorts(std::io::Error),
    /// The server exited or stayed silent before listening.
    #[error("nats-server did not start listening within {timeout:?}; its output: {output}")]
    NotListening {
        /// How long we waited.
        timeout: Duration,
        /// What it printed.
        output: String,
    },
}

/// The nats-server binary tests use: `SALESBOY_TEST_NATS_SERVER_BIN`, else `nats-server` on PATH.
pub fn nats_server_binary() -> PathBuf {
    std::env::var_os("SALESBOY_TEST_NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// A nats-server process owned by a test. Dropping it kills the process and deletes its
/// JetStream directory.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with JetStream on 127.0.0.1 and a random free port, and waits until it
    /// accepts clients.
    pub fn start() -> Result<Self, NatsServerError> {
        Self::start_with(None)
    }

    /// [`NatsServer::start`] with a configuration file holding `config` (users, accounts,
    /// permissions…); address, port and JetStream store still come from the command line,
    /// which overrides the file.
    pub fn start_with_config(config: &str) -> Result<Self, NatsServerError> {
        Self::start_with(Some(config))
    }

    fn start_with(config: Option<&str>) -> Result<Self, NatsServerError> {
        let store = tempfile::Builder::new()
            .prefix("salesboy-nats-")
            .tempdir()
            .map_err(NatsServerError::TempDir)?;
        let binary = nats_server_binary();
        let mut command = Command::new(&binary);
        if let Some(config) = config {
            let file = store.path().join("nats-server.conf");
            std::fs::write(&file, config).map_err(NatsServerError::TempDir)?;
            command.arg("-c").arg(file);
        }
        let mut child = command
            .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-sd"])
            .arg(store.path().join("jetstream"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NatsServerError::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;

        match wait_listening(&mut child, None) {
            Ok(port) => Ok(Self {
                child,
                port,
                _store: store,
            }),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(error)
            }
        }
    }

    /// The client URL, e.g. `nats://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (for tests that kill or pause it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `child`'s stderr (piped) until the server reports that it listens for clients, at
/// most [`START_TIMEOUT`]: the port. A thread keeps reading the log afterwards, so the pipe
/// never fills up, appending each line to `log` when given. The caller kills the child on
/// an error.
pub(crate) fn wait_listening(
    child: &mut Child,
    log: Option<PathBuf>,
) -> Result<u16, NatsServerError> {
    let Some(stderr) = child.stderr.take() else {
        return Err(NatsServerError::NotListening {
            timeout: START_TIMEOUT,
            output: "no stderr".into(),
        });
    };
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut file = log.and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(file) = file.as_mut() {
                let _ = writeln!(file, "{line}");
            }
            let _ = tx.send(line);
        }
    });

    let deadline = std::time::Instant::now() + START_TIMEOUT;
    let mut output = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = listening_port(&line) {
                    return Ok(port);
                }
                output.push_str(&line);
                output.push('\n');
            }
            Err(_) => {
                return Err(NatsServerError::NotListening {
                    timeout: START_TIMEOUT,
                    output,
                });
            }
        }
    }
}

/// The port in a nats-server "listening" log line.
fn listening_port(line: &str) -> Option<u16> {
    let (_, address) = line.split_once(LISTENING)?;
    address.trim().rsplit(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn reads_the_port_from_the_listening_line() {
        let line = "[123] 2026/11/28 12:00:00.000000 [INF] Listening for client connections on 127.0.0.1:43121";
        assert_eq!(listening_port(line), Some(43121));
        assert_eq!(listening_port("[INF] Starting nats-server"), None);
    }
}
