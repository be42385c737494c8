//! Steps every bench shares: warming the tenants up, waiting for the replies, and checking
//! that every message was answered exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use salesboy_testkit::SentMessage;

use super::load::closed_loop;
use super::node::Deployment;
use super::progress;
use super::report::Report;
use super::setup::{Layout, chat_index, delivery};
use super::verify::{Counter, DbCounts};

/// The run id of warm-up messages (measured runs use 1).
pub const WARMUP_RUN: u32 = 0;
/// The run id of measured messages.
pub const MEASURED_RUN: u32 = 1;

/// Activates every tenant with one message each (its own chat) and waits for the replies,
/// so that the measured run starts with tenants active and connection pools open; then
/// forgets what the fake Cloud API recorded.
pub async fn warm_up(deployment: &Deployment, tenants: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let deliveries: Vec<_> = (0..tenants)
        .map(|t| delivery(WARMUP_RUN, t, t, &format!("wamid.warmup.{t}"), t))
        .collect();
    let url = deployment.webhook_url()?;
    let outcome = closed_loop(
        &deployment.http,
        &url,
        Arc::new(deliveries),
        16,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    anyhow::ensure!(
        outcome.accepted() == tenants,
        "warm-up: {} of {tenants} deliveries accepted ({:?})",
        outcome.accepted(),
        outcome.failures()
    );
    deployment
        .whatsapp
        .wait_for_sent(tenants, Duration::from_secs(300))
        .await
        .map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
    // Let the last `mark_reply_sent` writes land before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    deployment.whatsapp.clear();
    progress(format!(
        "warm-up: {tenants} tenants active in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// How waiting for the replies ended.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// Whether everything expected arrived before the timeout.
    pub complete: bool,
    /// The database's counts at the end.
    pub counts: DbCounts,
}

/// Waits until the run is answered: with one message per chat, until the fake received
/// `accepted` sends; otherwise (batches may merge) until the database has
/// `inbound_total` inbound messages, none unanswered, none pending, and the fake received
/// every recorded reply (`outbound_before` were recorded before the run). Gives up after
/// `timeout` and says so (the report then lists what is missing).
pub async fn wait_for_replies(
    deployment: &mut Deployment,
    counter: &Counter,
    layout: &Layout,
    accepted: usize,
    inbound_total: i64,
    outbound_before: i64,
    timeout: Duration,
) -> anyhow::Result<Completion> {
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let complete = loop {
        let sent = deployment.whatsapp.sent_count();
        let done = if layout.messages_per_chat <= 1 {
            // Count only this run's recipients: a stray sender (another test's node that
            // found this port) must not end the wait early.
            sent >= accepted
                && deployment
                    .whatsapp
                    .sent()
                    .iter()
                    .filter(|s| chat_index(MEASURED_RUN, &s.to).is_some())
                    .count()
                    >= accepted
        } else {
            let counts = counter.counts().await?;
            counts.inbound >= inbound_total
                && counts.unanswered == 0
                && counts.pending == 0
                && sent as i64 >= counts.outbound - outbound_before
        };
        if done {
            break true;
        }
        if started.elapsed() > timeout {
            break false;
        }
        deployment.node_mut()?.check_alive()?;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            progress(format!("  {sent} replies received"));
            last_progress = Instant::now();
        }
        let pause = if layout.messages_per_chat <= 1 {
            10
        } else {
            200
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    };
    Ok(Completion {
        complete,
        counts: counter.counts().await?,
    })
}

/// Checks the run's replies against its messages and writes what is wrong into the report:
/// chats with no reply, more replies than messages, unanswered or dismissed messages,
/// unsent replies, refused deliveries. `sent` is what the fake received during the run.
pub fn check_delivery(
    report: &mut Report,
    layout: &Layout,
    sent: &[SentMessage],
    accepted: usize,
    completion: &Completion,
    inbound_before: i64,
) {
    let mut replies_per_chat: HashMap<usize, usize> = HashMap::new();
    let mut strangers = 0;
    for message in sent {
        match chat_index(MEASURED_RUN, &message.to) {
            Some(chat) => *replies_per_chat.entry(chat).or_insert(0) += 1,
            None => strangers += 1,
        }
    }
    let mut messages_per_chat: HashMap<usize, usize> = HashMap::new();
    for i in 0..layout.messages {
        *messages_per_chat.entry(layout.chat_of(i)).or_insert(0) += 1;
    }
    let silent = messages_per_chat
        .keys()
        .filter(|chat| !replies_per_chat.contains_key(chat))
        .count();
    let extra: usize = replies_per_chat
        .iter()
        .map(|(chat, &replies)| replies.saturating_sub(*messages_per_chat.get(chat).unwrap_or(&0)))
        .sum();
    let counts = &completion.counts;
    let persisted = counts.inbound - inbound_before;
    if accepted < layout.messages {
        report.problems.push(format!(
            "{} of {} deliveries never accepted after retries",
            layout.messages - accepted,
            layout.messages
        ));
    }
    if persisted != accepted as i64 {
        report.problems.push(format!(
            "{persisted} messages persisted for {accepted} accepted deliveries"
        ));
    }
    if !completion.complete {
        report
            .problems
            .push("timed out waiting for the replies".to_owned());
    }
    if silent > 0 {
        report
            .problems
            .push(format!("{silent} chats got no reply (messages lost)"));
    }
    if extra > 0 {
        report.problems.push(format!(
            "{extra} replies beyond one per message (duplicates)"
        ));
    }
    if layout.messages_per_chat <= 1 && sent.len() != layout.messages {
        report.problems.push(format!(
            "{} replies for {} messages (one chat each)",
            sent.len(),
            layout.messages
        ));
    }
    if strangers > 0 {
        report.problems.push(format!(
            "{strangers} replies to recipients the run never used"
        ));
    }
    if counts.unanswered > 0 {
        report.problems.push(format!(
            "{} inbound messages left unanswered in the database",
            counts.unanswered
        ));
    }
    if counts.dismissed > 0 {
        report.problems.push(format!(
            "{} inbound messages dismissed without a reply",
            counts.dismissed
        ));
    }
    if counts.pending > 0 {
        report
            .problems
            .push(format!("{} replies recorded but not sent", counts.pending));
    }
}
