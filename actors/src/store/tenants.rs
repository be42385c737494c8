//! Tenants and their WhatsApp numbers: [`TenantStore`] and its records.

use std::fmt;

use async_trait::async_trait;
use salesboy_protocol::{Engine, PhoneNumberId, TenantId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::services::ReadReceipts;
use crate::session::WebHygiene;

/// A WhatsApp Cloud API access token. Never printed: `Debug` and `Display` show
/// `[redacted]`; read it with [`AccessToken::expose`].
///
/// Serde reads and writes the real value, because the session's snapshot carries its
/// credentials when a tenant migrates (architecture §7): never serialise a [`Tenant`] into
/// a response that leaves the cluster.
///
/// The value is a [`secrecy::SecretString`] (zeroed when dropped); this type adds what
/// the stores and the wire need: equality, serde of the real value and `[redacted]` output.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct AccessToken(SecretString);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into()))
    }

    /// The token itself, for the one place that sends it to Meta.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for AccessToken {}

impl Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A tenant to create or update ([`TenantStore::upsert_tenant`]). `Debug` hides
/// `llm_config` (it holds API keys).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name of the business.
    pub name: String,
    /// The assistant's system prompt; `None` uses the default.
    pub system_prompt: Option<String>,
    /// LLM provider configuration, opaque JSON text; `None` uses the node's providers.
    pub llm_config: Option<String>,
    /// The monthly LLM spend cap in millionths of a US dollar; `None` uses the node's.
    #[serde(default)]
    pub llm_monthly_spend_cap_micros: Option<i64>,
    /// The embedding model of its passages (one of the node's); `None` uses the node's
    /// default.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// How its number is reached; kept from the first insert on updates (an engine is
    /// chosen at creation).
    #[serde(default)]
    pub engine: Engine,
    /// `web`: its own ban hygiene; `None` uses the node's (`Settings::web_hygiene`).
    #[serde(default)]
    pub web_hygiene: Option<WebHygiene>,
    /// When its conversations mark the customer's messages read; `None` uses the node's
    /// (`Settings::read_receipts`).
    #[serde(default)]
    pub read_receipts: Option<ReadReceipts>,
    /// When the tenant was created; kept from the first insert on updates.
    pub created_ms: i64,
}

impl NewTenant {
    /// Tenant `id`, named `name`, created at `created_ms`, on the Cloud API, with every
    /// setting left to the node's defaults.
    pub fn new(id: TenantId, name: String, created_ms: i64) -> Self {
        Self {
            id,
            name,
            system_prompt: None,
            llm_config: None,
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            engine: Engine::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms,
        }
    }
}

/// A tenant as stored. `Debug` hides `llm_config` (it holds API keys).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The tenant's id.
    pub id: TenantId,
    /// Display name of the business.
    pub name: String,
    /// The assistant's system prompt.
    pub system_prompt: Option<String>,
    /// LLM provider configuration, opaque JSON text.
    pub llm_config: Option<String>,
    /// The monthly LLM spend cap in millionths of a US dollar; `None` uses the node's.
    #[serde(default)]
    pub llm_monthly_spend_cap_micros: Option<i64>,
    /// The embedding model of its passages (one of the node's); `None` uses the node's
    /// default.
    #[serde(default)]
    pub embedding_model: Option<String>,
    /// Bumped by every change to the knowledge base
    /// ([`KnowledgeStore::knowledge_version`](super::KnowledgeStore::knowledge_version)).
    pub knowledge_version: i64,
    /// How its number is reached.
    #[serde(default)]
    pub engine: Engine,
    /// `web`: its own ban hygiene; `None` uses the node's (`Settings::web_hygiene`).
    #[serde(default)]
    pub web_hygiene: Option<WebHygiene>,
    /// When its conversations mark the customer's messages read; `None` uses the node's
    /// (`Settings::read_receipts`).
    #[serde(default)]
    pub read_receipts: Option<ReadReceipts>,
    /// When the tenant was created.
    pub created_ms: i64,
    /// The tenant's WhatsApp numbers, ordered by phone number id.
    pub numbers: Vec<WhatsAppNumber>,
    /// Since when its WhatsApp session is stopped (`session.stop`): it is hosted nowhere,
    /// neither sends nor answers, until `session.start`; `None` = running.
    pub session_stopped_ms: Option<i64>,
}

/// What `Debug` shows for an LLM configuration: whether there is one, never its text.
fn redacted_config(config: Option<&String>) -> Option<&'static str> {
    config.map(|_| "[redacted]")
}

impl fmt::Debug for NewTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            name,
            system_prompt,
            llm_config,
            llm_monthly_spend_cap_micros,
            embedding_model,
            engine,
            web_hygiene,
            read_receipts,
            created_ms,
        } = self;
        f.debug_struct("NewTenant")
            .field("id", id)
            .field("name", name)
            .field("system_prompt", system_prompt)
            .field("llm_config", &redacted_config(llm_config.as_ref()))
            .field("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)
            .field("embedding_model", embedding_model)
            .field("engine", engine)
            .field("web_hygiene", web_hygiene)
            .field("read_receipts", read_receipts)
            .field("created_ms", created_ms)
            .finish()
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            id,
            name,
            system_prompt,
            llm_config,
            llm_monthly_spend_cap_micros,
            embedding_model,
            knowledge_version,
            engine,
            web_hygiene,
            read_receipts,
            created_ms,
            numbers,
            session_stopped_ms,
        } = self;
        f.debug_struct("Tenant")
            .field("id", id)
            .field("name", name)
            .field("system_prompt", system_prompt)
            .field("llm_config", &redacted_config(llm_config.as_ref()))
            .field("llm_monthly_spend_cap_micros", llm_monthly_spend_cap_micros)
            .field("embedding_model", embedding_model)
            .field("knowledge_version", knowledge_version)
            .field("engine", engine)
            .field("web_hygiene", web_hygiene)
            .field("read_receipts", read_receipts)
            .field("created_ms", created_ms)
            .field("numbers", numbers)
            .field("session_stopped_ms", session_stopped_ms)
            .finish()
    }
}

