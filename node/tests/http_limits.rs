//! The HTTP side's limits, each provoked against a real node: the admin API on its own
//! listener, the minimum admin token, the lockout of wrong tokens, the minimal public
//! `/health`, the webhook's refusals before its body is read, the request timeout and the
//! concurrency limit. After each, the node still serves and a real delivery is answered.

use std::net::SocketAddr;

use reqwest::StatusCode;
use salesboy_node::config::Config;
use salesboy_node::run;
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};
use salesboy_protocol::whatsapp::webhook::MAX_WEBHOOK_BODY_BYTES;
use salesboy_testkit::gateway::{ADMIN_TOKEN, APP_SECRET, Gateway, WAIT};
use salesboy_testkit::{Db, PostgresDatabase, SANDBOX_SECRETS_KEY, TcpProxy, eventually, webhooks};
use secrecy::SecretString;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PHONE: &str = "100200300";
const CUSTOMER: &str = "15551230001";

/// Starts a node with one offline tenant; `tweak` adjusts its configuration.
async fn gateway(tweak: impl FnOnce(&mut Config)) -> Gateway {
    let gateway = Gateway::start(Db::Sqlite, tweak).await;
    gateway.add_tenant("acme", PHONE, None).await;
    gateway
}

/// A customer's message is answered: the node lost nothing to the limit just provoked.
async fn a_delivery_is_answered(gateway: &Gateway, wamid: &str) {
    let before = gateway.whatsapp.sent().len();
    let body = webhooks::text_message(PHONE, CUSTOMER, wamid, "do you have red shoes?");
    assert_eq!(gateway.post_webhook(&body).await, StatusCode::OK);
    gateway.wait_for_sent(before + 1, "the reply").await;
}

/// Opens a connection and writes `head` (request line and headers, without the blank line)
/// and then `body`; the connection stays open for the caller.
async fn raw_request(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .expect("write head");
    stream.write_all(body).await.expect("write body");
    stream.flush().await.expect("flush");
    stream
}

/// The status line the node answers on `stream`, read within [`WAIT`].
async fn status_line(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let read = stream.read(&mut buffer).await.expect("read");
            assert!(read > 0, "connection closed without an answer");
            answer.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("the node answers without the body being sent");
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

/// The head of a webhook delivery declaring `length` bytes, with `signature` (or none).
fn delivery_head(length: usize, signature: Option<&str>) -> String {
    let mut head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {length}"
    );
    if let Some(signature) = signature {
        head.push_str(&format!("\r\n{SIGNATURE_HEADER}: {signature}"));
    }
    head
}

/// A well-formed signature (of nothing in particular).
fn some_signature() -> String {
    sign(APP_SECRET.as_bytes(), b"whatever")
}

/// A delivery that passes the pre-check but whose body never arrives in full: it declares
/// 100 bytes and sends `first_bytes`. It holds its request until the stream is dropped.
async fn unfinished_delivery(addr: SocketAddr, first_bytes: &[u8]) -> TcpStream {
    let signature = some_signature();
    raw_request(addr, &delivery_head(100, Some(&signature)), first_bytes).await
}

