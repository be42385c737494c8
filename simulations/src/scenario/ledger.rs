//! The ledger: from what the harness sent and what the fake Cloud API received (never from
//! the nodes' own counts), which messages were answered, lost or answered twice, and how
//! long each reply took, split into LLM time and gateway time.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use salesboy_testkit::{LlmCall, SentMessage};
use serde::Serialize;

use super::send::Outcome;
use super::traffic::{Planned, customer_wa_id, tags_in};

/// The counts of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Messages planned.
    pub planned: usize,
    /// Messages a node accepted (2xx to the webhook).
    pub accepted: usize,
    /// Messages no node accepted after every retry.
    pub given_up: usize,
    /// Replies the fake Cloud API accepted.
    pub replies: usize,
    /// Replies quoting no message (an offline or hand-off answer when no LLM answered).
    pub untagged_replies: usize,
    /// Replies sent to another chat than the messages they quote.
    pub misrouted_replies: usize,
    /// Accepted messages that no reply answered.
    pub lost: usize,
    /// Messages answered by more than one reply.
    pub duplicated: usize,
    /// Replies beyond the first for those messages.
    pub extra_replies: usize,
}

/// One reply's latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplyLatency {
    /// When the reply reached the fake Cloud API, seconds after the traffic started.
    pub at: f64,
    /// From the planned time of the newest message it answers to the reply, ms (it
    /// includes the debounce).
    pub total_ms: f64,
    /// Time in LLM calls for those messages (every try, every provider), ms.
    pub llm_ms: f64,
    /// The rest: gateway time (webhook, persistence, routing, debounce, sends), ms.
    pub gateway_ms: f64,
}

/// The ledger's result.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// The counts.
    pub counts: Counts,
    /// One latency per first reply.
    pub latencies: Vec<ReplyLatency>,
    /// The numbers of the lost messages (the first 50).
    pub lost_examples: Vec<u64>,
    /// The numbers of the duplicated messages (the first 50).
    pub duplicated_examples: Vec<u64>,
}

/// How many times each message was answered, and by which replies, so far.
pub fn answers(replies: &[SentMessage]) -> HashMap<u64, usize> {
    let mut answered: HashMap<u64, usize> = HashMap::new();
    for reply in replies {
        for id in reply_tags(reply) {
            *answered.entry(id).or_default() += 1;
        }
    }
    answered
}

/// Accepted messages without a reply yet.
pub fn unanswered(outcomes: &[Outcome], replies: &[SentMessage]) -> usize {
    let answered = answers(replies);
    outcomes
        .iter()
        .filter(|o| o.accepted.is_some() && !answered.contains_key(&o.id))
        .count()
}

/// Balances what was sent against what was received.
pub fn balance(
    plan: &[Planned],
    outcomes: &[Outcome],
    replies: &[SentMessage],
    llm_calls: &[LlmCall],
    start: Instant,
) -> Ledger {
    let mut ledger = Ledger::default();
    let counts = &mut ledger.counts;
    counts.planned = plan.len();
    counts.replies = replies.len();
    let mut answered: HashMap<u64, usize> = HashMap::new();
    let mut llm_by_tag: HashMap<u64, Duration> = HashMap::new();
    for call in llm_calls {
        for tag in &call.tags {
            if let Some(id) = super::traffic::tag_id(tag) {
                *llm_by_tag.entry(id).or_default() += call.took;
            }
        }
    }

    for reply in replies {
        let ids: Vec<u64> = reply_tags(reply)
            .into_iter()
            .filter(|id| (*id as usize) < plan.len())
            .collect();
        let Some(&newest) = ids.iter().max() else {
            counts.untagged_replies += 1;
            continue;
        };
        let chat = customer_wa_id(plan[newest as usize].customer);
        if reply.to != chat {
            counts.misrouted_replies += 1;
        }
        let first = ids.iter().all(|id| !answered.contains_key(id));
        for id in &ids {
            *answered.entry(*id).or_default() += 1;
        }
        if first {
            let at = reply.received.saturating_duration_since(start);
            let total = at.saturating_sub(plan[newest as usize].at);
            let llm = llm_by_tag.get(&newest).copied().unwrap_or_default();
            ledger.latencies.push(ReplyLatency {
                at: at.as_secs_f64(),
                total_ms: ms(total),
                llm_ms: ms(llm),
                gateway_ms: ms(total.saturating_sub(llm)),
            });
        }
    }

    for outcome in outcomes {
        match outcome.accepted {
            Some(_) => counts.accepted += 1,
            None => counts.given_up += 1,
        }
        let times = answered.get(&outcome.id).copied().unwrap_or(0);
        if times == 0 && outcome.accepted.is_some() {
            counts.lost += 1;
            if ledger.lost_examples.len() < 50 {
                ledger.lost_examples.push(outcome.id);
            }
        }
        if times > 1 {
            counts.duplicated += 1;
            counts.extra_replies += times - 1;
            if ledger.duplicated_examples.len() < 50 {
                ledger.duplicated_examples.push(outcome.id);
            }
        }
    }
    ledger
}

