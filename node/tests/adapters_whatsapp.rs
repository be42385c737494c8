//! The Cloud API client against wiremock: the exact requests it sends (method, path,
//! bearer token, JSON body) and the classification of every documented error response.

use std::sync::Arc;
use std::time::{Duration, Instant};

use salesboy_actors::ports::{SendError, WhatsAppConnection, WhatsAppConnector};
use salesboy_actors::store::{AccessToken, WhatsAppNumber};
use salesboy_node::adapters::http_client;
use salesboy_node::adapters::whatsapp::CloudApiConnector;
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "EAAG-test-token-do-not-log";
const PHONE_NUMBER_ID: &str = "106540352242922";
const MESSAGES_PATH: &str = "/v21.0/106540352242922/messages";
const CUSTOMER: &str = "16505551234";
const QUOTED: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRGMUMyQjlEOEU3QTZCNUM0RAA=";
const REPLY: &str = "Yes! The blue sneakers are in stock in size 42. Want me to reserve a pair?";
const SENT_WAMID: &str = "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI4QzFFNUQwQjRBN0YyRTlDM0IA";

/// The send-text body of the Cloud API documentation (`to` without the `+`: the gateway
/// sends to the customer's `wa_id`).
fn send_text_request() -> Value {
    json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": CUSTOMER,
        "type": "text",
        "context": {"message_id": QUOTED},
        "text": {"preview_url": false, "body": REPLY}
    })
}

fn send_text_response() -> Value {
    json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": CUSTOMER, "wa_id": CUSTOMER}],
        "messages": [{"id": SENT_WAMID}]
    })
}

fn graph_error(code: i64, message: &str, details: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AzYxWvUtSrQpOnMlKjIhGfE"
        }
    })
}

fn throughput_error() -> Value {
    graph_error(
        130_429,
        "(#130429) Rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number in a short period of time",
    )
}

fn pair_rate_error() -> Value {
    graph_error(
        131_056,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
    )
}

fn outside_window_error() -> Value {
    graph_error(
        131_047,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    )
}

fn expired_token_error() -> Value {
    json!({
        "error": {
            "message": "Error validating access token: Session has expired.",
            "type": "OAuthException",
            "code": 190,
            "error_subcode": 463,
            "fbtrace_id": "AbCdEf"
        }
    })
}

fn connection(base: &str, timeout: Duration) -> Arc<dyn WhatsAppConnection> {
    let connector =
        CloudApiConnector::new(http_client().expect("http client"), base).with_timeout(timeout);
    connector.connect(
        &TenantId::new("acme").expect("tenant id"),
        &WhatsAppNumber {
            phone_number_id: PhoneNumberId::new(PHONE_NUMBER_ID).expect("phone number id"),
            waba_id: None,
            access_token: AccessToken::new(TOKEN),
        },
    )
}

fn customer() -> ChatId {
    ChatId::new(CUSTOMER).expect("chat id")
}

fn quoted() -> Wamid {
    Wamid::new(QUOTED).expect("wamid")
}

/// Sends a text to a server answering `response`; the error.
async fn send_error_for(response: ResponseTemplate) -> SendError {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(response)
        .expect(1)
        .mount(&server)
        .await;
    let connection = connection(&format!("{}/v21.0", server.uri()), Duration::from_secs(5));
    let error = connection
        .send_text(&customer(), REPLY, Some(&quoted()))
        .await
        .expect_err("the send must fail");
    assert_no_token(&error);
    error
}

fn assert_no_token(error: &SendError) {
    assert!(!error.to_string().contains(TOKEN), "{error}");
    assert!(!format!("{error:?}").contains(TOKEN), "{error:?}");
}

#[tokio::test]
async fn send_text_posts_the_documented_request_and_returns_the_wamid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(send_text_request()))
        .respond_with(ResponseTemplate::new(200).set_body_json(send_text_response()))
        .expect(1)
        .mount(&server)
        .await;

    // A trailing slash on the base is tolerated.
    let connection = connection(&format!("{}/v21.0/", server.uri()), Duration::from_secs(5));
    let wamid = connection
        .send_text(&customer(), REPLY, Some(&quoted()))
        .await
        .expect("sent");
    assert_eq!(wamid.as_str(), SENT_WAMID);
}

#[tokio::test]
async fn send_text_without_a_quote_has_no_context() {
    let server = MockServer::start().await;
    let mut expected = send_text_request();
    expected.as_object_mut().expect("object").remove("context");
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(200).set_body_json(send_text_response()))
        .expect(1)
        .mount(&server)
        .await;
    let connection = connection(&format!("{}/v21.0", server.uri()), Duration::from_secs(5));
    let wamid = connection
        .send_text(&customer(), REPLY, None)
        .await
        .expect("sent");
    assert_eq!(wamid.as_str(), SENT_WAMID);
}

