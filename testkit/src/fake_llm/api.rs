//! The two APIs the fake speaks, Gemini `generateContent` and OpenAI-compatible chat
//! completions: recognising a request (its key, model and prompt), and the bodies of answers
//! and errors exactly as each API writes them.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use salesboy_protocol::llm::gemini::{GenerateContentRequest, Role};
use salesboy_protocol::llm::openai::{ChatCompletionRequest, ChatRole};
use serde_json::json;

/// Which API a request spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    Gemini,
    OpenAi,
}

/// What the fake needs from a request.
pub(super) struct Asked {
    pub(super) api: Api,
    pub(super) model: String,
    pub(super) system: String,
    pub(super) question: String,
    pub(super) prompt_chars: usize,
}

/// Whether the request carries a key where its API expects one.
pub(super) fn has_key(api: Api, uri: &Uri, headers: &HeaderMap) -> bool {
    let header = |name| {
        headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
    };
    match api {
        Api::Gemini => {
            header("x-goog-api-key").is_some_and(|key| !key.is_empty())
                || uri.query().is_some_and(|query| {
                    query
                        .split('&')
                        .any(|pair| pair.starts_with("key=") && pair.len() > 4)
                })
        }
        Api::OpenAi => header(header::AUTHORIZATION.as_str())
            .and_then(|value| value.strip_prefix("Bearer "))
            .is_some_and(|key| !key.is_empty()),
    }
}

/// The model and prompt of a request, or `None` when the body is not the API's JSON.
pub(super) fn parse(api: Api, path: &str, body: &[u8]) -> Option<Asked> {
    match api {
        Api::Gemini => {
            let model = path
                .rsplit_once("models/")?
                .1
                .strip_suffix(":generateContent")?
                .to_owned();
            let request: GenerateContentRequest = serde_json::from_slice(body).ok()?;
            let system = request
                .system_instruction
                .as_ref()
                .map(|content| content.text())
                .unwrap_or_default();
            let question = request
                .contents
                .iter()
                .rev()
                .find(|content| content.role == Some(Role::User))
                .map(|content| content.text())
                .unwrap_or_default();
            let prompt_chars = system.chars().count()
                + request
                    .contents
                    .iter()
                    .map(|content| content.text().chars().count())
                    .sum::<usize>();
            Some(Asked {
                api,
                model,
                system,
                question,
                prompt_chars,
            })
        }
        Api::OpenAi => {
            let request: ChatCompletionRequest = serde_json::from_slice(body).ok()?;
            let system = request
                .messages
                .iter()
                .filter(|message| matches!(message.role, ChatRole::System | ChatRole::Developer))
                .map(|message| message.content.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let question = request
                .messages
                .iter()
                .rev()
                .find(|message| message.role == ChatRole::User)
                .map(|message| message.content.clone())
                .unwrap_or_default();
            let prompt_chars = request
                .messages
                .iter()
                .map(|message| message.content.chars().count())
                .sum();
            Some(Asked {
                api,
                model: request.model,
                system,
                question,
                prompt_chars,
            })
        }
    }
}

/// A completion answering with `text`, as `api` writes it.
pub(super) fn completion(
    api: Api,
    model: &str,
    text: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
    id: u64,
) -> Response {
    let body = match api {
        Api::Gemini => json!({
            "candidates": [{
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": completion_tokens,
                "totalTokenCount": prompt_tokens + completion_tokens
            },
            "modelVersion": model,
            "responseId": format!("fake-{id}")
        }),
        Api::OpenAi => json!({
            "id": format!("chatcmpl-fake-{id}"),
            "object": "chat.completion",
            "created": 1_739_321_105,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens
            }
        }),
    };
    axum::Json(body).into_response()
}

pub(super) fn missing_key(api: Api) -> Response {
    match api {
        Api::Gemini => (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {
                "code": 403,
                "message": "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                "status": "PERMISSION_DENIED"
            }})),
        )
            .into_response(),
        Api::OpenAi => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {
                "message": "You didn't provide an API key.",
                "type": "invalid_request_error",
                "param": null,
                "code": null
            }})),
        )
            .into_response(),
    }
}

pub(super) fn bad_request(api: Api) -> Response {
    let body = match api {
        Api::Gemini => json!({"error": {
            "code": 400,
            "message": "Invalid JSON payload received.",
            "status": "INVALID_ARGUMENT"
        }}),
        Api::OpenAi => json!({"error": {
            "message": "We could not parse the JSON body of your request.",
            "type": "invalid_request_error",
            "param": null,
            "code": null
        }}),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

pub(super) fn unavailable(api: Api) -> Response {
    let body = match api {
        Api::Gemini => json!({"error": {
            "code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"
        }}),
        Api::OpenAi => json!({"error": {
            "message": "The server is overloaded or not ready yet.",
            "type": "server_error",
            "param": null,
            "code": null
        }}),
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

pub(super) fn quota_exhausted(api: Api, model: &str) -> Response {
    let body = match api {
        Api::Gemini => json!({"error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "250"
                    }]
                },
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
                    }]
                }
            ]
        }}),
        Api::OpenAi => json!({"error": {
            "message": "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "type": "insufficient_quota",
            "param": null,
            "code": "insufficient_quota"
        }}),
    };
    (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
}

pub(super) fn rate_limited(api: Api, model: &str, retry_after: Duration) -> Response {
    let seconds = retry_after.as_secs_f64();
    match api {
        Api::Gemini => {
            let body = json!({"error": {
                "code": 429,
                "message": format!("You exceeded your current quota, please check your plan and billing details. \n* Quota exceeded for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10, model: {model}\nPlease retry in {seconds}s."),
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [{
                            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                            "quotaDimensions": {"location": "global", "model": model},
                            "quotaValue": "10"
                        }]
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": format!("{seconds}s")
                    }
                ]
            }});
            (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response()
        }
        Api::OpenAi => {
            let millis = retry_after.as_millis();
            let body = json!({"error": {
                "message": format!("Rate limit reached for {model} in organization org-fake on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in {millis}ms."),
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }});
            let headers = [
                ("retry-after-ms", millis.to_string()),
                ("retry-after", retry_after.as_secs().max(1).to_string()),
                ("x-ratelimit-limit-requests", "500".to_owned()),
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                ("x-ratelimit-reset-requests", format!("{seconds}s")),
                ("x-ratelimit-limit-tokens", "200000".to_owned()),
                ("x-ratelimit-remaining-tokens", "199888".to_owned()),
                ("x-ratelimit-reset-tokens", "33ms".to_owned()),
            ];
            (StatusCode::TOO_MANY_REQUESTS, headers, axum::Json(body)).into_response()
        }
    }
}
