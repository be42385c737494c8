//! One sandbox node: what stays across restarts (port, data dir, log, NATS proxy) and its
//! current process.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use tokio::process::Child;

use super::{LOG_TAIL_BYTES, NodeHandleInfo, POLL_INTERVAL};
use crate::TcpProxy;

/// One node: what stays across restarts, and its current process.
pub(super) struct SandboxNode {
    pub(super) index: usize,
    pub(super) id: String,
    pub(super) port: u16,
    pub(super) data_dir: PathBuf,
    pub(super) log_path: PathBuf,
    /// In front of the NATS server, the node's `SALESBOY_NATS_URL`; `None` on a NATS cluster
    /// (the node is given every server's URL).
    pub(super) proxy: Option<TcpProxy>,
    pub(super) process: Mutex<Process>,
}

/// A node's process, if it runs, and how the last one ended.
#[derive(Default)]
pub(super) struct Process {
    pub(super) child: Option<Child>,
    pub(super) exit: Option<ExitStatus>,
    pub(super) starts: u32,
}

impl Process {
    /// Reaps the child if it has exited; its pid while it runs.
    pub(super) fn running_pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => child.id(),
            Ok(Some(status)) => {
                self.exit = Some(status);
                self.child = None;
                None
            }
            // Cannot tell: treat it as running, a later call will know.
            Err(_) => child.id(),
        }
    }

    /// Why the node does not run, for error messages.
    pub(super) fn describe_stopped(&self) -> String {
        match self.exit {
            Some(status) => format!("its process exited ({status})"),
            None => "it has no process".to_owned(),
        }
    }
}

impl SandboxNode {
    pub(super) fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node's NATS proxy; an error on a NATS cluster, whose nodes connect directly.
    pub(super) fn proxy(&self) -> Result<&TcpProxy, String> {
        self.proxy.as_ref().ok_or_else(|| {
            format!(
                "{} has no nats proxy: on a nats cluster, kill or restart servers instead",
                self.id
            )
        })
    }

    pub(super) fn process(&self) -> MutexGuard<'_, Process> {
        self.process.lock()
    }

    pub(super) fn info(&self) -> NodeHandleInfo {
        let mut process = self.process();
        let pid = process.running_pid();
        NodeHandleInfo {
            index: self.index,
            id: self.id.clone(),
            http_base: self.http_base(),
            pid,
            alive: pid.is_some(),
            exit: process.exit,
        }
    }
}

/// Polls `node`'s process until it has exited (and is reaped), at most `timeout`: how it
/// ended, or `None` if it still runs or never ran. Polling keeps the child in place, so
/// [`ClusterSandbox::nodes`](super::ClusterSandbox::nodes) stays truthful meanwhile.
pub(super) async fn poll_exit(node: &SandboxNode, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let mut process = node.process();
            if process.running_pid().is_none() {
                return process.exit;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        tokio::time::sleep(left.min(POLL_INTERVAL)).await;
    }
}

/// The last `lines` lines of the file at `path`, reading at most its last 256 KiB.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
