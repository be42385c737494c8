//! The test fakes against the real adapters: what [`FakeWhatsApp`] records and answers to
//! the Cloud API client, and what [`FakeLlm`] answers to the Gemini and OpenAI providers,
//! including injected failures and the hold/release gate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::ports::{
    LlmError, LlmProvider, LlmProviderFactory, Prompt, SendError, Turn, WhatsAppConnection,
    WhatsAppConnector,
};
use salesboy_actors::store::{AccessToken, WhatsAppNumber};
use salesboy_node::adapters::http_client;
use salesboy_node::adapters::llm::HttpLlmFactory;
use salesboy_node::adapters::whatsapp::CloudApiConnector;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use salesboy_testkit::{
    FAKE_LLM_MARKER, FailedAttempt, FakeLlm, FakeLlmOptions, FakeOperation, FakeWhatsApp,
    FakeWhatsAppOptions, LlmRequestCounts, StatusWebhookCounts, StatusWebhooks,
};
use serde_json::json;

const TOKEN: &str = "EAAG-fake-token";
const PHONE_NUMBER_ID: &str = "106540352242922";
const CUSTOMER: &str = "16505551234";
const WAIT: Duration = Duration::from_secs(5);

fn tenant() -> TenantId {
    TenantId::new("acme").expect("tenant id")
}

fn connection(fake: &FakeWhatsApp, token: &str, timeout: Duration) -> Arc<dyn WhatsAppConnection> {
    CloudApiConnector::new(http_client().expect("http client"), fake.base_url())
        .with_timeout(timeout)
        .connect(
            &tenant(),
            &WhatsAppNumber {
                phone_number_id: PhoneNumberId::new(PHONE_NUMBER_ID).expect("phone number id"),
                waba_id: None,
                access_token: AccessToken::new(token),
            },
        )
}

fn chat(id: &str) -> ChatId {
    ChatId::new(id).expect("chat id")
}

async fn send(connection: &Arc<dyn WhatsAppConnection>, body: &str) -> Result<Wamid, SendError> {
    connection.send_text(&chat(CUSTOMER), body, None).await
}

// --- FakeWhatsApp --------------------------------------------------------------------------

#[tokio::test]
async fn sends_and_mark_reads_are_recorded_with_their_token() {
    let fake = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
    assert!(fake.base_url().ends_with("/v21.0"), "{}", fake.base_url());
    let connection = connection(&fake, TOKEN, WAIT);

    let quoted = Wamid::new("wamid.inbound.1").expect("wamid");
    let wamid = connection
        .send_text(&chat(CUSTOMER), "Yes, size 42 is in stock.", Some(&quoted))
        .await
        .expect("sent");
    assert_eq!(wamid.as_str(), "wamid.fake.1");
    connection
        .mark_read(&quoted, true)
        .await
        .expect("marked read");
    connection
        .mark_read(&quoted, false)
        .await
        .expect("marked read");

    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    let message = &sent[0];
    assert_eq!(
        (
            message.phone_number_id.as_str(),
            message.to.as_str(),
            message.body.as_str(),
            message.reply_to.as_deref(),
            message.wamid.as_str(),
            message.token.as_str(),
        ),
        (
            PHONE_NUMBER_ID,
            CUSTOMER,
            "Yes, size 42 is in stock.",
            Some("wamid.inbound.1"),
            "wamid.fake.1",
            TOKEN
        )
    );
    assert_eq!(fake.sent_to(CUSTOMER), sent);
    assert!(fake.sent_to("5511999999999").is_empty());
    assert_eq!(fake.sent_count(), 1);

    let reads: Vec<_> = fake
        .mark_reads()
        .into_iter()
        .map(|read| {
            (
                read.phone_number_id,
                read.message_id,
                read.typing,
                read.token,
            )
        })
        .collect();
    let read = |typing| {
        (
            PHONE_NUMBER_ID.to_owned(),
            "wamid.inbound.1".to_owned(),
            typing,
            TOKEN.to_owned(),
        )
    };
    assert_eq!(reads, [read(true), read(false)]);
    assert!(fake.failed_attempts().is_empty());
}

