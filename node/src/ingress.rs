//! Ingress: what a parsed webhook delivery does to the node (architecture §5).
//!
//! [`Ingress::receive`] persists every item of a delivery, then hands the new inbound
//! messages and echoes to their tenants (wherever the [`Router`] says they live) in the
//! background:
//!
//! - each item is routed to its tenant by `phone_number_id` (cached for a few seconds);
//!   unknown numbers are logged and skipped;
//! - inbound messages are deduplicated on the wamid and keep Meta's `timestamp` (the
//!   conversation answers only messages sent within the customer service window and the
//!   maximum message age), status updates applied only when they move forward, echoes (the
//!   owner wrote from the WhatsApp app) recorded as outbound;
//! - an item the parser rejected is recorded (`webhook_rejected_items`) with its tenant when
//!   its number tells it (and the tenant's `message_rejected` event, in the same
//!   transaction), without one otherwise (counted and logged at warn);
//! - one bad item never loses the others; a database that cannot be reached fails the whole
//!   delivery ([`StoreError::Unavailable`]), so Meta retries it (what was persisted is
//!   deduplicated on the retry);
//! - the hand-off runs on the node's task tracker and stops with the node; if it is lost,
//!   the node's sweep finds the persisted messages.
//!
//! The HTTP webhook (`http::webhook`) checks the signature, parses the body and calls
//! this; the fault simulation's customer traffic calls it too.

use std::sync::Arc;
use std::time::Duration;

use salesboy_actors::command::TenantCommand;
use salesboy_actors::conversation::InboundItem;
use salesboy_actors::ports::Clock;
use salesboy_actors::store::{
    self, InsertOutcome, NewInbound, NewOutbound, NewRejectedItem, OutboundOrigin, SendFailure,
    StatusOutcome, Store, StoreError,
};
use salesboy_protocol::whatsapp::inbound::WebhookEvent;
use salesboy_protocol::{Codec, PhoneNumberId, TenantId};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cluster::RouteError;
use crate::routing::Router;

/// How long the ingress remembers which tenant owns a phone number id.
const PHONE_ROUTE_TTL: Duration = Duration::from_secs(10);

/// Persists webhook deliveries and hands their new messages to the tenants. Cheap to clone
/// (clones share the phone-number cache).
#[derive(Clone)]
pub struct Ingress {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    router: Router,
    /// phone number id → owning tenant (`None`: no tenant).
    phone_routes: moka::future::Cache<PhoneNumberId, Option<TenantId>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// What [`Ingress::receive`] did with a delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Commands handed to tenants in the background (new inbound messages and echoes).
    pub handed_off: usize,
}

