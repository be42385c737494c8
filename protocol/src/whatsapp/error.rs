//! Graph API error bodies (`{"error":{…}}`) and their classification for retries.

use serde::{Deserialize, Serialize};

/// A Graph API error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    /// The error.
    pub error: GraphError,
}

/// A Graph API error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("graph api error {code}: {message}")]
pub struct GraphError {
    /// Meta's message (`"(#130429) Rate limit hit"`).
    pub message: String,
    /// The exception type (`OAuthException`, …).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The error code: what [`GraphError::kind`] classifies.
    pub code: i64,
    /// A finer code, for some errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    /// A title meant for end users, for some errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_title: Option<String>,
    /// A message meant for end users, for some errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_msg: Option<String>,
    /// WhatsApp-specific details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_data: Option<GraphErrorData>,
    /// Meta's trace id, for support requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// The class of this error.
    pub const fn kind(&self) -> GraphErrorKind {
        GraphErrorKind::from_code(self.code)
    }

    /// Whether the same request may succeed later (after a backoff).
    pub const fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// `error_data.details`, if any.
    pub fn details(&self) -> Option<&str> {
        self.error_data
            .as_ref()
            .and_then(|data| data.details.as_deref())
    }
}

/// `error_data` of a [`GraphError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorData {
    /// Always `whatsapp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_product: Option<String>,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// What a Graph API (or webhook) error code means for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GraphErrorKind {
    /// 130429: the phone number's throughput (80 msg/s by default) was exceeded; back off.
    Throughput,
    /// 131056: too many messages to the same customer in a short time; back off.
    PairRate,
    /// 131047: more than 24 hours since the customer's last message; only templates may be
    /// sent.
    OutsideWindow,
    /// 0 or 190: the access token is invalid or expired (an HTTP 401 is the caller's to map).
    Auth,
    /// Any other code.
    Other(i64),
}

impl GraphErrorKind {
    /// The class of an error code.
    pub const fn from_code(code: i64) -> Self {
        match code {
            130_429 => Self::Throughput,
            131_056 => Self::PairRate,
            131_047 => Self::OutsideWindow,
            0 | 190 => Self::Auth,
            other => Self::Other(other),
        }
    }

    /// Whether a request that failed this way may succeed later: throughput and pair-rate
    /// limits and the codes Meta documents as temporary. The 24-hour window and auth errors
    /// are not retryable.
    pub const fn is_retryable(self) -> bool {
        match self {
            Self::Throughput | Self::PairRate => true,
            Self::OutsideWindow | Self::Auth => false,
            // Codes Meta documents as temporary: 1 (API unknown), 2 (API service), 4 (app call
            // rate), 80007 (WABA rate limit), 131000 (something went wrong), 131016 (service
            // unavailable), 133004 (server temporarily unavailable).
            Self::Other(code) => matches!(code, 1 | 2 | 4 | 80_007 | 131_000 | 131_016 | 133_004),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify() {
        assert_eq!(
            GraphErrorKind::from_code(130_429),
            GraphErrorKind::Throughput
        );
        assert_eq!(GraphErrorKind::from_code(190), GraphErrorKind::Auth);
        assert_eq!(GraphErrorKind::from_code(100), GraphErrorKind::Other(100));
        assert!(GraphErrorKind::from_code(131_000).is_retryable());
        assert!(!GraphErrorKind::from_code(100).is_retryable());
        assert!(!GraphErrorKind::Auth.is_retryable());
    }
}