#[tokio::test]
async fn concurrent_sends_get_unique_wamids_and_wake_the_waiter() {
    let fake = FakeWhatsApp::start(FakeWhatsAppOptions::default()).await;
    let connection = connection(&fake, TOKEN, WAIT);
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let connection = Arc::clone(&connection);
            tokio::spawn(async move { send(&connection, &format!("reply {i}")).await })
        })
        .collect();

    let sent = fake.wait_for_sent(50, WAIT).await.expect("all sent");
    assert_eq!(sent.len(), 50);
    let mut returned = HashSet::new();
    for handle in sends {
        returned.insert(handle.await.expect("task").expect("sent").to_string());
    }
    let recorded: HashSet<_> = sent.iter().map(|message| message.wamid.clone()).collect();
    assert_eq!(returned.len(), 50);
    assert_eq!(returned, recorded);
    let bodies: HashSet<_> = sent.iter().map(|message| message.body.clone()).collect();
    assert_eq!(bodies, (0..50).map(|i| format!("reply {i}")).collect());

    let error = fake
        .wait_for_sent(51, Duration::from_millis(50))
        .await
        .expect_err("only 50");
    assert!(error.starts_with("50 of 51 messages sent"), "{error}");

    fake.clear();
    assert_eq!((fake.sent_count(), fake.sent().len()), (0, 0));
}

#[tokio::test]
async fn injected_failures_are_classified_by_the_client() {
    let fake = FakeWhatsApp::start(FakeWhatsAppOptions {
        throughput_error_rate: 1.0,
        ..FakeWhatsAppOptions::default()
    })
    .await;
    let connection = connection(&fake, TOKEN, WAIT);
    assert_eq!(
        send(&connection, "a").await,
        Err(SendError::Throttled { retry_after: None })
    );

    fake.set_options(FakeWhatsAppOptions {
        pair_rate_error_rate: 1.0,
        ..FakeWhatsAppOptions::default()
    });
    assert_eq!(
        send(&connection, "b").await,
        Err(SendError::PairRateLimited)
    );
    // Pair-rate limits are about messages, not read receipts.
    connection
        .mark_read(&Wamid::new("wamid.in").expect("wamid"), false)
        .await
        .expect("read");

    fake.set_options(FakeWhatsAppOptions {
        server_error_rate: 1.0,
        ..FakeWhatsAppOptions::default()
    });
    assert!(matches!(
        send(&connection, "c").await,
        Err(SendError::Transient(_))
    ));

    fake.set_options(FakeWhatsAppOptions {
        reject_tokens: vec![TOKEN.to_owned()],
        ..FakeWhatsAppOptions::default()
    });
    assert_eq!(send(&connection, "d").await, Err(SendError::AuthFailed));
    let other = self::connection(&fake, "EAAG-other-token", WAIT);
    send(&other, "e").await.expect("another token is accepted");

    fake.set_options(FakeWhatsAppOptions::default());
    let too_long = "x".repeat(4097);
    assert!(matches!(
        send(&connection, &too_long).await,
        Err(SendError::Rejected { code: 100, .. })
    ));

    let sent: Vec<_> = fake
        .sent()
        .into_iter()
        .map(|message| message.body)
        .collect();
    assert_eq!(sent, ["e"]);
    let failed: Vec<_> = fake
        .failed_attempts()
        .into_iter()
        .map(
            |FailedAttempt {
                 operation,
                 status,
                 code,
                 to,
                 token,
                 ..
             }| (operation, status, code, to, token),
        )
        .collect();
    let attempt = |status, code| {
        (
            FakeOperation::Send,
            status,
            code,
            Some(CUSTOMER.to_owned()),
            Some(TOKEN.to_owned()),
        )
    };
    assert_eq!(
        failed,
        [
            attempt(400, 130_429),
            attempt(400, 131_056),
            attempt(500, 1),
            attempt(401, 190),
            attempt(400, 100)
        ]
    );
}

