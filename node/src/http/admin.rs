//! The admin API under `/api`: tenants and their WhatsApp numbers, knowledge documents,
//! conversations (messages, bot pause/resume, owner sends) and the cluster view.
//!
//! Every route but `GET /api/openapi.json` requires `Authorization: Bearer <admin token>`
//! (compared in constant time, never logged). Errors are JSON `{"error": "…"}`: 400 invalid
//! input (naming the field), 401 no or wrong token, 404 unknown tenant, document or route,
//! 409 a phone number owned by another tenant, 503 database unavailable or node at capacity,
//! 500 otherwise. Responses never carry access tokens or LLM API keys.
//!
//! [`ROUTES`] lists every route; the OpenAPI document ([`openapi`]) describes exactly those,
//! and a test checks both against the router. `docs/api.md` documents the API for people.

use crate::cluster::runtime::RouteError;
use crate::cluster::status::{ClusterStatus, NodeStatus};
use crate::cluster::wire::{CommandReply, TenantCommand};
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use salesboy_actors::node::ActivationError;
use salesboy_actors::store::{
    NewKnowledge, NewTenant, NewWhatsAppNumber, PAUSED_INDEFINITELY, StoreError, StoredMessage,
    Tenant,
};
use salesboy_actors::tenant::TenantSnapshot;
use salesboy_protocol::{ChatId, IdError, PhoneNumberId, TenantId};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::{info, warn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::AppState;
use crate::adapters::llm::{redacted_llm_config, validate_llm_config};
use crate::knowledge;

/// Every admin route as (lowercase method, full path); the OpenAPI document lists exactly
/// these.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/openapi.json"),
    ("get", "/api/tenants"),
    ("post", "/api/tenants"),
    ("get", "/api/tenants/{id}"),
    ("get", "/api/tenants/{id}/knowledge"),
    ("post", "/api/tenants/{id}/knowledge"),
    ("delete", "/api/tenants/{id}/knowledge/{doc_id}"),
    ("get", "/api/tenants/{id}/conversations/{wa_id}/messages"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/pause"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/resume"),
    ("post", "/api/tenants/{id}/conversations/{wa_id}/send"),
    ("get", "/api/cluster"),
];

/// Default number of messages `GET …/messages` returns.
pub const DEFAULT_MESSAGE_LIMIT: u32 = 100;

/// Most messages `GET …/messages` returns.
pub const MAX_MESSAGE_LIMIT: u32 = 1_000;

/// Longest owner message, in characters (WhatsApp's limit for a text body).
pub const MAX_SEND_CHARS: usize = 4_096;

/// Largest knowledge upload, in bytes.
pub const MAX_KNOWLEDGE_BYTES: usize = 8 * 1024 * 1024;

/// Longest knowledge document title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// The admin routes, relative to `/api` (the caller nests them there).
pub fn routes(state: AppState) -> Router<AppState> {
    let conversation = "/tenants/{id}/conversations/{wa_id}";
    let protected = Router::new()
        .route("/tenants", get(list_tenants).post(upsert_tenant))
        .route("/tenants/{id}", get(show_tenant))
        .route(
            "/tenants/{id}/knowledge",
            get(list_knowledge)
                .post(add_knowledge)
                .layer(DefaultBodyLimit::max(MAX_KNOWLEDGE_BYTES)),
        )
        .route("/tenants/{id}/knowledge/{doc_id}", delete(delete_knowledge))
        .route(&format!("{conversation}/messages"), get(messages))
        .route(&format!("{conversation}/pause"), post(pause))
        .route(&format!("{conversation}/resume"), post(resume))
        .route(&format!("{conversation}/send"), post(send))
        .route("/cluster", get(cluster))
        .route_layer(middleware::from_fn_with_state(state, require_admin_token));
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(protected)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The admin API's OpenAPI 3 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

// ----- errors -----

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
struct ErrorBody {
    /// What went wrong, lowercase.
    #[schema(example = "unknown tenant acme")]
    error: String,
}

/// An error answer: a status and a lowercase message.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 for a bad `field`.
    fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("{field}: {reason}"))
    }

    fn unknown_tenant(tenant: &TenantId) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown tenant {tenant}"))
    }

    /// An extractor's rejection, with its status unless it is a plain client error.
    fn rejected(status: StatusCode, text: String) -> Self {
        let status = if status == StatusCode::PAYLOAD_TOO_LARGE {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        Self::new(status, lowercase_first(&text))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = self.status.as_u16(), error = %self.message, "admin request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::Unavailable { .. } | StoreError::StaleEpoch { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
            StoreError::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error.to_string())
    }
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> Self {
        let status = match &error {
            RouteError::UnknownTenant(_) => StatusCode::NOT_FOUND,
            RouteError::Unplaceable { .. } | RouteError::Unreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            RouteError::Refused(_) => StatusCode::CONFLICT,
        };
        Self::new(status, error.to_string())
    }
}

