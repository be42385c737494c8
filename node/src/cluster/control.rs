//! Control requests between nodes (activate, migrate out, adopt, drain): sending them and
//! answering them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use salesboy_protocol::subjects;
use salesboy_protocol::{Codec, NodeId};

use super::drain::DRAIN_TIMEOUT;
use super::member::Cluster;
use super::wire::{ControlError, ControlReply, ControlRequest};
use crate::bus::{Bus, BusError, Headers, Message};

/// A control request's timeout (adopting a large subtree, activating).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Sends a control request to a node.
    pub(super) async fn control(
        &self,
        node: &NodeId,
        request: &ControlRequest,
    ) -> Result<ControlReply, BusError> {
        let timeout = if matches!(request, ControlRequest::Drain) {
            DRAIN_TIMEOUT
        } else {
            CONTROL_TIMEOUT
        };
        control_request(self.bus.as_ref(), node, request, timeout).await
    }
    /// Handles one control request.
    pub(super) async fn on_control(self: &Arc<Self>, message: Message) {
        let reply = match Codec::Bincode.decode::<ControlRequest>(&message.payload) {
            Err(e) => ControlReply::Error(ControlError::BadRequest(e)),
            Ok(ControlRequest::Activate { tenant }) => match self.node.activate(&tenant).await {
                Ok(_) => ControlReply::Ok,
                Err(e) => ControlReply::Error(ControlError::Activation(e)),
            },
            Ok(ControlRequest::MigrateOut { tenant, to }) => {
                match self.migrate_out(&tenant, &to).await {
                    Ok(()) => ControlReply::Ok,
                    Err(e) => ControlReply::Error(ControlError::Migration(e)),
                }
            }
            Ok(ControlRequest::Adopt {
                handoff,
                epoch,
                mark_revision,
            }) => match self.adopt(handoff, epoch, mark_revision).await {
                Ok(()) => ControlReply::Ok,
                Err(e) => ControlReply::Error(ControlError::Migration(e)),
            },
            Ok(ControlRequest::Drain) => match self.drain().await {
                Ok(moved) => ControlReply::Drained { moved },
                Err(e) => ControlReply::Error(ControlError::Drain(e)),
            },
        };
        let bytes = Codec::Bincode.encode(&reply).unwrap_or_default();
        let _ = self
            .bus
            .respond(&message, codec_headers(), Bytes::from(bytes))
            .await;
    }
}

pub(super) fn codec_headers() -> Headers {
    Headers::from_iter([(
        salesboy_protocol::codec::CODEC_HEADER,
        Codec::Bincode.header_value(),
    )])
}

/// Sends a control request to `node` and decodes the answer.
pub async fn control_request(
    bus: &dyn Bus,
    node: &NodeId,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, BusError> {
    let payload = Codec::Bincode
        .encode(request)
        .map_err(|e| BusError::Other(e.to_string()))?;
    let reply = bus
        .request(
            &subjects::node_control(node),
            codec_headers(),
            Bytes::from(payload),
            timeout,
        )
        .await?;
    Codec::Bincode
        .decode(&reply.payload)
        .map_err(|e| BusError::Other(e.to_string()))
}
