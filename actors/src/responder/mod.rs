//! `ResponderActor`: turns a conversation turn into a reply.
//!
//! Retrieval from the tenant's knowledge base (full text, top k), prompt assembly, the
//! provider chain with fallback ([`chain`], each provider behind a [`gate`]), the node's response cache (exact match on
//! tenant, knowledge version and prompt), usage recording. With no provider configured, or
//! when none answers, the offline answer is the best passage or a polite hand-off
//! ([`prompt`]). Over the tenant's monthly LLM spend cap ([`spend`]) no provider is called:
//! the offline answer goes out and `llm_spend_cap_reached` is raised. Each request runs in
//! its own task, so one slow LLM call does not hold the tenant's other conversations; the
//! tasks start at the tenant's reply pace ([`Settings::replies_per_second_per_tenant`](crate::services::Settings::replies_per_second_per_tenant)):
//! a flood of messages slows the bot down, nothing is dropped.

pub mod chain;
pub mod gate;
mod pace;
pub mod prompt;
pub mod quota;
pub mod spend;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use salesboy_protocol::events::{Alert, AlertKind};
use salesboy_protocol::{ChatId, TenantId, Wamid};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::warn;

use crate::conversation::ConversationMsg;
use crate::ports::Turn;
use crate::services::Services;
use crate::session::SessionMsg;
use crate::store::{KnownKnowledge, LlmUsage, PassageChoice, StoreError};
use chain::{ChainOutcome, ProviderChain, ProviderStatus};
use pace::Pace;
use quota::{QuotaAlert, QuotaAlertChange};
use spend::SpendCap;

/// A reply written: its text, the passages it was written from, the time in the LLM.
#[derive(Debug)]
struct Written {
    text: String,
    passages: Vec<PassageChoice>,
    llm_time: Duration,
}

/// A request for a reply.
#[derive(Debug)]
pub struct ReplyRequest {
    /// The customer's chat.
    pub chat: ChatId,
    /// The customer's message(s).
    pub question: String,
    /// Recent history, oldest first.
    pub history: Vec<Turn>,
    /// Where the answer goes.
    pub reply_to: ActorRef<ConversationMsg>,
    /// The conversation's batch token, returned with the answer.
    pub batch: u64,
    /// The message to mark read just before an LLM is asked (read receipts
    /// [`WhenSlow`](crate::services::ReadReceipts::WhenSlow)).
    pub read_receipt: Option<ReadReceipt>,
}

/// A message to mark read, and the session that does it.
#[derive(Debug, Clone)]
pub struct ReadReceipt {
    /// The tenant's session.
    pub session: ActorRef<SessionMsg>,
    /// The customer's message.
    pub wamid: Wamid,
}

/// Messages of a responder.
#[derive(Debug)]
pub enum ResponderMsg {
    /// Write a reply.
    Generate(ReplyRequest),
    /// The tenant's system prompt or providers changed: later replies use the new ones
    /// (replies under way finish with the old ones).
    Reconfigure {
        /// The new system prompt.
        system_prompt: Option<String>,
        /// The new provider list (JSON).
        llm_config: Option<String>,
        /// The tenant's new monthly LLM spend cap (`None`: the node's).
        spend_cap_micros: Option<i64>,
        /// The tenant's knowledge version.
        knowledge_version: i64,
        /// When the tenant was created (it differs after the tenant was deleted and
        /// created again).
        tenant_created_ms: i64,
    },
    /// The tenant's knowledge changed (nothing else did): later replies are not answered
    /// from cached answers written from the earlier knowledge, and later searches do not
    /// use passages cached at the earlier version.
    KnowledgeChanged {
        /// The tenant's knowledge version now.
        version: i64,
    },
    /// The responder's state.
    Observe(RpcReplyPort<ResponderSnapshot>),
}

/// What `Observe` shows of a responder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponderSnapshot {
    /// The providers and their circuits; empty for the offline responder.
    pub providers: Vec<ProviderStatus>,
    /// Replies written by this activation.
    pub replies: u64,
    /// Of those, answered from the cache.
    pub cache_hits: u64,
    /// Of those, answered offline (no provider, or none answered).
    pub offline: u64,
}

