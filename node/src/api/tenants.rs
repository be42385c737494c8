//! Tenants and their WhatsApp numbers, shown without secrets; a tenant's session status, and
//! stopping and starting its WhatsApp session.

use std::time::Duration;

use salesboy_actors::command::TenantCommand;
use salesboy_actors::services::ReadReceipts;
use salesboy_actors::session::{SessionSnapshot, WebHygiene};
use salesboy_actors::store::{AccessToken, Deletion, NewTenant, NewWhatsAppNumber, Tenant};
use salesboy_actors::tenant::TenantSnapshot;
use salesboy_protocol::{Engine, PhoneNumberId, TenantId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::ToSchema;

use super::{Api, ApiError, tenant_id};
use crate::adapters::llm::{redacted_llm_config, validate_llm_config};
use crate::cluster::RouteError;
use crate::cluster::directory::EntryState;

/// A tenant and the WhatsApp number to attach to it (`POST /tenants`, `tenant.create`). On
/// update, absent optional fields keep their stored values. A `web` tenant has no Cloud API
/// number: it is linked by pairing. `Debug` hides the access token and the LLM providers
/// (they hold API keys).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRequest {
    /// The tenant's id: ASCII letters, digits, `_` and `-`, at most 64.
    #[schema(example = "acme", pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// How its WhatsApp number is reached: `cloud_api` (the default: Meta's Cloud API, with
    /// `phone_number_id` and `access_token`) or `web` (WhatsApp Web, linked by QR code or
    /// pairing code; no Cloud API fields). Chosen at creation, never changed.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "cloud_api", pattern = "^(cloud_api|web)$")]
    pub engine: Option<Engine>,
    /// `cloud_api`: Meta's phone number id of the tenant's WhatsApp business number
    /// (digits); required.
    #[serde(default)]
    #[schema(example = "106540352242922", pattern = "^[0-9]{1,32}$")]
    pub phone_number_id: Option<String>,
    /// `cloud_api`: the access token of that number; required. Stored, never returned.
    #[serde(default)]
    #[schema(pattern = "\\S")]
    pub access_token: Option<String>,
    /// Display name of the business; defaults to the id.
    #[schema(example = "Acme Shoes", pattern = "\\S")]
    pub name: Option<String>,
    /// The assistant's system prompt; `""` goes back to the default prompt.
    pub system_prompt: Option<String>,
    /// LLM providers in fallback order (see docs/api.md); `[]` means the offline responder
    /// (retrieval only); absent on create: the node's default providers.
    #[schema(value_type = Option<Vec<Object>>)]
    pub llm: Option<serde_json::Value>,
    /// The tenant's monthly LLM spend cap in millionths of a US dollar (`5000000` is $5): once
    /// its LLM cost this calendar month (UTC) reaches it, it answers offline and an
    /// `llm_spend_cap_reached` alert is raised. `null`: the node's default
    /// (`SALESBOY_LLM_MONTHLY_SPEND_CAP_MICROS`); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, example = 5000000)]
    pub llm_monthly_spend_cap_micros: Option<Option<i64>>,
    /// The embedding model of the tenant's passages and questions: one of the node's
    /// (`SALESBOY_EMBEDDING_PROVIDERS`), refused otherwise. A change re-embeds its passages
    /// in the background (full text finds them meanwhile). `null`: the node's default (the
    /// first entry's model); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "gemini-embedding-001")]
    pub embedding_model: Option<Option<String>>,
    /// `web` tenants: their own ban hygiene (docs/engines.md "Ban hygiene"): an object of
    /// `answer_only`, `typing_ms_per_char`, `typing_min_ms`, `typing_max_ms`,
    /// `typing_jitter_ms`, `min_gap_per_chat_ms`, `daily_cap` (absent keys take the
    /// defaults). `null`: the node's; absent on update: unchanged. Refused for `cloud_api`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub web_hygiene: Option<Option<serde_json::Value>>,
    /// When its conversations mark the customer's messages read and show the typing
    /// indicator: `always`, `when_slow` (only before an LLM is asked) or `never`. `null`:
    /// the node's (`SALESBOY_WHATSAPP_READ_RECEIPTS`); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^(always|when_slow|never)$", example = "never")]
    pub read_receipts: Option<Option<String>>,
    /// The WhatsApp Business Account id.
    pub waba_id: Option<String>,
}

