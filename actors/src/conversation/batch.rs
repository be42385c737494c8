//! A batch's way through a conversation: taken when the customer pauses, checked against
//! the store, then dismissed or answered; the answer recorded (linked to the whole batch)
//! and handed to the session; the history window kept.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};
use salesboy_protocol::events::Alert;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    ConversationMsg, ConversationState, DismissReason, InFlight, InboundItem, Settled, fenced,
    paused_at,
};
use crate::ports::Turn;
use crate::responder::{ReadReceipt, ReplyRequest, ResponderMsg};
use crate::services::{CUSTOMER_WINDOW_MS, ReadReceipts};
use crate::session::{ReplyTiming, SendJob, SessionMsg};
use crate::store::{DismissOutcome, NewReply, ReplyOutcome, StoreError};

/// Takes the pending batch: dismisses it, or asks the responder for a reply.
pub(super) async fn start_batch(
    myself: &ActorRef<ConversationMsg>,
    state: &mut ConversationState,
) -> Result<(), ActorProcessingErr> {
    let mut items = std::mem::take(&mut state.pending);
    // The customer's order (the order the ingress stored them), whatever order they came in.
    items.sort_by_key(|i| i.id);
    // Messages handed straight from the ingress, each following the one handled or taken
    // before it: nothing of the chat can be missing before them, and nothing answered them
    // yet (should one have been answered after all, recording the reply finds that).
    // Anything else (after an activation, a lost or late hand-off, one from another node)
    // is checked against the store.
    if !std::mem::replace(&mut state.settled, Settled::Unknown).continued_by(&items) {
        reconcile_batch(state, &mut items).await?;
        items.sort_by_key(|i| i.id);
    }
    if items.is_empty() {
        return Ok(());
    }
    // One reply answers the oldest messages up to the cap; the next reply the rest.
    let cap = state.args.services.settings.max_batch_messages.max(1);
    if items.len() > cap {
        let rest = items.split_off(cap);
        debug!(tenant = %state.args.tenant, chat = %state.args.chat, answered = cap, left = rest.len(), "batch capped");
        state.pending.extend(rest);
    }
    // Every message of the chat up to the batch's newest is handled before it or in it;
    // the conversation knows so once the whole batch is handled.
    let mut settles = items
        .last()
        .map_or(Settled::Unknown, |i| Settled::Through(i.id));
    let now_ms = state.args.services.clock.now_ms();
    if paused_at(state, now_ms) {
        remember_customer_turns(state, &items);
        if dismiss(state, items, DismissReason::BotPaused).await? {
            state.settled = settles;
        }
        return Ok(());
    }
    // Each message's age counts from when the customer sent it (Meta's timestamp), not
    // from when it reached us: an old or replayed delivery is stored, never answered.
    let max_age_ms =
        i64::try_from(state.args.services.settings.max_message_age.as_millis()).unwrap_or(i64::MAX);
    for reason in [DismissReason::OutsideWindow, DismissReason::TooOld] {
        let (old, fresh): (Vec<InboundItem>, Vec<InboundItem>) = items
            .into_iter()
            .partition(|item| too_old(item, now_ms, max_age_ms) == Some(reason));
        items = fresh;
        if !old.is_empty() {
            remember_customer_turns(state, &old);
            if !dismiss(state, old, reason).await? {
                settles = Settled::Unknown;
            }
        }
    }
    if items.is_empty() {
        state.settled = settles;
        return Ok(());
    }
    let texts: Vec<&str> = items
        .iter()
        .filter_map(|i| i.text.as_deref())
        .filter(|t| !t.trim().is_empty())
        .collect();
    if texts.is_empty() {
        remember_customer_turns(state, &items);
        if dismiss(state, items, DismissReason::NothingToAnswer).await? {
            state.settled = settles;
        }
        return Ok(());
    }

    let question = last_chars(
        &texts.join("\n"),
        state.args.services.settings.max_question_chars,
    );
    let links = &state.args.links;
    let mut read_receipt = None;
    if let (Some(session), Some(wamid)) =
        (links.session(), items.last().and_then(|i| i.wamid.clone()))
    {
        match links.read_receipts(state.args.services.settings.read_receipts) {
            ReadReceipts::Always => {
                let _ = session.send_message(SessionMsg::MarkRead { wamid });
            }
            ReadReceipts::WhenSlow => read_receipt = Some(ReadReceipt { session, wamid }),
            ReadReceipts::Never => {}
        }
    }
    let Some(responder) = links.responder() else {
        // The responder is restarting: keep the batch; the next message or the sweep retries.
        warn!(tenant = %state.args.tenant, chat = %state.args.chat, "responder unavailable, batch kept");
        // Beside what the cap left waiting.
        state.pending.extend(items);
        return Ok(());
    };
    state.generation += 1;
    let token = state.generation;
    let request = ReplyRequest {
        chat: state.args.chat.clone(),
        question: question.clone(),
        history: state.history.iter().cloned().collect(),
        reply_to: myself.clone(),
        batch: token,
        read_receipt,
    };
    if responder
        .send_message(ResponderMsg::Generate(request))
        .is_err()
    {
        state.pending.extend(items);
        return Ok(());
    }
    state.in_flight = Some(InFlight {
        token,
        items,
        question,
        debounced_at: Instant::now(),
        settles,
    });
    Ok(())
}

