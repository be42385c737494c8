//! LLM providers over HTTP: Gemini `generateContent` ([`GeminiProvider`]) and
//! OpenAI-compatible chat completions ([`OpenAiProvider`]), built per tenant from its
//! provider list ([`config`]) by [`HttpLlmFactory`].
//!
//! Both providers put the tenant's system prompt and the retrieved passages into the
//! system message ([`system_text`]), then the history, then the question; both classify
//! failures into [`LlmError`] the same way: 429 per-minute → `RateLimited` with the server's
//! delay, daily quota / `insufficient_quota` → `QuotaExhausted`, 5xx → `Unavailable`, no
//! answer within the configured timeout → `Timeout`, a blocked prompt → `Blocked`, anything
//! else → `Failed`. API keys travel only in request headers and are scrubbed from errors.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use salesboy_actors::ports::{
    Budget, Completion, LlmError, LlmProvider, LlmProviderFactory, Prompt,
};
use salesboy_protocol::TenantId;
use secrecy::ExposeSecret;

pub mod config;
pub mod gemini;
pub mod openai;

pub use config::{
    LlmConfigError, ProviderConfig, ProviderKind, parse_llm_config, redacted_llm_config,
    validate_llm_config,
};
pub use gemini::{Gemini, GeminiProvider};
pub use openai::{OpenAi, OpenAiProvider};

use super::scrub;

/// The line that introduces the retrieved passages in the system message.
pub const BUSINESS_INFORMATION_HEADER: &str = "Business information:";

/// The sampling temperature of every request: factual answers from the passages.
pub const TEMPERATURE: f64 = 0.3;

/// The longest excerpt of a provider's error message kept in an [`LlmError`].
const MESSAGE_EXCERPT_CHARS: usize = 200;

/// The system message of a prompt: the tenant's system prompt, then, when there are
/// passages, `Business information:` and one `- passage` line each, best first.
pub fn system_text(prompt: &Prompt) -> String {
    let mut text = prompt.system.trim().to_owned();
    let mut passages = prompt
        .passages
        .iter()
        .map(|passage| passage.trim())
        .filter(|passage| !passage.is_empty())
        .peekable();
    if passages.peek().is_some() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(BUSINESS_INFORMATION_HEADER);
        for passage in passages {
            text.push_str("\n- ");
            text.push_str(passage);
        }
    }
    text
}

/// What one provider API does its own way: the endpoint, how the key travels, the request
/// body and how to read the answer. Everything else (the HTTP exchange, the timeout, the
/// key scrubbed from errors) is [`HttpProvider`]'s.
pub trait ProviderApi: Send + Sync + 'static {
    /// The header that carries the API key.
    const KEY_HEADER: HeaderName;
    /// What precedes the key in [`ProviderApi::KEY_HEADER`].
    const KEY_PREFIX: &'static str;

    /// The body of a request.
    type Request: serde::Serialize;

    /// The endpoint a provider with `config` posts to.
    fn url(config: &ProviderConfig) -> String;

    /// The request body for `prompt` to the model of `config`.
    fn request(config: &ProviderConfig, prompt: &Prompt) -> Self::Request;

    /// The body of a successful response.
    type Answer: serde::de::DeserializeOwned;

    /// The completion in a successful response's body, or why there is none. `model` is
    /// reported when the answer does not name its model.
    fn completion(answer: Self::Answer, model: &str) -> Result<Completion, LlmError>;

    /// The failure an unsuccessful response reports.
    fn classify_error(response: &RawResponse) -> LlmError;
}

/// Reads a response of API `A`: the answer, or the classified failure. `model` is reported
/// when the answer does not name its model.
fn interpret<A: ProviderApi>(response: RawResponse, model: &str) -> Result<Completion, LlmError> {
    if !response.status.is_success() {
        return Err(A::classify_error(&response));
    }
    let answer = serde_json::from_slice(&response.body)
        .map_err(|error| LlmError::Failed(format!("unparsable response ({error})")))?;
    A::completion(answer, model)
}

