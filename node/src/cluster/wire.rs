//! What nodes say to each other: tenant commands ([`TenantCommand`] in an [`Envelope`], to
//! the host's inbox, answered with a `Result<CommandReply, RemoteError>`) and control
//! requests (to a node's control subject). Encoded with the bincode codec.
//!
//! [`Envelope`]: salesboy_protocol::Envelope
//! [`TenantCommand`]: salesboy_actors::command::TenantCommand

use salesboy_actors::handoff::TenantHandoff;
use salesboy_protocol::{NodeId, TenantId};
use serde::{Deserialize, Serialize};

/// Why a host did not carry out a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// This node does not host the tenant (any more): look it up again.
    #[error("tenant is not hosted here")]
    NotHere,
    /// The tenant is moving: retry shortly.
    #[error("tenant is moving")]
    Moving,
    /// The command was refused.
    #[error("{0}")]
    Refused(String),
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
    /// Refused or failed, with the reason.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesboy_actors::command::CommandReply;
    use salesboy_protocol::Codec;

    #[test]
    fn wire_messages_round_trip_in_bincode() {
        let tenant = TenantId::new("acme").unwrap();
        let replies: Vec<Result<CommandReply, RemoteError>> = vec![
            Ok(CommandReply::Done),
            Ok(CommandReply::Outbound(4)),
            Err(RemoteError::NotHere),
            Err(RemoteError::Refused("x".into())),
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
                    tenant,
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
    }
}
