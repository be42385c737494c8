//! A node's link to the world in the simulation: every bus, store and WhatsApp call of a
//! node passes its gate, which the fault scheduler sets to up, paused, partitioned or down.

use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::Notify;

/// What a node can reach right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Link {
    /// Everything.
    Up,
    /// Nothing moves: every call waits until the pause ends (a stopped process, a long GC
    /// pause, a frozen VM). Timers still run.
    Paused,
    /// Cut off from the bus (NATS); the database and WhatsApp are still reachable.
    Partitioned,
    /// Killed: every call fails, for good.
    Down,
}

/// One node incarnation's gate. A restarted node gets a new gate; the old one stays down.
///
/// Waiters are woken in the order they started waiting (`Notify`), not in tokio `watch`'s
/// order, which is random: the same seed must wake them the same way.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: Mutex<Link>,
    changed: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    /// A gate that is up.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                link: Mutex::new(Link::Up),
                changed: Notify::new(),
            }),
        }
    }

    /// The link now.
    pub fn link(&self) -> Link {
        *self.inner.link.lock()
    }

    /// Sets the link. `Down` is final: nothing changes it afterwards.
    pub fn set(&self, link: Link) {
        {
            let mut current = self.inner.link.lock();
            if *current == Link::Down || *current == link {
                return;
            }
            *current = link;
        }
        self.inner.changed.notify_waiters();
    }

    /// Waits until the link satisfies `ready`; then the link.
    async fn wait_for(&self, ready: impl Fn(Link) -> bool) -> Link {
        loop {
            let changed = self.inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            let link = self.link();
            if ready(link) {
                return link;
            }
            changed.await;
        }
    }

    /// Waits while the node is paused; then the link as it is.
    pub async fn pass(&self) -> Link {
        self.wait_for(|l| l != Link::Paused).await
    }

    /// Waits until the node is up or down (neither paused nor cut off); then the link.
    pub async fn settled(&self) -> Link {
        self.wait_for(|l| matches!(l, Link::Up | Link::Down)).await
    }
}
