//! The LLM providers against wiremock (request shapes, answers, every documented failure),
//! the provider configuration and the factory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use salesboy_actors::ports::{
    Budget, Completion, LlmError, LlmProvider, LlmProviderFactory, Prompt, Turn,
};
use salesboy_node::adapters::http_client;
use salesboy_node::adapters::llm::{
    HttpLlmFactory, MAX_RESPONSE_BYTES, build_provider, parse_llm_config, redacted_llm_config,
    validate_llm_config,
};
use salesboy_protocol::TenantId;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const GEMINI_KEY: &str = "AIza-test-key-do-not-log";
const OPENAI_KEY: &str = "sk-test-key-do-not-log";
const GEMINI_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const SYSTEM: &str = "You are the WhatsApp sales assistant for 'Loja Azul'.";
const SYSTEM_WITH_PASSAGES: &str = "You are the WhatsApp sales assistant for 'Loja Azul'.\n\nBusiness information:\n- Opening hours: Mon-Sat 9:00-20:00, closed Sunday.\n- Delivery is free for orders above R$150.";

fn prompt() -> Prompt {
    Prompt {
        system: SYSTEM.to_owned(),
        passages: vec![
            "Opening hours: Mon-Sat 9:00-20:00, closed Sunday.".to_owned(),
            "Delivery is free for orders above R$150.".to_owned(),
        ],
        history: vec![
            Turn::customer("hello"),
            Turn::business("Hi! How can I help you today?"),
        ],
        question: "what time do you close today?".to_owned(),
    }
}

fn tenant() -> TenantId {
    TenantId::new("acme").expect("tenant id")
}

/// The first provider of a one-provider list.
fn provider(config: Value) -> Arc<dyn LlmProvider> {
    let configs = parse_llm_config(&json!([config]).to_string()).expect("valid config");
    let config = configs.into_iter().next().expect("one provider");
    build_provider(&http_client().expect("http client"), config)
}

fn gemini(server: &MockServer, extra: Value) -> Arc<dyn LlmProvider> {
    let mut config = json!({
        "kind": "gemini",
        "model": "gemini-2.5-flash",
        "api_key": GEMINI_KEY,
        "base_url": format!("{}/v1beta", server.uri()),
    });
    merge(&mut config, extra);
    provider(config)
}

fn openai(server: &MockServer, extra: Value) -> Arc<dyn LlmProvider> {
    let mut config = json!({
        "kind": "openai",
        "model": "gpt-4o-mini",
        "api_key": OPENAI_KEY,
        "base_url": format!("{}/v1", server.uri()),
    });
    merge(&mut config, extra);
    provider(config)
}

fn merge(config: &mut Value, extra: Value) {
    if let (Value::Object(config), Value::Object(extra)) = (config, extra) {
        config.extend(extra);
    }
}

fn assert_no_key(error: &LlmError) {
    for key in [GEMINI_KEY, OPENAI_KEY] {
        assert!(!error.to_string().contains(key), "{error}");
        assert!(!format!("{error:?}").contains(key), "{error:?}");
    }
}

/// Asks a provider whose server answers `response` once; the error.
async fn gemini_error_for(response: ResponseTemplate) -> LlmError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let error = gemini(&server, json!({}))
        .complete(&prompt())
        .await
        .expect_err("must fail");
    assert_no_key(&error);
    error
}

async fn openai_error_for(response: ResponseTemplate) -> LlmError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let error = openai(&server, json!({}))
        .complete(&prompt())
        .await
        .expect_err("must fail");
    assert_no_key(&error);
    error
}

fn gemini_quota_error(quota_id: &str, retry_delay: Option<&str>) -> Value {
    let mut details = vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                "quotaValue": "10"
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]
        }),
    ];
    if let Some(delay) = retry_delay {
        details.push(
            json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}),
        );
    }
    json!({"error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": details
    }})
}

// --- Gemini ------------------------------------------------------------------------------

