//! [`FakeEmbedder`]: a local embedding server speaking Gemini `embedContent` /
//! `batchEmbedContents` and OpenAI-compatible `/embeddings`, for tests, the retrieval
//! evaluation and the benchmarks.
//!
//! Its vectors come from [`fake_embedding`], a deterministic stand-in for a model: each
//! word of the text is mapped through a small table of synonyms and translations
//! ([`CONCEPTS`]: "deliver", "shipping", "envío", "livraison" are one concept) and hashed
//! into the vector together with its character trigrams (so "deliveries" lands near
//! "delivery"). Paraphrases that share concepts land near each other, which is what makes
//! the evaluation on the fake meaningful; its figures are still the fake's, not a real
//! model's.
//!
//! It can be switched to answer 503 ([`FakeEmbedderMode::Down`]) or a per-minute 429
//! ([`FakeEmbedderMode::RateLimited`]), and counts the texts it embedded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::RwLock;
use salesboy_node::adapters::embedding::wire::{
    GeminiBatchRequest, GeminiEmbedRequest, GeminiEmbedResponse, GeminiEmbedding,
    OpenAiEmbedRequest, OpenAiEmbedResponse, OpenAiEmbedUsage, OpenAiEmbedding,
};
use serde_json::json;
use tokio::sync::watch;

use crate::fake_server::FakeServer;

/// The vector length of the fake unless a request asks for another.
pub const FAKE_EMBEDDING_DIMENSIONS: usize = 256;

/// The API key the fake accepts.
pub const FAKE_EMBEDDING_KEY: &str = "fake-embedding-key";

/// Groups of words that mean the same (synonyms, inflections, Spanish and French): a word
/// of a group embeds as the group's first word.
pub const CONCEPTS: &[&[&str]] = &[
    &[
        "delivery",
        "deliver",
        "delivers",
        "delivered",
        "deliveries",
        "ship",
        "ships",
        "shipping",
        "shipped",
        "shipment",
        "send",
        "sends",
        "dispatch",
        "courier",
        "envío",
        "envio",
        "envíos",
        "enviar",
        "enviamos",
        "entrega",
        "entregas",
        "livraison",
        "livrer",
        "livrez",
        "livrons",
        "expédition",
        "expédier",
    ],
    &[
        "nigeria",
        "lagos",
        "abuja",
        "ibadan",
        "kano",
        "nigerian",
        "nigeria's",
    ],
    &[
        "price", "prices", "cost", "costs", "charge", "charges", "fee", "fees", "pay", "much",
        "precio", "precios", "cuesta", "cuánto", "cuanto", "coste", "prix", "coût", "combien",
        "tarif", "tarifs",
    ],
    &[
        "refund",
        "refunds",
        "money",
        "return",
        "returns",
        "returned",
        "reembolso",
        "devolución",
        "devolver",
        "remboursement",
        "rembourser",
        "retour",
    ],
    &[
        "open", "opening", "hours", "close", "closing", "schedule", "horario", "abierto", "abren",
        "horaires", "ouvert", "ouvrez", "heures",
    ],
    &[
        "payment", "payments", "card", "cards", "transfer", "cash", "pago", "pagar", "tarjeta",
        "paiement", "payer", "carte", "espèces",
    ],
    &[
        "size",
        "sizes",
        "fit",
        "fits",
        "measurements",
        "talla",
        "tallas",
        "taille",
        "tailles",
    ],
    &[
        "warranty",
        "guarantee",
        "guaranteed",
        "garantía",
        "garantia",
        "garantie",
    ],
    &[
        "discount",
        "discounts",
        "sale",
        "promo",
        "promotion",
        "coupon",
        "descuento",
        "oferta",
        "réduction",
        "remise",
        "soldes",
    ],
    &[
        "location",
        "showroom",
        "address",
        "store",
        "shop",
        "located",
        "where",
        "tienda",
        "dirección",
        "dónde",
        "donde",
        "boutique",
        "adresse",
        "où",
    ],
    &[
        "days", "day", "week", "weeks", "long", "time", "días", "dias", "semana", "jours",
        "semaine", "délai",
    ],
    &["free", "gratis", "gratuito", "gratuit", "gratuite"],
    &[
        "contact",
        "phone",
        "call",
        "email",
        "whatsapp",
        "contacto",
        "teléfono",
        "llamar",
        "téléphone",
        "appeler",
    ],
    &[
        "international",
        "abroad",
        "overseas",
        "countries",
        "worldwide",
        "internacional",
        "extranjero",
        "international",
        "étranger",
    ],
    &[
        "order",
        "orders",
        "buy",
        "purchase",
        "pedido",
        "comprar",
        "commande",
        "commander",
        "acheter",
    ],
];

