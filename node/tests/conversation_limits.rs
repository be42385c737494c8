//! The limits on what one tenant's customers can make the gateway do (issue 11, item 5): a
//! bound on live conversations, a cap on a reply's batch and on its question, a reply pace.
//! Each is provoked, holds, and loses nothing: every message is answered once.

use salesboy_actors::store::{Direction, StoredMessage};
use salesboy_protocol::TenantId;
use salesboy_testkit::gateway::WAIT;
use salesboy_testkit::{Db, FakeLlm, FakeLlmOptions, Gateway, eventually, webhooks};
use serde_json::json;

const PHONE: &str = "106540352242922";

/// Posts `text` from `customer` as `wamid`.
async fn ask(gateway: &Gateway, customer: &str, wamid: &str, text: &str) {
    let status = gateway
        .post_webhook(&webhooks::text_message(PHONE, customer, wamid, text))
        .await;
    assert!(status.is_success(), "{status}");
}

/// The chat's bot replies.
fn replies(messages: &[StoredMessage]) -> Vec<&StoredMessage> {
    messages
        .iter()
        .filter(|m| m.direction == Direction::Outbound)
        .collect()
}

/// Every chat answered exactly once.
async fn answered_once_each(gateway: &Gateway, tenant: &TenantId, chats: &[String]) {
    for chat in chats {
        let messages = gateway.settled(tenant, chat).await;
        assert_eq!(replies(&messages).len(), 1, "chat {chat}: {messages:?}");
    }
    assert_eq!(gateway.whatsapp.sent_count(), chats.len());
}

#[tokio::test]
async fn a_tenant_at_its_bound_of_live_conversations_still_answers_every_chat() {
    let gateway = Gateway::start(Db::Sqlite, |config| config.tenant_max_conversations = 2).await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    let chats: Vec<String> = (0..8).map(|i| format!("1650555{i:04}")).collect();
    for (i, chat) in chats.iter().enumerate() {
        ask(&gateway, chat, &format!("wamid.{i}"), "When do you open?").await;
    }
    gateway
        .wait_for_sent(chats.len(), "every chat answered")
        .await;
    answered_once_each(&gateway, &tenant, &chats).await;
    let health = gateway.health().await;
    assert!(
        health["conversations"]
            .as_u64()
            .is_none_or(|live| live <= 2),
        "at most two live conversations: {health}"
    );
    gateway.node.stop().await;
}

#[tokio::test]
async fn a_long_batch_is_answered_by_several_capped_replies() {
    let gateway = Gateway::start(Db::Sqlite, |config| {
        config.conversation_max_batch_messages = 2;
        // The five messages arrive well within one pause of the customer's.
        config.debounce_ms = 2_000;
    })
    .await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    let customer = "16505550001";
    for i in 0..5 {
        ask(
            &gateway,
            customer,
            &format!("wamid.{i}"),
            &format!("question {i}"),
        )
        .await;
    }
    let messages = gateway.settled(&tenant, customer).await;
    // 2 + 2 + 1: every message answered, no reply answering more than two.
    assert_eq!(replies(&messages).len(), 3, "{messages:?}");
    gateway.node.stop().await;
}

#[tokio::test]
async fn a_flood_of_text_reaches_the_llm_cut_to_its_latest_characters() {
    let llm = FakeLlm::start(FakeLlmOptions::default()).await;
    let gateway = Gateway::start(Db::Sqlite, |config| {
        config.conversation_max_question_chars = 24;
    })
    .await;
    let providers = json!([{"kind": "openai", "model": "gpt-4o-mini", "api_key": "sk-test", "base_url": llm.openai_base_url()}]);
    let tenant = gateway.add_tenant("acme", PHONE, Some(providers)).await;
    let customer = "16505550002";
    let flood = format!("{} what are your hours", "spam ".repeat(2_000));
    ask(&gateway, customer, "wamid.flood", &flood).await;
    let sent = gateway.wait_for_sent(1, "the flood answered").await;
    // The fake LLM quotes the question it was given: only its end.
    assert!(
        sent[0].body.contains("what are your hours"),
        "{:?}",
        sent[0].body
    );
    assert!(
        sent[0].body.matches("spam").count() <= 1,
        "the LLM saw the whole flood: {:?}",
        sent[0].body
    );
    // The message itself is stored whole.
    let messages = gateway.settled(&tenant, customer).await;
    let stored = messages
        .iter()
        .find(|m| m.direction == Direction::Inbound)
        .expect("the inbound message");
    assert_eq!(stored.body.as_deref(), Some(flood.as_str()));
    gateway.node.stop().await;
}

#[tokio::test]
async fn replies_beyond_the_tenants_pace_wait_their_turn_and_all_go_out() {
    let gateway = Gateway::start(Db::Sqlite, |config| config.tenant_replies_per_second = 1).await;
    let tenant = gateway.add_tenant("acme", PHONE, None).await;
    let chats: Vec<String> = (0..4).map(|i| format!("1650666{i:04}")).collect();
    for (i, chat) in chats.iter().enumerate() {
        ask(&gateway, chat, &format!("wamid.p{i}"), "When do you open?").await;
    }
    gateway
        .wait_for_sent(chats.len(), "every chat answered")
        .await;
    answered_once_each(&gateway, &tenant, &chats).await;
    let paced = eventually(WAIT, || async {
        let metrics = gateway
            .http
            .get(format!("{}/metrics", gateway.admin_base))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .find(|line| line.starts_with("salesboy_replies_paced_total"))
            .map(str::to_owned)
    })
    .await;
    let count: f64 = paced
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a counter value");
    assert!(
        count >= 1.0,
        "replies past the first second's worth waited: {paced}"
    );
    gateway.node.stop().await;
}
