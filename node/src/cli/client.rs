//! A small client of a running node's admin API: where the node is, its bearer token, and
//! JSON requests whose error answers become errors carrying the API's message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::ADMIN_TOKEN_FILE;
use crate::config::Config;

/// How long one admin request may take (knowledge uploads included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin API refused a request (a non-2xx answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node answered {status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The API's `error` message (or the raw body when it is not the usual JSON).
    pub message: String,
}

/// A client of one node's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base_url: String,
    token: SecretString,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the node at `base_url` (`http://127.0.0.1:8080`) with its admin token.
    pub fn new(base_url: &str, token: SecretString) -> anyhow::Result<Self> {
        crate::run::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// A client for the node `config` describes: `url`, or `http://` + its
    /// `admin_http_addr` (else its `http_addr`); the token from [`admin_token`].
    pub fn from_config(config: &Config, url: Option<&str>) -> anyhow::Result<Self> {
        let base_url = match url {
            Some(url) => url.to_owned(),
            None => default_url(config.admin_http_addr.unwrap_or(config.http_addr)),
        };
        Self::new(&base_url, admin_token(config)?)
    }

    /// The node's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET path` (path starts with `/api/`).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.request(Method::DELETE, path, None).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the node at {} (is `salesboy serve` running?)",
                self.base_url
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let message = body
                .as_ref()
                .and_then(|b| b.get("error"))
                .and_then(Value::as_str)
                .map_or_else(|| text.trim().to_owned(), str::to_owned);
            return Err(ApiError { status, message }.into());
        }
        match body {
            Some(body) => Ok(body),
            None if text.trim().is_empty() => Ok(Value::Null),
            None => anyhow::bail!("the node's answer to {method} {path} is not JSON"),
        }
    }
}

/// `http://` + the address a node listens on; an unspecified address (`0.0.0.0`, `::`) is
/// reached on loopback.
pub fn default_url(http_addr: SocketAddr) -> String {
    let ip = match http_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, http_addr.port()))
}

/// The admin token: the configured one (`SALESBOY_ADMIN_TOKEN` or `admin_token` in the
/// config file), else the one the node generated into `<data_dir>/admin-token`.
pub fn admin_token(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(token) = &config.admin_token {
        return Ok(token.clone());
    }
    let path = token_path(&config.data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(SecretString::from(text.trim().to_owned())),
        Ok(_) => anyhow::bail!("the admin token file {} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no admin token: set SALESBOY_ADMIN_TOKEN, or start the node once (`salesboy serve`) \
             so it writes {} (use the same data dir: SALESBOY_DATA_DIR or --config)",
            path.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("reading the admin token from {}", path.display()))
        }
    }
}

fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_from(None, env).unwrap()
    }

    #[test]
    fn the_default_url_reaches_unspecified_addresses_on_loopback() {
        assert_eq!(
            default_url("127.0.0.1:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            default_url("0.0.0.0:9000".parse().unwrap()),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            default_url("[::]:9000".parse().unwrap()),
            "http://[::1]:9000"
        );
        assert_eq!(
            default_url("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }

    #[test]
    fn the_configured_token_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "from-file\n").unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let token = admin_token(&config(&[
            ("SALESBOY_DATA_DIR", data_dir),
            (
                "SALESBOY_ADMIN_TOKEN",
                "from-env-0123456789abcdef0123456789",
            ),
        ]))
        .unwrap();
        assert_eq!(token.expose_secret(), "from-env-0123456789abcdef0123456789");
        let token = admin_token(&config(&[("SALESBOY_DATA_DIR", data_dir)])).unwrap();
        assert_eq!(token.expose_secret(), "from-file");
    }

    #[test]
    fn a_missing_token_says_where_it_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let err = admin_token(&config(&[("SALESBOY_DATA_DIR", data_dir)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SALESBOY_ADMIN_TOKEN"), "{err}");
        assert!(
            err.contains(&dir.path().join(ADMIN_TOKEN_FILE).display().to_string()),
            "{err}"
        );
    }
}