/// The fake's vector for `text`, `dimensions` long, unit length (zero for a text without
/// letters or digits). See the module docs.
pub fn fake_embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0.0_f32; dimensions];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| w.chars().count() > 1)
    {
        let concept = CONCEPTS
            .iter()
            .find(|group| group.contains(&word))
            .map(|group| group[0]);
        match concept {
            // A concept weighs like a whole distinctive word.
            Some(concept) => add(&mut vector, &format!("concept:{concept}"), 3.0),
            None => {
                add(&mut vector, &format!("word:{word}"), 1.5);
                let chars: Vec<char> = format!(" {word} ").chars().collect();
                for trigram in chars.windows(3) {
                    add(&mut vector, &trigram.iter().collect::<String>(), 0.5);
                }
            }
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Adds `weight` to the component `feature` hashes to, with a hashed sign.
fn add(vector: &mut [f32], feature: &str, weight: f32) {
    // FNV-1a: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in feature.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let index = (hash % vector.len() as u64) as usize;
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    vector[index] += sign * weight;
}

/// What the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FakeEmbedderMode {
    /// Vectors.
    #[default]
    Up,
    /// 503, as an overloaded provider.
    Down,
    /// A per-minute 429 asking for a 1 s pause.
    RateLimited,
}

struct FakeEmbedderState {
    mode: RwLock<FakeEmbedderMode>,
    requests: AtomicU64,
    texts: AtomicU64,
    /// The model of each answered OpenAI-format request, in order.
    models: RwLock<Vec<String>>,
    /// A request with a text containing this is refused with a 400.
    refused_marker: RwLock<Option<String>>,
}

impl FakeEmbedderState {
    /// Whether a request with these texts is refused as a bad request.
    fn refuses<'a>(&self, mut texts: impl Iterator<Item = &'a str>) -> bool {
        self.refused_marker
            .read()
            .as_deref()
            .is_some_and(|marker| texts.any(|text| text.contains(marker)))
    }
}

/// A local embedding server (see the module docs). Stops when dropped.
pub struct FakeEmbedder {
    state: Arc<FakeEmbedderState>,
    server: FakeServer,
}

impl FakeEmbedder {
    /// Starts the fake on `127.0.0.1` and a free port.
    ///
    /// # Panics
    ///
    /// If no local port can be bound.
    pub async fn start() -> Self {
        let (stop, _) = watch::channel(false);
        let state = Arc::new(FakeEmbedderState {
            mode: RwLock::new(FakeEmbedderMode::Up),
            requests: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            models: RwLock::new(Vec::new()),
            refused_marker: RwLock::new(None),
        });
        let router = Router::new()
            .route("/v1beta/{*path}", post(gemini))
            .route("/v1/embeddings", post(openai))
            .with_state(Arc::clone(&state));
        let server = FakeServer::start(router, stop)
            .await
            .unwrap_or_else(|error| panic!("cannot start the fake embedder: {error}"));
        Self { state, server }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The provider list (`embedding_providers`) for this fake: one entry of `kind`
    /// (`gemini` or `openai`) with `model`.
    pub fn providers_json(&self, kind: &str, model: &str) -> String {
        let base = match kind {
            "gemini" => format!("http://{}/v1beta", self.addr()),
            _ => format!("http://{}/v1", self.addr()),
        };
        json!([{"kind": kind, "model": model, "api_key": FAKE_EMBEDDING_KEY,
                "base_url": base, "timeout_ms": 5000, "usd_per_million": 0.15}])
        .to_string()
    }

    /// Refuses, with a 400 in the provider's format, every request with a text containing
    /// `marker` (`Some("")`: every request; `None`: none), as a provider refuses a text it
    /// cannot take.
    pub fn refuse_texts_containing(&self, marker: Option<&str>) {
        *self.state.refused_marker.write() = marker.map(str::to_owned);
    }

    /// Switches what it answers.
    pub fn set_mode(&self, mode: FakeEmbedderMode) {
        *self.state.mode.write() = mode;
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Texts embedded so far.
    pub fn texts(&self) -> u64 {
        self.state.texts.load(Ordering::Relaxed)
    }

    /// The model each answered OpenAI-format request asked for, in order.
    pub fn models(&self) -> Vec<String> {
        self.state.models.read().clone()
    }
}

/// The failure the mode asks for, if any (`None`: answer).
fn refusal(state: &FakeEmbedderState, gemini: bool) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    match *state.mode.read() {
        FakeEmbedderMode::Up => None,
        FakeEmbedderMode::Down => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(if gemini {
                    json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
                } else {
                    json!({"error": {"message": "The server is overloaded or not ready yet.", "type": "server_error", "param": null, "code": null}})
                }),
            )
                .into_response(),
        ),
        FakeEmbedderMode::RateLimited => Some(if gemini {
            (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                    "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                 "violations": [{"quotaId": "EmbedContentRequestsPerMinutePerProjectPerModel"}]},
                                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}})),
            )
                .into_response()
        } else {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after-ms", "1000")],
                axum::Json(json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
            )
                .into_response()
        }),
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
        ),
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"code": 401, "message": "API key not valid.", "status": "UNAUTHENTICATED"}})),
    )
        .into_response()
}