/// Start-up arguments.
pub struct ResponderArgs {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's system prompt.
    pub system_prompt: Option<String>,
    /// The tenant's LLM configuration (JSON), `None` for the node's default.
    pub llm_config: Option<String>,
    /// The tenant's monthly LLM spend cap in millionths of a US dollar, `None` for the
    /// node's default ([`Settings::llm_monthly_spend_cap_micros`](crate::services::Settings)).
    pub spend_cap_micros: Option<i64>,
    /// The tenant's knowledge version (part of a cached answer's key), from its record;
    /// kept current by the tenant ([`ResponderMsg::KnowledgeChanged`]) rather than read per
    /// reply.
    pub knowledge_version: i64,
    /// When the tenant was created, from its record: with the knowledge version, what the
    /// knowledge search is told it may answer from ([`KnownKnowledge`]).
    pub tenant_created_ms: i64,
    /// Shared services.
    pub services: Arc<Services>,
}

#[derive(Debug, Default)]
struct Tally {
    replies: AtomicU64,
    cache_hits: AtomicU64,
    offline: AtomicU64,
}

/// How long a responder trusts the knowledge version it was told before it reads it again.
pub const KNOWLEDGE_VERSION_RECHECK: Duration = Duration::from_secs(60);
const KNOWLEDGE_VERSION_RECHECK_MS: i64 = KNOWLEDGE_VERSION_RECHECK.as_millis() as i64;

/// Everything a reply task needs, shared with it.
struct Context {
    tenant: TenantId,
    system_prompt: Option<String>,
    chain: ProviderChain,
    services: Arc<Services>,
    tally: Tally,
    quota_alert: QuotaAlert,
    spend: SpendCap,
    /// The tenant's reply pace.
    pace: Arc<Pace>,
    /// The tenant's knowledge version, as last told or read.
    knowledge_version: AtomicI64,
    /// When it was last told or read (ms, the services' clock).
    knowledge_version_ms: AtomicI64,
    /// When the tenant was created.
    tenant_created_ms: i64,
}

/// A responder's state.
pub struct ResponderState {
    context: Arc<Context>,
}

/// The responder actor (behaviour only).
#[derive(Debug, Default)]
pub struct ResponderActor;

impl Actor for ResponderActor {
    type Msg = ResponderMsg;
    type State = ResponderState;
    type Arguments = ResponderArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ResponderMsg>,
        args: ResponderArgs,
    ) -> Result<ResponderState, ActorProcessingErr> {
        Ok(ResponderState {
            context: Arc::new(Context::new(args)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ResponderMsg>,
        message: ResponderMsg,
        state: &mut ResponderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ResponderMsg::Generate(request) => {
                let context = Arc::clone(&state.context);
                let (batch, reply_to) = (request.batch, request.reply_to.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    // Written in a task of its own, so that a panic is answered too: an
                    // unanswered batch would stay in flight for ever.
                    let writing = tokio::spawn(async move {
                        context.pace.turn().await;
                        context
                            .write_reply(&request)
                            .await
                            .map_err(|error| error.to_string())
                    });
                    let (reply, passages, llm_time) = match writing.await {
                        Ok(Ok(written)) => (Ok(written.text), written.passages, written.llm_time),
                        Ok(Err(error)) => (Err(error), Vec::new(), started.elapsed()),
                        Err(failed) => (
                            Err(format!("reply task failed: {failed}")),
                            Vec::new(),
                            started.elapsed(),
                        ),
                    };
                    let _ = reply_to.send_message(ConversationMsg::ReplyReady {
                        batch,
                        reply,
                        passages,
                        llm_time,
                    });
                });
            }
            ResponderMsg::Reconfigure {
                system_prompt,
                llm_config,
                spend_cap_micros,
                knowledge_version,
                tenant_created_ms,
            } => {
                let args = ResponderArgs {
                    tenant: state.context.tenant.clone(),
                    system_prompt,
                    llm_config,
                    spend_cap_micros,
                    knowledge_version,
                    tenant_created_ms,
                    services: Arc::clone(&state.context.services),
                };
                let capped = state.context.spend.raised();
                let mut context = Context::new(args);
                context.spend = context.spend.with_alert_raised(capped);
                // The pace goes on: a reconfiguration is no way around it.
                context.pace = Arc::clone(&state.context.pace);
                state.context = Arc::new(context);
            }
            ResponderMsg::KnowledgeChanged { version } => {
                state.context.learn_knowledge_version(version);
            }
            ResponderMsg::Observe(reply) => {
                let tally = &state.context.tally;
                let _ = reply.send(ResponderSnapshot {
                    providers: state.context.chain.status(),
                    replies: tally.replies.load(Ordering::Relaxed),
                    cache_hits: tally.cache_hits.load(Ordering::Relaxed),
                    offline: tally.offline.load(Ordering::Relaxed),
                });
            }
        }
        Ok(())
    }
}

