//! The real adapters behind the actors' ports: the WhatsApp Cloud API client and the LLM
//! providers (Gemini, OpenAI-compatible), all over one shared `reqwest` client.
//!
//! - [`whatsapp`]: [`CloudApiConnector`] (a [`WhatsAppConnector`]) and the Graph API error
//!   classification [`classify_send_error`];
//! - [`llm`]: the tenants' provider configuration ([`llm::parse_llm_config`]), the
//!   [`GeminiProvider`] and [`OpenAiProvider`], and [`HttpLlmFactory`] (an
//!   [`LlmProviderFactory`]);
//! - [`embedding`]: the embedding providers (Gemini `embedContent` /
//!   `batchEmbedContents`, OpenAI-compatible `/embeddings`) and their fallback chain;
//! - `web` (cargo feature `web-engine`): `WhatsAppWebConnector`, the WhatsApp Web engine
//!   (`whatsapp-rust`) behind the session actor's `WebConnector`.
//!
//! Secrets (access tokens, API keys) only ever leave the process in request headers: no
//! error, log line or `Debug` output carries them.
//!
//! [`WhatsAppConnector`]: salesboy_actors::ports::WhatsAppConnector
//! [`LlmProviderFactory`]: salesboy_actors::ports::LlmProviderFactory

use std::time::Duration;

pub mod embedding;
pub mod llm;
#[cfg(feature = "web-engine")]
pub mod web;
pub mod whatsapp;

pub use llm::{GeminiProvider, HttpLlmFactory, OpenAiProvider};
#[cfg(feature = "web-engine")]
pub use web::WhatsAppWebConnector;
pub use whatsapp::{CloudApiConnection, CloudApiConnector, classify_send_error};

/// Checks a URL the node sends secrets or tenants' data to (an LLM provider's `base_url`, an
/// events webhook): absolute, with a host, `https://`; plain `http://` only to a loopback
/// host (`localhost`, 127.0.0.0/8, `::1`: local fakes and sidecars), so keys and customers'
/// messages never cross a network in the clear. The error says what is wrong, without the
/// URL.
pub fn secure_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid url ({e})"))?;
    let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
        return Err("must name a host".into());
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("must be an https:// url (http:// only to a loopback host)".into()),
        _ => Err("must be an https:// url".into()),
    }
}

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long establishing a TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client the adapters share: installs the process's rustls crypto provider first
/// (reqwest is built without one), pools connections, bounds connection set-up. Per-request
/// deadlines are the adapters' own.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::run::install_crypto_provider();
    reqwest::Client::builder()
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("salesboy/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Replaces every occurrence of `secret` in `text` with `[redacted]`: a last guard so that a
/// server echoing a credential back cannot put it into our errors.
pub(crate) fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "[redacted]")
}

/// At most `max` characters of `text`, on a character boundary, with `…` when cut.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What went wrong with a request that got no HTTP response, with its cause: `timed out`,
/// `connection failed`, `reading the response failed` or `request failed`.
pub(crate) fn transport_problem(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(source) => format!("{what}: {source}"),
        None => what.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(
            scrub("bad token abc in abc", "abc"),
            "bad token [redacted] in [redacted]"
        );
        assert_eq!(scrub("nothing", ""), "nothing");
    }

    #[test]
    fn excerpts_cut_on_characters() {
        assert_eq!(excerpt("  héllo ", 2), "hé…");
        assert_eq!(excerpt("hi", 5), "hi");
    }
}
