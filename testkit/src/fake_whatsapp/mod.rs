//! [`FakeWhatsApp`]: a local WhatsApp Cloud API (Graph API messages endpoint) for end-to-end
//! tests, benchmarks and the load harness.
//!
//! The server, what it records and the failures it injects are here; `graph` holds the Graph
//! API's request bodies and error answers, `statuses` the status webhooks it posts back.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::{Mutex, RwLock};
use salesboy_protocol::whatsapp::OutboundContent;
use serde_json::json;
use tokio::sync::watch;

mod graph;
mod statuses;

use graph::{GraphFailure, Request, acceptable, parse_request};
use statuses::post_statuses;

use crate::fake_server::{FakeServer, SplitMix64, pause};

/// The longest one status webhook post may take.
const STATUS_POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Graph API version in [`FakeWhatsApp::base_url`].
pub const FAKE_GRAPH_VERSION: &str = "v21.0";

/// What the fake does besides answering: injected failures, latency, refused tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeWhatsAppOptions {
    /// The share of sends refused with error 130429 (throughput), `0.0..=1.0`.
    pub throughput_error_rate: f64,
    /// The share of sends refused with error 131056 (pair rate), `0.0..=1.0`.
    pub pair_rate_error_rate: f64,
    /// The share of requests (sends and mark-reads) answered HTTP 500, `0.0..=1.0`.
    pub server_error_rate: f64,
    /// How long every request waits before it is answered.
    pub latency: Duration,
    /// Tokens refused with HTTP 401 and error 190.
    pub reject_tokens: Vec<String>,
    /// Signed status webhooks posted back after each accepted send (to the targets of
    /// [`FakeWhatsApp::set_status_targets`]); `None`: none.
    pub status_webhooks: Option<StatusWebhooks>,
    /// The seed of the failure draws.
    pub seed: u64,
}

/// The status webhooks the fake posts back after each accepted send, as Meta does:
/// one body per status, signed with the app secret, to the targets in turn (the next one
/// when a post fails, each target at most once per status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusWebhooks {
    /// The app secret the bodies are signed with (`X-Hub-Signature-256`).
    pub app_secret: String,
    /// The statuses posted in order, e.g. `sent`, `delivered`, `read`.
    pub statuses: Vec<String>,
    /// The wait before each status.
    pub delay: Duration,
}

/// How the status webhooks posted back went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusWebhookCounts {
    /// Posts a gateway answered with 2xx.
    pub delivered: u64,
    /// Statuses no target accepted.
    pub failed: u64,
}

impl Default for FakeWhatsAppOptions {
    /// No failures, no latency, every token accepted.
    fn default() -> Self {
        Self {
            throughput_error_rate: 0.0,
            pair_rate_error_rate: 0.0,
            server_error_rate: 0.0,
            latency: Duration::ZERO,
            reject_tokens: Vec::new(),
            status_webhooks: None,
            seed: 0x5a1e_5b0e,
        }
    }
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The business number it was sent from (the path's phone number id).
    pub phone_number_id: String,
    /// The recipient (`to`).
    pub to: String,
    /// The text; for a template, interactive or media message, its readable text
    /// ([`OutboundContent::text`]).
    pub body: String,
    /// The template, interactive or media object; `None` for text.
    pub content: Option<OutboundContent>,
    /// The request body exactly as it came.
    pub request: serde_json::Value,
    /// The quoted message (`context.message_id`), if any.
    pub reply_to: Option<String>,
    /// The wamid the fake answered with.
    pub wamid: String,
    /// The bearer token it came with.
    pub token: String,
    /// When the request arrived.
    pub received: Instant,
}

/// A mark-read the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRead {
    /// The business number (the path's phone number id).
    pub phone_number_id: String,
    /// The message marked read.
    pub message_id: String,
    /// Whether a typing indicator was asked for.
    pub typing: bool,
    /// The bearer token it came with.
    pub token: String,
    /// When the request arrived.
    pub received: Instant,
}

/// Which request a [`FailedAttempt`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOperation {
    /// A send (text, template, interactive, media).
    Send,
    /// A mark-read.
    MarkRead,
    /// A request the fake did not understand (or refused before reading it).
    Unknown,
}

