//! The WhatsApp Cloud API client: [`CloudApiConnector`] opens a [`CloudApiConnection`] per
//! business number; the connection sends text messages, templates, interactive messages and
//! media by link, and marks messages read through the Graph API (`POST {base}/{phone-number-id}/messages`, bearer token).
//!
//! Failures are classified for the session's retry policy by [`classify_send_error`]:
//!
//! | response | [`SendError`] |
//! |---|---|
//! | HTTP 401, Graph code 190 (or 0) | `AuthFailed` |
//! | Graph code 130429 | `Throttled { retry_after }` (from a `Retry-After` header, if any) |
//! | Graph code 131056 | `PairRateLimited` |
//! | Graph code 131047 | `OutsideWindow` |
//! | HTTP 5xx or 408, codes Meta documents as temporary, timeouts, connection errors | `Transient` |
//! | any other Graph error | `Rejected { code, reason: message }` |
//! | a non-JSON error body | by HTTP status: 429 `Throttled`, 5xx / 408 `Transient`, else `Rejected { code: status }` |
//!
//! A `2xx` send whose body carries no message id is `Rejected` (with the HTTP status as the
//! code), not `Transient`: Meta accepted the request, so the message may well be on its
//! way, and a retry could deliver it twice.
//!
//! The access token appears only in the `Authorization` header; every error string is
//! scrubbed of it as well, in case a server echoes it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use salesboy_actors::ports::{SendError, WhatsAppConnection, WhatsAppConnector};
use salesboy_actors::store::{AccessToken, WhatsAppNumber};
use salesboy_protocol::whatsapp::send::MarkReadResponse;
use salesboy_protocol::whatsapp::{
    GraphErrorBody, GraphErrorKind, MarkReadRequest, OutboundContent, SendContentRequest,
    SendMessageResponse, SendTextRequest,
};
use salesboy_protocol::{ChatId, PhoneNumberId, TenantId, Wamid};
use serde::Serialize;
use tracing::debug;

use super::{excerpt, scrub};

/// The Graph API base URL of the version the gateway speaks.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v21.0";

/// How long one Graph API request may take, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest excerpt of an unparsable error body kept in a [`SendError::Rejected`] reason.
const BODY_EXCERPT_CHARS: usize = 200;

/// The metric counting Graph API requests by `op` and `outcome`.
const REQUESTS_METRIC: &str = "salesboy_whatsapp_requests_total";

/// Opens [`CloudApiConnection`]s: one shared HTTP client, the Graph API base URL and a
/// per-request timeout.
#[derive(Debug, Clone)]
pub struct CloudApiConnector {
    client: reqwest::Client,
    base: Arc<str>,
    timeout: Duration,
}

impl CloudApiConnector {
    /// A connector for `base` (e.g. [`DEFAULT_BASE_URL`] or a fake's URL; a trailing `/` is
    /// ignored) whose requests each give up after [`DEFAULT_TIMEOUT`].
    ///
    /// The client must have been built after the process's rustls provider was installed
    /// (see [`super::http_client`]).
    pub fn new(client: reqwest::Client, base: impl Into<String>) -> Self {
        let base = base.into();
        Self {
            client,
            base: Arc::from(base.trim_end_matches('/')),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long one request (sending, then reading the whole response) may take.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The Graph API base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The same connection as [`WhatsAppConnector::connect`], with its concrete type.
    pub fn connection(&self, tenant: &TenantId, number: &WhatsAppNumber) -> CloudApiConnection {
        CloudApiConnection {
            client: self.client.clone(),
            messages_url: format!("{}/{}/messages", self.base, number.phone_number_id),
            tenant: tenant.clone(),
            phone_number_id: number.phone_number_id.clone(),
            token: number.access_token.clone(),
            timeout: self.timeout,
        }
    }
}

impl WhatsAppConnector for CloudApiConnector {
    fn connect(&self, tenant: &TenantId, number: &WhatsAppNumber) -> Arc<dyn WhatsAppConnection> {
        Arc::new(self.connection(tenant, number))
    }
}

/// One business number's Cloud API connection (stateless HTTP: "connecting" only binds the
/// number's id and token). Its `Debug` output shows the token as `[redacted]`.
#[derive(Debug, Clone)]
pub struct CloudApiConnection {
    client: reqwest::Client,
    messages_url: String,
    tenant: TenantId,
    phone_number_id: PhoneNumberId,
    token: AccessToken,
    timeout: Duration,
}

/// Which Graph API call a request is, for metrics and logs.
#[derive(Debug, Clone, Copy)]
enum Op {
    Send,
    MarkRead,
}

impl Op {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::MarkRead => "mark_read",
        }
    }
}

