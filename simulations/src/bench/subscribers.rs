//! What listens to a node's events in production, for `bench throughput
//! --event-subscribers`: a durable JetStream consumer of every event, and one HTTP event
//! webhook per tenant (a local receiver that answers 204). The bench counts what each got.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use salesboy_node::store::Webhook;
use salesboy_protocol::TenantId;
use tokio::task::JoinHandle;

use super::node::Deployment;
use super::setup::tenant_id;

/// The running subscribers; they stop when dropped.
pub struct EventSubscribers {
    consumed: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl EventSubscribers {
    /// Registers a webhook for each of `tenants` tenants and starts the stream consumer;
    /// the deployment must run on NATS (`--nats`).
    pub async fn start(deployment: &Deployment, tenants: usize) -> anyhow::Result<Self> {
        let nats = deployment
            .nats
            .as_ref()
            .context("--event-subscribers needs --nats (the events stream)")?;
        let delivered = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the webhook receiver")?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let counter = Arc::clone(&delivered);
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move || {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let receiver = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let store = deployment.store().await?;
        for i in 0..tenants {
            let tenant = TenantId::new(tenant_id(i)).context("tenant id")?;
            store
                .add_webhook(&Webhook {
                    id: format!("wh_bench_{i}"),
                    tenant,
                    url: url.clone(),
                    kinds: None,
                    secret: "bench-webhook-secret".to_owned(),
                    created_ms: 0,
                })
                .await
                .context("registering a webhook")?;
        }
        store.close().await;

        let client = async_nats::connect(nats.url())
            .await
            .context("connecting the events consumer")?;
        let js = jetstream::new(client);
        let stream = js
            .get_stream(salesboy_protocol::subjects::EVENTS_STREAM)
            .await
            .context("the events stream")?;
        let events = stream
            .get_or_create_consumer(
                "bench",
                consumer::pull::Config {
                    durable_name: Some("bench".to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .context("creating the events consumer")?;
        let mut messages = events.messages().await.context("consuming events")?;
        let consumed = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&consumed);
        let consumer_task = tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                if message.ack().await.is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Self {
            consumed,
            delivered,
            tasks: vec![receiver, consumer_task],
        })
    }

    /// Waits until both subscribers got at least `expected` events; how long that took, or
    /// `None` after `timeout`.
    pub async fn wait_for(
        &self,
        expected: u64,
        timeout: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let started = std::time::Instant::now();
        while self.consumed() < expected || self.delivered() < expected {
            if started.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Some(started.elapsed())
    }

    /// Events the stream consumer acknowledged so far.
    pub fn consumed(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// Events the webhook receiver accepted so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for EventSubscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