/// Changes to an existing tenant (`tenant.update`): absent fields keep their stored values.
/// A number is given with its access token. `Debug` hides the access token and the LLM
/// providers.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    /// Display name of the business.
    #[schema(pattern = "\\S")]
    pub name: Option<String>,
    /// The assistant's system prompt; `""` goes back to the default prompt.
    pub system_prompt: Option<String>,
    /// LLM providers in fallback order; `[]` means the offline responder.
    #[schema(value_type = Option<Vec<Object>>)]
    pub llm: Option<serde_json::Value>,
    /// The tenant's monthly LLM spend cap in millionths of a US dollar (`5000000` is $5): once
    /// its LLM cost this calendar month (UTC) reaches it, it answers offline and an
    /// `llm_spend_cap_reached` alert is raised. `null`: the node's default
    /// (`SALESBOY_LLM_MONTHLY_SPEND_CAP_MICROS`); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 0, example = 5000000)]
    pub llm_monthly_spend_cap_micros: Option<Option<i64>>,
    /// The embedding model of the tenant's passages and questions: one of the node's
    /// (`SALESBOY_EMBEDDING_PROVIDERS`), refused otherwise. A change re-embeds its passages
    /// in the background (full text finds them meanwhile). `null`: the node's default (the
    /// first entry's model); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "gemini-embedding-001")]
    pub embedding_model: Option<Option<String>>,
    /// `web` tenants: their own ban hygiene (docs/engines.md "Ban hygiene"): an object of
    /// `answer_only`, `typing_ms_per_char`, `typing_min_ms`, `typing_max_ms`,
    /// `typing_jitter_ms`, `min_gap_per_chat_ms`, `daily_cap` (absent keys take the
    /// defaults). `null`: the node's; absent on update: unchanged. Refused for `cloud_api`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub web_hygiene: Option<Option<serde_json::Value>>,
    /// When its conversations mark the customer's messages read and show the typing
    /// indicator: `always`, `when_slow` (only before an LLM is asked) or `never`. `null`:
    /// the node's (`SALESBOY_WHATSAPP_READ_RECEIPTS`); absent on update: unchanged.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, pattern = "^(always|when_slow|never)$", example = "never")]
    pub read_receipts: Option<Option<String>>,
    /// A WhatsApp number to attach (or whose token changes); needs `access_token`.
    pub phone_number_id: Option<String>,
    /// The access token of `phone_number_id`.
    #[schema(pattern = "\\S")]
    pub access_token: Option<String>,
    /// The WhatsApp Business Account id of `phone_number_id`.
    pub waba_id: Option<String>,
}

/// A field that is present: `null` is `Some(None)`, absent (`#[serde(default)]`) is `None`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// What `Debug` shows for a secret: whether there is one, never its value.
fn redacted<T>(secret: Option<&T>) -> Option<&'static str> {
    secret.map(|_| "[redacted]")
}

impl std::fmt::Debug for TenantRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            id,
            engine,
            phone_number_id,
            access_token,
            name,
            system_prompt,
            llm,
            llm_monthly_spend_cap_micros,
            embedding_model,
            web_hygiene,
            read_receipts,
            waba_id,
        } = self;
        f.debug_struct("TenantRequest")
            .field("id", id)
            .field("engine", engine)
            .field("phone_number_id", phone_number_id)
            .field("access_token", &redacted(access_token.as_ref()))
            .field("name", name)
            .field("system_prompt", system_prompt)
            .field("llm", &redacted(llm.as_ref()))
            .field("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)
            .field("embedding_model", embedding_model)
            .field("web_hygiene", web_hygiene)
            .field("read_receipts", read_receipts)
            .field("waba_id", waba_id)
            .finish()
    }
}

impl std::fmt::Debug for TenantUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            name,
            system_prompt,
            llm,
            llm_monthly_spend_cap_micros,
            embedding_model,
            web_hygiene,
            read_receipts,
            phone_number_id,
            access_token,
            waba_id,
        } = self;
        f.debug_struct("TenantUpdate")
            .field("name", name)
            .field("system_prompt", system_prompt)
            .field("llm", &redacted(llm.as_ref()))
            .field("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)
            .field("embedding_model", embedding_model)
            .field("web_hygiene", web_hygiene)
            .field("read_receipts", read_receipts)
            .field("phone_number_id", phone_number_id)
            .field("access_token", &redacted(access_token.as_ref()))
            .field("waba_id", waba_id)
            .finish()
    }
}

