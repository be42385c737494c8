//! [`FakeLlm`]: a local LLM server speaking both Gemini `generateContent` and OpenAI-compatible
//! chat completions, for end-to-end tests, benchmarks and the load harness.
//!
//! The server and its behaviour (latency, gate, failure draws, the answer text) are here; how
//! each API spells requests, answers and errors is in `api`.

mod api;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use api::{
    Api, Asked, bad_request, completion, has_key, missing_key, parse, quota_exhausted,
    rate_limited, unavailable,
};

use crate::fake_server::{FakeServer, SplitMix64, pause};
use salesboy_node::adapters::llm::BUSINESS_INFORMATION_HEADER;

/// The prefix of every answer of the fake.
pub const FAKE_LLM_MARKER: &str = "[fake-llm]";

/// How many characters of the business information (or question) an answer quotes.
pub const FAKE_LLM_EXCERPT_CHARS: usize = 200;

/// What the fake does besides answering.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeLlmOptions {
    /// How long every request waits (after the gate) before it is answered.
    pub latency: Duration,
    /// The share of requests answered with a per-minute 429, `0.0..=1.0`.
    pub rate_limit_rate: f64,
    /// The delay a per-minute 429 asks for (`retryDelay`, `retry-after-ms`).
    pub retry_after: Duration,
    /// Whether every request is answered with the per-day / `insufficient_quota` 429.
    pub quota_exhausted: bool,
    /// The share of requests answered 503, `0.0..=1.0`.
    pub unavailable_rate: f64,
    /// The mean of an extra, exponentially distributed wait per request (seeded draw), on
    /// top of `latency`: a latency distribution with a long tail. Zero: no extra wait.
    pub latency_tail_mean: Duration,
    /// When set, the answer quotes every word of the question (the last user turn) that
    /// starts with this prefix, before the excerpt: the load harness tags each message so
    /// it can tell which messages a reply answered.
    pub echo_tags: Option<String>,
    /// Answers shorter than this many characters are padded with filler (token counts
    /// follow); 0 leaves them as they are.
    pub answer_chars: usize,
    /// The seed of the failure draws.
    pub seed: u64,
}

impl Default for FakeLlmOptions {
    /// No failures, no latency; a rate limit asks for 1 s.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            rate_limit_rate: 0.0,
            retry_after: Duration::from_secs(1),
            quota_exhausted: false,
            unavailable_rate: 0.0,
            latency_tail_mean: Duration::ZERO,
            echo_tags: None,
            answer_chars: 0,
            seed: 0x11a_5eed,
        }
    }
}

/// Requests the fake received, by API, and how many it answered with a completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmRequestCounts {
    /// `generateContent` requests.
    pub gemini: u64,
    /// Chat completions requests.
    pub openai: u64,
    /// Requests answered with a completion (either API).
    pub answered: u64,
}

impl LlmRequestCounts {
    /// Requests of both APIs.
    pub fn total(&self) -> u64 {
        self.gemini + self.openai
    }
}

/// One request the fake answered (or refused), recorded when
/// [`FakeLlmOptions::echo_tags`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmCall {
    /// The tags (words starting with the echo prefix) of the question.
    pub tags: Vec<String>,
    /// When it arrived.
    pub arrived: Instant,
    /// From arrival to the answer being ready (gate, latency, tail).
    pub took: Duration,
    /// The HTTP status answered.
    pub status: u16,
}

/// A local LLM server speaking both Gemini `generateContent` and OpenAI-compatible chat
/// completions, for end-to-end tests, benchmarks and the load harness.
///
/// Routes (any leading prefix is accepted, so the base URLs work as configured):
///
/// - `POST {prefix}/models/{model}:generateContent`: needs `x-goog-api-key` (or `?key=`);
/// - `POST {prefix}/chat/completions`: needs `Authorization: Bearer …`.
///
/// The answer is deterministic: [`FAKE_LLM_MARKER`], a space, then the first 200
/// characters of the business information in the system message (the text after
/// `Business information:`) or, when there is none, of the last user message. Token counts
/// are about a quarter of the characters (prompt: every message; completion: the answer).
///
/// Failures, by [`FakeLlmOptions`]: `quota_exhausted` answers every request with the
/// per-day quota (Gemini) / `insufficient_quota` (OpenAI) 429; otherwise one seeded draw per
/// request picks a 503 (`unavailable_rate`), a per-minute 429 (`rate_limit_rate`: Gemini
/// `RESOURCE_EXHAUSTED` with `retryDelay`, OpenAI `rate_limit_exceeded` with the
/// `retry-after-ms` / `retry-after` / `x-ratelimit-*` headers) or an answer. To fail one API
/// but not the other (fallback tests), start two fakes.
///
/// [`FakeLlm::hold`] parks every request (arrived and arriving) before it is answered until
/// [`FakeLlm::release`]; [`FakeLlm::wait_for_held`] waits until calls are parked, e.g. to
/// kill a node while its LLM calls are in flight. Dropping the fake stops its server; parked
/// requests are then answered 503.
pub struct FakeLlm {
    state: Arc<FakeLlmState>,
    server: FakeServer,
}