#[tokio::test]
async fn the_admin_api_listens_apart_when_configured() {
    let gateway = gateway(|config| {
        config.admin_http_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = gateway.admin_base.clone();
    assert_ne!(admin, gateway.base);
    let get = |url: String| {
        let http = gateway.http.clone();
        async move {
            let response = http.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
            response.status()
        }
    };
    // The public listener: the webhook and /health only.
    for path in [
        "/api/health",
        "/api/tenants",
        "/api/openapi.json",
        "/metrics",
    ] {
        assert_eq!(
            get(format!("{}{path}", gateway.base)).await,
            StatusCode::NOT_FOUND,
            "{path} on the public listener"
        );
    }
    assert_eq!(
        get(format!("{}/health", gateway.base)).await,
        StatusCode::OK
    );
    // The admin listener: the admin API and the metrics, not the webhook.
    for path in [
        "/api/health",
        "/api/tenants",
        "/api/openapi.json",
        "/metrics",
    ] {
        assert_eq!(
            get(format!("{admin}{path}")).await,
            StatusCode::OK,
            "{path} on the admin listener"
        );
    }
    let webhook = gateway
        .http
        .post(format!("{admin}/webhooks/whatsapp"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), StatusCode::NOT_FOUND);
    assert_eq!(gateway.health().await["status"], "ok");
    a_delivery_is_answered(&gateway, "wamid.apart").await;
}

#[tokio::test]
async fn public_health_says_only_ready_and_the_details_need_the_token() {
    let gateway = gateway(|_| {}).await;
    let response = gateway
        .http
        .get(format!("{}/health", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));

    let response = gateway
        .http
        .get(format!("{}/api/health", gateway.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let health = gateway.health().await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["bus"], "none");
}

#[tokio::test]
async fn public_health_says_not_ready_without_internals_when_the_database_is_gone() {
    let postgres = PostgresDatabase::create().await.expect("test postgres");
    // The node reaches its database through a proxy the test can cut.
    let (credentials, rest) = postgres
        .url()
        .split_once('@')
        .expect("url with credentials");
    let (host, database) = rest.split_once('/').expect("url with a database");
    let upstream = tokio::net::lookup_host(host)
        .await
        .expect("postgres host")
        .next()
        .expect("an address");
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let url = format!("{credentials}@{}/{database}", proxy.addr());
    let gateway = gateway(|config| {
        config.database_url = Some(url);
        // Postgres needs a configured secrets key.
        config.secrets_key = Some(SANDBOX_SECRETS_KEY.to_owned().into());
    })
    .await;

    proxy.cut();
    let public = format!("{}/health", gateway.base);
    let body: Value = eventually(WAIT, || async {
        let response = gateway.http.get(&public).send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(response.json().await.ok()?)
    })
    .await;
    assert_eq!(body, serde_json::json!({"status": "unavailable"}));
    // The details, behind the token, say why, without the password.
    let response = gateway
        .http
        .get(format!("{}/api/health", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let details: Value = response.json().await.unwrap();
    assert_eq!(details["status"], "unavailable");
    assert_ne!(details["database"], "ok");
    let password = credentials.rsplit(':').next().unwrap();
    assert!(
        !details.to_string().contains(&format!(":{password}@")),
        "{details}"
    );

    proxy.restore();
    eventually(WAIT, || async {
        let response = gateway.http.get(&public).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    a_delivery_is_answered(&gateway, "wamid.db-back").await;
    gateway.node.stop().await;
    // PostgresDatabase's Drop blocks on its own runtime: keep it off this one.
    let _ = tokio::task::spawn_blocking(move || drop(postgres)).await;
}

#[tokio::test]
async fn a_short_admin_token_stops_the_node_at_start_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let short = "short-admin-token-12345";
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        admin_token: Some(SecretString::from(short)),
        ..Config::default()
    };
    let Err(error) = run::start_with_bus(config.clone(), None).await else {
        panic!("a node with a short admin token started");
    };
    let error = format!("{error:#}");
    assert!(error.contains("at least 32 characters"), "{error}");
    assert!(!error.contains(short), "{error}");

    // A short token in the data dir's file is refused the same way.
    std::fs::write(dir.path().join(run::ADMIN_TOKEN_FILE), format!("{short}\n")).unwrap();
    let config = Config {
        admin_token: None,
        ..config
    };
    let Err(error) = run::start_with_bus(config.clone(), None).await else {
        panic!("a node with a short admin token file started");
    };
    let error = format!("{error:#}");
    assert!(error.contains("at least 32 characters"), "{error}");
    assert!(!error.contains(short), "{error}");

    // The embedded default generates a long enough one, and starts.
    std::fs::remove_file(dir.path().join(run::ADMIN_TOKEN_FILE)).unwrap();
    let node = run::start_with_bus(config, None).await.expect("starts");
    let generated = std::fs::read_to_string(dir.path().join(run::ADMIN_TOKEN_FILE)).unwrap();
    assert!(generated.trim().len() >= 32);
    node.stop().await;
}

#[tokio::test]
async fn wrong_tokens_lock_the_client_out_then_it_recovers() {
    let gateway = gateway(|config| {
        config.admin_auth_max_failures = 3;
        config.admin_auth_lockout_secs = 2;
    })
    .await;
    let url = format!("{}/api/tenants", gateway.base);
    let call = |token: &'static str| {
        let (http, url) = (gateway.http.clone(), url.clone());
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    for _ in 0..3 {
        assert_eq!(call("wrong-token").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked out: even the right token is not checked.
    let locked = call(ADMIN_TOKEN).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = locked.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many wrong tokens"),
        "{body}"
    );
    // The public side is not locked.
    assert_eq!(
        gateway
            .http
            .get(format!("{}/health", gateway.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // After the lockout, the right token works again.
    eventually(WAIT, || async {
        (call(ADMIN_TOKEN).await.status() == StatusCode::OK).then_some(())
    })
    .await;
    a_delivery_is_answered(&gateway, "wamid.throttle").await;
}

#[tokio::test]
async fn a_delivery_is_refused_on_its_headers_before_its_body_is_read() {
    let gateway = gateway(|_| {}).await;
    let addr = gateway.node.http_addr;
    // Declared too large: refused without a byte of body sent.
    let signature = some_signature();
    let mut stream = raw_request(
        addr,
        &delivery_head(MAX_WEBHOOK_BODY_BYTES + 1, Some(&signature)),
        b"",
    )
    .await;
    assert!(status_line(&mut stream).await.contains(" 413 "));
    // No signature, or a malformed one: refused without a byte of body sent.
    for signature in [None, Some("sha256=nothex"), Some("md5=abc")] {
        let mut stream = raw_request(addr, &delivery_head(1000, signature), b"").await;
        let line = status_line(&mut stream).await;
        assert!(line.contains(" 401 "), "{signature:?}: {line}");
    }
    a_delivery_is_answered(&gateway, "wamid.precheck").await;
}

#[tokio::test]
async fn a_slow_request_times_out() {
    let gateway = gateway(|config| config.http_request_timeout_ms = 300).await;
    let mut stream = unfinished_delivery(gateway.node.http_addr, b"{\"object\"").await;
    let line = status_line(&mut stream).await;
    assert!(line.contains(" 408 "), "{line}");
    a_delivery_is_answered(&gateway, "wamid.timeout").await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_then_served_again() {
    let gateway = gateway(|config| config.http_max_concurrent_requests = 2).await;
    // Two deliveries whose bodies never arrive hold both places.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(unfinished_delivery(gateway.node.http_addr, b"{").await);
    }
    let health = format!("{}/health", gateway.base);
    let shed = eventually(WAIT, || async {
        let response = gateway.http.get(&health).send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests"),
        "{body}"
    );
    // Their clients give up: the places are free again.
    drop(held);
    eventually(WAIT, || async {
        let response = gateway.http.get(&health).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    a_delivery_is_answered(&gateway, "wamid.limit").await;
}