fn gemini_vector(request: &GeminiEmbedRequest) -> GeminiEmbedding {
    let text: String = request
        .content
        .parts
        .iter()
        .map(|p| p.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let dimensions = request
        .output_dimensionality
        .map_or(FAKE_EMBEDDING_DIMENSIONS, |d| d as usize);
    GeminiEmbedding {
        values: fake_embedding(&text, dimensions),
    }
}

async fn gemini(
    State(state): State<Arc<FakeEmbedderState>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, true) {
        return refused;
    }
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(FAKE_EMBEDDING_KEY) {
        return unauthorized();
    }
    if path.ends_with(":batchEmbedContents") {
        let Ok(batch) = serde_json::from_slice::<GeminiBatchRequest>(&body) else {
            return bad_request("invalid batchEmbedContents body");
        };
        if state.refuses(
            batch
                .requests
                .iter()
                .flat_map(|r| r.content.parts.iter().map(|p| p.text.as_str())),
        ) {
            return bad_request("Request contains an invalid argument.");
        }
        state
            .texts
            .fetch_add(batch.requests.len() as u64, Ordering::Relaxed);
        let answer = GeminiEmbedResponse {
            embedding: None,
            embeddings: Some(batch.requests.iter().map(gemini_vector).collect()),
        };
        return axum::Json(answer).into_response();
    }
    if path.ends_with(":embedContent") {
        let Ok(request) = serde_json::from_slice::<GeminiEmbedRequest>(&body) else {
            return bad_request("invalid embedContent body");
        };
        if state.refuses(request.content.parts.iter().map(|p| p.text.as_str())) {
            return bad_request("Request contains an invalid argument.");
        }
        state.texts.fetch_add(1, Ordering::Relaxed);
        let answer = GeminiEmbedResponse {
            embedding: Some(gemini_vector(&request)),
            embeddings: None,
        };
        return axum::Json(answer).into_response();
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

async fn openai(
    State(state): State<Arc<FakeEmbedderState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refusal(&state, false) {
        return refused;
    }
    let expected = format!("Bearer {FAKE_EMBEDDING_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<OpenAiEmbedRequest>(&body) else {
        return bad_request("invalid embeddings body");
    };
    if state.refuses(request.input.iter().map(String::as_str)) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "Invalid 'input': the text cannot be embedded.", "type": "invalid_request_error", "param": "input", "code": null}})),
        )
            .into_response();
    }
    state
        .texts
        .fetch_add(request.input.len() as u64, Ordering::Relaxed);
    state.models.write().push(request.model.clone());
    let dimensions = request
        .dimensions
        .map_or(FAKE_EMBEDDING_DIMENSIONS, |d| d as usize);
    let tokens: u64 = request
        .input
        .iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum();
    let answer = OpenAiEmbedResponse {
        data: request
            .input
            .iter()
            .enumerate()
            .map(|(index, text)| OpenAiEmbedding {
                index,
                embedding: fake_embedding(text, dimensions),
            })
            .collect(),
        model: request.model.clone(),
        usage: Some(OpenAiEmbedUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }),
    };
    axum::Json(answer).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn paraphrases_land_nearer_than_unrelated_text() {
        let passage = fake_embedding("We ship across Nigeria within three days.", 256);
        let question = fake_embedding("Do you deliver to Lagos?", 256);
        let spanish = fake_embedding("¿Hacen envíos a Lagos?", 256);
        let unrelated = fake_embedding("Our store sells handmade leather boots.", 256);
        assert!(cosine(&passage, &question) > cosine(&passage, &unrelated) + 0.2);
        assert!(cosine(&passage, &spanish) > cosine(&passage, &unrelated) + 0.2);
        assert_eq!(
            fake_embedding("same text", 16),
            fake_embedding("same text", 16)
        );
        assert!(fake_embedding("?!", 8).iter().all(|x| *x == 0.0));
    }
}
