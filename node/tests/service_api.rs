//! The NATS service API (`docs/protocol.md`, "Service API") from a plain NATS client: raw
//! subjects and raw JSON, never the project's types, against a real nats-server and a real
//! node (SQLite, actors, fake Cloud API).

use std::sync::Arc;
use std::time::Duration;

use salesboy_node::bus::{Bus, NatsBus, NatsBusOptions};
use salesboy_testkit::{Db, Gateway, NatsServer, eventually};
use serde_json::{Value, json};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for something to happen.
const WAIT: Duration = Duration::from_secs(20);

const ACCESS_TOKEN: &str = "EAAG-secret-access-token-42";
const CUSTOMER: &str = "15551234567";

/// Every endpoint subject the service must list: the contract, written out by hand.
const ENDPOINTS: [&str; 22] = [
    "sb.v1.api.tenant.create",
    "sb.v1.api.tenant.list",
    "sb.v1.api.cluster.status",
    "sb.v1.api.t.*.tenant.get",
    "sb.v1.api.t.*.tenant.update",
    "sb.v1.api.t.*.session.status",
    "sb.v1.api.t.*.message.send",
    "sb.v1.api.t.*.bot.pause",
    "sb.v1.api.t.*.bot.resume",
    "sb.v1.api.t.*.knowledge.add",
    "sb.v1.api.t.*.knowledge.list",
    "sb.v1.api.t.*.knowledge.delete",
    "sb.v1.api.t.*.conversation.list",
    "sb.v1.api.t.*.conversation.messages",
    "sb.v1.api.t.*.usage.get",
    "sb.v1.api.t.*.session.start",
    "sb.v1.api.t.*.session.stop",
    "sb.v1.api.t.*.tenant.delete",
    "sb.v1.api.t.*.webhook.rejected",
    "sb.v1.api.t.*.session.qr",
    "sb.v1.api.t.*.session.pair_code",
    "sb.v1.api.t.*.session.logout",
];

/// A node on its own nats-server, and a plain client of that server.
struct Setup {
    gateway: Gateway,
    client: async_nats::Client,
    server: NatsServer,
}

async fn setup() -> Setup {
    let server = NatsServer::start().expect("nats-server");
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&server.url(), NatsBusOptions::default())
            .await
            .expect("connect the node"),
    );
    let gateway = Gateway::start_on(Db::Sqlite, Some(bus), |c| {
        c.failure_timeout_ms = 2_000;
    })
    .await;
    let client = async_nats::connect(server.url())
        .await
        .expect("connect the client");
    Setup {
        gateway,
        client,
        server,
    }
}

/// An answer: the error headers (code, message) if it is an error, and the JSON body.
#[derive(Debug)]
struct Answer {
    error: Option<(String, String)>,
    json: Value,
    raw: String,
}

impl Answer {
    /// The body of a success; panics with the answer otherwise.
    fn ok(self) -> Value {
        assert!(self.error.is_none(), "expected success, got {self:?}");
        self.json
    }

    /// Asserts an error answer with this HTTP-like code and snake_case code; its message.
    fn refused(&self, status: &str, code: &str) -> String {
        let (header_code, header_message) = self
            .error
            .clone()
            .unwrap_or_else(|| panic!("expected error {status}, got {self:?}"));
        assert_eq!(header_code, status, "{self:?}");
        assert_eq!(self.json["error"]["code"], code, "{self:?}");
        let message = self.json["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {}", self.raw))
            .to_owned();
        assert_eq!(header_message, message.replace('\n', " "), "{self:?}");
        message
    }
}

async fn request(client: &async_nats::Client, subject: &str, body: Option<Value>) -> Answer {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(REQUEST_TIMEOUT));
    let reply = client
        .send_request(subject.to_owned(), request)
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    let raw = String::from_utf8(reply.payload.to_vec()).expect("utf-8 answer");
    let json = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("not JSON ({e}): {raw}"));
    let error = reply.headers.as_ref().and_then(|headers| {
        let code = headers.get("Nats-Service-Error-Code")?.as_str().to_owned();
        let message = headers
            .get("Nats-Service-Error")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        Some((code, message))
    });
    Answer { error, json, raw }
}

fn create_acme() -> Value {
    json!({
        "id": "acme",
        "phone_number_id": "106540352242922",
        "access_token": ACCESS_TOKEN,
        "name": "Acme Shoes",
        "system_prompt": "You sell shoes.",
        "llm": [],
    })
}