impl Context {
    /// The context for a tenant's configuration. A provider list that cannot be used must
    /// not silence the tenant: it answers offline and raises an alert.
    fn new(args: ResponderArgs) -> Self {
        let providers = match args
            .services
            .llm
            .providers(&args.tenant, args.llm_config.as_deref())
        {
            Ok(providers) => providers,
            Err(reason) => {
                warn!(tenant = %args.tenant, reason, "llm configuration unusable, answering offline");
                args.services.publish(
                    args.services
                        .alert(&args.tenant, &Alert::LlmConfigInvalid { reason }),
                );
                Vec::new()
            }
        };
        let cap = args
            .spend_cap_micros
            .or(args.services.settings.llm_monthly_spend_cap_micros);
        let pace = Arc::new(Pace::new(
            args.services.settings.replies_per_second_per_tenant,
        ));
        let now_ms = args.services.clock.now_ms();
        Self {
            tenant: args.tenant,
            system_prompt: args.system_prompt,
            chain: ProviderChain::new(providers),
            services: args.services,
            tally: Tally::default(),
            quota_alert: QuotaAlert::default(),
            pace,
            spend: SpendCap::new(cap),
            knowledge_version: AtomicI64::new(args.knowledge_version),
            knowledge_version_ms: AtomicI64::new(now_ms),
            tenant_created_ms: args.tenant_created_ms,
        }
    }

    /// The tenant's knowledge version: as the tenant last told it, or read again from the
    /// store once that is [`KNOWLEDGE_VERSION_RECHECK`] old, so a change whose reload never
    /// arrived (lost on the bus, or sent while the tenant was moving) is missed for that
    /// long at most.
    async fn knowledge_version(&self) -> Result<i64, StoreError> {
        let now_ms = self.services.clock.now_ms();
        let known_ms = self.knowledge_version_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(known_ms) < KNOWLEDGE_VERSION_RECHECK_MS {
            return Ok(self.knowledge_version.load(Ordering::Relaxed));
        }
        let version = self.services.store.knowledge_version(&self.tenant).await?;
        self.learn_knowledge_version(version);
        Ok(self.knowledge_version.load(Ordering::Relaxed))
    }

    /// Takes `version` as the tenant's knowledge version now (versions only grow: a read
    /// that raced a newer notice does not undo it).
    fn learn_knowledge_version(&self, version: i64) {
        self.knowledge_version.fetch_max(version, Ordering::Relaxed);
        self.knowledge_version_ms
            .store(self.services.clock.now_ms(), Ordering::Relaxed);
    }

    /// The reply text, the passages it was written from and the time spent in the LLM.
    async fn write_reply(&self, request: &ReplyRequest) -> Result<Written, StoreError> {
        let (text, llm_time, passages) = self.write_reply_text(request).await?;
        Ok(Written {
            text,
            passages,
            llm_time,
        })
    }