/// The last `max` characters of `text` (all of it if it is shorter): a flood of text is not
/// sent to the LLM whole; the latest words are what the customer is waiting for.
fn last_chars(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    text.chars().skip(count - max).collect()
}

/// Why a message is too old to answer at `now_ms`, if it is: sent (Meta's timestamp) more
/// than 24 hours ago (the customer service window is closed), or longer ago than the node's
/// maximum message age.
fn too_old(item: &InboundItem, now_ms: i64, max_age_ms: i64) -> Option<DismissReason> {
    let age_ms = now_ms.saturating_sub(item.sent_ms);
    if age_ms > CUSTOMER_WINDOW_MS {
        Some(DismissReason::OutsideWindow)
    } else if age_ms > max_age_ms {
        Some(DismissReason::TooOld)
    } else {
        None
    }
}

/// Checks the batch against the store: drops messages already answered or dismissed (a late
/// or repeated hand-off), and adds the chat's unanswered messages stored before the batch's
/// newest one that this conversation does not hold (their hand-off was lost or is late), so a
/// reply never leaves an earlier message of the customer to a later reply.
async fn reconcile_batch(
    state: &mut ConversationState,
    items: &mut Vec<InboundItem>,
) -> Result<(), StoreError> {
    let Some(newest) = items.iter().map(|i| i.id).max() else {
        return Ok(());
    };
    let unanswered = state
        .args
        .services
        .store
        .unanswered_inbound_in_chat(&state.args.tenant, &state.args.chat)
        .await?;
    items.retain(|i| unanswered.iter().any(|m| m.id == i.id));
    for message in unanswered {
        if message.id < newest && !items.iter().any(|i| i.id == message.id) {
            items.push(InboundItem::from_stored(&message));
        }
    }
    Ok(())
}

/// Records the reply and hands it to the session (or dismisses the batch).
pub(super) async fn finish_batch(
    myself: &ActorRef<ConversationMsg>,
    state: &mut ConversationState,
    in_flight: InFlight,
    reply: Result<String, String>,
    passages: Vec<crate::store::PassageChoice>,
    llm_time: Duration,
) -> Result<(), ActorProcessingErr> {
    let body = match reply {
        Ok(body) => body,
        Err(reason) => {
            // Left unanswered in the store: the sweep offers it again.
            warn!(tenant = %state.args.tenant, chat = %state.args.chat, reason, "no reply written, batch left for retry");
            return Ok(());
        }
    };
    let services = Arc::clone(&state.args.services);
    let now_ms = services.clock.now_ms();
    if paused_at(state, now_ms) {
        // The owner stepped in while the reply was being written.
        remember_customer_turns(state, &in_flight.items);
        if dismiss(state, in_flight.items, DismissReason::BotPaused).await? {
            state.settled = in_flight.settles;
        }
        return Ok(());
    }
    let reply = NewReply {
        tenant: state.args.tenant.clone(),
        chat: state.args.chat.clone(),
        answers: in_flight.items.iter().map(|i| i.id).collect(),
        body: body.clone(),
        passages,
        epoch: state.args.epoch,
        created_ms: now_ms,
    };
    let outcome = match services.store.record_reply(&reply).await {
        Err(StoreError::StaleEpoch { .. }) => return fenced(myself, state),
        other => other?,
    };
    match outcome {
        ReplyOutcome::Recorded { outbound_id } => {
            state.replies += 1;
            state.settled = in_flight.settles;
            state.history.push_back(Turn::customer(in_flight.question));
            state.history.push_back(Turn::business(body.clone()));
            trim_history(state);
            let first_received_ms = in_flight
                .items
                .iter()
                .map(|i| i.received_ms)
                .min()
                .unwrap_or(now_ms);
            let job = SendJob {
                outbound_id,
                chat: state.args.chat.clone(),
                body,
                content: None,
                reply_to: None,
                attempts: 0,
                timing: Some(ReplyTiming {
                    first_received_ms,
                    debounced_at: in_flight.debounced_at,
                    llm_time,
                }),
            };
            match state.args.links.session() {
                Some(session) => {
                    let _ = session.send_message(SessionMsg::Send(job));
                }
                // Recorded and pending: the session sends it when it is back (reconciliation).
                None => {
                    warn!(tenant = %state.args.tenant, outbound_id, "session unavailable, reply left pending")
                }
            }
        }
        ReplyOutcome::AlreadyAnswered { inbound_id } => {
            debug!(tenant = %state.args.tenant, chat = %state.args.chat, inbound_id, "batch already answered");
        }
    }
    Ok(())
}