#[tokio::test]
async fn gemini_sends_the_prompt_and_reads_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", GEMINI_KEY))
        .and(body_json(json!({
            "systemInstruction": {"parts": [{"text": SYSTEM_WITH_PASSAGES}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hello"}]},
                {"role": "model", "parts": [{"text": "Hi! How can I help you today?"}]},
                {"role": "user", "parts": [{"text": "what time do you close today?"}]}
            ],
            "generationConfig": {"temperature": 0.3, "candidateCount": 1}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "candidates": [{
                "content": {"parts": [{"text": "We close at 20:00 today. Anything else?"}], "role": "model"},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 118, "candidatesTokenCount": 27, "totalTokenCount": 145},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "mN2dZ6ybJ4iW1MkP3JrQ-AQ"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let provider = gemini(
        &server,
        json!({"prompt_usd_per_million": 0.3, "completion_usd_per_million": 2.5, "requests_per_minute": 10}),
    );
    assert_eq!(
        (provider.name(), provider.model()),
        ("gemini", "gemini-2.5-flash")
    );
    assert_eq!(
        provider.budget(),
        Budget {
            requests_per_minute: Some(10),
            tokens_per_minute: None
        }
    );
    // 118 × 0.3 + 27 × 2.5 = 102.9 micro-dollars, rounded up.
    assert_eq!(provider.cost_micros(118, 27), 103);
    let completion = provider.complete(&prompt()).await.expect("answered");
    assert_eq!(
        completion,
        Completion {
            text: "We close at 20:00 today. Anything else?".to_owned(),
            model: "gemini-2.5-flash".to_owned(),
            prompt_tokens: 118,
            completion_tokens: 27,
        }
    );
}

#[tokio::test]
async fn gemini_per_minute_quota_is_rate_limited_with_the_body_delay() {
    let error = gemini_error_for(ResponseTemplate::new(429).set_body_json(gemini_quota_error(
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        Some("38s"),
    )))
    .await;
    assert_eq!(
        error,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(38))
        }
    );
}

#[tokio::test]
async fn gemini_per_day_quota_is_exhausted() {
    let error = gemini_error_for(ResponseTemplate::new(429).set_body_json(gemini_quota_error(
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        None,
    )))
    .await;
    assert!(
        matches!(&error, LlmError::QuotaExhausted(reason) if reason.starts_with("per-day quota")),
        "{error:?}"
    );
}

#[tokio::test]
async fn gemini_overload_is_unavailable() {
    let error = gemini_error_for(ResponseTemplate::new(503).set_body_json(json!({"error": {
        "code": 503,
        "message": "The model is overloaded. Please try again later.",
        "status": "UNAVAILABLE"
    }})))
    .await;
    assert_eq!(
        error,
        LlmError::Unavailable(
            "http status 503: The model is overloaded. Please try again later.".to_owned()
        )
    );
}

#[tokio::test]
async fn gemini_blocked_prompt_is_blocked() {
    let error = gemini_error_for(ResponseTemplate::new(200).set_body_json(json!({
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40},
        "modelVersion": "gemini-2.5-flash"
    })))
    .await;
    assert_eq!(error, LlmError::Blocked("SAFETY".to_owned()));
}

#[tokio::test]
async fn gemini_bad_key_fails_without_quoting_it() {
    let error = gemini_error_for(ResponseTemplate::new(400).set_body_json(json!({"error": {
        "code": 400,
        "message": format!("API key not valid: {GEMINI_KEY}. Please pass a valid API key."),
        "status": "INVALID_ARGUMENT"
    }})))
    .await;
    assert_eq!(
        error,
        LlmError::Failed(
            "http status 400: API key not valid: [redacted]. Please pass a valid API key."
                .to_owned()
        )
    );
}

/// A server that answers every POST, but only after 3 s.
async fn slow_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn gemini_slow_answer_times_out() {
    let server = slow_server().await;
    let provider = gemini(&server, json!({"timeout_ms": 200}));
    let started = Instant::now();
    assert_eq!(provider.complete(&prompt()).await, Err(LlmError::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn gemini_huge_answer_is_too_large() {
    let body = vec![b' '; MAX_RESPONSE_BYTES + 1];
    let error =
        gemini_error_for(ResponseTemplate::new(200).set_body_raw(body, "application/json")).await;
    assert_eq!(
        error,
        LlmError::TooLarge {
            limit: MAX_RESPONSE_BYTES
        }
    );
    assert_eq!(error.code(), "too_large");
}

/// A server that answers every request with a chunked body without end (no
/// `content-length`), until the client hangs up; how many bytes it wrote.
async fn endless_server() -> (String, tokio::task::JoinHandle<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let read = socket.read(&mut buffer).await.unwrap();
            assert!(read > 0, "client closed before its request");
            request.extend_from_slice(&buffer[..read]);
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        let mut written = 0;
        // Stops when the client hangs up, or after 64 MiB.
        while written < 64 * 1024 * 1024 {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if socket.write_all(&frame).await.is_err() {
                break;
            }
            written += chunk.len();
        }
        written
    });
    (format!("http://{addr}/v1"), task)
}

#[tokio::test]
async fn openai_endless_answer_is_too_large_and_not_read_on() {
    let (base_url, server) = endless_server().await;
    let provider = provider(json!({
        "kind": "openai",
        "model": "gpt-4o-mini",
        "api_key": OPENAI_KEY,
        "base_url": base_url,
        "timeout_ms": 20_000,
    }));
    let error = provider.complete(&prompt()).await.expect_err("must fail");
    assert_eq!(
        error,
        LlmError::TooLarge {
            limit: MAX_RESPONSE_BYTES
        }
    );
    drop(provider);
    let written = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops once the client hangs up")
        .unwrap();
    assert!(written < 64 * 1024 * 1024, "{written}");
}

// --- OpenAI ------------------------------------------------------------------------------

#[tokio::test]
async fn openai_sends_the_prompt_and_reads_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {OPENAI_KEY}").as_str()))
        .and(body_json(json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": SYSTEM_WITH_PASSAGES},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "Hi! How can I help you today?"},
                {"role": "user", "content": "what time do you close today?"}
            ],
            "temperature": 0.3
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-A652Fhuqsr1kskKe5B63M0eiw3842",
            "object": "chat.completion",
            "created": 1_739_321_105,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "We close at 20:00 today. Anything else?", "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 112, "completion_tokens": 21, "total_tokens": 133},
            "service_tier": "default",
            "system_fingerprint": "fp_44added55e"
        })))
        .expect(1)
        .mount(&server)
        .await;

    let provider = openai(
        &server,
        json!({"name": "openai-main", "tokens_per_minute": 200_000}),
    );
    assert_eq!(
        (provider.name(), provider.model()),
        ("openai-main", "gpt-4o-mini")
    );
    assert_eq!(provider.budget().tokens_per_minute, Some(200_000));
    assert_eq!(provider.cost_micros(112, 21), 0);
    let completion = provider.complete(&prompt()).await.expect("answered");
    assert_eq!(
        completion,
        Completion {
            text: "We close at 20:00 today. Anything else?".to_owned(),
            model: "gpt-4o-mini-2024-07-18".to_owned(),
            prompt_tokens: 112,
            completion_tokens: 21,
        }
    );
}

