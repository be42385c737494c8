//! [`OpenAiProvider`]: `POST {base}/chat/completions` with `Authorization: Bearer <key>`, for
//! OpenAI and any compatible server.
//!
//! A 429 is `insufficient_quota` (out of credit: [`LlmError::QuotaExhausted`]) or a rate
//! limit ([`LlmError::RateLimited`], with the delay of `retry-after-ms`, else `retry-after`,
//! else the `x-ratelimit-reset-*` headers).

use reqwest::header::{AUTHORIZATION, HeaderName};
use salesboy_actors::ports::{Completion, LlmError, Prompt, Speaker};
use salesboy_protocol::llm::openai::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, OpenAiErrorBody, OpenAiErrorKind,
    RateLimitHeaders,
};

use super::{
    HttpProvider, ProviderApi, ProviderConfig, RawResponse, TEMPERATURE, short, status_error,
    system_text,
};

/// A model behind an OpenAI-compatible chat completions endpoint.
pub type OpenAiProvider = HttpProvider<OpenAi>;

/// The OpenAI chat completions API: the key as a bearer token.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi;

impl ProviderApi for OpenAi {
    const KEY_HEADER: HeaderName = AUTHORIZATION;
    const KEY_PREFIX: &'static str = "Bearer ";

    type Request = ChatCompletionRequest;

    fn url(config: &ProviderConfig) -> String {
        format!("{}/chat/completions", config.base_url)
    }

    fn request(config: &ProviderConfig, prompt: &Prompt) -> ChatCompletionRequest {
        request_for(&config.model, prompt)
    }

    type Answer = ChatCompletionResponse;

    fn completion(answer: ChatCompletionResponse, model: &str) -> Result<Completion, LlmError> {
        let Some(text) = answer.text() else {
            let refusal = answer
                .choices
                .first()
                .and_then(|choice| choice.message.refusal.as_deref());
            return Err(match (refusal, answer.finish_reason()) {
                (Some(refusal), _) => LlmError::Blocked(short(refusal)),
                (None, Some("content_filter")) => LlmError::Blocked("content_filter".to_owned()),
                (None, reason) => LlmError::Failed(format!(
                    "empty answer (finish reason {})",
                    reason.unwrap_or("none")
                )),
            });
        };
        let usage = answer.usage.clone().unwrap_or_default();
        Ok(Completion {
            text: text.to_owned(),
            model: if answer.model.is_empty() {
                model.to_owned()
            } else {
                answer.model.clone()
            },
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        })
    }

    fn classify_error(response: &RawResponse) -> LlmError {
        let status = response.status;
        let error = serde_json::from_slice::<OpenAiErrorBody>(&response.body)
            .ok()
            .map(|body| body.error);
        let kind = error
            .as_ref()
            .map_or(OpenAiErrorKind::Other, |error| error.kind());
        let message = error
            .as_ref()
            .map(|error| error.message.as_str())
            .unwrap_or_default();
        if kind == OpenAiErrorKind::InsufficientQuota {
            return LlmError::QuotaExhausted(format!("insufficient_quota: {}", short(message)));
        }
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || kind == OpenAiErrorKind::RateLimit {
            let headers = RateLimitHeaders::from_pairs(
                response
                    .headers
                    .iter()
                    .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))),
            );
            return LlmError::RateLimited {
                retry_after: headers.retry_delay(),
            };
        }
        status_error(status, message)
    }
}

/// The chat completions request for a prompt: the system message with the passages, the
/// history (customer → `user`, business → `assistant`), then the question as `user`.
pub fn request_for(model: &str, prompt: &Prompt) -> ChatCompletionRequest {
    let system = system_text(prompt);
    let messages = (!system.is_empty())
        .then(|| ChatMessage::system(system))
        .into_iter()
        .chain(prompt.history.iter().map(|turn| match turn.speaker {
            Speaker::Customer => ChatMessage::user(turn.text.clone()),
            Speaker::Business => ChatMessage::assistant(turn.text.clone()),
        }))
        .chain(std::iter::once(ChatMessage::user(prompt.question.clone())))
        .collect();
    let mut request = ChatCompletionRequest::new(model, messages);
    request.temperature = Some(TEMPERATURE);
    request
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::HeaderMap;
    use salesboy_actors::ports::Turn;

    use super::*;

    fn response(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> RawResponse {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("header value"));
        }
        RawResponse {
            status: reqwest::StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn requests_map_speakers_to_roles() {
        let prompt = Prompt {
            system: "Sys.".to_owned(),
            passages: vec![],
            history: vec![Turn::customer("hello"), Turn::business("Hi!")],
            question: "when?".to_owned(),
        };
        let json = serde_json::to_value(request_for("gpt-4o-mini", &prompt)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Sys."},
                    {"role": "user", "content": "hello"},
                    {"role": "assistant", "content": "Hi!"},
                    {"role": "user", "content": "when?"}
                ],
                "temperature": 0.3
            })
        );
    }

    #[test]
    fn errors_classify() {
        let limited = r#"{"error":{"message":"slow","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(
            super::super::interpret::<OpenAi>(
                response(
                    429,
                    &[("retry-after-ms", "120"), ("retry-after", "1")],
                    limited
                ),
                "m"
            ),
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_millis(120))
            })
        );
        assert_eq!(
            super::super::interpret::<OpenAi>(
                response(
                    429,
                    &[
                        ("x-ratelimit-reset-requests", "2s"),
                        ("x-ratelimit-reset-tokens", "33ms")
                    ],
                    limited
                ),
                "m"
            ),
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            })
        );
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(matches!(
            super::super::interpret::<OpenAi>(response(429, &[("retry-after", "1")], quota), "m"),
            Err(LlmError::QuotaExhausted(_))
        ));
        assert!(matches!(
            super::super::interpret::<OpenAi>(response(502, &[], "bad gateway"), "m"),
            Err(LlmError::Unavailable(_))
        ));
        assert!(matches!(
            super::super::interpret::<OpenAi>(response(401, &[], "{}"), "m"),
            Err(LlmError::Failed(_))
        ));
        let refused = r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        assert_eq!(
            super::super::interpret::<OpenAi>(response(200, &[], refused), "m"),
            Err(LlmError::Blocked("I can't help with that.".to_owned()))
        );
    }
}