/// Records `items` as handled without a reply; whether they were (none was answered or
/// dismissed already).
async fn dismiss(
    state: &mut ConversationState,
    items: Vec<InboundItem>,
    reason: DismissReason,
) -> Result<bool, ActorProcessingErr> {
    let services = Arc::clone(&state.args.services);
    let ids: Vec<i64> = items.iter().map(|i| i.id).collect();
    let outcome = services
        .store
        .dismiss_inbound(
            &state.args.tenant,
            &state.args.chat,
            &ids,
            services.clock.now_ms(),
            state.args.epoch,
        )
        .await?;
    if outcome == DismissOutcome::Dismissed {
        state.dismissed += 1;
        info!(tenant = %state.args.tenant, chat = %state.args.chat, reason = reason.as_str(), messages = ids.len(), "batch handled without a reply");
        if reason == DismissReason::OutsideWindow {
            let alert = Alert::OutsideWindow {
                messages: ids.len(),
            };
            services.publish(
                services
                    .alert(&state.args.tenant, &alert)
                    .with_chat(state.args.chat.clone()),
            );
        }
    }
    Ok(outcome == DismissOutcome::Dismissed)
}

fn remember_customer_turns(state: &mut ConversationState, items: &[InboundItem]) {
    let max = state.args.services.settings.max_question_chars;
    for text in items.iter().filter_map(|i| i.text.as_deref()) {
        state
            .history
            .push_back(Turn::customer(last_chars(text, max)));
    }
    trim_history(state);
}

fn trim_history(state: &mut ConversationState) {
    let window = state.args.services.settings.history_window as usize;
    while state.history.len() > window {
        state.history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_at(sent_ms: i64) -> InboundItem {
        InboundItem {
            id: 1,
            wamid: None,
            text: Some("hi".into()),
            // Received now: a late or replayed delivery of an old message.
            received_ms: 100 * CUSTOMER_WINDOW_MS,
            sent_ms,
            predecessor: Default::default(),
        }
    }

    #[test]
    fn a_question_keeps_its_latest_characters() {
        assert_eq!(last_chars("hello", 10), "hello");
        assert_eq!(last_chars("hello", 3), "llo");
        assert_eq!(last_chars("héllo wörld", 5), "wörld");
        assert_eq!(last_chars("", 0), "");
    }

    #[test]
    fn a_messages_age_counts_from_when_the_customer_sent_it() {
        let now = 100 * CUSTOMER_WINDOW_MS;
        let hour = 3_600_000;
        let day = CUSTOMER_WINDOW_MS;
        // The default maximum age is the window itself.
        for (sent, max_age, expected) in [
            (now, day, None),
            (now - day, day, None),
            (now - day - 1, day, Some(DismissReason::OutsideWindow)),
            (now - 2 * hour, hour, Some(DismissReason::TooOld)),
            (now - hour, hour, None),
            // A larger maximum age never opens the window.
            (now - 2 * day, 7 * day, Some(DismissReason::OutsideWindow)),
            // A timestamp ahead of the clock is not old.
            (now + hour, hour, None),
        ] {
            assert_eq!(
                too_old(&sent_at(sent), now, max_age),
                expected,
                "sent {sent}, max age {max_age}"
            );
        }
    }
}
