//! Linking a `web` tenant's number (docs/engines.md): its QR code as text and as an SVG image
//! (`session.qr`), an 8-character pairing code for a phone number (`session.pair_code`), and
//! unlinking the device (`session.logout`). Each reaches the session wherever the tenant is
//! hosted (activating it if it is hosted nowhere), through the router.

use std::time::Duration;

use salesboy_actors::command::{CommandReply, TenantCommand};
use salesboy_actors::error::TenantError;
use salesboy_actors::session::WebView;
use salesboy_protocol::{Engine, TenantId};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use super::tenants::{SessionStatusView, session_status};
use super::{Api, ApiError};
use crate::cluster::RouteError;

/// How long `session.qr` waits for a connecting session's first QR code.
const QR_WAIT: Duration = Duration::from_secs(15);

/// How often `session.qr` looks again while it waits.
const QR_POLL: Duration = Duration::from_millis(200);

/// A QR code to link a `web` tenant's number (`session.qr`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QrView {
    /// The tenant's id.
    pub tenant: String,
    /// The text the QR code encodes (scan it in WhatsApp, *Linked devices*).
    pub qr: String,
    /// Until when it may be scanned (unix ms); the next one replaces it.
    pub qr_expires_ms: Option<i64>,
    /// The QR code as an SVG image.
    pub svg: String,
}

/// A phone number to link by pairing code (`session.pair_code`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairCodeRequest {
    /// The account's phone number, international format, digits only (no `+`).
    #[schema(example = "2348012345678", pattern = "^[0-9]{8,15}$")]
    pub phone: String,
}

/// An 8-character pairing code (`session.pair_code`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PairCodeView {
    /// The tenant's id.
    pub tenant: String,
    /// The code to type on the phone (WhatsApp, *Linked devices*, *Link with phone number*).
    #[schema(example = "K7QX2M9P")]
    pub code: String,
}

/// The QR code linking the tenant's device: the current one, or the first of a session that
/// starts pairing now (codes that ran out, or a device unlinked, start again). `409
/// already_paired` when the device is linked.
pub async fn qr(api: &Api, id: &TenantId) -> Result<QrView, ApiError> {
    web_tenant(api, id).await?;
    let deadline = tokio::time::Instant::now() + QR_WAIT;
    loop {
        let view = match deliver(api, id, TenantCommand::WebPair).await? {
            CommandReply::Web(view) => view,
            other => return Err(unexpected(&other)),
        };
        if let Some(account) = view.account.as_ref().filter(|_| view.pairing.is_none()) {
            return Err(ApiError::AlreadyPaired(format!(
                "the device of tenant {id} is linked to {account}: session.logout unlinks it"
            )));
        }
        if let Some((qr, expires_ms)) = current_qr(&view) {
            let svg = svg(&qr)?;
            return Ok(QrView {
                tenant: id.to_string(),
                qr,
                qr_expires_ms: expires_ms,
                svg,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(format!(
                "no QR code from WhatsApp within {QR_WAIT:?}: the session of tenant {id} is \
                 still connecting; ask again"
            )));
        }
        tokio::time::sleep(QR_POLL).await;
    }
}

/// An 8-character pairing code linking the tenant's device to the account of `phone`.
pub async fn pair_code(
    api: &Api,
    id: &TenantId,
    request: PairCodeRequest,
) -> Result<PairCodeView, ApiError> {
    let phone = phone(request.phone)?;
    web_tenant(api, id).await?;
    match deliver(api, id, TenantCommand::WebPairCode { phone }).await? {
        CommandReply::PairCode(code) => {
            info!(tenant = %id, "pairing code issued");
            Ok(PairCodeView {
                tenant: id.to_string(),
                code,
            })
        }
        other => Err(unexpected(&other)),
    }
}

/// Unlinks the tenant's device (the phone's list of linked devices forgets it); pairing
/// again is needed. Answers the session status.
pub async fn logout(api: &Api, id: &TenantId) -> Result<SessionStatusView, ApiError> {
    web_tenant(api, id).await?;
    deliver(api, id, TenantCommand::WebLogout).await?;
    info!(tenant = %id, "web device unlinked");
    session_status(api, id).await
}

/// The tenant, if it exists and its engine is `web`.
async fn web_tenant(api: &Api, id: &TenantId) -> Result<(), ApiError> {
    let tenant = api.existing_tenant(id).await?;
    if tenant.engine != Engine::Web {
        return Err(ApiError::NotWeb(format!(
            "tenant {id} uses the {} engine: only a web tenant is paired",
            tenant.engine
        )));
    }
    Ok(())
}

/// Routes a pairing command; a refusal of the session comes back as its own error.
async fn deliver(
    api: &Api,
    id: &TenantId,
    command: TenantCommand,
) -> Result<CommandReply, ApiError> {
    api.router
        .deliver(id, command)
        .await
        .map_err(|error| match error {
            RouteError::Refused(TenantError::Web(error)) => ApiError::Web(error),
            other => ApiError::Route(other),
        })
}

fn current_qr(view: &WebView) -> Option<(String, Option<i64>)> {
    let pairing = view.pairing.as_ref()?;
    Some((pairing.qr.clone()?, pairing.qr_expires_ms))
}

/// A phone number as WhatsApp takes it: 8 to 15 digits (a leading `+`, spaces and dashes are
/// dropped).
fn phone(raw: String) -> Result<String, ApiError> {
    let digits: String = raw
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(ApiError::invalid(
            "phone",
            "must be a phone number in international format: 8 to 15 digits",
        ))
    }
}

/// The QR code of `text` as an SVG image.
pub fn svg(text: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|error| ApiError::Internal(format!("the QR code cannot be drawn: {error}")))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .build())
}

fn unexpected(reply: &CommandReply) -> ApiError {
    ApiError::Internal(format!("the session answered {reply:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_digits_in_international_format() {
        assert_eq!(phone("+234 801-234-5678".into()).unwrap(), "2348012345678");
        for bad in ["", "+234", "2348012345678901234", "23480abc5678"] {
            let error = phone(bad.into()).unwrap_err();
            assert!(error.to_string().starts_with("phone: "), "{bad}: {error}");
        }
    }

    #[test]
    fn a_qr_code_is_drawn_as_svg() {
        let image = svg("2@AbCd,EfGh,IjKl,MnOp").unwrap();
        assert!(image.starts_with("<?xml"), "{image}");
        assert!(image.contains("<svg") && image.contains("</svg>"));
    }
}