#[tokio::test]
async fn ping_info_and_stats_answer_with_every_endpoint() {
    let s = setup().await;
    let version = env!("CARGO_PKG_VERSION");

    let ping = request(&s.client, "$SRV.PING.salesboy", None).await.ok();
    assert_eq!(ping["name"], "salesboy");
    assert_eq!(ping["version"], version);
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");

    let info = request(&s.client, "$SRV.INFO.salesboy", None).await.ok();
    assert_eq!(info["name"], "salesboy");
    assert_eq!(info["version"], version);
    let endpoints = info["endpoints"].as_array().expect("endpoints");
    let mut subjects: Vec<&str> = endpoints
        .iter()
        .map(|e| e["subject"].as_str().expect("subject"))
        .collect();
    subjects.sort_unstable();
    let mut expected = ENDPOINTS.to_vec();
    expected.sort_unstable();
    assert_eq!(subjects, expected);
    for endpoint in endpoints {
        assert_eq!(endpoint["queue_group"], "salesboy", "{endpoint}");
    }

    request(&s.client, "sb.v1.api.tenant.list", None).await.ok();
    // The service counts a request just after answering it: poll.
    let stats = eventually(WAIT, || async {
        let stats = request(&s.client, "$SRV.STATS.salesboy", None).await.ok();
        let list = stats["endpoints"]
            .as_array()?
            .iter()
            .find(|e| e["subject"] == "sb.v1.api.tenant.list")?
            .clone();
        (list["num_requests"] == 1).then_some(stats)
    })
    .await;
    assert_eq!(stats["name"], "salesboy");
    assert_eq!(stats["version"], version);
    assert_eq!(
        stats["endpoints"].as_array().map(Vec::len),
        Some(ENDPOINTS.len())
    );

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn every_command_answers_from_a_plain_client() {
    let s = setup().await;
    let c = &s.client;
    let t = |command: &str| format!("sb.v1.api.t.acme.{command}");

    let created = request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    assert_eq!(created["id"], "acme");
    assert_eq!(created["numbers"][0]["phone_number_id"], "106540352242922");
    let list = request(c, "sb.v1.api.tenant.list", Some(json!({})))
        .await
        .ok();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "Acme Shoes");

    let shown = request(c, &t("tenant.get"), None).await;
    assert!(!shown.raw.contains(ACCESS_TOKEN), "{}", shown.raw);
    assert_eq!(shown.ok()["system_prompt"], "You sell shoes.");
    let updated = request(c, &t("tenant.update"), Some(json!({"name": "Acme Boots"})))
        .await
        .ok();
    assert_eq!(updated["name"], "Acme Boots");
    assert_eq!(updated["system_prompt"], "You sell shoes.", "kept");

    let added = request(
        c,
        &t("knowledge.add"),
        Some(json!({"title": "Returns", "text": "Returns are free within 30 days."})),
    )
    .await
    .ok();
    let document = added["document_id"].as_i64().expect("document id");
    assert_eq!(added["chunks"], 1);
    let documents = request(c, &t("knowledge.list"), None).await.ok();
    assert_eq!(documents[0]["id"], document);
    assert_eq!(documents[0]["title"], "Returns");

    let sent = request(
        c,
        &t("message.send"),
        Some(json!({"to": CUSTOMER, "text": "Your order ships today."})),
    )
    .await
    .ok();
    assert!(sent["outbound_id"].as_i64().is_some(), "{sent}");
    request(
        c,
        &t("message.send"),
        Some(json!({"to": CUSTOMER, "text": "Tracking: 42"})),
    )
    .await
    .ok();
    let delivered = s.gateway.wait_for_sent(2, "the owner's messages").await;
    let mut bodies: Vec<(&str, &str, &str)> = delivered
        .iter()
        .map(|m| (m.to.as_str(), m.body.as_str(), m.token.as_str()))
        .collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        [
            (CUSTOMER, "Tracking: 42", ACCESS_TOKEN),
            (CUSTOMER, "Your order ships today.", ACCESS_TOKEN)
        ]
    );

    let paused = request(
        c,
        &t("bot.pause"),
        Some(json!({"chat": CUSTOMER, "minutes": 5})),
    )
    .await
    .ok();
    assert_eq!(paused["chat"], CUSTOMER);
    let until = paused["bot_paused_until_ms"].as_i64().expect("paused");
    let last = request(
        c,
        &t("conversation.messages"),
        Some(json!({"chat": CUSTOMER, "limit": 1})),
    )
    .await
    .ok();
    assert_eq!(last["bot_paused_until_ms"], until);
    assert_eq!(last["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(last["messages"][0]["body"], "Tracking: 42");
    let earlier = request(
        c,
        &t("conversation.messages"),
        Some(json!({"chat": CUSTOMER, "before": last["messages"][0]["id"]})),
    )
    .await
    .ok();
    assert_eq!(earlier["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(earlier["messages"][0]["body"], "Your order ships today.");
    assert_eq!(earlier["messages"][0]["origin"], "owner");
    let listed = request(c, &t("conversation.list"), None).await.ok();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["chat"], CUSTOMER);
    assert_eq!(listed[0]["bot_paused_until_ms"], until);
    let after = request(
        c,
        &t("conversation.list"),
        Some(json!({"after": CUSTOMER, "limit": 10})),
    )
    .await
    .ok();
    assert_eq!(after, json!([]));
    let resumed = request(c, &t("bot.resume"), Some(json!({"chat": CUSTOMER})))
        .await
        .ok();
    assert_eq!(resumed["bot_paused_until_ms"], Value::Null);

    let node_id = s.gateway.config.node_id.to_string();
    // The directory's cache follows the placement by a watch: poll.
    let status = eventually(WAIT, || async {
        let status = request(c, &t("session.status"), None).await.ok();
        (status["state"] == "active").then_some(status)
    })
    .await;
    assert_eq!(status["tenant"], "acme");
    assert_eq!(status["node"], node_id.as_str());
    assert!(status["epoch"].as_u64().is_some_and(|e| e > 0), "{status}");
    assert_eq!(status["session"]["status"], "connected", "{status}");

    let deleted = request(
        c,
        &t("knowledge.delete"),
        Some(json!({ "document_id": document })),
    )
    .await
    .ok();
    assert_eq!(deleted["document_id"], document);
    let documents = request(c, &t("knowledge.list"), None).await.ok();
    assert_eq!(documents, json!([]));

    let cluster = eventually(WAIT, || async {
        let cluster = request(c, "sb.v1.api.cluster.status", None).await.ok();
        (cluster["tenants"] == 1).then_some(cluster)
    })
    .await;
    assert_eq!(cluster["nodes"][0]["node_id"], node_id.as_str());

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn each_error_answers_its_code_and_changes_nothing() {
    let s = setup().await;
    let c = &s.client;
    let t = |command: &str| format!("sb.v1.api.t.acme.{command}");
    let create = "sb.v1.api.tenant.create";

    // 400: invalid input, refused with its reason, nothing saved.
    let mut bad = create_acme();
    bad["id"] = json!("a.b");
    let message = request(c, create, Some(bad))
        .await
        .refused("400", "invalid_field");
    assert!(
        message.starts_with("id: tenant id contains '.'"),
        "{message}"
    );
    let mut bad = create_acme();
    bad["llm"] = json!([{"kind": "gemini"}]);
    let message = request(c, create, Some(bad))
        .await
        .refused("400", "malformed_request");
    assert!(message.contains("llm[0]"), "{message}");
    let message = request(c, create, Some(json!({"id": "acme"})))
        .await
        .refused("400", "invalid_field");
    assert_eq!(
        message,
        "phone_number_id: missing (required by the cloud_api engine)"
    );
    let answer = request(c, "sb.v1.api.tenant.list", Some(json!({"all": true}))).await;
    assert!(
        answer
            .refused("400", "malformed_request")
            .contains("unknown field `all`")
    );
    assert_eq!(
        request(c, "sb.v1.api.tenant.list", None).await.ok(),
        json!([]),
        "nothing was half-saved"
    );

    // 404: unknown tenant, on every tenant command.
    let unknown = [
        ("tenant.get", json!({})),
        ("tenant.update", json!({"name": "x"})),
        ("session.status", json!({})),
        ("message.send", json!({"to": CUSTOMER, "text": "hi"})),
        ("bot.pause", json!({"chat": CUSTOMER})),
        ("bot.resume", json!({"chat": CUSTOMER})),
        ("knowledge.add", json!({"title": "t", "text": "some text"})),
        ("knowledge.list", json!({})),
        ("knowledge.delete", json!({"document_id": 1})),
        ("conversation.list", json!({})),
        ("conversation.messages", json!({"chat": CUSTOMER})),
        ("usage.get", json!({})),
        ("session.start", json!({})),
        ("session.stop", json!({})),
        ("tenant.delete", json!({})),
        ("webhook.rejected", json!({})),
        ("session.qr", json!({})),
        ("session.pair_code", json!({"phone": "2348012345678"})),
        ("session.logout", json!({})),
    ];
    for (command, body) in unknown {
        let subject = format!("sb.v1.api.t.nope.{command}");
        let message = request(c, &subject, Some(body))
            .await
            .refused("404", "unknown_tenant");
        assert_eq!(message, "unknown tenant nope", "{command}");
    }
    let message = request(c, "sb.v1.api.t.no~pe.tenant.get", None)
        .await
        .refused("400", "invalid_field");
    assert!(message.starts_with("tenant: "), "{message}");

    // 409: an existing tenant, a number owned by another tenant.
    request(c, create, Some(create_acme())).await.ok();
    let message = request(c, create, Some(create_acme()))
        .await
        .refused("409", "tenant_exists");
    assert_eq!(message, "id: tenant acme already exists");
    let mut other = create_acme();
    other["id"] = json!("other");
    let message = request(c, create, Some(other))
        .await
        .refused("409", "number_taken");
    assert!(
        message.contains("already belongs to tenant acme"),
        "{message}"
    );

    // 400 on a known tenant: each refusal names its field and sends or changes nothing.
    let refusals = [
        (
            "message.send",
            json!({"to": CUSTOMER, "text": " "}),
            "text: ",
        ),
        ("message.send", json!({"to": "1.5", "text": "hi"}), "to: "),
        (
            "message.send",
            json!({"to": CUSTOMER}),
            "exactly one of text, template, interactive, image, document is required, got none",
        ),
        (
            "bot.pause",
            json!({"chat": CUSTOMER, "minutes": 0}),
            "minutes: must be at least 1",
        ),
        (
            "bot.pause",
            json!({"chat": CUSTOMER, "minutes": "ten"}),
            "invalid json body: minutes: ",
        ),
        (
            "conversation.messages",
            json!({"chat": CUSTOMER, "limit": 0}),
            "limit: ",
        ),
        ("conversation.list", json!({"limit": 1001}), "limit: "),
        ("webhook.rejected", json!({"limit": 0}), "limit: "),
        ("conversation.list", json!({"after": "a.b"}), "after: "),
        (
            "usage.get",
            json!({"month": "2026-13"}),
            "month: expected a month as YYYY-MM",
        ),
        (
            "usage.get",
            json!({"month": 202601}),
            "invalid json body: month: invalid type",
        ),
        (
            "knowledge.add",
            json!({"title": " ", "text": "x"}),
            "title: must not be empty",
        ),
        (
            "tenant.update",
            json!({"phone_number_id": "123"}),
            "access_token: missing",
        ),
        (
            "tenant.update",
            json!({"name": ""}),
            "name: must not be empty",
        ),
    ];
    for (command, body, reason) in refusals {
        let answer = request(c, &t(command), Some(body.clone())).await;
        let status = answer.error.as_ref().map(|(code, _)| code.clone());
        assert_eq!(
            status.as_deref(),
            Some("400"),
            "{command} {body}: {answer:?}"
        );
        let message = answer.json["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(reason), "{command} {body}: {message}");
    }
    let garbage = async_nats::Request::new()
        .payload("{not json".into())
        .timeout(Some(REQUEST_TIMEOUT));
    let reply = c
        .send_request(t("message.send"), garbage)
        .await
        .expect("an answer");
    let code = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error-Code"))
        .map(|v| v.as_str().to_owned());
    assert_eq!(code.as_deref(), Some("400"));

    // 404: an unknown document of a known tenant.
    let message = request(c, &t("knowledge.delete"), Some(json!({"document_id": 99})))
        .await
        .refused("404", "unknown_document");
    assert_eq!(message, "unknown knowledge document 99 of tenant acme");

    let tenant = request(c, &t("tenant.get"), None).await.ok();
    assert_eq!(
        tenant["name"], "Acme Shoes",
        "no refused update was applied"
    );
    assert_eq!(tenant["knowledge_version"], 0);
    assert!(
        s.gateway.whatsapp.sent().is_empty(),
        "no refused send was sent"
    );

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn a_client_ref_sends_once_and_answers_the_same() {
    let s = setup().await;
    let c = &s.client;
    let send = "sb.v1.api.t.acme.message.send";
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    let body =
        json!({"to": CUSTOMER, "text": "Your order ships today.", "client_ref": "order-1042"});
    let first = request(c, send, Some(body.clone())).await.ok();
    let again = request(c, send, Some(body.clone())).await.ok();
    assert!(first["outbound_id"].as_i64().is_some(), "{first}");
    assert_eq!(again, first);
    // racing: eight requests with a new key at once, one message
    let racing =
        json!({"to": CUSTOMER, "text": "Tracking: 42", "client_ref": "order-1042-tracking"});
    let answers =
        futures::future::join_all((0..8).map(|_| request(c, send, Some(racing.clone())))).await;
    let ids: Vec<Value> = answers.into_iter().map(|a| a.ok()).collect();
    assert!(ids.iter().all(|a| *a == ids[0]), "{ids:?}");
    assert_ne!(ids[0], first);

    // A last message without a key: once it is out, a second copy of either keyed one
    // (queued before it) would be out too.
    let last = json!({"to": CUSTOMER, "text": "Thank you!"});
    request(c, send, Some(last)).await.ok();
    s.gateway
        .wait_for_sent(3, "one message per client_ref, then the last one")
        .await;
    let mut sent: Vec<String> = s
        .gateway
        .whatsapp
        .sent()
        .iter()
        .map(|m| m.body.clone())
        .collect();
    sent.sort_unstable();
    assert_eq!(
        sent,
        ["Thank you!", "Tracking: 42", "Your order ships today."]
    );
    let log = request(
        c,
        "sb.v1.api.t.acme.conversation.messages",
        Some(json!({"chat": CUSTOMER})),
    )
    .await
    .ok();
    assert_eq!(log["messages"].as_array().map(Vec::len), Some(3), "{log}");

    let long = "x".repeat(129);
    let message = request(
        c,
        send,
        Some(json!({"to": CUSTOMER, "text": "hi", "client_ref": long})),
    )
    .await
    .refused("400", "invalid_field");
    assert!(
        message.starts_with("client_ref: 129 characters"),
        "{message}"
    );

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn message_send_sends_every_kind_in_the_cloud_api_format() {
    let s = setup().await;
    let c = &s.client;
    let send = "sb.v1.api.t.acme.message.send";
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    let template = json!({"to": CUSTOMER, "template": {
        "name": "order_update",
        "language": "en_US",
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Kerry"}]}],
    }});
    let buttons = json!({"to": CUSTOMER, "interactive": {
        "header": "Sizes",
        "body": "Which size do you wear?",
        "footer": "Acme Shoes",
        "buttons": [{"id": "s42", "title": "42"}, {"id": "s43", "title": "43"}],
    }});
    let list = json!({"to": CUSTOMER, "interactive": {
        "body": "Pick a colour",
        "list": {"button": "Colours", "sections": [
            {"title": "Dark", "rows": [{"id": "black", "title": "Black", "description": "classic"}]},
            {"title": "Light", "rows": [{"id": "white", "title": "White"}]},
        ]},
    }});
    let image = json!({"to": CUSTOMER, "image": {
        "link": "https://cdn.example.com/blue-sneakers.jpg", "caption": "The blue ones",
    }});
    let document = json!({"to": CUSTOMER, "client_ref": "invoice-1042", "document": {
        "link": "https://cdn.example.com/invoice-1042.pdf", "filename": "invoice-1042.pdf",
    }});
    let mut ids = Vec::new();
    for body in [&template, &buttons, &list, &image, &document] {
        let sent = request(c, send, Some(body.clone())).await.ok();
        ids.push(sent["outbound_id"].as_i64().expect("an outbound id"));
    }
    let again = request(c, send, Some(document.clone())).await.ok();
    assert_eq!(
        again["outbound_id"], ids[4],
        "the same client_ref sends once"
    );

    let sent = s.gateway.wait_for_sent(5, "one message of each kind").await;
    let wire = |kind: &str| {
        let found: Vec<&Value> = sent
            .iter()
            .map(|m| &m.request)
            .filter(|r| r["type"] == kind)
            .collect();
        found
    };
    for request in sent.iter().map(|m| &m.request) {
        assert_eq!(request["messaging_product"], "whatsapp", "{request}");
        assert_eq!(request["to"], CUSTOMER, "{request}");
        assert_eq!(request["text"], Value::Null, "{request}");
    }
    assert_eq!(
        wire("template")[0]["template"],
        json!({"name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "Kerry"}]}]})
    );
    let interactive = wire("interactive");
    assert_eq!(interactive.len(), 2);
    let by_type = |t: &str| {
        interactive
            .iter()
            .find(|r| r["interactive"]["type"] == t)
            .map(|r| r["interactive"].clone())
            .unwrap_or_else(|| panic!("no {t} in {interactive:?}"))
    };
    assert_eq!(
        by_type("button"),
        json!({"type": "button",
        "header": {"type": "text", "text": "Sizes"},
        "body": {"text": "Which size do you wear?"},
        "footer": {"text": "Acme Shoes"},
        "action": {"buttons": [
            {"type": "reply", "reply": {"id": "s42", "title": "42"}},
            {"type": "reply", "reply": {"id": "s43", "title": "43"}},
        ]}})
    );
    assert_eq!(
        by_type("list"),
        json!({"type": "list",
        "body": {"text": "Pick a colour"},
        "action": {"button": "Colours", "sections": [
            {"title": "Dark", "rows": [{"id": "black", "title": "Black", "description": "classic"}]},
            {"title": "Light", "rows": [{"id": "white", "title": "White"}]},
        ]}})
    );
    assert_eq!(
        wire("image")[0]["image"],
        json!({"link": "https://cdn.example.com/blue-sneakers.jpg", "caption": "The blue ones"})
    );
    assert_eq!(
        wire("document")[0]["document"],
        json!({"link": "https://cdn.example.com/invoice-1042.pdf", "filename": "invoice-1042.pdf"})
    );

    // The chat log shows each one's kind and readable text.
    let log = request(
        c,
        "sb.v1.api.t.acme.conversation.messages",
        Some(json!({"chat": CUSTOMER})),
    )
    .await
    .ok();
    let shown: Vec<(&str, &str, &str)> = log["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap_or_default(),
                m["body"].as_str().unwrap_or_default(),
                m["origin"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("template", "[template order_update]", "owner"),
            ("interactive", "Which size do you wear?", "owner"),
            ("interactive", "Pick a colour", "owner"),
            ("image", "The blue ones", "owner"),
            ("document", "[document invoice-1042.pdf]", "owner"),
        ]
    );

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn message_send_refuses_content_beyond_the_cloud_api_limits() {
    let s = setup().await;
    let c = &s.client;
    let send = "sb.v1.api.t.acme.message.send";
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    let button = |i: usize| json!({"id": format!("b{i}"), "title": format!("Button {i}")});
    let rows: Vec<Value> = (0..11)
        .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
        .collect();
    let refusals = [
        (
            json!({"to": CUSTOMER}),
            "malformed_request",
            "exactly one of text, template, interactive, image, document is required, got none",
        ),
        (
            json!({"to": CUSTOMER, "text": "hi", "image": {"link": "https://x.example/a.png"}}),
            "malformed_request",
            "exactly one of text, template, interactive, image, document is required, got text, image",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick",
                "buttons": (0..4).map(button).collect::<Vec<_>>()}}),
            "invalid_field",
            "interactive.buttons: 4 buttons, 1 to 3 are allowed",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick",
                "buttons": [{"id": "a", "title": "A title that is too long"}]}}),
            "invalid_field",
            "interactive.buttons.title: 24 characters, at most 20 are allowed",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick",
                "buttons": [{"id": "a", "title": "Same"}, {"id": "a", "title": "Other"}]}}),
            "invalid_field",
            "interactive.buttons.id: \"a\" is used twice",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick",
                "list": {"button": "Rows", "sections": [{"rows": rows}]}}}),
            "invalid_field",
            "interactive.list.sections.rows: 11 rows in all, 1 to 10 are allowed",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick", "buttons": [button(0)],
                "list": {"button": "Rows", "sections": [{"rows": [{"id": "r", "title": "R"}]}]}}}),
            "invalid_field",
            "interactive: exactly one of buttons and list is required",
        ),
        (
            json!({"to": CUSTOMER, "interactive": {"body": "Pick", "buttons": [button(0)], "colour": "red"}}),
            "malformed_request",
            "invalid json body: interactive.colour: unknown field `colour`",
        ),
        (
            json!({"to": CUSTOMER, "image": {"link": "http://cdn.example.com/a.png"}}),
            "invalid_field",
            "image.link: must be an https URL, got scheme \"http\"",
        ),
        (
            json!({"to": CUSTOMER, "document": {"link": "invoice.pdf"}}),
            "invalid_field",
            "document.link: not a URL",
        ),
        (
            json!({"to": CUSTOMER, "template": {"name": "order_update", "language": "English"}}),
            "invalid_field",
            "template.language: expected a language code",
        ),
        (
            json!({"to": CUSTOMER, "template": {"name": "Order Update", "language": "en_US"}}),
            "invalid_field",
            "template.name: only lowercase letters, digits and _ are allowed",
        ),
        (
            json!({"to": CUSTOMER, "template": {"name": "order_update"}}),
            "malformed_request",
            "invalid json body: template: missing field `language`",
        ),
    ];
    for (body, code, reason) in refusals {
        let message = request(c, send, Some(body.clone()))
            .await
            .refused("400", code);
        assert!(message.starts_with(reason), "{body}: {message}");
    }
    // A last text: once it is out, any refused send would have gone before it.
    request(c, send, Some(json!({"to": CUSTOMER, "text": "Thanks!"})))
        .await
        .ok();
    let sent = s.gateway.wait_for_sent(1, "the text").await;
    assert_eq!(sent.len(), 1, "nothing refused was sent: {sent:?}");
    let log = request(
        c,
        "sb.v1.api.t.acme.conversation.messages",
        Some(json!({"chat": CUSTOMER})),
    )
    .await
    .ok();
    assert_eq!(
        log["messages"].as_array().map(Vec::len),
        Some(1),
        "nothing refused was recorded: {log}"
    );

    s.gateway.node.stop().await;
}

