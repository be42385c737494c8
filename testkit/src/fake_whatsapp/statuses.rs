//! Status webhooks: after an accepted send, the fake posts the configured statuses back to
//! the gateway, signed as Meta signs them, trying each target in turn.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::header;
use salesboy_protocol::whatsapp::signature::{SIGNATURE_HEADER, sign};

use super::{FakeState, StatusWebhooks};
use crate::fake_server::pause;

/// Posts the configured statuses of one accepted send back to the gateway, signed.
pub(super) async fn post_statuses(
    state: Arc<FakeState>,
    webhooks: StatusWebhooks,
    phone_number_id: String,
    recipient: String,
    wamid: String,
) {
    for status in &webhooks.statuses {
        if !pause(webhooks.delay, &state.shutdown).await {
            return;
        }
        let body = crate::webhooks::status(&phone_number_id, &recipient, &wamid, status)
            .to_string()
            .into_bytes();
        let signature = sign(webhooks.app_secret.as_bytes(), &body);
        let targets = state.status_targets.read().clone();
        let first = state.status_next.fetch_add(1, Ordering::Relaxed);
        let mut delivered = false;
        for attempt in 0..targets.len() as u64 {
            let index = usize::try_from((first + attempt) % targets.len() as u64).unwrap_or(0);
            let answer = state
                .http
                .post(&targets[index])
                .header(SIGNATURE_HEADER, &signature)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                delivered = true;
                break;
            }
        }
        let counter = if delivered {
            &state.status_delivered
        } else {
            &state.status_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
