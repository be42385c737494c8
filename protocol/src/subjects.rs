//! Every NATS subject, KV bucket and stream name the project uses, derived in this one
//! module. Nobody formats a subject string anywhere else.
//!
//! All the project's own subjects start with [`PREFIX`] (`sb.v1`); the version token lets a
//! future protocol run beside this one. The last two rows below follow NATS's conventions (KV
//! streams, reply inboxes) instead. Ids are validated subject tokens (see [`crate::ids`]), so a subject built
//! here always has exactly the tokens shown.
//!
//! | subject | who listens |
//! |---|---|
//! | `sb.v1.t.<tid>.session` / `.responder` / `.conv.<chat>` | the node hosting tenant `<tid>` |
//! | `sb.v1.t.<tid>.>` | the same node, one subscription per hosted tenant |
//! | `sb.v1.node.<nid>.ctl` | node `<nid>`: activate, migrate-out, adopt, drain |
//! | `sb.v1.node.<nid>.in` | node `<nid>`: commands for the tenants it hosts |
//! | `sb.v1.api.<command>` | any node (service `salesboy`, one queue group): operator commands |
//! | `sb.v1.api.t.<tid>.<command>` | any node (the same service): commands about tenant `<tid>` |
//! | `sb.v1.evt.t.<tid>.<kind>` / `sb.v1.evt.cluster.<kind>` | external services (events stream) |
//! | `$KV.<bucket>.>` (stream `KV_<bucket>`) | JetStream: the stream behind a KV bucket |
//! | `$JS.API.CONSUMER.{INFO,MSG.NEXT}.SB_EVENTS.tenant_<tid>`, `$JS.ACK.SB_EVENTS.tenant_<tid>.>` | JetStream: tenant `<tid>`'s durable events consumer, the only JetStream API a tenant's user may call |
//! | `_INBOX.<tid>.>` | a tenant's client (inbox prefix [`tenant_inbox_prefix`]): its replies |
//! | `_INBOX.local.<n>` | the in-process bus: a requester awaiting its reply |

use crate::address::ActorAddress;
use crate::ids::{NodeId, TenantId};

/// The common prefix of every subject: project and protocol version.
pub const PREFIX: &str = "sb.v1";

/// JetStream KV bucket of node membership records (key: node id).
pub const NODES_BUCKET: &str = "sb_nodes";
/// JetStream KV bucket of the tenant directory (key: tenant id).
pub const DIRECTORY_BUCKET: &str = "sb_directory";
/// JetStream KV bucket holding the rebalancer's leader lease (key: [`LEADER_KEY`]).
pub const LEADER_BUCKET: &str = "sb_leader";
/// The one key of [`LEADER_BUCKET`].
pub const LEADER_KEY: &str = "leader";
/// JetStream stream that records every event (subjects [`all_events`]).
pub const EVENTS_STREAM: &str = "SB_EVENTS";

/// The subject an actor receives its messages on.
pub fn actor(address: &ActorAddress) -> String {
    match address {
        ActorAddress::Session(t) => format!("{PREFIX}.t.{t}.session"),
        ActorAddress::Responder(t) => format!("{PREFIX}.t.{t}.responder"),
        ActorAddress::Conversation(t, c) => format!("{PREFIX}.t.{t}.conv.{c}"),
    }
}

/// Every subject of one tenant's actors: the hosting node's one subscription for it.
pub fn tenant_wildcard(tenant: &TenantId) -> String {
    format!("{PREFIX}.t.{tenant}.>")
}

/// A node's control subject (activate, migrate-out, adopt, drain).
pub fn node_control(node: &NodeId) -> String {
    format!("{PREFIX}.node.{node}.ctl")
}

/// A node's inbox: commands for the tenants it hosts (see
/// `docs/decisions/0006-node-inboxes.md`).
pub fn node_inbox(node: &NodeId) -> String {
    format!("{PREFIX}.node.{node}.in")
}

/// The subject of an operator command of the service API (`sb.v1.api.<command>`).
/// `command` must be an operator command ([`ApiScope::Operator`]).
pub fn api_operator(command: ApiCommand) -> String {
    format!("{PREFIX}.api.{}", command.as_str())
}

