//! A tenant's HTTP event webhooks: where its events are POSTed (signed), and the events a
//! webhook gave up on (dead letters), listed and delivered again on request. Delivery itself
//! is [`crate::events::webhooks`].

use salesboy_protocol::TenantId;
use salesboy_protocol::subjects::EventKind;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::{Api, ApiError};
use crate::store::{DeadLetter, Webhook, WebhookSummary};

/// Longest webhook URL, in characters.
const MAX_URL_CHARS: usize = 2048;

/// Shortest and longest secret a client may choose, in characters.
const SECRET_CHARS: std::ops::RangeInclusive<usize> = 16..=256;

/// Most dead letters one listing answers.
pub const MAX_DEAD_LETTERS: u32 = 1000;

/// A webhook to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// Where to POST the tenant's events: an `https://` URL (`http://` only to a loopback
    /// host).
    #[schema(
        example = "https://backend.example.com/salesboy/events",
        pattern = "^(https://[A-Za-z0-9.-]+|http://(localhost|127\\.0\\.0\\.1|\\[::1\\]))(:[0-9]{1,5})?([/?#][!-~]*)?$"
    )]
    pub url: String,
    /// The event kinds to send (default: every tenant event kind).
    #[schema(schema_with = kinds_schema, example = json!(["message_received", "reply_sent"]))]
    pub kinds: Option<Vec<String>>,
    /// The HMAC key of the signatures, 16–256 printable ASCII characters (default: one is
    /// generated and answered once).
    #[schema(pattern = "^[!-~]{16,256}$")]
    pub secret: Option<String>,
}

/// A webhook added: the only answer that shows its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    /// The webhook's id.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// The kinds it receives; `null`: every kind.
    pub kinds: Option<Vec<String>>,
    /// The key of `X-Salesboy-Signature-256`. Shown this once.
    pub secret: String,
    /// When it was added (unix ms).
    pub created_ms: i64,
}

/// A webhook, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// The webhook's id.
    pub id: String,
    /// Where events go.
    pub url: String,
    /// The kinds it receives; `null`: every kind.
    pub kinds: Option<Vec<String>>,
    /// When it was added (unix ms).
    pub created_ms: i64,
    /// Events waiting to be delivered (being retried, or queued behind an earlier event of
    /// their chat).
    pub pending: i64,
    /// Events given up after the retry window, kept for redelivery.
    pub dead_letters: i64,
}

/// A webhook removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeleted {
    /// The removed webhook's id.
    pub id: String,
}

/// An event a webhook gave up on.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// The event, as it is delivered.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    /// How many attempts failed.
    pub attempts: i64,
    /// Why the last one failed (`answered 500 Internal Server Error`, `timed out`, …).
    pub last_error: Option<String>,
    /// When it was given up (unix ms).
    pub dead_ms: i64,
}

/// Which dead letters to deliver again.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeliverRequest {
    /// One event's id; absent: every dead letter of the webhook.
    pub event_id: Option<String>,
}

/// Dead letters queued again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    /// How many.
    pub redelivered: u64,
}

/// Adds a webhook to the tenant.
pub async fn add(
    api: &Api,
    tenant: &TenantId,
    request: WebhookRequest,
) -> Result<WebhookCreated, ApiError> {
    let url = webhook_url(&request.url)?;
    let kinds = request.kinds.map(event_kinds).transpose()?;
    let secret = match request.secret {
        Some(secret) => chosen_secret(secret)?,
        None => generated_secret(),
    };
    api.existing_tenant(tenant).await?;
    let webhook = Webhook {
        id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        tenant: tenant.clone(),
        url,
        kinds,
        secret,
        created_ms: api.now_ms(),
    };
    api.sql.add_webhook(&webhook).await?;
    info!(tenant = %tenant, webhook = webhook.id, "event webhook added");
    Ok(WebhookCreated {
        id: webhook.id,
        url: webhook.url,
        kinds: webhook.kinds,
        secret: webhook.secret,
        created_ms: webhook.created_ms,
    })
}

/// The tenant's webhooks, oldest first, without secrets.
pub async fn list(api: &Api, tenant: &TenantId) -> Result<Vec<WebhookView>, ApiError> {
    api.existing_tenant(tenant).await?;
    Ok(api
        .sql
        .webhooks(tenant)
        .await?
        .into_iter()
        .map(
            |WebhookSummary {
                 webhook,
                 pending,
                 dead,
             }| WebhookView {
                id: webhook.id,
                url: webhook.url,
                kinds: webhook.kinds,
                created_ms: webhook.created_ms,
                pending,
                dead_letters: dead,
            },
        )
        .collect())
}

/// Removes one of the tenant's webhooks and what it had still to receive.
pub async fn delete(api: &Api, tenant: &TenantId, id: &str) -> Result<WebhookDeleted, ApiError> {
    api.existing_tenant(tenant).await?;
    if !api.sql.remove_webhook(tenant, id).await? {
        return Err(unknown(tenant, id));
    }
    info!(tenant = %tenant, webhook = id, "event webhook removed");
    Ok(WebhookDeleted { id: id.to_owned() })
}

