//! The admin API's OpenAPI 3 document and `GET /openapi.json`, which serves it.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;

/// The admin API's OpenAPI 3 document: [`ApiDoc`]'s title, tags and security, and the
/// operations of every route, collected from the routes themselves under `/api`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi().nest("/api", super::api(super::Guards::none()).into_openapi())
}

/// The document, built once.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);

/// The route of this module, documented.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(openapi_json))
}

/// This document (no token needed).
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta",
    security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&*DOCUMENT)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Salesboy admin API",
        description = "Tenants, knowledge, conversations, usage and the cluster of a Salesboy gateway. \
            Every route but this document needs `Authorization: Bearer <token>`: the admin token \
            reaches every route, a tenant's API token (`sbt_…`, made with `POST /api/tenants/{id}/tokens`) \
            only the routes under `/api/tenants/{its id}` but `/tokens` (403 elsewhere)."
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    tags(
        (name = "tenants", description = "businesses and their WhatsApp numbers"),
        (name = "knowledge", description = "the documents the assistant answers from"),
        (name = "conversations", description = "chat logs, bot pause and resume, owner sends"),
        (name = "usage", description = "a tenant's LLM tokens and cost, messages in and out"),
        (name = "webhooks", description = "HTTP event webhooks and their dead letters"),
        (name = "rejected", description = "items of Meta's webhook deliveries that could not be read"),
        (name = "tokens", description = "a tenant's API tokens (admin token only)"),
        (name = "cluster", description = "the gateway's nodes"),
        (name = "meta", description = "this document"),
    )
)]
struct ApiDoc;

/// Declares the `admin_token` bearer scheme the document's security requirement names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the node's admin token: SALESBOY_ADMIN_TOKEN, or the file \
                         admin-token in the data dir",
                    ))
                    .build(),
            ),
        );
    }
}
