//! Tenant credentials on NATS (`docs/bus.md`, "Tenant credentials"), against a real
//! nats-server configured with the nodes' user and two tenant users whose entries come from
//! `salesboy nats-permissions`, and a real node connected as the nodes' user. The tenants
//! are plain NATS clients: raw subjects and raw JSON, never the project's types.
//!
//! Tenant acme's user can send commands about acme and read acme's events (live and from
//! its durable consumer); it cannot send commands about bolt or operator commands, subscribe
//! to bolt's events or to other inboxes, or touch bolt's consumer or any other JetStream API.
//! The server refuses a forbidden publish or subscription with a permissions violation
//! (`-ERR`, the connection stays up) and drops it: a request gets no answer at all.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use futures::{FutureExt, StreamExt};
use salesboy_node::bus::{Bus, NatsBus, NatsBusOptions, NatsCredentials};
use salesboy_testkit::{Db, Gateway, NatsServer};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

const NODE_USER: &str = "salesboy-node";
const NODE_PASSWORD: &str = "node-password-0123";
/// (tenant = user, password)
const ACME: (&str, &str) = ("acme", "acme-password-4567");
const BOLT: (&str, &str) = ("bolt", "bolt-password-89ab");

/// How long a request that should be answered may take.
const ANSWERED: Duration = Duration::from_secs(10);
/// How long a refused request is given before it counts as unanswered; the proof of the
/// refusal is the server's permissions violation, not this timeout.
const UNANSWERED: Duration = Duration::from_secs(2);
/// How long the server's violation report may take to arrive.
const REPORTED: Duration = Duration::from_secs(5);

