//! Background tasks that stop when told to: every task a part of the node spawns is tracked,
//! and one cancellation token stops them (no `Drop`, no `abort()`).
//!
//! A [`Background`] is passed down: the node has one, the cluster member a
//! [`child`](Background::child) of it (its own tracker, a child token), and the member's parts
//! (membership, leader lease, directory, the member's loops) spawn on the member's.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where a part of the node runs its background tasks, and what stops them.
#[derive(Debug, Clone, Default)]
pub struct Background {
    tracker: TaskTracker,
    token: CancellationToken,
}

/// Tasks still running when [`Background::stop`] gave up waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{left} background tasks still running")]
pub struct StillRunning {
    /// How many.
    pub left: usize,
}

impl Background {
    /// A fresh tracker and token.
    pub fn new() -> Self {
        Self::default()
    }

    /// The background of a part: a tracker of its own (so it can be stopped and waited for
    /// alone), and a child token (so it also stops when this one is cancelled).
    pub fn child(&self) -> Self {
        Self {
            tracker: TaskTracker::new(),
            token: self.token.child_token(),
        }
    }

    /// Spawns a task that runs until it ends or the token is cancelled (then it is dropped
    /// where it waits, as `abort` would: loops, watches, servers).
    pub fn spawn_until_cancelled<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker
            .spawn(until_cancelled(self.token.clone(), task))
    }

    /// Spawns a task that runs to its end, cancelled or not (a request being answered, a
    /// write): [`Background::stop`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// The token that stops the tasks; cancelled by [`Background::cancel`] and
    /// [`Background::stop`], or by the parent's.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// The tasks: empty once they have all ended.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Cancels the token without waiting for the tasks (what a crash does).
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Cancels the token and waits, at most `timeout`, until every task has ended. Tasks
    /// spawned after this are still tracked (a later `stop` waits for them too).
    pub async fn stop(&self, timeout: Duration) -> Result<(), StillRunning> {
        self.token.cancel();
        self.wait(timeout).await
    }

    /// Waits, at most `timeout`, until every task has ended, without cancelling anything.
    pub async fn wait(&self, timeout: Duration) -> Result<(), StillRunning> {
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .map_err(|_| StillRunning {
                left: self.tracker.len(),
            })
    }
}

/// Runs `task` until it ends or `token` is cancelled, whichever comes first; on cancel,
/// `task` is dropped without being polled again (unlike tokio-util's `run_until_cancelled`,
/// which polls the task once more first and so lets it act on a cancelled token).
pub async fn until_cancelled<F: Future>(token: CancellationToken, task: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = token.cancelled() => None,
        output = task => Some(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_task_is_not_polled_again() {
        let token = CancellationToken::new();
        token.cancel();
        let polled = std::sync::atomic::AtomicBool::new(false);
        let task = std::future::poll_fn(|_| {
            polled.store(true, std::sync::atomic::Ordering::Relaxed);
            std::task::Poll::Ready(())
        });
        assert_eq!(until_cancelled(token, task).await, None);
        assert!(!polled.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[tokio::test]
    async fn stop_drops_loops_and_waits_for_the_rest() {
        let node = Background::new();
        let part = node.child();
        part.spawn_until_cancelled(std::future::pending::<()>());
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let answered = part.spawn(async move {
            let _ = finished.await;
            42
        });
        assert_eq!(part.tracker().len(), 2);
        assert!(node.tracker().is_empty(), "a child has its own tracker");

        node.cancel();
        assert!(
            part.token().is_cancelled(),
            "the parent's token stops the child"
        );
        assert_eq!(
            part.wait(Duration::from_millis(50)).await,
            Err(StillRunning { left: 1 }),
            "a task that runs to its end is waited for"
        );
        finish.send(()).expect("task waiting");
        assert_eq!(part.stop(Duration::from_secs(5)).await, Ok(()));
        assert_eq!(answered.await.expect("joined"), 42);
        assert!(part.tracker().is_empty());
    }
}
