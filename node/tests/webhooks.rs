//! HTTP event webhooks (`docs/protocol.md`, "HTTP event webhooks") as a receiver sees them:
//! a real node alone (no NATS: webhooks need none), its admin API, and a small HTTP receiver
//! in the test that checks every signature the documented way.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::serve::ListenerExt;
use hmac::{Hmac, Mac};
use salesboy_testkit::gateway::ADMIN_TOKEN;
use salesboy_testkit::{Db, Gateway, eventually, webhooks};
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(30);

/// How long, after the first failed attempts, the receiver of the first test stays down:
/// `SALESBOY_TEST_WEBHOOK_DOWNTIME_SECS`, default 0.
fn downtime() -> Duration {
    std::env::var("SALESBOY_TEST_WEBHOOK_DOWNTIME_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// How long to wait for the deliveries once the receiver is back: after a long downtime,
/// the longest retry delay (60 s, plus up to as much again of jitter) and some.
fn catch_up() -> Duration {
    if downtime().is_zero() {
        WAIT
    } else {
        Duration::from_secs(150)
    }
}
const PHONE: &str = "106540352242922";
const CHATS: [&str; 2] = ["16505550101", "16505550102"];

/// What a receiver got: each delivery it answered 2xx, in arrival order.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    attempts: Arc<Mutex<usize>>,
    /// The status it answers.
    status: Arc<AtomicU16>,
    /// The connections it accepted.
    connections: Arc<AtomicUsize>,
}

/// Answers the status set, with a body longer than one read of the node's HTTP client (an
/// answer the node did not read would close the connection).
async fn hook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    *receiver.attempts.lock().unwrap() += 1;
    let status = StatusCode::from_u16(receiver.status.load(Ordering::SeqCst)).unwrap();
    if status.is_success() {
        receiver.accepted.lock().unwrap().push((headers, body));
    }
    (status, "thanks ".repeat(4096))
}

impl Receiver {
    /// Serves on `listener` until the test ends.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.clone());
        let connections = Arc::clone(&self.connections);
        let listener = listener.tap_io(move |_| {
            connections.fetch_add(1, Ordering::SeqCst);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    /// The accepted events, each checked: signature (HMAC-SHA256 of timestamp + "." + body
    /// keyed with `secret`), event id header, JSON fields.
    fn events(&self, secret: &str) -> Vec<Value> {
        let accepted = self.accepted.lock().unwrap().clone();
        accepted
            .iter()
            .map(|(headers, body)| {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .unwrap_or_else(|| panic!("{name} missing"))
                        .to_str()
                        .unwrap()
                        .to_owned()
                };
                let timestamp = header("X-Salesboy-Timestamp");
                assert!(
                    timestamp.parse::<u64>().is_ok(),
                    "unix seconds: {timestamp}"
                );
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(body);
                let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                assert_eq!(
                    header("X-Salesboy-Signature-256"),
                    expected,
                    "valid signature"
                );
                let event: Value = serde_json::from_slice(body).expect("JSON");
                assert_eq!(header("X-Salesboy-Event-Id"), event["id"].as_str().unwrap());
                assert_eq!(event["v"], 1);
                event
            })
            .collect()
    }
}

async fn admin(
    gateway: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = gateway
        .http
        .request(method, format!("{}/api{path}", gateway.base))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A conversation: each chat writes three times, each message answered before the next.
async fn converse(gateway: &Gateway) {
    let mut sent = 0;
    for round in 0..3 {
        for chat in CHATS {
            let body =
                webhooks::text_message(PHONE, chat, &format!("wamid.{chat}.{round}"), "open?");
            assert_eq!(gateway.post_webhook(&body).await, reqwest::StatusCode::OK);
            sent += 1;
            gateway
                .wait_for_sent(sent, "the reply goes out before the next message")
                .await;
        }
    }
}

/// Per chat: message_received and reply_sent alternate, the customer's messages in order.
fn assert_in_order_per_chat(events: &[Value]) {
    let mut per_chat: HashMap<&str, Vec<&Value>> = HashMap::new();
    for event in events {
        if let Some(chat) = event["chat"].as_str() {
            per_chat.entry(chat).or_default().push(event);
        }
    }
    for chat in CHATS {
        let kinds: Vec<&str> = per_chat[chat]
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .filter(|k| matches!(*k, "message_received" | "reply_sent"))
            .collect();
        assert_eq!(
            kinds,
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
        let wamids: Vec<&str> = per_chat[chat]
            .iter()
            .filter(|e| e["kind"] == "message_received")
            .map(|e| e["detail"]["wamid"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..3).map(|r| format!("wamid.{chat}.{r}")).collect();
        assert_eq!(wamids, expected);
    }
}

fn conversation_events(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("message_received" | "reply_sent")))
        .count()
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_every_event_once_in_order_and_signed() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    gateway.add_tenant("acme", PHONE, None).await;
    // A port where nobody listens yet: deliveries are refused until the receiver starts.
    let port = salesboy_testkit::free_port().unwrap();
    let (status, created) = admin(
        &gateway,
        reqwest::Method::POST,
        "/tenants/acme/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/hook")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"]
        .as_str()
        .expect("the secret, shown once")
        .to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    converse(&gateway).await;
    // Everything is queued and the first attempts failed.
    eventually(WAIT, || async {
        let (_, list) = admin(
            &gateway,
            reqwest::Method::GET,
            "/tenants/acme/webhooks",
            None,
        )
        .await;
        (list[0]["pending"].as_i64() >= Some(12)).then_some(())
    })
    .await;
    // The receiver stays down this much longer (the acceptance check's "a minute":
    // SALESBOY_TEST_WEBHOOK_DOWNTIME_SECS=60; CI keeps it short).
    tokio::time::sleep(downtime()).await;
    let (_, list) = admin(
        &gateway,
        reqwest::Method::GET,
        "/tenants/acme/webhooks",
        None,
    )
    .await;
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("secret").is_none(), "never shown again: {list}");

    let receiver = Receiver::default();
    receiver.status.store(200, Ordering::SeqCst);
    receiver.serve(
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap(),
    );
    let events = eventually(catch_up(), || {
        let receiver = receiver.clone();
        let secret = secret.clone();
        async move {
            let events = receiver.events(&secret);
            (conversation_events(&events) >= 12).then_some(events)
        }
    })
    .await;
    assert_in_order_per_chat(&events);
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "each event once");
    assert!(events.iter().all(|e| e["tenant"] == "acme"));
    eventually(WAIT, || async {
        let (_, list) = admin(
            &gateway,
            reqwest::Method::GET,
            "/tenants/acme/webhooks",
            None,
        )
        .await;
        (list[0]["pending"] == 0 && list[0]["dead_letters"] == 0).then_some(())
    })
    .await;
    gateway.node.stop().await;
}