impl From<ActivationError> for ApiError {
    fn from(error: ActivationError) -> Self {
        let status = match &error {
            ActivationError::UnknownTenant(_) => StatusCode::NOT_FOUND,
            ActivationError::AtCapacity { .. }
            | ActivationError::Unavailable { .. }
            | ActivationError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            // "Failed to deserialize the JSON body into the target type: id: invalid type…":
            // keep the reason, which names the field.
            JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
                let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
                Self::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid json body: {reason}"),
                )
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "expected content-type: application/json",
            ),
            other => Self::rejected(other.status(), text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::rejected(rejection.status(), rejection.body_text())
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `axum::Json` whose rejections are JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct ApiJson<T>(T);

/// `axum::extract::Path` whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
struct ApiPath<T>(T);

/// `axum::extract::Query` whose rejections are JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct ApiQuery<T>(T);

async fn unknown_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such admin route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

// ----- authentication -----

/// Lets the request through only with `Authorization: Bearer <admin token>`.
async fn require_admin_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let refusal = match presented {
        Some(token) if token_matches(token, state.http.admin_token.expose_secret()) => {
            return next.run(request).await;
        }
        Some(_) => "invalid admin token",
        None => "missing admin token: send authorization: bearer <token>",
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, refusal).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Constant-time comparison; an empty configured token matches nothing.
fn token_matches(presented: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

// ----- validation helpers -----

fn tenant_id(field: &str, value: String) -> Result<TenantId, ApiError> {
    TenantId::new(value).map_err(|e: IdError| ApiError::invalid(field, e))
}

fn chat_id(value: String) -> Result<ChatId, ApiError> {
    ChatId::new(value).map_err(|e| ApiError::invalid("wa_id", e))
}

/// The tenant, or 404.
async fn existing_tenant(state: &AppState, id: &TenantId) -> Result<Tenant, ApiError> {
    state
        .store
        .tenant(id)
        .await?
        .ok_or_else(|| ApiError::unknown_tenant(id))
}

fn now_ms(state: &AppState) -> i64 {
    state.node.services().clock.now_ms()
}

// ----- tenants -----

/// Creates or updates a tenant and attaches a WhatsApp number to it. On update, absent
/// optional fields keep their stored values.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantRequest {
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
struct NumberView {
    /// Meta's phone number id.
    phone_number_id: String,
    /// The WhatsApp Business Account id, if known.
    waba_id: Option<String>,
}

/// A tenant, without secrets.
#[derive(Debug, Serialize, ToSchema)]
struct TenantView {
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
struct TenantDetail {
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
    get, path = "/api/tenants", tag = "tenants",
    responses(
        (status = 200, description = "every tenant", body = [TenantView]),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn list_tenants(State(state): State<AppState>) -> Result<Json<Vec<TenantView>>, ApiError> {
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
    post, path = "/api/tenants", tag = "tenants",
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
async fn upsert_tenant(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TenantRequest>,
) -> Result<(StatusCode, Json<TenantDetail>), ApiError> {
    let id = tenant_id("id", request.id)?;
    let phone_number_id = PhoneNumberId::new(request.phone_number_id)
        .map_err(|e| ApiError::invalid("phone_number_id", e))?;
    let access_token = request.access_token.trim();
    if access_token.is_empty() {
        return Err(ApiError::invalid("access_token", "must not be empty"));
    }
    let name = match request.name.as_deref().map(str::trim) {
        Some("") => return Err(ApiError::invalid("name", "must not be empty")),
        name => name.map(str::to_owned),
    };
    let llm_config = match request.llm {
        None | Some(serde_json::Value::Null) => None,
        Some(llm) => {
            // The reason names the field itself (`llm[1].model: missing`).
            validate_llm_config(&llm)
                .map_err(|reason| ApiError::new(StatusCode::BAD_REQUEST, reason))?;
            let text = serde_json::to_string(&llm)
                .map_err(|e| ApiError::invalid("llm", e.to_string().to_lowercase()))?;
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
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "phone_number_id: {phone_number_id} already belongs to tenant {}",
                route.tenant
            ),
        ));
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
        state.node.reload_tenant(&id);
    }
    let created = existing.is_none();
    info!(tenant = %id, phone_number_id = %phone_number_id, created, "tenant saved");

    let saved = state.store.tenant(&id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("tenant {id} vanished after saving"),
        )
    })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(tenant_detail(&state, saved).await)))
}

/// One tenant with the live state of its actors.
#[utoipa::path(
    get, path = "/api/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant", body = TenantDetail),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn show_tenant(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantDetail>, ApiError> {
    let id = tenant_id("id", id)?;
    let tenant = existing_tenant(&state, &id).await?;
    Ok(Json(tenant_detail(&state, tenant).await))
}

// ----- knowledge -----

/// A document to add to a tenant's knowledge base.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct KnowledgeRequest {
    /// The document's title.
    #[schema(example = "Delivery and returns")]
    title: String,
    /// The document's text; split into passages of about 500–800 characters.
    text: String,
}

