//! The WhatsApp webhook: `GET /webhooks/whatsapp` (subscription handshake) and
//! `POST /webhooks/whatsapp` (signed deliveries).
//!
//! A delivery is answered only after everything in it is persisted (architecture §5):
//!
//! 1. the `X-Hub-Signature-256` is checked over the raw bytes (401 when missing or wrong;
//!    503 when no app secret is configured, so Meta retries once it is);
//! 2. the body is parsed (400 with the reason when malformed);
//! 3. each item is routed to its tenant by `phone_number_id` and persisted: inbound messages
//!    (deduplicated on the wamid), status updates (applied only when they move forward) and
//!    echoes (the owner wrote from the WhatsApp app). Unknown numbers, unknown wamids and
//!    unsupported items are logged and acknowledged; one bad item never loses the others;
//! 4. a database that cannot be reached answers 503 (Meta retries; what was persisted is
//!    deduplicated on the retry);
//! 5. then 200, and the new inbound messages and echoes are handed to their tenants' actors
//!    in the background. If that hand-off is lost, the node's sweep finds the messages.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use salesboy_actors::conversation::InboundItem;
use salesboy_actors::store::{
    self, InsertOutcome, NewInbound, NewOutbound, OutboundOrigin, SendFailure, StatusOutcome,
    StoreError,
};
use salesboy_protocol::whatsapp::inbound::{DeliveryStatus, WebhookEvent};
use salesboy_protocol::whatsapp::signature::{self, SIGNATURE_HEADER};
use salesboy_protocol::whatsapp::webhook::{MAX_WEBHOOK_BODY_BYTES, parse_webhook};
use salesboy_protocol::{ChatId, Codec, PhoneNumberId, TenantId};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::AppState;
use crate::cluster::wire::TenantCommand;
use crate::routing::Router as TenantRouter;

/// The webhook's path.
pub const PATH: &str = "/webhooks/whatsapp";

/// The webhook routes, with a body limit of [`MAX_WEBHOOK_BODY_BYTES`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PATH, get(handshake).post(receive))
        .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BODY_BYTES))
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
        warn!("webhook delivery refused: no app secret configured (SALESBOY_WHATSAPP_APP_SECRET)");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unconfigured",
            "webhook app secret is not configured".into(),
        );
    };
    let header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    if let Err(e) = signature::verify_signature(secret.expose_secret().as_bytes(), &body, header) {
        warn!(error = %e, "webhook delivery refused: bad signature");
        return error(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string());
    }
    let parsed = match parse_webhook(&body) {
        Ok(parsed) => parsed,
        Err(e) => {
            warn!(error = %e, "webhook delivery refused: malformed body");
            return error(StatusCode::BAD_REQUEST, "malformed", e.to_string());
        }
    };
    match persist(&state, parsed.events()).await {
        Ok(handoffs) => {
            metrics::counter!("salesboy_webhook_requests_total", "outcome" => "accepted")
                .increment(1);
            if !handoffs.is_empty() {
                let router = state.router.clone();
                tokio::spawn(async move { hand_off(&router, handoffs).await });
            }
            StatusCode::OK.into_response()
        }
        Err(e) => {
            warn!(error = %e, "webhook delivery not persisted, asking meta to retry");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "storage unavailable, retry later".into(),
            )
        }
    }
}

/// Work for the actors once the body is persisted.
enum Handoff {
    Inbound {
        tenant: TenantId,
        chat: ChatId,
        item: InboundItem,
    },
    OwnerActivity {
        tenant: TenantId,
        chat: ChatId,
        at_ms: i64,
    },
}

