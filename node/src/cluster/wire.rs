//! What nodes say to each other: tenant commands ([`TenantCommand`] in an [`Envelope`], to
//! the host's inbox, answered with a `Result<CommandReply, RemoteError>`) and control
//! requests (to a node's control subject), and their answers, errors included: a refusal
//! travels as a typed error ([`RemoteError`], [`ControlError`]), never as a sentence.
//! Encoded with the bincode codec.
//!
//! [`Envelope`]: salesboy_protocol::Envelope
//! [`TenantCommand`]: salesboy_actors::command::TenantCommand

use std::time::Duration;

use salesboy_actors::handoff::TenantHandoff;
use salesboy_actors::node::{ActivationError, TenantError};
use salesboy_protocol::{CodecError, NodeId, TenantId};
use serde::{Deserialize, Serialize};

use super::directory::DirectoryError;
use super::drain::DrainError;
use super::migration::MigrationError;

/// Why a host did not carry out a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// This node does not host the tenant (any more): look it up again.
    #[error("tenant is not hosted here")]
    NotHere,
    /// The tenant is moving: retry shortly.
    #[error("tenant is moving")]
    Moving,
    /// The tenant refused the command in a way another node would too (unknown tenant, node
    /// at capacity).
    #[error(transparent)]
    Tenant(TenantError),
    /// The host could not read the directory to learn whether it hosts the tenant.
    #[error("directory unavailable: {0}")]
    Directory(DirectoryError),
    /// The envelope could not be read.
    #[error("bad envelope: {0}")]
    BadEnvelope(CodecError),
    /// The command inside the envelope could not be read.
    #[error("bad command: {0}")]
    BadCommand(CodecError),
    /// The command did not finish within the host's bound on one inbox message; it may
    /// have been carried out, so it is not tried again under the same id.
    #[error("command did not finish within {0:?}")]
    TimedOut(Duration),
}

/// A request to a node's control subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Host this tenant now (placement chose you, or failover moved it to you).
    Activate {
        /// The tenant.
        tenant: TenantId,
    },
    /// Move this tenant to `to` (rebalancing).
    MigrateOut {
        /// The tenant.
        tenant: TenantId,
        /// Its new host.
        to: NodeId,
    },
    /// Host this tenant, moved here with its state, under `epoch` — if the directory still
    /// holds the mover's moving mark: the adopter points the directory at itself with a
    /// compare-and-set on `mark_revision` before it hosts anything, so a mover that gave up
    /// (and rolled its mark back) and an adopter can never both host the tenant.
    Adopt {
        /// Its state.
        handoff: TenantHandoff,
        /// Its new epoch.
        epoch: u64,
        /// The directory revision of the mover's moving mark.
        mark_revision: u64,
    },
    /// Move every tenant off, then exit.
    Drain,
}

/// A control request's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlReply {
    /// Done.
    Ok,
    /// Drained: this many tenants moved off.
    Drained {
        /// Tenants moved.
        moved: u64,
    },
    /// Refused or failed.
    Error(ControlError),
}

/// Why a control request was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControlError {
    /// The request could not be read.
    #[error("bad control request: {0}")]
    BadRequest(CodecError),
    /// An `Activate` failed.
    #[error(transparent)]
    Activation(ActivationError),
    /// A `MigrateOut` or an `Adopt` failed.
    #[error(transparent)]
    Migration(MigrationError),
    /// A `Drain` failed.
    #[error(transparent)]
    Drain(DrainError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesboy_actors::command::CommandReply;
    use salesboy_actors::node::EpochError;
    use salesboy_protocol::Codec;

    #[test]
    fn wire_messages_round_trip_in_bincode() {
        let tenant = TenantId::new("acme").unwrap();
        let replies: Vec<Result<CommandReply, RemoteError>> = vec![
            Ok(CommandReply::Done),
            Ok(CommandReply::Outbound(4)),
            Err(RemoteError::NotHere),
            Err(RemoteError::Tenant(TenantError::Activation(
                ActivationError::UnknownTenant(tenant.clone()),
            ))),
            Err(RemoteError::BadCommand(CodecError::Truncated)),
            Err(RemoteError::TimedOut(Duration::from_secs(15))),
        ];
        for reply in replies {
            let bytes = Codec::Bincode.encode(&reply).unwrap();
            assert_eq!(
                Codec::Bincode
                    .decode::<Result<CommandReply, RemoteError>>(&bytes)
                    .unwrap(),
                reply
            );
        }
        let control = vec![
            ControlRequest::Activate {
                tenant: tenant.clone(),
            },
            ControlRequest::MigrateOut {
                tenant: tenant.clone(),
                to: NodeId::new("n2").unwrap(),
            },
            ControlRequest::Adopt {
                handoff: TenantHandoff {
                    tenant: tenant.clone(),
                    epoch: 1,
                    conversations: vec![],
                    session: None,
                    held: vec![],
                },
                epoch: 2,
                mark_revision: 7,
            },
            ControlRequest::Drain,
        ];
        for request in control {
            let bytes = Codec::Bincode.encode(&request).unwrap();
            assert_eq!(
                Codec::Bincode.decode::<ControlRequest>(&bytes).unwrap(),
                request
            );
        }
        let other = NodeId::new("n2").unwrap();
        let answers = vec![
            ControlReply::Ok,
            ControlReply::Drained { moved: 3 },
            ControlReply::Error(ControlError::BadRequest(CodecError::TrailingBytes(2))),
            ControlReply::Error(ControlError::Activation(ActivationError::Epoch {
                tenant: tenant.clone(),
                error: EpochError::HostedBy {
                    node: other.clone(),
                },
            })),
            ControlReply::Error(ControlError::Migration(MigrationError::AdoptionRefused {
                tenant: tenant.clone(),
                to: other.clone(),
                error: Box::new(ControlError::Migration(MigrationError::CalledOff {
                    tenant: tenant.clone(),
                    error: DirectoryError::Conflict,
                })),
            })),
            ControlReply::Error(ControlError::Migration(
                MigrationError::AdoptionUnanswered {
                    tenant: tenant.clone(),
                    to: other,
                    error: crate::bus::BusError::Timeout,
                },
            )),
            ControlReply::Error(ControlError::Drain(DrainError::Stranded { left: 2 })),
        ];
        for answer in answers {
            let bytes = Codec::Bincode.encode(&answer).unwrap();
            assert_eq!(
                Codec::Bincode.decode::<ControlReply>(&bytes).unwrap(),
                answer
            );
        }
    }
}