/// A document added.
#[derive(Debug, Serialize, ToSchema)]
struct KnowledgeAdded {
    /// The new document's id.
    document_id: i64,
    /// How many passages it was split into.
    chunks: usize,
    /// The tenant's knowledge version after the change.
    knowledge_version: i64,
}

/// A knowledge document, without its text.
#[derive(Debug, Serialize, ToSchema)]
struct DocumentView {
    /// The document's id.
    id: i64,
    /// Its title.
    title: String,
    /// How many passages it has.
    chunk_count: i64,
    /// When it was added (unix ms).
    created_ms: i64,
}

/// A document deleted.
#[derive(Debug, Serialize, ToSchema)]
struct KnowledgeDeleted {
    /// The deleted document's id.
    document_id: i64,
    /// The tenant's knowledge version after the change.
    knowledge_version: i64,
}

/// Adds a document to a tenant's knowledge base.
#[utoipa::path(
    post, path = "/api/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    request_body = KnowledgeRequest,
    responses(
        (status = 201, description = "document added", body = KnowledgeAdded),
        (status = 400, description = "invalid field", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 413, description = "larger than 8 MiB", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn add_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<KnowledgeRequest>,
) -> Result<(StatusCode, Json<KnowledgeAdded>), ApiError> {
    let id = tenant_id("id", id)?;
    let title = request.title.trim();
    if title.is_empty() {
        return Err(ApiError::invalid("title", "must not be empty"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(
            "title",
            format!("at most {MAX_TITLE_CHARS} characters"),
        ));
    }
    let chunks = knowledge::chunk(&request.text);
    if chunks.is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let chunk_count = chunks.len();
    let document = NewKnowledge {
        tenant: id.clone(),
        title: title.to_owned(),
        chunks,
        created_ms: now_ms(&state),
    };
    let document_id = state
        .store
        .add_knowledge(&document)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::unknown_tenant(&id),
            other => other.into(),
        })?;
    let knowledge_version = state.store.knowledge_version(&id).await?;
    info!(tenant = %id, document_id, chunks = chunk_count, "knowledge document added");
    Ok((
        StatusCode::CREATED,
        Json(KnowledgeAdded {
            document_id,
            chunks: chunk_count,
            knowledge_version,
        }),
    ))
}

/// Lists a tenant's knowledge documents, oldest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/knowledge", tag = "knowledge",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the documents", body = [DocumentView]),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn list_knowledge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<DocumentView>>, ApiError> {
    let id = tenant_id("id", id)?;
    existing_tenant(&state, &id).await?;
    let documents = state.store.list_knowledge(&id).await?;
    Ok(Json(
        documents
            .into_iter()
            .map(|d| DocumentView {
                id: d.id,
                title: d.title,
                chunk_count: d.chunk_count,
                created_ms: d.created_ms,
            })
            .collect(),
    ))
}

