//! The monthly LLM spend cap, provoked against a real node and the fake LLM: over the cap
//! every message is still answered (offline, the LLM not called) under one
//! `llm_spend_cap_reached` alert; a tenant's own cap overrides the node's, and raising it
//! clears the alert.

use reqwest::StatusCode;
use salesboy_protocol::subjects::EventKind;
use salesboy_testkit::gateway::{ADMIN_TOKEN, Gateway, WAIT};
use salesboy_testkit::{Db, FakeLlm, FakeLlmOptions, eventually, webhooks};
use serde_json::{Value, json};

const PHONE: &str = "100200300";

/// Sets the tenant's providers (the fake LLM at a dollar per token, so one call passes any
/// small cap) and, when given, its own cap; answers the saved tenant.
async fn configure(gateway: &Gateway, llm: &FakeLlm, cap: Option<Value>) -> Value {
    let mut request = json!({
        "id": "acme", "phone_number_id": PHONE, "access_token": "token-acme",
        "llm": [{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test",
                 "base_url": llm.openai_base_url(), "prompt_usd_per_million": 1000000.0}],
    });
    if let Some(cap) = cap {
        request["llm_monthly_spend_cap_micros"] = cap;
    }
    let response = gateway
        .http
        .post(format!("{}/api/tenants", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&request)
        .send()
        .await
        .expect("admin request");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

/// Asks a question as a new customer and waits for the answer; the answer's text.
async fn ask(gateway: &Gateway, n: usize) -> String {
    let customer = format!("1555000000{n}");
    let body = webhooks::text_message(
        PHONE,
        &customer,
        &format!("wamid.cap{n}"),
        &format!("question number {n}: when do you open?"),
    );
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    let sent = gateway.wait_for_sent(n, "every question answered").await;
    sent.into_iter()
        .find(|s| s.to == customer)
        .map(|s| s.body)
        .expect("an answer to this customer")
}

/// The `alert` of every event of `kind`, oldest first.
async fn alerts(gateway: &Gateway, kind: EventKind) -> Vec<Value> {
    let mut events = gateway.store().recent_events(100).await.expect("events");
    events.retain(|e| e.kind == kind);
    events.sort_by_key(|e| e.at_ms);
    events.into_iter().map(|e| e.detail).collect()
}

#[tokio::test]
async fn over_the_spend_cap_the_offline_responder_answers_under_one_alert() {
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    // The node's default cap: one micro-dollar, passed by the first call.
    let gateway = Gateway::start(Db::Sqlite, |config| {
        config.llm_monthly_spend_cap_micros = Some(1);
    })
    .await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    gateway
        .add_knowledge(&tenant, "faq", &["We open at 9 and close at 18."])
        .await;
    let saved = configure(&gateway, &llm, None).await;
    assert_eq!(saved["llm_monthly_spend_cap_micros"], Value::Null);

    assert!(
        ask(&gateway, 1).await.contains("[fake-llm]"),
        "under the cap"
    );
    assert_eq!(llm.requests().total(), 1);
    // Over the cap: answered offline, the LLM not asked, one alert for both.
    for n in 2..=3 {
        let answer = ask(&gateway, n).await;
        assert!(!answer.contains("[fake-llm]"), "{answer}");
    }
    assert_eq!(llm.requests().total(), 1, "no call over the cap");
    let raised = eventually(WAIT, || async {
        let raised = alerts(&gateway, EventKind::AlertRaised).await;
        (!raised.is_empty()).then_some(raised)
    })
    .await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["alert"], "llm_spend_cap_reached");
    assert_eq!(raised[0]["cap_micros"], 1);
    assert!(
        raised[0]["spent_micros"].as_i64().unwrap() >= 1,
        "{raised:?}"
    );

    // The tenant's own cap overrides the node's: the LLM answers again, the alert clears.
    let saved = configure(&gateway, &llm, Some(json!(1_000_000_000_000_i64))).await;
    assert_eq!(saved["llm_monthly_spend_cap_micros"], 1_000_000_000_000_i64);
    assert!(ask(&gateway, 4).await.contains("[fake-llm]"), "cap raised");
    let cleared = eventually(WAIT, || async {
        let cleared = alerts(&gateway, EventKind::AlertCleared).await;
        (!cleared.is_empty()).then_some(cleared)
    })
    .await;
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(cleared[0]["alert"], "llm_spend_cap_reached");

    // A negative cap is refused; null goes back to the node's default.
    let response = gateway
        .http
        .post(format!("{}/api/tenants", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({"id": "acme", "phone_number_id": PHONE, "access_token": "token-acme",
                      "llm_monthly_spend_cap_micros": -1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let saved = configure(&gateway, &llm, Some(Value::Null)).await;
    assert_eq!(saved["llm_monthly_spend_cap_micros"], Value::Null);
    assert!(
        !ask(&gateway, 5).await.contains("[fake-llm]"),
        "node cap again"
    );
    assert_eq!(llm.requests().total(), 2);
    gateway.node.stop().await;
}
