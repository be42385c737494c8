//! Embedding providers over HTTP, beside the chat providers ([`super::llm`]) and in their
//! style: Gemini `embedContent` / `batchEmbedContents` and OpenAI-compatible `/embeddings`
//! ([`wire`]), one [`HttpEmbedder`] per configured entry ([`config`]), tried in order by an
//! [`EmbeddingChain`] with the chat chain's budgets, circuit breaking and 429 semantics
//! (each provider behind a [`ProviderGate`]).
//!
//! Failures are the chat providers' [`LlmError`]s, classified by the same code: 429
//! per-minute → `RateLimited` (rest for the server's delay), per-day quota /
//! `insufficient_quota` → `QuotaExhausted` (rest an hour), 5xx → `Unavailable`, slow →
//! `Timeout`. Keys travel only in request headers, marked sensitive, and are scrubbed from
//! errors.

pub mod config;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use salesboy_actors::ports::{Budget, LlmError};
use salesboy_actors::responder::chain::Attempt;
use salesboy_actors::responder::gate::{FAILURE_REST, ProviderGate};
use secrecy::ExposeSecret;

pub use config::{EmbeddingConfig, parse_embedding_config};

use super::llm::config::ProviderKind;
use super::llm::{Gemini, OpenAi, ProviderApi, RawResponse, exchange, redact};

/// The longest embedding answer read (64 MiB): a batch of 100 vectors of 3,072 floats in
/// JSON is about 8 MB, far above the chat answers' 1 MiB.
pub const MAX_EMBEDDING_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// What a text is embedded for: Gemini embeds passages and questions differently
/// (`RETRIEVAL_DOCUMENT` / `RETRIEVAL_QUERY`); OpenAI models do not distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedPurpose {
    /// A knowledge passage.
    Document,
    /// A customer's question.
    Query,
}

/// The vectors of one request, in the order of its texts, and the input tokens billed.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// One vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens: the provider's count, or an estimate (4 characters a token) when it
    /// reports none (Gemini).
    pub tokens: u64,
}

/// One embedding endpoint with its model and key.
#[async_trait]
pub trait EmbeddingProvider: Send + Sync + 'static {
    /// The name in logs, metrics and usage records.
    fn name(&self) -> &str;
    /// The model.
    fn model(&self) -> &str;
    /// Requests and tokens per minute.
    fn budget(&self) -> Budget;
    /// Texts per request.
    fn batch_size(&self) -> usize;
    /// The cost of `tokens` input tokens in millionths of a dollar.
    fn cost_micros(&self, tokens: u64) -> u64;
    /// The texts' vectors, one each, in order.
    async fn embed(&self, texts: &[String], purpose: EmbedPurpose) -> Result<Embedded, LlmError>;
}

/// An embedding provider over HTTP (either API, by its configured kind).
#[derive(Clone)]
pub struct HttpEmbedder {
    client: reqwest::Client,
    config: EmbeddingConfig,
}

impl fmt::Debug for HttpEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEmbedder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpEmbedder {
    /// A provider for `config` over `client`.
    pub fn new(client: reqwest::Client, config: EmbeddingConfig) -> Self {
        Self { client, config }
    }

    /// The endpoint a request for `count` texts goes to.
    pub fn url(&self, count: usize) -> String {
        let base = &self.config.base_url;
        match self.config.kind {
            ProviderKind::Gemini => {
                let model = self.config.model.trim_start_matches("models/");
                let method = if count == 1 {
                    "embedContent"
                } else {
                    "batchEmbedContents"
                };
                format!("{base}/models/{model}:{method}")
            }
            ProviderKind::OpenAi => format!("{base}/embeddings"),
        }
    }

