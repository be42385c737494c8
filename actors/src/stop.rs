//! Why actors stop: the reasons this crate gives ractor's `stop` ([`StopReason`]), and how a
//! supervisor reads a child's exit ([`ChildExit`]). ractor carries a stop reason as an
//! `Option<String>`; this module is the one place that turns it into text and back.

use ractor::{ActorCell, SupervisionEvent};

/// Why an actor of this crate stopped itself (or was stopped by its owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// An idle conversation made room; it starts again on the next message.
    Passivated,
    /// An idle tenant stopped; it is activated again on the next message.
    Idle,
    /// A newer epoch was claimed for the tenant: another node hosts it now.
    Fenced,
    /// The tenant moved to another node.
    Moved,
    /// The tenant was deleted.
    Deleted,
    /// The tenant's WhatsApp session was stopped (`session.stop`).
    SessionStopped,
    /// Too many failures of a child: the tenant gave up.
    Failed,
    /// An activation finished while the node was stopping.
    NodeStopping,
    /// The node shuts down.
    Shutdown,
}

impl StopReason {
    /// The text ractor carries.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Passivated => "passivated",
            Self::Idle => "idle",
            Self::Fenced => "fenced",
            Self::Moved => "moved",
            Self::Deleted => "deleted",
            Self::SessionStopped => "session stopped",
            Self::Failed => "failed",
            Self::NodeStopping => "node stopping",
            Self::Shutdown => "shutdown",
        }
    }

    /// The reason ractor reported, if this crate gave it.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Passivated,
            Self::Idle,
            Self::Fenced,
            Self::Moved,
            Self::Deleted,
            Self::SessionStopped,
            Self::Failed,
            Self::NodeStopping,
            Self::Shutdown,
        ]
        .into_iter()
        .find(|reason| reason.as_str() == text)
    }

    /// Whether an actor stopping for this reason did its job and needs no restart.
    pub const fn is_clean(self) -> bool {
        matches!(self, Self::Passivated | Self::Idle)
    }

    /// The argument of ractor's `stop` and `stop_and_wait`.
    pub fn into_ractor(self) -> Option<String> {
        Some(self.as_str().to_owned())
    }

    /// Stops `actor` for this reason.
    pub fn stop(self, actor: &ActorCell) {
        actor.stop(self.into_ractor());
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child ended, as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildExit {
    /// It stopped with nothing left to do ([`StopReason::is_clean`], or no reason at all).
    Stopped,
    /// It was fenced: the whole tenant is hosted elsewhere now.
    Fenced,
    /// It failed (panicked, returned an error, or stopped for another reason).
    Failed(String),
}

impl ChildExit {
    /// The child and how it ended; `None` for events that are not an exit.
    pub fn of(event: SupervisionEvent) -> Option<(ActorCell, Self)> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let exit = match reason {
                    None => Self::Stopped,
                    Some(text) => match StopReason::parse(&text) {
                        Some(reason) if reason.is_clean() => Self::Stopped,
                        Some(StopReason::Fenced) => Self::Fenced,
                        _ => Self::Failed(text),
                    },
                };
                Some((cell, exit))
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                Some((cell, Self::Failed(error.to_string())))
            }
            _ => None,
        }
    }

    /// Why, for logs.
    pub fn describe(&self) -> &str {
        match self {
            Self::Stopped => "stopped",
            Self::Fenced => StopReason::Fenced.as_str(),
            Self::Failed(reason) => reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_ractors_text() {
        for reason in [
            StopReason::Passivated,
            StopReason::Idle,
            StopReason::Fenced,
            StopReason::Moved,
            StopReason::Deleted,
            StopReason::Failed,
            StopReason::NodeStopping,
            StopReason::Shutdown,
        ] {
            let text = reason.into_ractor().unwrap();
            assert_eq!(StopReason::parse(&text), Some(reason));
        }
        assert_eq!(StopReason::parse("boom"), None);
    }
}