/// A receiver that is up throughout: each event goes out once its turn in the chat comes,
/// handed from the publisher to the delivery worker (`docs/protocol.md`, "HTTP event
/// webhooks"), in order per chat, once, signed, and nothing is left queued.
async fn a_receiver_that_is_up_gets_every_event_as_published(db: Db) {
    let gateway = Gateway::start(db, |_| {}).await;
    gateway.add_tenant("acme", PHONE, None).await;
    let receiver = Receiver::default();
    receiver.status.store(200, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    receiver.serve(listener);
    let (status, created) = admin(
        &gateway,
        reqwest::Method::POST,
        "/tenants/acme/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/hook")})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();

    converse(&gateway).await;
    let events = eventually(WAIT, || {
        let receiver = receiver.clone();
        let secret = secret.clone();
        async move {
            let events = receiver.events(&secret);
            (conversation_events(&events) >= 12).then_some(events)
        }
    })
    .await;
    assert_in_order_per_chat(&events);
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "each event once");
    assert_eq!(
        *receiver.attempts.lock().unwrap(),
        events.len(),
        "every attempt answered 2xx, none repeated"
    );
    // The node reads each answer, so its connections are used again: about one per
    // delivery under way at once (one per chat, one for events of no chat, and one a
    // connect begun when none was idle may add), not one per event.
    let connections = receiver.connections.load(Ordering::SeqCst);
    assert!(
        connections <= CHATS.len() + 2,
        "{connections} connections for {} deliveries",
        events.len()
    );
    eventually(WAIT, || async {
        let (_, list) = admin(
            &gateway,
            reqwest::Method::GET,
            "/tenants/acme/webhooks",
            None,
        )
        .await;
        (list[0]["pending"] == 0).then_some(())
    })
    .await;
    gateway.node.stop().await;
}