#[tokio::test]
async fn openai_rate_limit_honours_retry_after_ms() {
    let error = openai_error_for(
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "120")
            .insert_header("retry-after", "1")
            .insert_header("x-ratelimit-reset-requests", "120ms")
            .insert_header("x-ratelimit-reset-tokens", "33ms")
            .set_body_json(json!({"error": {
                "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms.",
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }})),
    )
    .await;
    assert_eq!(
        error,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_millis(120))
        }
    );
}

#[tokio::test]
async fn openai_insufficient_quota_is_exhausted() {
    let error = openai_error_for(ResponseTemplate::new(429).set_body_json(json!({"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "param": null,
        "code": "insufficient_quota"
    }})))
    .await;
    assert_eq!(
        error,
        LlmError::QuotaExhausted(
            "insufficient_quota: You exceeded your current quota, please check your plan and billing details."
                .to_owned()
        )
    );
}

#[tokio::test]
async fn openai_server_errors_are_unavailable() {
    let error = openai_error_for(ResponseTemplate::new(503).set_body_json(json!({"error": {
        "message": "The server is overloaded or not ready yet.",
        "type": "server_error",
        "param": null,
        "code": null
    }})))
    .await;
    assert_eq!(
        error,
        LlmError::Unavailable(
            "http status 503: The server is overloaded or not ready yet.".to_owned()
        )
    );
}

#[tokio::test]
async fn openai_slow_answer_times_out() {
    let server = slow_server().await;
    let provider = openai(&server, json!({"timeout_ms": 200}));
    assert_eq!(provider.complete(&prompt()).await, Err(LlmError::Timeout));
}

#[tokio::test]
async fn an_unreachable_provider_is_unavailable() {
    let port = salesboy_testkit::free_port().expect("free port");
    let provider = provider(json!({
        "kind": "openai", "model": "m", "api_key": OPENAI_KEY, "base_url": format!("http://127.0.0.1:{port}/v1")
    }));
    let error = provider.complete(&prompt()).await.expect_err("refused");
    assert!(
        matches!(&error, LlmError::Unavailable(reason) if reason.starts_with("connection failed")),
        "{error:?}"
    );
    assert_no_key(&error);
}