    fn key_header(&self) -> Result<(reqwest::header::HeaderName, HeaderValue), LlmError> {
        let key = self.config.api_key.expose_secret();
        let (name, text) = match self.config.kind {
            ProviderKind::Gemini => (Gemini::KEY_HEADER, key.to_owned()),
            ProviderKind::OpenAi => (AUTHORIZATION, format!("Bearer {key}")),
        };
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| LlmError::Failed("the api key is not a valid header value".to_owned()))?;
        value.set_sensitive(true);
        Ok((name, value))
    }

    async fn call(&self, texts: &[String], purpose: EmbedPurpose) -> Result<Embedded, LlmError> {
        let (name, value) = self.key_header()?;
        let request = self.client.post(self.url(texts.len())).header(name, value);
        let model = &self.config.model;
        let dimensions = self.config.dimensions;
        let request = match self.config.kind {
            ProviderKind::Gemini if texts.len() == 1 => {
                request.json(&wire::gemini_request(model, &texts[0], purpose, dimensions))
            }
            ProviderKind::Gemini => request.json(&wire::gemini_batch_request(
                model, texts, purpose, dimensions,
            )),
            ProviderKind::OpenAi => request.json(&wire::openai_request(model, texts, dimensions)),
        };
        let response = exchange(request, self.config.timeout, MAX_EMBEDDING_RESPONSE_BYTES).await?;
        if !response.status.is_success() {
            return Err(self.classify(&response));
        }
        let embedded = match self.config.kind {
            ProviderKind::Gemini => wire::gemini_vectors(&response.body, texts)?,
            ProviderKind::OpenAi => wire::openai_vectors(&response.body, texts)?,
        };
        if embedded.vectors.len() != texts.len() {
            return Err(LlmError::Failed(format!(
                "{} vectors for {} texts",
                embedded.vectors.len(),
                texts.len()
            )));
        }
        Ok(embedded)
    }

    fn classify(&self, response: &RawResponse) -> LlmError {
        match self.config.kind {
            ProviderKind::Gemini => Gemini::classify_error(response),
            ProviderKind::OpenAi => OpenAi::classify_error(response),
        }
    }
}

#[async_trait]
impl EmbeddingProvider for HttpEmbedder {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    fn budget(&self) -> Budget {
        self.config.budget
    }

    fn batch_size(&self) -> usize {
        self.config.batch_size
    }

    fn cost_micros(&self, tokens: u64) -> u64 {
        self.config.cost_micros(tokens)
    }

    async fn embed(&self, texts: &[String], purpose: EmbedPurpose) -> Result<Embedded, LlmError> {
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                tokens: 0,
            });
        }
        self.call(texts, purpose).await.map_err(|error| {
            let error = redact(error, self.config.api_key.expose_secret());
            tracing::debug!(provider = %self.config.name, model = %self.config.model, error = %error, "embedding request failed");
            error
        })
    }
}

/// A rough token count (4 characters a token), for budgets and for providers that report
/// none.
pub fn estimate_tokens(texts: &[String]) -> u64 {
    texts
        .iter()
        .map(|t| t.chars().count() as u64)
        .sum::<u64>()
        .div_ceil(4)
}

/// What a chain produced: the vectors with who made them and what they cost, or every
/// provider's attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedOutcome {
    /// A provider answered.
    Embedded {
        /// The vectors and tokens.
        embedded: Embedded,
        /// The provider's name.
        provider: String,
        /// The cost in millionths of a dollar.
        cost_micros: u64,
        /// Providers tried before it.
        failed: Vec<Attempt>,
    },
    /// None did.
    Exhausted {
        /// Every provider's attempt (`error: None`: skipped, resting or over budget).
        failed: Vec<Attempt>,
    },
}

struct Slot {
    provider: Arc<dyn EmbeddingProvider>,
    gate: ProviderGate,
}

/// The embedding providers in fallback order, with their circuits and budgets: the chat
/// chain's rules ([`salesboy_actors::responder::gate`]), with the rest after repeated
/// failures a parameter (tests shorten it). Unlike a chat prompt, a blocked request counts
/// as a failure of its provider.
pub struct EmbeddingChain {
    slots: Vec<Slot>,
}

impl fmt::Debug for EmbeddingChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| s.provider.name()))
            .finish()
    }
}

impl EmbeddingChain {
    /// A chain over `providers` (tried in this order); an open circuit rests
    /// `failure_rest` after [`FAILURES_TO_OPEN`](salesboy_actors::responder::gate::FAILURES_TO_OPEN)
    /// failures in a row.
    pub fn new(providers: Vec<Arc<dyn EmbeddingProvider>>, failure_rest: Duration) -> Self {
        let slots = providers
            .into_iter()
            .map(|provider| Slot {
                provider,
                gate: ProviderGate::new(failure_rest),
            })
            .collect();
        Self { slots }
    }

    /// The chain of HTTP providers `configs` describe, over `client`, with the chat
    /// chain's [`FAILURE_REST`].
    pub fn from_configs(client: &reqwest::Client, configs: Vec<EmbeddingConfig>) -> Self {
        let providers = configs
            .into_iter()
            .map(|c| Arc::new(HttpEmbedder::new(client.clone(), c)) as Arc<dyn EmbeddingProvider>)
            .collect();
        Self::new(providers, FAILURE_REST)
    }