/// Deletes a knowledge document.
#[utoipa::path(
    delete, path = "/api/tenants/{id}/knowledge/{doc_id}", tag = "knowledge",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("doc_id" = i64, Path, description = "document id"),
    ),
    responses(
        (status = 200, description = "document deleted", body = KnowledgeDeleted),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant or document", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn delete_knowledge(
    State(state): State<AppState>,
    ApiPath((id, doc_id)): ApiPath<(String, String)>,
) -> Result<Json<KnowledgeDeleted>, ApiError> {
    let id = tenant_id("id", id)?;
    let document_id: i64 = doc_id
        .parse()
        .map_err(|_| ApiError::invalid("doc_id", format!("expected a number, got {doc_id:?}")))?;
    existing_tenant(&state, &id).await?;
    if !state.store.delete_knowledge(&id, document_id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown knowledge document {document_id} of tenant {id}"),
        ));
    }
    let knowledge_version = state.store.knowledge_version(&id).await?;
    info!(tenant = %id, document_id, "knowledge document deleted");
    Ok(Json(KnowledgeDeleted {
        document_id,
        knowledge_version,
    }))
}

// ----- conversations -----

/// `?limit=` of the messages route.
#[derive(Debug, Deserialize)]
struct MessagesQuery {
    limit: Option<String>,
}

/// Why an outbound message failed.
#[derive(Debug, Serialize, ToSchema)]
struct FailureView {
    /// Meta's error code, if the failure came from Meta.
    code: Option<i64>,
    /// Meta's error title, or the sender's description.
    title: String,
}

/// One message of a chat.
#[derive(Debug, Serialize, ToSchema)]
struct MessageView {
    /// The message's id.
    id: i64,
    /// `inbound` or `outbound`.
    #[schema(example = "outbound")]
    direction: String,
    /// Who wrote an outbound message: `bot`, `owner` or `echo`; `null` for inbound.
    origin: Option<String>,
    /// Meta's message id; `null` for an outbound message not sent yet.
    wamid: Option<String>,
    /// Message type (`text`, `image`, …).
    kind: String,
    /// The text, if any.
    body: Option<String>,
    /// `pending`, `sent`, `delivered`, `read` or `failed`; `null` for inbound.
    status: Option<String>,
    /// When the status last changed (unix ms).
    status_ms: Option<i64>,
    /// Why it failed.
    failure: Option<FailureView>,
    /// When it was received or recorded (unix ms).
    created_ms: i64,
}

impl From<StoredMessage> for MessageView {
    fn from(message: StoredMessage) -> Self {
        Self {
            id: message.id,
            direction: message.direction.as_str().to_owned(),
            origin: message.origin.map(|o| o.as_str().to_owned()),
            wamid: message.wamid.map(|w| w.to_string()),
            kind: message.kind,
            body: message.body,
            status: message.status.map(|s| s.as_str().to_owned()),
            status_ms: message.status_ms,
            failure: message.failure.map(|f| FailureView {
                code: f.code,
                title: f.title,
            }),
            created_ms: message.created_ms,
        }
    }
}

/// A chat's recent messages.
#[derive(Debug, Serialize, ToSchema)]
struct MessagesResponse {
    /// The customer's WhatsApp id.
    chat: String,
    /// The bot is paused in this chat until then (unix ms; 9223372036854775807 = until
    /// resumed); `null` when not paused.
    bot_paused_until_ms: Option<i64>,
    /// The last messages, oldest first.
    messages: Vec<MessageView>,
}

/// Pause length; without a body the bot is paused until resumed.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PauseRequest {
    /// Minutes to pause for; absent = until resumed.
    #[schema(example = 60)]
    minutes: Option<u32>,
}

/// The bot's pause state in a chat.
#[derive(Debug, Serialize, ToSchema)]
struct PauseState {
    /// The customer's WhatsApp id.
    chat: String,
    /// Paused until then (unix ms; 9223372036854775807 = until resumed); `null` = answering.
    bot_paused_until_ms: Option<i64>,
}

