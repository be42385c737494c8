//! The node's record of reply sends: which are under way and which finished lately.
//!
//! A session keeps its own queue, but the record of what is being sent lives here, shared
//! by every session on the node: a session (or its tenant) that crashes and restarts reads
//! the pending replies from SQL again, and among them may be one an earlier incarnation is
//! still sending, or has just sent while the read was under way. The ledger tells the new
//! incarnation to leave those alone, so a restart never sends a reply twice.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// The most finished outbound ids the ledger remembers.
pub const RECENT_FINISHED: usize = 4096;

/// Sends under way and lately finished on this node, by outbound id (the messages table's
/// key, unique across tenants).
#[derive(Debug, Default)]
pub struct SendLedger {
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    under_way: HashSet<i64>,
    finished: RecentIds,
}

impl SendLedger {
    /// Whether `outbound_id` is being sent or was finished lately on this node: a request to
    /// send it again comes from a stale read and is to be ignored.
    pub fn knows(&self, outbound_id: i64) -> bool {
        let state = self.state.lock();
        state.under_way.contains(&outbound_id) || state.finished.contains(outbound_id)
    }

    /// Claims the send of `outbound_id`; `None` when it is under way or finished already.
    pub fn begin(self: &Arc<Self>, outbound_id: i64) -> Option<SendClaim> {
        let mut state = self.state.lock();
        if state.finished.contains(outbound_id) || !state.under_way.insert(outbound_id) {
            return None;
        }
        Some(SendClaim {
            ledger: Arc::clone(self),
            outbound_id,
        })
    }

    /// Remembers `outbound_id` as finished (sent, or failed for good).
    pub fn finished(&self, outbound_id: i64) {
        let mut state = self.state.lock();
        state.under_way.remove(&outbound_id);
        state.finished.insert(outbound_id);
    }
}

/// The right to send one reply. Dropped, the send is no longer under way (it failed and may
/// be tried again); [`SendClaim::finish`] records it as finished.
#[derive(Debug)]
pub struct SendClaim {
    ledger: Arc<SendLedger>,
    outbound_id: i64,
}

impl SendClaim {
    /// The send is over for good: sent and recorded, or given up.
    pub fn finish(self) {
        self.ledger.finished(self.outbound_id);
    }
}

impl Drop for SendClaim {
    fn drop(&mut self) {
        self.ledger.state.lock().under_way.remove(&self.outbound_id);
    }
}

/// The last [`RECENT_FINISHED`] ids inserted, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<i64>,
    ids: HashSet<i64>,
}

impl RecentIds {
    fn insert(&mut self, id: i64) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > RECENT_FINISHED
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: i64) -> bool {
        self.ids.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_a_second_one_until_dropped() {
        let ledger = Arc::new(SendLedger::default());
        let claim = ledger.begin(7).expect("first claim");
        assert!(ledger.knows(7));
        assert!(ledger.begin(7).is_none(), "under way");
        drop(claim);
        assert!(!ledger.knows(7), "a failed send may be tried again");
        assert!(ledger.begin(7).is_some());
    }

    #[test]
    fn a_finished_send_is_remembered() {
        let ledger = Arc::new(SendLedger::default());
        ledger.begin(7).expect("claim").finish();
        assert!(ledger.knows(7));
        assert!(ledger.begin(7).is_none(), "finished");
    }

    #[test]
    fn recent_ids_remember_the_last_ones_and_forget_the_oldest() {
        let mut recent = RecentIds::default();
        for id in 0..i64::try_from(RECENT_FINISHED).unwrap() {
            recent.insert(id);
        }
        recent.insert(3);
        assert!(recent.contains(0) && recent.contains(3));
        recent.insert(1_000_000);
        assert!(!recent.contains(0), "the oldest is forgotten");
        assert!(recent.contains(1) && recent.contains(1_000_000));
        assert_eq!(recent.order.len(), RECENT_FINISHED);
    }
}