struct FakeLlmState {
    options: RwLock<FakeLlmOptions>,
    rng: Mutex<SplitMix64>,
    gemini: AtomicU64,
    openai: AtomicU64,
    answered: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    calls: Mutex<Vec<LlmCall>>,
    next_id: AtomicU64,
    /// `true` while held.
    gate: watch::Sender<bool>,
    /// Requests parked at the gate.
    parked: watch::Sender<usize>,
    shutdown: watch::Receiver<bool>,
}

impl FakeLlm {
    /// Starts the fake on `127.0.0.1` and a free port.
    ///
    /// # Panics
    ///
    /// If no local port can be bound (as wiremock's `MockServer::start` does); see
    /// [`Self::try_start`].
    pub async fn start(options: FakeLlmOptions) -> Self {
        match Self::try_start(options).await {
            Ok(fake) => fake,
            Err(error) => panic!("cannot start the fake server: {error}"),
        }
    }

    /// Starts the fake on `127.0.0.1` and a free port; the error if it cannot listen.
    pub async fn try_start(options: FakeLlmOptions) -> std::io::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(FakeLlmState {
            rng: Mutex::new(SplitMix64::new(options.seed)),
            options: RwLock::new(options),
            gemini: AtomicU64::new(0),
            openai: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            gate: watch::Sender::new(false),
            parked: watch::Sender::new(0),
            shutdown: stopped,
        });
        let router = Router::new()
            .route("/{*path}", post(handle))
            .with_state(Arc::clone(&state));
        let server = FakeServer::start(router, stop).await?;
        Ok(Self { state, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The Gemini base URL to configure: `http://127.0.0.1:PORT/v1beta`.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.server.addr())
    }

    /// The OpenAI base URL to configure: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.server.addr())
    }

    /// The requests received so far.
    pub fn requests(&self) -> LlmRequestCounts {
        LlmRequestCounts {
            gemini: self.state.gemini.load(Ordering::Relaxed),
            openai: self.state.openai.load(Ordering::Relaxed),
            answered: self.state.answered.load(Ordering::Relaxed),
        }
    }

    /// The tokens reported in the usage of the answered requests: (prompt, completion).
    pub fn tokens(&self) -> (u64, u64) {
        (
            self.state.prompt_tokens.load(Ordering::Relaxed),
            self.state.completion_tokens.load(Ordering::Relaxed),
        )
    }

    /// The requests recorded while [`FakeLlmOptions::echo_tags`] was set, in the order
    /// they were answered.
    pub fn calls(&self) -> Vec<LlmCall> {
        self.state.calls.lock().clone()
    }

    /// The current options.
    pub fn options(&self) -> FakeLlmOptions {
        self.state.options.read().clone()
    }

    /// Replaces the options for requests not yet past their latency, and reseeds the
    /// failure draws with `options.seed`.
    pub fn set_options(&self, options: FakeLlmOptions) {
        *self.state.rng.lock() = SplitMix64::new(options.seed);
        *self.state.options.write() = options;
    }

    /// Parks every request (arriving from now on) until [`FakeLlm::release`].
    pub fn hold(&self) {
        self.state.gate.send_replace(true);
    }

    /// Lets the parked requests (and all later ones) through.
    pub fn release(&self) {
        self.state.gate.send_replace(false);
    }

    /// How many requests are parked now.
    pub fn held(&self) -> usize {
        *self.state.parked.borrow()
    }

    /// Waits until at least `count` requests are parked; an error saying how many are if
    /// that takes longer than `timeout`.
    pub async fn wait_for_held(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let mut parked = self.state.parked.subscribe();
        match tokio::time::timeout(timeout, parked.wait_for(|held| *held >= count)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "{} of {count} requests held after {timeout:?}",
                self.held()
            )),
        }
    }

    /// Stops the server and waits (at most 5 s) until it has closed its connections.
    pub async fn shutdown(self) {
        self.server.stop().await;
    }
}

impl fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeLlm")
            .field("addr", &self.server.addr())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

/// Counts a parked request while it waits.
struct Parked<'a>(&'a watch::Sender<usize>);

impl<'a> Parked<'a> {
    fn new(parked: &'a watch::Sender<usize>) -> Self {
        parked.send_modify(|held| *held += 1);
        Self(parked)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|held| *held = held.saturating_sub(1));
    }
}