/// Persists every item; returns what to hand to the actors. Fails only when the database
/// is unavailable (the whole delivery is then retried by Meta).
async fn persist(state: &AppState, events: Vec<WebhookEvent>) -> Result<Vec<Handoff>, StoreError> {
    let mut handoffs = Vec::new();
    let now_ms = state.node.services().clock.now_ms();
    for event in events {
        let result = match event {
            WebhookEvent::Inbound {
                phone_number_id,
                message,
                ..
            } => {
                let Some(tenant) = tenant_for(state, &phone_number_id).await? else {
                    continue;
                };
                let new = NewInbound {
                    tenant: tenant.clone(),
                    chat: message.from.clone(),
                    wamid: message.wamid.clone(),
                    received_ms: now_ms,
                    kind: message.content.kind().to_owned(),
                    body: message.text_for_assistant(),
                    raw: Codec::Json
                        .encode(&message)
                        .ok()
                        .and_then(|raw| String::from_utf8(raw).ok()),
                };
                state.store.insert_inbound(&new).await.map(|outcome| match outcome {
                    InsertOutcome::Inserted { id } => {
                        metrics::counter!("salesboy_messages_in_total", "outcome" => "new").increment(1);
                        let item = InboundItem { id, wamid: Some(new.wamid), text: new.body, received_ms: now_ms };
                        handoffs.push(Handoff::Inbound { tenant, chat: new.chat, item });
                    }
                    InsertOutcome::Duplicate { id } => {
                        metrics::counter!("salesboy_messages_in_total", "outcome" => "duplicate").increment(1);
                        debug!(tenant = %tenant, id, "duplicate inbound message ignored");
                    }
                })
            }
            WebhookEvent::Status {
                phone_number_id,
                status,
                ..
            } => {
                let Some(tenant) = tenant_for(state, &phone_number_id).await? else {
                    continue;
                };
                let update = store::StatusUpdate {
                    tenant: tenant.clone(),
                    wamid: status.wamid.clone(),
                    status: delivery_status(status.status),
                    at_ms: seconds_to_ms(status.timestamp),
                    error: status.errors.first().map(|e| SendFailure {
                        code: Some(e.code),
                        title: e.title.clone(),
                    }),
                };
                state.store.update_status(&update).await.map(|outcome| match outcome {
                    StatusOutcome::Advanced => {}
                    StatusOutcome::Ignored => debug!(tenant = %tenant, wamid = %update.wamid, status = status.status.as_str(), "status did not move forward, ignored"),
                    StatusOutcome::UnknownMessage => info!(tenant = %tenant, wamid = %update.wamid, status = status.status.as_str(), "status for an unknown message, acknowledged"),
                })
            }
            WebhookEvent::Echo {
                phone_number_id,
                echo,
                ..
            } => {
                let Some(tenant) = tenant_for(state, &phone_number_id).await? else {
                    continue;
                };
                let at_ms = seconds_to_ms(echo.timestamp);
                let new = NewOutbound {
                    tenant: tenant.clone(),
                    chat: echo.to.clone(),
                    origin: OutboundOrigin::Echo,
                    wamid: Some(echo.wamid.clone()),
                    kind: echo.content.kind().to_owned(),
                    body: echo.content.text_for_assistant(),
                    created_ms: at_ms,
                    epoch: None,
                };
                state.store.record_outbound(&new).await.map(|outcome| {
                    if matches!(outcome, InsertOutcome::Inserted { .. }) {
                        handoffs.push(Handoff::OwnerActivity {
                            tenant,
                            chat: new.chat,
                            at_ms,
                        });
                    }
                })
            }
            WebhookEvent::Ignored {
                phone_number_id,
                reason,
                ..
            } => {
                info!(phone_number_id = phone_number_id.as_ref().map(PhoneNumberId::as_str), %reason, "webhook item ignored");
                Ok(())
            }
        };
        match result {
            Ok(()) => {}
            Err(e @ StoreError::Unavailable { .. }) => return Err(e),
            // One bad item must not lose the others.
            Err(e) => warn!(error = %e, "webhook item not persisted"),
        }
    }
    Ok(handoffs)
}

/// The tenant owning a phone number id; unknown numbers are logged and skipped.
async fn tenant_for(
    state: &AppState,
    phone_number_id: &PhoneNumberId,
) -> Result<Option<TenantId>, StoreError> {
    if let Some(cached) = state.phone_routes.get(phone_number_id).await {
        return Ok(cached);
    }
    let tenant = state
        .store
        .tenant_by_phone_number(phone_number_id)
        .await?
        .map(|route| route.tenant);
    state
        .phone_routes
        .insert(phone_number_id.clone(), tenant.clone())
        .await;
    if tenant.is_none() {
        metrics::counter!("salesboy_webhook_unknown_numbers_total").increment(1);
        warn!(phone_number_id = %phone_number_id, "webhook for an unknown phone number, acknowledged and dropped");
    }
    Ok(tenant)
}

async fn hand_off(router: &TenantRouter, handoffs: Vec<Handoff>) {
    for handoff in handoffs {
        let (tenant, command) = match handoff {
            Handoff::Inbound { tenant, chat, item } => {
                (tenant, TenantCommand::Inbound { chat, item })
            }
            Handoff::OwnerActivity {
                tenant,
                chat,
                at_ms,
            } => (tenant, TenantCommand::OwnerActivity { chat, at_ms }),
        };
        if let Err(e) = router.deliver(&tenant, command).await {
            // Persisted: the sweep re-routes it once the tenant can be activated.
            warn!(tenant = %tenant, error = %e, "persisted message not handed to its tenant yet");
        }
    }
}

fn delivery_status(status: DeliveryStatus) -> store::DeliveryStatus {
    match status {
        DeliveryStatus::Sent => store::DeliveryStatus::Sent,
        DeliveryStatus::Delivered => store::DeliveryStatus::Delivered,
        DeliveryStatus::Read => store::DeliveryStatus::Read,
        DeliveryStatus::Failed => store::DeliveryStatus::Failed,
    }
}

fn seconds_to_ms(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}
