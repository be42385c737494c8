//! The current refs of a tenant's session and responder, shared by its conversations. The
//! tenant supervisor updates them when it restarts a child, so conversations never hold a
//! stale ref.

use parking_lot::RwLock;

use ractor::ActorRef;

use crate::responder::ResponderMsg;
use crate::session::SessionMsg;

/// A tenant's session and responder refs.
#[derive(Debug, Default)]
pub struct TenantLinks {
    session: RwLock<Option<ActorRef<SessionMsg>>>,
    responder: RwLock<Option<ActorRef<ResponderMsg>>>,
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
}
