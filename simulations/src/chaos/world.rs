//! One run: start the cluster, play the plan (customers write, nodes fail, the network
//! misbehaves), stop the faults, wait for the cluster to settle, collect what it left.

use std::fmt::Write as _;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context;
use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{AccessToken, DeliveryStatus, NewTenant, NewWhatsAppNumber};
use salesboy_node::ingress::Ingress;
use salesboy_protocol::whatsapp::inbound::{InboundMessage, MessageContent, WebhookEvent};
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use tokio::time::Instant;

use super::bus::{FaultCounts, Network};
use super::check::{Observed, inbound_text, inbound_wamid};
use super::gate::Link;
use super::node::{Shared, SimNode};
use super::plan::{CustomerMessage, FaultKind, NodeFault, Plan};
use salesboy_actors::ports::Clock;

use super::ports::{SIM_EPOCH_MS, SimClock};
use super::rng::{KeyedDraws, SimRng};
use super::store::MemoryStore;

/// How long the cluster may take to settle once the faults stop.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);
/// How long it must stay settled before the run ends (late duplicates and stale writes
/// would show up meanwhile).
const SETTLED_FOR: Duration = Duration::from_secs(5);
/// How long Meta waits before posting a webhook again when the node did not take it.
const WEBHOOK_RETRY: Duration = Duration::from_millis(500);

/// What a run produced.
pub struct Outcome {
    /// The records the checker reads.
    pub observed: Observed,
    /// Node faults applied, with their simulated times: part of the trace.
    pub events: Vec<String>,
    /// Message faults applied.
    pub message_faults: FaultCounts,
    /// Simulated time the run took.
    pub simulated: Duration,
}

/// The cluster's nodes: the running incarnation of each, if any.
#[derive(Default)]
struct Slots {
    nodes: Vec<Option<SimNode>>,
    incarnations: Vec<u32>,
}

type SharedSlots = Arc<Mutex<Slots>>;

fn tenant_id(i: usize) -> TenantId {
    TenantId::new(format!("t{i}")).expect("valid tenant id")
}

fn chat_id(tenant: usize, chat: usize) -> ChatId {
    ChatId::new(format!("cust-{tenant}-{chat}")).expect("valid chat id")
}

fn phone_number_id(tenant: usize) -> PhoneNumberId {
    PhoneNumberId::new(format!("1065403522{tenant:05}")).expect("valid phone number id")
}

/// Plays `plan` on a fresh cluster; `accept_stale_epochs` injects the fencing bug.
pub async fn simulate(plan: &Plan, accept_stale_epochs: bool) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let mut rng = SimRng::new(plan.seed);
    let store = Arc::new(MemoryStore::new());
    store.accept_stale_epochs(accept_stale_epochs);
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        network: Network::new(rng.next_u64()),
        outbox: Arc::default(),
        log: Arc::default(),
        draws: Arc::new(KeyedDraws::new(rng.next_u64())),
        clock: SimClock::new(),
        whatsapp_transient_per_mille: plan.whatsapp_transient_per_mille,
        max_store_latency_ms: plan.max_store_latency_ms,
    });
    seed_tenants(&store, plan).await?;

    let slots: SharedSlots = Arc::default();
    for index in 0..plan.shape.nodes {
        let node = SimNode::start(&shared, index, 1).await?;
        let mut slots = slots.lock();
        slots.nodes.push(Some(node));
        slots.incarnations.push(1);
    }
    shared.network.set_faults(Some(plan.message_faults));

    // Customers: one task per chat, so each customer's messages are persisted in order.
    let mut customers = Vec::new();
    let mut chats: std::collections::BTreeMap<(usize, usize), Vec<CustomerMessage>> =
        std::collections::BTreeMap::new();
    for message in &plan.messages {
        chats
            .entry((message.tenant, message.chat))
            .or_default()
            .push(message.clone());
    }
    for messages in chats.into_values() {
        customers.push(tokio::spawn(customer(
            Arc::clone(&slots),
            shared.clock,
            start,
            messages,
        )));
    }

    // Node faults, one at a time, then the end of all faults.
    let mut events = String::new();
    let until = start + Duration::from_millis(plan.shape.faults_until_ms);
    for fault in &plan.faults {
        tokio::time::sleep_until(start + Duration::from_millis(fault.at_ms)).await;
        apply(&slots, fault).await;
        let _ = writeln!(
            events,
            "{} {:?} node-{}",
            fault.at_ms, fault.kind, fault.node
        );
        let Some(end) = fault.ends_at_ms() else {
            continue;
        };
        let end = (start + Duration::from_millis(end)).min(until);
        tokio::time::sleep_until(end).await;
        recover(&shared, &slots, fault.node).await?;
        let _ = writeln!(
            events,
            "{} recovered node-{}",
            shared.clock.elapsed_ms(),
            fault.node
        );
    }
    tokio::time::sleep_until(until).await;
    shared.network.set_faults(None);
    for index in 0..plan.shape.nodes {
        recover(&shared, &slots, index).await?;
    }
    let _ = writeln!(events, "{} faults stopped", shared.clock.elapsed_ms());

    // Settle: every customer message persisted, answered and sent, and it stays so.
    for task in customers {
        task.await.context("customer task")?;
    }
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut settled_since: Option<Instant> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if settled(&store) {
            let since = *settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= SETTLED_FOR {
                break;
            }
        } else {
            settled_since = None;
        }
    }
    let simulated = start.elapsed();

    let observed = Observed {
        messages: store.all_messages(),
        links: store.all_links(),
        outbox: shared.outbox.lock().clone(),
        log: shared.log.lock().clone(),
    };
    let nodes: Vec<SimNode> = slots
        .lock()
        .nodes
        .iter_mut()
        .filter_map(Option::take)
        .collect();
    for node in nodes {
        node.kill().await;
    }
    Ok(Outcome {
        observed,
        events: events.lines().map(str::to_owned).collect(),
        message_faults: shared.network.counts(),
        simulated,
    })
}