/// One WhatsApp number of a tenant (without its access token).
#[derive(Debug, Serialize, ToSchema)]
pub struct NumberView {
    /// Meta's phone number id.
    pub phone_number_id: String,
    /// The WhatsApp Business Account id, if known.
    pub waba_id: Option<String>,
}

/// A tenant, without secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// The tenant's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The assistant's system prompt; `null` is the default prompt.
    pub system_prompt: Option<String>,
    /// The LLM providers with API keys redacted; `null` when the tenant has no list of its
    /// own.
    #[schema(value_type = Option<Vec<Object>>)]
    pub llm: Option<serde_json::Value>,
    /// The tenant's own monthly LLM spend cap (millionths of a US dollar); `null`: the
    /// node's default.
    pub llm_monthly_spend_cap_micros: Option<i64>,
    /// The tenant's own embedding model; `null`: the node's default.
    pub embedding_model: Option<String>,
    /// How its WhatsApp number is reached: `cloud_api` or `web`.
    #[schema(example = "cloud_api", pattern = "^(cloud_api|web)$")]
    pub engine: &'static str,
    /// `web`: the tenant's own ban hygiene; `null`: the node's.
    #[schema(value_type = Option<Object>)]
    pub web_hygiene: Option<WebHygiene>,
    /// The tenant's own read-receipt policy (`always`, `when_slow`, `never`); `null`: the
    /// node's.
    #[schema(pattern = "^(always|when_slow|never)$")]
    pub read_receipts: Option<&'static str>,
    /// The tenant's WhatsApp numbers (Cloud API; none for `web`).
    pub numbers: Vec<NumberView>,
    /// Changes whenever the knowledge base changes.
    pub knowledge_version: i64,
    /// When the tenant was created (unix ms).
    pub created_ms: i64,
    /// Whether the tenant is hosted (its actors running) on this node.
    pub active: bool,
}

/// A tenant with the live state of its actors.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDetail {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: TenantView,
    /// The tenant supervisor's snapshot (session, responder, conversations, restarts);
    /// `null` when the tenant is not hosted on this node.
    #[schema(value_type = Option<Object>)]
    pub state: Option<TenantSnapshot>,
}

/// Whether a save created the tenant or changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The tenant is new.
    Created,
    /// The tenant existed.
    Updated,
}

/// Where a tenant runs and in what state (`session.status`), as far as the answering node
/// can tell.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionStatusView {
    /// The tenant's id.
    pub tenant: String,
    /// `active`: hosted by `node`; `moving`: being handed from `node` to `moving_to`;
    /// `idle`: hosted nowhere now (its next message or command starts it); `stopped`: its
    /// session is stopped (`session.stop`), hosted nowhere until `session.start`.
    #[schema(example = "active")]
    pub state: &'static str,
    /// Since when the session is stopped (unix ms); `null` unless `stopped`.
    pub stopped_ms: Option<i64>,
    /// The hosting node.
    pub node: Option<String>,
    /// The tenant's placement epoch (bumped by every move and failover).
    pub epoch: Option<u64>,
    /// The node it is moving to.
    pub moving_to: Option<String>,
    /// The WhatsApp session (`engine`; `status`: `connected`, `rate_limited` or `auth_failed`,
    /// and for `web` also `pairing`, `disconnected`, `logged_out`, `temporarily_banned`,
    /// `replaced` or `outdated`, with `web`: the linked account, the QR or pairing code, a
    /// ban's end; queue and counters), when the answering node hosts the tenant; else `null`.
    #[schema(value_type = Option<Object>)]
    pub session: Option<SessionSnapshot>,
}

/// Which saves a request may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
    Upsert,
}

