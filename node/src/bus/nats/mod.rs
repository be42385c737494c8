//! The NATS bus: core NATS for messages, JetStream KV for the cluster's shared state.
//!
//! Written against async-nats 0.51 for nats-server 2.9 (Debian's) as well as newer servers;
//! see `docs/bus.md` and `docs/decisions/0003-nats-2-9-kv-through-streams.md`:
//!
//! - a KV bucket is created through its backing stream, then opened with `get_key_value`
//!   (`create_key_value` cannot decode 2.9's account info);
//! - watches use one filter each (`watch_with_history`), never `watch_many` (2.9 ignores
//!   `filter_subjects`);
//! - a tenant's own NATS user ([`tenant_users`]) reads its events from a durable consumer the
//!   operator creates, never creates one;
//! - `subscribe` and `unsubscribe` end with a round trip through the server, so they return
//!   only once the server routes accordingly (async-nats's `flush` only writes the socket).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::{ConnectOptions, Event, HeaderMap, HeaderName, HeaderValue};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tracing::{info, warn};

mod kv;
pub mod tenant_users;

use super::{Bus, BusError, Headers, Kv, Message, Subscription, validate};

/// How long `subscribe` and `unsubscribe` wait for the server to confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// How a [`NatsBus`] connects.
#[derive(Debug, Clone)]
pub struct NatsBusOptions {
    /// The connection's name as the server shows it (e.g. `salesboy-<node id>`).
    pub name: String,
    /// How long one connection attempt may take.
    pub connection_timeout: Duration,
    /// How often the client pings the server; two unanswered pings mark the connection dead.
    pub ping_interval: Duration,
    /// The longest wait between reconnection attempts (the first is immediate, then 100 ms,
    /// doubling up to this). The client reconnects forever.
    pub max_reconnect_delay: Duration,
    /// Replicas of a KV bucket's stream when this node creates it (1 on a single server).
    pub kv_replicas: usize,
    /// The user and password to connect with; `None`: none (async-nats ignores credentials
    /// written in the URL).
    pub credentials: Option<NatsCredentials>,
    /// A token to connect with.
    pub token: Option<SecretString>,
    /// A file holding an nkey seed (`SU…`) to connect with.
    pub nkey_seed_file: Option<PathBuf>,
    /// A credentials file (a user JWT and its nkey seed, as `nsc` writes it).
    pub credentials_file: Option<PathBuf>,
    /// TLS to the server.
    pub tls: NatsTls,
}

/// TLS to the NATS server: with any of these set (or a `tls://` URL), the connection must
/// be TLS.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// The CA certificates (PEM) the server's certificate must chain to, besides the
    /// system's (webpki) roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present, with [`NatsTls::key_file`].
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
}

impl NatsTls {
    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// A NATS user and its password. The password never prints.
#[derive(Debug, Clone)]
pub struct NatsCredentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: SecretString,
}

impl Default for NatsBusOptions {
    fn default() -> Self {
        Self {
            name: "salesboy".into(),
            connection_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            max_reconnect_delay: Duration::from_secs(2),
            kv_replicas: 1,
            credentials: None,
            token: None,
            nkey_seed_file: None,
            credentials_file: None,
            tls: NatsTls::default(),
        }
    }
}

/// The client's options for `options`' authentication and TLS; an error names the file that
/// could not be read.
async fn connect_options(options: &NatsBusOptions) -> Result<ConnectOptions, String> {
    let mut connect = ConnectOptions::new();
    if let Some(credentials) = &options.credentials {
        connect = connect.user_and_password(
            credentials.user.clone(),
            credentials.password.expose_secret().to_owned(),
        );
    }
    if let Some(token) = &options.token {
        connect = connect.token(token.expose_secret().to_owned());
    }
    if let Some(path) = &options.nkey_seed_file {
        let seed = SecretString::from(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the nkey seed file {}: {e}", path.display()))?,
        );
        connect = connect.nkey(seed.expose_secret().trim().to_owned());
    }
    if let Some(path) = &options.credentials_file {
        connect = connect.credentials_file(path).await.map_err(|e| {
            format!(
                "cannot read the credentials file {}: {}",
                path.display(),
                e.kind()
            )
        })?;
    }
    let tls = &options.tls;
    if tls.is_set() {
        connect = connect.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        connect = connect.add_root_certificates(ca.clone());
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => return Err("a client certificate needs both its certificate and its key file".into()),
    }
    Ok(connect)
}