/// Every inbound message answered or dismissed, no reply pending.
fn settled(store: &MemoryStore) -> bool {
    let links = store.all_links();
    store.all_messages().iter().all(|m| match m.direction {
        salesboy_actors::store::Direction::Inbound => links.contains_key(&m.id),
        salesboy_actors::store::Direction::Outbound => m.status != Some(DeliveryStatus::Pending),
    })
}

async fn seed_tenants(store: &MemoryStore, plan: &Plan) -> anyhow::Result<()> {
    for i in 0..plan.shape.tenants {
        let tenant = tenant_id(i);
        store
            .upsert_tenant(&NewTenant::new(
                tenant.clone(),
                format!("Shop {i}"),
                SIM_EPOCH_MS,
            ))
            .await?;
        store
            .upsert_whatsapp_number(&NewWhatsAppNumber {
                tenant,
                phone_number_id: phone_number_id(i),
                waba_id: None,
                access_token: AccessToken::new(format!("sim-token-{i}")),
            })
            .await?;
    }
    Ok(())
}

/// A node's ingress, if it would answer a webhook now (alive, not paused).
fn ingress(slots: &SharedSlots, index: usize) -> Option<Ingress> {
    let slots = slots.lock();
    let node = slots.nodes.get(index)?.as_ref()?;
    matches!(node.gate.link(), Link::Up | Link::Partitioned).then(|| node.ingress.clone())
}

/// The webhook event Meta posts for a customer's message.
fn webhook_event(message: &CustomerMessage, sent_ms: i64) -> WebhookEvent {
    let wamid =
        Wamid::new(inbound_wamid(message.tenant, message.chat, message.seq)).expect("valid wamid");
    WebhookEvent::Inbound {
        phone_number_id: phone_number_id(message.tenant),
        waba_id: format!("waba-{}", message.tenant),
        message: InboundMessage {
            wamid,
            from: chat_id(message.tenant, message.chat),
            timestamp: u64::try_from(sent_ms / 1000).unwrap_or_default(),
            profile_name: None,
            reply_to: None,
            content: MessageContent::Text {
                body: inbound_text(message.tenant, message.chat, message.seq),
            },
        },
    }
}

/// One customer: sends its messages at their times; Meta posts each to an ingress until
/// one persists it (the production [`Ingress`], which then routes it in the background;
/// the hand-off dies with that node incarnation).
async fn customer(
    slots: SharedSlots,
    clock: SimClock,
    start: Instant,
    messages: Vec<CustomerMessage>,
) {
    for message in messages {
        tokio::time::sleep_until(start + Duration::from_millis(message.at_ms)).await;
        let event = webhook_event(&message, clock.now_ms());
        let nodes = slots.lock().nodes.len();
        let mut attempt = 0;
        let persisted_at = loop {
            let index = (message.ingress + attempt) % nodes;
            attempt += 1;
            if let Some(ingress) = ingress(&slots, index)
                && ingress.receive(vec![event.clone()]).await.is_ok()
            {
                break index;
            }
            tokio::time::sleep(WEBHOOK_RETRY).await;
        };
        if let Some(after) = message.redeliver_after_ms {
            // Meta posts the same webhook again, to another node: a no-op.
            let slots = Arc::clone(&slots);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after)).await;
                let index = (persisted_at + 1) % nodes;
                if let Some(ingress) = ingress(&slots, index) {
                    let _ = ingress.receive(vec![event]).await;
                }
            });
        }
    }
}

async fn apply(slots: &SharedSlots, fault: &NodeFault) {
    match fault.kind {
        FaultKind::Kill { .. } => {
            let node = slots.lock().nodes[fault.node].take();
            if let Some(node) = node {
                node.kill().await;
            }
        }
        FaultKind::Pause { .. } | FaultKind::Partition { .. } => {
            let link = if matches!(fault.kind, FaultKind::Pause { .. }) {
                Link::Paused
            } else {
                Link::Partitioned
            };
            if let Some(node) = slots.lock().nodes[fault.node].as_ref() {
                node.gate.set(link);
            }
        }
    }
}

/// Brings node `index` back: resumes or reconnects it, or starts a new incarnation.
async fn recover(shared: &Shared, slots: &SharedSlots, index: usize) -> anyhow::Result<()> {
    let incarnation = {
        let mut slots = slots.lock();
        if let Some(node) = slots.nodes[index].as_ref() {
            node.gate.set(Link::Up);
            return Ok(());
        }
        slots.incarnations[index] += 1;
        slots.incarnations[index]
    };
    let node = SimNode::start(shared, index, incarnation).await?;
    slots.lock().nodes[index] = Some(node);
    Ok(())
}
