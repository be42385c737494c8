//! The load generator: posts the planned messages as signed webhooks, open loop (each at
//! its planned time, whatever the answers), to the routable nodes in turn, and retries a
//! refused or failed delivery on the next node as Meta retries a webhook.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use salesboy_protocol::PhoneNumberId;
use salesboy_testkit::{ClusterSandbox, webhooks};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::traffic::{Planned, customer_wa_id};

/// How often one message is tried before it is given up (Meta retries for longer).
const MAX_ATTEMPTS: u32 = 60;

/// The pause between two tries of one message.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The nodes webhooks may go to now (alive and not draining), in turn.
#[derive(Debug, Default)]
pub struct Routes {
    nodes: RwLock<Vec<usize>>,
    next: AtomicUsize,
}

impl Routes {
    /// Routes to `nodes`.
    pub fn new(nodes: impl IntoIterator<Item = usize>) -> Self {
        Self {
            nodes: RwLock::new(nodes.into_iter().collect()),
            next: AtomicUsize::new(0),
        }
    }

    /// The next node to post to, if any is routable.
    pub fn pick(&self) -> Option<usize> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        if nodes.is_empty() {
            return None;
        }
        Some(nodes[self.next.fetch_add(1, Ordering::Relaxed) % nodes.len()])
    }

    /// Stops routing to `node`.
    pub fn remove(&self, node: usize) {
        self.write().retain(|n| *n != node);
    }

    /// Routes to `node` (again).
    pub fn add(&self, node: usize) {
        let mut nodes = self.write();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }

    /// The routable nodes.
    pub fn nodes(&self) -> Vec<usize> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<usize>> {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Live counts for the progress line.
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Messages whose first post went out.
    pub sent: AtomicU64,
    /// Messages a node accepted (2xx).
    pub accepted: AtomicU64,
    /// Failed posts (refused, errors, timeouts), retried or not.
    pub post_errors: AtomicU64,
    /// Messages given up after every try.
    pub given_up: AtomicU64,
}

/// What happened to one planned message.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The message's number.
    pub id: u64,
    /// When its first post went out, from the start of the traffic.
    pub first_post: Duration,
    /// When a node accepted it, if one did.
    pub accepted: Option<Duration>,
    /// Posts made.
    pub attempts: u32,
}

/// Everything the sender needs.
pub struct Sender {
    /// The nodes.
    pub sandbox: Arc<ClusterSandbox>,
    /// Where to post.
    pub routes: Arc<Routes>,
    /// Each tenant's number, by tenant index.
    pub numbers: Vec<PhoneNumberId>,
    /// Customers per tenant.
    pub customers_per_tenant: usize,
    /// Posts in flight at most.
    pub concurrency: usize,
    /// Live counts.
    pub counters: Arc<SendCounters>,
    /// When each failed post happened, from the start of the traffic.
    pub error_times: Arc<Mutex<Vec<Duration>>>,
}

impl Sender {
    /// Sends every planned message at its time from `start`; what happened to each.
    pub async fn run(self: Arc<Self>, plan: Arc<Vec<Planned>>, start: Instant) -> Vec<Outcome> {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for index in 0..plan.len() {
            tokio::time::sleep_until((start + plan[index].at).into()).await;
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let sender = Arc::clone(&self);
            let plan = Arc::clone(&plan);
            tasks.spawn(async move {
                let outcome = sender.deliver(&plan[index], start).await;
                drop(permit);
                outcome
            });
        }
        let mut outcomes = Vec::with_capacity(plan.len());
        while let Some(result) = tasks.join_next().await {
            if let Ok(outcome) = result {
                outcomes.push(outcome);
            }
        }
        outcomes.sort_by_key(|outcome| outcome.id);
        outcomes
    }

    /// Posts one message until a node accepts it or the tries run out.
    async fn deliver(&self, message: &Planned, start: Instant) -> Outcome {
        let tenant = message.customer / self.customers_per_tenant;
        let body = webhooks::text_message(
            self.numbers[tenant].as_str(),
            &customer_wa_id(message.customer),
            &format!("wamid.sim.{}", message.id),
            &message.text,
        );
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let first_post = start.elapsed();
        let mut attempts = 0;
        while attempts < MAX_ATTEMPTS {
            attempts += 1;
            let accepted = match self.routes.pick() {
                Some(node) => self
                    .sandbox
                    .post_webhook(node, &body)
                    .await
                    .is_ok_and(|status| status.is_success()),
                None => false,
            };
            if accepted {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                return Outcome {
                    id: message.id,
                    first_post,
                    accepted: Some(start.elapsed()),
                    attempts,
                };
            }
            self.counters.post_errors.fetch_add(1, Ordering::Relaxed);
            self.error_times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(start.elapsed());
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        self.counters.given_up.fetch_add(1, Ordering::Relaxed);
        Outcome {
            id: message.id,
            first_post,
            accepted: None,
            attempts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Routes;

    #[test]
    fn routes_go_round_the_routable_nodes() {
        let routes = Routes::new([0, 1, 2]);
        let picks: Vec<_> = (0..3).filter_map(|_| routes.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        routes.remove(1);
        assert!((0..4).filter_map(|_| routes.pick()).all(|n| n != 1));
        routes.remove(0);
        routes.remove(2);
        assert_eq!(routes.pick(), None);
        routes.add(3);
        assert_eq!(routes.pick(), Some(3));
    }
}
