//! LLM provider fixtures: requests serialise to the reference shapes, responses and errors
//! parse to concrete values and classify, retry hints parse into durations.

use std::path::PathBuf;
use std::time::Duration;

use salesboy_protocol::llm::gemini::{
    Content, GeminiErrorBody, GenerateContentRequest, GenerateContentResponse, GenerationConfig,
    QuotaWindow, Role, SafetySetting, ThinkingConfig,
};
use salesboy_protocol::llm::openai::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ChatRole, OpenAiErrorBody,
    OpenAiErrorKind, RateLimitHeaders,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const SYSTEM_PROMPT: &str = "You are the WhatsApp sales assistant for 'Loja Azul'. Answer only from the CONTEXT. If the answer is not in the CONTEXT, say you will check with a human. Keep replies under 60 words.\n\nCONTEXT:\n[kb:12] Opening hours: Mon-Sat 9:00-20:00, closed Sunday.\n[kb:31] Delivery is free for orders above R$150.";

fn fixture_text(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "llm", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn value(name: &str) -> serde_json::Value {
    serde_json::from_str(&fixture_text(name)).unwrap()
}

/// Parses a fixture and checks that serialising and parsing again gives the same value.
fn parse<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(name: &str) -> T {
    let parsed: T =
        serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again: T = serde_json::from_slice(&serde_json::to_vec(&parsed).unwrap()).unwrap();
    assert_eq!(again, parsed, "{name}");
    parsed
}

// ---------------------------------------------------------------------------------------------
// Gemini

#[test]
fn the_gemini_request_serialises_to_the_reference_shape() {
    let mut request = GenerateContentRequest::new(
        Some(SYSTEM_PROMPT.to_owned()),
        vec![
            Content::user("hello"),
            Content::model("Hi! How can I help you today?"),
            Content::user("what time do you close today?"),
        ],
    );
    request.generation_config = Some(GenerationConfig {
        temperature: Some(0.3),
        max_output_tokens: Some(256),
        candidate_count: Some(1),
        thinking_config: Some(ThinkingConfig {
            thinking_budget: Some(0),
        }),
        ..GenerationConfig::default()
    });
    request.safety_settings = vec![SafetySetting {
        category: "HARM_CATEGORY_HARASSMENT".into(),
        threshold: "BLOCK_ONLY_HIGH".into(),
    }];
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        value("gemini_request.json")
    );
    assert_eq!(
        parse::<GenerateContentRequest>("gemini_request.json"),
        request
    );
}

#[test]
fn the_gemini_response_gives_text_and_usage() {
    let response: GenerateContentResponse = parse("gemini_response.json");
    assert_eq!(
        response.text().as_deref(),
        Some(
            "We close at 20:00 today (Mon-Sat hours are 9:00-20:00). Anything else I can help with?"
        )
    );
    assert_eq!(response.finish_reason(), Some("STOP"));
    assert_eq!(response.block_reason(), None);
    assert_eq!(
        response.candidates[0].content.as_ref().unwrap().role,
        Some(Role::Model)
    );
    let usage = response.usage_metadata.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_token_count,
            usage.candidates_token_count,
            usage.total_token_count
        ),
        (118, 27, 145)
    );
    assert_eq!(response.model_version.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        response.response_id.as_deref(),
        Some("mN2dZ6ybJ4iW1MkP3JrQ-AQ")
    );
}

#[test]
fn a_blocked_prompt_has_a_reason_and_no_text() {
    let response: GenerateContentResponse = parse("gemini_response_blocked_prompt.json");
    assert_eq!(response.block_reason(), Some("SAFETY"));
    assert_eq!(response.text(), None);
    assert!(response.candidates.is_empty());
    let usage = response.usage_metadata.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_token_count,
            usage.candidates_token_count,
            usage.total_token_count
        ),
        (40, 0, 40)
    );
}

