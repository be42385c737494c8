//! The single-node gateway end to end: signed webhook → persisted → conversation →
//! responder → reply at the (fake) WhatsApp Cloud API, on SQLite and on PostgreSQL.

use reqwest::StatusCode;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::ports::{Clock, SystemClock};
use salesboy_actors::store::{
    DeliveryStatus, Direction, NewOutbound, OutboundOrigin, StoredMessage,
};
use salesboy_node::config::Config;
use salesboy_protocol::{ChatId, TenantId};
use salesboy_testkit::gateway::{ADMIN_TOKEN, APP_SECRET, WAIT};
use salesboy_testkit::webhooks;
use salesboy_testkit::{Db, Gateway, eventually};
use salesboy_testkit::{FakeLlm, FakeLlmOptions};
use serde_json::json;

const PHONE: &str = "106540352242922";
const CUSTOMER: &str = "16505551234";
const HOURS: &str = "Our shop opens at 9am and closes at 6pm, Monday to Saturday.";
const RETURNS: &str = "Returns are free within 30 days with the receipt.";

/// A node on `db` (with `tweak`) serving the tenant `acme` on [`PHONE`], whose knowledge
/// base is one document of `passages`.
async fn acme(db: Db, tweak: impl FnOnce(&mut Config), passages: &[&str]) -> (Gateway, TenantId) {
    let gateway = Gateway::start(db, tweak).await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    gateway.add_knowledge(&tenant, "faq", passages).await;
    (gateway, tenant)
}

/// Posts `customer`'s `text` (as `wamid`) to [`PHONE`]; the webhook's status.
async fn ask(gateway: &Gateway, customer: &str, wamid: &str, text: &str) -> StatusCode {
    gateway
        .post_webhook(&webhooks::text_message(PHONE, customer, wamid, text))
        .await
}

/// How many of `messages` match.
fn count(messages: &[StoredMessage], matches: impl Fn(&StoredMessage) -> bool) -> usize {
    messages.iter().filter(|m| matches(m)).count()
}

/// The chat's outbound message; panics with `what` if there is none.
fn bot_reply<'m>(messages: &'m [StoredMessage], what: &str) -> &'m StoredMessage {
    messages
        .iter()
        .find(|m| m.direction == Direction::Outbound)
        .expect(what)
}

/// Pauses the bot in `chat` until `until_ms`, or resumes it (`None`), through the tenant.
async fn set_paused(gateway: &Gateway, tenant: &TenantId, chat: &ChatId, until_ms: Option<i64>) {
    let command = TenantCommand::SetPaused {
        chat: chat.clone(),
        until_ms,
    };
    gateway
        .node
        .node
        .deliver(tenant, command)
        .await
        .expect("the tenant sets the pause");
}

async fn offline_reply_answers_from_knowledge(db: Db) {
    let (gateway, tenant) = acme(db, |_| {}, &[HOURS, RETURNS]).await;

    let status = ask(&gateway, CUSTOMER, "wamid.q1", "When does the shop open?").await;
    assert_eq!(status, StatusCode::OK);

    let sent = gateway.wait_for_sent(1, "a reply").await;
    assert_eq!(sent[0].to, CUSTOMER);
    assert!(
        sent[0].body.contains("9am"),
        "reply should quote the opening hours: {:?}",
        sent[0].body
    );
    assert_eq!(sent[0].token, "token-acme");

    let messages = gateway.settled(&tenant, CUSTOMER).await;
    let outbound: Vec<_> = messages
        .iter()
        .filter(|m| m.direction == Direction::Outbound)
        .collect();
    assert_eq!(outbound.len(), 1, "one reply recorded: {messages:?}");
    assert_eq!(outbound[0].status, Some(DeliveryStatus::Sent));
    assert_eq!(outbound[0].origin, Some(OutboundOrigin::Bot));
    assert_eq!(
        outbound[0].wamid.as_ref().map(|w| w.as_str()),
        Some(sent[0].wamid.as_str())
    );
    assert_eq!(gateway.whatsapp.sent_count(), 1);

    // Meta reports delivery: the status moves forward; a late "sent" does not move it back.
    let wamid = sent[0].wamid.clone();
    for status in ["delivered", "sent"] {
        assert_eq!(
            gateway
                .post_webhook(&webhooks::status(PHONE, CUSTOMER, &wamid, status))
                .await,
            StatusCode::OK
        );
    }
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    let reply = bot_reply(&messages, "reply");
    assert_eq!(reply.status, Some(DeliveryStatus::Delivered));
    gateway.node.stop().await;
}

#[tokio::test]
async fn offline_reply_answers_from_knowledge_on_sqlite() {
    offline_reply_answers_from_knowledge(Db::Sqlite).await;
}

