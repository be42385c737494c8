//! The node's inbox: commands other nodes send for tenants this node hosts, answered once
//! per message id (the dedup window).

use std::time::Duration;

use bytes::Bytes;
use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_protocol::{Codec, Envelope, TenantId};

use super::control::codec_headers;
use super::directory::PlacementState;
use super::member::Cluster;
use super::router::{Attempt, activation_attempt};
use super::wire::RemoteError;
use crate::bus::Message;

/// How long a host remembers the answers it gave (the dedup window).
pub(super) const DEDUP_WINDOW: Duration = Duration::from_secs(120);

impl Cluster {
    /// Handles one message of the inbox.
    pub(super) async fn on_inbox(&self, message: Message) {
        let answer: Result<CommandReply, RemoteError> =
            match Codec::Bincode.decode::<Envelope>(&message.payload) {
                Err(e) => Err(RemoteError::BadEnvelope(e)),
                Ok(envelope) => {
                    if let Some(cached) = self.replies.get(&envelope.id) {
                        let _ = self.bus.respond(&message, codec_headers(), cached).await;
                        return;
                    }
                    let tenant = envelope.target.tenant().clone();
                    let answer = self.accept(&tenant, &envelope).await;
                    let bytes = Bytes::from(Codec::Bincode.encode(&answer).unwrap_or_default());
                    if answer.is_ok() {
                        self.replies.insert(envelope.id, bytes.clone());
                    }
                    let _ = self.bus.respond(&message, codec_headers(), bytes).await;
                    return;
                }
            };
        let bytes = Bytes::from(Codec::Bincode.encode(&answer).unwrap_or_default());
        let _ = self.bus.respond(&message, codec_headers(), bytes).await;
    }

    /// Carries out a command sent to this node for a tenant it should host.
    pub(super) async fn accept(
        &self,
        tenant: &TenantId,
        envelope: &Envelope,
    ) -> Result<CommandReply, RemoteError> {
        let placement = match self.directory.cached(tenant) {
            Some(v) if v.placement.node == self.me => v.placement,
            _ => match self.directory.fetch(tenant).await {
                Ok(Some(v)) if v.placement.node == self.me => v.placement,
                Ok(_) => return Err(RemoteError::NotHere),
                Err(e) => return Err(RemoteError::Directory(e)),
            },
        };
        if matches!(placement.state, PlacementState::Moving { .. }) {
            return Err(RemoteError::Moving);
        }
        if envelope.epoch > placement.epoch {
            // The sender knows a newer placement than this node: this node is stale.
            return Err(RemoteError::NotHere);
        }
        let command: TenantCommand = Codec::Bincode
            .decode(&envelope.payload)
            .map_err(RemoteError::BadCommand)?;
        match self.node.deliver(tenant, command).await {
            Ok(reply) => Ok(reply),
            // What would fail anywhere goes back as it is; the rest sends the sender back to
            // the directory.
            Err(error) => match activation_attempt(tenant, error.clone()) {
                Attempt::Final(_) => Err(RemoteError::Tenant(error)),
                Attempt::Retry(_) => Err(RemoteError::NotHere),
            },
        }
    }
}