#[tokio::test]
async fn failure_draws_follow_the_seed() {
    let options = FakeWhatsAppOptions {
        throughput_error_rate: 0.3,
        pair_rate_error_rate: 0.2,
        seed: 42,
        ..FakeWhatsAppOptions::default()
    };
    let fake = FakeWhatsApp::start(options.clone()).await;
    let connection = connection(&fake, TOKEN, WAIT);
    let mut runs = Vec::new();
    for _ in 0..2 {
        fake.set_options(options.clone());
        let mut outcomes = Vec::new();
        for i in 0..200 {
            outcomes.push(match send(&connection, &format!("{i}")).await {
                Ok(_) => "ok",
                Err(error) => error.code(),
            });
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same failures");
    let count = |code| runs[0].iter().filter(|outcome| **outcome == code).count();
    // Expected 60 / 40 / 100 of 200.
    assert!(
        (35..=85).contains(&count("throttled")),
        "{}",
        count("throttled")
    );
    assert!(
        (20..=60).contains(&count("pair_rate_limited")),
        "{}",
        count("pair_rate_limited")
    );
    assert_eq!(
        count("ok") + count("throttled") + count("pair_rate_limited"),
        200
    );
    assert_eq!(fake.sent_count(), 2 * count("ok"));
}

#[tokio::test]
async fn latency_beyond_the_client_timeout_is_transient() {
    let fake = FakeWhatsApp::start(FakeWhatsAppOptions {
        latency: Duration::from_secs(2),
        ..FakeWhatsAppOptions::default()
    })
    .await;
    let connection = connection(&fake, TOKEN, Duration::from_millis(100));
    assert_eq!(
        send(&connection, "slow").await,
        Err(SendError::Transient("timed out after 100 ms".to_owned()))
    );
    fake.shutdown().await;
}

#[tokio::test]
async fn accepted_sends_are_followed_by_signed_status_webhooks() {
    use salesboy_protocol::whatsapp::inbound::WebhookEvent;
    use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, verify_signature};
    use salesboy_protocol::whatsapp::webhook::parse_webhook;

    let gateway = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&gateway)
        .await;
    let fake = FakeWhatsApp::start(FakeWhatsAppOptions {
        status_webhooks: Some(StatusWebhooks {
            app_secret: "app-secret".to_owned(),
            statuses: vec!["sent".to_owned(), "delivered".to_owned(), "read".to_owned()],
            delay: Duration::from_millis(1),
        }),
        ..FakeWhatsAppOptions::default()
    })
    .await;
    // The first target refuses connections: each status goes to the next one.
    fake.set_status_targets(vec![
        "http://127.0.0.1:9/webhooks/whatsapp".to_owned(),
        format!("{}/webhooks/whatsapp", gateway.uri()),
    ]);
    let wamid = send(&connection(&fake, TOKEN, WAIT), "hi")
        .await
        .expect("sent");

    let deadline = std::time::Instant::now() + WAIT;
    while fake.status_webhook_counts().delivered < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        fake.status_webhook_counts(),
        StatusWebhookCounts {
            delivered: 3,
            failed: 0
        }
    );
    let mut statuses = Vec::new();
    for request in gateway.received_requests().await.expect("recorded") {
        let signature = request
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok());
        assert!(verify_signature(b"app-secret", &request.body, signature).is_ok());
        for event in parse_webhook(&request.body).expect("a webhook").events() {
            let WebhookEvent::Status { status, .. } = event else {
                panic!("only statuses: {event:?}");
            };
            assert_eq!(status.wamid, wamid);
            statuses.push(status.status.as_str().to_owned());
        }
    }
    assert_eq!(statuses, ["sent", "delivered", "read"]);
}

// --- FakeLlm -------------------------------------------------------------------------------

fn prompt() -> Prompt {
    Prompt {
        system: "You sell shoes.".to_owned(),
        passages: vec!["Opening hours: Mon-Sat 9:00-20:00.".to_owned()],
        history: vec![Turn::customer("hello")],
        question: "when do you close?".to_owned(),
    }
}

/// A Gemini and an OpenAI provider, both pointing at the fake.
fn providers(fake: &FakeLlm) -> Vec<Arc<dyn LlmProvider>> {
    let config = json!([
        {"kind": "gemini", "model": "gemini-2.5-flash", "api_key": "gemini-key", "base_url": fake.gemini_base_url()},
        {"kind": "openai", "model": "gpt-4o-mini", "api_key": "openai-key", "base_url": fake.openai_base_url()}
    ])
    .to_string();
    HttpLlmFactory::new(http_client().expect("http client"), None)
        .providers(&tenant(), Some(&config))
        .expect("valid config")
}

#[tokio::test]
async fn both_apis_answer_through_the_real_providers() {
    let fake = FakeLlm::start(FakeLlmOptions::default()).await;
    let providers = providers(&fake);
    for provider in &providers {
        let completion = provider.complete(&prompt()).await.expect("answered");
        assert_eq!(
            completion.text,
            format!("{FAKE_LLM_MARKER} Opening hours: Mon-Sat 9:00-20:00.")
        );
        assert_eq!(completion.model, provider.model());
        // ⌈44 / 4⌉ completion tokens; the prompt is system + passages + history + question.
        assert_eq!(completion.completion_tokens, 12);
        assert!(
            completion.prompt_tokens >= 20,
            "{}",
            completion.prompt_tokens
        );
    }
    assert_eq!(
        fake.requests(),
        LlmRequestCounts {
            gemini: 1,
            openai: 1,
            answered: 2
        }
    );

    // Without passages the answer quotes the question.
    let mut bare = prompt();
    bare.passages.clear();
    let completion = providers[1].complete(&bare).await.expect("answered");
    assert_eq!(
        completion.text,
        format!("{FAKE_LLM_MARKER} when do you close?")
    );
}