#[tokio::test]
async fn offline_reply_answers_from_knowledge_on_postgres() {
    offline_reply_answers_from_knowledge(Db::Postgres).await;
}

async fn retried_deliveries_get_one_reply(db: Db) {
    let (gateway, tenant) = acme(db, |_| {}, &[RETURNS]).await;

    let body = webhooks::text_message(PHONE, CUSTOMER, "wamid.retry", "Can I return shoes?");
    for _ in 0..3 {
        assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    }
    gateway.wait_for_sent(1, "a reply").await;
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(count(&messages, |m| m.direction == Direction::Inbound), 1);
    assert_eq!(count(&messages, |m| m.direction == Direction::Outbound), 1);
    assert_eq!(gateway.whatsapp.sent_count(), 1);
    gateway.node.stop().await;
}

#[tokio::test]
async fn retried_deliveries_get_one_reply_on_sqlite() {
    retried_deliveries_get_one_reply(Db::Sqlite).await;
}

#[tokio::test]
async fn retried_deliveries_get_one_reply_on_postgres() {
    retried_deliveries_get_one_reply(Db::Postgres).await;
}

#[tokio::test]
async fn a_burst_of_messages_gets_one_reply() {
    // The three posts take far less than the debounce, so they form one batch.
    let (gateway, tenant) = acme(Db::Sqlite, |c| c.debounce_ms = 1_000, &[HOURS]).await;

    for (i, text) in ["hi", "I have a question", "when do you open?"]
        .iter()
        .enumerate()
    {
        let body = webhooks::text_message(PHONE, CUSTOMER, &format!("wamid.burst{i}"), text);
        assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    }
    let sent = gateway.wait_for_sent(1, "a reply").await;
    assert!(sent[0].body.contains("9am"), "{:?}", sent[0].body);
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(count(&messages, |m| m.direction == Direction::Inbound), 3);
    assert_eq!(count(&messages, |m| m.direction == Direction::Outbound), 1);
    assert_eq!(gateway.whatsapp.sent_count(), 1);
    gateway.node.stop().await;
}

#[tokio::test]
async fn openai_compatible_provider_writes_the_reply_from_knowledge() {
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let providers = json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}]);
    let tenant = gateway.add_tenant("acme", PHONE, Some(providers)).await;
    gateway.add_knowledge(&tenant, "faq", &[HOURS]).await;

    ask(&gateway, CUSTOMER, "wamid.ai1", "When do you open?").await;
    let sent = gateway.wait_for_sent(1, "a reply").await;
    assert!(
        sent[0].body.contains("[fake-llm]"),
        "written by the llm: {:?}",
        sent[0].body
    );
    assert!(
        sent[0].body.contains("9am"),
        "grounded in the knowledge base: {:?}",
        sent[0].body
    );
    gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(gateway.whatsapp.sent_count(), 1);
    let usage = gateway
        .store()
        .llm_usage_totals(&tenant, 0)
        .await
        .expect("usage");
    assert_eq!(usage.requests, 1);
    assert!(usage.prompt_tokens > 0);
    gateway.node.stop().await;
}

#[tokio::test]
async fn gemini_rate_limited_falls_through_to_openai() {
    let gemini = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(429).set_body_raw(
            include_str!("../../protocol/tests/fixtures/llm/gemini_429_resource_exhausted.json"),
            "application/json",
        ))
        .mount(&gemini)
        .await;
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let providers = json!([
        {"kind": "gemini", "model": "gemini-2.0-flash", "api_key": "g-test", "base_url": format!("{}/v1beta", gemini.uri())},
        {"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()},
    ]);
    let tenant = gateway.add_tenant("acme", PHONE, Some(providers)).await;
    gateway.add_knowledge(&tenant, "faq", &[RETURNS]).await;

    ask(&gateway, CUSTOMER, "wamid.fall1", "Can I return them?").await;
    let sent = gateway.wait_for_sent(1, "a reply").await;
    assert!(sent[0].body.contains("[fake-llm]"), "{:?}", sent[0].body);
    assert_eq!(
        gemini.received_requests().await.map(|r| r.len()),
        Some(1),
        "gemini was tried first"
    );
    gateway.node.stop().await;
}