/// `salesboy nats-permissions --tenant <tenant> --password <password>` (optionally creating
/// the consumer as the nodes' user, on `url`), its standard output.
fn salesboy_nats_permissions(tenant: (&str, &str), create_consumer_on: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_salesboy"));
    command.args([
        "nats-permissions",
        "--tenant",
        tenant.0,
        "--password",
        tenant.1,
    ]);
    if let Some(url) = create_consumer_on {
        command
            .arg("--create-consumer")
            .env("SALESBOY_NATS_URL", url)
            .env("SALESBOY_NATS_USER", NODE_USER)
            .env("SALESBOY_NATS_PASSWORD", NODE_PASSWORD);
    }
    let output = command.output().expect("run salesboy nats-permissions");
    assert!(
        output.status.success(),
        "salesboy nats-permissions failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The server's configuration: one account with JetStream, the nodes' user (everything)
/// and the two tenants' users, as docs/bus.md shows it.
fn server_config() -> String {
    format!(
        "accounts {{\n  SALESBOY {{\n    jetstream: enabled\n    users: [\n      \
         {{ user: \"{NODE_USER}\", password: \"{NODE_PASSWORD}\" }}\n{}\n{}\n    ]\n  }}\n}}\n",
        salesboy_nats_permissions(ACME, None),
        salesboy_nats_permissions(BOLT, None),
    )
}

/// A tenant's client (inbox prefix `_INBOX.<tenant>`) and the server errors it was sent.
struct TenantClient {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl TenantClient {
    async fn connect(url: &str, (tenant, password): (&str, &str)) -> Self {
        let (sender, errors) = mpsc::unbounded_channel();
        let client = ConnectOptions::with_user_and_password(tenant.into(), password.into())
            .custom_inbox_prefix(format!("_INBOX.{tenant}"))
            .event_callback(move |event| {
                let sender = sender.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        let _ = sender.send(error.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .expect("a tenant connects");
        Self { client, errors }
    }

    /// A request that must be answered; its JSON body.
    async fn ask(&self, subject: &str, body: Value) -> Value {
        let reply = timeout(
            ANSWERED,
            self.client
                .request(subject.to_owned(), body.to_string().into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject}: no answer"))
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
        serde_json::from_slice(&reply.payload)
            .unwrap_or_else(|e| panic!("{subject}: not JSON ({e}): {:?}", reply.payload))
    }

    /// Waits for the server's report of a permissions violation on `what` (`Publish to
    /// "subject"` or `Subscription to "subject"`).
    async fn violation(&mut self, what: &str) {
        let expected = format!("Permissions Violation for {what}");
        let seen = timeout(REPORTED, async {
            loop {
                let error = self.errors.recv().await.expect("the client is connected");
                if error.contains(&expected) {
                    return;
                }
            }
        })
        .await;
        assert!(seen.is_ok(), "no report of: {expected}");
    }

    /// A request the server must refuse: no answer, and a publish violation.
    async fn refused_request(&mut self, subject: &str, body: &str) {
        let request = async_nats::Request::new()
            .payload(body.to_owned().into())
            .timeout(Some(UNANSWERED));
        let answer = self.client.send_request(subject.to_owned(), request).await;
        assert!(answer.is_err(), "{subject} was answered: {answer:?}");
        self.violation(&format!("Publish to \"{subject}\"")).await;
    }

    /// A subscription the server must refuse.
    async fn refused_subscription(&mut self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("the client sends the subscription");
        self.violation(&format!("Subscription to \"{subject}\""))
            .await;
        subscriber
    }

    /// The next event of a tenant's durable consumer, pulled with the raw JetStream API on
    /// an inbox of its own (the event arrives under its own subject, which a request's
    /// reply multiplexer would not recognise), and acked.
    async fn pull_one(&self, consumer: &str) -> async_nats::Message {
        let subject = format!("$JS.API.CONSUMER.MSG.NEXT.SB_EVENTS.{consumer}");
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .expect("subscribe to an own inbox");
        let pull = json!({"batch": 1, "expires": 5_000_000_000u64});
        self.client
            .publish_with_reply(subject.clone(), inbox, pull.to_string().into())
            .await
            .expect("pull request sent");
        let message = timeout(ANSWERED, replies.next())
            .await
            .unwrap_or_else(|_| panic!("{subject}: no event"))
            .expect("the inbox is open");
        assert!(message.status.is_none(), "{subject}: {message:?}");
        let ack = message.reply.clone().expect("an event to ack").to_string();
        assert!(
            ack.starts_with(&format!("$JS.ACK.SB_EVENTS.{consumer}.")),
            "{ack}"
        );
        self.client
            .publish(ack, "+ACK".into())
            .await
            .expect("ack sent");
        message
    }

    /// Pulls (and acks) the tenant's stored events until the test's first event for it,
    /// checking that every event it is given is its own (the node may have published some
    /// of its own before).
    async fn pull_test_event(&self, tenant: &str) -> Value {
        let consumer = format!("tenant_{tenant}");
        let own = format!("sb.v1.evt.t.{tenant}.");
        for _ in 0..50 {
            let event = self.pull_one(&consumer).await;
            assert!(event.subject.starts_with(&own), "{consumer} gave {event:?}");
            if event.subject.as_str() == format!("{own}alert") {
                let body: Value = serde_json::from_slice(&event.payload).unwrap();
                if body["n"] == 1 {
                    return body;
                }
            }
        }
        panic!("{consumer}: the test's event is not among its first 50");
    }
}

/// Everything the test runs on: the server, a node on it, the operator's client.
struct Setup {
    server: NatsServer,
    _gateway: Gateway,
    operator: async_nats::Client,
}

async fn setup() -> Setup {
    let server = NatsServer::start_with_config(&server_config()).expect("nats-server");
    let node_bus: Arc<dyn Bus> = Arc::new(
        NatsBus::connect(
            &server.url(),
            NatsBusOptions {
                credentials: Some(NatsCredentials {
                    user: NODE_USER.into(),
                    password: SecretString::from(NODE_PASSWORD),
                }),
                ..NatsBusOptions::default()
            },
        )
        .await
        .expect("the node connects as the nodes' user"),
    );
    let gateway = Gateway::start_on(Db::Sqlite, Some(node_bus), |c| {
        c.failure_timeout_ms = 2_000;
    })
    .await;
    gateway.add_tenant(ACME.0, "106540352242922", None).await;
    gateway.add_tenant(BOLT.0, "106540352242923", None).await;

    let operator = ConnectOptions::with_user_and_password(NODE_USER.into(), NODE_PASSWORD.into())
        .connect(server.url())
        .await
        .expect("the operator connects as the nodes' user");
    // The events stream, if the node has not made it (same name and subjects).
    let js = async_nats::jetstream::new(operator.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "SB_EVENTS".into(),
        subjects: vec!["sb.v1.evt.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("the events stream");
    // Each tenant's consumer, made by the operator's command.
    for tenant in [ACME, BOLT] {
        salesboy_nats_permissions(tenant, Some(&server.url()));
    }
    // One stored event per tenant.
    for (tenant, _) in [ACME, BOLT] {
        js.publish(
            format!("sb.v1.evt.t.{tenant}.alert"),
            json!({"tenant": tenant, "n": 1}).to_string().into(),
        )
        .await
        .expect("publish an event")
        .await
        .expect("the event is stored");
    }
    Setup {
        server,
        _gateway: gateway,
        operator,
    }
}

#[tokio::test]
async fn a_tenant_user_reaches_its_own_commands_and_events_only() {
    let s = setup().await;
    let url = s.server.url();
    let mut acme = TenantClient::connect(&url, ACME).await;
    let bolt = TenantClient::connect(&url, BOLT).await;

    // Its own commands are answered by the node.
    let shown = acme.ask("sb.v1.api.t.acme.tenant.get", json!({})).await;
    assert_eq!(shown["id"], "acme", "{shown}");
    // Another tenant's commands and the operator's are refused by the server.
    acme.refused_request("sb.v1.api.t.bolt.tenant.get", "{}")
        .await;
    acme.refused_request("sb.v1.api.tenant.list", "{}").await;
    acme.refused_request("sb.v1.api.tenant.create", "{}").await;

    // Its own durable events; not bolt's consumer, nor any other JetStream API.
    let body = acme.pull_test_event("acme").await;
    assert_eq!(body["tenant"], "acme");
    let info = acme
        .ask("$JS.API.CONSUMER.INFO.SB_EVENTS.tenant_acme", json!({}))
        .await;
    assert_eq!(
        info["config"]["filter_subject"], "sb.v1.evt.t.acme.>",
        "{info}"
    );
    let pull = r#"{"batch":1,"expires":1000000000}"#;
    acme.refused_request("$JS.API.CONSUMER.MSG.NEXT.SB_EVENTS.tenant_bolt", pull)
        .await;
    acme.refused_request("$JS.API.CONSUMER.INFO.SB_EVENTS.tenant_bolt", "")
        .await;
    acme.refused_request(
        "$JS.API.CONSUMER.CREATE.SB_EVENTS",
        r#"{"stream_name":"SB_EVENTS","config":{"ack_policy":"none"}}"#,
    )
    .await;
    acme.refused_request(
        "$JS.API.CONSUMER.DURABLE.CREATE.SB_EVENTS.mine",
        r#"{"stream_name":"SB_EVENTS","config":{"durable_name":"mine"}}"#,
    )
    .await;
    acme.refused_request("$JS.API.STREAM.MSG.GET.SB_EVENTS", r#"{"seq":2}"#)
        .await;
    acme.refused_request("$JS.API.STREAM.INFO.SB_EVENTS", "")
        .await;
    // Bolt's event is still there for bolt.
    let body = bolt.pull_test_event("bolt").await;
    assert_eq!(body["tenant"], "bolt");

    // Live events: its own subject only; no other tenant's, no other inbox.
    let mut own = acme
        .client
        .subscribe("sb.v1.evt.t.acme.>")
        .await
        .expect("subscribe to its own events");
    let mut bolts = acme.refused_subscription("sb.v1.evt.t.bolt.>").await;
    let mut every = acme.refused_subscription("sb.v1.evt.>").await;
    let mut inboxes = acme.refused_subscription("_INBOX.>").await;
    let mut bolt_inbox = acme.refused_subscription("_INBOX.bolt.>").await;
    // The operator publishes bolt's event, a reply into bolt's inbox, then acme's event,
    // in this order on one connection: once acme has its own event, anything the refused
    // subscriptions would have been given has arrived before it.
    s.operator
        .publish(
            "sb.v1.evt.t.bolt.alert",
            r#"{"tenant":"bolt","n":2}"#.into(),
        )
        .await
        .unwrap();
    s.operator
        .publish("_INBOX.bolt.x.1", r#"{"secret":"bolt's answer"}"#.into())
        .await
        .unwrap();
    s.operator
        .publish(
            "sb.v1.evt.t.acme.alert",
            r#"{"tenant":"acme","n":2}"#.into(),
        )
        .await
        .unwrap();
    s.operator.flush().await.unwrap();
    timeout(ANSWERED, async {
        loop {
            let live = own.next().await.expect("the subscription is open");
            assert!(live.subject.starts_with("sb.v1.evt.t.acme."), "{live:?}");
            let body: Value = serde_json::from_slice(&live.payload).unwrap_or_default();
            if body["n"] == 2 {
                break;
            }
        }
    })
    .await
    .expect("acme's live event");
    for (name, refused) in [
        ("bolt's events", &mut bolts),
        ("every event", &mut every),
        ("every inbox", &mut inboxes),
        ("bolt's inbox", &mut bolt_inbox),
    ] {
        let leaked = refused.next().now_or_never().flatten();
        assert!(leaked.is_none(), "acme was given {name}: {leaked:?}");
    }

    // A client library opening its consumer by name works within these permissions.
    let stream = async_nats::jetstream::new(acme.client.clone())
        .get_stream_no_info("SB_EVENTS")
        .await
        .expect("the events stream, without its info");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer("tenant_acme")
        .await
        .expect("its consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("a fetch");
    let fetched = timeout(ANSWERED, batch.next())
        .await
        .expect("an event within the fetch")
        .expect("one event")
        .expect("no error");
    assert!(
        fetched.subject.starts_with("sb.v1.evt.t.acme."),
        "{:?}",
        fetched.subject
    );
    fetched.ack().await.expect("acked");

    // The connections survived every refusal.
    let shown = acme.ask("sb.v1.api.t.acme.tenant.get", json!({})).await;
    assert_eq!(shown["id"], "acme");
    let shown = bolt.ask("sb.v1.api.t.bolt.tenant.get", json!({})).await;
    assert_eq!(shown["id"], "bolt");
}