/// A request's changes, validated.
struct Changes {
    /// The engine the request names (`None`: an update, which keeps it).
    engine: Option<Engine>,
    name: Option<String>,
    /// `Some(None)`: back to the default prompt.
    system_prompt: Option<Option<String>>,
    llm: Option<String>,
    /// `Some(None)`: back to the node's default cap.
    spend_cap: Option<Option<i64>>,
    /// `Some(None)`: back to the node's default model. Checked against the node's models
    /// in [`save`].
    embedding_model: Option<Option<String>>,
    /// `Some(None)`: back to the node's hygiene. Refused for `cloud_api` in [`save`].
    web_hygiene: Option<Option<WebHygiene>>,
    /// `Some(None)`: back to the node's policy.
    read_receipts: Option<Option<ReadReceipts>>,
    number: Option<NumberChange>,
}

struct NumberChange {
    phone_number_id: PhoneNumberId,
    access_token: String,
    waba_id: Option<String>,
}

/// Every tenant (without live state), ordered by id.
pub async fn list(api: &Api) -> Result<Vec<TenantView>, ApiError> {
    let tenants = api.store.list_tenants().await?;
    let mut views = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let active = api.node.observe_tenant(&tenant.id).await.is_some();
        views.push(view(tenant, active));
    }
    Ok(views)
}

/// One tenant with the live state of its actors.
pub async fn get(api: &Api, id: &TenantId) -> Result<TenantDetail, ApiError> {
    let tenant = api.existing_tenant(id).await?;
    Ok(detail(api, tenant).await)
}

/// Creates a tenant, or updates it if it exists, and attaches the number.
pub async fn upsert(api: &Api, request: TenantRequest) -> Result<(Saved, TenantDetail), ApiError> {
    let (id, changes) = validate_request(request)?;
    save(api, &id, changes, Mode::Upsert).await
}

/// Creates a tenant with its number; 409 if it exists.
pub async fn create(api: &Api, request: TenantRequest) -> Result<TenantDetail, ApiError> {
    let (id, changes) = validate_request(request)?;
    Ok(save(api, &id, changes, Mode::Create).await?.1)
}

/// Changes an existing tenant; 404 if there is none.
pub async fn update(
    api: &Api,
    id: &TenantId,
    request: TenantUpdate,
) -> Result<TenantDetail, ApiError> {
    let number = match (request.phone_number_id, request.access_token) {
        (None, None) if request.waba_id.is_none() => None,
        (Some(number), Some(token)) => Some(number_change(number, &token, request.waba_id)?),
        (None, _) => return Err(ApiError::invalid("phone_number_id", "missing")),
        (Some(_), None) => return Err(ApiError::invalid("access_token", "missing")),
    };
    let changes = Changes {
        engine: None,
        name: name(request.name)?,
        system_prompt: request.system_prompt.map(prompt),
        llm: llm(request.llm)?,
        spend_cap: spend_cap(request.llm_monthly_spend_cap_micros)?,
        embedding_model: request.embedding_model,
        web_hygiene: web_hygiene(request.web_hygiene)?,
        read_receipts: read_receipts(request.read_receipts)?,
        number,
    };
    Ok(save(api, id, changes, Mode::Update).await?.1)
}

/// Where the tenant runs, under which epoch, and its session's state when hosted here.
pub async fn session_status(api: &Api, id: &TenantId) -> Result<SessionStatusView, ApiError> {
    let tenant = api.existing_tenant(id).await?;
    let mut status = SessionStatusView {
        tenant: id.to_string(),
        state: "idle",
        stopped_ms: None,
        node: None,
        epoch: None,
        moving_to: None,
        session: None,
    };
    if let Some(stopped_ms) = tenant.session_stopped_ms {
        status.state = "stopped";
        status.stopped_ms = Some(stopped_ms);
        return Ok(status);
    }
    let snapshot = api.node.observe_tenant(id).await;
    if let Some(cluster) = &api.cluster {
        if let Some(placed) = cluster.directory().cached(id) {
            status.node = Some(placed.entry.node.to_string());
            status.epoch = Some(placed.entry.epoch);
            status.state = match placed.entry.state {
                EntryState::Active => "active",
                EntryState::Moving { to } => {
                    status.moving_to = Some(to.to_string());
                    "moving"
                }
            };
        }
    } else if let Some(snapshot) = &snapshot {
        status.state = "active";
        status.node = Some(api.node_id.clone());
        status.epoch = Some(snapshot.epoch);
    }
    status.session = snapshot.and_then(|s| s.session);
    Ok(status)
}