/// The subject of a command about one tenant (`sb.v1.api.t.<tenant>.<command>`). A tenant's
/// backend can be confined to `sb.v1.api.t.<tenant>.>`.
pub fn api_tenant(tenant: &TenantId, command: ApiCommand) -> String {
    format!("{PREFIX}.api.t.{tenant}.{}", command.as_str())
}

/// The subject a node's service endpoint listens on for `command`: the operator subject,
/// or the tenant subject with `*` in place of the tenant.
pub fn api_endpoint(command: ApiCommand) -> String {
    match command.scope() {
        ApiScope::Operator => api_operator(command),
        ApiScope::Tenant => format!("{PREFIX}.api.t.*.{}", command.as_str()),
    }
}

/// The tenant token of a tenant command's subject (`sb.v1.api.t.<tenant>.<command>`), not
/// yet validated as a [`TenantId`]; `None` if `subject` is not one of `command`'s.
pub fn api_tenant_token(subject: &str, command: ApiCommand) -> Option<&str> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix(".api.t.")?;
    let tenant = rest.strip_suffix(command.as_str())?.strip_suffix('.')?;
    (!tenant.is_empty() && !tenant.contains('.')).then_some(tenant)
}

/// The name of the NATS micro service every node with a NATS connection registers
/// (`$SRV.PING.salesboy`, `$SRV.INFO.salesboy`, `$SRV.STATS.salesboy`).
pub const SERVICE_NAME: &str = "salesboy";

/// The queue group shared by every node's service endpoints: each request is answered by
/// one node.
pub const SERVICE_QUEUE_GROUP: &str = "salesboy";

/// The subject of a tenant's event of the given kind.
pub fn tenant_event(tenant: &TenantId, kind: EventKind) -> String {
    format!("{PREFIX}.evt.t.{tenant}.{}", kind.as_str())
}

/// The subject of a cluster-wide event of the given kind.
pub fn cluster_event(kind: EventKind) -> String {
    format!("{PREFIX}.evt.cluster.{}", kind.as_str())
}

/// Every event of one tenant (`sb.v1.evt.t.<tenant>.>`): the filter of its events
/// consumer and what its NATS user may subscribe to.
pub fn tenant_events(tenant: &TenantId) -> String {
    format!("{PREFIX}.evt.t.{tenant}.>")
}

/// Every command about one tenant (`sb.v1.api.t.<tenant>.>`): what its NATS user may
/// publish to.
pub fn api_tenant_all(tenant: &TenantId) -> String {
    format!("{PREFIX}.api.t.{tenant}.>")
}

/// The durable pull consumer of [`EVENTS_STREAM`] holding one tenant's events
/// (`tenant_<tenant>`, filter [`tenant_events`]); the operator creates it, the tenant only
/// reads from it.
pub fn tenant_events_consumer(tenant: &TenantId) -> String {
    format!("tenant_{tenant}")
}

/// The JetStream API subject that reads a consumer's state (`$JS.API.CONSUMER.INFO.<stream>.<consumer>`).
pub fn js_consumer_info(stream: &str, consumer: &str) -> String {
    format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}")
}

/// The JetStream API subject that pulls a consumer's next messages
/// (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`).
pub fn js_consumer_next(stream: &str, consumer: &str) -> String {
    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")
}

/// Every ack subject of a consumer's messages (`$JS.ACK.<stream>.<consumer>.>`).
pub fn js_consumer_acks(stream: &str, consumer: &str) -> String {
    format!("$JS.ACK.{stream}.{consumer}.>")
}

/// The inbox prefix a tenant's NATS client must use (`_INBOX.<tenant>`; async-nats:
/// `ConnectOptions::custom_inbox_prefix`): its user may subscribe to `_INBOX.<tenant>.>`
/// only, so no tenant can read the replies another tenant asked for.
pub fn tenant_inbox_prefix(tenant: &TenantId) -> String {
    format!("_INBOX.{tenant}")
}

/// Every event subject (the events stream's filter).
pub fn all_events() -> String {
    format!("{PREFIX}.evt.>")
}

