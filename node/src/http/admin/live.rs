//! The dashboard's live feeds, as server-sent events (`text/event-stream`), and who a token
//! is:
//! - `GET /me`: the caller, `{"role": "operator"}` or `{"role": "tenant", "tenant": …}`;
//! - `GET /cluster/stream` (admin token): every second a `snapshot` (the cluster view, this
//!   node's health and monitoring figures, the last second's traffic), and a `timeline` event for each join,
//!   departure, migration, alert, session change and rejected delivery;
//! - `GET /tenants/{id}/stream`: every second a `snapshot` (where the tenant runs, why, and
//!   its session, its last second's traffic), and an `event` for each of its events.
//!
//! Traffic is counted from the events the node watches ([`crate::events::live`]), so on
//! NATS every node's stream shows the whole cluster's. A stream ends when the node stops,
//! and a tenant token's stream when the token is revoked or the tenant deleted (checked
//! every 10 s). A caller holds at most [`MAX_STREAMS_PER_CALLER`] streams on a node, a node
//! serves at most [`MAX_STREAMS`] (429 `too_many_streams` beyond).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{BoxStream, Stream, StreamExt};
use salesboy_actors::responder::chain::ProviderStatus;
use salesboy_protocol::TenantId;
use salesboy_protocol::events::Event;
use serde::Serialize;
use tracing::debug;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::bearer_token;
use super::error::{TenantRefusals, TokenRefusal};
use super::{AppState, Caller, tenant_id};
use crate::api::ApiError;
use crate::api::live::{NodeFigures, Pulse, PulseSecond, on_timeline};
use crate::api::tenants::SessionStatusView;
use crate::cluster::placement::PlacementDecision;
use crate::cluster::status::ClusterStatus;
use crate::http::health::Health;

/// How often a stream sends a snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);
/// How often a tenant token's stream checks that the token is still valid: a revoked token
/// (or a deleted tenant) ends its streams within this time.
const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// Most streams one caller (the operator, or one tenant's tokens) may hold open on a node.
pub const MAX_STREAMS_PER_CALLER: usize = 8;
/// Most streams a node serves at once.
pub const MAX_STREAMS: usize = 256;

/// The live streams a node serves, by caller: bounded per caller and in all.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: parking_lot::Mutex<std::collections::HashMap<String, usize>>,
}

impl StreamSlots {
    /// A slot for one more stream of `caller`, or 429 when it (or the node) has as many as
    /// it may.
    fn claim(self: &Arc<Self>, caller: String) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock();
        let total: usize = open.values().sum();
        let mine = open.get(&caller).copied().unwrap_or(0);
        if mine >= MAX_STREAMS_PER_CALLER || total >= MAX_STREAMS {
            return Err(ApiError::TooManyStreams(format!(
                "too many live streams open ({mine} of {MAX_STREAMS_PER_CALLER} for this caller, \
                 {total} of {MAX_STREAMS} on this node): close one"
            )));
        }
        *open.entry(caller.clone()).or_insert(0) += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            caller,
        })
    }
}

/// One open stream's slot, given back when the stream ends.
struct StreamSlot {
    slots: Arc<StreamSlots>,
    caller: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// The routes any valid token reaches.
pub(super) fn caller_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(me))
}

/// The operator's stream.
pub(super) fn operator_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(cluster_stream))
}

/// A tenant's stream.
pub(super) fn tenant_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(tenant_stream))
}

/// Who a token is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "role", rename_all = "snake_case")]
pub(super) enum CallerView {
    /// The admin token: every route.
    Operator,
    /// A tenant's API token: the routes under `/api/tenants/{tenant}`.
    Tenant {
        /// Its tenant.
        tenant: String,
    },
}

/// Who the request's token is (the dashboard's login).
#[utoipa::path(
    get, path = "/me", tag = "meta",
    responses(
        (status = 200, description = "the caller", body = CallerView),
        TokenRefusal,
    )
)]
pub(super) async fn me(caller: Caller) -> Json<CallerView> {
    Json(match caller {
        Caller::Admin => CallerView::Operator,
        Caller::Tenant(tenant) => CallerView::Tenant {
            tenant: tenant.to_string(),
        },
    })
}