/// A request the fake refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// What the request was.
    pub operation: FakeOperation,
    /// The path's phone number id (empty for unknown paths).
    pub phone_number_id: String,
    /// The recipient, for sends.
    pub to: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The Graph error code answered.
    pub code: i64,
    /// The bearer token, if one came.
    pub token: Option<String>,
    /// When the request arrived.
    pub received: Instant,
}

/// A local WhatsApp Cloud API (the Graph API messages endpoint) for end-to-end tests,
/// benchmarks and the load harness.
///
/// It serves `POST /{any prefix}/{phone_number_id}/messages` on `127.0.0.1`, so base URLs
/// such as `http://127.0.0.1:PORT/v21.0` work as they do against Meta:
///
/// - a send (`"type"` `text`, `template`, `interactive`, `image` or `document`) is answered with a [`SendMessageResponse`]-shaped body
///   carrying a fresh wamid `wamid.fake.<n>` and recorded as a [`SentMessage`];
/// - a mark-read (`"status": "read"`, with or without a typing indicator) is answered
///   `{"success":true}` and recorded as a [`MarkRead`];
/// - a missing bearer token or one in [`FakeWhatsAppOptions::reject_tokens`] gets HTTP 401
///   with Graph error code 190; a text body over 4096 characters, content that breaks the
///   Cloud API's limits (more than 3 reply buttons, a button title over 20 characters, more
///   than 10 list rows, a link that is not `https`) or an unknown request gets
///   HTTP 400 with code 100; injected failures (server errors for both operations;
///   throughput 130429 and pair-rate 131056 for sends, all HTTP 400 as Meta sends them)
///   use the documented Graph error bodies. Every refused request is recorded as a
///   [`FailedAttempt`], never in [`FakeWhatsApp::sent`].
///
/// With [`FakeWhatsAppOptions::status_webhooks`] set, each accepted send is followed, as at
/// Meta, by signed status webhooks (`sent`, `delivered`, `read` …) posted to the gateways of
/// [`FakeWhatsApp::set_status_targets`] in turn; [`FakeWhatsApp::status_webhook_counts`]
/// says how they went.
///
/// Injected failures are drawn from a seeded generator ([`FakeWhatsAppOptions::seed`]), one
/// draw per well-formed request with an accepted token: the same seed and the same request order
/// give the same failures. Dropping the fake stops its server (in-flight requests waiting on
/// the configured latency are answered 503).
///
/// [`SendMessageResponse`]: salesboy_protocol::whatsapp::SendMessageResponse
pub struct FakeWhatsApp {
    state: Arc<FakeState>,
    server: FakeServer,
}

struct FakeState {
    options: RwLock<FakeWhatsAppOptions>,
    rng: Mutex<SplitMix64>,
    next_id: AtomicU64,
    sent: Mutex<Vec<SentMessage>>,
    sent_count: watch::Sender<usize>,
    mark_reads: Mutex<Vec<MarkRead>>,
    failed: Mutex<Vec<FailedAttempt>>,
    status_targets: RwLock<Vec<String>>,
    status_next: AtomicU64,
    status_delivered: AtomicU64,
    status_failed: AtomicU64,
    http: reqwest::Client,
    shutdown: watch::Receiver<bool>,
}

impl FakeWhatsApp {
    /// Starts the fake on `127.0.0.1` and a free port.
    ///
    /// # Panics
    ///
    /// If no local port can be bound (as wiremock's `MockServer::start` does); see
    /// [`Self::try_start`].
    pub async fn start(options: FakeWhatsAppOptions) -> Self {
        match Self::try_start(options).await {
            Ok(fake) => fake,
            Err(error) => panic!("cannot start the fake server: {error}"),
        }
    }

