//! Small helpers around ractor's request/reply.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

/// The reply of a call, or `None` if it timed out or the actor dropped the port.
pub fn answered<T>(result: CallResult<T>) -> Option<T> {
    match result {
        CallResult::Success(value) => Some(value),
        CallResult::Timeout | CallResult::SenderError => None,
    }
}

/// Asks `actor` and waits up to `timeout`: its answer, or `None` if it is gone, dropped the
/// reply port or did not answer in time.
pub async fn ask<M, T>(
    actor: &ActorRef<M>,
    request: impl FnOnce(RpcReplyPort<T>) -> M,
    timeout: Duration,
) -> Option<T>
where
    M: Message,
    T: Send + 'static,
{
    actor
        .call(request, Some(timeout))
        .await
        .ok()
        .and_then(answered)
}