#[tokio::test]
async fn sqlite_a_receiver_that_is_up_gets_every_event_as_published() {
    a_receiver_that_is_up_gets_every_event_as_published(Db::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_receiver_that_is_up_gets_every_event_as_published() {
    a_receiver_that_is_up_gets_every_event_as_published(Db::Postgres).await;
}

#[tokio::test]
async fn after_the_retry_window_events_are_dead_lettered_and_can_be_delivered_again() {
    let gateway = Gateway::start(Db::Sqlite, |c| c.webhook_retry_secs = 2).await;
    gateway.add_tenant("acme", PHONE, None).await;
    let receiver = Receiver::default();
    receiver.status.store(500, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    receiver.serve(listener);
    let (status, created) = admin(
        &gateway,
        reqwest::Method::POST,
        "/tenants/acme/webhooks",
        Some(json!({"url": url, "kinds": ["reply_sent", "message_received"], "secret": "a-secret-of-our-own"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["secret"], "a-secret-of-our-own");
    assert_eq!(created["kinds"], json!(["message_received", "reply_sent"]));
    let id = created["id"].as_str().unwrap().to_owned();

    converse(&gateway).await;
    let dead_path = format!("/tenants/acme/webhooks/{id}/dead-letters");
    let dead = eventually(WAIT, || async {
        let (_, dead) = admin(&gateway, reqwest::Method::GET, &dead_path, None).await;
        (dead.as_array().map(Vec::len) == Some(12)).then_some(dead)
    })
    .await;
    for letter in dead.as_array().unwrap() {
        assert!(letter["attempts"].as_i64() >= Some(1), "{letter}");
        assert!(
            letter["last_error"].as_str().unwrap().contains("500"),
            "{letter}"
        );
        assert!(matches!(
            letter["event"]["kind"].as_str(),
            Some("message_received" | "reply_sent")
        ));
    }
    assert!(receiver.accepted.lock().unwrap().is_empty());

    // The receiver is fixed: one event first, then the rest.
    receiver.status.store(204, Ordering::SeqCst);
    let first_id = dead[0]["event"]["id"].as_str().unwrap();
    let redeliver = format!("{dead_path}/redeliver");
    let (status, one) = admin(
        &gateway,
        reqwest::Method::POST,
        &redeliver,
        Some(json!({"event_id": first_id})),
    )
    .await;
    assert_eq!((status, one), (StatusCode::OK, json!({"redelivered": 1})));
    let (status, rest) = admin(&gateway, reqwest::Method::POST, &redeliver, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest["redelivered"], 11);
    let events = eventually(WAIT, || {
        let receiver = receiver.clone();
        async move {
            let events = receiver.events("a-secret-of-our-own");
            (events.len() >= 12).then_some(events)
        }
    })
    .await;
    assert_eq!(events.len(), 12);
    assert_in_order_per_chat(&events);
    let (_, dead) = admin(&gateway, reqwest::Method::GET, &dead_path, None).await;
    assert_eq!(dead, json!([]));
    gateway.node.stop().await;
}

#[tokio::test]
async fn bad_webhook_requests_are_refused_with_their_reason() {
    let gateway = Gateway::start(Db::Sqlite, |_| {}).await;
    gateway.add_tenant("acme", PHONE, None).await;
    let post = |body: Value| {
        admin(
            &gateway,
            reqwest::Method::POST,
            "/tenants/acme/webhooks",
            Some(body),
        )
    };
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "http://example.com/x"}), "url"),
        (json!({"url": "http://169.254.169.254/x"}), "url"),
        (
            json!({"url": "https://example.com/x", "kinds": []}),
            "kinds",
        ),
        (
            json!({"url": "https://example.com/x", "kinds": ["node_joined"]}),
            "kinds",
        ),
        (
            json!({"url": "https://example.com/x", "secret": "short"}),
            "secret",
        ),
    ] {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }
    let (status, _) = admin(
        &gateway,
        reqwest::Method::POST,
        "/tenants/nobody/webhooks",
        Some(json!({"url": "https://example.com/x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, answer) = admin(
        &gateway,
        reqwest::Method::DELETE,
        "/tenants/acme/webhooks/wh_nope",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (_, list) = admin(
        &gateway,
        reqwest::Method::GET,
        "/tenants/acme/webhooks",
        None,
    )
    .await;
    assert_eq!(list, json!([]), "nothing half-added");
    let (status, created) = post(json!({"url": "https://example.com/x"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/tenants/acme/webhooks/{}", created["id"].as_str().unwrap());
    let (status, _) = admin(&gateway, reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = admin(
        &gateway,
        reqwest::Method::GET,
        "/tenants/acme/webhooks",
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    gateway.node.stop().await;
}

/// A receiver that holds the requests of the event whose `wamid` it is told to hold, until
/// told otherwise, and then refuses them (their node may be gone); it accepts every other
/// request at once. It keeps every request.
#[derive(Clone)]
struct HoldingReceiver {
    hold: tokio::sync::watch::Sender<Option<String>>,
    requests: Arc<Mutex<Vec<Value>>>,
    accepted: Arc<Mutex<Vec<Value>>>,
}

async fn holding_hook(State(receiver): State<HoldingReceiver>, body: Bytes) -> StatusCode {
    let event: Value = serde_json::from_slice(&body).expect("JSON");
    receiver.requests.lock().unwrap().push(event.clone());
    let wamid = event["detail"]["wamid"].as_str().map(str::to_owned);
    let mut hold = receiver.hold.subscribe();
    if wamid.is_some() && *hold.borrow_and_update() == wamid {
        let _ = hold.wait_for(|held| *held != wamid).await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver.accepted.lock().unwrap().push(event);
    StatusCode::OK
}

/// kill -9 of a node while first attempts it holds in memory are under way (nothing of
/// them in the queue in SQL, only their batch row): after the restart the node queues
/// those events again and the receiver gets them.
#[tokio::test]
async fn deliveries_under_way_when_the_node_is_killed_arrive_after_its_restart() {
    salesboy_node::run::install_crypto_provider();
    let sandbox = salesboy_testkit::ClusterSandbox::builder()
        .nodes(1)
        .binary(env!("CARGO_BIN_EXE_salesboy"))
        .database(Db::Postgres)
        .env("SALESBOY_DEBOUNCE_MS", "0")
        // An attempt hangs until the node dies, not until it times out.
        .env("SALESBOY_WEBHOOK_TIMEOUT_MS", "120000")
        .start()
        .await
        .expect("sandbox");
    let tenants = sandbox
        .seed_tenants(1, "We open at 9am.")
        .await
        .expect("seed");
    let (tenant, number) = &tenants[0];
    let receiver = HoldingReceiver {
        hold: tokio::sync::watch::Sender::new(None),
        requests: Arc::default(),
        accepted: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(holding_hook))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let created: Value = sandbox
        .http()
        .post(format!(
            "{}/api/tenants/{tenant}/webhooks",
            sandbox.http_base(0).unwrap()
        ))
        .bearer_auth(sandbox.admin_token())
        .json(&json!({"url": url, "kinds": ["message_received"]}))
        .send()
        .await
        .expect("webhook added")
        .json()
        .await
        .expect("JSON");
    assert!(created["id"].is_string(), "{created}");

    // One message per chat until one's delivery is under way with nothing of it in the
    // queue (a node that leads a cluster holds deliveries in memory once it has led for a
    // few seconds; before, it queues them).
    let wamid = |i: usize| format!("wamid.held.{i}");
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    let mut held = None;
    for i in 0..10_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery held in memory within {:?}",
            2 * WAIT
        );
        // Held now: the one before is refused, retried from the queue and accepted.
        receiver.hold.send_replace(Some(wamid(i)));
        let chat = format!("1650555{i:04}");
        let body = webhooks::text_message(number.as_str(), &chat, &wamid(i), "hello");
        assert_eq!(
            sandbox.post_webhook(0, &body).await,
            Ok(reqwest::StatusCode::OK)
        );
        eventually(WAIT, || async {
            let requests = receiver.requests.lock().unwrap().clone();
            requests
                .iter()
                .any(|e| e["detail"]["wamid"] == wamid(i).as_str())
                .then_some(())
        })
        .await;
        let queued = sandbox
            .store()
            .due_deliveries(i64::MAX, 1_000)
            .await
            .expect("queue");
        if !queued
            .iter()
            .any(|d| d.event.event.detail["wamid"] == wamid(i).as_str())
        {
            held = Some(i);
            break;
        }
    }
    let held = held.expect("a delivery held in memory");
    sandbox.kill(0).await.expect("kill -9");
    receiver.hold.send_replace(None);
    sandbox.restart(0).await.expect("restart");
    sandbox.wait_healthy(0, WAIT).await.expect("healthy");

    // The restarted node leads again, settles and recovers what it held; every message
    // sent gets its event through, each at least once.
    let accepted = eventually(2 * WAIT, || async {
        let accepted = receiver.accepted.lock().unwrap().clone();
        (0..=held)
            .all(|i| {
                accepted
                    .iter()
                    .any(|e| e["detail"]["wamid"] == wamid(i).as_str())
            })
            .then_some(accepted)
    })
    .await;
    assert!(accepted.iter().all(|e| e["tenant"] == tenant.as_str()));
}