impl Ingress {
    /// An ingress persisting into `store` (receive times from `clock`) and routing through
    /// `router`; its background hand-offs run on `tasks` and stop when `shutdown` is
    /// cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        router: Router,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            clock,
            router,
            phone_routes: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PHONE_ROUTE_TTL)
                .build(),
            tasks,
            shutdown,
        }
    }

    /// The same ingress routing through `router`.
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = router;
        self
    }

    /// Persists every item of a delivery, then hands the new ones to their tenants in the
    /// background. Fails only when the database is unavailable (the whole delivery should
    /// then be retried).
    pub async fn receive(&self, events: Vec<WebhookEvent>) -> Result<Received, StoreError> {
        let commands = self.persist(events).await?;
        let received = Received {
            handed_off: commands.len(),
        };
        if !commands.is_empty() {
            let router = self.router.clone();
            let shutdown = self.shutdown.clone();
            self.tasks.spawn(async move {
                shutdown
                    .run_until_cancelled(hand_off(&router, commands))
                    .await;
            });
        }
        Ok(received)
    }

    /// Forgets the cached owner of a phone number (after it was assigned to a tenant).
    pub async fn forget_phone_number(&self, phone_number_id: &PhoneNumberId) {
        self.phone_routes.invalidate(phone_number_id).await;
    }

    /// Persists every item; returns the commands to hand to the tenants.
    async fn persist(
        &self,
        events: Vec<WebhookEvent>,
    ) -> Result<Vec<(TenantId, TenantCommand)>, StoreError> {
        // (place among the commands, what to hand off); inbound messages wait for the batch.
        let mut commands: Vec<(usize, (TenantId, TenantCommand))> = Vec::new();
        let mut inbound: Vec<(usize, NewInbound)> = Vec::new();
        let now_ms = self.clock.now_ms();
        for event in events {
            let result = match event {
                WebhookEvent::Inbound {
                    phone_number_id,
                    message,
                    ..
                } => {
                    let Some(tenant) = self.tenant_for(&phone_number_id).await? else {
                        continue;
                    };
                    let sent_ms = seconds_to_ms(message.timestamp);
                    inbound.push((
                        commands.len() + inbound.len(),
                        NewInbound {
                            tenant,
                            chat: message.from.clone(),
                            wamid: message.wamid.clone(),
                            received_ms: now_ms,
                            sent_ms: Some(sent_ms),
                            kind: message.content.kind().to_owned(),
                            body: message.text_for_assistant(),
                            raw: Codec::Json
                                .encode(&message)
                                .ok()
                                .and_then(|raw| String::from_utf8(raw).ok()),
                        },
                    ));
                    Ok(())
                }
                WebhookEvent::Status {
                    phone_number_id,
                    status,
                    ..
                } => {
                    let Some(tenant) = self.tenant_for(&phone_number_id).await? else {
                        continue;
                    };
                    let update = store::NewStatus {
                        tenant: tenant.clone(),
                        wamid: status.wamid.clone(),
                        status: status.status,
                        at_ms: seconds_to_ms(status.timestamp),
                        error: status.errors.first().map(|e| SendFailure {
                            code: Some(e.code),
                            title: e.title.clone(),
                        }),
                    };
                    self.store.update_status(&update).await.map(|outcome| match outcome {
                        StatusOutcome::Advanced => {}
                        StatusOutcome::Ignored => debug!(tenant = %tenant, wamid = %update.wamid, status = status.status.as_str(), "status did not move forward, ignored"),
                        StatusOutcome::UnknownMessage => info!(tenant = %tenant, wamid = %update.wamid, status = status.status.as_str(), "status for an unknown message, acknowledged"),
                    })
                }
                WebhookEvent::Echo {
                    phone_number_id,
                    echo,
                    ..
                } => {
                    let Some(tenant) = self.tenant_for(&phone_number_id).await? else {
                        continue;
                    };
                    let at_ms = seconds_to_ms(echo.timestamp);
                    let new = NewOutbound {
                        tenant: tenant.clone(),
                        chat: echo.to.clone(),
                        origin: OutboundOrigin::Echo,
                        wamid: Some(echo.wamid.clone()),
                        kind: echo.content.kind().to_owned(),
                        body: echo.content.text_for_assistant(),
                        created_ms: at_ms,
                        epoch: None,
                        client_ref: None,
                        content: None,
                    };
                    self.store.record_outbound(&new).await.map(|outcome| {
                        if matches!(outcome, InsertOutcome::Inserted { .. }) {
                            let place = commands.len() + inbound.len();
                            let command = TenantCommand::OwnerActivity {
                                chat: new.chat,
                                at_ms,
                            };
                            commands.push((place, (tenant, command)));
                        }
                    })
                }
                WebhookEvent::Ignored {
                    phone_number_id,
                    reason,
                    ..
                } => {
                    info!(phone_number_id = phone_number_id.as_ref().map(PhoneNumberId::as_str), %reason, "webhook item ignored");
                    Ok(())
                }
                WebhookEvent::Rejected {
                    phone_number_id,
                    waba_id,
                    item,
                } => {
                    let tenant = match &phone_number_id {
                        Some(number) => self.tenant_for(number).await?,
                        None => None,
                    };
                    let known = if tenant.is_some() { "known" } else { "unknown" };
                    metrics::counter!("salesboy_webhook_rejected_items_total", "tenant" => known)
                        .increment(1);
                    let number = phone_number_id.as_ref().map(PhoneNumberId::as_str);
                    match &tenant {
                        Some(tenant) => {
                            info!(tenant = %tenant, path = %item.path, reason = %item.reason, "webhook item rejected and recorded")
                        }
                        None => {
                            warn!(phone_number_id = number, path = %item.path, reason = %item.reason, "webhook item rejected, its tenant cannot be told; recorded without one")
                        }
                    }
                    let new = NewRejectedItem {
                        tenant,
                        phone_number_id,
                        waba_id,
                        item,
                        received_ms: now_ms,
                    };
                    self.store.record_rejected_item(&new).await.map(|_| ())
                }
            };
            match result {
                Ok(()) => {}
                Err(e @ StoreError::Unavailable { .. }) => return Err(e),
                // One bad item must not lose the others.
                Err(e) => warn!(error = %e, "webhook item not persisted"),
            }
        }
        // The delivery's messages commit together (with other deliveries' writes).
        let (places, messages): (Vec<usize>, Vec<NewInbound>) = inbound.into_iter().unzip();
        let outcomes = self.store.insert_inbound_batch(&messages).await;
        for ((place, new), outcome) in places.into_iter().zip(messages).zip(outcomes) {
            match outcome.map(|stored| (stored.outcome, stored.new_chat, stored.predecessor)) {
                Ok((InsertOutcome::Inserted { id }, new_chat, predecessor)) => {
                    metrics::counter!("salesboy_messages_in_total", "outcome" => "new")
                        .increment(1);
                    let item = InboundItem {
                        id,
                        wamid: Some(new.wamid),
                        text: new.body,
                        received_ms: now_ms,
                        sent_ms: new.sent_ms.unwrap_or(now_ms),
                        predecessor,
                    };
                    let chat = new.chat;
                    let command = if new_chat {
                        TenantCommand::InboundNewChat { chat, item }
                    } else {
                        TenantCommand::Inbound { chat, item }
                    };
                    commands.push((place, (new.tenant, command)));
                }
                Ok((InsertOutcome::Duplicate { id }, _, _)) => {
                    metrics::counter!("salesboy_messages_in_total", "outcome" => "duplicate")
                        .increment(1);
                    debug!(tenant = %new.tenant, id, "duplicate inbound message ignored");
                }
                Err(e @ StoreError::Unavailable { .. }) => return Err(e),
                // One bad message must not lose the others.
                Err(e) => warn!(tenant = %new.tenant, error = %e, "webhook message not persisted"),
            }
        }
        commands.sort_by_key(|(place, _)| *place);
        Ok(commands.into_iter().map(|(_, command)| command).collect())
    }

    /// The tenant owning a phone number id; unknown numbers are logged and skipped.
    async fn tenant_for(
        &self,
        phone_number_id: &PhoneNumberId,
    ) -> Result<Option<TenantId>, StoreError> {
        if let Some(cached) = self.phone_routes.get(phone_number_id).await {
            return Ok(cached);
        }
        let tenant = self
            .store
            .tenant_by_phone_number(phone_number_id)
            .await?
            .map(|route| route.tenant);
        self.phone_routes
            .insert(phone_number_id.clone(), tenant.clone())
            .await;
        if tenant.is_none() {
            metrics::counter!("salesboy_webhook_unknown_numbers_total").increment(1);
            warn!(phone_number_id = %phone_number_id, "webhook for an unknown phone number, acknowledged and dropped");
        }
        Ok(tenant)
    }
}

async fn hand_off(router: &Router, commands: Vec<(TenantId, TenantCommand)>) {
    for (tenant, command) in commands {
        match router.deliver(&tenant, command).await {
            Ok(_) => {}
            // Persisted: it waits for session.start, which reconciles from the store.
            Err(RouteError::SessionStopped(_)) => {
                debug!(tenant = %tenant, "session stopped, persisted message waits for its start");
            }
            // Persisted: the sweep re-routes it once the tenant can be activated.
            Err(e) => {
                warn!(tenant = %tenant, error = %e, "persisted message not handed to its tenant yet");
            }
        }
    }
}

fn seconds_to_ms(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}
