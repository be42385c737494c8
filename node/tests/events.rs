//! The events stream (`docs/protocol.md`, "Events") from a plain JetStream client: raw
//! subjects and raw JSON, never the project's types, against real `salesboy serve`
//! processes on their own nats-server.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use salesboy_testkit::{ClusterSandbox, Db, eventually, webhooks};
use serde_json::Value;

/// How long a test waits for something to happen.
const WAIT: Duration = Duration::from_secs(30);

/// The stream every event is in, and its subjects: the contract, written out by hand.
const STREAM: &str = "SB_EVENTS";

/// The contract's fields of an event, no others.
const FIELDS: [&str; 7] = ["id", "v", "kind", "tenant", "chat", "at_ms", "detail"];

async fn sandbox(db: Db) -> ClusterSandbox {
    ClusterSandbox::builder()
        .nodes(1)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(db)
        .env("SALESBOY_DEBOUNCE_MS", "20")
        .start()
        .await
        .expect("sandbox")
}

/// One event as a consumer sees it: the JSON, and the `Nats-Msg-Id` it was published with.
#[derive(Debug, Clone)]
struct Received {
    json: Value,
    msg_id: String,
    subject: String,
}

impl Received {
    fn kind(&self) -> &str {
        self.json["kind"].as_str().unwrap_or_default()
    }

    fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or_default()
    }
}

/// A pull consumer of one tenant's events: durable `name` (created if missing), or a new
/// ephemeral one.
async fn tenant_consumer(
    js: &jetstream::Context,
    name: Option<&str>,
    tenant: &str,
) -> consumer::Consumer<consumer::pull::Config> {
    let stream = js
        .get_stream(STREAM)
        .await
        .expect("the events stream exists");
    let config = consumer::pull::Config {
        durable_name: name.map(str::to_owned),
        filter_subject: format!("sb.v1.evt.t.{tenant}.>"),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    match name {
        Some(name) => stream.get_or_create_consumer(name, config).await,
        None => stream.create_consumer(config).await,
    }
    .expect("consumer")
}

/// Fetches up to `max` events (what is there within a second), acknowledging the first
/// `ack` of them (confirmed by the server) and leaving the rest unacknowledged.
async fn fetch(
    consumer: &consumer::Consumer<consumer::pull::Config>,
    max: usize,
    ack: usize,
) -> Vec<Received> {
    let mut batch = consumer
        .fetch()
        .max_messages(max)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch");
    let mut received = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message.expect("message");
        let json: Value = serde_json::from_slice(&message.payload).expect("JSON event");
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        if received.len() < ack {
            message.double_ack().await.expect("ack");
        }
        received.push(Received {
            json,
            msg_id,
            subject: message.subject.to_string(),
        });
    }
    received
}

