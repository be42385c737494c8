//! The admin API's OpenAPI 3 document and `GET /openapi.json`, which serves it.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{cluster, conversations, knowledge, tenants};

/// The admin API's OpenAPI 3 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document (no token needed).
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "meta",
    security(()),
    responses((status = 200, description = "the OpenAPI 3 document", content_type = "application/json"))
)]
pub(super) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Salesboy admin API",
        description = "Tenants, knowledge, conversations and the cluster of a Salesboy gateway. \
            Every route but this document needs `Authorization: Bearer <admin token>`."
    ),
    paths(
        openapi_json,
        tenants::list_tenants,
        tenants::upsert_tenant,
        tenants::show_tenant,
        knowledge::list_knowledge,
        knowledge::add_knowledge,
        knowledge::delete_knowledge,
        conversations::messages,
        conversations::pause,
        conversations::resume,
        conversations::send,
        cluster::cluster,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    tags(
        (name = "tenants", description = "businesses and their WhatsApp numbers"),
        (name = "knowledge", description = "the documents the assistant answers from"),
        (name = "conversations", description = "chat logs, bot pause and resume, owner sends"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::admin::ROUTES;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = serde_json::to_value(openapi()).expect("the document serialises");
        let mut documented: Vec<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "patch" | "delete"))
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        documented.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
