//! Small helpers around ractor's request/reply.

use ractor::rpc::CallResult;

/// The reply of a call, or `None` if it timed out or the actor dropped the port.
pub fn answered<T>(result: CallResult<T>) -> Option<T> {
    match result {
        CallResult::Success(value) => Some(value),
        CallResult::Timeout | CallResult::SenderError => None,
    }
}
