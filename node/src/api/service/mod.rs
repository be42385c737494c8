//! The NATS micro service `salesboy`: every node with a NATS connection registers it (one
//! queue group for all nodes, so each request is answered once), with one endpoint per
//! [`ApiCommand`]. `$SRV.PING.salesboy`, `$SRV.INFO.salesboy` and `$SRV.STATS.salesboy`
//! answer through async-nats's `service` API.
//!
//! Requests and answers are JSON. An error answers the micro error headers
//! (`Nats-Service-Error`: the message; `Nats-Service-Error-Code`: the HTTP-like status) and
//! the body `{"error": {"code": "<snake_case>", "message": "<text>"}}`. The commands
//! themselves are in `commands`; subjects come from `salesboy_protocol::subjects`.

mod commands;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE, ServiceExt};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use salesboy_protocol::subjects::{self, ApiCommand, SERVICE_NAME, SERVICE_QUEUE_GROUP};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Api, ApiError};
use crate::background::Background;

/// How long [`start`] waits for the server to confirm the endpoints' subscriptions.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// The service's description in `$SRV.INFO`.
const DESCRIPTION: &str = "Salesboy gateway: tenants, knowledge, conversations, cluster";

/// Why the service could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// async-nats refused the service or an endpoint (bad version, connection closed).
    #[error("registering the nats service: {0}")]
    Register(String),
    /// The server did not confirm the subscriptions in time.
    #[error("the nats server did not confirm the service's subscriptions within {0:?}")]
    Unconfirmed(Duration),
}

/// Registers the service `salesboy`, version `version`, on `client`, answering with `api`.
/// When this returns, every endpoint is subscribed at the server. Requests are answered on
/// `background`; cancelling its token stops the service (the requests under way finish,
/// and the endpoints are unsubscribed at the server before its task ends).
pub async fn start(
    client: async_nats::Client,
    api: Api,
    version: &str,
    background: &Background,
) -> Result<(), ServiceError> {
    let register = |e: async_nats::Error| ServiceError::Register(e.to_string());
    let service = client
        .service_builder()
        .description(DESCRIPTION)
        .queue_group(SERVICE_QUEUE_GROUP)
        .start(SERVICE_NAME, version)
        .await
        .map_err(register)?;
    let mut endpoints: Vec<BoxStream<'static, (ApiCommand, async_nats::service::Request)>> =
        Vec::with_capacity(ApiCommand::ALL.len());
    for command in ApiCommand::ALL {
        let endpoint = service
            .endpoint_builder()
            .name(command.as_str().replace('.', "_"))
            .add(subjects::api_endpoint(command))
            .await
            .map_err(register)?;
        endpoints.push(endpoint.map(move |request| (command, request)).boxed());
    }
    confirm(&client).await?;
    info!(
        service = SERVICE_NAME,
        version,
        endpoints = endpoints.len(),
        "nats service api ready"
    );
    let mut requests = stream::select_all(endpoints);
    let token = background.token().clone();
    let tasks = background.clone();
    background.spawn(async move {
        loop {
            let next = tokio::select! {
                biased;
                () = token.cancelled() => break,
                next = requests.next() => next,
            };
            let Some((command, request)) = next else {
                break;
            };
            tasks.spawn(answer(api.clone(), command, request));
        }
        // Dropping the endpoints unsubscribes them; stopping the service ends PING/INFO/STATS.
        drop(requests);
        if let Err(e) = service.stop().await {
            warn!(error = %e, "nats service did not stop cleanly");
        }
        // Once the server has the unsubscriptions, no request is routed here any more.
        if client.connection_state() == async_nats::connection::State::Connected
            && let Err(e) = confirm(&client).await
        {
            debug!(error = %e, "nats service unsubscriptions not confirmed");
        }
        info!(service = SERVICE_NAME, "nats service api stopped");
    });
    Ok(())
}

/// Carries out one request and answers it.
async fn answer(api: Api, command: ApiCommand, request: async_nats::service::Request) {
    let subject = request.message.subject.to_string();
    let outcome = commands::run(&api, command, &subject, &request.message.payload).await;
    let (headers, body) = match outcome {
        Ok(body) => (HeaderMap::new(), Bytes::from(body)),
        Err(error) => {
            if error.status() >= 500 {
                warn!(command = command.as_str(), error = %error, "service request failed");
            } else {
                debug!(command = command.as_str(), error = %error, "service request refused");
            }
            error_answer(&error)
        }
    };
    if let Err(e) = request.respond_with_headers(Ok(body), headers).await {
        debug!(command = command.as_str(), error = %e, "service answer not sent");
    }
}

/// The headers and body of an error answer.
fn error_answer(error: &ApiError) -> (HeaderMap, Bytes) {
    let message = error.to_string();
    let mut headers = HeaderMap::new();
    // A header value is one line.
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(NATS_SERVICE_ERROR, line.as_str());
    headers.insert(NATS_SERVICE_ERROR_CODE, error.status().to_string().as_str());
    let body = json!({"error": {"code": error.code(), "message": message}});
    (headers, Bytes::from(body.to_string()))
}

/// Returns once the server has processed the subscriptions sent so far: the client sends
/// itself a message through the server and waits for it.
async fn confirm(client: &async_nats::Client) -> Result<(), ServiceError> {
    let register = |e: &dyn std::fmt::Display| ServiceError::Register(e.to_string());
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| register(&e))?;
    client
        .publish(inbox, Bytes::new())
        .await
        .map_err(|e| register(&e))?;
    match tokio::time::timeout(CONFIRM_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ServiceError::Register("connection closed".to_owned())),
        Err(_) => Err(ServiceError::Unconfirmed(CONFIRM_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_answer_carries_code_status_and_message() {
        let error = ApiError::invalid("to", "chat id is empty\nsecond line");
        let (headers, body) = error_answer(&error);
        assert_eq!(
            headers.get(NATS_SERVICE_ERROR).map(|v| v.as_str()),
            Some("to: chat id is empty second line")
        );
        assert_eq!(
            headers.get(NATS_SERVICE_ERROR_CODE).map(|v| v.as_str()),
            Some("400")
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_field");
        assert_eq!(
            body["error"]["message"],
            "to: chat id is empty\nsecond line"
        );
    }
}