    /// The model every provider embeds with (the first's; the configuration checks they
    /// agree). `None` for an empty chain.
    pub fn model(&self) -> Option<&str> {
        self.slots.first().map(|s| s.provider.model())
    }

    /// The smallest batch size of the providers (a batch must fit whichever answers).
    pub fn batch_size(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.provider.batch_size())
            .min()
            .unwrap_or(1)
            .max(1)
    }

    /// Asks the providers in order until one embeds `texts`.
    pub async fn embed(&self, texts: &[String], purpose: EmbedPurpose) -> EmbedOutcome {
        let estimated = estimate_tokens(texts);
        let mut failed = Vec::new();
        for slot in &self.slots {
            let name = slot.provider.name().to_owned();
            if !slot.gate.admit(slot.provider.budget(), estimated) {
                failed.push(Attempt {
                    provider: name,
                    error: None,
                });
                continue;
            }
            match slot.provider.embed(texts, purpose).await {
                Ok(embedded) => {
                    slot.gate.succeeded(estimated, embedded.tokens);
                    let cost_micros = slot.provider.cost_micros(embedded.tokens);
                    return EmbedOutcome::Embedded {
                        embedded,
                        provider: name,
                        cost_micros,
                        failed,
                    };
                }
                Err(error) => {
                    slot.gate.failed(&error);
                    failed.push(Attempt {
                        provider: name,
                        error: Some(error),
                    });
                }
            }
        }
        EmbedOutcome::Exhausted { failed }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use salesboy_actors::responder::gate::FAILURES_TO_OPEN;

    use super::*;

    struct Scripted {
        name: &'static str,
        calls: AtomicU32,
        answer: Result<(), LlmError>,
        budget: Budget,
    }

    #[async_trait]
    impl EmbeddingProvider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn model(&self) -> &str {
            "m"
        }
        fn budget(&self) -> Budget {
            self.budget
        }
        fn batch_size(&self) -> usize {
            4
        }
        fn cost_micros(&self, tokens: u64) -> u64 {
            tokens
        }
        async fn embed(&self, texts: &[String], _: EmbedPurpose) -> Result<Embedded, LlmError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.answer.clone().map(|()| Embedded {
                vectors: texts.iter().map(|_| vec![1.0, 0.0]).collect(),
                tokens: 7,
            })
        }
    }

    fn scripted(name: &'static str, answer: Result<(), LlmError>, budget: Budget) -> Arc<Scripted> {
        Arc::new(Scripted {
            name,
            calls: AtomicU32::new(0),
            answer,
            budget,
        })
    }

    fn texts() -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }

    #[tokio::test]
    async fn falls_through_on_429_and_rests_the_limited_provider() {
        let limited = scripted(
            "first",
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(5)),
            }),
            Budget::default(),
        );
        let backup = scripted("second", Ok(()), Budget::default());
        let chain = EmbeddingChain::new(vec![limited.clone(), backup.clone()], FAILURE_REST);
        let EmbedOutcome::Embedded {
            provider,
            cost_micros,
            failed,
            embedded,
        } = chain.embed(&texts(), EmbedPurpose::Document).await
        else {
            panic!("the backup embeds");
        };
        assert_eq!(provider, "second");
        assert_eq!(cost_micros, 7);
        assert_eq!(embedded.vectors.len(), 2);
        assert_eq!(failed.len(), 1);
        // Resting: the limited provider is skipped, not called.
        chain.embed(&texts(), EmbedPurpose::Query).await;
        assert_eq!(limited.calls.load(Ordering::Relaxed), 1);
        assert_eq!(backup.calls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn repeated_failures_open_the_circuit_and_budgets_hold() {
        let down = scripted(
            "down",
            Err(LlmError::Unavailable("503".into())),
            Budget::default(),
        );
        let chain = EmbeddingChain::new(vec![down.clone()], Duration::from_secs(60));
        for _ in 0..5 {
            assert!(matches!(
                chain.embed(&texts(), EmbedPurpose::Document).await,
                EmbedOutcome::Exhausted { .. }
            ));
        }
        assert_eq!(down.calls.load(Ordering::Relaxed), FAILURES_TO_OPEN);

        let capped = scripted(
            "capped",
            Ok(()),
            Budget {
                requests_per_minute: Some(2),
                tokens_per_minute: None,
            },
        );
        let chain = EmbeddingChain::new(vec![capped.clone()], FAILURE_REST);
        for _ in 0..3 {
            chain.embed(&texts(), EmbedPurpose::Document).await;
        }
        assert_eq!(capped.calls.load(Ordering::Relaxed), 2);
    }
}
