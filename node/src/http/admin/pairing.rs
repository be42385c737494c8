//! `/tenants/{id}/session/qr`, `…/session/pair_code` and `…/session/logout`: linking a `web`
//! tenant's number and unlinking it. The work is in [`crate::api::pairing`].

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiJson, ApiPath, ErrorBody, TenantRefusals};
use super::{AppState, tenant_id};
use crate::api::ApiError;
use crate::api::pairing::{self, PairCodeRequest, PairCodeView, QrView};
use crate::api::tenants::SessionStatusView;

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(session_qr))
        .routes(routes!(session_pair_code))
        .routes(routes!(session_logout))
}

/// The QR code that links a `web` tenant's number: the current one, or the first of a
/// session that starts pairing now (waits up to 15 s for it). As text and as an SVG image.
#[utoipa::path(
    get, path = "/tenants/{id}/session/qr", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the QR code to scan", body = QrView),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
        (status = 409, description = "not a web tenant (`not_web`), its device is linked (`already_paired`) or its session is stopped", body = ErrorBody),
        (status = 503, description = "no QR code yet (the session is connecting) or no session can run", body = ErrorBody),
    )
)]
pub(super) async fn session_qr(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QrView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(pairing::qr(&state.api(), &id).await?))
}

/// An 8-character pairing code that links a `web` tenant's number to the account of
/// `phone`: the owner types it on that phone (WhatsApp, *Linked devices*, *Link with phone
/// number instead*).
#[utoipa::path(
    post, path = "/tenants/{id}/session/pair_code", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    request_body = PairCodeRequest,
    responses(
        (status = 200, description = "the pairing code", body = PairCodeView),
        (status = 400, description = "invalid id or phone number", body = ErrorBody),
        TenantRefusals,
        (status = 409, description = "not a web tenant, its device is linked, not connected, or its session is stopped", body = ErrorBody),
        (status = 502, description = "WhatsApp refused", body = ErrorBody),
        (status = 503, description = "no session can run", body = ErrorBody),
    )
)]
pub(super) async fn session_pair_code(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<PairCodeRequest>,
) -> Result<Json<PairCodeView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(pairing::pair_code(&state.api(), &id, request).await?))
}

/// Unlinks a `web` tenant's device: the phone's list of linked devices forgets it, and
/// pairing again is needed. Answers the session status (`logged_out`).
#[utoipa::path(
    post, path = "/tenants/{id}/session/logout", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the device is unlinked", body = SessionStatusView),
        (status = 400, description = "invalid id", body = ErrorBody),
        TenantRefusals,
        (status = 409, description = "not a web tenant, or its session is stopped", body = ErrorBody),
        (status = 502, description = "WhatsApp refused", body = ErrorBody),
        (status = 503, description = "no session can run", body = ErrorBody),
    )
)]
pub(super) async fn session_logout(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionStatusView>, ApiError> {
    let id = tenant_id("id", id)?;
    Ok(Json(pairing::logout(&state.api(), &id).await?))
}