// --- Configuration and factory -------------------------------------------------------------

#[test]
fn config_errors_name_the_index_and_field_never_the_key() {
    let list = json!([
        {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": GEMINI_KEY},
        {"kind": "openai", "api_key": OPENAI_KEY}
    ]);
    let error = validate_llm_config(&list).expect_err("model missing");
    assert_eq!(error, "llm[1].model: missing");

    let list = json!([{"kind": "openai", "model": "m", "api_key": OPENAI_KEY, "temperature": 0.2}]);
    let error = validate_llm_config(&list).expect_err("unknown field");
    assert!(
        error.starts_with("llm[0].temperature: unknown field"),
        "{error}"
    );
    assert!(!error.contains(OPENAI_KEY));

    let error =
        parse_llm_config(r#"[{"kind":"claude","model":"m","api_key":"k"}]"#).expect_err("bad kind");
    assert_eq!(
        (error.path.as_str(), error.to_string().as_str()),
        (
            "llm[0].kind",
            r#"llm[0].kind: expected "gemini" or "openai""#
        )
    );

    let error = parse_llm_config(
        r#"[{"kind":"openai","model":"m","api_key":"k","requests_per_minute":"ten"}]"#,
    )
    .expect_err("bad budget");
    assert_eq!(
        error.to_string(),
        "llm[0].requests_per_minute: expected a positive integer"
    );

    let error = parse_llm_config("[{").expect_err("not json");
    assert!(
        error.to_string().starts_with("llm: not valid json"),
        "{error}"
    );

    assert_eq!(validate_llm_config(&json!([])), Ok(()));
}

#[test]
fn redaction_hides_every_key() {
    let stored = json!([
        {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": GEMINI_KEY},
        {"kind": "openai", "model": "gpt-4o-mini", "api_key": OPENAI_KEY, "timeout_ms": 5000}
    ])
    .to_string();
    assert_eq!(
        redacted_llm_config(&stored),
        json!([
            {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": "[redacted]"},
            {"kind": "openai", "model": "gpt-4o-mini", "api_key": "[redacted]", "timeout_ms": 5000}
        ])
    );
    let configs = parse_llm_config(&stored).expect("valid");
    let debug = format!("{configs:?}");
    assert!(
        !debug.contains(GEMINI_KEY) && !debug.contains(OPENAI_KEY),
        "{debug}"
    );
}

#[test]
fn the_factory_prefers_the_tenant_list_then_the_node_default() {
    let client = http_client().expect("http client");
    let default =
        json!([{"kind": "gemini", "model": "gemini-2.5-flash", "api_key": GEMINI_KEY}]).to_string();
    let factory = HttpLlmFactory::try_new(client.clone(), Some(default)).expect("valid default");
    assert!(!format!("{factory:?}").contains(GEMINI_KEY));

    let own = json!([
        {"kind": "openai", "model": "gpt-4o-mini", "api_key": OPENAI_KEY},
        {"kind": "gemini", "model": "gemini-2.0-flash", "api_key": GEMINI_KEY, "name": "backup"}
    ])
    .to_string();
    let names = |providers: Vec<Arc<dyn LlmProvider>>| {
        providers
            .iter()
            .map(|provider| format!("{}/{}", provider.name(), provider.model()))
            .collect::<Vec<_>>()
    };
    let providers = factory
        .providers(&tenant(), Some(&own))
        .expect("tenant list");
    assert_eq!(
        names(providers),
        ["openai/gpt-4o-mini", "backup/gemini-2.0-flash"]
    );
    let providers = factory.providers(&tenant(), None).expect("default list");
    assert_eq!(names(providers), ["gemini/gemini-2.5-flash"]);
    assert_eq!(
        factory
            .providers(&tenant(), Some("[]"))
            .expect("offline")
            .len(),
        0
    );

    let error = factory
        .providers(
            &tenant(),
            Some(&json!([{"kind": "openai", "api_key": OPENAI_KEY}]).to_string()),
        )
        .err()
        .expect("invalid tenant list");
    assert_eq!(error, "llm[0].model: missing");

    let offline = HttpLlmFactory::new(client.clone(), None);
    assert_eq!(
        offline
            .providers(&tenant(), None)
            .expect("no providers")
            .len(),
        0
    );

    let broken =
        HttpLlmFactory::try_new(client, Some("{}".to_owned())).expect_err("invalid default");
    assert_eq!(broken.to_string(), "llm: expected an array of providers");
}