#[test]
fn a_blocked_answer_or_thoughts_only_give_no_text() {
    let blocked: GenerateContentResponse =
        serde_json::from_str(r#"{"candidates":[{"finishReason":"PROHIBITED_CONTENT","index":0}]}"#)
            .unwrap();
    assert_eq!(
        (blocked.block_reason(), blocked.text()),
        (Some("PROHIBITED_CONTENT"), None)
    );
    let thinking: GenerateContentResponse = serde_json::from_str(
        r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hmm","thought":true},{"text":"Open till 8."}]},"finishReason":"STOP"}]}"#,
    )
    .unwrap();
    assert_eq!(thinking.text().as_deref(), Some("Open till 8."));
    let cut: GenerateContentResponse = serde_json::from_str(
        r#"{"candidates":[{"content":{"role":"model"},"finishReason":"MAX_TOKENS"}]}"#,
    )
    .unwrap();
    assert_eq!(
        (cut.block_reason(), cut.text(), cut.finish_reason()),
        (None, None, Some("MAX_TOKENS"))
    );
}

#[test]
fn a_per_minute_429_is_retryable_after_its_delay() {
    let body: GeminiErrorBody = parse("gemini_429_resource_exhausted.json");
    let error = &body.error;
    assert_eq!(
        (error.code, error.status.as_deref()),
        (429, Some("RESOURCE_EXHAUSTED"))
    );
    assert!(error.is_quota_exceeded());
    assert_eq!(error.retry_delay(), Some(Duration::from_secs(38)));
    assert_eq!(error.quota_window(), Some(QuotaWindow::PerMinute));
    assert!(error.is_retryable());
    assert_eq!(error.details.len(), 3);
    assert_eq!(
        error.details[0].violations[0].quota_id.as_deref(),
        Some("GenerateRequestsPerMinutePerProjectPerModel-FreeTier")
    );
    assert!(
        error
            .to_string()
            .starts_with("gemini error 429 RESOURCE_EXHAUSTED: You exceeded your current quota")
    );
}

#[test]
fn a_per_day_429_is_not_retryable() {
    let body: GeminiErrorBody = parse("gemini_429_daily_quota.json");
    let error = &body.error;
    assert_eq!(error.code, 429);
    assert_eq!(error.retry_delay(), None);
    assert_eq!(error.quota_window(), Some(QuotaWindow::PerDay));
    assert!(!error.is_retryable());
}

#[test]
fn a_503_is_retryable_and_not_a_quota_error() {
    let body: GeminiErrorBody = parse("gemini_503_unavailable.json");
    let error = &body.error;
    assert_eq!(
        (error.code, error.status.as_deref()),
        (503, Some("UNAVAILABLE"))
    );
    assert_eq!(
        error.message,
        "The model is overloaded. Please try again later."
    );
    assert_eq!((error.quota_window(), error.retry_delay()), (None, None));
    assert!(error.is_retryable());
}

#[test]
fn fractional_retry_delays_and_unlabelled_quotas_parse() {
    let body: GeminiErrorBody = serde_json::from_str(
        r#"{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}"#,
    )
    .unwrap();
    assert_eq!(body.error.retry_delay(), Some(Duration::from_millis(1500)));
    assert_eq!(body.error.quota_window(), Some(QuotaWindow::Unknown));
    assert!(body.error.is_retryable());
    let bad_request: GeminiErrorBody = serde_json::from_str(
        r#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#,
    )
    .unwrap();
    assert!(!bad_request.error.is_retryable());
}

// ---------------------------------------------------------------------------------------------
// OpenAI

#[test]
fn the_openai_request_serialises_to_the_reference_shape() {
    let mut request = ChatCompletionRequest::new(
        "gpt-4o-mini",
        vec![
            ChatMessage::system(SYSTEM_PROMPT),
            ChatMessage::user("hello"),
            ChatMessage::assistant("Hi! How can I help you today?"),
            ChatMessage::user("what time do you close today?"),
        ],
    );
    request.temperature = Some(0.3);
    request.max_tokens = Some(256);
    request.user = Some("tenant-42:conv-16505551234".into());
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        value("openai_request.json")
    );
    assert_eq!(
        parse::<ChatCompletionRequest>("openai_request.json"),
        request
    );
    let minimal = serde_json::to_value(ChatCompletionRequest::new(
        "m",
        vec![ChatMessage::user("hi")],
    ))
    .unwrap();
    assert_eq!(
        minimal,
        serde_json::json!({"model":"m","messages":[{"role":"user","content":"hi"}]})
    );
}