/// The messages a reply answers: its tags, each once (the answer may quote a tag twice,
/// once in the list of tags and once in its excerpt of the question).
pub fn reply_tags(reply: &SentMessage) -> BTreeSet<u64> {
    tags_in(&reply.body).collect()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::traffic::tag;

    fn planned(id: u64, customer: usize, at_ms: u64) -> Planned {
        Planned {
            id,
            at: Duration::from_millis(at_ms),
            customer,
            text: tag(id),
        }
    }

    fn reply(start: Instant, to: usize, at_ms: u64, body: &str) -> SentMessage {
        SentMessage {
            phone_number_id: "1".into(),
            to: customer_wa_id(to),
            body: body.into(),
            content: None,
            request: serde_json::Value::Null,
            reply_to: None,
            wamid: "wamid.x".into(),
            token: "t".into(),
            received: start + Duration::from_millis(at_ms),
        }
    }

    fn accepted(id: u64) -> Outcome {
        Outcome {
            id,
            first_post: Duration::ZERO,
            accepted: Some(Duration::ZERO),
            attempts: 1,
        }
    }

    #[test]
    fn counts_lost_duplicated_and_batched_messages() {
        let start = Instant::now();
        let plan = vec![
            planned(0, 0, 0),
            planned(1, 0, 100),
            planned(2, 1, 0),
            planned(3, 2, 0),
        ];
        let outcomes: Vec<Outcome> = (0..4).map(accepted).collect();
        let replies = vec![
            // One reply for a burst of two.
            reply(
                start,
                0,
                600,
                &format!("[fake-llm] {} {} hi", tag(0), tag(1)),
            ),
            reply(start, 1, 300, &format!("[fake-llm] {} {}", tag(2), tag(2))),
            // Message 2 answered twice.
            reply(start, 1, 900, &format!("[fake-llm] {}", tag(2))),
            reply(start, 2, 900, "Thanks for your message!"),
        ];
        let calls = vec![LlmCall {
            tags: vec![tag(0), tag(1)],
            arrived: start,
            took: Duration::from_millis(200),
            status: 200,
        }];
        let ledger = balance(&plan, &outcomes, &replies, &calls, start);
        let counts = &ledger.counts;
        assert_eq!((counts.accepted, counts.replies), (4, 4));
        assert_eq!(
            (counts.lost, counts.duplicated, counts.extra_replies),
            (1, 1, 1)
        );
        assert_eq!(ledger.lost_examples, vec![3]);
        assert_eq!(ledger.duplicated_examples, vec![2]);
        assert_eq!(counts.untagged_replies, 1);
        assert_eq!(counts.misrouted_replies, 0);
        // The burst's reply: 500 ms after its newest message, 200 of them in the LLM.
        let first = ledger.latencies[0];
        assert!((first.total_ms - 500.0).abs() < 1e-6, "{first:?}");
        assert!((first.llm_ms - 200.0).abs() < 1e-6);
        assert!((first.gateway_ms - 300.0).abs() < 1e-6);
        assert_eq!(ledger.latencies.len(), 2);
        assert_eq!(unanswered(&outcomes, &replies), 1);
    }
}