/// Every event of the tenant in the stream, through a fresh ephemeral consumer.
async fn all_events(js: &jetstream::Context, tenant: &str) -> Vec<Received> {
    let consumer = tenant_consumer(js, None, tenant).await;
    let mut all = Vec::new();
    loop {
        let batch = fetch(&consumer, 500, 500).await;
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

#[tokio::test]
async fn a_conversations_events_reach_a_durable_consumer_in_order_and_once() {
    let sandbox = sandbox(Db::Sqlite).await;
    let tenants = sandbox
        .seed_tenants(1, "We deliver across Nigeria.")
        .await
        .expect("seed");
    let (tenant, number) = &tenants[0];
    let chats = ["16505550101", "16505550102"];
    let mut sent = 0;
    for round in 0..3 {
        for chat in chats {
            let wamid = format!("wamid.{chat}.{round}");
            let body = webhooks::text_message(number.as_str(), chat, &wamid, "do you deliver?");
            assert_eq!(
                sandbox.post_webhook(0, &body).await,
                Ok(reqwest::StatusCode::OK)
            );
            sent += 1;
            sandbox
                .whatsapp()
                .wait_for_sent(sent, WAIT)
                .await
                .expect("the reply is sent before the next message");
        }
    }

    let client = async_nats::connect(sandbox.nats_url())
        .await
        .expect("client");
    let js = jetstream::new(client);
    // Every message in and every reply out: 12 events. Wait until they are all in.
    let expected = 2 * chats.len() * 3;
    let everything = eventually(WAIT, || {
        let js = js.clone();
        let tenant = tenant.to_string();
        async move {
            let all = all_events(&js, &tenant).await;
            let conversation = all
                .iter()
                .filter(|e| matches!(e.kind(), "message_received" | "reply_sent"))
                .count();
            (conversation >= expected).then_some(all)
        }
    })
    .await;

    for event in &everything {
        let fields: HashSet<&str> = event
            .json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, FIELDS.into_iter().collect(), "{event:?}");
        assert_eq!(event.json["v"], 1);
        assert_eq!(event.json["tenant"], tenant.as_str());
        assert_eq!(event.msg_id, event.id(), "published with Nats-Msg-Id = id");
        assert_eq!(
            event.subject,
            format!("sb.v1.evt.t.{tenant}.{}", event.kind()),
            "{event:?}"
        );
    }
    let ids: Vec<&str> = everything.iter().map(Received::id).collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no event twice"
    );
    // Per chat, in the order it happened: in, out, in, out, in, out.
    let mut per_chat: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    for event in &everything {
        if let Some(chat) = event.json["chat"].as_str() {
            let at = event.json["at_ms"].as_i64().expect("at_ms");
            per_chat.entry(chat).or_default().push((event.kind(), at));
        }
    }
    for chat in chats {
        let events: Vec<&str> = per_chat[chat]
            .iter()
            .map(|(kind, _)| *kind)
            .filter(|kind| matches!(*kind, "message_received" | "reply_sent"))
            .collect();
        assert_eq!(
            events,
            [
                "message_received",
                "reply_sent",
                "message_received",
                "reply_sent",
                "message_received",
                "reply_sent"
            ],
            "chat {chat}"
        );
        let times: Vec<i64> = per_chat[chat].iter().map(|(_, at)| *at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{chat}: {times:?}");
        let received: Vec<String> = everything
            .iter()
            .filter(|e| e.kind() == "message_received" && e.json["chat"] == chat)
            .map(|e| {
                e.json["detail"]["wamid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            received,
            (0..3)
                .map(|r| format!("wamid.{chat}.{r}"))
                .collect::<Vec<_>>()
        );
    }

    // A durable consumer that acknowledges half, goes away and comes back resumes where it
    // stopped: every event once, in the stream's order.
    let half = everything.len() / 2;
    let crm = tenant_consumer(&js, Some("crm"), tenant.as_str()).await;
    let first = fetch(&crm, half, half).await;
    assert_eq!(first.len(), half);
    drop(crm);
    drop(js);
    let client = async_nats::connect(sandbox.nats_url())
        .await
        .expect("client again");
    let js = jetstream::new(client);
    let crm = tenant_consumer(&js, Some("crm"), tenant.as_str()).await;
    let mut rest = Vec::new();
    while rest.len() < everything.len() - half {
        let batch = fetch(&crm, 500, 500).await;
        assert!(!batch.is_empty(), "the consumer stopped short: {rest:?}");
        rest.extend(batch);
    }
    let resumed: Vec<&str> = first.iter().chain(&rest).map(Received::id).collect();
    let all_ids: Vec<&str> = everything.iter().map(Received::id).collect();
    assert_eq!(
        resumed[..all_ids.len()],
        all_ids[..],
        "no gap, no duplicate"
    );
}

#[tokio::test]
async fn an_event_committed_by_a_node_killed_before_publishing_arrives_once() {
    let sandbox = sandbox(Db::Postgres).await;
    let tenants = sandbox
        .seed_tenants(1, "We deliver across Nigeria.")
        .await
        .expect("seed");
    let (tenant, number) = &tenants[0];
    // The node cannot reach NATS: it commits the message (and its event) but cannot publish.
    sandbox.cut_nats(0).expect("cut");
    let body = webhooks::text_message(number.as_str(), "16505550199", "wamid.kill.1", "hello");
    assert_eq!(
        sandbox.post_webhook(0, &body).await,
        Ok(reqwest::StatusCode::OK)
    );
    let unpublished = sandbox
        .store()
        .unpublished_events(100)
        .await
        .expect("outbox");
    assert!(
        unpublished
            .iter()
            .any(|e| e.event.kind.as_str() == "message_received"
                && e.event.detail["wamid"] == "wamid.kill.1"),
        "committed and not yet published: {unpublished:?}"
    );
    sandbox.kill(0).await.expect("kill -9");
    sandbox.heal(0).expect("heal");
    sandbox.restart(0).await.expect("restart");
    sandbox.wait_healthy(0, WAIT).await.expect("healthy");

    let client = async_nats::connect(sandbox.nats_url())
        .await
        .expect("client");
    let js = jetstream::new(client);
    let received = eventually(WAIT, || {
        let js = js.clone();
        let tenant = tenant.to_string();
        async move {
            let all = all_events(&js, &tenant).await;
            let found: Vec<Received> = all
                .into_iter()
                .filter(|e| {
                    e.kind() == "message_received" && e.json["detail"]["wamid"] == "wamid.kill.1"
                })
                .collect();
            (!found.is_empty()).then_some(found)
        }
    })
    .await;
    assert_eq!(received.len(), 1, "{received:?}");
    // And the restarted node answers it: its reply's event follows.
    sandbox
        .whatsapp()
        .wait_for_sent(1, WAIT)
        .await
        .expect("answered after the restart");
    let replies = eventually(WAIT, || {
        let js = js.clone();
        let tenant = tenant.to_string();
        async move {
            let all = all_events(&js, &tenant).await;
            let kinds: Vec<String> = all.iter().map(|e| e.kind().to_owned()).collect();
            kinds.iter().any(|k| k == "reply_sent").then_some(kinds)
        }
    })
    .await;
    assert_eq!(
        replies.iter().filter(|k| *k == "message_received").count(),
        1,
        "{replies:?}"
    );
}