/// A `snapshot` of the cluster stream.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ClusterSnapshot {
    /// When it was taken (unix ms).
    at_ms: i64,
    /// The cluster's nodes.
    cluster: ClusterStatus,
    /// The node that answers.
    node: Health,
    /// The monitoring figures of the node that answers, read every 5 s (shared by the
    /// node's streams).
    figures: NodeFigures,
    /// The whole cluster's traffic in the last second.
    pulse: PulseSecond,
}

/// A `snapshot` of a tenant's stream.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TenantSnapshot {
    /// When it was taken (unix ms).
    at_ms: i64,
    /// Where it runs and its session.
    session: SessionStatusView,
    /// Why it runs there: the last placement decision about it, with the candidates' load
    /// at the time; `null` before the first one was recorded (or on a node alone).
    placement: Option<PlacementDecision>,
    /// Its LLM providers' circuits and per-minute budgets, when the node that answers hosts
    /// it (`null` otherwise).
    #[schema(value_type = Option<Vec<Object>>)]
    providers: Option<Vec<ProviderStatus>>,
    /// Its traffic in the last second.
    pulse: PulseSecond,
}

/// The cluster, live: a `snapshot` every second (`ClusterSnapshot`) and a `timeline` event
/// (an event as the events stream carries it) for each join, departure, migration, alert,
/// session change and rejected delivery.
#[utoipa::path(
    get, path = "/cluster/stream", tag = "cluster",
    responses(
        (status = 200, description = "server-sent events until the node stops", content_type = "text/event-stream", body = ClusterSnapshot),
        TokenRefusal,
        (status = 503, description = "the node cannot watch the cluster's events", body = super::error::ErrorBody),
    )
)]
pub(super) async fn cluster_stream(
    State(state): State<AppState>,
) -> Result<impl IntoResponse, ApiError> {
    let slot = state.streams.claim("operator".to_owned())?;
    let events = watch(&state, None).await?;
    Ok(sse(live(state, events, Scope::Cluster, slot, None)))
}

/// One tenant, live: a `snapshot` every second (`TenantSnapshot`) and an `event` for each of
/// its events.
#[utoipa::path(
    get, path = "/tenants/{id}/stream", tag = "tenants",
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "server-sent events until the node stops", content_type = "text/event-stream", body = TenantSnapshot),
        TenantRefusals,
    )
)]
pub(super) async fn tenant_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = tenant_id("id", id)?;
    state.api().existing_tenant(&tenant).await?;
    // A tenant's token is checked again while its stream runs (it may be revoked).
    let (key, recheck) = match caller {
        Caller::Admin => ("operator".to_owned(), None),
        Caller::Tenant(of) => (
            format!("tenant:{of}"),
            bearer_token(&headers).map(str::to_owned),
        ),
    };
    let slot = state.streams.claim(key)?;
    let events = watch(&state, Some(&tenant)).await?;
    Ok(sse(live(
        state,
        events,
        Scope::Tenant(tenant),
        slot,
        recheck,
    )))
}

/// The events to watch, or 503.
async fn watch(
    state: &AppState,
    tenant: Option<&TenantId>,
) -> Result<BoxStream<'static, Event>, ApiError> {
    state
        .live
        .subscribe(tenant)
        .await
        .map_err(|e| ApiError::Unavailable(format!("watching the events: {e}")))
}

/// A stream of server-sent events, with keep-alive comments, that proxies pass on as it
/// comes (`X-Accel-Buffering: no`).
fn sse<S>(stream: S) -> impl IntoResponse
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    (
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
}

/// What a stream is about.
enum Scope {
    Cluster,
    Tenant(TenantId),
}

/// The state of one stream.
struct Live {
    state: AppState,
    events: BoxStream<'static, Event>,
    scope: Scope,
    /// Held while the stream runs.
    _slot: StreamSlot,
    /// A tenant's token, checked every [`RECHECK_EVERY`].
    recheck: Option<String>,
    /// When the token is next checked.
    recheck_due: tokio::time::Instant,
    /// Whether the stream must end (its token or tenant is gone).
    ended: bool,
    tick: tokio::time::Interval,
    pulse: Pulse,
}

