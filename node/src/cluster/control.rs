//! Control requests between nodes (activate, migrate out, adopt, drain): sending them and
//! answering them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use salesboy_protocol::subjects;
use salesboy_protocol::{Codec, CodecError, NodeId};
use serde::Serialize;
use tracing::error;

use super::drain::DRAIN_TIMEOUT;
use super::member::ClusterMember;
use super::seal::ClusterKey;
use super::wire::{ControlError, ControlReply, ControlRequest};
use crate::bus::{Bus, BusError, Headers, Message};

/// A control request's timeout (adopting a large subtree, activating).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

impl ClusterMember {
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
        control_request(self.bus.as_ref(), &self.key, node, request, timeout).await
    }

    /// Handles one control request: one that does not open under the cluster key is counted
    /// and left unanswered (its sender times out).
    pub(super) async fn on_control(self: &Arc<Self>, message: Message) {
        let opened = match self.key.open_request(&message.subject, &message.payload) {
            Ok(opened) => opened,
            Err(error) => return error.record(&message.subject),
        };
        let reply = match Codec::Bincode.decode::<ControlRequest>(&opened.message) {
            Err(e) => ControlReply::Error(ControlError::BadRequest(e)),
            Ok(ControlRequest::Activate { tenant }) => match self.node.activate(&tenant).await {
                Ok(_) => ControlReply::Ok,
                Err(e) => ControlReply::Error(ControlError::Activation(e)),
            },
            Ok(ControlRequest::MigrateOut { tenant, to }) => {
                match self.migrate_out(&tenant, &to).await {
                    Ok(_) => ControlReply::Ok,
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
        if let Some(bytes) = encode_answer(&reply, |e| {
            ControlReply::Error(ControlError::Unencodable(e))
        }) {
            let sealed = self.key.seal_answer(&opened.nonce, &bytes);
            let _ = self.bus.respond(&message, codec_headers(), sealed).await;
        }
    }
}

/// An answer in the wire's codec, never an empty body: when it cannot be encoded, the
/// answer `instead` makes of the error goes back; when that cannot be encoded either,
/// nothing does (`None`: the requester times out).
pub(super) fn encode_answer<T: Serialize>(
    answer: &T,
    instead: impl FnOnce(CodecError) -> T,
) -> Option<Bytes> {
    let error = match Codec::Bincode.encode(answer) {
        Ok(bytes) => return Some(Bytes::from(bytes)),
        Err(error) => error,
    };
    error!(error = %error, "answer could not be encoded, sending the error instead");
    match Codec::Bincode.encode(&instead(error)) {
        Ok(bytes) => Some(Bytes::from(bytes)),
        Err(error) => {
            error!(error = %error, "error answer could not be encoded either, sending nothing");
            None
        }
    }
}

pub(super) fn codec_headers() -> Headers {
    Headers::from_iter([(
        salesboy_protocol::codec::CODEC_HEADER,
        Codec::Bincode.header_value(),
    )])
}

/// Sends a control request to `node`, sealed with `key`, and opens and decodes the answer.
pub async fn control_request(
    bus: &dyn Bus,
    key: &ClusterKey,
    node: &NodeId,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, BusError> {
    let payload = Codec::Bincode
        .encode(request)
        .map_err(|e| BusError::Other(e.to_string()))?;
    let subject = subjects::node_control(node);
    let (sealed, nonce) = key.seal_request(&subject, &payload);
    let reply = bus
        .request(&subject, codec_headers(), sealed, timeout)
        .await?;
    let answer = key.open_answer(&nonce, &reply.payload).map_err(|error| {
        error.record(&subject);
        BusError::Other(error.to_string())
    })?;
    Codec::Bincode
        .decode(&answer)
        .map_err(|e| BusError::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde::ser::Error as _;
    use serde::{Deserialize, Serializer};

    use super::*;

    /// An answer that may fail to encode.
    #[derive(Debug, PartialEq, Deserialize)]
    enum Probe {
        Unencodable,
        Failed(String),
    }

    impl Serialize for Probe {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::Unencodable => Err(S::Error::custom("cannot encode this")),
                Self::Failed(reason) => {
                    serializer.serialize_newtype_variant("Probe", 1, "Failed", reason)
                }
            }
        }
    }

    #[test]
    fn an_answer_that_cannot_be_encoded_becomes_an_error_answer_never_an_empty_body() {
        let bytes = encode_answer(&Probe::Unencodable, |e| Probe::Failed(e.to_string()))
            .expect("an answer");
        let answer: Probe = Codec::Bincode.decode(&bytes).expect("a decodable answer");
        assert!(
            matches!(&answer, Probe::Failed(reason) if reason.contains("cannot encode this")),
            "{answer:?}"
        );
        assert_eq!(
            encode_answer(&Probe::Unencodable, |_| Probe::Unencodable),
            None,
            "nothing at all rather than an empty body"
        );
    }
}
