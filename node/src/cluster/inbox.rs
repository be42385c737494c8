//! The node's inbox: commands other nodes send for tenants this node hosts, answered once
//! per message id (the dedup window).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_protocol::{Codec, Envelope, MessageId, TenantId};

use super::control::{codec_headers, encode_answer};
use super::directory::EntryState;
use super::member::ClusterMember;
use super::router::{Attempt, ROUTE_DEADLINE, activation_attempt};
use super::wire::RemoteError;
use crate::bus::Message;

/// How long a host remembers the answers it gave (the dedup window).
pub(super) const DEDUP_WINDOW: Duration = Duration::from_secs(120);
/// How long one inbox message may run: as long as its sender keeps retrying it. A command
/// still running then is answered [`RemoteError::TimedOut`].
pub(super) const INBOX_TIMEOUT: Duration = ROUTE_DEADLINE;

/// One inbox message's answer.
type Answer = Result<CommandReply, RemoteError>;

/// The answers the inbox gave, by message id (the dedup window). A message id is carried
/// out once at a time: a retry that arrives while the first is still running waits for the
/// first's answer. Answers that end a delivery (done, timed out) are kept for the window, so
/// a later retry gets them again; the others (not hosted here, moving…) are not, so a later
/// retry looks again.
pub(super) struct Answers {
    kept: moka::future::Cache<MessageId, Bytes>,
    timeout: Duration,
}

impl Answers {
    /// Answers kept for `window`; each message's work bounded by `timeout`.
    pub(super) fn new(window: Duration, timeout: Duration) -> Self {
        Self {
            kept: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
            timeout,
        }
    }

    /// The encoded answer to message `id`: the kept one, the one a run under way gives, or
    /// `work`'s (cut off after the timeout).
    pub(super) async fn answer(
        &self,
        id: MessageId,
        work: impl Future<Output = Answer>,
    ) -> Option<Bytes> {
        let timeout = self.timeout;
        let run = async move {
            let answer = tokio::time::timeout(timeout, work)
                .await
                .unwrap_or(Err(RemoteError::TimedOut(timeout)));
            let keep = matches!(answer, Ok(_) | Err(RemoteError::TimedOut(_)));
            match encode(&answer) {
                Some(bytes) if keep => Ok(bytes),
                other => Err(other),
            }
        };
        // Concurrent calls for one id share one run (moka coalesces them); only `Ok` is kept.
        match self.kept.try_get_with(id, run).await {
            Ok(bytes) => Some(bytes),
            Err(bytes) => Option::clone(&bytes),
        }
    }
}

/// An answer in the wire's codec (or the error that it could not be encoded; `None` if even
/// that could not be).
fn encode(answer: &Answer) -> Option<Bytes> {
    encode_answer(answer, |e| Err(RemoteError::Unencodable(e)))
}

impl ClusterMember {
    /// Handles one message of the inbox: one that does not open under the cluster key is
    /// counted and left unanswered (its sender times out).
    pub(super) async fn on_inbox(&self, message: Message) {
        let opened = match self.key.open_request(&message.subject, &message.payload) {
            Ok(opened) => opened,
            Err(error) => return error.record(&message.subject),
        };
        let bytes = match Codec::Bincode.decode::<Envelope>(&opened.message) {
            Err(e) => encode(&Err(RemoteError::BadEnvelope(e))),
            Ok(envelope) => {
                let tenant = envelope.target.tenant().clone();
                self.answers
                    .answer(envelope.id, self.accept(&tenant, &envelope))
                    .await
            }
        };
        if let Some(bytes) = bytes {
            let sealed = self.key.seal_answer(&opened.nonce, &bytes);
            let _ = self.bus.respond(&message, codec_headers(), sealed).await;
        }
    }

