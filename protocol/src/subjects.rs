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
//! | `sb.v1.api.<command>` | any node: the JSON API for external services |
//! | `sb.v1.evt.t.<tid>.<kind>` / `sb.v1.evt.cluster.<kind>` | external services (events stream) |
//! | `$KV.<bucket>.>` (stream `KV_<bucket>`) | JetStream: the stream behind a KV bucket |
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

/// The subject of one command of the external JSON API. `command` is a fixed name from the
/// API (`session.start`, `message.send`, …), written as dot-separated lowercase tokens.
pub fn api(command: ApiCommand) -> String {
    format!("{PREFIX}.api.{}", command.as_str())
}

/// Every subject of the external API (for a node's queue subscription).
pub fn api_wildcard() -> String {
    format!("{PREFIX}.api.>")
}

/// The subject of a tenant's event of the given kind.
pub fn tenant_event(tenant: &TenantId, kind: EventKind) -> String {
    format!("{PREFIX}.evt.t.{tenant}.{}", kind.as_str())
}

/// The subject of a cluster-wide event of the given kind.
pub fn cluster_event(kind: EventKind) -> String {
    format!("{PREFIX}.evt.cluster.{}", kind.as_str())
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

/// The commands of the external request/reply API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiCommand {
    /// Start a tenant's WhatsApp session.
    SessionStart,
    /// Stop a tenant's WhatsApp session.
    SessionStop,
    /// A tenant's session status.
    SessionStatus,
    /// Send a message as the business owner.
    MessageSend,
    /// Pause the bot for a chat.
    BotPause,
    /// Resume the bot for a chat.
    BotResume,
    /// The cluster's nodes and tenant counts.
    ClusterStatus,
}

impl ApiCommand {
    /// Every command, for documentation and subscription tests.
    pub const ALL: [ApiCommand; 7] = [
        Self::SessionStart,
        Self::SessionStop,
        Self::SessionStatus,
        Self::MessageSend,
        Self::BotPause,
        Self::BotResume,
        Self::ClusterStatus,
    ];

    /// The command's subject tokens.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SessionStart => "session.start",
            Self::SessionStop => "session.stop",
            Self::SessionStatus => "session.status",
            Self::MessageSend => "message.send",
            Self::BotPause => "bot.pause",
            Self::BotResume => "bot.resume",
            Self::ClusterStatus => "cluster.status",
        }
    }
}

/// The kinds of events published for external services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A customer message was received and persisted.
    MessageReceived,
    /// The assistant's (or owner's) reply was sent.
    ReplySent,
    /// An outbound message's delivery status changed.
    StatusChanged,
    /// A WhatsApp session's state changed.
    SessionStatus,
    /// A node joined the cluster.
    NodeJoined,
    /// A node left the cluster (drained or declared dead).
    NodeLeft,
    /// A tenant moved between nodes.
    TenantMigrated,
    /// Something needs an operator's attention.
    Alert,
}

impl EventKind {
    /// The event's subject token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MessageReceived => "message_received",
            Self::ReplySent => "reply_sent",
            Self::StatusChanged => "status_changed",
            Self::SessionStatus => "session_status",
            Self::NodeJoined => "node_joined",
            Self::NodeLeft => "node_left",
            Self::TenantMigrated => "tenant_migrated",
            Self::Alert => "alert",
        }
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
        assert_eq!(api(ApiCommand::MessageSend), "sb.v1.api.message.send");
        assert_eq!(
            tenant_event(&tenant(), EventKind::ReplySent),
            "sb.v1.evt.t.acme.reply_sent"
        );
        assert_eq!(
            cluster_event(EventKind::NodeJoined),
            "sb.v1.evt.cluster.node_joined"
        );
        for command in ApiCommand::ALL {
            let subject = api(command);
            assert!(
                subject
                    .split('.')
                    .all(|t| !t.is_empty() && !t.contains([' ', '*', '>']))
            );
        }
    }
}
