//! [`Engine`]: how a tenant's WhatsApp number is reached, chosen when the tenant is created.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a tenant's WhatsApp number is reached (docs/engines.md). Chosen when the tenant is
/// created and fixed from then on. JSON and text: `cloud_api`, `web`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Meta's WhatsApp Cloud API: an access token, inbound messages by signed webhook.
    #[default]
    CloudApi,
    /// The WhatsApp Web multi-device protocol, hosted in the session actor: an ordinary
    /// number linked by QR code or pairing code, inbound messages on its own connection.
    Web,
}

impl Engine {
    /// Every engine.
    pub const ALL: [Self; 2] = [Self::CloudApi, Self::Web];

    /// Its name in JSON, text and the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CloudApi => "cloud_api",
            Self::Web => "web",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an engine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine {0:?}; expected cloud_api or web")]
pub struct UnknownEngine(pub String);

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|engine| engine.as_str() == name)
            .ok_or_else(|| UnknownEngine(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_text_and_json() {
        for engine in Engine::ALL {
            assert_eq!(engine.as_str().parse::<Engine>(), Ok(engine));
            let json = serde_json::to_string(&engine).expect("encodes");
            assert_eq!(json, format!("\"{engine}\""));
        }
        assert_eq!(
            "baileys".parse::<Engine>(),
            Err(UnknownEngine("baileys".into()))
        );
        assert_eq!(Engine::default(), Engine::CloudApi);
    }
}