impl CloudApiConnection {
    /// The business number this connection sends from.
    pub fn phone_number_id(&self) -> &PhoneNumberId {
        &self.phone_number_id
    }

    /// Posts `body` to the messages endpoint; the response body on `2xx`, else the
    /// classified error (scrubbed of the token).
    async fn post(&self, body: &impl Serialize) -> Result<Vec<u8>, SendError> {
        let request = self
            .client
            .post(&self.messages_url)
            .bearer_auth(self.token.expose())
            .json(body);
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, retry_after, body.to_vec()))
        };
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(SendError::Transient(format!(
                "timed out after {} ms",
                self.timeout.as_millis()
            ))),
            Ok(Err(error)) => Err(transport_error(&error)),
            Ok(Ok((status, _, body))) if status.is_success() => Ok(body),
            Ok(Ok((status, retry_after, body))) => {
                Err(classify_send_error(status.as_u16(), retry_after, &body))
            }
        };
        result.map_err(|error| redact(error, self.token.expose()))
    }

    /// Posts a send request; the new message's wamid.
    async fn send(&self, request: &impl Serialize) -> Result<Wamid, SendError> {
        let result = async {
            let body = self.post(request).await?;
            let no_wamid = |reason: &str| SendError::Rejected {
                code: 200,
                reason: reason.to_owned(),
            };
            let response: SendMessageResponse = serde_json::from_slice(&body)
                .map_err(|_| no_wamid("accepted with an unparsable response"))?;
            response
                .wamid()
                .cloned()
                .ok_or_else(|| no_wamid("accepted without a message id"))
        }
        .await;
        self.record(Op::Send, &result);
        result
    }

    /// Counts and logs the outcome of one request.
    fn record<T>(&self, op: Op, result: &Result<T, SendError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) => {
                debug!(
                    tenant = %self.tenant,
                    phone_number_id = %self.phone_number_id,
                    op = op.as_str(),
                    error = %error,
                    "whatsapp request failed"
                );
                error.code()
            }
        };
        metrics::counter!(REQUESTS_METRIC, "op" => op.as_str(), "outcome" => outcome).increment(1);
    }
}

#[async_trait]
impl WhatsAppConnection for CloudApiConnection {
    async fn send_text(
        &self,
        to: &ChatId,
        body: &str,
        reply_to: Option<&Wamid>,
    ) -> Result<Wamid, SendError> {
        self.send(&SendTextRequest::new(to, body, reply_to)).await
    }

    async fn send_content(
        &self,
        to: &ChatId,
        content: &OutboundContent,
    ) -> Result<Wamid, SendError> {
        self.send(&SendContentRequest::new(to, content)).await
    }

    async fn mark_read(&self, message: &Wamid, typing: bool) -> Result<(), SendError> {
        let request = if typing {
            MarkReadRequest::read_with_typing(message)
        } else {
            MarkReadRequest::read(message)
        };
        let result = async {
            let body = self.post(&request).await?;
            // Meta answers `{"success":true}`; only an explicit `false` is a refusal.
            match serde_json::from_slice::<MarkReadResponse>(&body) {
                Ok(MarkReadResponse { success: false }) => Err(SendError::Rejected {
                    code: 200,
                    reason: "mark read not acknowledged".to_owned(),
                }),
                _ => Ok(()),
            }
        }
        .await;
        self.record(Op::MarkRead, &result);
        result
    }
}

/// Classifies a failed Graph API response (status, `Retry-After`, body) for the retry
/// policy; see the [module docs](self) for the table. Graph error codes are read with the
/// protocol's [`GraphErrorKind`]; codes it calls retryable are [`SendError::Transient`].
pub fn classify_send_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    if status == 401 {
        return SendError::AuthFailed;
    }
    let Ok(GraphErrorBody { error }) = serde_json::from_slice::<GraphErrorBody>(body) else {
        return classify_status(status, retry_after, body);
    };
    match error.kind() {
        GraphErrorKind::Auth => SendError::AuthFailed,
        GraphErrorKind::Throughput => SendError::Throttled { retry_after },
        GraphErrorKind::PairRate => SendError::PairRateLimited,
        GraphErrorKind::OutsideWindow => SendError::OutsideWindow,
        GraphErrorKind::Other(code) if status >= 500 || error.is_retryable() => {
            SendError::Transient(format!("graph error {code}: {}", error.message))
        }
        GraphErrorKind::Other(code) => SendError::Rejected {
            code,
            reason: error.message,
        },
    }
}