/// Stops the tenant's WhatsApp session (`session.stop`): the stop is stored first (so it
/// holds across restarts and failovers: no node activates a stopped tenant), then the node
/// hosting the tenant stops it. From then on the tenant neither sends nor answers; inbound
/// messages are still persisted (nothing is lost) and wait for `session.start`; owner sends,
/// bot pause and resume answer 409 `session_stopped`. Stopping a stopped session changes
/// nothing.
pub async fn session_stop(api: &Api, id: &TenantId) -> Result<SessionStatusView, ApiError> {
    api.existing_tenant(id).await?;
    api.store
        .set_session_stopped(id, true, api.now_ms())
        .await?;
    reload(api, id).await;
    info!(tenant = %id, "whatsapp session stopped");
    session_status(api, id).await
}

/// How often `session.start` asks the tenant to start while an earlier activation answers
/// that it is stopped.
const START_ATTEMPTS: u32 = 5;

/// Runs the tenant's WhatsApp session again (`session.start`): the stop is cleared and the
/// tenant activated, which reconciles it from the store: inbound messages that came in while
/// it was stopped are answered (those of the last 24 hours, the customer service window),
/// owner messages still pending are sent. Starting a running session changes nothing.
pub async fn session_start(api: &Api, id: &TenantId) -> Result<SessionStatusView, ApiError> {
    api.existing_tenant(id).await?;
    api.store
        .set_session_stopped(id, false, api.now_ms())
        .await?;
    // An activation that read the stop before it was cleared (a customer's message arriving
    // just then) may still answer "stopped", and the start joins it: ask again.
    let mut wait = Duration::from_millis(50);
    for attempt in 1.. {
        match api.router.deliver(id, TenantCommand::Start).await {
            Err(RouteError::SessionStopped(_)) if attempt < START_ATTEMPTS => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            delivered => {
                delivered?;
                break;
            }
        }
    }
    info!(tenant = %id, "whatsapp session started");
    session_status(api, id).await
}

/// Logs a `web` tenant's device out before the tenant is deleted (best effort: the session
/// rows go with the tenant anyway).
async fn unlink(api: &Api, id: &TenantId) {
    let logout = api.router.deliver(id, TenantCommand::WebLogout);
    match tokio::time::timeout(UNLINK_TIMEOUT, logout).await {
        Ok(Ok(_)) => info!(tenant = %id, "web session logged out before the tenant's deletion"),
        Ok(Err(error)) => warn!(
            tenant = %id,
            %error,
            "web device not unlinked before the tenant's deletion: remove it on the phone"
        ),
        Err(_) => warn!(
            tenant = %id,
            "web device not unlinked within {UNLINK_TIMEOUT:?} before the tenant's deletion: \
             remove it on the phone"
        ),
    }
}

/// What `tenant.delete` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantDeleted {
    /// The tenant's id.
    pub tenant: String,
    /// Whether its data was erased (`true`) or kept (`false`).
    pub data_erased: bool,
}

/// How long a deletion waits for a `web` tenant's device to be unlinked.
const UNLINK_TIMEOUT: Duration = Duration::from_secs(15);

/// Deletes a tenant (`tenant.delete`): it stops everywhere and its data is kept or erased.
///
/// In order: a `web` tenant's device is unlinked (logged out, so the phone's list of linked
/// devices forgets it; a failure is logged, the deletion goes on); the store deletes it in
/// one transaction (its numbers go, so webhooks for them route nowhere and the numbers may
/// be given to another tenant; its pending outbound messages fail as `tenant_deleted`; its
/// epoch is bumped, so the node that hosted it can write nothing more); the host stops it
/// (its record is gone); it leaves the cluster directory. With `erase_data` everything of it is erased (conversations,
/// messages, knowledge, usage, events); without, the data stays, invisible, and
/// `tenant.create` of the same id takes it back.
pub async fn delete(api: &Api, id: &TenantId, erase_data: bool) -> Result<TenantDeleted, ApiError> {
    let tenant = api.existing_tenant(id).await?;
    if tenant.engine == Engine::Web {
        unlink(api, id).await;
    }
    let deletion = if erase_data {
        Deletion::EraseData
    } else {
        Deletion::KeepData
    };
    if !api.store.delete_tenant(id, deletion, api.now_ms()).await? {
        // Deleted meanwhile by another request.
        return Err(ApiError::UnknownTenant(id.clone()));
    }
    for number in &tenant.numbers {
        api.ingress
            .forget_phone_number(&number.phone_number_id)
            .await;
    }
    reload(api, id).await;
    if let Some(cluster) = &api.cluster
        && let Err(e) = cluster.directory().remove(id).await
    {
        // Harmless: a stale entry names a node that refuses the unknown tenant, and a tenant
        // created again under this id moves past its epoch.
        warn!(tenant = %id, error = %e, "deleted tenant left in the directory");
    }
    info!(tenant = %id, erase_data, "tenant deleted");
    Ok(TenantDeleted {
        tenant: id.to_string(),
        data_erased: erase_data,
    })
}