/// The failure of an unsuccessful response that is no quota or rate limit: 5xx is
/// `Unavailable`, 408 `Timeout`, anything else `Failed`; `message` is the provider's.
fn status_error(status: StatusCode, message: &str) -> LlmError {
    if status.is_server_error() {
        LlmError::Unavailable(status_problem(status, message))
    } else if status == StatusCode::REQUEST_TIMEOUT {
        LlmError::Timeout
    } else {
        LlmError::Failed(status_problem(status, message))
    }
}

/// An LLM provider over HTTP speaking API `A` ([`Gemini`] or [`OpenAi`]).
pub struct HttpProvider<A> {
    client: reqwest::Client,
    config: ProviderConfig,
    url: String,
    api: PhantomData<A>,
}

impl<A: ProviderApi> HttpProvider<A> {
    /// A provider for `config` (its kind is not checked) over `client`.
    pub fn new(client: reqwest::Client, config: ProviderConfig) -> Self {
        let url = A::url(&config);
        Self {
            client,
            config,
            url,
            api: PhantomData,
        }
    }

    /// The endpoint this provider posts to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl<A> Clone for HttpProvider<A> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            config: self.config.clone(),
            url: self.url.clone(),
            api: PhantomData,
        }
    }
}

impl<A> fmt::Debug for HttpProvider<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpProvider")
            .field("api", &std::any::type_name::<A>())
            .field("client", &self.client)
            .field("config", &self.config)
            .field("url", &self.url)
            .finish()
    }
}

#[async_trait]
impl<A: ProviderApi> LlmProvider for HttpProvider<A> {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn budget(&self) -> Budget {
        self.config.budget
    }

    fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        self.config.cost_micros(prompt_tokens, completion_tokens)
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let result = async {
            let request = self
                .client
                .post(&self.url)
                .header(A::KEY_HEADER, key_header(&self.config, A::KEY_PREFIX)?)
                .json(&A::request(&self.config, prompt));
            let response = exchange(request, self.config.timeout, MAX_RESPONSE_BYTES).await?;
            interpret::<A>(response, &self.config.model)
        }
        .await;
        finish(&self.config, result)
    }
}

/// Builds the provider a configuration describes.
pub fn build_provider(client: &reqwest::Client, config: ProviderConfig) -> Arc<dyn LlmProvider> {
    match config.kind {
        ProviderKind::Gemini => Arc::new(GeminiProvider::new(client.clone(), config)),
        ProviderKind::OpenAi => Arc::new(OpenAiProvider::new(client.clone(), config)),
    }
}

/// Builds tenants' provider chains over one shared HTTP client: the tenant's provider list
/// when it has one, else the node's default list, else none (the offline responder).
#[derive(Clone)]
pub struct HttpLlmFactory {
    client: reqwest::Client,
    default_config: Option<Arc<str>>,
}

impl HttpLlmFactory {
    /// A factory whose tenants without a list of their own use `default_config`, unchecked:
    /// a broken default list makes [`LlmProviderFactory::providers`] fail for those tenants.
    /// Prefer [`HttpLlmFactory::try_new`] where the error can stop the node from starting.
    pub fn new(client: reqwest::Client, default_config: Option<String>) -> Self {
        Self {
            client,
            default_config: default_config.map(Arc::from),
        }
    }

    /// As [`HttpLlmFactory::new`], with the default list validated first.
    pub fn try_new(
        client: reqwest::Client,
        default_config: Option<String>,
    ) -> Result<Self, LlmConfigError> {
        if let Some(json) = &default_config {
            parse_llm_config(json)?;
        }
        Ok(Self::new(client, default_config))
    }
}