#[test]
fn the_openai_response_gives_text_and_usage() {
    let response: ChatCompletionResponse = parse("openai_response.json");
    assert_eq!(
        response.text(),
        Some("We close at 20:00 today (Mon-Sat 9:00-20:00). Anything else?")
    );
    assert_eq!(response.finish_reason(), Some("stop"));
    assert_eq!(response.choices[0].message.role, ChatRole::Assistant);
    assert_eq!(response.choices[0].message.refusal, None);
    assert_eq!(response.model, "gpt-4o-mini-2024-07-18");
    assert_eq!(response.created, Some(1_739_321_105));
    let usage = response.usage.as_ref().unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (112, 21, 133)
    );

    let refusal: ChatCompletionResponse = serde_json::from_str(
        r#"{"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"no"},"finish_reason":"stop"}]}"#,
    )
    .unwrap();
    assert_eq!(refusal.text(), None);
}

#[test]
fn a_rate_limit_is_retryable_and_insufficient_quota_is_not() {
    let rate: OpenAiErrorBody = parse("openai_429_rate_limit.json");
    assert_eq!(rate.error.kind(), OpenAiErrorKind::RateLimit);
    assert!(rate.error.is_retryable());
    assert_eq!(
        (
            rate.error.error_type.as_deref(),
            rate.error.param.as_deref()
        ),
        (Some("requests"), None)
    );
    assert!(
        rate.error
            .to_string()
            .starts_with("openai error rate_limit_exceeded: Rate limit reached")
    );

    let quota: OpenAiErrorBody = parse("openai_429_insufficient_quota.json");
    assert_eq!(quota.error.kind(), OpenAiErrorKind::InsufficientQuota);
    assert!(!quota.error.is_retryable());

    let other: OpenAiErrorBody = serde_json::from_str(
        r#"{"error":{"message":"bad model","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
    )
    .unwrap();
    assert_eq!(
        (other.error.kind(), other.error.is_retryable()),
        (OpenAiErrorKind::Other, false)
    );
    let numeric_code: OpenAiErrorBody = serde_json::from_str(
        r#"{"error":{"message":"slow","type":"insufficient_quota","code":429}}"#,
    )
    .unwrap();
    assert_eq!(numeric_code.error.code.as_deref(), Some("429"));
    assert_eq!(
        numeric_code.error.kind(),
        OpenAiErrorKind::InsufficientQuota
    );
}

/// The `name: value` lines of the reference headers file.
fn reference_headers() -> Vec<(String, String)> {
    fixture_text("openai_rate_limit_headers.txt")
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_reference_rate_limit_headers_parse() {
    let headers = reference_headers();
    assert_eq!(headers.len(), 10);
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let parsed = RateLimitHeaders::from_pairs(pairs());
    assert_eq!(
        parsed,
        RateLimitHeaders {
            retry_after_ms: Some(Duration::from_millis(120)),
            retry_after: Some(Duration::from_secs(1)),
            reset_requests: Some(Duration::from_millis(120)),
            reset_tokens: Some(Duration::from_millis(33)),
            remaining_requests: Some(499),
            remaining_tokens: Some(199_888),
        }
    );
    assert_eq!(
        parsed.retry_delay(),
        Some(Duration::from_millis(120)),
        "retry-after-ms wins"
    );

    let without_ms = RateLimitHeaders::from_pairs(pairs().filter(|(n, _)| *n != "retry-after-ms"));
    assert_eq!(
        without_ms.retry_delay(),
        Some(Duration::from_secs(1)),
        "then retry-after"
    );

    let resets_only = RateLimitHeaders::from_pairs([
        ("X-RateLimit-Reset-Requests", "6m0s"),
        ("x-ratelimit-reset-tokens", "1s"),
    ]);
    assert_eq!(
        resets_only.retry_delay(),
        Some(Duration::from_secs(360)),
        "then the later reset"
    );

    let garbage = RateLimitHeaders::from_pairs([
        ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("retry-after-ms", "-5"),
    ]);
    assert_eq!(garbage.retry_delay(), None);
    assert_eq!(RateLimitHeaders::from_pairs([]).retry_delay(), None);
    let fractional = RateLimitHeaders::from_pairs([
        ("retry-after-ms", "20.5"),
        ("x-ratelimit-reset-tokens", "20ms"),
    ]);
    assert_eq!(
        fractional.retry_after_ms,
        Some(Duration::from_micros(20_500))
    );
    assert_eq!(fractional.reset_tokens, Some(Duration::from_millis(20)));
}