fn validate_request(request: TenantRequest) -> Result<(TenantId, Changes), ApiError> {
    let id = tenant_id("id", request.id)?;
    let engine = request.engine.unwrap_or_default();
    let number = match (engine, request.phone_number_id, request.access_token) {
        (Engine::CloudApi, Some(number), Some(token)) => {
            Some(number_change(number, &token, request.waba_id)?)
        }
        (Engine::CloudApi, None, _) => {
            return Err(ApiError::invalid(
                "phone_number_id",
                "missing (required by the cloud_api engine)",
            ));
        }
        (Engine::CloudApi, Some(_), None) => {
            return Err(ApiError::invalid(
                "access_token",
                "missing (required by the cloud_api engine)",
            ));
        }
        (Engine::Web, None, None) if request.waba_id.is_none() => None,
        (Engine::Web, ..) => return Err(web_has_no_number()),
    };
    let changes = Changes {
        engine: Some(engine),
        name: name(request.name)?,
        system_prompt: request.system_prompt.map(prompt),
        llm: llm(request.llm)?,
        spend_cap: spend_cap(request.llm_monthly_spend_cap_micros)?,
        embedding_model: request.embedding_model,
        web_hygiene: web_hygiene(request.web_hygiene)?,
        read_receipts: read_receipts(request.read_receipts)?,
        number,
    };
    Ok((id, changes))
}

fn web_has_no_number() -> ApiError {
    ApiError::invalid(
        "phone_number_id",
        "a web tenant has no Cloud API number: it is linked by QR code or pairing code",
    )
}

fn number_change(
    phone_number_id: String,
    access_token: &str,
    waba_id: Option<String>,
) -> Result<NumberChange, ApiError> {
    let phone_number_id =
        PhoneNumberId::new(phone_number_id).map_err(|e| ApiError::invalid("phone_number_id", e))?;
    let access_token = access_token.trim();
    if access_token.is_empty() {
        return Err(ApiError::invalid("access_token", "must not be empty"));
    }
    Ok(NumberChange {
        phone_number_id,
        access_token: access_token.to_owned(),
        waba_id: waba_id
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty()),
    })
}

fn name(name: Option<String>) -> Result<Option<String>, ApiError> {
    match name.as_deref().map(str::trim) {
        Some("") => Err(ApiError::invalid("name", "must not be empty")),
        name => Ok(name.map(str::to_owned)),
    }
}

/// A prompt to store; blank means the default prompt.
fn prompt(prompt: String) -> Option<String> {
    (!prompt.trim().is_empty()).then_some(prompt)
}

fn llm(llm: Option<serde_json::Value>) -> Result<Option<String>, ApiError> {
    match llm {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(llm) => {
            // The reason names the field itself (`llm[1].model: missing`).
            validate_llm_config(&llm).map_err(ApiError::Malformed)?;
            let text = serde_json::to_string(&llm)
                .map_err(|e| ApiError::invalid("llm", e.to_string().to_lowercase()))?;
            Ok(Some(text))
        }
    }
}

/// Checks that the node embeds with `model`.
fn embedding_model(api: &Api, model: &str) -> Result<(), ApiError> {
    let Some(retrieval) = api.sql.retrieval() else {
        return Err(ApiError::invalid(
            "embedding_model",
            "this node has no embedding provider (SALESBOY_EMBEDDING_PROVIDERS is unset)",
        ));
    };
    if retrieval.chain_of(model).is_none() {
        let models: Vec<&str> = retrieval.models().collect();
        return Err(ApiError::invalid(
            "embedding_model",
            format!("not one of this node's models ({})", models.join(", ")),
        ));
    }
    Ok(())
}

