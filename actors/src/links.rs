//! The current refs of a tenant's session and responder, shared by its conversations. The
//! tenant supervisor updates them when it restarts a child, so conversations never hold a
//! stale ref; and the tenant's read-receipt policy, updated when its record is reloaded.

use parking_lot::RwLock;

use ractor::ActorRef;

use crate::responder::ResponderMsg;
use crate::services::ReadReceipts;
use crate::session::SessionMsg;

/// What a tenant's conversations reach through their tenant: its session and responder
/// refs, and its own read-receipt policy (kept current by the tenant supervisor).
#[derive(Debug, Default)]
pub struct TenantLinks {
    session: RwLock<Option<ActorRef<SessionMsg>>>,
    responder: RwLock<Option<ActorRef<ResponderMsg>>>,
    read_receipts: RwLock<Option<ReadReceipts>>,
}

impl TenantLinks {
    /// The session, unless it is restarting.
    pub fn session(&self) -> Option<ActorRef<SessionMsg>> {
        self.session.read().clone()
    }

    /// The responder, unless it is restarting.
    pub fn responder(&self) -> Option<ActorRef<ResponderMsg>> {
        self.responder.read().clone()
    }

    /// Sets (or clears) the session.
    pub fn set_session(&self, session: Option<ActorRef<SessionMsg>>) {
        *self.session.write() = session;
    }

    /// Sets (or clears) the responder.
    pub fn set_responder(&self, responder: Option<ActorRef<ResponderMsg>>) {
        *self.responder.write() = responder;
    }

    /// The tenant's read-receipt policy, or `node_default` when it has none of its own.
    pub fn read_receipts(&self, node_default: ReadReceipts) -> ReadReceipts {
        self.read_receipts.read().unwrap_or(node_default)
    }

    /// Sets the tenant's own read-receipt policy (`None`: the node's).
    pub fn set_read_receipts(&self, policy: Option<ReadReceipts>) {
        *self.read_receipts.write() = policy;
    }
}
