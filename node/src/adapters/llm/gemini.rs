//! [`GeminiProvider`]: `POST {base}/models/{model}:generateContent` with the key in
//! `x-goog-api-key`.
//!
//! A 429 says in its body whether a per-minute quota (retry after `retryDelay`:
//! [`LlmError::RateLimited`]) or a per-day quota ([`LlmError::QuotaExhausted`]) ran out; a
//! prompt or answer withheld for safety is [`LlmError::Blocked`].

use reqwest::header::HeaderName;
use salesboy_actors::ports::{Completion, LlmError, Prompt, Speaker};
use salesboy_protocol::llm::gemini::{
    Content, GeminiErrorBody, GenerateContentRequest, GenerateContentResponse, GenerationConfig,
    QuotaWindow,
};

use super::{
    HttpProvider, ProviderApi, ProviderConfig, RawResponse, TEMPERATURE, short, status_error,
    system_text,
};

/// The header that carries the API key.
pub const API_KEY_HEADER: &str = "x-goog-api-key";

/// A Gemini model behind `generateContent`.
pub type GeminiProvider = HttpProvider<Gemini>;

/// The Gemini API: `generateContent`, the key in [`API_KEY_HEADER`].
#[derive(Debug, Clone, Copy)]
pub struct Gemini;

impl ProviderApi for Gemini {
    const KEY_HEADER: HeaderName = HeaderName::from_static(API_KEY_HEADER);
    const KEY_PREFIX: &'static str = "";

    type Request = GenerateContentRequest;

    fn url(config: &ProviderConfig) -> String {
        // Accept `models/gemini-…` as well as `gemini-…`.
        let model = config.model.trim_start_matches("models/");
        format!("{}/models/{model}:generateContent", config.base_url)
    }

    fn request(_config: &ProviderConfig, prompt: &Prompt) -> GenerateContentRequest {
        request_for(prompt)
    }

    type Answer = GenerateContentResponse;

    fn completion(answer: GenerateContentResponse, model: &str) -> Result<Completion, LlmError> {
        if let Some(reason) = answer.block_reason() {
            return Err(LlmError::Blocked(reason.to_owned()));
        }
        let Some(text) = answer.text() else {
            return Err(LlmError::Failed(format!(
                "empty answer (finish reason {})",
                answer.finish_reason().unwrap_or("none")
            )));
        };
        let usage = answer.usage_metadata.unwrap_or_default();
        Ok(Completion {
            text,
            model: answer
                .model_version
                .filter(|version| !version.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            prompt_tokens: usage.prompt_token_count,
            // Thinking tokens are billed as output.
            completion_tokens: usage.candidates_token_count
                + usage.thoughts_token_count.unwrap_or(0),
        })
    }

    fn classify_error(response: &RawResponse) -> LlmError {
        let status = response.status;
        let error = serde_json::from_slice::<GeminiErrorBody>(&response.body)
            .ok()
            .map(|body| body.error);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || error
                .as_ref()
                .is_some_and(|error| error.is_quota_exceeded())
        {
            return match &error {
                Some(error) if error.quota_window() == Some(QuotaWindow::PerDay) => {
                    LlmError::QuotaExhausted(format!("per-day quota: {}", short(&error.message)))
                }
                Some(error) => LlmError::RateLimited {
                    retry_after: error.retry_delay(),
                },
                None => LlmError::RateLimited { retry_after: None },
            };
        }
        let message = error
            .as_ref()
            .map(|error| error.message.as_str())
            .unwrap_or_default();
        status_error(status, message)
    }
}

/// The `generateContent` request for a prompt: the system instruction with the passages,
/// the history (customer → `user`, business → `model`), then the question as `user`.
pub fn request_for(prompt: &Prompt) -> GenerateContentRequest {
    let contents = prompt
        .history
        .iter()
        .map(|turn| match turn.speaker {
            Speaker::Customer => Content::user(turn.text.clone()),
            Speaker::Business => Content::model(turn.text.clone()),
        })
        .chain(std::iter::once(Content::user(prompt.question.clone())))
        .collect();
    let system = system_text(prompt);
    let mut request = GenerateContentRequest::new((!system.is_empty()).then_some(system), contents);
    request.generation_config = Some(GenerationConfig {
        temperature: Some(TEMPERATURE),
        candidate_count: Some(1),
        ..GenerationConfig::default()
    });
    request
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use salesboy_actors::ports::Turn;

    use super::*;

    fn interpret_response(status: u16, body: &[u8], model: &str) -> Result<Completion, LlmError> {
        let response = RawResponse {
            status: reqwest::StatusCode::from_u16(status).expect("status"),
            headers: reqwest::header::HeaderMap::new(),
            body: body.to_vec(),
        };
        super::super::interpret::<Gemini>(response, model)
    }

    #[test]
    fn requests_map_speakers_to_roles() {
        let prompt = Prompt {
            system: "Sys.".to_owned(),
            passages: vec!["Open 9-18.".to_owned()],
            history: vec![Turn::customer("hello"), Turn::business("Hi!")],
            question: "when?".to_owned(),
        };
        let json = serde_json::to_value(request_for(&prompt)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "systemInstruction": {"parts": [{"text": "Sys.\n\nBusiness information:\n- Open 9-18."}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "hello"}]},
                    {"role": "model", "parts": [{"text": "Hi!"}]},
                    {"role": "user", "parts": [{"text": "when?"}]}
                ],
                "generationConfig": {"temperature": 0.3, "candidateCount": 1}
            })
        );
    }

    #[test]
    fn errors_classify() {
        let per_minute = br#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                       {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#;
        assert_eq!(
            interpret_response(429, per_minute, "m"),
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert_eq!(
            interpret_response(429, b"", "m"),
            Err(LlmError::RateLimited { retry_after: None })
        );
        assert!(matches!(
            interpret_response(503, br#"{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}"#, "m"),
            Err(LlmError::Unavailable(reason)) if reason == "http status 503: overloaded"
        ));
        assert!(matches!(
            interpret_response(400, b"nope", "m"),
            Err(LlmError::Failed(_))
        ));
        assert!(matches!(
            interpret_response(200, b"{}", "m"),
            Err(LlmError::Failed(_))
        ));
    }
}