/// `session.stop` stores the stop and stops the tenant: owner sends and pauses are refused,
/// a customer's message is persisted but not answered; `session.start` runs it again and the
/// message is answered then.
#[tokio::test]
async fn a_stopped_session_neither_sends_nor_answers_until_started() {
    let s = setup().await;
    let c = &s.client;
    let t = |command: &str| format!("sb.v1.api.t.acme.{command}");
    // The owner writes to one customer (the bot then stays quiet there); another asks.
    let asker = "15557654321";
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    request(
        c,
        &t("message.send"),
        Some(json!({"to": CUSTOMER, "text": "Welcome!"})),
    )
    .await
    .ok();
    s.gateway.wait_for_sent(1, "the welcome").await;

    let stopped = request(c, &t("session.stop"), None).await.ok();
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    let stopped_ms = stopped["stopped_ms"].as_i64().expect("stopped since");
    assert_eq!(stopped["node"], Value::Null);
    let again = request(c, &t("session.stop"), Some(json!({}))).await.ok();
    assert_eq!(
        again["stopped_ms"], stopped_ms,
        "a second stop keeps the first time"
    );
    let status = request(c, &t("session.status"), None).await.ok();
    assert_eq!(status["state"], "stopped");
    // The host stops the tenant (its reload is asynchronous): poll.
    eventually(WAIT, || async {
        let tenant = request(c, &t("tenant.get"), None).await.ok();
        (tenant["state"].is_null() && tenant["active"] == false).then_some(())
    })
    .await;

    let message = request(
        c,
        &t("message.send"),
        Some(json!({"to": CUSTOMER, "text": "hi"})),
    )
    .await
    .refused("409", "session_stopped");
    assert_eq!(
        message,
        "the whatsapp session of tenant acme is stopped: session.start runs it again"
    );
    request(c, &t("bot.pause"), Some(json!({"chat": CUSTOMER})))
        .await
        .refused("409", "session_stopped");

    let webhook = salesboy_testkit::webhooks::text_message(
        "106540352242922",
        asker,
        "wamid.stopped-1",
        "Do you ship to Lisbon?",
    );
    assert_eq!(
        s.gateway.post_webhook(&webhook).await,
        200,
        "persisted and acknowledged"
    );
    let log = request(c, &t("conversation.messages"), Some(json!({"chat": asker})))
        .await
        .ok();
    let last = log["messages"].as_array().and_then(|m| m.last().cloned());
    let last = last.expect("messages");
    assert_eq!(last["direction"], "inbound", "{log}");
    assert_eq!(last["body"], "Do you ship to Lisbon?");

    let started_after_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    // A caller that expects another engine is told, and nothing starts.
    let message = request(c, &t("session.start"), Some(json!({"engine": "web"})))
        .await
        .refused("400", "invalid_field");
    assert_eq!(message, "engine: tenant acme uses the cloud_api engine");
    let qr = request(c, &t("session.qr"), None)
        .await
        .refused("409", "not_web");
    assert!(qr.contains("cloud_api"), "{qr}");
    let started = request(c, &t("session.start"), Some(json!({"engine": "cloud_api"})))
        .await
        .ok();
    assert_ne!(started["state"], "stopped", "{started}");
    assert_eq!(started["stopped_ms"], Value::Null);
    let sent = s.gateway.wait_for_sent(2, "the answer, once started").await;
    assert_eq!(sent.len(), 2);
    let answered = eventually(WAIT, || async {
        let log = request(c, &t("conversation.messages"), Some(json!({"chat": asker})))
            .await
            .ok();
        let messages = log["messages"].as_array()?.clone();
        let reply = messages
            .iter()
            .find(|m| m["origin"] == "bot" && m["status"] == "sent")?
            .clone();
        Some(reply)
    })
    .await;
    let recorded_ms = answered["created_ms"].as_i64().expect("created");
    assert!(
        recorded_ms >= started_after_ms,
        "the reply was recorded after the start, not while stopped: {answered}"
    );
    request(
        c,
        &t("message.send"),
        Some(json!({"to": CUSTOMER, "text": "Yes, we do."})),
    )
    .await
    .ok();
    s.gateway
        .wait_for_sent(3, "an owner message, once started")
        .await;

    s.gateway.node.stop().await;
}

