//! One send and its outcome: delivering a job to the Cloud API and recording it as sent,
//! then what the session does with the result (count it, retry it after a backoff, pause the
//! queue on a throughput error, pace a customer after a pair-rate error, or fail it for good).

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use salesboy_protocol::{TenantId, Wamid};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{PAIR_RATE_PENALTY, SendJob, SessionMsg, SessionState, SessionStatus, set_status};
use crate::ports::{SendError, WhatsAppConnection};
use crate::services::Services;
use crate::stop::StopReason;
use crate::store::{SendFailure, StoreError};

/// How a send ended.
#[derive(Debug)]
pub enum Delivery {
    /// Meta took it and the store recorded it as sent.
    Sent(Wamid),
    /// Meta took it, but the store refused the record: the tenant has a newer host.
    Fenced,
    /// Meta did not take it.
    Failed(SendError),
    /// `web`: refused before it was sent, by ban hygiene (`not_a_contact`).
    Refused(&'static str),
}

/// The first wait before recording a sent reply again after the store refused it.
const MARK_RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between attempts to record a sent reply.
const MARK_RETRY_MAX: Duration = Duration::from_secs(5);

/// Sends `job`, then records it as sent. A refused record is tried again (the send never is)
/// until the store takes it or says the tenant has moved: a reply Meta took and the store
/// still shows pending would be sent again by whoever reads it next.
pub(super) async fn deliver(
    connection: &dyn WhatsAppConnection,
    services: &Services,
    tenant: &TenantId,
    epoch: u64,
    job: &SendJob,
) -> Delivery {
    let sent = match &job.content {
        Some(content) => connection.send_content(&job.chat, content).await,
        None => {
            connection
                .send_text(&job.chat, &job.body, job.reply_to.as_ref())
                .await
        }
    };
    let wamid = match sent {
        Ok(wamid) => wamid,
        Err(error) => return Delivery::Failed(error),
    };
    let mut wait = MARK_RETRY_FIRST;
    loop {
        let marked = services
            .store
            .mark_reply_sent(
                tenant,
                job.outbound_id,
                &wamid,
                services.clock.now_ms(),
                epoch,
            )
            .await;
        match marked {
            Ok(()) => return Delivery::Sent(wamid),
            Err(StoreError::StaleEpoch { .. }) => return Delivery::Fenced,
            Err(error) => {
                warn!(%tenant, outbound_id = job.outbound_id, %error, retry_in_ms = wait.as_millis(), "cannot record a sent reply, retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MARK_RETRY_MAX);
            }
        }
    }
}

pub(super) async fn on_sent(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    mut job: SendJob,
    outcome: Delivery,
) -> Result<(), ActorProcessingErr> {
    let services = Arc::clone(&state.args.services);
    let error = match outcome {
        Delivery::Sent(_) => {
            state.owned.remove(&job.outbound_id);
            state.sent += 1;
            debug!(tenant = %state.args.tenant, outbound_id = job.outbound_id, epoch = state.args.epoch, "reply sent");
            metrics::counter!("salesboy_sends_total", "outcome" => "sent").increment(1);
            services.counters.sends.record(true);
            record_latency(&services, &job);
            // Its `reply_sent` (or `owner_message_sent`) event was written with the sent mark.
            return Ok(());
        }
        Delivery::Fenced => {
            StopReason::Fenced.stop(myself);
            return Ok(());
        }
        Delivery::Failed(error) => error,
        Delivery::Refused(reason) => {
            warn!(tenant = %state.args.tenant, outbound_id = job.outbound_id, reason, "send refused by ban hygiene");
            state.hygiene.uncount();
            return fail(state, &job, reason, None).await;
        }
    };

    if error == SendError::AuthFailed {
        warn!(tenant = %state.args.tenant, "access token refused, session auth_failed");
        set_status(state, SessionStatus::AuthFailed);
        fail(state, &job, error.code(), None).await?;
        let queued: Vec<SendJob> = state.queue.drain(..).collect();
        for queued in &queued {
            fail(state, queued, error.code(), None).await?;
        }
        return Ok(());
    }
    if error.is_retryable() && job.attempts + 1 < services.settings.send_max_attempts {
        job.attempts += 1;
        state.retries += 1;
        metrics::counter!("salesboy_sends_total", "outcome" => "retried").increment(1);
        let backoff = services
            .settings
            .send_base_backoff
            .saturating_mul(1 << job.attempts.min(10));
        match error {
            SendError::Throttled { retry_after } => {
                let pause = retry_after.unwrap_or(backoff);
                state.blocked_until = Some(super::blocked_until(Instant::now(), pause));
                set_status(state, SessionStatus::RateLimited);
                state.queue.push_front(job);
            }
            _ => {
                if error == SendError::PairRateLimited {
                    let now = Instant::now();
                    state.paced_until.insert(job.chat.clone(), now + backoff);
                    state
                        .pair_limited
                        .insert(job.chat.clone(), now + PAIR_RATE_PENALTY);
                }
                let outbound_id = job.outbound_id;
                state.delayed.insert(outbound_id, job);
                myself.send_after(backoff, move || SessionMsg::Retry(outbound_id));
            }
        }
        return Ok(());
    }
    let code = match &error {
        SendError::Rejected { code, .. } => Some(*code),
        SendError::OutsideWindow => Some(131_047),
        _ => None,
    };
    warn!(tenant = %state.args.tenant, outbound_id = job.outbound_id, %error, "send failed for good");
    fail(state, &job, error.code(), code).await
}

pub(super) async fn fail(
    state: &mut SessionState,
    job: &SendJob,
    title: &str,
    code: Option<i64>,
) -> Result<(), ActorProcessingErr> {
    state.owned.remove(&job.outbound_id);
    let services = Arc::clone(&state.args.services);
    services.sends.finished(state.args.epoch, job.outbound_id);
    state.failed += 1;
    metrics::counter!("salesboy_sends_total", "outcome" => "failed").increment(1);
    services.counters.sends.record(false);
    let failure = SendFailure {
        code,
        title: title.to_owned(),
    };
    match services
        .store
        .mark_reply_failed(
            &state.args.tenant,
            job.outbound_id,
            &failure,
            services.clock.now_ms(),
            state.args.epoch,
        )
        .await
    {
        Ok(()) | Err(StoreError::StaleEpoch { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Reply latency: gateway time (everything but debounce and LLM) and LLM time.
fn record_latency(services: &Services, job: &SendJob) {
    let Some(timing) = job.timing else { return };
    let total = Duration::from_millis(
        u64::try_from(
            services
                .clock
                .now_ms()
                .saturating_sub(timing.first_received_ms),
        )
        .unwrap_or(0),
    );
    let debounce = total.saturating_sub(timing.debounced_at.elapsed());
    let gateway = total
        .saturating_sub(debounce)
        .saturating_sub(timing.llm_time);
    metrics::histogram!("salesboy_reply_gateway_seconds").record(gateway.as_secs_f64());
    metrics::histogram!("salesboy_reply_llm_seconds").record(timing.llm_time.as_secs_f64());
    services.counters.replies.record(gateway, timing.llm_time);
}