#[tokio::test]
async fn tags_are_echoed_answers_padded_and_calls_recorded() {
    let fake = FakeLlm::start(FakeLlmOptions {
        echo_tags: Some("sbm".to_owned()),
        answer_chars: 120,
        latency_tail_mean: Duration::from_millis(1),
        ..FakeLlmOptions::default()
    })
    .await;
    let mut tagged = prompt();
    tagged.question = "sbm1a when do you close?\nsbm1b and on sunday?".to_owned();
    for provider in providers(&fake) {
        let completion = provider.complete(&tagged).await.expect("answered");
        assert!(
            completion
                .text
                .starts_with(&format!("{FAKE_LLM_MARKER} sbm1a sbm1b Opening hours")),
            "{}",
            completion.text
        );
        assert_eq!(completion.text.chars().count(), 120);
        assert_eq!(completion.completion_tokens, 30);
    }
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|call| call.tags == ["sbm1a", "sbm1b"] && call.status == 200)
    );
    let (prompt_tokens, completion_tokens) = fake.tokens();
    assert_eq!(completion_tokens, 60);
    assert!(prompt_tokens >= 40, "{prompt_tokens}");
}

#[tokio::test]
async fn injected_llm_failures_are_classified_by_the_providers() {
    let fake = FakeLlm::start(FakeLlmOptions {
        rate_limit_rate: 1.0,
        retry_after: Duration::from_millis(1500),
        ..FakeLlmOptions::default()
    })
    .await;
    let providers = providers(&fake);
    for provider in &providers {
        assert_eq!(
            provider.complete(&prompt()).await,
            Err(LlmError::RateLimited {
                retry_after: Some(Duration::from_millis(1500))
            }),
            "{}",
            provider.name()
        );
    }

    fake.set_options(FakeLlmOptions {
        quota_exhausted: true,
        ..FakeLlmOptions::default()
    });
    for provider in &providers {
        let error = provider.complete(&prompt()).await.expect_err("quota");
        assert!(
            matches!(error, LlmError::QuotaExhausted(_)),
            "{}: {error:?}",
            provider.name()
        );
    }

    fake.set_options(FakeLlmOptions {
        unavailable_rate: 1.0,
        ..FakeLlmOptions::default()
    });
    for provider in &providers {
        let error = provider.complete(&prompt()).await.expect_err("unavailable");
        assert!(
            matches!(error, LlmError::Unavailable(_)),
            "{}: {error:?}",
            provider.name()
        );
    }
    assert_eq!(
        fake.requests(),
        LlmRequestCounts {
            gemini: 3,
            openai: 3,
            answered: 0
        }
    );
}

#[tokio::test]
async fn requests_without_a_key_are_refused() {
    let fake = FakeLlm::start(FakeLlmOptions::default()).await;
    let client = http_client().expect("http client");
    let gemini = client
        .post(format!(
            "{}/models/gemini-2.5-flash:generateContent",
            fake.gemini_base_url()
        ))
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(gemini.status(), 403);
    let openai = client
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answered");
    assert_eq!(openai.status(), 401);
    assert_eq!(fake.requests().answered, 0);
}

#[tokio::test]
async fn held_requests_wait_until_released() {
    let fake = FakeLlm::start(FakeLlmOptions::default()).await;
    let providers = providers(&fake);
    fake.hold();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let provider = Arc::clone(&providers[i % 2]);
            tokio::spawn(async move { provider.complete(&prompt()).await })
        })
        .collect();
    fake.wait_for_held(4, WAIT).await.expect("four calls held");
    assert_eq!(fake.held(), 4);
    assert_eq!(fake.requests().answered, 0);
    assert!(calls.iter().all(|call| !call.is_finished()));

    fake.release();
    for call in calls {
        let completion = call.await.expect("task").expect("answered");
        assert!(completion.text.starts_with(FAKE_LLM_MARKER));
    }
    assert_eq!(fake.held(), 0);
    assert_eq!(fake.requests().answered, 4);
}

#[tokio::test]
async fn stopping_the_fake_answers_held_requests() {
    let fake = FakeLlm::start(FakeLlmOptions::default()).await;
    let providers = providers(&fake);
    fake.hold();
    let provider = Arc::clone(&providers[0]);
    let call = tokio::spawn(async move { provider.complete(&prompt()).await });
    fake.wait_for_held(1, WAIT).await.expect("held");
    fake.shutdown().await;
    let result = tokio::time::timeout(WAIT, call)
        .await
        .expect("not stuck")
        .expect("task");
    assert!(
        matches!(result, Err(LlmError::Unavailable(_))),
        "{result:?}"
    );
}
