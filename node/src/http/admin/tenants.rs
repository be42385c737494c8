//! `/tenants` and `/tenants/{id}`: tenants and their WhatsApp numbers, shown without secrets.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use salesboy_actors::command::TenantCommand;
use salesboy_actors::store::{NewTenant, NewWhatsAppNumber, Tenant};
use salesboy_actors::tenant::TenantSnapshot;
use salesboy_protocol::PhoneNumberId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{AdminError, ApiJson, ApiPath, ErrorBody};
use super::{AppState, existing_tenant, now_ms, tenant_id};
use crate::adapters::llm::{redacted_llm_config, validate_llm_config};

/// The routes of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tenants, upsert_tenant))
        .routes(routes!(show_tenant))
}

/// Creates or updates a tenant and attaches a WhatsApp number to it. On update, absent
/// optional fields keep their stored values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantRequest {
    /// The tenant's id: ASCII letters, digits, `_` and `-`, at most 64.
    #[schema(example = "acme")]
    id: String,
    /// Meta's phone number id of the tenant's WhatsApp business number (digits).
    #[schema(example = "106540352242922")]
    phone_number_id: String,
    /// The Cloud API access token of that number. Stored, never returned.
    access_token: String,
    /// Display name of the business; defaults to the id.
    #[schema(example = "Acme Shoes")]
    name: Option<String>,
    /// The assistant's system prompt; `""` goes back to the default prompt.
    system_prompt: Option<String>,
    /// LLM providers in fallback order (see docs/api.md); `[]` means the offline responder
    /// (retrieval only); absent on create: the node's default providers.
    #[schema(value_type = Option<Vec<Object>>)]
    llm: Option<serde_json::Value>,
    /// The WhatsApp Business Account id.
    waba_id: Option<String>,
}

/// One WhatsApp number of a tenant (without its access token).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct NumberView {
    /// Meta's phone number id.
    phone_number_id: String,
    /// The WhatsApp Business Account id, if known.
    waba_id: Option<String>,
}

/// A tenant, without secrets.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantView {
    /// The tenant's id.
    id: String,
    /// Display name.
    name: String,
    /// The assistant's system prompt; `null` is the default prompt.
    system_prompt: Option<String>,
    /// The LLM providers with API keys redacted; `null` when the tenant has no list of its
    /// own.
    #[schema(value_type = Option<Vec<Object>>)]
    llm: Option<serde_json::Value>,
    /// The tenant's WhatsApp numbers.
    numbers: Vec<NumberView>,
    /// Changes whenever the knowledge base changes.
    knowledge_version: i64,
    /// When the tenant was created (unix ms).
    created_ms: i64,
    /// Whether the tenant is hosted (its actors running) on this node.
    active: bool,
}

/// A tenant with the live state of its actors.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantDetail {
    #[serde(flatten)]
    tenant: TenantView,
    /// The tenant supervisor's snapshot (session, responder, conversations, restarts);
    /// `null` when the tenant is not hosted on this node.
    #[schema(value_type = Option<Object>)]
    state: Option<TenantSnapshot>,
}

fn tenant_view(tenant: Tenant, active: bool) -> TenantView {
    TenantView {
        id: tenant.id.to_string(),
        name: tenant.name,
        system_prompt: tenant.system_prompt,
        llm: tenant.llm_config.as_deref().map(redacted_llm_config),
        numbers: tenant
            .numbers
            .into_iter()
            .map(|n| NumberView {
                phone_number_id: n.phone_number_id.to_string(),
                waba_id: n.waba_id,
            })
            .collect(),
        knowledge_version: tenant.knowledge_version,
        created_ms: tenant.created_ms,
        active,
    }
}

async fn tenant_detail(state: &AppState, tenant: Tenant) -> TenantDetail {
    let snapshot = state.node.observe_tenant(&tenant.id).await;
    TenantDetail {
        tenant: tenant_view(tenant, snapshot.is_some()),
        state: snapshot,
    }
}

/// Lists every tenant (without live state), ordered by id.
#[utoipa::path(
    get, path = "/tenants", tag = "tenants",
    responses(
        (status = 200, description = "every tenant", body = [TenantView]),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn list_tenants(
    State(state): State<AppState>,
) -> Result<Json<Vec<TenantView>>, AdminError> {
    let tenants = state.store.list_tenants().await?;
    let mut views = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let active = state.node.observe_tenant(&tenant.id).await.is_some();
        views.push(tenant_view(tenant, active));
    }
    Ok(Json(views))
}

