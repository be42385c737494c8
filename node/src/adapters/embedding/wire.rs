//! The embedding APIs' wire formats.
//!
//! Gemini: `POST {base}/models/{model}:embedContent`
//! `{"model": "models/{model}", "content": {"parts": [{"text": …}]}, "taskType":
//! "RETRIEVAL_DOCUMENT" | "RETRIEVAL_QUERY", "outputDimensionality": n?}` →
//! `{"embedding": {"values": [f32…]}}`; `:batchEmbedContents` takes `{"requests": [that…]}`
//! and answers `{"embeddings": [{"values": …}…]}` in request order. Gemini reports no token
//! count: it is estimated (4 characters a token).
//!
//! OpenAI-compatible: `POST {base}/embeddings` `{"model": …, "input": [text…],
//! "encoding_format": "float", "dimensions": n?}` → `{"data": [{"index": i, "embedding":
//! [f32…]}…], "model": …, "usage": {"prompt_tokens": n, "total_tokens": n}}`; `data` is put
//! back in `index` order.

use salesboy_actors::ports::LlmError;
use serde::{Deserialize, Serialize};

use super::{EmbedPurpose, Embedded, estimate_tokens};

/// Gemini's text part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The text.
    pub text: String,
}

/// Gemini's content: parts of text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// The parts.
    pub parts: Vec<Part>,
}

/// The body of Gemini's `embedContent`, and each of `batchEmbedContents`' requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeminiEmbedRequest {
    /// `models/{model}`.
    pub model: String,
    /// The text.
    pub content: Content,
    /// `RETRIEVAL_DOCUMENT` or `RETRIEVAL_QUERY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The vector length asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
}

/// The body of Gemini's `batchEmbedContents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeminiBatchRequest {
    /// One request per text.
    pub requests: Vec<GeminiEmbedRequest>,
}

/// A Gemini vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeminiEmbedding {
    /// The components.
    pub values: Vec<f32>,
}

/// Gemini's answer: `embedding` (one text) or `embeddings` (a batch).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GeminiEmbedResponse {
    /// `embedContent`'s vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<GeminiEmbedding>,
    /// `batchEmbedContents`' vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings: Option<Vec<GeminiEmbedding>>,
}

/// The body of an OpenAI-compatible `/embeddings` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiEmbedRequest {
    /// The model.
    pub model: String,
    /// The texts.
    pub input: Vec<String>,
    /// Always `float`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    /// The vector length asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// One vector of an `/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiEmbedding {
    /// The text's position in `input`.
    pub index: usize,
    /// The components.
    pub embedding: Vec<f32>,
}

/// Token counts of an `/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OpenAiEmbedUsage {
    /// Input tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// All tokens.
    #[serde(default)]
    pub total_tokens: u64,
}

/// An `/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAiEmbedResponse {
    /// The vectors.
    pub data: Vec<OpenAiEmbedding>,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<OpenAiEmbedUsage>,
}

fn task_type(purpose: EmbedPurpose) -> String {
    match purpose {
        EmbedPurpose::Document => "RETRIEVAL_DOCUMENT",
        EmbedPurpose::Query => "RETRIEVAL_QUERY",
    }
    .to_owned()
}

/// The `embedContent` body for one text.
pub fn gemini_request(
    model: &str,
    text: &str,
    purpose: EmbedPurpose,
    dimensions: Option<u32>,
) -> GeminiEmbedRequest {
    GeminiEmbedRequest {
        model: format!("models/{}", model.trim_start_matches("models/")),
        content: Content {
            parts: vec![Part {
                text: text.to_owned(),
            }],
        },
        task_type: Some(task_type(purpose)),
        output_dimensionality: dimensions,
    }
}

/// The `batchEmbedContents` body for several texts.
pub fn gemini_batch_request(
    model: &str,
    texts: &[String],
    purpose: EmbedPurpose,
    dimensions: Option<u32>,
) -> GeminiBatchRequest {
    GeminiBatchRequest {
        requests: texts
            .iter()
            .map(|text| gemini_request(model, text, purpose, dimensions))
            .collect(),
    }
}

/// The `/embeddings` body.
pub fn openai_request(
    model: &str,
    texts: &[String],
    dimensions: Option<u32>,
) -> OpenAiEmbedRequest {
    OpenAiEmbedRequest {
        model: model.to_owned(),
        input: texts.to_vec(),
        encoding_format: Some("float".to_owned()),
        dimensions,
    }
}

fn unparsable(error: serde_json::Error) -> LlmError {
    LlmError::Failed(format!("unparsable response ({error})"))
}

/// The vectors of a Gemini answer for `texts`.
pub fn gemini_vectors(body: &[u8], texts: &[String]) -> Result<Embedded, LlmError> {
    let answer: GeminiEmbedResponse = serde_json::from_slice(body).map_err(unparsable)?;
    let vectors = match (answer.embedding, answer.embeddings) {
        (_, Some(batch)) => batch.into_iter().map(|e| e.values).collect(),
        (Some(one), None) => vec![one.values],
        (None, None) => return Err(LlmError::Failed("answer without embeddings".to_owned())),
    };
    Ok(Embedded {
        vectors,
        tokens: estimate_tokens(texts),
    })
}

/// The vectors of an `/embeddings` answer for `texts`, in input order.
pub fn openai_vectors(body: &[u8], texts: &[String]) -> Result<Embedded, LlmError> {
    let mut answer: OpenAiEmbedResponse = serde_json::from_slice(body).map_err(unparsable)?;
    answer.data.sort_by_key(|d| d.index);
    let tokens = answer
        .usage
        .map(|u| u.prompt_tokens.max(u.total_tokens))
        .filter(|t| *t > 0)
        .unwrap_or_else(|| estimate_tokens(texts));
    Ok(Embedded {
        vectors: answer.data.into_iter().map(|d| d.embedding).collect(),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spelled_as_the_apis_document() {
        let json = serde_json::to_value(gemini_batch_request(
            "gemini-embedding-001",
            &["a".to_owned()],
            EmbedPurpose::Query,
            Some(8),
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"requests": [{"model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "a"}]}, "taskType": "RETRIEVAL_QUERY",
                "outputDimensionality": 8}]})
        );
        let json = serde_json::to_value(openai_request(
            "text-embedding-3-small",
            &["a".to_owned()],
            None,
        ))
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"model": "text-embedding-3-small", "input": ["a"], "encoding_format": "float"})
        );
    }

    #[test]
    fn answers_are_read_in_input_order() {
        let texts = vec!["one".to_owned(), "two".to_owned()];
        let body = br#"{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.0,1.0]},
            {"object":"embedding","index":0,"embedding":[1.0,0.0]}],"model":"m","usage":{"prompt_tokens":2,"total_tokens":2}}"#;
        let embedded = openai_vectors(body, &texts).unwrap();
        assert_eq!(embedded.vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(embedded.tokens, 2);
        let body = br#"{"embedding":{"values":[0.5,0.5]}}"#;
        assert_eq!(
            gemini_vectors(body, &texts[..1]).unwrap().vectors,
            vec![vec![0.5, 0.5]]
        );
        assert!(gemini_vectors(b"{}", &texts).is_err());
    }
}