/// `tenant.delete` stops the tenant on its host, takes it out of the directory and frees
/// its number; its data is kept (the same id created again takes it back) or erased.
#[tokio::test]
async fn tenant_delete_stops_it_everywhere_and_keeps_or_erases_its_data() {
    let s = setup().await;
    let c = &s.client;
    let t = |command: &str| format!("sb.v1.api.t.acme.{command}");
    let create = "sb.v1.api.tenant.create";
    request(c, create, Some(create_acme())).await.ok();
    let returns = json!({"title": "Returns", "text": "Returns are free within 30 days."});
    request(c, &t("knowledge.add"), Some(returns)).await.ok();
    let welcome = json!({"to": CUSTOMER, "text": "Welcome!"});
    request(c, &t("message.send"), Some(welcome.clone()))
        .await
        .ok();
    s.gateway.wait_for_sent(1, "the welcome").await;
    let placed = |count: u64| async move {
        let cluster = request(c, "sb.v1.api.cluster.status", None).await.ok();
        let node = &cluster["nodes"][0];
        (cluster["tenants"] == count && node["placed"] == count && node["tenants"] == count)
            .then_some(())
    };
    eventually(WAIT, || placed(1)).await;

    for bad in [json!({"erase_data": "yes"}), json!({"erase": true})] {
        request(c, &t("tenant.delete"), Some(bad))
            .await
            .refused("400", "malformed_request");
    }
    let deleted = request(c, &t("tenant.delete"), None).await.ok();
    assert_eq!(deleted, json!({"tenant": "acme", "data_erased": false}));
    // Gone for the API at once; stopped on its host and out of the directory.
    for command in ["tenant.get", "session.status", "tenant.delete"] {
        request(c, &t(command), None)
            .await
            .refused("404", "unknown_tenant");
    }
    request(c, &t("message.send"), Some(welcome.clone()))
        .await
        .refused("404", "unknown_tenant");
    assert_eq!(
        request(c, "sb.v1.api.tenant.list", None).await.ok(),
        json!([])
    );
    eventually(WAIT, || placed(0)).await;

    // Its number is free for another tenant.
    let mut other = create_acme();
    other["id"] = json!("other");
    request(c, create, Some(other)).await.ok();
    // The same id again, on another number: the kept data comes back.
    let mut again = create_acme();
    again["phone_number_id"] = json!("106540352242923");
    request(c, create, Some(again.clone())).await.ok();
    let log = request(
        c,
        &t("conversation.messages"),
        Some(json!({"chat": CUSTOMER})),
    )
    .await
    .ok();
    assert_eq!(log["messages"][0]["body"], "Welcome!", "{log}");
    let documents = request(c, &t("knowledge.list"), None).await.ok();
    assert_eq!(documents.as_array().map(Vec::len), Some(1), "{documents}");

    let erased = request(c, &t("tenant.delete"), Some(json!({"erase_data": true})))
        .await
        .ok();
    assert_eq!(erased, json!({"tenant": "acme", "data_erased": true}));
    request(c, create, Some(again)).await.ok();
    let log = request(
        c,
        &t("conversation.messages"),
        Some(json!({"chat": CUSTOMER})),
    )
    .await
    .ok();
    assert_eq!(log["messages"], json!([]), "erased");
    assert_eq!(request(c, &t("knowledge.list"), None).await.ok(), json!([]));

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn webhook_rejected_lists_the_tenants_unreadable_items() {
    let s = setup().await;
    let c = &s.client;
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    let subject = "sb.v1.api.t.acme.webhook.rejected";
    assert_eq!(request(c, subject, None).await.ok(), json!([]));
    // A signed delivery with one unreadable item: 200, the item recorded for acme.
    let mut body =
        salesboy_testkit::webhooks::text_message("106540352242922", CUSTOMER, "wamid.ok", "hi");
    body["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = json!("1".repeat(65));
    assert_eq!(s.gateway.post_webhook(&body).await, reqwest::StatusCode::OK);
    let listed = request(c, subject, Some(json!({"limit": 10}))).await.ok();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["path"], "entry[0].changes[0].value.messages[0]");
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("chat id"),
        "{listed}"
    );
    let before = listed[0]["id"].as_i64().expect("an id");
    let older = request(c, subject, Some(json!({"before": before})))
        .await
        .ok();
    assert_eq!(older, json!([]));
    request(c, subject, Some(json!({"since": 1})))
        .await
        .refused("400", "malformed_request");
}