/// A stream's server-sent events: snapshots on a timer, events as they come; ends when the
/// node stops or the events end.
fn live(
    state: AppState,
    events: BoxStream<'static, Event>,
    scope: Scope,
    slot: StreamSlot,
    recheck: Option<String>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let live = Live {
        state,
        events,
        scope,
        _slot: slot,
        recheck,
        recheck_due: tokio::time::Instant::now() + RECHECK_EVERY,
        ended: false,
        tick,
        pulse: Pulse::default(),
    };
    futures::stream::unfold(live, |mut live| async move {
        let stopping = live.state.stopping.clone();
        loop {
            let next = tokio::select! {
                biased;
                () = stopping.cancelled() => return None,
                _ = live.tick.tick() => live.snapshot().await,
                event = live.events.next() => {
                    let event = event?;
                    live.pulse.observe(&event);
                    live.forward(&event)
                }
            };
            if live.ended {
                return None;
            }
            if let Some(next) = next {
                return Some((Ok(next), live));
            }
        }
    })
}

impl Live {
    /// The snapshot of this stream's scope, now.
    async fn snapshot(&mut self) -> Option<SseEvent> {
        let at_ms = self.state.node.services().clock.now_ms();
        let pulse = self.pulse.take_second();
        let event = match &self.scope {
            Scope::Cluster => {
                let api = self.state.api();
                SseEvent::default()
                    .event("snapshot")
                    .json_data(ClusterSnapshot {
                        at_ms,
                        cluster: crate::api::cluster::status(&api),
                        node: crate::http::health::health(&self.state).await,
                        figures: self.state.figures.current(&api).await,
                        pulse,
                    })
            }
            Scope::Tenant(tenant) => {
                let tenant = tenant.clone();
                let tenant = &tenant;
                if !self.still_allowed(tenant).await {
                    self.ended = true;
                    return None;
                }
                let session =
                    match crate::api::tenants::session_status(&self.state.api(), tenant).await {
                        Ok(session) => session,
                        Err(ApiError::UnknownTenant(_)) => {
                            self.ended = true;
                            return None;
                        }
                        Err(e) => {
                            debug!(error = %e, "tenant snapshot skipped");
                            return None;
                        }
                    };
                let mut placement = self
                    .state
                    .sql
                    .placement_decision(tenant)
                    .await
                    .inspect_err(|e| debug!(error = %e, "placement decision not read"))
                    .ok()
                    .flatten();
                if self.recheck.is_some()
                    && let Some(placement) = &mut placement
                {
                    // The other nodes' load is the operator's to see, not a tenant's.
                    placement.candidates.clear();
                }
                let providers = self
                    .state
                    .node
                    .observe_tenant(tenant)
                    .await
                    .and_then(|snapshot| snapshot.responder)
                    .map(|responder| responder.providers);
                SseEvent::default()
                    .event("snapshot")
                    .json_data(TenantSnapshot {
                        at_ms,
                        session,
                        placement,
                        providers,
                        pulse,
                    })
            }
        };
        event
            .inspect_err(|e| debug!(error = %e, "snapshot not encoded"))
            .ok()
    }

    /// Whether a tenant token's stream may go on: its token still designates `tenant`
    /// (checked every [`RECHECK_EVERY`]; a database that does not answer keeps it going).
    async fn still_allowed(&mut self, tenant: &TenantId) -> bool {
        let Some(token) = &self.recheck else {
            return true;
        };
        let now = tokio::time::Instant::now();
        if now < self.recheck_due {
            return true;
        }
        self.recheck_due = now + RECHECK_EVERY;
        match crate::api::tokens::tenant_of(self.state.tokens.as_ref(), token).await {
            Ok(Some(of)) => of == *tenant,
            Ok(None) => false,
            Err(e) => {
                debug!(error = %e, "stream token not checked again");
                true
            }
        }
    }

    /// `event` as this stream sends it, if it sends it.
    fn forward(&self, event: &Event) -> Option<SseEvent> {
        let name = match self.scope {
            Scope::Cluster if on_timeline(event) => "timeline",
            Scope::Cluster => return None,
            Scope::Tenant(_) => "event",
        };
        SseEvent::default()
            .event(name)
            .id(event.id.clone())
            .json_data(event)
            .inspect_err(|e| debug!(error = %e, "event not encoded"))
            .ok()
    }
}