async fn handle(
    State(state): State<Arc<FakeLlmState>>,
    Path(path): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let api = if path.ends_with("chat/completions") {
        Api::OpenAi
    } else if path.ends_with(":generateContent") && path.contains("models/") {
        Api::Gemini
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match api {
        Api::Gemini => state.gemini.fetch_add(1, Ordering::Relaxed),
        Api::OpenAi => state.openai.fetch_add(1, Ordering::Relaxed),
    };
    if !has_key(api, &uri, &headers) {
        return missing_key(api);
    }
    let Some(asked) = parse(api, &path, &body) else {
        return bad_request(api);
    };

    let arrived = Instant::now();
    if !pass_gate(&state).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let options = state.options.read().clone();
    let tail = if options.latency_tail_mean.is_zero() {
        Duration::ZERO
    } else {
        // Exponential: -mean × ln(1 - u), u in [0, 1).
        let draw = state.rng.lock().next_f64();
        options
            .latency_tail_mean
            .mul_f64(-(1.0 - draw).ln())
            .min(options.latency_tail_mean * 20)
    };
    if !pause(options.latency + tail, &state.shutdown).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let response = if options.quota_exhausted {
        quota_exhausted(api, &asked.model)
    } else {
        let draw = state.rng.lock().next_f64();
        if draw < options.unavailable_rate {
            unavailable(api)
        } else if draw < options.unavailable_rate + options.rate_limit_rate {
            rate_limited(api, &asked.model, options.retry_after)
        } else {
            state.answered.fetch_add(1, Ordering::Relaxed);
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            answer(&state, &asked, &options, id)
        }
    };
    if let Some(prefix) = options.echo_tags.as_deref() {
        state.calls.lock().push(LlmCall {
            tags: tags(&asked.question, prefix),
            arrived,
            took: arrived.elapsed(),
            status: response.status().as_u16(),
        });
    }
    response
}

/// Waits while the gate is held; `false` if the server stopped meanwhile.
async fn pass_gate(state: &FakeLlmState) -> bool {
    let mut gate = state.gate.subscribe();
    if !*gate.borrow_and_update() {
        return true;
    }
    let _parked = Parked::new(&state.parked);
    let mut shutdown = state.shutdown.clone();
    tokio::select! {
        released = gate.wait_for(|held| !*held) => released.is_ok(),
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

/// The deterministic answer text for a system message and question.
pub fn fake_llm_reply(system: &str, question: &str) -> String {
    let information = system
        .split_once(BUSINESS_INFORMATION_HEADER)
        .map(|(_, rest)| rest.trim().trim_start_matches("- "))
        .filter(|rest| !rest.is_empty());
    let source = information.unwrap_or_else(|| question.trim());
    let excerpt: String = source.chars().take(FAKE_LLM_EXCERPT_CHARS).collect();
    format!("{FAKE_LLM_MARKER} {excerpt}")
}

/// About a quarter of the characters, at least 1.
fn tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4).max(1)).unwrap_or(u64::MAX)
}

/// The words of `text` that start with `prefix` (trailing punctuation removed), in order.
fn tags(text: &str, prefix: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|word| word.starts_with(prefix))
        .map(|word| {
            word.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
        .collect()
}

fn answer(state: &FakeLlmState, asked: &Asked, options: &FakeLlmOptions, id: u64) -> Response {
    let mut text = fake_llm_reply(&asked.system, &asked.question);
    if let Some(prefix) = options.echo_tags.as_deref() {
        let quoted = tags(&asked.question, prefix).join(" ");
        if let Some(excerpt) = text.strip_prefix(FAKE_LLM_MARKER) {
            text = format!("{FAKE_LLM_MARKER} {quoted}{excerpt}");
        }
    }
    let length = text.chars().count();
    if length < options.answer_chars {
        text.push(' ');
        text.extend(
            "Thanks for asking, happy to help. "
                .chars()
                .cycle()
                .take(options.answer_chars - length - 1),
        );
    }
    let prompt_tokens = tokens(asked.prompt_chars);
    let completion_tokens = tokens(text.chars().count());
    state
        .prompt_tokens
        .fetch_add(prompt_tokens, Ordering::Relaxed);
    state
        .completion_tokens
        .fetch_add(completion_tokens, Ordering::Relaxed);
    completion(
        asked.api,
        &asked.model,
        &text,
        prompt_tokens,
        completion_tokens,
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_quote_the_business_information_or_the_question() {
        assert_eq!(
            fake_llm_reply(
                "Be nice.\n\nBusiness information:\n- Open 9-18.\n- Free delivery.",
                "when?"
            ),
            "[fake-llm] Open 9-18.\n- Free delivery."
        );
        assert_eq!(
            fake_llm_reply("Be nice.", "  when do you open? "),
            "[fake-llm] when do you open?"
        );
        let long = "x".repeat(500);
        assert_eq!(
            fake_llm_reply("", &long).chars().count(),
            FAKE_LLM_MARKER.len() + 1 + FAKE_LLM_EXCERPT_CHARS
        );
    }
}