#[tokio::test]
async fn usage_get_counts_a_months_tokens_cost_and_messages() {
    let s = setup().await;
    let c = &s.client;
    let t = |command: &str| format!("sb.v1.api.t.acme.{command}");
    request(c, "sb.v1.api.tenant.create", Some(create_acme()))
        .await
        .ok();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");

    // LLM calls: two this month, one in November 2023.
    let tenant = salesboy_protocol::TenantId::new("acme").expect("tenant id");
    for (prompt, completion, cost, at_ms) in [
        (1_200, 80, 450, now_ms),
        (800, 20, 250, now_ms),
        (5_000, 500, 9_000, 1_700_000_000_000),
    ] {
        let usage = salesboy_actors::store::LlmUsage {
            tenant: tenant.clone(),
            provider: "openai".to_owned(),
            model: "gpt-4o-mini".to_owned(),
            prompt_tokens: prompt,
            completion_tokens: completion,
            cost_micros: cost,
            at_ms,
        };
        s.gateway
            .store()
            .record_llm_usage(&usage)
            .await
            .expect("recorded");
    }
    // Messages: two owner sends, then one from the customer (the bot has stepped back).
    for text in ["Your order ships today.", "Tracking: 42"] {
        request(
            c,
            &t("message.send"),
            Some(json!({"to": CUSTOMER, "text": text})),
        )
        .await
        .ok();
    }
    s.gateway.wait_for_sent(2, "the owner's messages").await;
    let inbound = salesboy_testkit::webhooks::text_message(
        "106540352242922",
        CUSTOMER,
        "wamid.usage1",
        "Thanks!",
    );
    assert_eq!(s.gateway.post_webhook(&inbound).await, 200);

    let usage = eventually(WAIT, || async {
        let usage = request(c, &t("usage.get"), None).await.ok();
        (usage["messages"]["in"] == 1).then_some(usage)
    })
    .await;
    let from_ms = usage["from_ms"].as_i64().expect("from_ms");
    let until_ms = usage["until_ms"].as_i64().expect("until_ms");
    assert!((from_ms..until_ms).contains(&now_ms), "{usage}");
    let month = usage["month"].as_str().expect("month");
    assert!(month.len() == 7 && month.as_bytes()[4] == b'-', "{usage}");
    assert_eq!(usage["tokens"], json!({"prompt": 2_000, "completion": 100}));
    assert_eq!(usage["llm_requests"], 2);
    assert_eq!(usage["llm_cost_micros"], 700);
    assert_eq!(usage["messages"], json!({"in": 1, "out": 2}));
    let same = request(c, &t("usage.get"), Some(json!({"month": month})))
        .await
        .ok();
    assert_eq!(same, usage, "the current month by name");

    let november = request(c, &t("usage.get"), Some(json!({"month": "2023-11"})))
        .await
        .ok();
    assert_eq!(
        november,
        json!({
            "month": "2023-11",
            "from_ms": 1_698_796_800_000_i64,
            "until_ms": 1_701_388_800_000_i64,
            "tokens": {"prompt": 5_000, "completion": 500},
            "llm_requests": 1,
            "llm_cost_micros": 9_000,
            "messages": {"in": 0, "out": 0},
        })
    );
    let message = request(c, &t("usage.get"), Some(json!({"month": "2023-1"})))
        .await
        .refused("400", "invalid_field");
    assert_eq!(
        message,
        "month: expected a month as YYYY-MM (e.g. 2026-01), got \"2023-1\""
    );

    s.gateway.node.stop().await;
}

