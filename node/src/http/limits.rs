//! The limits of a listener, and [`serve`], which serves a router under them.
//!
//! A request that takes longer than [`HttpLimits::request_timeout`] (reading its body
//! included) is answered 408 and its handler dropped; one that arrives while
//! [`HttpLimits::max_concurrent`] are being served is answered 503 with `Retry-After` at
//! once (shed, never queued). Each listener has its own limits, so a flood on the public
//! webhook leaves the admin listener room.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::warn;

/// A listener's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long one request may take (`http_request_timeout_ms`).
    pub request_timeout: Duration,
    /// Requests served at once (`http_max_concurrent_requests`).
    pub max_concurrent: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            max_concurrent: 1024,
        }
    }
}

/// `router` under `limits`.
pub fn limited(router: Router, limits: HttpLimits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::new(limits.max_concurrent))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            )),
    )
}

/// The answer to a request shed for the concurrency limit.
async fn overloaded(error: tower::BoxError) -> Response {
    metrics::counter!("salesboy_http_requests_shed_total").increment(1);
    warn!(%error, "http request shed: too many requests under way");
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": "too many requests under way, retry later" })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Serves `router` under `limits` on `listener` (handlers see the client's address) until
/// `stopped` is cancelled; then stops accepting and finishes the requests under way.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    stopped: CancellationToken,
) {
    let app = limited(router, limits).into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
    if let Err(e) = serve.await {
        warn!(error = %e, "http server stopped with an error");
    }
}
