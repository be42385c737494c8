//! [`TcpProxy`]: a TCP forwarder in front of one upstream address, so a test can cut a node
//! off from a server (NATS) and let it back in.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The most connections a proxy holds open at once; beyond it new connections are reset.
pub const MAX_PROXY_CONNECTIONS: usize = 256;

/// The buffer of one direction of one connection.
const BUFFER_BYTES: usize = 16 * 1024;

/// How long the proxy waits for the upstream to accept a connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the accept loop pauses after an accept error (a full file table, say), so a
/// persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What a [`TcpProxy`] does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Bytes flow both ways.
    Forwarding,
    /// Open connections were reset; new ones are reset when accepted.
    Cut,
    /// Nothing flows and nothing is closed: open and new connections are held silently.
    Blackholed,
}

/// The state every connection task watches.
#[derive(Debug, Clone, Copy)]
struct Control {
    mode: ProxyMode,
    /// Bumped by every [`TcpProxy::cut`]: a connection opened before the current value is
    /// closed, even if the proxy was restored before the connection's task looked.
    cuts: u64,
}

/// A TCP forwarder on `127.0.0.1` in front of one upstream address, which a test can cut or
/// blackhole and restore.
///
/// The proxy listens on `127.0.0.1` and a free port and forwards every accepted connection to
/// its upstream, byte for byte in both directions, until it is told otherwise:
///
/// - [`TcpProxy::cut`]: every open connection is reset at once and new ones are reset as
///   soon as they are accepted. The client notices immediately (a read returns 0 or an
///   error), as it would when the server's process dies.
/// - [`TcpProxy::blackhole`]: nothing is forwarded any more, in either direction, and nothing
///   is closed: open connections go silent, new ones are accepted and held without an
///   upstream connection. The client only notices by its own timeouts (a NATS client by its
///   missed PONGs, a new connection by its connect timeout), which is what a network
///   partition looks like.
/// - [`TcpProxy::restore`]: forwarding resumes. Connections held by a blackhole resume too:
///   bytes a side wrote meanwhile sat in the kernel's buffers and are delivered now, as TCP
///   delivers them after a partition heals; held new connections are connected upstream.
///   A client that gave up meanwhile has closed its end, and the proxy closes the upstream
///   side in turn.
///
/// Resources are bounded: at most [`MAX_PROXY_CONNECTIONS`] connections are open (or held)
/// at once, beyond which new ones are reset; each uses two 16 KiB buffers. Dropping the proxy
/// closes its listener and every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding from `127.0.0.1` and a free port to `upstream`. The upstream need not
    /// listen yet: each connection is connected upstream when it is accepted.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let addr = listener.local_addr()?;
        let (control, watched) = watch::channel(Control {
            mode: ProxyMode::Forwarding,
            cuts: 0,
        });
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept_loop(listener, upstream, watched, Arc::clone(&open)));
        Ok(Self {
            addr,
            upstream,
            control,
            open,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// What the proxy does now.
    pub fn mode(&self) -> ProxyMode {
        self.control.borrow().mode
    }

    /// Resets every open connection at once and resets new ones as they are accepted, until
    /// [`Self::restore`].
    pub fn cut(&self) {
        self.control.send_modify(|control| {
            control.mode = ProxyMode::Cut;
            control.cuts += 1;
        });
    }

    /// Stops forwarding without closing anything: open connections go silent, new ones are
    /// accepted and held, until [`Self::restore`] (or [`Self::cut`]).
    pub fn blackhole(&self) {
        self.control
            .send_modify(|control| control.mode = ProxyMode::Blackholed);
    }

    /// Forwards again: new connections work, connections held by a blackhole resume.
    pub fn restore(&self) {
        self.control
            .send_modify(|control| control.mode = ProxyMode::Forwarding);
    }

    /// How many client connections are open now (forwarding or held).
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // The accept task owns the listener and the connection tasks (a `JoinSet`, which
        // aborts them when dropped): aborting it closes everything.
        self.task.abort();
    }
}

/// Counts one open connection while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(open))
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    open: Arc<AtomicUsize>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Reaps finished connection tasks so the set stays as small as the open count.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let client = match accepted {
                    Ok((client, _)) => client,
                    Err(error) => {
                        tracing::debug!(%error, "proxy accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                };
                let state = *control.borrow();
                if state.mode == ProxyMode::Cut
                    || open.load(Ordering::SeqCst) >= MAX_PROXY_CONNECTIONS
                {
                    reset(&client);
                    continue;
                }
                let guard = OpenGuard::new(&open);
                connections.spawn(serve(client, upstream, control.clone(), state.cuts, guard));
            }
        }
    }
}

/// How forwarding in one direction ended early.
enum Ended {
    /// The proxy cut the connection (or was dropped).
    Cut,
    /// A socket failed.
    Failed,
}

/// Forwards one client connection until either side closes or the proxy cuts it.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    cuts: u64,
    _open: OpenGuard,
) {
    // A connection accepted during a blackhole is held here, unconnected.
    if !wait_forwarding(&mut control, cuts).await {
        reset(&client);
        return;
    }
    let mut server =
        match tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
            Ok(Ok(server)) => server,
            _ => {
                reset(&client);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let outcome = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        tokio::try_join!(
            pump(&mut client_read, &mut server_write, control.clone(), cuts),
            pump(&mut server_read, &mut client_write, control, cuts),
        )
    };
    if matches!(outcome, Err(Ended::Cut)) {
        reset(&client);
        reset(&server);
    }
}

/// Copies `from` to `to` while the proxy forwards, pausing while it is blackholed; on end of
/// input shuts `to` down for writing (half-close) and returns.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    mut control: watch::Receiver<Control>,
    cuts: u64,
) -> Result<(), Ended>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0_u8; BUFFER_BYTES];
    loop {
        if !wait_forwarding(&mut control, cuts).await {
            return Err(Ended::Cut);
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            // A mode change: look again before reading on.
            changed = control.changed() => {
                if changed.is_err() {
                    return Err(Ended::Cut);
                }
                continue;
            }
        };
        let count = read.map_err(|_| Ended::Failed)?;
        if count == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        // Bytes read before a blackhole are delivered, like packets already on the wire.
        tokio::select! {
            written = to.write_all(&buffer[..count]) => written.map_err(|_| Ended::Failed)?,
            () = cut_off(&mut control, cuts) => return Err(Ended::Cut),
        }
    }
}

/// Waits while the proxy is blackholed; `true` once it forwards, `false` if this connection
/// was cut or the proxy is gone.
async fn wait_forwarding(control: &mut watch::Receiver<Control>, cuts: u64) -> bool {
    loop {
        let state = *control.borrow_and_update();
        if state.cuts != cuts {
            return false;
        }
        if state.mode == ProxyMode::Forwarding {
            return true;
        }
        if control.changed().await.is_err() {
            return false;
        }
    }
}

/// Completes once this connection is cut (or the proxy is gone).
async fn cut_off(control: &mut watch::Receiver<Control>, cuts: u64) {
    let _ = control.wait_for(|state| state.cuts != cuts).await;
}

/// Makes the coming close of `stream` a reset (RST) rather than an orderly FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