/// A message for the owner to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    /// The text, 1 to 4096 characters.
    #[schema(example = "Hi, this is Anna from Acme: your order ships today.")]
    text: String,
}

/// A message accepted for sending.
#[derive(Debug, Serialize, ToSchema)]
struct SendAccepted {
    /// The recorded outbound message's id (see the messages route for its status).
    outbound_id: i64,
}

fn conversation_ids((id, wa_id): (String, String)) -> Result<(TenantId, ChatId), ApiError> {
    Ok((tenant_id("id", id)?, chat_id(wa_id)?))
}

/// A chat's last messages, both directions, oldest first.
#[utoipa::path(
    get, path = "/api/tenants/{id}/conversations/{wa_id}/messages", tag = "conversations",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("wa_id" = String, Path, description = "the customer's WhatsApp id"),
        ("limit" = Option<u32>, Query, description = "how many messages, 1 to 1000 (default 100)"),
    ),
    responses(
        (status = 200, description = "the messages", body = MessagesResponse),
        (status = 400, description = "invalid id or limit", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "database unavailable", body = ErrorBody),
    )
)]
async fn messages(
    State(state): State<AppState>,
    ApiPath(ids): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let (id, chat) = conversation_ids(ids)?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_MESSAGE_LIMIT,
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| (1..=MAX_MESSAGE_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("expected a whole number from 1 to {MAX_MESSAGE_LIMIT}, got {text:?}"),
                )
            })?,
    };
    existing_tenant(&state, &id).await?;
    let conversation = state.store.conversation(&id, &chat).await?;
    let messages = state.store.conversation_messages(&id, &chat, limit).await?;
    Ok(Json(MessagesResponse {
        chat: chat.to_string(),
        bot_paused_until_ms: conversation.and_then(|c| c.bot_paused_until_ms),
        messages: messages.into_iter().map(MessageView::from).collect(),
    }))
}

/// Pauses the bot in a chat, for some minutes or until resumed.
#[utoipa::path(
    post, path = "/api/tenants/{id}/conversations/{wa_id}/pause", tag = "conversations",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("wa_id" = String, Path, description = "the customer's WhatsApp id"),
    ),
    request_body = Option<PauseRequest>,
    responses(
        (status = 200, description = "paused", body = PauseState),
        (status = 400, description = "invalid id or minutes", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
async fn pause(
    State(state): State<AppState>,
    ApiPath(ids): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<PauseState>, ApiError> {
    let (id, chat) = conversation_ids(ids)?;
    // The body is optional, so it is read as bytes: no content type needed when empty.
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        PauseRequest::default()
    } else {
        Json::<PauseRequest>::from_bytes(&body)?.0
    };
    let until_ms = match request.minutes {
        None => PAUSED_INDEFINITELY,
        Some(0) => return Err(ApiError::invalid("minutes", "must be at least 1")),
        Some(minutes) => now_ms(&state).saturating_add(i64::from(minutes) * 60_000),
    };
    state
        .router
        .deliver(
            &id,
            TenantCommand::SetPaused {
                chat: chat.clone(),
                until_ms: Some(until_ms),
            },
        )
        .await?;
    info!(tenant = %id, chat = %chat, until_ms, "bot paused");
    Ok(Json(PauseState {
        chat: chat.to_string(),
        bot_paused_until_ms: Some(until_ms),
    }))
}

/// Resumes the bot in a chat.
#[utoipa::path(
    post, path = "/api/tenants/{id}/conversations/{wa_id}/resume", tag = "conversations",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("wa_id" = String, Path, description = "the customer's WhatsApp id"),
    ),
    responses(
        (status = 200, description = "resumed", body = PauseState),
        (status = 400, description = "invalid id", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
async fn resume(
    State(state): State<AppState>,
    ApiPath(ids): ApiPath<(String, String)>,
) -> Result<Json<PauseState>, ApiError> {
    let (id, chat) = conversation_ids(ids)?;
    state
        .router
        .deliver(
            &id,
            TenantCommand::SetPaused {
                chat: chat.clone(),
                until_ms: None,
            },
        )
        .await?;
    info!(tenant = %id, chat = %chat, "bot resumed");
    Ok(Json(PauseState {
        chat: chat.to_string(),
        bot_paused_until_ms: None,
    }))
}

/// Sends a message as the owner: it is recorded, then sent, and the bot steps back in that
/// chat for the takeover period.
#[utoipa::path(
    post, path = "/api/tenants/{id}/conversations/{wa_id}/send", tag = "conversations",
    params(
        ("id" = String, Path, description = "tenant id"),
        ("wa_id" = String, Path, description = "the customer's WhatsApp id"),
    ),
    request_body = SendRequest,
    responses(
        (status = 202, description = "recorded and queued for sending", body = SendAccepted),
        (status = 400, description = "invalid id or text", body = ErrorBody),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
        (status = 404, description = "unknown tenant", body = ErrorBody),
        (status = 503, description = "node at capacity or tenant unavailable", body = ErrorBody),
    )
)]
async fn send(
    State(state): State<AppState>,
    ApiPath(ids): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<(StatusCode, Json<SendAccepted>), ApiError> {
    let (id, chat) = conversation_ids(ids)?;
    if request.text.trim().is_empty() {
        return Err(ApiError::invalid("text", "must not be empty"));
    }
    let chars = request.text.chars().count();
    if chars > MAX_SEND_CHARS {
        return Err(ApiError::invalid(
            "text",
            format!("{chars} characters, at most {MAX_SEND_CHARS} are allowed"),
        ));
    }
    let reply = state
        .router
        .deliver(
            &id,
            TenantCommand::OwnerSend {
                chat: chat.clone(),
                body: request.text,
            },
        )
        .await?;
    let CommandReply::Outbound(outbound_id) = reply else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the tenant did not record the message",
        ));
    };
    info!(tenant = %id, chat = %chat, outbound_id, "owner message accepted");
    Ok((StatusCode::ACCEPTED, Json(SendAccepted { outbound_id })))
}

