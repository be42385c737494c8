//! The admin API's OpenAPI 3 document and `GET /openapi.json`, which serves it.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::ErrorBody;

/// The admin API's OpenAPI 3 document: [`ApiDoc`]'s title, tags and security, and the
/// operations of every route, collected from the routes themselves under `/api`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document =
        ApiDoc::openapi().nest("/api", super::api(super::Guards::none()).into_openapi());
    ParameterRules.modify(&mut document);
    ExactlyOneContent.modify(&mut document);
    document
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

/// What the handlers check of the parameters every route shares, written into their
/// schemas (so clients and fuzzers such as schemathesis know what is valid): ids as
/// [`salesboy_protocol::ids`] validates them, `limit` 1 to 1000, `month` as YYYY-MM.
struct ParameterRules;

/// A tenant, chat or node id (`{id}`, `{wa_id}`, `{node_id}`, `after`): ASCII letters,
/// digits, `_` and `-`, 1 to 64.
const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// A month `YYYY-MM` of the years 1970 to 9999 ([`salesboy_protocol::month::Month`]).
const MONTH_PATTERN: &str = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$";

impl Modify for ParameterRules {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                constrain(operation);
            }
        }
    }
}

fn constrain(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let Some(utoipa::openapi::RefOr::T(Schema::Object(schema))) = &mut parameter.schema else {
            continue;
        };
        match (&parameter.parameter_in, parameter.name.as_str()) {
            (ParameterIn::Path, "id" | "wa_id" | "node_id") | (ParameterIn::Query, "after") => {
                schema.pattern = Some(ID_PATTERN.to_owned());
            }
            (ParameterIn::Query, "limit") => {
                schema.minimum = Some(1.into());
                schema.maximum = Some(1000.into());
            }
            (ParameterIn::Query, "month") => {
                schema.pattern = Some(MONTH_PATTERN.to_owned());
            }
            _ => {}
        }
    }
}

/// Says in the document what the handler checks of a send: exactly one of its contents is
/// given (not `null`). The `SendRequest` schema becomes `allOf` itself and a `oneOf` whose
/// branches each require one content.
struct ExactlyOneContent;

/// The contents of a send, each with its JSON type.
const SEND_CONTENTS: [(&str, Type); 5] = [
    ("text", Type::String),
    ("template", Type::Object),
    ("interactive", Type::Object),
    ("image", Type::Object),
    ("document", Type::Object),
];

impl Modify for ExactlyOneContent {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else {
            return;
        };
        let Some(request) = schemas.remove("SendRequest") else {
            return;
        };
        let one_content =
            SEND_CONTENTS
                .into_iter()
                .fold(OneOfBuilder::new(), |one_of, (field, kind)| {
                    one_of.item(
                        ObjectBuilder::new()
                            .required(field)
                            .property(field, ObjectBuilder::new().schema_type(kind)),
                    )
                });
        let both = AllOfBuilder::new().item(request).item(one_content).build();
        schemas.insert("SendRequest".to_owned(), Schema::AllOf(both).into());
    }
}