    async fn write_reply_text(
        &self,
        request: &ReplyRequest,
    ) -> Result<(String, Duration, Vec<PassageChoice>), StoreError> {
        let services = &self.services;
        let k = services.settings.knowledge_top_k;
        let version = self.knowledge_version().await?;
        let known = KnownKnowledge {
            tenant_created_ms: self.tenant_created_ms,
            version,
        };
        let hits = services
            .store
            .search_knowledge_known(&self.tenant, &request.question, k, known)
            .await?;
        let chosen: Vec<PassageChoice> = hits.iter().map(PassageChoice::from).collect();
        // The prompt cites each passage by its id and document, so an answer can be traced.
        let passages: Vec<String> = hits.iter().map(prompt::cited).collect();
        let texts: Vec<String> = hits.into_iter().map(|hit| hit.text).collect();
        self.tally.replies.fetch_add(1, Ordering::Relaxed);
        if self.chain.is_empty() {
            self.tally.offline.fetch_add(1, Ordering::Relaxed);
            return Ok((
                prompt::offline_answer(&texts, &request.question),
                Duration::ZERO,
                chosen,
            ));
        }

        let prompt = prompt::build(
            self.system_prompt.as_deref(),
            passages,
            request.history.clone(),
            request.question.clone(),
        );
        let key = (self.tenant.clone(), version, prompt);
        if let Some(cached) = services.cache.get(&key).await {
            self.tally.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((cached.to_string(), Duration::ZERO, chosen));
        }

        let over = self
            .spend
            .check(
                services.store.as_ref(),
                &self.tenant,
                services.clock.now_ms(),
            )
            .await?;
        match self.spend.observe(over.is_some()) {
            Some(QuotaAlertChange::Raise) => {
                if let Some(over) = over {
                    warn!(tenant = %self.tenant, cap_micros = over.cap_micros, spent_micros = over.spent_micros, "monthly llm spend cap reached, answering offline");
                    let alert = Alert::LlmSpendCapReached {
                        cap_micros: over.cap_micros,
                        spent_micros: over.spent_micros,
                    };
                    services.publish(services.alert(&self.tenant, &alert));
                }
            }
            Some(QuotaAlertChange::Clear) => services
                .publish(services.alert_cleared(&self.tenant, AlertKind::LlmSpendCapReached)),
            None => {}
        }
        if over.is_some() {
            self.tally.offline.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("salesboy_llm_spend_capped_total").increment(1);
            return Ok((
                prompt::offline_answer(&texts, &request.question),
                Duration::ZERO,
                chosen,
            ));
        }

        if let Some(receipt) = &request.read_receipt {
            // The reply will take a while: the customer sees it is being written.
            let wamid = receipt.wamid.clone();
            let _ = receipt.session.send_message(SessionMsg::MarkRead { wamid });
        }
        let started = Instant::now();
        let outcome = self.chain.complete(&key.2).await;
        let llm_time = started.elapsed();
        match self.quota_alert.observe(&outcome) {
            Some(QuotaAlertChange::Raise) => {
                services.publish(services.alert(&self.tenant, &Alert::LlmQuotaExhausted));
            }
            Some(QuotaAlertChange::Clear) => {
                services.publish(services.alert_cleared(&self.tenant, AlertKind::LlmQuotaExhausted))
            }
            None => {}
        }
        let failed = match &outcome {
            ChainOutcome::Answered { failed, .. } | ChainOutcome::Exhausted { failed } => failed,
        };
        for attempt in failed {
            let outcome = attempt.error.as_ref().map_or("skipped", |e| e.code());
            if attempt.error.is_some() {
                services.counters.llm_calls.record(false);
            }
            metrics::counter!("salesboy_llm_calls_total", "provider" => attempt.provider.clone(), "outcome" => outcome).increment(1);
        }
        match outcome {
            ChainOutcome::Answered {
                completion,
                provider,
                cost_micros,
                ..
            } => {
                metrics::counter!("salesboy_llm_calls_total", "provider" => provider.clone(), "outcome" => "ok").increment(1);
                services.counters.llm_calls.record(true);
                let usage = LlmUsage {
                    tenant: self.tenant.clone(),
                    provider,
                    model: completion.model.clone(),
                    prompt_tokens: i64::try_from(completion.prompt_tokens).unwrap_or(i64::MAX),
                    completion_tokens: i64::try_from(completion.completion_tokens)
                        .unwrap_or(i64::MAX),
                    cost_micros: i64::try_from(cost_micros).unwrap_or(i64::MAX),
                    at_ms: services.clock.now_ms(),
                };
                if let Err(error) = services.store.record_llm_usage(&usage).await {
                    warn!(tenant = %self.tenant, %error, "llm usage not recorded");
                }
                self.spend.spent(usage.cost_micros, usage.at_ms).await;
                let text = prompt::truncate(completion.text.trim(), prompt::MAX_REPLY_CHARS);
                services.cache.insert(key, Arc::from(text.as_str())).await;
                Ok((text, llm_time, chosen))
            }
            ChainOutcome::Exhausted { .. } => {
                self.tally.offline.fetch_add(1, Ordering::Relaxed);
                warn!(tenant = %self.tenant, "no llm provider answered, answering offline");
                Ok((
                    prompt::offline_answer(&texts, &request.question),
                    llm_time,
                    chosen,
                ))
            }
        }
    }
}