/// What a failed first connection means, in words that name the setting to look at.
fn connect_failure(error: &async_nats::ConnectError, options: &NatsBusOptions) -> String {
    use async_nats::ConnectErrorKind as Kind;
    match error.kind() {
        Kind::AuthorizationViolation => {
            let mut used = Vec::new();
            if options.credentials.is_some() {
                used.push("the user and password (nats_user, nats_password)");
            }
            if options.token.is_some() {
                used.push("the token (nats_token)");
            }
            if options.nkey_seed_file.is_some() {
                used.push("the nkey (nats_nkey_seed_file)");
            }
            if options.credentials_file.is_some() {
                used.push("the credentials file (nats_credentials_file)");
            }
            if used.is_empty() {
                "the server requires authentication and none is configured (nats_user, \
                 nats_token, nats_nkey_seed_file or nats_credentials_file)"
                    .into()
            } else {
                format!("authentication refused: check {}", used.join(" and "))
            }
        }
        // rustls's refusals of a certificate come as I/O errors.
        Kind::Tls | Kind::Io if error.to_string().contains("certificate") => {
            format!("TLS failed (nats_tls_ca_file, nats_tls_cert_file, nats_tls_key_file): {error}")
        }
        Kind::TimedOut => "timed out (is the server up and reachable?)".into(),
        _ => error.to_string(),
    }
}

/// The state of a [`NatsBus`]'s connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Not connected yet.
    Connecting,
    /// Connected to a server.
    Connected,
    /// The connection was lost; the client is reconnecting.
    Disconnected,
}

/// The bus over a NATS server. Clones share the connection.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    kv_replicas: usize,
    connection: watch::Receiver<ConnectionState>,
}

impl NatsBus {
    /// Connects to the server at `url` (several: comma-separated; the client picks one and
    /// moves to another when it drops). The first attempt is the only one: if it fails, so
    /// does this, with an error naming what failed (never a secret). Once connected, the
    /// client reconnects by itself whenever the connection drops, logging each
    /// disconnection and reconnection.
    pub async fn connect(url: &str, options: NatsBusOptions) -> Result<Self, BusError> {
        let (state_sender, connection) = watch::channel(ConnectionState::Connecting);
        let state_sender = Arc::new(state_sender);
        let events = Arc::clone(&state_sender);
        let name = options.name.clone();
        let max_delay = options.max_reconnect_delay;
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let shown = urls
            .iter()
            .map(|u| crate::store::redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let connect = connect_options(&options)
            .await
            .map_err(|e| BusError::Other(format!("cannot connect to {shown}: {e}")))?;
        let client = connect
            .name(&options.name)
            .connection_timeout(options.connection_timeout)
            .ping_interval(options.ping_interval)
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay))
            .event_callback(move |event| {
                let state = Arc::clone(&events);
                let name = name.clone();
                async move { on_event(&name, event, &state) }
            })
            .connect(urls)
            .await
            .map_err(|e| {
                let what = connect_failure(&e, &options);
                BusError::Other(format!("cannot connect to {shown}: {what}"))
            })?;
        // The `Connected` event may still be on its way; a disconnection already seen wins.
        state_sender.send_if_modified(|state| {
            let connecting = *state == ConnectionState::Connecting;
            if connecting {
                *state = ConnectionState::Connected;
            }
            connecting
        });
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            kv_replicas: options.kv_replicas,
            connection,
        })
    }

    /// The connection's state now, as the client sees it.
    pub fn connection_state(&self) -> ConnectionState {
        match self.client.connection_state() {
            State::Pending => ConnectionState::Connecting,
            State::Connected => ConnectionState::Connected,
            State::Disconnected => ConnectionState::Disconnected,
        }
    }

    /// The connection's state changes, as the client reports them (for a node that fences
    /// itself as soon as it loses the cluster).
    pub fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        self.connection.clone()
    }

    /// Returns once the server has processed everything this client sent before: the client
    /// sends itself a message through the server on a fresh inbox and waits for it.
    async fn round_trip(&self) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.transport(e))?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| self.transport(e))?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(self.transport("connection closed")),
            Err(_) => Err(self.timeout()),
        }
    }

    /// A failure of the connection or the server.
    fn transport(&self, error: impl fmt::Display) -> BusError {
        if self.is_connected() {
            BusError::Other(error.to_string())
        } else {
            BusError::Disconnected
        }
    }

    /// Nothing came back in time.
    fn timeout(&self) -> BusError {
        if self.is_connected() {
            BusError::Timeout
        } else {
            BusError::Disconnected
        }
    }
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("connection", &self.connection_state())
            .finish_non_exhaustive()
    }
}

/// The wait before reconnection attempt `attempts`: none for the first, then 100 ms doubling
/// up to `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(16);
    Duration::from_millis(100_u64 << doublings).min(max)
}

fn on_event(name: &str, event: Event, state: &watch::Sender<ConnectionState>) {
    match event {
        Event::Connected => {
            info!(client = name, "connected to nats");
            state.send_replace(ConnectionState::Connected);
        }
        Event::Disconnected => {
            warn!(client = name, "disconnected from nats, reconnecting");
            state.send_replace(ConnectionState::Disconnected);
        }
        Event::Closed => {
            warn!(client = name, "nats connection closed");
            state.send_replace(ConnectionState::Disconnected);
        }
        Event::LameDuckMode => warn!(client = name, "nats server is entering lame duck mode"),
        Event::Draining => info!(client = name, "nats connection draining"),
        Event::SlowConsumer(sid) => warn!(
            client = name,
            subscription = sid,
            "nats subscriber is too slow, messages dropped"
        ),
        Event::ServerError(e) => warn!(client = name, error = %e, "nats server error"),
        Event::ClientError(e) => warn!(client = name, error = %e, "nats client error"),
    }
}