/// The JetStream stream that backs KV bucket `bucket`: NATS's own naming (`KV_<bucket>`), so
/// the bucket opens with `get_key_value` (see `docs/decisions/0003-nats-2-9-kv-through-streams.md`).
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subjects of KV bucket `bucket`'s backing stream (`$KV.<bucket>.>`).
pub fn kv_stream_subjects(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// The reply subject of the in-process bus's `n`-th request (`_INBOX.local.<n>`), shaped like
/// the inboxes NATS clients make.
pub fn local_inbox(n: u64) -> String {
    format!("_INBOX.local.{n}")
}

/// Whom a service API command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiScope {
    /// The whole gateway (`sb.v1.api.<command>`): for the operator.
    Operator,
    /// One tenant, named in the subject (`sb.v1.api.t.<tenant>.<command>`).
    Tenant,
}

/// The commands of the NATS service API (`docs/protocol.md`, "Service API").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCommand {
    /// Create a tenant with its WhatsApp number (operator).
    TenantCreate,
    /// Every tenant (operator).
    TenantList,
    /// The cluster's nodes and tenant counts (operator).
    ClusterStatus,
    /// One tenant, without secrets.
    TenantGet,
    /// Change a tenant's name, prompt, providers or number.
    TenantUpdate,
    /// Where a tenant runs, under which epoch, and its WhatsApp session's state.
    SessionStatus,
    /// Send a message as the business owner.
    MessageSend,
    /// Pause the bot in a chat.
    BotPause,
    /// Resume the bot in a chat.
    BotResume,
    /// Add a knowledge document.
    KnowledgeAdd,
    /// The tenant's knowledge documents.
    KnowledgeList,
    /// Delete a knowledge document.
    KnowledgeDelete,
    /// The tenant's conversations, most recent first.
    ConversationList,
    /// A chat's last messages.
    ConversationMessages,
    /// The tenant's LLM tokens and cost and its messages in and out for one month.
    UsageGet,
    /// Run the tenant's WhatsApp session again after `session.stop`.
    SessionStart,
    /// Stop the tenant's WhatsApp session: it neither sends nor answers until started.
    SessionStop,
    /// Delete a tenant: it stops everywhere; its data is kept or erased.
    TenantDelete,
    /// The tenant's rejected webhook items (items of Meta's deliveries that could not be
    /// read), newest first.
    WebhookRejected,
    /// `web`: the QR code that links the tenant's number (as text and SVG).
    SessionQr,
    /// `web`: an 8-character pairing code for a phone number.
    SessionPairCode,
    /// `web`: unlink the tenant's device.
    SessionLogout,
}

impl ApiCommand {
    /// Every command: a node registers one service endpoint for each.
    pub const ALL: [ApiCommand; 22] = [
        Self::TenantCreate,
        Self::TenantList,
        Self::ClusterStatus,
        Self::TenantGet,
        Self::TenantUpdate,
        Self::SessionStatus,
        Self::MessageSend,
        Self::BotPause,
        Self::BotResume,
        Self::KnowledgeAdd,
        Self::KnowledgeList,
        Self::KnowledgeDelete,
        Self::ConversationList,
        Self::ConversationMessages,
        Self::UsageGet,
        Self::SessionStart,
        Self::SessionStop,
        Self::TenantDelete,
        Self::WebhookRejected,
        Self::SessionQr,
        Self::SessionPairCode,
        Self::SessionLogout,
    ];

    /// The command's subject tokens (`message.send`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreate => "tenant.create",
            Self::TenantList => "tenant.list",
            Self::ClusterStatus => "cluster.status",
            Self::TenantGet => "tenant.get",
            Self::TenantUpdate => "tenant.update",
            Self::SessionStatus => "session.status",
            Self::MessageSend => "message.send",
            Self::BotPause => "bot.pause",
            Self::BotResume => "bot.resume",
            Self::KnowledgeAdd => "knowledge.add",
            Self::KnowledgeList => "knowledge.list",
            Self::KnowledgeDelete => "knowledge.delete",
            Self::ConversationList => "conversation.list",
            Self::ConversationMessages => "conversation.messages",
            Self::UsageGet => "usage.get",
            Self::SessionStart => "session.start",
            Self::SessionStop => "session.stop",
            Self::TenantDelete => "tenant.delete",
            Self::WebhookRejected => "webhook.rejected",
            Self::SessionQr => "session.qr",
            Self::SessionPairCode => "session.pair_code",
            Self::SessionLogout => "session.logout",
        }
    }

    /// Whether the command is about the gateway or about one tenant.
    pub const fn scope(self) -> ApiScope {
        match self {
            Self::TenantCreate | Self::TenantList | Self::ClusterStatus => ApiScope::Operator,
            _ => ApiScope::Tenant,
        }
    }
}