    /// Carries out a command sent to this node for a tenant it should host.
    pub(super) async fn accept(
        &self,
        tenant: &TenantId,
        envelope: &Envelope,
    ) -> Result<CommandReply, RemoteError> {
        let placement = match self.directory.cached(tenant) {
            Some(v) if v.entry.node == self.me => v.entry,
            _ => match self.directory.fetch(tenant).await {
                Ok(Some(v)) if v.entry.node == self.me => v.entry,
                Ok(_) => return Err(RemoteError::NotHere),
                Err(e) => return Err(RemoteError::Directory(e)),
            },
        };
        if matches!(placement.state, EntryState::Moving { .. }) {
            return Err(RemoteError::Moving);
        }
        if envelope.epoch != placement.epoch {
            // The sender knows another placement than this node: a newer one (this node is
            // stale) or an older one (the sender is, or the envelope is a replay): either
            // way it looks again.
            return Err(RemoteError::NotHere);
        }
        let command: TenantCommand = Codec::Bincode
            .decode(&envelope.payload)
            .map_err(RemoteError::BadCommand)?;
        match self.node.deliver(tenant, command).await {
            Ok(reply) => Ok(reply),
            // What would fail anywhere goes back as it is; the rest sends the sender back to
            // the directory.
            Err(error) => match activation_attempt(tenant, error.clone()) {
                Attempt::Final(_) => Err(RemoteError::Tenant(error)),
                Attempt::Retry(_) => Err(RemoteError::NotHere),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::oneshot;

    use super::*;

    fn decode(bytes: &Option<Bytes>) -> Answer {
        Codec::Bincode
            .decode(bytes.as_ref().expect("an answer"))
            .expect("a decodable answer")
    }

    /// A retried request that arrives while the first is still running waits for the first's
    /// answer instead of carrying the command out a second time (an owner send would reach
    /// the customer twice).
    #[tokio::test]
    async fn a_retry_while_the_first_runs_waits_for_its_answer() {
        let answers = Arc::new(Answers::new(DEDUP_WINDOW, INBOX_TIMEOUT));
        let id = MessageId::from_u128(7);
        let runs = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let (answers, runs) = (Arc::clone(&answers), Arc::clone(&runs));
            async move {
                answers
                    .answer(id, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        let _ = started_tx.send(());
                        let _ = released.await;
                        Ok(CommandReply::Outbound(1))
                    })
                    .await
            }
        });
        started.await.expect("the first runs");
        let retry = tokio::spawn({
            let (answers, runs) = (Arc::clone(&answers), Arc::clone(&runs));
            async move {
                answers
                    .answer(id, async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(CommandReply::Outbound(2))
                    })
                    .await
            }
        });
        // Let the retry reach the inbox while the first is still running.
        tokio::task::yield_now().await;
        let _ = release.send(());
        let (first, retry) = (first.await.expect("first"), retry.await.expect("retry"));
        assert_eq!(decode(&first), Ok(CommandReply::Outbound(1)));
        assert_eq!(decode(&retry), Ok(CommandReply::Outbound(1)));
        assert_eq!(runs.load(Ordering::SeqCst), 1, "carried out once");
    }

    /// A command that does not finish within the bound is answered "timed out", and that
    /// answer is kept: it may have been carried out, so a retry does not run it again.
    #[tokio::test(start_paused = true)]
    async fn a_command_that_hangs_is_cut_off_and_not_run_again() {
        let answers = Answers::new(DEDUP_WINDOW, INBOX_TIMEOUT);
        let id = MessageId::from_u128(8);
        let hung = tokio::time::timeout(
            INBOX_TIMEOUT * 2,
            answers.answer(id, std::future::pending()),
        )
        .await
        .expect("cut off by the inbox's own bound");
        assert_eq!(decode(&hung), Err(RemoteError::TimedOut(INBOX_TIMEOUT)));
        let retry = answers.answer(id, async { Ok(CommandReply::Done) }).await;
        assert_eq!(decode(&retry), Err(RemoteError::TimedOut(INBOX_TIMEOUT)));
    }

    /// "Not hosted here" is not kept: a later retry (the tenant may have arrived) runs again.
    #[tokio::test]
    async fn an_answer_that_sends_the_sender_back_is_not_kept() {
        let answers = Answers::new(DEDUP_WINDOW, INBOX_TIMEOUT);
        let id = MessageId::from_u128(9);
        let first = answers
            .answer(id, async { Err(RemoteError::NotHere) })
            .await;
        assert_eq!(decode(&first), Err(RemoteError::NotHere));
        let retry = answers.answer(id, async { Ok(CommandReply::Done) }).await;
        assert_eq!(decode(&retry), Ok(CommandReply::Done));
        let again = answers
            .answer(id, async { Err(RemoteError::NotHere) })
            .await;
        assert_eq!(decode(&again), Ok(CommandReply::Done), "kept");
    }
}
