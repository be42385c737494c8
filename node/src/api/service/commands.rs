//! Each command of the service API: the tenant from the subject, the JSON request, the
//! operation, its answer as JSON. Nothing is done before the whole request is read and
//! valid.

use salesboy_protocol::subjects::{self, ApiCommand};
use salesboy_protocol::{Engine, TenantId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::content::{
    DocumentRequest, InteractiveRequest, MediaRequest, SendRequest, TemplateRequest,
};
use crate::api::conversations;
use crate::api::knowledge::{self, KnowledgeRequest};
use crate::api::tenants::{self, TenantUpdate};
use crate::api::{Api, ApiError, chat_id, cluster, pairing, rejected, tenant_id, usage};

/// A request without fields: empty, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// `session.start`: optionally the engine the caller expects the tenant to use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionStart {
    /// `cloud_api` or `web`: refused when the tenant's engine is another.
    engine: Option<Engine>,
}

/// `message.send`: the customer and what the admin API's send takes ([`SendRequest`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageSend {
    /// The customer's WhatsApp id.
    to: String,
    /// A text, 1 to 4096 characters.
    text: Option<String>,
    /// A template.
    template: Option<TemplateRequest>,
    /// Reply buttons or a list.
    interactive: Option<InteractiveRequest>,
    /// An image by link.
    image: Option<MediaRequest>,
    /// A document by link.
    document: Option<DocumentRequest>,
    /// The client's idempotency key, 1 to 128 characters: sent again, nothing is sent and
    /// the first answer is repeated.
    client_ref: Option<String>,
}

impl MessageSend {
    /// The customer, and the rest as the operation takes it.
    fn split(self) -> (String, SendRequest) {
        let request = SendRequest {
            text: self.text,
            template: self.template,
            interactive: self.interactive,
            image: self.image,
            document: self.document,
            client_ref: self.client_ref,
        };
        (self.to, request)
    }
}

/// `tenant.delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantDelete {
    /// Erase the tenant's data too; absent or false: keep it.
    #[serde(default)]
    erase_data: bool,
}

/// `bot.pause`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotPause {
    /// The customer's WhatsApp id.
    chat: String,
    /// Minutes to pause for; absent = until resumed.
    minutes: Option<u32>,
}

/// `bot.resume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BotResume {
    /// The customer's WhatsApp id.
    chat: String,
}

/// `knowledge.delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnowledgeDelete {
    /// The document's id.
    document_id: i64,
}

/// `conversation.list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationList {
    /// Only conversations after this chat (the last of the previous page).
    after: Option<String>,
    /// How many, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `conversation.messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationMessages {
    /// The customer's WhatsApp id.
    chat: String,
    /// Only messages before this one (a message `id`): paging back.
    before: Option<i64>,
    /// How many of the last messages, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `webhook.rejected`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRejected {
    /// Only items older than this one (an item's `id`): paging back.
    before: Option<i64>,
    /// How many, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `usage.get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageGet {
    /// The month, `YYYY-MM` (UTC); absent = the current month.
    month: Option<String>,
}