/// Up to `limit` (default and most [`MAX_DEAD_LETTERS`]) dead letters of a webhook, oldest
/// event first.
pub async fn dead_letters(
    api: &Api,
    tenant: &TenantId,
    id: &str,
    limit: Option<u32>,
) -> Result<Vec<DeadLetterView>, ApiError> {
    let limit = match limit {
        None => MAX_DEAD_LETTERS,
        Some(n) if (1..=MAX_DEAD_LETTERS).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "limit",
                format!("must be between 1 and {MAX_DEAD_LETTERS}"),
            ));
        }
    };
    api.existing_tenant(tenant).await?;
    let letters = api
        .sql
        .dead_letters(tenant, id, limit)
        .await?
        .ok_or_else(|| unknown(tenant, id))?;
    letters
        .into_iter()
        .map(
            |DeadLetter {
                 event,
                 attempts,
                 last_error,
                 dead_ms,
             }| {
                Ok(DeadLetterView {
                    event: serde_json::to_value(&event)
                        .map_err(|e| ApiError::Internal(format!("encoding an event: {e}")))?,
                    attempts,
                    last_error,
                    dead_ms,
                })
            },
        )
        .collect()
}

/// Queues a webhook's dead letters (all, or one event's) for delivery again, with a new
/// retry window.
pub async fn redeliver(
    api: &Api,
    tenant: &TenantId,
    id: &str,
    request: RedeliverRequest,
) -> Result<Redelivered, ApiError> {
    api.existing_tenant(tenant).await?;
    let redelivered = api
        .sql
        .redeliver(tenant, id, request.event_id.as_deref(), api.now_ms())
        .await?
        .ok_or_else(|| unknown(tenant, id))?;
    info!(tenant = %tenant, webhook = id, redelivered, "dead letters queued again");
    Ok(Redelivered { redelivered })
}

fn unknown(tenant: &TenantId, id: &str) -> ApiError {
    ApiError::UnknownWebhook {
        tenant: tenant.clone(),
        webhook: id.to_owned(),
    }
}

/// An absolute `https://` URL with a host (`http://` only to a loopback host), of bounded
/// length.
fn webhook_url(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(ApiError::invalid(
            "url",
            format!("at most {MAX_URL_CHARS} characters"),
        ));
    }
    let url =
        crate::adapters::secure_url(raw).map_err(|problem| ApiError::invalid("url", problem))?;
    Ok(url.to_string())
}

/// Known tenant event kinds, deduplicated in the contract's order; at least one.
fn event_kinds(names: Vec<String>) -> Result<Vec<String>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid(
            "kinds",
            "must name at least one kind (leave it out for every kind)",
        ));
    }
    let tenant_kinds = tenant_event_kinds();
    for name in &names {
        if !tenant_kinds.iter().any(|kind| kind.as_str() == name) {
            let known: Vec<&str> = tenant_kinds.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::invalid(
                "kinds",
                format!(
                    "unknown tenant event kind {name:?}; known: {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(tenant_kinds
        .into_iter()
        .filter(|kind| names.iter().any(|name| name == kind.as_str()))
        .map(|kind| kind.as_str().to_owned())
        .collect())
}

/// The kinds a tenant's events can have (cluster events go to no tenant's webhooks).
/// The schema of [`WebhookRequest::kinds`]: `null`, or at least one tenant event kind.
fn kinds_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let kind = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(tenant_event_kinds().iter().map(|kind| kind.as_str())));
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(kind)
        .min_items(Some(1))
        .description(Some(
            "The event kinds to send (default: every tenant event kind).",
        ))
        .build()
}

fn tenant_event_kinds() -> Vec<EventKind> {
    EventKind::ALL
        .into_iter()
        .filter(|kind| !matches!(kind, EventKind::NodeJoined | EventKind::NodeLeft))
        .collect()
}

fn chosen_secret(secret: String) -> Result<String, ApiError> {
    let chars = secret.chars().count();
    if !SECRET_CHARS.contains(&chars) {
        return Err(ApiError::invalid(
            "secret",
            format!(
                "must be {} to {} characters",
                SECRET_CHARS.start(),
                SECRET_CHARS.end()
            ),
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "secret",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(secret)
}

/// `whsec_` and 64 random hex digits (256 bits).
fn generated_secret() -> String {
    format!(
        "whsec_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_https_or_loopback_http_with_a_host() {
        assert_eq!(
            webhook_url(" https://example.com/hook?x=1 ").unwrap(),
            "https://example.com/hook?x=1"
        );
        for good in [
            "http://127.0.0.1:9/hook",
            "http://127.8.0.1/hook",
            "http://localhost:8080/hook",
            "http://[::1]:9/hook",
        ] {
            assert!(webhook_url(good).is_ok(), "{good}");
        }
        for bad in [
            "example.com/hook",
            "ftp://example.com/",
            "https://",
            "file:///etc",
            "http://example.com/hook",
            "http://10.0.0.5/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::2]/hook",
            "http://localhost.example.com/hook",
        ] {
            assert!(webhook_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinds_are_known_tenant_kinds_in_the_contract_order() {
        assert_eq!(
            event_kinds(vec![
                "reply_sent".into(),
                "message_received".into(),
                "reply_sent".into()
            ])
            .unwrap(),
            ["message_received", "reply_sent"]
        );
        assert!(event_kinds(vec![]).is_err());
        assert!(event_kinds(vec!["node_joined".into()]).is_err());
        assert!(event_kinds(vec!["alert".into()]).is_err());
    }

    #[test]
    fn secrets_are_long_enough_and_printable() {
        assert!(chosen_secret("short".into()).is_err());
        assert!(chosen_secret("with a space in it!".into()).is_err());
        assert!(chosen_secret("0123456789abcdef".into()).is_ok());
        let generated = generated_secret();
        assert_eq!(generated.len(), 6 + 64);
        assert_ne!(generated, generated_secret());
    }
}
