//! The invariants, checked after a run from the harness's own records: the plan (what the
//! customers sent), what Meta accepted (the outbox), the database's final contents and the
//! log of accepted epoch claims and fenced writes. Node metrics are not consulted.

use std::collections::{BTreeMap, BTreeSet};

use salesboy_actors::store::{DeliveryStatus, Direction, OutboundOrigin, StoredMessage};
use salesboy_protocol::TenantId;

use super::plan::Plan;
use super::ports::Sent;
use super::store::WriteRecord;

/// What a run left behind.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Every message in the database.
    pub messages: Vec<StoredMessage>,
    /// Inbound message id → the reply answering it (`None`: dismissed).
    pub links: BTreeMap<i64, Option<i64>>,
    /// What Meta accepted, in order.
    pub outbox: Vec<Sent>,
    /// Accepted claims and fenced writes, in the order the database took them.
    pub log: Vec<WriteRecord>,
}

/// Figures of a run, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Customer messages planned.
    pub inbound: usize,
    /// Replies recorded.
    pub replies: usize,
    /// Sends Meta accepted.
    pub sends: usize,
    /// Sends of a reply already sent (the documented window).
    pub duplicate_sends: usize,
}

/// The wamid of a customer message.
pub fn inbound_wamid(tenant: usize, chat: usize, seq: u32) -> String {
    format!("wamid.t{tenant}.c{chat}.m{seq}")
}

/// The text of a customer message.
pub fn inbound_text(tenant: usize, chat: usize, seq: u32) -> String {
    format!("m{seq} from t{tenant}c{chat}: do you have it in blue?")
}

/// The customer message positions a reply's text names (the question's lines, in order).
fn seqs_in_reply(body: &str) -> Option<(String, Vec<u32>)> {
    let (tag, question) = body.split_once('|')?;
    let seqs = question
        .lines()
        .map(|line| {
            line.split_whitespace()
                .next()
                .and_then(|word| word.strip_prefix('m'))
                .and_then(|n| n.parse().ok())
        })
        .collect::<Option<Vec<u32>>>()?;
    Some((tag.to_owned(), seqs))
}

/// Checks every invariant; returns the violations (empty: the run is correct) and a tally.
pub fn check(plan: &Plan, observed: &Observed) -> (Vec<String>, Tally) {
    let mut violations = Vec::new();
    one_host_per_epoch(observed, &mut violations);
    no_stale_writes(observed, &mut violations);
    let tally = one_reply_each(plan, observed, &mut violations);
    in_order(observed, &mut violations);
    (violations, tally)
}

/// At most one active host per tenant per epoch: the node incarnations that were granted an
/// epoch, claimed it or had a fenced write accepted under it.
fn one_host_per_epoch(observed: &Observed, violations: &mut Vec<String>) {
    let mut hosts: BTreeMap<(&TenantId, u64), BTreeSet<&str>> = BTreeMap::new();
    for record in &observed.log {
        let (node, tenant, epoch) = match record {
            WriteRecord::Claim {
                node,
                tenant,
                epoch,
            }
            | WriteRecord::Hosting {
                node,
                tenant,
                epoch,
            }
            | WriteRecord::Fenced {
                node,
                tenant,
                epoch,
                ..
            } => (node, tenant, *epoch),
        };
        hosts.entry((tenant, epoch)).or_default().insert(node);
    }
    for ((tenant, epoch), nodes) in hosts {
        if nodes.len() > 1 {
            violations.push(format!(
                "tenant {tenant} had {} hosts at epoch {epoch}: {nodes:?}",
                nodes.len()
            ));
        }
    }
}

/// No state write accepted from a stale epoch: replaying the log, every accepted fenced
/// write carries at least the newest epoch claimed for its tenant before it.
fn no_stale_writes(observed: &Observed, violations: &mut Vec<String>) {
    let mut claimed: BTreeMap<&TenantId, u64> = BTreeMap::new();
    for record in &observed.log {
        match record {
            WriteRecord::Claim { tenant, epoch, .. } => {
                let newest = claimed.entry(tenant).or_default();
                *newest = (*newest).max(*epoch);
            }
            WriteRecord::Fenced {
                node,
                tenant,
                epoch,
                what,
            } => {
                let newest = claimed.get(tenant).copied().unwrap_or(0);
                if *epoch < newest {
                    violations.push(format!(
                        "stale write accepted: {what} by {node} for tenant {tenant} at epoch {epoch} after epoch {newest} was claimed"
                    ));
                }
            }
            WriteRecord::Hosting { .. } => {}
        }
    }
}