/// Classifies an error response without a Graph error body, by its HTTP status.
fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> SendError {
    match status {
        429 => SendError::Throttled { retry_after },
        408 | 500..=599 => SendError::Transient(format!("http status {status}")),
        _ => {
            let text = String::from_utf8_lossy(body);
            let text = excerpt(&text, BODY_EXCERPT_CHARS);
            SendError::Rejected {
                code: i64::from(status),
                reason: if text.is_empty() {
                    format!("http status {status}")
                } else {
                    format!("http status {status}: {text}")
                },
            }
        }
    }
}

/// A transport failure (no HTTP response): always [`SendError::Transient`].
fn transport_error(error: &reqwest::Error) -> SendError {
    SendError::Transient(super::transport_problem(error))
}

/// `Retry-After` in (possibly fractional) seconds; the HTTP-date form is not read.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let seconds: f64 = value.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Removes the token from the free-text parts of an error.
fn redact(error: SendError, token: &str) -> SendError {
    match error {
        SendError::Transient(reason) => SendError::Transient(scrub(&reason, token)),
        SendError::Rejected { code, reason } => SendError::Rejected {
            code,
            reason: scrub(&reason, token),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph_body(code: i64, message: &str) -> Vec<u8> {
        serde_json::json!({
            "error": {
                "message": message,
                "type": "OAuthException",
                "code": code,
                "error_data": {"messaging_product": "whatsapp", "details": "details"},
                "fbtrace_id": "AbC"
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn graph_codes_classify() {
        let delay = Some(Duration::from_secs(3));
        assert_eq!(
            classify_send_error(400, delay, &graph_body(130_429, "(#130429) Rate limit hit")),
            SendError::Throttled { retry_after: delay }
        );
        assert_eq!(
            classify_send_error(400, None, &graph_body(131_056, "pair")),
            SendError::PairRateLimited
        );
        assert_eq!(
            classify_send_error(400, None, &graph_body(131_047, "window")),
            SendError::OutsideWindow
        );
        assert_eq!(
            classify_send_error(400, None, &graph_body(190, "expired")),
            SendError::AuthFailed
        );
        assert_eq!(
            classify_send_error(401, None, &graph_body(100, "whatever")),
            SendError::AuthFailed
        );
        assert_eq!(
            classify_send_error(400, None, &graph_body(100, "(#100) Invalid parameter")),
            SendError::Rejected {
                code: 100,
                reason: "(#100) Invalid parameter".to_owned()
            }
        );
        assert!(matches!(
            classify_send_error(400, None, &graph_body(131_000, "Something went wrong")),
            SendError::Transient(_)
        ));
        assert!(matches!(
            classify_send_error(500, None, &graph_body(100, "oops")),
            SendError::Transient(_)
        ));
    }

    #[test]
    fn statuses_classify_without_a_graph_body() {
        assert_eq!(
            classify_send_error(401, None, b"<html>"),
            SendError::AuthFailed
        );
        assert!(matches!(
            classify_send_error(502, None, b"bad gateway"),
            SendError::Transient(_)
        ));
        assert!(matches!(
            classify_send_error(408, None, b""),
            SendError::Transient(_)
        ));
        assert_eq!(
            classify_send_error(429, Some(Duration::from_secs(1)), b""),
            SendError::Throttled {
                retry_after: Some(Duration::from_secs(1))
            }
        );
        assert_eq!(
            classify_send_error(404, None, b"not found"),
            SendError::Rejected {
                code: 404,
                reason: "http status 404: not found".to_owned()
            }
        );
    }

    #[test]
    fn redaction_scrubs_the_token() {
        let error = redact(
            SendError::Rejected {
                code: 100,
                reason: "bad token EAAGsecret".to_owned(),
            },
            "EAAGsecret",
        );
        assert!(!error.to_string().contains("EAAGsecret"));
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "2".parse().expect("header value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, "soon".parse().expect("header value"));
        assert_eq!(retry_after(&headers), None);
    }
}