#[tokio::test]
async fn every_node_serves_and_the_service_stops_with_its_node() {
    let s = setup().await;
    let bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(&s.server.url(), NatsBusOptions::default())
            .await
            .expect("connect the second node"),
    );
    let second = Gateway::start_on(Db::Sqlite, Some(bus), |c| {
        c.node_id = "node-2".parse().expect("node id");
        c.failure_timeout_ms = 2_000;
    })
    .await;

    // A ping reaches every instance: two answers, two service ids, one name.
    let inbox = s.client.new_inbox();
    let mut pongs = s.client.subscribe(inbox.clone()).await.expect("inbox");
    s.client
        .publish_with_reply("$SRV.PING.salesboy", inbox, "".into())
        .await
        .expect("ping");
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 2 {
        let pong = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut pongs))
            .await
            .expect("two pongs in time")
            .expect("inbox open");
        let pong: Value = serde_json::from_slice(&pong.payload).expect("json pong");
        assert_eq!(pong["name"], "salesboy");
        ids.insert(pong["id"].as_str().expect("id").to_owned());
    }

    // With one node stopped the other answers; with both stopped nobody does.
    s.gateway.node.stop().await;
    let list = request(&s.client, "sb.v1.api.tenant.list", None).await.ok();
    assert_eq!(list, json!([]));
    second.node.stop().await;
    eventually(WAIT, || async {
        let ping = async_nats::Request::new()
            .payload("".into())
            .timeout(Some(REQUEST_TIMEOUT));
        match s.client.send_request("$SRV.PING.salesboy", ping).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => Some(()),
            _ => None,
        }
    })
    .await;
    let answer = s
        .client
        .request("sb.v1.api.tenant.list", "".into())
        .await
        .expect_err("no node serves");
    assert_eq!(
        answer.kind(),
        async_nats::client::RequestErrorKind::NoResponders
    );
}
