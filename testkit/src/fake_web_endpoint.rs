//! [`FakeWebEndpoint`]: where a sandbox's nodes connect their WhatsApp Web clients
//! (`SALESBOY_WHATSAPP_WEB_URL`), instead of WhatsApp's servers. A local listener that
//! records each websocket upgrade request — which node asked, from the `node` parameter of
//! the URL the sandbox gave it — and closes the connection, so the clients back off and try
//! again as they would while WhatsApp is unreachable. A test reads who connects, and when.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The most of an upgrade request read (its request line and headers).
const MAX_REQUEST: usize = 16 * 1024;

/// A local stand-in for WhatsApp Web's websocket endpoint that counts connection attempts
/// per node. Stops when dropped.
#[derive(Debug)]
pub struct FakeWebEndpoint {
    addr: SocketAddr,
    /// Each attempt: the node that made it, and when its connection was accepted.
    attempts: Arc<Mutex<Vec<(String, Instant)>>>,
    task: JoinHandle<()>,
}

impl FakeWebEndpoint {
    /// Listens on a free local port.
    pub async fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("cannot listen for the fake whatsapp web endpoint: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the fake whatsapp web endpoint has no address: {e}"))?;
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&attempts);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let accepted = Instant::now();
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    if let Some(node) = requesting_node(stream).await {
                        recorded.lock().push((node, accepted));
                    }
                });
            }
        });
        Ok(Self {
            addr,
            attempts,
            task,
        })
    }

    /// The URL node `node` is given: its attempts are counted under its id.
    pub fn url_for(&self, node: &str) -> String {
        format!("ws://{}/ws/chat?node={node}", self.addr)
    }

    /// How many connection attempts node `node` made so far.
    pub fn attempts(&self, node: &str) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(n, _)| n == node)
            .count()
    }

    /// How many connection attempts of node `node` were accepted after `since`.
    pub fn attempts_since(&self, node: &str, since: Instant) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(n, at)| n == node && *at > since)
            .count()
    }

    /// Every attempt so far, in the order they were read: the id of the node that made it.
    pub fn all_attempts(&self) -> Vec<String> {
        self.attempts
            .lock()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl Drop for FakeWebEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads an upgrade request's head and returns its `node` parameter (`"?"` when it has
/// none); `None` when the connection closed before a whole head came.
async fn requesting_node(mut stream: TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() + read > MAX_REQUEST {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.lines().next()?.split_whitespace().nth(1)?;
    let node = target
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|pair| pair.strip_prefix("node=")))
        .unwrap_or("?");
    Some(node.to_owned())
}
