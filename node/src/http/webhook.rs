//! The WhatsApp webhook: `GET /webhooks/whatsapp` (subscription handshake) and
//! `POST /webhooks/whatsapp` (signed deliveries).
//!
//! A delivery is answered only after everything in it is persisted (architecture §5):
//!
//! 0. before its body is read ([`precheck`]): no app secret configured is 503; a missing or
//!    malformed signature header is 401; a `Content-Length` over
//!    [`MAX_WEBHOOK_BODY_BYTES`] is 413 (a longer body without one is cut off at the limit,
//!    413 too). Nobody makes the node buffer 3 MiB without at least a well-formed signature;
//! 1. the `X-Hub-Signature-256` is checked over the raw bytes (401 when missing or wrong;
//!    503 when no app secret is configured, so Meta retries once it is);
//! 2. the body is parsed item by item ([`parse_webhook_items`]): only a body that is not
//!    JSON, or not a WhatsApp Business webhook at all, is refused (400 with the reason); an
//!    item that does not read (a bad id, an over-long `wa_id`, a missing field, an unknown
//!    shape) is rejected on its own, so one bad item never makes Meta retry a whole body
//!    (other tenants' messages included) for days;
//! 3. the node's [`Ingress`](crate::ingress::Ingress) persists each item and hands the new
//!    ones to their tenants (see its docs): rejected items are recorded (with their tenant
//!    when their number tells it, and its `message_rejected` event); unknown numbers,
//!    unknown wamids and unsupported items are logged and acknowledged;
//! 4. a database that cannot be reached answers 503 (Meta retries; what was persisted is
//!    deduplicated on the retry);
//! 5. then 200, while the new inbound messages and echoes go to their tenants' actors in
//!    the background. If that hand-off is lost, the node's sweep finds the messages.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use salesboy_protocol::whatsapp::signature::{self, SIGNATURE_HEADER};
use salesboy_protocol::whatsapp::webhook::{MAX_WEBHOOK_BODY_BYTES, parse_webhook_items};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tracing::{info, warn};

use super::AppState;

/// The webhook's path.
pub const PATH: &str = "/webhooks/whatsapp";

/// The webhook routes, with a body limit of [`MAX_WEBHOOK_BODY_BYTES`] and the
/// [`precheck`] of deliveries.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(PATH, get(handshake).post(receive))
        .route_layer(middleware::from_fn_with_state(state, precheck))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY_BYTES))
}

/// Refuses a delivery on its headers alone, before its body is read: no app secret (503),
/// no or a malformed signature (401), a declared length over the limit (413).
async fn precheck(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if state.http.app_secret.is_none() {
        return unconfigured();
    }
    let headers = request.headers();
    if let Err(e) = signature::parse_signature(signature_header(headers)) {
        warn!(error = %e, "webhook delivery refused before reading it: bad signature header");
        return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_WEBHOOK_BODY_BYTES as u64) {
        warn!(
            content_length = declared,
            "webhook delivery refused before reading it: too large"
        );
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body larger than {MAX_WEBHOOK_BODY_BYTES} bytes"),
        );
    }
    next.run(request).await
}

fn signature_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok())
}

fn unconfigured() -> Response {
    warn!("webhook delivery refused: no app secret configured (SALESBOY_WHATSAPP_APP_SECRET)");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unconfigured",
        "webhook app secret is not configured".into(),
    )
}

/// The handshake's query parameters.
#[derive(Debug, Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn handshake(State(state): State<AppState>, Query(query): Query<Handshake>) -> Response {
    let Some(expected) = &state.http.verify_token else {
        warn!(
            "webhook handshake refused: no verify token configured (SALESBOY_WHATSAPP_VERIFY_TOKEN)"
        );
        return StatusCode::FORBIDDEN.into_response();
    };
    match signature::subscription_challenge(
        query.mode.as_deref(),
        query.verify_token.as_deref(),
        query.challenge.as_deref(),
        expected.expose_secret(),
    ) {
        Some(challenge) => {
            info!("webhook subscription verified");
            challenge.to_owned().into_response()
        }
        None => {
            warn!("webhook handshake refused: wrong mode or verify token");
            StatusCode::FORBIDDEN.into_response()
        }
    }
}

fn error(status: StatusCode, outcome: &'static str, message: String) -> Response {
    metrics::counter!("salesboy_webhook_requests_total", "outcome" => outcome).increment(1);
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &state.http.app_secret else {
        return unconfigured();
    };
    let header = signature_header(&headers);
    if let Err(e) = signature::verify_signature(secret.expose_secret().as_bytes(), &body, header) {
        warn!(error = %e, "webhook delivery refused: bad signature");
        return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
    }
    let events = match parse_webhook_items(&body) {
        Ok(events) => events,
        Err(e) => {
            warn!(error = %e, "webhook delivery refused: not a whatsapp webhook body");
            return error(StatusCode::BAD_REQUEST, "malformed", e.to_string());
        }
    };
    match state.ingress.receive(events).await {
        Ok(_) => {
            metrics::counter!("salesboy_webhook_requests_total", "outcome" => "accepted")
                .increment(1);
            state.node.services().counters.webhooks.record(true);
            StatusCode::OK.into_response()
        }
        Err(e) => {
            warn!(error = %e, "webhook delivery not persisted, asking meta to retry");
            state.node.services().counters.webhooks.record(false);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage unavailable, retry later".into(),
            )
        }
    }
}