    /// Starts the fake on `127.0.0.1` and a free port; the error if it cannot listen.
    pub async fn try_start(options: FakeWhatsAppOptions) -> std::io::Result<Self> {
        Self::try_start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), options).await
    }

    /// Starts the fake on `addr` (for `salesboy-sim fake-cloud-api`); the error if it cannot
    /// listen there.
    pub async fn try_start_on(
        addr: SocketAddr,
        options: FakeWhatsAppOptions,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        salesboy_node::run::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(STATUS_POST_TIMEOUT)
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(FakeState {
            rng: Mutex::new(SplitMix64::new(options.seed)),
            options: RwLock::new(options),
            next_id: AtomicU64::new(1),
            sent: Mutex::new(Vec::new()),
            sent_count: watch::Sender::new(0),
            mark_reads: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
            status_targets: RwLock::new(Vec::new()),
            status_next: AtomicU64::new(0),
            status_delivered: AtomicU64::new(0),
            status_failed: AtomicU64::new(0),
            http,
            shutdown: stopped,
        });
        let router = Router::new()
            .route("/{*path}", post(handle))
            .with_state(Arc::clone(&state));
        let server = FakeServer::start_on(addr, router, stop).await?;
        Ok(Self { state, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The Graph API base URL to configure: `http://127.0.0.1:PORT/v21.0`.
    pub fn base_url(&self) -> String {
        format!("http://{}/{FAKE_GRAPH_VERSION}", self.server.addr())
    }

    /// Every accepted text message, in arrival order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.state.sent.lock().clone()
    }

    /// The accepted text messages to `to`, in arrival order.
    pub fn sent_to(&self, to: &str) -> Vec<SentMessage> {
        self.state
            .sent
            .lock()
            .iter()
            .filter(|message| message.to == to)
            .cloned()
            .collect()
    }

    /// How many text messages were accepted.
    pub fn sent_count(&self) -> usize {
        *self.state.sent_count.borrow()
    }

    /// Every accepted mark-read, in arrival order.
    pub fn mark_reads(&self) -> Vec<MarkRead> {
        self.state.mark_reads.lock().clone()
    }

    /// Every refused request, in arrival order.
    pub fn failed_attempts(&self) -> Vec<FailedAttempt> {
        self.state.failed.lock().clone()
    }

    /// Waits until at least `count` text messages were accepted, then returns them all; an
    /// error saying how many arrived if that takes longer than `timeout`.
    pub async fn wait_for_sent(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<SentMessage>, String> {
        let mut counter = self.state.sent_count.subscribe();
        // The watch's borrow must be gone before the list of sends is locked: the send
        // handler takes the two in the opposite order.
        let reached = tokio::time::timeout(timeout, counter.wait_for(|sent| *sent >= count))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if reached {
            Ok(self.sent())
        } else {
            Err(format!(
                "{} of {count} messages sent after {timeout:?}",
                self.sent_count()
            ))
        }
    }

    /// The current options.
    pub fn options(&self) -> FakeWhatsAppOptions {
        self.state.options.read().clone()
    }

    /// Replaces the options for the requests that arrive from now on, and reseeds the
    /// failure draws with `options.seed`.
    pub fn set_options(&self, options: FakeWhatsAppOptions) {
        *self.state.rng.lock() = SplitMix64::new(options.seed);
        *self.state.options.write() = options;
    }

    /// Where status webhooks go: full webhook URLs (`http://…/webhooks/whatsapp`), used in
    /// turn; replaced as gateways come and go.
    pub fn set_status_targets(&self, targets: Vec<String>) {
        *self.state.status_targets.write() = targets;
    }

    /// How the status webhooks posted back so far went.
    pub fn status_webhook_counts(&self) -> StatusWebhookCounts {
        StatusWebhookCounts {
            delivered: self.state.status_delivered.load(Ordering::Relaxed),
            failed: self.state.status_failed.load(Ordering::Relaxed),
        }
    }

    /// Forgets every recorded message, mark-read and failed attempt.
    pub fn clear(&self) {
        let mut sent = self.state.sent.lock();
        sent.clear();
        self.state.sent_count.send_replace(0);
        drop(sent);
        self.state.mark_reads.lock().clear();
        self.state.failed.lock().clear();
    }

    /// Stops the server and waits (at most 5 s) until it has closed its connections.
    pub async fn shutdown(self) {
        self.server.stop().await;
    }
}

impl fmt::Debug for FakeWhatsApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeWhatsApp")
            .field("addr", &self.server.addr())
            .field("sent", &self.sent_count())
            .finish_non_exhaustive()
    }
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    let fail = |operation, phone_number_id: &str, to: Option<String>, error: GraphFailure| {
        state.failed.lock().push(FailedAttempt {
            operation,
            phone_number_id: phone_number_id.to_owned(),
            to,
            status: error.status.as_u16(),
            code: error.code,
            token: token.clone(),
            received,
        });
        error.into_response()
    };

    // `…/{phone_number_id}/messages`
    let mut segments = path.rsplit('/');
    let (Some("messages"), Some(phone_number_id)) = (segments.next(), segments.next()) else {
        return fail(
            FakeOperation::Unknown,
            "",
            None,
            GraphFailure::invalid("Unsupported post request."),
        );
    };
    let Some(bearer) = token.clone() else {
        return fail(
            FakeOperation::Unknown,
            phone_number_id,
            None,
            GraphFailure::auth("An active access token must be used to query information."),
        );
    };
    let request = match parse_request(&body) {
        Ok(request) => request,
        Err(failure) => return fail(FakeOperation::Unknown, phone_number_id, None, failure),
    };
    let (operation, to) = match &request {
        Request::Send(send) => (FakeOperation::Send, Some(send.to.clone())),
        Request::MarkRead(_) => (FakeOperation::MarkRead, None),
    };

    let (latency, rejected, rates, status_webhooks) = {
        let options = state.options.read();
        (
            options.latency,
            options.reject_tokens.contains(&bearer),
            [
                options.server_error_rate,
                options.throughput_error_rate,
                options.pair_rate_error_rate,
            ],
            options.status_webhooks.clone(),
        )
    };
    if rejected {
        return fail(
            operation,
            phone_number_id,
            to,
            GraphFailure::auth("Invalid OAuth access token - Cannot parse access token"),
        );
    }
    if !pause(latency, &state.shutdown).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let draw = state.rng.lock().next_f64();
    let [server_rate, throughput_rate, pair_rate] = rates;
    let injected = if draw < server_rate {
        Some(GraphFailure::server())
    } else if operation == FakeOperation::Send && draw < server_rate + throughput_rate {
        Some(GraphFailure::throughput())
    } else if operation == FakeOperation::Send && draw < server_rate + throughput_rate + pair_rate {
        Some(GraphFailure::pair_rate())
    } else {
        None
    };
    if let Some(failure) = injected {
        return fail(operation, phone_number_id, to, failure);
    }

    match request {
        Request::Send(send) => {
            if !acceptable(&send) {
                return fail(
                    operation,
                    phone_number_id,
                    to,
                    GraphFailure::invalid("(#100) Invalid parameter"),
                );
            }
            let wamid = format!(
                "wamid.fake.{}",
                state.next_id.fetch_add(1, Ordering::Relaxed)
            );
            let response = json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": send.to, "wa_id": send.to}],
                "messages": [{"id": wamid}]
            });
            if let Some(webhooks) = status_webhooks {
                tokio::spawn(post_statuses(
                    Arc::clone(&state),
                    webhooks,
                    phone_number_id.to_owned(),
                    send.to.clone(),
                    wamid.clone(),
                ));
            }
            let mut sent = state.sent.lock();
            sent.push(SentMessage {
                phone_number_id: phone_number_id.to_owned(),
                to: send.to,
                body: send.body,
                content: send.content,
                request: send.json,
                reply_to: send.reply_to,
                wamid,
                token: bearer,
                received,
            });
            // Under the lock, so the count never goes backwards.
            state.sent_count.send_replace(sent.len());
            drop(sent);
            axum::Json(response).into_response()
        }
        Request::MarkRead(read) => {
            state.mark_reads.lock().push(MarkRead {
                phone_number_id: phone_number_id.to_owned(),
                message_id: read.message_id.to_string(),
                typing: read.typing_indicator.is_some(),
                token: bearer,
                received,
            });
            axum::Json(json!({"success": true})).into_response()
        }
    }
}