/// Reads and checks a `read_receipts` field.
fn read_receipts(value: Option<Option<String>>) -> Result<Option<Option<ReadReceipts>>, ApiError> {
    let Some(Some(name)) = value else {
        return Ok(value.map(|_| None));
    };
    ReadReceipts::parse(&name)
        .map(|policy| Some(Some(policy)))
        .ok_or_else(|| {
            ApiError::invalid(
                "read_receipts",
                format!("{name:?} is not one of always, when_slow, never"),
            )
        })
}

/// Reads and checks a `web_hygiene` field.
fn web_hygiene(
    value: Option<Option<serde_json::Value>>,
) -> Result<Option<Option<WebHygiene>>, ApiError> {
    let Some(Some(value)) = value else {
        return Ok(value.map(|_| None));
    };
    let hygiene: WebHygiene = serde_json::from_value(value)
        .map_err(|e| ApiError::invalid("web_hygiene", e.to_string()))?;
    hygiene
        .validate()
        .map_err(|e| ApiError::invalid("web_hygiene", e))?;
    Ok(Some(Some(hygiene)))
}

fn spend_cap(cap: Option<Option<i64>>) -> Result<Option<Option<i64>>, ApiError> {
    match cap {
        Some(Some(micros)) if micros < 0 => Err(ApiError::invalid(
            "llm_monthly_spend_cap_micros",
            "must not be negative",
        )),
        cap => Ok(cap),
    }
}

/// Writes the validated changes (everything is checked before the first write), tells a
/// hosted tenant to reload, and answers the saved tenant.
async fn save(
    api: &Api,
    id: &TenantId,
    changes: Changes,
    mode: Mode,
) -> Result<(Saved, TenantDetail), ApiError> {
    if let Some(Some(model)) = &changes.embedding_model {
        embedding_model(api, model)?;
    }
    let existing = api.store.tenant(id).await?;
    match (&existing, mode) {
        (Some(_), Mode::Create) => return Err(ApiError::TenantExists(id.clone())),
        (None, Mode::Update) => return Err(ApiError::UnknownTenant(id.clone())),
        _ => {}
    }
    let engine = match (&existing, changes.engine) {
        (Some(tenant), Some(asked)) if asked != tenant.engine => {
            return Err(ApiError::invalid(
                "engine",
                format!(
                    "chosen at creation: this tenant's engine is {}",
                    tenant.engine
                ),
            ));
        }
        (Some(tenant), _) => tenant.engine,
        (None, asked) => asked.unwrap_or_default(),
    };
    if engine == Engine::Web && changes.number.is_some() {
        return Err(web_has_no_number());
    }
    if engine == Engine::CloudApi && matches!(changes.web_hygiene, Some(Some(_))) {
        return Err(ApiError::invalid(
            "web_hygiene",
            "only for web tenants (this tenant's engine is cloud_api)",
        ));
    }
    if let Some(number) = &changes.number
        && let Some(route) = api
            .store
            .tenant_by_phone_number(&number.phone_number_id)
            .await?
        && route.tenant != *id
    {
        return Err(ApiError::NumberTaken {
            number: number.phone_number_id.clone(),
            owner: route.tenant,
        });
    }
    let (stored_name, stored_prompt, stored_llm, stored_cap, stored_model) = match &existing {
        Some(tenant) => (
            Some(tenant.name.clone()),
            tenant.system_prompt.clone(),
            tenant.llm_config.clone(),
            tenant.llm_monthly_spend_cap_micros,
            tenant.embedding_model.clone(),
        ),
        None => (None, None, None, None, None),
    };
    let embedding_model = changes.embedding_model.unwrap_or(stored_model);
    let model_changed = existing
        .as_ref()
        .is_some_and(|tenant| tenant.embedding_model != embedding_model);
    let tenant = NewTenant {
        id: id.clone(),
        name: changes
            .name
            .or(stored_name)
            .unwrap_or_else(|| id.to_string()),
        system_prompt: changes.system_prompt.unwrap_or(stored_prompt),
        llm_config: changes.llm.or(stored_llm),
        llm_monthly_spend_cap_micros: changes.spend_cap.unwrap_or(stored_cap),
        embedding_model,
        engine,
        web_hygiene: changes
            .web_hygiene
            .unwrap_or_else(|| existing.as_ref().and_then(|tenant| tenant.web_hygiene)),
        read_receipts: changes
            .read_receipts
            .unwrap_or_else(|| existing.as_ref().and_then(|tenant| tenant.read_receipts)),
        created_ms: api.now_ms(),
    };
    api.store.upsert_tenant(&tenant).await?;
    if model_changed && let Some(retrieval) = api.sql.retrieval() {
        // Its passages are pending again for the new model.
        retrieval.wake();
    }
    if let Some(number) = changes.number {
        let stored_waba = existing.as_ref().and_then(|tenant| {
            tenant
                .numbers
                .iter()
                .find(|n| n.phone_number_id == number.phone_number_id)
                .and_then(|n| n.waba_id.clone())
        });
        let record = NewWhatsAppNumber {
            tenant: id.clone(),
            phone_number_id: number.phone_number_id.clone(),
            waba_id: number.waba_id.or(stored_waba),
            access_token: AccessToken::new(number.access_token),
        };
        api.store.upsert_whatsapp_number(&record).await?;
        api.ingress
            .forget_phone_number(&number.phone_number_id)
            .await;
    }
    reload(api, id).await;
    let saved = if existing.is_none() {
        Saved::Created
    } else {
        Saved::Updated
    };
    info!(tenant = %id, created = saved == Saved::Created, "tenant saved");
    let tenant = api
        .store
        .tenant(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("tenant {id} vanished after saving")))?;
    Ok((saved, detail(api, tenant).await))
}

