//! The world as a simulated node sees it, behind the actors' ports: a clock on simulated
//! time, a WhatsApp Cloud API that records every send, an LLM that answers at once (after a
//! seeded think time) and tags each answer, and an epoch source that logs what it grants.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use salesboy_actors::error::EpochError;
use salesboy_actors::ports::{
    Clock, Completion, EpochSource, EventSink, LlmError, LlmProvider, LlmProviderFactory, Prompt,
    SendError, WhatsAppConnection, WhatsAppConnector,
};
use salesboy_actors::store::WhatsAppNumber;
use salesboy_protocol::whatsapp::OutboundContent;
use salesboy_protocol::{ChatId, TenantId, Wamid};
use tokio::time::Instant;

use super::gate::{Gate, Link};
use super::rng::KeyedDraws;
use super::store::{WriteLog, WriteRecord};

/// Unix milliseconds at simulated time zero.
pub const SIM_EPOCH_MS: i64 = 1_767_225_600_000;

/// Wall-clock time on tokio's (paused, auto-advancing) clock.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    start: Instant,
}

impl SimClock {
    /// A clock reading [`SIM_EPOCH_MS`] now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Simulated milliseconds since the start.
    pub fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        SIM_EPOCH_MS + self.elapsed_ms()
    }
}

/// One message Meta accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Simulated milliseconds since the start.
    pub at_ms: i64,
    /// The node incarnation that sent it.
    pub node: String,
    /// The tenant.
    pub tenant: TenantId,
    /// The customer.
    pub chat: ChatId,
    /// The text.
    pub body: String,
}

/// Everything Meta accepted, in order.
pub type Outbox = Arc<Mutex<Vec<Sent>>>;

/// The simulated Cloud API for one node incarnation: it passes the node's gate (a paused
/// node's send waits, a dead node's fails), takes a seeded round trip, then records the
/// send; now and then it fails transiently.
pub struct SimWhatsApp {
    /// The node incarnation.
    pub node: String,
    /// Its gate.
    pub gate: Gate,
    /// Where sends are recorded.
    pub outbox: Outbox,
    /// Seeded draws.
    pub draws: Arc<KeyedDraws>,
    /// Thousandths of sends that fail transiently.
    pub transient_per_mille: u64,
    /// The clock.
    pub clock: SimClock,
}

impl WhatsAppConnector for SimWhatsApp {
    fn connect(&self, tenant: &TenantId, _number: &WhatsAppNumber) -> Arc<dyn WhatsAppConnection> {
        Arc::new(SimConnection {
            tenant: tenant.clone(),
            node: self.node.clone(),
            gate: self.gate.clone(),
            outbox: Arc::clone(&self.outbox),
            draws: Arc::clone(&self.draws),
            transient_per_mille: self.transient_per_mille,
            clock: self.clock,
        })
    }
}

struct SimConnection {
    tenant: TenantId,
    node: String,
    gate: Gate,
    outbox: Outbox,
    draws: Arc<KeyedDraws>,
    transient_per_mille: u64,
    clock: SimClock,
}

#[async_trait]
impl WhatsAppConnection for SimConnection {
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        _reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError> {
        let (round_trip, fails) = {
            let mut rng = self
                .draws
                .rng(format!("send/{}/{to}/{body}", self.tenant).as_bytes());
            (rng.between(30, 600), rng.chance(self.transient_per_mille))
        };
        if self.gate.pass().await == Link::Down {
            return Err(SendError::Transient("node is down".into()));
        }
        tokio::time::sleep(Duration::from_millis(round_trip)).await;
        if fails {
            return Err(SendError::Transient("simulated 503".into()));
        }
        let mut outbox = self.outbox.lock();
        let wamid = Wamid::new(format!("wamid.sim.{}", outbox.len() + 1))
            .map_err(|e| SendError::Transient(e.to_string()))?;
        outbox.push(Sent {
            at_ms: self.clock.elapsed_ms(),
            node: self.node.clone(),
            tenant: self.tenant.clone(),
            chat: to.clone(),
            body: body.to_owned(),
        });
        Ok(wamid)
    }

    /// The plan sends no templates, interactive or media messages; one would be recorded
    /// as its readable text.
    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError> {
        self.send_text(to, &content.text(), None).await
    }

    async fn mark_read(&self, _message: &Wamid, _typing: bool) -> Result<(), SendError> {
        match self.gate.pass().await {
            Link::Down => Err(SendError::Transient("node is down".into())),
            _ => Ok(()),
        }
    }
}

/// The simulated LLM: every tenant gets one provider that answers after a seeded think
/// time with `<tag>|<question>`, the tag unique per answer (`r.<node>.<question hash>.<n>`), so the checker
/// can tell one reply sent twice from two replies.
pub struct SimLlm {
    /// The node incarnation.
    pub node: String,
    /// Its gate.
    pub gate: Gate,
    /// Seeded draws.
    pub draws: Arc<KeyedDraws>,
    /// Answers given so far, per question.
    pub answers: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl LlmProviderFactory for SimLlm {
    fn providers(
        &self,
        _tenant: &TenantId,
        _config_json: Option<&str>,
    ) -> Result<Vec<Arc<dyn LlmProvider>>, String> {
        Ok(vec![Arc::new(SimProvider {
            node: self.node.clone(),
            gate: self.gate.clone(),
            draws: Arc::clone(&self.draws),
            answers: Arc::clone(&self.answers),
        })])
    }
}

struct SimProvider {
    node: String,
    gate: Gate,
    draws: Arc<KeyedDraws>,
    answers: Arc<Mutex<BTreeMap<String, u64>>>,
}

#[async_trait]
impl LlmProvider for SimProvider {
    fn name(&self) -> &str {
        "sim"
    }

    fn model(&self) -> &str {
        "sim-1"
    }

    fn cost_micros(&self, _prompt_tokens: u64, _completion_tokens: u64) -> u64 {
        0
    }

    async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let think = self
            .draws
            .rng(format!("llm/{}/{}", self.node, prompt.question).as_bytes())
            .between(100, 1_500);
        tokio::time::sleep(Duration::from_millis(think)).await;
        if self.gate.pass().await == Link::Down {
            return Err(LlmError::Unavailable("node is down".into()));
        }
        // The tag names the node, the question and how often this node answered it: unique,
        // and the same whatever order the node's answers to other questions came in.
        let mut asked = self.answers.lock();
        let key = format!("{}/{}", self.node, prompt.question);
        let n = asked.entry(key).or_default();
        *n += 1;
        let question_hash = prompt
            .question
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        Ok(Completion {
            text: format!(
                "r.{}.{:08x}.{n}|{}",
                self.node,
                question_hash & 0xffff_ffff,
                prompt.question
            ),
            model: "sim-1".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
        })
    }
}

/// Events go nowhere in the simulation.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn publish(&self, _event: salesboy_protocol::events::Event) {}
}

/// The node's epoch source (the cluster's), logging every epoch it grants.
pub struct LoggedEpochs {
    /// The node incarnation.
    pub node: String,
    /// The real epoch source.
    pub inner: Arc<dyn EpochSource>,
    /// Where grants are logged.
    pub log: WriteLog,
}

#[async_trait]
impl EpochSource for LoggedEpochs {
    async fn epoch_for(&self, tenant: &TenantId) -> Result<u64, EpochError> {
        let epoch = self.inner.epoch_for(tenant).await?;
        self.log.lock().push(WriteRecord::Hosting {
            node: self.node.clone(),
            tenant: tenant.clone(),
            epoch,
        });
        Ok(epoch)
    }
}
