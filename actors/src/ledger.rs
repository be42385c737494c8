//! The node's record of reply sends: which are under way and which finished lately.
//!
//! A session keeps its own queue, but the record of what is being sent lives here, shared
//! by every session on the node: a session (or its tenant) that crashes and restarts reads
//! the pending replies from SQL again, and among them may be one an earlier incarnation is
//! still sending, or has just sent while the read was under way. The ledger tells the new
//! incarnation to leave those alone, so a restart never sends a reply twice.
//!
//! Entries are per placement epoch: a host at a newer epoch (the tenant moved away and back)
//! must send what is still pending in SQL, even a reply this node sent under an older epoch
//! but could not record (the store refused it as stale), or the reply would stay pending
//! for ever.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

/// A send as the ledger knows it: the sender's placement epoch and the outbound id.
type SendKey = (u64, i64);

/// The most finished sends the ledger remembers.
pub const RECENT_FINISHED: usize = 4096;

/// Sends under way and lately finished on this node, by placement epoch and outbound id (the
/// messages table's key, unique across tenants).
#[derive(Debug, Default)]
pub struct SendLedger {
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    under_way: HashSet<SendKey>,
    finished: RecentIds,
}

impl SendLedger {
    /// Whether `outbound_id` is being sent or was finished lately on this node under `epoch`:
    /// a request to send it again comes from a stale read and is to be ignored.
    pub fn knows(&self, epoch: u64, outbound_id: i64) -> bool {
        let key = (epoch, outbound_id);
        let state = self.state.lock();
        state.under_way.contains(&key) || state.finished.contains(key)
    }

    /// Claims the send of `outbound_id` under `epoch`; `None` when it is under way or
    /// finished already.
    pub fn begin(self: &Arc<Self>, epoch: u64, outbound_id: i64) -> Option<SendClaim> {
        let key = (epoch, outbound_id);
        let mut state = self.state.lock();
        if state.finished.contains(key) || !state.under_way.insert(key) {
            return None;
        }
        Some(SendClaim {
            ledger: Arc::clone(self),
            key,
        })
    }

    /// Remembers `outbound_id` as finished under `epoch` (sent, or failed for good).
    pub fn finished(&self, epoch: u64, outbound_id: i64) {
        let key = (epoch, outbound_id);
        let mut state = self.state.lock();
        state.under_way.remove(&key);
        state.finished.insert(key);
    }
}

/// The right to send one reply. Dropped, the send is no longer under way (it failed and may
/// be tried again); [`SendClaim::finish`] records it as finished.
#[derive(Debug)]
pub struct SendClaim {
    ledger: Arc<SendLedger>,
    key: SendKey,
}

impl SendClaim {
    /// The send is over for good: sent and recorded, or given up.
    pub fn finish(self) {
        let (epoch, outbound_id) = self.key;
        self.ledger.finished(epoch, outbound_id);
    }
}

impl Drop for SendClaim {
    fn drop(&mut self) {
        self.ledger.state.lock().under_way.remove(&self.key);
    }
}

/// The last [`RECENT_FINISHED`] sends inserted, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentIds {
    order: VecDeque<SendKey>,
    ids: HashSet<SendKey>,
}

impl RecentIds {
    fn insert(&mut self, id: SendKey) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > RECENT_FINISHED
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: SendKey) -> bool {
        self.ids.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_excludes_a_second_one_until_dropped() {
        let ledger = Arc::new(SendLedger::default());
        let claim = ledger.begin(1, 7).expect("first claim");
        assert!(ledger.knows(1, 7));
        assert!(ledger.begin(1, 7).is_none(), "under way");
        drop(claim);
        assert!(!ledger.knows(1, 7), "a failed send may be tried again");
        assert!(ledger.begin(1, 7).is_some());
    }

    #[test]
    fn a_finished_send_is_remembered() {
        let ledger = Arc::new(SendLedger::default());
        ledger.begin(1, 7).expect("claim").finish();
        assert!(ledger.knows(1, 7));
        assert!(ledger.begin(1, 7).is_none(), "finished");
    }

    /// A reply sent under an older epoch whose record the store refused as stale is still
    /// pending: the host at a newer epoch, this node again after a move back, sends it.
    #[test]
    fn a_newer_epoch_may_send_what_an_older_one_finished() {
        let ledger = Arc::new(SendLedger::default());
        ledger.begin(1, 7).expect("claim").finish();
        assert!(!ledger.knows(2, 7));
        assert!(ledger.begin(2, 7).is_some());
    }

    #[test]
    fn recent_ids_remember_the_last_ones_and_forget_the_oldest() {
        let mut recent = RecentIds::default();
        for id in 0..i64::try_from(RECENT_FINISHED).unwrap() {
            recent.insert((1, id));
        }
        recent.insert((1, 3));
        assert!(recent.contains((1, 0)) && recent.contains((1, 3)));
        recent.insert((1, 1_000_000));
        assert!(!recent.contains((1, 0)), "the oldest is forgotten");
        assert!(recent.contains((1, 1)) && recent.contains((1, 1_000_000)));
        assert_eq!(recent.order.len(), RECENT_FINISHED);
    }
}