/// The same question from a new customer is answered from the response cache, until the
/// tenant's knowledge changes through the admin API: the tenant's responder learns the new
/// knowledge version (it no longer reads it per reply) and asks the LLM again.
#[tokio::test]
async fn a_knowledge_change_through_the_api_ends_answers_from_the_cache() {
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let providers = json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}]);
    let tenant = gateway.add_tenant("acme", PHONE, Some(providers)).await;
    gateway.add_knowledge(&tenant, "faq", &[HOURS]).await;
    let question = "When do you open?";
    let mut asked = 0;
    let mut ask_anew = async |customer: &str| {
        asked += 1;
        let wamid = format!("wamid.cache{asked}");
        ask(&gateway, customer, &wamid, question).await;
        gateway
            .wait_for_sent(asked, "every question answered")
            .await;
        llm.requests().total()
    };
    assert_eq!(ask_anew("16505550001").await, 1);
    assert_eq!(ask_anew("16505550002").await, 1, "answered from the cache");

    // Knowledge the question does not find: the prompt is the same, the version is not.
    add_gift_cards_through_the_api(&gateway).await;
    assert_eq!(
        ask_anew("16505550003").await,
        2,
        "the cache outlived the knowledge"
    );
    assert_eq!(
        ask_anew("16505550004").await,
        2,
        "answered from the cache again"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn paused_chat_gets_no_bot_reply_until_resumed() {
    let (gateway, tenant) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;
    let chat = ChatId::new(CUSTOMER).expect("chat");

    set_paused(&gateway, &tenant, &chat, Some(i64::MAX)).await;
    ask(&gateway, CUSTOMER, "wamid.p1", "When do you open?").await;
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(
        messages.len(),
        1,
        "only the customer's message: {messages:?}"
    );
    let snapshot = gateway
        .node
        .node
        .observe_conversation(&tenant, chat.clone())
        .await
        .expect("active conversation");
    assert_eq!(snapshot.dismissed, 1);
    assert_eq!(gateway.whatsapp.sent_count(), 0);

    set_paused(&gateway, &tenant, &chat, None).await;
    ask(&gateway, CUSTOMER, "wamid.p2", "Hello? When do you open?").await;
    let sent = gateway.wait_for_sent(1, "a reply after resuming").await;
    assert!(sent[0].body.contains("9am"));
    gateway.node.stop().await;
}

#[tokio::test]
async fn an_echo_from_the_owner_silences_the_bot_in_that_chat() {
    let (gateway, tenant) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;

    assert_eq!(
        gateway
            .post_webhook(&webhooks::echo(
                PHONE,
                CUSTOMER,
                "wamid.echo1",
                "Hi, it's Ana from the shop"
            ))
            .await,
        StatusCode::OK
    );
    let chat = ChatId::new(CUSTOMER).expect("chat");
    eventually(WAIT, || async {
        let conversation = gateway.store().conversation(&tenant, &chat).await.ok()??;
        conversation.bot_paused_until_ms.map(|_| ())
    })
    .await;
    ask(&gateway, CUSTOMER, "wamid.e2", "When do you open?").await;
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(
        count(&messages, |m| m.origin == Some(OutboundOrigin::Echo)),
        1
    );
    assert_eq!(
        count(&messages, |m| m.origin == Some(OutboundOrigin::Bot)),
        0
    );
    assert_eq!(gateway.whatsapp.sent_count(), 0);
    gateway.node.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_or_acknowledged_without_losing_good_messages() {
    let (gateway, tenant) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;
    let good = webhooks::text_message(PHONE, CUSTOMER, "wamid.good", "When do you open?");
    let raw = good.to_string().into_bytes();

    assert_eq!(
        gateway.post_raw(raw.clone(), None).await,
        StatusCode::UNAUTHORIZED,
        "missing signature"
    );
    assert_eq!(
        gateway
            .post_raw(raw.clone(), Some("sha256=00".into()))
            .await,
        StatusCode::UNAUTHORIZED,
        "malformed signature"
    );
    let mut tampered = raw.clone();
    tampered[10] ^= 1;
    let signature = salesboy_protocol::whatsapp::signature::sign(APP_SECRET.as_bytes(), &raw);
    assert_eq!(
        gateway.post_raw(tampered, Some(signature)).await,
        StatusCode::UNAUTHORIZED,
        "body changed after signing"
    );

    let malformed = b"{\"object\": \"whatsapp_business_account\", \"entry\": [".to_vec();
    let signature = salesboy_protocol::whatsapp::signature::sign(APP_SECRET.as_bytes(), &malformed);
    assert_eq!(
        gateway.post_raw(malformed, Some(signature)).await,
        StatusCode::BAD_REQUEST
    );

    // One body: an unknown number, an unsupported type, a status for an unknown wamid, and a
    // good message. Everything is acknowledged; the good message is answered.
    let mixed = webhooks::batch(&[
        webhooks::text_message("999999999", "15550009999", "wamid.stranger", "hello?"),
        webhooks::unsupported_message(PHONE, "16505550000", "wamid.odd"),
        webhooks::status(PHONE, CUSTOMER, "wamid.nobody", "delivered"),
        good,
    ]);
    assert_eq!(gateway.post_webhook(&mixed).await, StatusCode::OK);
    let sent = gateway
        .wait_for_sent(1, "the good message is answered")
        .await;
    assert_eq!(sent[0].to, CUSTOMER);
    gateway.settled(&tenant, "16505550000").await;
    gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(
        gateway.whatsapp.sent_count(),
        1,
        "nothing is sent for the unsupported message"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn handshake_echoes_the_challenge_only_with_the_right_token() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let url = |token: &str| {
        format!(
            "{}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            gateway.base
        )
    };
    let ok = gateway
        .http
        .get(url("verify-me"))
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.expect("body"), "1158201444");
    let refused = gateway
        .http
        .get(url("wrong"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    gateway.node.stop().await;
}

#[tokio::test]
async fn health_and_metrics_describe_the_node() {
    let (gateway, _) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;
    ask(&gateway, CUSTOMER, "wamid.h1", "open?").await;
    gateway.wait_for_sent(1, "a reply").await;

    let health = gateway.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["tenants"], 1);
    assert!(health["rss_bytes"].as_u64().unwrap_or(0) > 0);

    let metrics = gateway
        .http
        .get(format!("{}/metrics", gateway.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "salesboy_webhook_requests_total",
        "salesboy_messages_in_total",
        "salesboy_sends_total",
        "salesboy_reply_gateway_seconds",
        "salesboy_active_tenants",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // Writes per group commit are counted in buckets of counts, the latencies in seconds.
    assert!(
        metrics.contains(r#"salesboy_store_group_commit_writes_bucket{le="256"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains(r#"salesboy_store_group_commit_writes_bucket{le="0.0005"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"salesboy_reply_gateway_seconds_bucket{le="0.0005"}"#));
    gateway.node.stop().await;
}

#[tokio::test]
async fn capacity_refuses_new_tenants_but_keeps_existing_ones() {
    let gateway = Gateway::start(Db::Sqlite, |c| c.max_tenants = 1).await;
    let first = gateway.add_tenant("first", PHONE, None).await;
    let second = gateway.add_tenant("second", "106540352242923", None).await;
    gateway.add_knowledge(&first, "faq", &[HOURS]).await;
    gateway.add_knowledge(&second, "faq", &[HOURS]).await;

    ask(&gateway, CUSTOMER, "wamid.c1", "open?").await;
    gateway.wait_for_sent(1, "first tenant answered").await;
    let refused = gateway.node.node.activate(&second).await.unwrap_err();
    assert!(refused.to_string().contains("capacity"), "{refused}");

    // The refused tenant's message is still persisted (200), and the first keeps working.
    assert_eq!(
        gateway
            .post_webhook(&webhooks::text_message(
                "106540352242923",
                CUSTOMER,
                "wamid.c2",
                "open?"
            ))
            .await,
        StatusCode::OK
    );
    ask(&gateway, "16505559999", "wamid.c3", "open?").await;
    gateway.wait_for_sent(2, "first tenant still answers").await;
    let alerts = gateway.store().recent_events(10).await.expect("events");
    assert!(
        alerts.iter().any(|e| {
            e.kind == salesboy_protocol::subjects::EventKind::AlertRaised
                && e.detail["alert"] == "node_at_capacity"
        }),
        "{alerts:?}"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn webhooks_are_refused_while_no_app_secret_is_configured() {
    let gateway = Gateway::start(Db::Sqlite, |c| c.whatsapp_app_secret = None).await;
    let status = ask(&gateway, CUSTOMER, "wamid.x", "hi").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    gateway.node.stop().await;
}

#[tokio::test]
async fn a_refused_token_fails_the_session_until_the_tenant_is_updated() {
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let (gateway, tenant) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;
    gateway
        .whatsapp
        .set_options(salesboy_testkit::FakeWhatsAppOptions {
            reject_tokens: vec!["token-acme".into()],
            ..Default::default()
        });
    let mut events = gateway.node.events.subscribe();

    ask(&gateway, CUSTOMER, "wamid.auth1", "open?").await;
    let messages = gateway.settled(&tenant, CUSTOMER).await;
    let reply = bot_reply(&messages, "reply recorded");
    assert_eq!(reply.status, Some(DeliveryStatus::Failed));
    assert_eq!(
        reply.failure.as_ref().map(|f| f.title.as_str()),
        Some("auth_failed")
    );
    let failed_sends = gateway
        .whatsapp
        .failed_attempts()
        .into_iter()
        .filter(|a| a.operation == salesboy_testkit::FakeOperation::Send)
        .count();
    assert_eq!(failed_sends, 1, "tried once, not retried forever");
    let auth_failed = eventually(WAIT, || {
        let found = std::iter::from_fn(|| events.try_recv().ok()).any(|e| {
            e.kind == salesboy_protocol::subjects::EventKind::SessionStatus
                && e.detail["status"] == "auth_failed"
        });
        async move { found.then_some(()) }
    });
    auth_failed.await;
    // One `session_auth_failed` condition, listed by /api/health until the token is fixed.
    let raised = eventually(WAIT, || async {
        let events = gateway.store().recent_events(50).await.ok()?;
        let raised: Vec<_> = events
            .into_iter()
            .filter(|e| {
                e.kind == salesboy_protocol::subjects::EventKind::AlertRaised
                    && e.detail["alert"] == "session_auth_failed"
            })
            .collect();
        (!raised.is_empty()).then_some(raised)
    })
    .await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].detail["phone_number_id"], PHONE);
    assert_eq!(raised[0].tenant.as_ref(), Some(&tenant));
    let health = gateway.health().await;
    assert_eq!(
        health["alerts"][0]["alert"], "session_auth_failed",
        "{health}"
    );
    assert_eq!(health["alerts"][0]["tenant"], "acme", "{health}");

    // New knowledge reloads the tenant, but its number did not change: the session stays
    // refused, and the next reply fails as the first did, with no alert cleared meanwhile.
    add_gift_cards_through_the_api(&gateway).await;
    ask(&gateway, CUSTOMER, "wamid.auth1b", "open today?").await;
    eventually(WAIT, || async {
        let messages = gateway.settled(&tenant, CUSTOMER).await;
        let failed = count(&messages, |m| {
            m.status == Some(DeliveryStatus::Failed)
                && m.failure.as_ref().is_some_and(|f| f.title == "auth_failed")
        });
        (failed == 2).then_some(())
    })
    .await;
    let events = gateway.store().recent_events(100).await.expect("events");
    assert!(
        !events.iter().any(|e| {
            e.kind == salesboy_protocol::subjects::EventKind::AlertCleared
                && e.detail["alert"] == "session_auth_failed"
        }),
        "a knowledge change cleared the auth alert"
    );

    // The owner fixes the token and switches to an LLM through the admin API.
    switch_to_llm(&gateway, "token-fixed", &llm).await;

    ask(&gateway, CUSTOMER, "wamid.auth2", "when do you open?").await;
    let sent = gateway.wait_for_sent(1, "sent with the new token").await;
    assert_eq!(sent[0].token, "token-fixed");
    assert!(
        sent[0].body.contains("[fake-llm]"),
        "the new providers answer: {:?}",
        sent[0].body
    );
    let cleared = eventually(WAIT, || async {
        let events = gateway.store().recent_events(50).await.ok()?;
        let cleared: Vec<_> = events
            .into_iter()
            .filter(|e| {
                e.kind == salesboy_protocol::subjects::EventKind::AlertCleared
                    && e.detail["alert"] == "session_auth_failed"
            })
            .collect();
        (!cleared.is_empty()).then_some(cleared)
    })
    .await;
    assert_eq!(cleared.len(), 1, "cleared once: {cleared:?}");
    assert_eq!(gateway.health().await["alerts"], json!([]));
    gateway.node.stop().await;
}

/// Adds a document to acme's knowledge through the admin API, one that "When do you open?"
/// does not find.
async fn add_gift_cards_through_the_api(gateway: &Gateway) {
    let added = gateway
        .http
        .post(format!("{}/api/tenants/acme/knowledge", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "gifts", "text": "Gift cards are sold in every store."}))
        .send()
        .await
        .expect("admin request");
    assert_eq!(added.status(), StatusCode::CREATED);
}

/// Saves acme's number with `access_token` and the fake's OpenAI-compatible provider, through
/// the admin API.
async fn switch_to_llm(gateway: &Gateway, access_token: &str, llm: &FakeLlm) {
    let update = json!({
        "id": "acme", "phone_number_id": PHONE, "access_token": access_token,
        "llm": [{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}],
    });
    let response = gateway
        .http
        .post(format!("{}/api/tenants", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&update)
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_exhausted_llm_quota_is_answered_offline_under_one_alert() {
    use salesboy_protocol::subjects::EventKind;
    let llm = FakeLlm::start(FakeLlmOptions {
        quota_exhausted: true,
        ..FakeLlmOptions::default()
    })
    .await;
    let (gateway, _) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;
    switch_to_llm(&gateway, "token-acme", &llm).await;

    // Two questions while the quota is out: both answered offline, one alert (the provider
    // rests an hour; `alert_cleared` when it answers again is tested in the responder).
    ask(&gateway, CUSTOMER, "wamid.quota1", "when do you open?").await;
    ask(
        &gateway,
        "16505550103",
        "wamid.quota2",
        "are you open on monday?",
    )
    .await;
    let sent = gateway.wait_for_sent(2, "answered offline").await;
    assert!(
        sent.iter().all(|s| !s.body.contains("[fake-llm]")),
        "{sent:?}"
    );
    let alerts = eventually(WAIT, || async {
        let alerts: Vec<String> = gateway
            .store()
            .recent_events(50)
            .await
            .expect("events")
            .into_iter()
            .filter(|e| e.kind == EventKind::AlertRaised)
            .map(|e| e.detail["alert"].as_str().unwrap_or("").to_owned())
            .collect();
        (!alerts.is_empty()).then_some(alerts)
    })
    .await;
    assert_eq!(alerts, ["llm_quota_exhausted"]);
    let health = gateway.health().await;
    assert_eq!(
        health["alerts"][0]["alert"], "llm_quota_exhausted",
        "{health}"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_and_the_reply_goes_out_once() {
    use salesboy_testkit::{FakeOperation, FakeWhatsAppOptions};
    let (gateway, tenant) = acme(Db::Sqlite, |_| {}, &[HOURS]).await;

    for (options, code) in [
        (
            FakeWhatsAppOptions {
                pair_rate_error_rate: 1.0,
                ..Default::default()
            },
            131_056_i64,
        ),
        (
            FakeWhatsAppOptions {
                server_error_rate: 1.0,
                ..Default::default()
            },
            500,
        ),
    ] {
        gateway.whatsapp.clear();
        gateway.whatsapp.set_options(options);
        let customer = if code == 131_056 {
            "16505550101"
        } else {
            "16505550102"
        };
        ask(
            &gateway,
            customer,
            &format!("wamid.retry.{customer}"),
            "open?",
        )
        .await;
        // Meta refuses the first attempt...
        eventually(WAIT, || async {
            let refused = gateway.whatsapp.failed_attempts().into_iter().any(|a| {
                a.operation == FakeOperation::Send
                    && (a.code == code || i64::from(a.status) == code)
            });
            refused.then_some(())
        })
        .await;
        // ...then accepts: the reply goes out once, after a backoff.
        gateway.whatsapp.set_options(FakeWhatsAppOptions::default());
        let sent = gateway.wait_for_sent(1, "retried and sent").await;
        assert_eq!(sent[0].to, customer);
        let messages = gateway.settled(&tenant, customer).await;
        let reply = bot_reply(&messages, "reply");
        assert_eq!(reply.status, Some(DeliveryStatus::Sent));
        assert_eq!(gateway.whatsapp.sent_count(), 1);
    }
    gateway.node.stop().await;
}

/// A template recorded but never sent (the node died between recording and sending) is sent
/// by whichever node next activates the tenant, from the store, exactly as it was asked for.
#[tokio::test]
async fn a_pending_template_is_sent_from_the_store() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    let tenant = gateway.add_tenant("acme", "106540352242922", None).await;
    let pending =
        serde_json::json!({"template": {"name": "order_update", "language": {"code": "pt_BR"}}});
    let content = serde_json::from_value(pending).expect("content");
    gateway
        .store()
        .record_outbound(&NewOutbound {
            tenant: tenant.clone(),
            chat: CUSTOMER.parse().expect("chat"),
            origin: OutboundOrigin::Owner,
            wamid: None,
            kind: "template".to_owned(),
            body: Some("[template order_update]".to_owned()),
            // now: retention removes old messages
            created_ms: SystemClock.now_ms(),
            epoch: None,
            client_ref: None,
            content: Some(content),
        })
        .await
        .expect("recorded");
    let sent = gateway.wait_for_sent(1, "the pending template").await;
    assert_eq!(sent[0].request["type"], "template");
    assert_eq!(
        sent[0].request["template"],
        serde_json::json!({"name": "order_update", "language": {"code": "pt_BR"}})
    );

    gateway.node.stop().await;
}

// ----- issue 11: one bad item never blocks a delivery; Meta's timestamp decides -----

/// The second tenant's number.
const PHONE_B: &str = "207650352242933";
const CUSTOMER_B: &str = "16505559999";

/// The admin API's answer to `GET path`, as JSON.
async fn admin_get(gateway: &Gateway, path: &str) -> serde_json::Value {
    let response = gateway
        .http
        .get(format!("{}{path}", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.expect("json")
}

/// A signed body mixing an invalid id with valid messages for two tenants: 200, the valid
/// ones answered once, the invalid one recorded (listed by the API, `message_rejected`);
/// an item whose tenant cannot be told is recorded without one.
async fn one_bad_item_never_blocks_the_others(db: Db) {
    let (gateway, acme) = acme(db, |_| {}, &[HOURS]).await;
    let bravo = gateway.add_tenant("bravo", PHONE_B, None).await;
    gateway.add_knowledge(&bravo, "faq", &[RETURNS]).await;
    let mut bad_id = webhooks::text_message(PHONE, "16505550000", "wamid.bad", "hello?");
    bad_id["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = json!("wamid with spaces");
    let mut no_tenant = webhooks::text_message(PHONE_B, "16505550001", "wamid.lost", "hi");
    no_tenant["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("2076x");
    let body = webhooks::batch(&[
        webhooks::text_message(PHONE, CUSTOMER, "wamid.a1", "When do you open?"),
        bad_id,
        webhooks::text_message(PHONE_B, CUSTOMER_B, "wamid.b1", "Can I return shoes?"),
        no_tenant,
    ]);
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);

    let sent = gateway
        .wait_for_sent(2, "both tenants' valid messages are answered")
        .await;
    let mut to: Vec<&str> = sent.iter().map(|s| s.to.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, [CUSTOMER, CUSTOMER_B]);
    for message in &sent {
        let expected = if message.to == CUSTOMER {
            "token-acme"
        } else {
            "token-bravo"
        };
        assert_eq!(
            message.token, expected,
            "each sent from its tenant's number"
        );
    }
    gateway.settled(&acme, CUSTOMER).await;
    gateway.settled(&bravo, CUSTOMER_B).await;
    assert_eq!(
        gateway.whatsapp.sent_count(),
        2,
        "each answered once, nothing else sent"
    );

    // The invalid item: listed for its tenant, with its place and JSON; nothing for bravo.
    let listed = admin_get(&gateway, "/api/tenants/acme/webhook/rejected").await;
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["path"], "entry[1].changes[0].value.messages[0]");
    assert_eq!(listed[0]["phone_number_id"], PHONE);
    assert!(listed[0]["reason"].as_str().unwrap_or("").contains("wamid"));
    let raw: serde_json::Value =
        serde_json::from_str(listed[0]["raw"].as_str().expect("raw")).expect("raw json");
    assert_eq!(raw["id"], "wamid with spaces");
    let none = admin_get(&gateway, "/api/tenants/bravo/webhook/rejected").await;
    assert_eq!(none, json!([]));

    // Its event, written with it.
    let event = eventually(WAIT, || async {
        let events = gateway.store().recent_events(100).await.ok()?;
        events
            .into_iter()
            .find(|e| e.kind == salesboy_protocol::subjects::EventKind::MessageRejected)
    })
    .await;
    assert_eq!(event.tenant.as_ref(), Some(&acme));
    assert_eq!(event.detail["rejected_id"], listed[0]["id"]);
    assert_eq!(event.detail["path"], listed[0]["path"]);

    // The item whose number does not read is counted as of no tenant.
    let metrics = gateway
        .http
        .get(format!("{}/metrics", gateway.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("salesboy_webhook_rejected_items_total{tenant=\"unknown\"}"),
        "{metrics}"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn one_bad_item_never_blocks_the_others_on_sqlite() {
    one_bad_item_never_blocks_the_others(Db::Sqlite).await;
}

#[tokio::test]
async fn one_bad_item_never_blocks_the_others_on_postgres() {
    one_bad_item_never_blocks_the_others(Db::Postgres).await;
}

/// Messages the customer sent (Meta's `timestamp`) longer ago than the maximum age, or
/// than the 24-hour window, are stored but not answered, however late they arrive; the
/// window's alert is raised for the day-old one.
async fn an_old_or_replayed_delivery_is_stored_but_not_answered(db: Db) {
    let (gateway, tenant) = acme(db, |c| c.whatsapp_max_message_age_secs = 3_600, &[HOURS]).await;
    let now = webhooks::now_secs();
    let day_old = "16505550001";
    let hours_old = "16505550002";
    let body = webhooks::batch(&[
        webhooks::text_message_at(
            PHONE,
            day_old,
            "wamid.d",
            "When do you open?",
            now - 25 * 3600,
        ),
        webhooks::text_message_at(
            PHONE,
            hours_old,
            "wamid.h",
            "When do you open?",
            now - 2 * 3600,
        ),
    ]);
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    for chat in [day_old, hours_old] {
        let messages = gateway.settled(&tenant, chat).await;
        assert_eq!(
            count(&messages, |m| m.direction == Direction::Inbound),
            1,
            "{chat} stored"
        );
        assert_eq!(
            count(&messages, |m| m.direction == Direction::Outbound),
            0,
            "{chat}"
        );
        let sent_ms = messages[0].sent_ms.expect("Meta's timestamp kept");
        assert!(sent_ms < messages[0].created_ms - 3_600_000, "{chat}");
    }
    let alert = eventually(WAIT, || async {
        let events = gateway.store().recent_events(100).await.ok()?;
        events
            .into_iter()
            .find(|e| e.detail["alert"] == "outside_window")
    })
    .await;
    assert_eq!(alert.chat.as_ref().map(ChatId::as_str), Some(day_old));

    // The same node answers a message sent now.
    ask(&gateway, CUSTOMER, "wamid.now", "When do you open?").await;
    let sent = gateway
        .wait_for_sent(1, "a fresh message is answered")
        .await;
    assert_eq!(sent[0].to, CUSTOMER);
    gateway.settled(&tenant, CUSTOMER).await;
    assert_eq!(
        gateway.whatsapp.sent_count(),
        1,
        "nothing sent for the old ones"
    );
    let alerts = gateway.store().recent_events(100).await.expect("events");
    let window_alerts = alerts
        .iter()
        .filter(|e| e.detail["alert"] == "outside_window")
        .count();
    assert_eq!(
        window_alerts, 1,
        "no window alert for the hours-old message"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn an_old_or_replayed_delivery_is_stored_but_not_answered_on_sqlite() {
    an_old_or_replayed_delivery_is_stored_but_not_answered(Db::Sqlite).await;
}

#[tokio::test]
async fn an_old_or_replayed_delivery_is_stored_but_not_answered_on_postgres() {
    an_old_or_replayed_delivery_is_stored_but_not_answered(Db::Postgres).await;
}

/// The ids of the messages marked read so far.
fn marked_read(gateway: &Gateway) -> Vec<String> {
    gateway
        .whatsapp
        .mark_reads()
        .into_iter()
        .map(|read| {
            assert!(read.typing, "a read receipt shows the typing indicator");
            read.message_id
        })
        .collect()
}

/// Read receipts by policy: by default only before an LLM is asked (an offline answer goes
/// out without one), always, or never.
#[tokio::test]
async fn read_receipts_follow_the_policy() {
    use salesboy_actors::services::ReadReceipts;

    const LLM_PHONE: &str = "106540352242923";
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    for policy in [
        ReadReceipts::WhenSlow,
        ReadReceipts::Always,
        ReadReceipts::Never,
    ] {
        let (gateway, offline) = acme(
            Db::Sqlite,
            |config| config.whatsapp_read_receipts = policy,
            &[HOURS],
        )
        .await;
        let providers = json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}]);
        let with_llm = gateway.add_tenant("beta", LLM_PHONE, Some(providers)).await;

        ask(&gateway, CUSTOMER, "wamid.offline", "When do you open?").await;
        gateway
            .post_webhook(&webhooks::text_message(
                LLM_PHONE,
                CUSTOMER,
                "wamid.llm",
                "When do you open?",
            ))
            .await;
        gateway.wait_for_sent(2, "both answered").await;
        gateway.settled(&offline, CUSTOMER).await;
        gateway.settled(&with_llm, CUSTOMER).await;
        let expected: &[&str] = match policy {
            ReadReceipts::WhenSlow => &["wamid.llm"],
            ReadReceipts::Always => &["wamid.llm", "wamid.offline"],
            ReadReceipts::Never => &[],
        };
        let read = eventually(WAIT, || async {
            let mut read = marked_read(&gateway);
            read.sort();
            (read == expected).then_some(read)
        })
        .await;
        assert_eq!(read, expected, "{policy:?}");
        gateway.node.stop().await;
    }
}

/// A tenant's own read-receipt policy wins over the node's.
#[tokio::test]
async fn a_tenant_s_own_read_receipt_policy_wins_over_the_node_s() {
    use salesboy_actors::services::ReadReceipts;
    use salesboy_actors::store::NewTenant;

    let (gateway, tenant) = acme(
        Db::Sqlite,
        |config| config.whatsapp_read_receipts = ReadReceipts::Never,
        &[HOURS],
    )
    .await;
    let stored = gateway.store().tenant(&tenant).await.unwrap().unwrap();
    assert_eq!(stored.read_receipts, None, "the node's by default");
    gateway
        .store()
        .upsert_tenant(&NewTenant {
            id: stored.id,
            name: stored.name,
            system_prompt: stored.system_prompt,
            llm_config: stored.llm_config,
            llm_monthly_spend_cap_micros: stored.llm_monthly_spend_cap_micros,
            embedding_model: stored.embedding_model,
            engine: stored.engine,
            web_hygiene: stored.web_hygiene,
            read_receipts: Some(ReadReceipts::Always),
            created_ms: stored.created_ms,
        })
        .await
        .unwrap();

    ask(&gateway, CUSTOMER, "wamid.own", "When do you open?").await;
    gateway.wait_for_sent(1, "answered").await;
    gateway.settled(&tenant, CUSTOMER).await;
    let read = eventually(WAIT, || async {
        let read = marked_read(&gateway);
        (!read.is_empty()).then_some(read)
    })
    .await;
    assert_eq!(
        read,
        ["wamid.own"],
        "the tenant's `always`, not the node's `never`"
    );
    gateway.node.stop().await;
}
