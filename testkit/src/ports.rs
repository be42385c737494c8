//! Stand-ins for the actors' ports, for tests that run an actor tree in-process on a real
//! store: [`RecordingWhatsApp`], [`FixedProviders`], [`NoEvents`], [`FirstEpoch`], and
//! [`services`], which puts them together with a store.

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use salesboy_actors::error::EpochError;
use salesboy_actors::ports::{
    EpochSource, EventSink, LlmProvider, LlmProviderFactory, SendError, SystemClock,
    WhatsAppConnection, WhatsAppConnector,
};
use salesboy_actors::services::{Counters, Services, Settings, response_cache};
use salesboy_actors::store::{Store, WhatsAppNumber};
use salesboy_protocol::events::Event;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};

/// Every tenant is at epoch 1: one node that never moves tenants.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstEpoch;

#[async_trait]
impl EpochSource for FirstEpoch {
    async fn epoch_for(&self, _tenant: &TenantId) -> Result<u64, EpochError> {
        Ok(1)
    }
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _event: Event) {}
}

/// The same providers for every tenant; none (the default) is the offline responder.
#[derive(Default)]
pub struct FixedProviders(pub Vec<Arc<dyn LlmProvider>>);

impl LlmProviderFactory for FixedProviders {
    fn providers(
        &self,
        _tenant: &TenantId,
        _config_json: Option<&str>,
    ) -> Result<Vec<Arc<dyn LlmProvider>>, String> {
        Ok(self.0.clone())
    }
}

/// A WhatsApp that records every text sent, as `(to, body)`, and accepts it as
/// `wamid.test<n>` (the n-th text sent, from 1).
#[derive(Debug, Clone, Default)]
pub struct RecordingWhatsApp {
    /// The texts sent so far, oldest first.
    pub sent: Arc<Mutex<Vec<(String, String)>>>,
}

impl RecordingWhatsApp {
    /// The bodies of the texts sent so far, oldest first.
    pub fn bodies(&self) -> Vec<String> {
        self.sent
            .lock()
            .iter()
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl WhatsAppConnector for RecordingWhatsApp {
    fn connect(&self, _tenant: &TenantId, _number: &WhatsAppNumber) -> Arc<dyn WhatsAppConnection> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl WhatsAppConnection for RecordingWhatsApp {
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        _reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError> {
        let mut sent = self.sent.lock();
        sent.push((to.to_string(), body.to_owned()));
        Ok(Wamid::new(format!("wamid.test{}", sent.len())).expect("a valid wamid"))
    }

    /// Recorded as its readable text.
    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError> {
        self.send_text(to, &content.text(), None).await
    }

    async fn mark_read(&self, _message: &Wamid, _typing: bool) -> Result<(), SendError> {
        Ok(())
    }
}

/// The services of node `node-test` on `store`: texts go to `whatsapp`, every tenant gets
/// `providers`, the system clock, no events, every tenant at epoch 1, a 1 MiB response
/// cache and `settings`.
pub fn services(
    store: Arc<dyn Store>,
    whatsapp: RecordingWhatsApp,
    providers: FixedProviders,
    settings: Settings,
) -> Arc<Services> {
    Arc::new(Services {
        node: "node-test".parse().expect("a valid node id"),
        store,
        whatsapp: Arc::new(whatsapp),
        web: None,
        llm: Arc::new(providers),
        clock: Arc::new(SystemClock),
        events: Arc::new(NoEvents),
        epochs: Arc::new(FirstEpoch),
        cache: response_cache(1024 * 1024),
        settings,
        counters: Counters::default(),
        sends: Default::default(),
    })
}
