//! An HTTP endpoint for event webhooks: checks each delivery's signature and timestamp,
//! prints the event, answers 204 (or 401 for a bad signature, which the gateway retries and
//! finally dead-letters).
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… cargo run -p salesboy-examples --bin webhook_receiver -- 127.0.0.1:9000
//! # then: POST /api/tenants/acme/webhooks {"url": "http://127.0.0.1:9000/events", "secret": "whsec_…"}
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Deliveries signed further than this from our clock are refused (replays).
const TOLERANCE_SECS: u64 = 300;

#[tokio::main]
async fn main() -> ExitCode {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".to_owned());
    let Ok(secret) = std::env::var("WEBHOOK_SECRET") else {
        eprintln!("set WEBHOOK_SECRET to the webhook's secret");
        return ExitCode::from(2);
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/events", post(receive))
        .with_state(Arc::new(secret.into_bytes()));
    eprintln!("listening on http://{addr}/events");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn receive(
    State(secret): State<Arc<Vec<u8>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if !verified(&secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("X-Salesboy-Event-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    // Delivery is at least once: a real receiver records `id` and skips one it has seen.
    println!("{id} {}", String::from_utf8_lossy(&body));
    StatusCode::NO_CONTENT
}

/// `X-Salesboy-Signature-256` is `sha256=` + hex HMAC-SHA256 of `timestamp + "." + body`.
fn verified(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (
        header("X-Salesboy-Timestamp"),
        header("X-Salesboy-Signature-256"),
    ) else {
        return false;
    };
    let Ok(signed_at) = timestamp.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(signed_at) > TOLERANCE_SECS {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}