// ----- cluster -----

/// The cluster's nodes and what they host.
#[utoipa::path(
    get, path = "/api/cluster", tag = "cluster",
    responses(
        (status = 200, description = "the cluster", body = ClusterStatus),
        (status = 401, description = "no or wrong admin token", body = ErrorBody),
    )
)]
async fn cluster(State(state): State<AppState>) -> Json<ClusterStatus> {
    if let Some(cluster) = &state.cluster {
        return Json(ClusterStatus::of(cluster));
    }
    let snapshot = state.node.observe();
    Json(ClusterStatus {
        tenants: snapshot.tenants,
        leader: None,
        nodes: vec![NodeStatus {
            node_id: state.http.node_id.clone(),
            http_addr: String::new(),
            alive: true,
            draining: false,
            placed: snapshot.tenants,
            tenants: snapshot.tenants as u64,
            conversations: snapshot.conversations,
            max_tenants: snapshot.max_tenants as u64,
            rss_bytes: crate::process::rss_bytes().unwrap_or(0),
        }],
    })
}

// ----- OpenAPI -----

/// This document (no token needed).
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "meta",
    security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Salesboy admin API",
        description = "Tenants, knowledge, conversations and the cluster of a Salesboy gateway. \
            Every route but this document needs `Authorization: Bearer <admin token>`."
    ),
    paths(
        openapi_json,
        list_tenants,
        upsert_tenant,
        show_tenant,
        list_knowledge,
        add_knowledge,
        delete_knowledge,
        messages,
        pause,
        resume,
        send,
        cluster,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    tags(
        (name = "tenants", description = "businesses and their WhatsApp numbers"),
        (name = "knowledge", description = "the documents the assistant answers from"),
        (name = "conversations", description = "chat logs, bot pause and resume, owner sends"),
        (name = "cluster", description = "the gateway's nodes"),
        (name = "meta", description = "this document"),
    )
)]
struct ApiDoc;

/// Declares the `admin_token` bearer scheme the document's security requirement names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the node's admin token: SALESBOY_ADMIN_TOKEN, or the file \
                         admin-token in the data dir",
                    ))
                    .build(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("s3cret!", "s3cret"));
        assert!(!token_matches("", ""));
    }

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = serde_json::to_value(openapi()).expect("the document serialises");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "patch" | "delete"))
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn errors_start_lowercase() {
        assert_eq!(lowercase_first("Failed to parse"), "failed to parse");
        assert_eq!(lowercase_first(""), "");
    }
}