/// Tells a hosted tenant its record changed (its configuration or its knowledge); one
/// hosted nowhere reads it when activated.
pub(super) async fn reload(api: &Api, id: &TenantId) {
    if let Some(cluster) = &api.cluster {
        if cluster.directory().cached(id).is_some()
            && let Err(e) = api.router.deliver(id, TenantCommand::Reload).await
        {
            warn!(tenant = %id, error = %e, "running tenant not told about its update");
        }
    } else {
        // Reaches only a tenant hosted here, and never fails.
        let _ = api.node.deliver(id, TenantCommand::Reload).await;
    }
}

fn view(tenant: Tenant, active: bool) -> TenantView {
    TenantView {
        id: tenant.id.to_string(),
        name: tenant.name,
        system_prompt: tenant.system_prompt,
        llm: tenant.llm_config.as_deref().map(redacted_llm_config),
        llm_monthly_spend_cap_micros: tenant.llm_monthly_spend_cap_micros,
        embedding_model: tenant.embedding_model,
        engine: tenant.engine.as_str(),
        web_hygiene: tenant.web_hygiene,
        read_receipts: tenant.read_receipts.map(ReadReceipts::as_str),
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

async fn detail(api: &Api, tenant: Tenant) -> TenantDetail {
    let snapshot = api.node.observe_tenant(&tenant.id).await;
    TenantDetail {
        tenant: view(tenant, snapshot.is_some()),
        state: snapshot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_never_print_their_secrets() {
        let llm = serde_json::json!([{ "kind": "openai", "api_key": "sk-planted-secret" }]);
        let request = TenantRequest {
            id: "acme".into(),
            engine: None,
            phone_number_id: Some("106540352242922".into()),
            access_token: Some("EAAG-planted-token".into()),
            name: None,
            system_prompt: None,
            llm: Some(llm.clone()),
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            web_hygiene: None,
            read_receipts: None,
            waba_id: None,
        };
        let update = TenantUpdate {
            llm: Some(llm),
            phone_number_id: Some("106540352242922".into()),
            access_token: Some("EAAG-planted-token".into()),
            ..TenantUpdate::default()
        };
        for shown in [format!("{request:?}"), format!("{update:?}")] {
            assert!(!shown.contains("sk-planted-secret"), "{shown}");
            assert!(!shown.contains("EAAG-planted-token"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
            assert!(shown.contains("106540352242922"), "{shown}");
        }
    }
}