/// Carries out `command`, received on `subject` with `payload`; the JSON answer.
pub(super) async fn run(
    api: &Api,
    command: ApiCommand,
    subject: &str,
    payload: &[u8],
) -> Result<Vec<u8>, ApiError> {
    match command {
        ApiCommand::TenantCreate => encode(tenants::create(api, parse(payload)?).await?),
        ApiCommand::TenantList => {
            parse::<NoFields>(payload)?;
            encode(tenants::list(api).await?)
        }
        ApiCommand::ClusterStatus => {
            parse::<NoFields>(payload)?;
            encode(cluster::status(api))
        }
        ApiCommand::TenantGet => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(tenants::get(api, &id).await?)
        }
        ApiCommand::TenantUpdate => {
            let id = tenant(subject, command)?;
            let request: TenantUpdate = parse(payload)?;
            encode(tenants::update(api, &id, request).await?)
        }
        ApiCommand::SessionStatus => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(tenants::session_status(api, &id).await?)
        }
        ApiCommand::TenantDelete => {
            let id = tenant(subject, command)?;
            let request: TenantDelete = parse(payload)?;
            encode(tenants::delete(api, &id, request.erase_data).await?)
        }
        ApiCommand::SessionStart => {
            let id = tenant(subject, command)?;
            let request: SessionStart = parse(payload)?;
            if let Some(engine) = request.engine {
                let tenant = api.existing_tenant(&id).await?;
                if tenant.engine != engine {
                    return Err(ApiError::invalid(
                        "engine",
                        format!("tenant {id} uses the {} engine", tenant.engine),
                    ));
                }
            }
            encode(tenants::session_start(api, &id).await?)
        }
        ApiCommand::SessionQr => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(pairing::qr(api, &id).await?)
        }
        ApiCommand::SessionPairCode => {
            let id = tenant(subject, command)?;
            encode(pairing::pair_code(api, &id, parse(payload)?).await?)
        }
        ApiCommand::SessionLogout => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(pairing::logout(api, &id).await?)
        }
        ApiCommand::SessionStop => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(tenants::session_stop(api, &id).await?)
        }
        ApiCommand::MessageSend => {
            let id = tenant(subject, command)?;
            let (to, request) = parse::<MessageSend>(payload)?.split();
            let chat = chat_id("to", to)?;
            encode(conversations::send(api, &id, &chat, request).await?)
        }
        ApiCommand::BotPause => {
            let id = tenant(subject, command)?;
            let request: BotPause = parse(payload)?;
            let chat = chat_id("chat", request.chat)?;
            encode(conversations::pause(api, &id, &chat, request.minutes).await?)
        }
        ApiCommand::BotResume => {
            let id = tenant(subject, command)?;
            let request: BotResume = parse(payload)?;
            let chat = chat_id("chat", request.chat)?;
            encode(conversations::resume(api, &id, &chat).await?)
        }
        ApiCommand::KnowledgeAdd => {
            let id = tenant(subject, command)?;
            let request: KnowledgeRequest = parse(payload)?;
            encode(knowledge::add(api, &id, request).await?)
        }
        ApiCommand::KnowledgeList => {
            let id = tenant(subject, command)?;
            parse::<NoFields>(payload)?;
            encode(knowledge::list(api, &id).await?)
        }
        ApiCommand::KnowledgeDelete => {
            let id = tenant(subject, command)?;
            let request: KnowledgeDelete = parse(payload)?;
            encode(knowledge::delete(api, &id, request.document_id).await?)
        }
        ApiCommand::ConversationList => {
            let id = tenant(subject, command)?;
            let request: ConversationList = parse(payload)?;
            let after = request.after.map(|a| chat_id("after", a)).transpose()?;
            encode(conversations::list(api, &id, after.as_ref(), request.limit).await?)
        }
        ApiCommand::ConversationMessages => {
            let id = tenant(subject, command)?;
            let request: ConversationMessages = parse(payload)?;
            let chat = chat_id("chat", request.chat)?;
            let messages = conversations::messages(api, &id, &chat, request.before, request.limit);
            encode(messages.await?)
        }
        ApiCommand::UsageGet => {
            let id = tenant(subject, command)?;
            let request: UsageGet = parse(payload)?;
            encode(usage::get(api, &id, request.month.as_deref()).await?)
        }
        ApiCommand::WebhookRejected => {
            let id = tenant(subject, command)?;
            let request: WebhookRejected = parse(payload)?;
            encode(rejected::list(api, &id, request.before, request.limit).await?)
        }
    }
}

/// The tenant named in a tenant command's subject, or 400.
fn tenant(subject: &str, command: ApiCommand) -> Result<TenantId, ApiError> {
    let token = subjects::api_tenant_token(subject, command).ok_or_else(|| {
        ApiError::Malformed(format!(
            "subject {subject} is not a {} subject",
            command.as_str()
        ))
    })?;
    tenant_id("tenant", token)
}

/// The request, read from JSON (an empty payload is `{}`); a reason naming the field if it
/// does not fit.
fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ApiError> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        payload
    };
    let mut json = serde_json::Deserializer::from_slice(payload);
    let value: T = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::Malformed(format!("invalid json body: {inner}"))
        } else {
            ApiError::Malformed(format!("invalid json body: {path}: {inner}"))
        }
    })?;
    json.end()
        .map_err(|e| ApiError::Malformed(format!("invalid json body: {e}")))?;
    Ok(value)
}

/// The answer as JSON.
fn encode(answer: impl Serialize) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(&answer).map_err(|e| ApiError::Internal(format!("encoding the answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_strictly_and_name_the_field() {
        let send: MessageSend = parse(br#"{"to": "1555", "text": "hi"}"#).unwrap();
        assert_eq!(
            (send.to.as_str(), send.text.as_deref()),
            ("1555", Some("hi"))
        );
        parse::<NoFields>(b"").unwrap();
        parse::<NoFields>(b" {} ").unwrap();
        let reason = |payload: &[u8]| parse::<BotPause>(payload).unwrap_err().to_string();
        assert!(
            reason(br#"{"chat": "1", "minutes": "ten"}"#)
                .starts_with("invalid json body: minutes: invalid type")
        );
        assert!(reason(br#"{"chat": "1", "mins": 5}"#).contains("unknown field `mins`"));
        assert!(reason(br#"{"minutes": 5}"#).contains("missing field `chat`"));
        assert!(
            reason(br#"{"chat": "1"} x"#).starts_with("invalid json body: trailing characters")
        );
        assert!(parse::<NoFields>(br#"{"x": 1}"#).is_err());
    }

    #[test]
    fn the_tenant_comes_from_the_subject() {
        let send = ApiCommand::MessageSend;
        assert_eq!(
            tenant("sb.v1.api.t.acme.message.send", send)
                .unwrap()
                .as_str(),
            "acme"
        );
        let error = tenant("sb.v1.api.t.ac~me.message.send", send).unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.to_string().starts_with("tenant: "), "{error}");
    }
}