impl fmt::Debug for HttpLlmFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default list holds API keys: show only whether there is one.
        f.debug_struct("HttpLlmFactory")
            .field(
                "default_config",
                &self.default_config.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl LlmProviderFactory for HttpLlmFactory {
    fn providers(
        &self,
        _tenant: &TenantId,
        config_json: Option<&str>,
    ) -> Result<Vec<Arc<dyn LlmProvider>>, String> {
        let Some(json) = config_json.or(self.default_config.as_deref()) else {
            return Ok(Vec::new());
        };
        let configs = parse_llm_config(json).map_err(|error| error.to_string())?;
        Ok(configs
            .into_iter()
            .map(|config| build_provider(&self.client, config))
            .collect())
    }
}

/// A provider's HTTP response, read in full.
#[derive(Debug)]
pub struct RawResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers (rate-limit delays).
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// The header value of an API key, marked sensitive (hidden from reqwest's and hyper's
/// debug output).
pub(crate) fn key_header(config: &ProviderConfig, prefix: &str) -> Result<HeaderValue, LlmError> {
    let mut value =
        HeaderValue::from_str(&format!("{prefix}{}", config.api_key.expose_secret()))
            .map_err(|_| LlmError::Failed("the api key is not a valid header value".to_owned()))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The longest response body read from a provider (1 MiB; an answer is a few KiB): a longer
/// one is [`LlmError::TooLarge`], and the rest is not read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Sends a request and reads the whole response, at most `limit` bytes (chat answers:
/// [`MAX_RESPONSE_BYTES`]), within `timeout`.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    limit: usize,
) -> Result<RawResponse, LlmError> {
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let too_large = || Ok(Err(LlmError::TooLarge { limit }));
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return too_large();
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > limit {
                return too_large();
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(Ok(RawResponse {
            status,
            headers,
            body,
        }))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err(LlmError::Timeout),
        Ok(Err(error)) if error.is_timeout() => Err(LlmError::Timeout),
        Ok(Err(error)) => Err(LlmError::Unavailable(super::transport_problem(&error))),
        Ok(Ok(read)) => read,
    }
}

/// Scrubs the key from a call's error. Calls are counted by the responder, per provider
/// and outcome, in `salesboy_llm_calls_total`.
pub(crate) fn finish<T>(
    config: &ProviderConfig,
    result: Result<T, LlmError>,
) -> Result<T, LlmError> {
    result.map_err(|error| {
        let error = redact(error, config.api_key.expose_secret());
        tracing::debug!(
            provider = %config.name,
            model = %config.model,
            error = %error,
            "llm request failed"
        );
        error
    })
}

/// `error` with `key` scrubbed from its text (a provider may echo the key back).
pub(crate) fn redact(error: LlmError, key: &str) -> LlmError {
    match error {
        LlmError::QuotaExhausted(text) => LlmError::QuotaExhausted(scrub(&text, key)),
        LlmError::Unavailable(text) => LlmError::Unavailable(scrub(&text, key)),
        LlmError::Blocked(text) => LlmError::Blocked(scrub(&text, key)),
        LlmError::Failed(text) => LlmError::Failed(scrub(&text, key)),
        other => other,
    }
}

/// `http status N: message` with the message cut short.
pub(crate) fn status_problem(status: StatusCode, message: &str) -> String {
    let message = super::excerpt(message, MESSAGE_EXCERPT_CHARS);
    if message.is_empty() {
        format!("http status {}", status.as_u16())
    } else {
        format!("http status {}: {message}", status.as_u16())
    }
}

/// A provider's message cut short.
pub(crate) fn short(message: &str) -> String {
    super::excerpt(message, MESSAGE_EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use salesboy_actors::ports::Turn;

    use super::*;

    #[test]
    fn system_text_lists_passages() {
        let mut prompt = Prompt {
            system: "Be nice.".to_owned(),
            passages: vec![
                "Open 9-18.".to_owned(),
                " ".to_owned(),
                "Free delivery.".to_owned(),
            ],
            history: vec![Turn::customer("hi")],
            question: "when?".to_owned(),
        };
        assert_eq!(
            system_text(&prompt),
            "Be nice.\n\nBusiness information:\n- Open 9-18.\n- Free delivery."
        );
        prompt.passages.clear();
        assert_eq!(system_text(&prompt), "Be nice.");
    }
}