#[tokio::test]
async fn mark_read_posts_read_with_and_without_typing() {
    let server = MockServer::start().await;
    let read = json!({"messaging_product": "whatsapp", "status": "read", "message_id": QUOTED});
    let mut typing = read.clone();
    typing["typing_indicator"] = json!({"type": "text"});
    for body in [read, typing] {
        Mock::given(method("POST"))
            .and(path(MESSAGES_PATH))
            .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
            .and(body_json(body))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
            .expect(1)
            .mount(&server)
            .await;
    }
    let connection = connection(&format!("{}/v21.0", server.uri()), Duration::from_secs(5));
    connection
        .mark_read(&quoted(), false)
        .await
        .expect("marked read");
    connection
        .mark_read(&quoted(), true)
        .await
        .expect("marked read with typing");
}

#[tokio::test]
async fn throughput_limit_is_throttled_with_the_retry_after_header() {
    let error = send_error_for(
        ResponseTemplate::new(400)
            .insert_header("retry-after", "7")
            .set_body_json(throughput_error()),
    )
    .await;
    assert_eq!(
        error,
        SendError::Throttled {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    let error = send_error_for(ResponseTemplate::new(429).set_body_json(throughput_error())).await;
    assert_eq!(error, SendError::Throttled { retry_after: None });
}

#[tokio::test]
async fn pair_rate_limit_is_classified() {
    let error = send_error_for(ResponseTemplate::new(400).set_body_json(pair_rate_error())).await;
    assert_eq!(error, SendError::PairRateLimited);
    assert!(error.is_retryable());
}

#[tokio::test]
async fn closed_window_is_classified() {
    let error =
        send_error_for(ResponseTemplate::new(400).set_body_json(outside_window_error())).await;
    assert_eq!(error, SendError::OutsideWindow);
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn refused_credentials_are_auth_failures() {
    let error =
        send_error_for(ResponseTemplate::new(401).set_body_json(expired_token_error())).await;
    assert_eq!(error, SendError::AuthFailed);
    // Code 190 under another status, and a bare 401 without a Graph body.
    let error =
        send_error_for(ResponseTemplate::new(400).set_body_json(expired_token_error())).await;
    assert_eq!(error, SendError::AuthFailed);
    let error = send_error_for(ResponseTemplate::new(401).set_body_string("Unauthorized")).await;
    assert_eq!(error, SendError::AuthFailed);
}

#[tokio::test]
async fn server_errors_are_transient() {
    let body = json!({"error": {"message": "An unknown error has occurred.", "type": "OAuthException", "code": 1}});
    let error = send_error_for(ResponseTemplate::new(500).set_body_json(body)).await;
    assert_eq!(
        error,
        SendError::Transient("graph error 1: An unknown error has occurred.".to_owned())
    );
    let error =
        send_error_for(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
            .await;
    assert_eq!(error, SendError::Transient("http status 502".to_owned()));
}

#[tokio::test]
async fn other_graph_errors_are_rejected_with_their_code_and_message() {
    let body = json!({"error": {"message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100}});
    let error = send_error_for(ResponseTemplate::new(400).set_body_json(body)).await;
    assert_eq!(
        error,
        SendError::Rejected {
            code: 100,
            reason: "(#100) Invalid parameter".to_owned()
        }
    );
    let error = send_error_for(ResponseTemplate::new(404).set_body_string("no such page")).await;
    assert_eq!(
        error,
        SendError::Rejected {
            code: 404,
            reason: "http status 404: no such page".to_owned()
        }
    );
}

#[tokio::test]
async fn an_echoed_token_is_scrubbed() {
    let body = json!({"error": {"message": format!("Malformed access token {TOKEN}"), "type": "OAuthException", "code": 100}});
    let error = send_error_for(ResponseTemplate::new(400).set_body_json(body)).await;
    assert_eq!(
        error,
        SendError::Rejected {
            code: 100,
            reason: "Malformed access token [redacted]".to_owned()
        }
    );
}

#[tokio::test]
async fn an_accepted_send_without_a_wamid_is_rejected_not_retried() {
    let body = json!({"messaging_product": "whatsapp", "contacts": [], "messages": []});
    let error = send_error_for(ResponseTemplate::new(200).set_body_json(body)).await;
    assert_eq!(
        error,
        SendError::Rejected {
            code: 200,
            reason: "accepted without a message id".to_owned()
        }
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_slow_server_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(send_text_response())
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let connection = connection(
        &format!("{}/v21.0", server.uri()),
        Duration::from_millis(200),
    );
    let started = Instant::now();
    let error = connection
        .send_text(&customer(), REPLY, None)
        .await
        .expect_err("timed out");
    assert_eq!(
        error,
        SendError::Transient("timed out after 200 ms".to_owned())
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_server_is_transient() {
    // A port that was free a moment ago: nothing listens on it.
    let port = salesboy_testkit::free_port().expect("free port");
    let connection = connection(
        &format!("http://127.0.0.1:{port}/v21.0"),
        Duration::from_secs(5),
    );
    let error = connection
        .mark_read(&quoted(), true)
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, SendError::Transient(reason) if reason.starts_with("connection failed")),
        "{error:?}"
    );
    assert_no_token(&error);
}