/// Our headers as NATS's; the names and values are checked already, so this cannot fail in
/// practice, but it never panics either.
fn nats_headers(headers: &Headers) -> Result<HeaderMap, BusError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        let invalid = || BusError::InvalidHeader(name.chars().take(64).collect());
        let name: HeaderName = name.parse().map_err(|_| invalid())?;
        let value: HeaderValue = value.parse().map_err(|_| invalid())?;
        map.insert(name, value);
    }
    Ok(map)
}

/// NATS's headers as ours: the first value of each name.
fn our_headers(headers: Option<&HeaderMap>) -> Headers {
    headers
        .into_iter()
        .flat_map(|map| map.iter())
        .filter_map(|(name, values)| {
            values
                .first()
                .map(|value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect()
}

fn our_message(message: async_nats::Message) -> Message {
    Message {
        subject: message.subject.to_string(),
        headers: our_headers(message.headers.as_ref()),
        payload: message.payload,
        reply: message.reply.map(|reply| reply.to_string()),
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
    ) -> Result<(), BusError> {
        validate::outgoing(subject, &headers, payload.len(), self.max_payload())?;
        let subject = subject.to_owned();
        let sent = if headers.is_empty() {
            self.client.publish(subject, payload).await
        } else {
            let headers = nats_headers(&headers)?;
            self.client
                .publish_with_headers(subject, headers, payload)
                .await
        };
        sent.map_err(|e| self.transport(e))
    }

    async fn request(
        &self,
        subject: &str,
        headers: Headers,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        let max = self.max_payload();
        validate::outgoing(subject, &headers, payload.len(), max)?;
        let size = headers.wire_len() + payload.len();
        let mut request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        if !headers.is_empty() {
            request = request.headers(nats_headers(&headers)?);
        }
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(reply) => Ok(our_message(reply)),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::NoResponders => BusError::NoResponders,
                RequestErrorKind::TimedOut => self.timeout(),
                RequestErrorKind::InvalidSubject => {
                    BusError::InvalidSubject(subject.chars().take(64).collect())
                }
                RequestErrorKind::MaxPayloadExceeded => BusError::PayloadTooLarge { size, max },
                RequestErrorKind::Other => self.transport(e),
            }),
        }
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription, BusError> {
        validate::filter(subject)?;
        if let Some(group) = queue_group {
            validate::queue_group(group)?;
        }
        let subscriber = match queue_group {
            Some(group) => {
                self.client
                    .queue_subscribe(subject.to_owned(), group.to_owned())
                    .await
            }
            None => self.client.subscribe(subject.to_owned()).await,
        }
        .map_err(|e| self.transport(e))?;
        // Dropping `subscriber` on failure unsubscribes.
        self.round_trip().await?;
        let bus = self.clone();
        Ok(
            Subscription::new(subject, subscriber.map(our_message).boxed())
                .with_confirm_unsubscribe(Box::pin(async move { bus.round_trip().await })),
        )
    }

    async fn kv(&self, bucket: &str, history: u8) -> Result<Arc<dyn Kv>, BusError> {
        kv::open(self, bucket, history).await
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(|e| self.transport(e))
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn max_payload(&self) -> usize {
        self.client.max_payload()
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn nats_client(&self) -> Option<async_nats::Client> {
        Some(self.client.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_starts_at_once_then_doubles_up_to_the_cap() {
        let max = Duration::from_secs(2);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3, max), Duration::from_millis(200));
        assert_eq!(reconnect_delay(6, max), Duration::from_millis(1600));
        assert_eq!(reconnect_delay(7, max), max);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[tokio::test]
    async fn a_failed_connect_names_the_server_without_its_password() {
        // Nothing listens on port 1: the first attempt fails at once.
        let options = NatsBusOptions {
            connection_timeout: Duration::from_secs(2),
            ..NatsBusOptions::default()
        };
        let Err(error) = NatsBus::connect("nats://node:planted-pw@127.0.0.1:1", options).await
        else {
            panic!("connected to a closed port");
        };
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("planted-pw"), "{shown}");
        assert!(shown.contains("nats://node:***@127.0.0.1:1"), "{shown}");
    }

    #[test]
    fn headers_convert_both_ways() {
        let ours = Headers::new().with("Sb-Codec", "json").with("Sb-Id", "42");
        let theirs = nats_headers(&ours).expect("valid headers");
        assert_eq!(our_headers(Some(&theirs)), ours);
        assert_eq!(our_headers(None), Headers::new());
    }

    #[test]
    fn invalid_headers_are_errors_not_panics() {
        for bad in [
            Headers::new().with("bad name", "v"),
            Headers::new().with("name", "two\nlines"),
        ] {
            assert!(matches!(
                nats_headers(&bad),
                Err(BusError::InvalidHeader(_))
            ));
        }
    }
}