/// The kinds of events published for external services: the last token of an event's
/// subject and its `kind` field (`docs/protocol.md`, "Events").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A customer message was received and persisted.
    MessageReceived,
    /// The assistant's reply was accepted by WhatsApp.
    ReplySent,
    /// The owner's message (sent through the API, or from the phone: an echo) was accepted
    /// by WhatsApp.
    OwnerMessageSent,
    /// An outbound message's delivery status moved forward (delivered, read, failed).
    StatusChanged,
    /// A WhatsApp session's state changed.
    SessionStatus,
    /// The bot was paused in a chat.
    BotPaused,
    /// The bot was resumed in a chat.
    BotResumed,
    /// A knowledge document was added or deleted.
    KnowledgeChanged,
    /// A tenant moved between nodes.
    TenantMigrated,
    /// A node joined the cluster.
    NodeJoined,
    /// A node left the cluster (drained or declared dead).
    NodeLeft,
    /// Something needs an operator's attention.
    AlertRaised,
    /// An alert's condition is over.
    AlertCleared,
    /// An item of a signed webhook delivery could not be read and was recorded as rejected
    /// (the rest of the delivery was processed).
    MessageRejected,
    /// Passages of a knowledge document could not be embedded (the embedding provider is
    /// down or refusing): they stay pending and are retried; full-text search still finds
    /// them meanwhile.
    KnowledgeEmbeddingFailed,
    /// A message reached a WhatsApp Web session but could not be decrypted ("waiting for
    /// this message"): a retry was asked of the sender's phone; nothing answers it.
    MessageUndecryptable,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 16] = [
        Self::MessageReceived,
        Self::ReplySent,
        Self::OwnerMessageSent,
        Self::StatusChanged,
        Self::SessionStatus,
        Self::BotPaused,
        Self::BotResumed,
        Self::KnowledgeChanged,
        Self::TenantMigrated,
        Self::NodeJoined,
        Self::NodeLeft,
        Self::AlertRaised,
        Self::AlertCleared,
        Self::MessageRejected,
        Self::KnowledgeEmbeddingFailed,
        Self::MessageUndecryptable,
    ];

    /// The event's subject token and `kind` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MessageReceived => "message_received",
            Self::ReplySent => "reply_sent",
            Self::OwnerMessageSent => "owner_message_sent",
            Self::StatusChanged => "status_changed",
            Self::SessionStatus => "session_status",
            Self::BotPaused => "bot_paused",
            Self::BotResumed => "bot_resumed",
            Self::KnowledgeChanged => "knowledge_changed",
            Self::TenantMigrated => "tenant_migrated",
            Self::NodeJoined => "node_joined",
            Self::NodeLeft => "node_left",
            Self::AlertRaised => "alert_raised",
            Self::AlertCleared => "alert_cleared",
            Self::MessageRejected => "message_rejected",
            Self::KnowledgeEmbeddingFailed => "knowledge_embedding_failed",
            Self::MessageUndecryptable => "message_undecryptable",
        }
    }

    /// The kind named `name` (its [`EventKind::as_str`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChatId;

    fn tenant() -> TenantId {
        TenantId::new("acme").unwrap()
    }

    #[test]
    fn actor_subjects_have_fixed_token_counts() {
        let chat = ChatId::new("16505551234").unwrap();
        assert_eq!(
            actor(&ActorAddress::Session(tenant())),
            "sb.v1.t.acme.session"
        );
        assert_eq!(
            actor(&ActorAddress::Responder(tenant())),
            "sb.v1.t.acme.responder"
        );
        assert_eq!(
            actor(&ActorAddress::Conversation(tenant(), chat)),
            "sb.v1.t.acme.conv.16505551234"
        );
        assert_eq!(tenant_wildcard(&tenant()), "sb.v1.t.acme.>");
    }

    #[test]
    fn every_actor_subject_falls_under_its_tenant_wildcard() {
        let wildcard = tenant_wildcard(&tenant());
        let stem = wildcard.trim_end_matches('>');
        for address in [
            ActorAddress::Session(tenant()),
            ActorAddress::Responder(tenant()),
            ActorAddress::Conversation(tenant(), ChatId::new("1").unwrap()),
        ] {
            assert!(actor(&address).starts_with(stem));
        }
    }

    #[test]
    fn event_kinds_are_named_as_the_contract_says() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_received",
                "reply_sent",
                "owner_message_sent",
                "status_changed",
                "session_status",
                "bot_paused",
                "bot_resumed",
                "knowledge_changed",
                "tenant_migrated",
                "node_joined",
                "node_left",
                "alert_raised",
                "alert_cleared",
                "message_rejected",
                "knowledge_embedding_failed",
                "message_undecryptable",
            ]
        );
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
        }
        assert_eq!(EventKind::from_name("alert"), None);
    }

    #[test]
    fn kv_stream_names_follow_the_nats_convention() {
        assert_eq!(kv_stream(NODES_BUCKET), "KV_sb_nodes");
        assert_eq!(kv_stream_subjects(DIRECTORY_BUCKET), "$KV.sb_directory.>");
        assert_eq!(local_inbox(7), "_INBOX.local.7");
    }

    #[test]
    fn control_api_and_event_subjects() {
        assert_eq!(
            node_control(&NodeId::new("n1").unwrap()),
            "sb.v1.node.n1.ctl"
        );
        assert_eq!(
            api_operator(ApiCommand::TenantList),
            "sb.v1.api.tenant.list"
        );
        assert_eq!(
            api_tenant(&tenant(), ApiCommand::MessageSend),
            "sb.v1.api.t.acme.message.send"
        );
        assert_eq!(
            tenant_event(&tenant(), EventKind::ReplySent),
            "sb.v1.evt.t.acme.reply_sent"
        );
        assert_eq!(
            cluster_event(EventKind::NodeJoined),
            "sb.v1.evt.cluster.node_joined"
        );
        for command in ApiCommand::ALL {
            let subject = api_endpoint(command);
            assert!(
                subject
                    .split('.')
                    .all(|t| !t.is_empty() && (t == "*" || !t.contains([' ', '*', '>'])))
            );
        }
    }

    #[test]
    fn a_tenants_subjects_fall_under_its_wildcards() {
        let events = tenant_events(&tenant());
        assert_eq!(events, "sb.v1.evt.t.acme.>");
        assert!(
            tenant_event(&tenant(), EventKind::AlertRaised)
                .starts_with(events.trim_end_matches('>'))
        );
        let commands = api_tenant_all(&tenant());
        assert_eq!(commands, "sb.v1.api.t.acme.>");
        for command in ApiCommand::ALL {
            if command.scope() == ApiScope::Tenant {
                assert!(api_tenant(&tenant(), command).starts_with(commands.trim_end_matches('>')));
            }
        }
        let consumer = tenant_events_consumer(&tenant());
        assert_eq!(consumer, "tenant_acme");
        assert_eq!(
            js_consumer_next(EVENTS_STREAM, &consumer),
            "$JS.API.CONSUMER.MSG.NEXT.SB_EVENTS.tenant_acme"
        );
        assert_eq!(
            js_consumer_info(EVENTS_STREAM, &consumer),
            "$JS.API.CONSUMER.INFO.SB_EVENTS.tenant_acme"
        );
        assert_eq!(
            js_consumer_acks(EVENTS_STREAM, &consumer),
            "$JS.ACK.SB_EVENTS.tenant_acme.>"
        );
        assert_eq!(tenant_inbox_prefix(&tenant()), "_INBOX.acme");
    }

    #[test]
    fn the_tenant_is_read_back_from_a_tenant_command_subject() {
        for command in ApiCommand::ALL {
            match command.scope() {
                ApiScope::Tenant => {
                    let subject = api_tenant(&tenant(), command);
                    assert_eq!(api_tenant_token(&subject, command), Some("acme"));
                    assert_eq!(
                        api_endpoint(command),
                        subject.replace(".acme.", ".*."),
                        "{command:?}"
                    );
                }
                ApiScope::Operator => assert_eq!(api_endpoint(command), api_operator(command)),
            }
        }
        let send = ApiCommand::MessageSend;
        assert_eq!(api_tenant_token("sb.v1.api.t.a.b.message.send", send), None);
        assert_eq!(api_tenant_token("sb.v1.api.t..message.send", send), None);
        assert_eq!(api_tenant_token("sb.v1.api.t.acme.bot.pause", send), None);
        assert_eq!(api_tenant_token("sb.v1.api.message.send", send), None);
    }
}