/// Creates or updates a tenant and attaches its WhatsApp number.
#[utoipa::path(
    post, path = "/tenants", tag = "tenants",
    request_body = TenantRequest,
    responses(
        (status = 201, description = "tenant created", body = TenantDetail),
        (status = 200, description = "tenant updated", body = TenantDetail),
        (status = 400, description = "invalid field", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 409, description = "the number belongs to another tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn upsert_tenant(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TenantRequest>,
) -> Result<(StatusCode, Json<TenantDetail>), AdminError> {
    let id = tenant_id("id", request.id)?;
    let phone_number_id = PhoneNumberId::new(request.phone_number_id)
        .map_err(|e| AdminError::invalid("phone_number_id", e))?;
    let access_token = request.access_token.trim();
    if access_token.is_empty() {
        return Err(AdminError::invalid("access_token", "must not be empty"));
    }
    let name = match request.name.as_deref().map(str::trim) {
        Some("") => return Err(AdminError::invalid("name", "must not be empty")),
        name => name.map(str::to_owned),
    };
    let llm_config = match request.llm {
        None | Some(serde_json::Value::Null) => None,
        Some(llm) => {
            // The reason names the field itself (`llm[1].model: missing`).
            validate_llm_config(&llm).map_err(AdminError::Malformed)?;
            let text = serde_json::to_string(&llm)
                .map_err(|e| AdminError::invalid("llm", e.to_string().to_lowercase()))?;
            Some(text)
        }
    };
    let waba_id = request
        .waba_id
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty());

    let existing = state.store.tenant(&id).await?;
    if let Some(route) = state.store.tenant_by_phone_number(&phone_number_id).await?
        && route.tenant != id
    {
        return Err(AdminError::NumberTaken {
            number: phone_number_id,
            owner: route.tenant,
        });
    }
    let (stored_name, stored_prompt, stored_llm, stored_waba) = match &existing {
        Some(tenant) => (
            Some(tenant.name.clone()),
            tenant.system_prompt.clone(),
            tenant.llm_config.clone(),
            tenant
                .numbers
                .iter()
                .find(|n| n.phone_number_id == phone_number_id)
                .and_then(|n| n.waba_id.clone()),
        ),
        None => (None, None, None, None),
    };
    let system_prompt = match request.system_prompt {
        Some(prompt) if prompt.trim().is_empty() => None,
        Some(prompt) => Some(prompt),
        None => stored_prompt,
    };
    let tenant = NewTenant {
        id: id.clone(),
        name: name.or(stored_name).unwrap_or_else(|| id.to_string()),
        system_prompt,
        llm_config: llm_config.or(stored_llm),
        created_ms: now_ms(&state),
    };
    state.store.upsert_tenant(&tenant).await?;
    let number = NewWhatsAppNumber {
        tenant: id.clone(),
        phone_number_id: phone_number_id.clone(),
        waba_id: waba_id.or(stored_waba),
        access_token: salesboy_actors::store::AccessToken::new(access_token),
    };
    state.store.upsert_whatsapp_number(&number).await?;
    state.ingress.forget_phone_number(&phone_number_id).await;
    // Only a hosted tenant needs telling; one hosted nowhere reads its record when activated.
    if let Some(cluster) = &state.cluster {
        if cluster.directory().cached(&id).is_some()
            && let Err(e) = state.router.deliver(&id, TenantCommand::Reload).await
        {
            warn!(tenant = %id, error = %e, "running tenant not told about its update");
        }
    } else {
        // Reaches only a tenant hosted here, and never fails.
        let _ = state.node.deliver(&id, TenantCommand::Reload).await;
    }
    let created = existing.is_none();
    info!(tenant = %id, phone_number_id = %phone_number_id, created, "tenant saved");

    let saved = state
        .store
        .tenant(&id)
        .await?
        .ok_or_else(|| AdminError::Internal(format!("tenant {id} vanished after saving")))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(tenant_detail(&state, saved).await)))
}

/// One tenant with the live state of its actors.
#[utoipa::path(
    get, path = "/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant", body = TenantDetail),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
pub(super) async fn show_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantDetail>, AdminError> {
    let id = tenant_id("id", id)?;
    let tenant = existing_tenant(&state, &id).await?;
    Ok(Json(tenant_detail(&state, tenant).await))
}
