//! The periodic task that measures and raises or clears the node's and the cluster's
//! alerts (the table in [`super`]). Every measure is also a gauge on `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use salesboy_actors::node::NodeHandle;
use salesboy_actors::ports::{Clock, EventSink};
use salesboy_actors::services::OutcomeTally;
use salesboy_protocol::NodeId;
use salesboy_protocol::events::{Alert, AlertKind, Event};
use salesboy_protocol::subjects::EventKind;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::condition::{Gate, Level, Transition};
use super::error_rate::ErrorWindow;
use super::{ActiveAlerts, AlertSettings, measure};
use crate::cluster::ClusterMember;
use crate::store::SqlStore;

/// The alerts evaluated by the cluster's leader (or by a node alone).
const CLUSTER_SCOPED: [AlertKind; 4] = [
    AlertKind::TenantCapacityHigh,
    AlertKind::DatabaseSizeHigh,
    AlertKind::KnowledgeChunksHigh,
    AlertKind::NodeDown,
];

/// Where the node's alerts are measured and published.
pub struct AlertEvaluator {
    /// Thresholds and timings.
    pub settings: AlertSettings,
    /// This node (named in every alert's `node`).
    pub node_id: NodeId,
    /// The actor tree: hosted tenants, call outcome tallies.
    pub node: NodeHandle,
    /// The database, measured.
    pub sql: SqlStore,
    /// The node's event sink, where alerts are published.
    pub events: Arc<dyn EventSink>,
    /// The conditions raised, to forget the cluster's when leadership moves and those of
    /// tenants that left this node.
    pub active: Arc<ActiveAlerts>,
    /// The cluster runtime, on a cluster.
    pub cluster: Option<Arc<ClusterMember>>,
    /// Wall-clock time for the events.
    pub clock: Arc<dyn Clock>,
}

/// One call source of the error rate.
struct Source {
    name: &'static str,
    window: ErrorWindow,
    gate: Gate,
}

/// The evaluator's state between rounds.
struct Conditions {
    memory: Gate,
    errors: Vec<Source>,
    capacity: Gate,
    database: Gate,
    knowledge: Gate,
    down: BTreeMap<String, Gate>,
    leader_missing: Gate,
    leader_missing_since: Option<Instant>,
    /// Whether this node evaluated the cluster's alerts in the last round.
    cluster_duty: bool,
}

impl AlertEvaluator {
    /// Measures every [`AlertSettings::interval`] until cancelled.
    pub async fn run(self) {
        let window = self.settings.error_window;
        let source = |name| Source {
            name,
            window: ErrorWindow::new(window),
            gate: Gate::default(),
        };
        let mut conditions = Conditions {
            memory: Gate::default(),
            errors: vec![source("webhooks"), source("sends"), source("llm_calls")],
            capacity: Gate::default(),
            database: Gate::default(),
            knowledge: Gate::default(),
            down: BTreeMap::new(),
            leader_missing: Gate::default(),
            leader_missing_since: None,
            cluster_duty: false,
        };
        let mut interval = tokio::time::interval(self.settings.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.evaluate(&mut conditions).await;
        }
    }