/// One WhatsApp business number of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsAppNumber {
    /// Meta's phone number id; inbound webhooks are routed on it.
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp Business Account id, if known.
    pub waba_id: Option<String>,
    /// The Cloud API access token for this number.
    pub access_token: AccessToken,
}

/// A WhatsApp number to attach to a tenant ([`TenantStore::upsert_whatsapp_number`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWhatsAppNumber {
    /// The tenant that owns the number.
    pub tenant: TenantId,
    /// Meta's phone number id.
    pub phone_number_id: PhoneNumberId,
    /// The WhatsApp Business Account id, if known.
    pub waba_id: Option<String>,
    /// The Cloud API access token.
    pub access_token: AccessToken,
}

/// Where the webhook ingress sends a delivery for a phone number id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRoute {
    /// The tenant that owns the number.
    pub tenant: TenantId,
    /// The number itself.
    pub phone_number_id: PhoneNumberId,
}

/// How [`TenantStore::delete_tenant`] treats the tenant's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deletion {
    /// Mark the tenant deleted and keep its conversations, messages, knowledge, usage and
    /// events; creating the same id again takes them back.
    KeepData,
    /// Erase the tenant and everything of it.
    EraseData,
}

/// Tenants and the WhatsApp numbers that route webhooks to them.
///
/// A deleted tenant ([`TenantStore::delete_tenant`]) is gone for every read: `tenant` and
/// `list_tenants` do not show it, its numbers route nowhere.
#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates a tenant or updates its name, prompt and LLM configuration. A tenant deleted
    /// with its data kept comes back, with that data.
    async fn upsert_tenant(&self, tenant: &NewTenant) -> Result<(), StoreError>;

    /// The tenant with its WhatsApp numbers, if it exists.
    async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>, StoreError>;

    /// Every tenant, ordered by id.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;

    /// Stops the tenant's WhatsApp session (`stopped`) since `at_ms`, or lets it run again:
    /// [`Tenant::session_stopped_ms`]. A session already stopped keeps its first time. A
    /// change is reported by a `session_status` event (`stopped` or `started`) written with
    /// it; asking for the state the session is in changes nothing and reports nothing.
    /// [`StoreError::NotFound`] if there is no such tenant.
    async fn set_session_stopped(
        &self,
        tenant: &TenantId,
        stopped: bool,
        at_ms: i64,
    ) -> Result<(), StoreError>;

    /// Deletes a tenant at `at_ms`, in one transaction: its numbers are removed (they route
    /// nowhere and may be given to another tenant), its pending outbound messages fail
    /// (`tenant_deleted`), its epoch is bumped (writes of the node that hosted it are
    /// refused from now on), and its data is kept or erased as `deletion` says. The epoch
    /// record stays in both cases, so a tenant created again under the same id never
    /// reuses an epoch. `false` if there was no such tenant.
    async fn delete_tenant(
        &self,
        tenant: &TenantId,
        deletion: Deletion,
        at_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Attaches a WhatsApp number to a tenant, or updates its token and WABA id.
    /// [`StoreError::Conflict`] if the number belongs to another tenant;
    /// [`StoreError::NotFound`] if the tenant does not exist.
    async fn upsert_whatsapp_number(&self, number: &NewWhatsAppNumber) -> Result<(), StoreError>;

    /// The tenant that owns a phone number id, for routing webhooks.
    async fn tenant_by_phone_number(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantRoute>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_tokens_never_print() {
        let number = WhatsAppNumber {
            phone_number_id: PhoneNumberId::new("106540352242922").unwrap(),
            waba_id: None,
            access_token: AccessToken::new("EAAG-secret-token"),
        };
        let shown = format!("{number:?} {}", number.access_token);
        assert!(!shown.contains("EAAG-secret-token"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        assert_eq!(number.access_token.expose(), "EAAG-secret-token");
    }

    #[test]
    fn llm_configs_never_print() {
        let llm = r#"[{"kind":"openai","api_key":"sk-planted-secret"}]"#.to_owned();
        let new = NewTenant {
            id: TenantId::new("acme").unwrap(),
            name: "Acme".into(),
            system_prompt: None,
            llm_config: Some(llm.clone()),
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            engine: Default::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms: 1,
        };
        let tenant = Tenant {
            id: new.id.clone(),
            name: new.name.clone(),
            system_prompt: None,
            llm_config: Some(llm),
            llm_monthly_spend_cap_micros: None,
            embedding_model: None,
            knowledge_version: 0,
            engine: Default::default(),
            web_hygiene: None,
            read_receipts: None,
            created_ms: 1,
            numbers: vec![WhatsAppNumber {
                phone_number_id: PhoneNumberId::new("106540352242922").unwrap(),
                waba_id: None,
                access_token: AccessToken::new("EAAG-secret-token"),
            }],
            session_stopped_ms: None,
        };
        for shown in [format!("{new:?}"), format!("{tenant:?}")] {
            assert!(!shown.contains("sk-planted-secret"), "{shown}");
            assert!(!shown.contains("EAAG-secret-token"), "{shown}");
            assert!(
                shown.contains("llm_config: Some(\"[redacted]\")"),
                "{shown}"
            );
            assert!(shown.contains("acme"), "{shown}");
        }
    }
}