/// Every persisted customer message has exactly one recorded reply, sent; no two replies
/// answer one message; a reply is sent twice only where a node fault allows it.
fn one_reply_each(plan: &Plan, observed: &Observed, violations: &mut Vec<String>) -> Tally {
    let by_id: BTreeMap<i64, &StoredMessage> =
        observed.messages.iter().map(|m| (m.id, m)).collect();
    let by_wamid: BTreeMap<&str, &StoredMessage> = observed
        .messages
        .iter()
        .filter(|m| m.direction == Direction::Inbound)
        .filter_map(|m| m.wamid.as_ref().map(|w| (w.as_str(), m)))
        .collect();

    // Which replies (by tag) Meta delivered for each customer message, and how often.
    let mut answered_by: BTreeMap<(String, String, u32), BTreeSet<String>> = BTreeMap::new();
    let mut sends_per_tag: BTreeMap<&str, usize> = BTreeMap::new();
    for sent in &observed.outbox {
        let Some((tag, seqs)) = seqs_in_reply(&sent.body) else {
            violations.push(format!("a send that is no bot reply: {:?}", sent.body));
            continue;
        };
        let (tag_str, _) = sent.body.split_once('|').unwrap_or_default();
        *sends_per_tag.entry(tag_str).or_default() += 1;
        for seq in seqs {
            answered_by
                .entry((sent.tenant.to_string(), sent.chat.to_string(), seq))
                .or_default()
                .insert(tag.clone());
        }
    }
    let duplicate_sends: usize = sends_per_tag.values().map(|n| n - 1).sum();
    if duplicate_sends > 0 && !plan.has_node_faults() {
        violations.push(format!(
            "{duplicate_sends} replies sent twice with no node fault to explain it"
        ));
    }

    for message in &plan.messages {
        let wamid = inbound_wamid(message.tenant, message.chat, message.seq);
        let Some(stored) = by_wamid.get(wamid.as_str()) else {
            violations.push(format!("{wamid} was never persisted"));
            continue;
        };
        match observed.links.get(&stored.id) {
            None => violations.push(format!("{wamid} has no reply once the faults stopped")),
            Some(None) => violations.push(format!("{wamid} was dismissed, not answered")),
            Some(Some(outbound_id)) => match by_id.get(outbound_id).and_then(|r| r.status) {
                Some(DeliveryStatus::Sent | DeliveryStatus::Delivered | DeliveryStatus::Read) => {}
                status => violations.push(format!(
                    "{wamid}: its reply {outbound_id} ended {status:?}, not sent"
                )),
            },
        }
        let key = (
            stored.tenant.to_string(),
            stored.chat.to_string(),
            message.seq,
        );
        match answered_by.get(&key).map_or(0, BTreeSet::len) {
            1 => {}
            0 => violations.push(format!("{wamid}: no reply reached the customer")),
            n => violations.push(format!(
                "{wamid}: {n} different replies reached the customer: {:?}",
                answered_by[&key]
            )),
        }
    }

    Tally {
        inbound: plan.messages.len(),
        replies: observed
            .messages
            .iter()
            .filter(|m| m.origin == Some(OutboundOrigin::Bot))
            .count(),
        sends: observed.outbox.len(),
        duplicate_sends,
    }
}

/// A reply's id and the positions of the customer messages it answers, in its order.
type ReplySeqs = (i64, Vec<u32>);

/// No conversation reorders a customer's messages: within a reply the messages are in the
/// order the customer sent them, and each reply (in the order they were recorded) answers
/// only messages sent after those of the chat's earlier replies.
fn in_order(observed: &Observed, violations: &mut Vec<String>) {
    let mut chats: BTreeMap<(String, String), Vec<ReplySeqs>> = BTreeMap::new();
    for reply in observed
        .messages
        .iter()
        .filter(|m| m.origin == Some(OutboundOrigin::Bot))
    {
        let Some((_, seqs)) = reply.body.as_deref().and_then(seqs_in_reply) else {
            violations.push(format!("reply {} does not name its messages", reply.id));
            continue;
        };
        chats
            .entry((reply.tenant.to_string(), reply.chat.to_string()))
            .or_default()
            .push((reply.id, seqs));
    }
    for ((tenant, chat), mut replies) in chats {
        replies.sort_by_key(|(id, _)| *id);
        let mut answered_up_to = 0;
        for (id, seqs) in replies {
            if seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
                violations.push(format!(
                    "{tenant}/{chat}: reply {id} answers messages out of order: {seqs:?}"
                ));
            }
            let first = seqs.iter().copied().min().unwrap_or(0);
            if first <= answered_up_to {
                violations.push(format!(
                    "{tenant}/{chat}: reply {id} answers m{first} after an earlier reply answered up to m{answered_up_to}"
                ));
            }
            answered_up_to = answered_up_to.max(seqs.iter().copied().max().unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_texts_name_their_messages_in_order() {
        let body = format!(
            "r.node-0#1.3|{}\n{}",
            inbound_text(0, 1, 2),
            inbound_text(0, 1, 3)
        );
        assert_eq!(
            seqs_in_reply(&body),
            Some(("r.node-0#1.3".to_owned(), vec![2, 3]))
        );
        assert_eq!(seqs_in_reply("We open at 9."), None);
    }
}