    /// One round: the node's alerts, then the cluster's if this node evaluates them.
    async fn evaluate(&self, conditions: &mut Conditions) {
        // A tenant's conditions are its host's: forget those of tenants no longer here.
        self.active.keep_tenants(&self.node.hosted_tenants());
        self.memory(&mut conditions.memory);
        let now = Instant::now();
        let counters = &self.node.services().counters;
        for source in &mut conditions.errors {
            let tally: &OutcomeTally = match source.name {
                "webhooks" => &counters.webhooks,
                "sends" => &counters.sends,
                _ => &counters.llm_calls,
            };
            self.error_rate(source, now, tally.totals());
        }
        let fenced = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| *cluster.membership().fenced().borrow());
        if fenced {
            // Cut off: this node sees nothing of the cluster it could alert on.
            return;
        }
        let duty = self.cluster.as_ref().is_none_or(|c| c.is_leader());
        if conditions.cluster_duty && !duty {
            self.hand_over(conditions);
        }
        conditions.cluster_duty = duty;
        if duty {
            self.capacity(&mut conditions.capacity);
            self.database(conditions).await;
            self.nodes_down(&mut conditions.down);
        }
        self.leader(conditions, now);
    }

    /// This node no longer leads: the new leader evaluates the cluster's alerts (and raises
    /// those that still hold); this node forgets them without clearing them.
    fn hand_over(&self, conditions: &mut Conditions) {
        conditions.capacity.forget();
        conditions.database.forget();
        conditions.knowledge.forget();
        conditions.down.clear();
        for kind in CLUSTER_SCOPED {
            self.active.forget(kind);
        }
        info!("no longer the leader: the cluster's alerts are the new leader's");
    }

    fn memory(&self, gate: &mut Gate) {
        let Some(limit_bytes) = self
            .settings
            .memory_limit_bytes
            .or_else(measure::memory_limit_bytes)
        else {
            return;
        };
        let Some(rss_bytes) = crate::process::rss_bytes() else {
            return;
        };
        metrics::gauge!("salesboy_memory_limit_bytes").set(limit_bytes as f64);
        metrics::gauge!("salesboy_rss_bytes").set(rss_bytes as f64);
        let threshold_percent = self.settings.memory_percent;
        self.apply(
            gate,
            Level::share(rss_bytes, limit_bytes, threshold_percent),
            Alert::NodeMemoryHigh {
                rss_bytes,
                limit_bytes,
                threshold_percent,
            },
        );
    }

    fn error_rate(&self, source: &mut Source, now: Instant, totals: (u64, u64)) {
        let counts = source.window.observe(now, totals);
        let ratio = if counts.total == 0 {
            0.0
        } else {
            counts.failed as f64 / counts.total as f64
        };
        metrics::gauge!("salesboy_error_rate_ratio", "source" => source.name).set(ratio);
        let threshold_percent = self.settings.error_rate_percent;
        let level = if counts.total < self.settings.error_min_calls {
            Level::NOTHING
        } else {
            Level::share(counts.failed, counts.total, threshold_percent)
        };
        self.apply(
            &mut source.gate,
            level,
            Alert::ErrorRateHigh {
                source: source.name.to_owned(),
                failed: counts.failed,
                total: counts.total,
                window_secs: self.settings.error_window.as_secs(),
                threshold_percent,
            },
        );
    }

    fn capacity(&self, gate: &mut Gate) {
        let (active_tenants, capacity) = match &self.cluster {
            Some(cluster) => {
                let live = cluster.membership().live_nodes();
                let tenants = live.iter().map(|n| n.tenants).sum::<u64>();
                let capacity = live
                    .iter()
                    .filter(|n| !n.draining)
                    .map(|n| n.max_tenants)
                    .fold(0_u64, u64::saturating_add);
                (tenants, capacity)
            }
            None => {
                let node = self.node.observe();
                (node.tenants as u64, node.max_tenants as u64)
            }
        };
        metrics::gauge!("salesboy_cluster_active_tenants").set(active_tenants as f64);
        metrics::gauge!("salesboy_cluster_tenant_capacity").set(capacity as f64);
        let threshold_percent = self.settings.tenant_capacity_percent;
        self.apply(
            gate,
            Level::share(active_tenants, capacity, threshold_percent),
            Alert::TenantCapacityHigh {
                active_tenants,
                capacity,
                threshold_percent,
            },
        );
    }

    async fn database(&self, conditions: &mut Conditions) {
        match self.sql.database_size_bytes().await {
            Ok(size_bytes) => {
                metrics::gauge!("salesboy_database_size_bytes").set(size_bytes as f64);
                let threshold_bytes = self.settings.database_max_bytes;
                self.apply(
                    &mut conditions.database,
                    Level::of(size_bytes, threshold_bytes),
                    Alert::DatabaseSizeHigh {
                        size_bytes,
                        threshold_bytes,
                    },
                );
            }
            Err(e) => warn!(error = %e, "cannot measure the database's size"),
        }
        match self.sql.knowledge_chunks().await {
            Ok(chunks) => {
                metrics::gauge!("salesboy_knowledge_chunks").set(chunks as f64);
                let threshold_chunks = self.settings.knowledge_max_chunks;
                self.apply(
                    &mut conditions.knowledge,
                    Level::of(chunks, threshold_chunks),
                    Alert::KnowledgeChunksHigh {
                        chunks,
                        threshold_chunks,
                    },
                );
            }
            Err(e) => warn!(error = %e, "cannot count the knowledge chunks"),
        }
    }

    /// `node_down` for every member whose record stopped changing (not for nodes that left
    /// cleanly: their records are gone); cleared when it writes again or its record goes.
    fn nodes_down(&self, down: &mut BTreeMap<String, Gate>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let dead: Vec<String> = cluster
            .membership()
            .view()
            .into_iter()
            .filter(|view| !view.alive)
            .map(|view| view.record.node.to_string())
            .collect();
        metrics::gauge!("salesboy_cluster_nodes_down").set(dead.len() as f64);
        for node in &dead {
            down.entry(node.clone()).or_default();
        }
        down.retain(|node, gate| {
            let holds = dead.contains(node);
            self.apply(
                gate,
                Level::holds(holds),
                Alert::NodeDown {
                    down_node: node.clone(),
                },
            );
            gate.raised()
        });
    }

    /// `leader_missing`, raised by the live node with the lowest id when no live node has
    /// held the lease for [`AlertSettings::leader_missing_after`]; cleared by the node that
    /// raised it once there is a live leader.
    fn leader(&self, conditions: &mut Conditions, now: Instant) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let live = cluster.membership().live_nodes();
        let missing = cluster
            .leader()
            .is_none_or(|leader| !live.iter().any(|n| n.node == leader));
        metrics::gauge!("salesboy_cluster_leader_present").set(if missing { 0.0 } else { 1.0 });
        let since = if missing {
            *conditions.leader_missing_since.get_or_insert(now)
        } else {
            conditions.leader_missing_since = None;
            now
        };
        let missing_for = now.duration_since(since);
        let lowest = live.first().is_some_and(|n| n.node == self.node_id);
        let holds = missing && missing_for >= self.settings.leader_missing_after;
        if holds && !lowest {
            return;
        }
        self.apply(
            &mut conditions.leader_missing,
            Level::holds(holds),
            Alert::LeaderMissing {
                missing_secs: missing_for.as_secs(),
            },
        );
    }

    /// Raises or clears `alert`'s condition as `level` says.
    fn apply(&self, gate: &mut Gate, level: Level, alert: Alert) {
        match gate.observe(level) {
            Some(Transition::Raise) => self.raise(&alert),
            Some(Transition::Clear) => self.clear(&alert),
            None => {}
        }
    }

    fn raise(&self, alert: &Alert) {
        let mut detail = alert.to_detail();
        if let Some(fields) = detail.as_object_mut() {
            fields.insert("node".to_owned(), self.node_id.as_str().into());
        }
        self.events.publish(Event::cluster(
            EventKind::AlertRaised,
            self.clock.now_ms(),
            detail,
        ));
    }

    fn clear(&self, alert: &Alert) {
        let mut detail = serde_json::json!({
            "alert": alert.kind().as_str(),
            "node": self.node_id.as_str(),
        });
        if let (Some((field, value)), Some(fields)) = (alert.scope(), detail.as_object_mut()) {
            fields.insert(field.to_owned(), value.into());
        }
        info!(alert = alert.kind().as_str(), %detail, "alert cleared");
        self.events.publish(Event::cluster(
            EventKind::AlertCleared,
            self.clock.now_ms(),
            detail,
        ));
    }
}
