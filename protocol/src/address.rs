//! Logical actor addresses: where a message is meant to go, independent of which node
//! hosts the actor. NATS subjects are derived from them in [`crate::subjects`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{ChatId, IdError, TenantId};

/// The address of one actor of a tenant's subtree.
///
/// Text form: `tenant/<tid>/session`, `tenant/<tid>/responder`, `tenant/<tid>/conv/<chat>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActorAddress {
    /// The tenant's WhatsApp session (one per tenant = one WhatsApp number).
    Session(TenantId),
    /// The tenant's LLM responder.
    Responder(TenantId),
    /// One conversation: the tenant's chat with one customer.
    Conversation(TenantId, ChatId),
}

impl ActorAddress {
    /// The tenant whose subtree holds this actor; tenants are the unit of placement.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Self::Session(t) | Self::Responder(t) | Self::Conversation(t, _) => t,
        }
    }
}

impl fmt::Display for ActorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Session(t) => write!(f, "tenant/{t}/session"),
            Self::Responder(t) => write!(f, "tenant/{t}/responder"),
            Self::Conversation(t, c) => write!(f, "tenant/{t}/conv/{c}"),
        }
    }
}

/// Why a string is not an actor address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The text does not have one of the address shapes.
    #[error(
        "{0:?} is not an actor address (expected tenant/<tid>/session, tenant/<tid>/responder or tenant/<tid>/conv/<chat>)"
    )]
    Shape(String),
    /// An id inside the address is invalid.
    #[error(transparent)]
    Id(#[from] IdError),
}

impl FromStr for ActorAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["tenant", t, "session"] => Ok(Self::Session(TenantId::new(*t)?)),
            ["tenant", t, "responder"] => Ok(Self::Responder(TenantId::new(*t)?)),
            ["tenant", t, "conv", c] => {
                Ok(Self::Conversation(TenantId::new(*t)?, ChatId::new(*c)?))
            }
            _ => Err(AddressError::Shape(s.chars().take(200).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    #[test]
    fn addresses_print_and_parse() {
        let cases = [
            (ActorAddress::Session(t("acme")), "tenant/acme/session"),
            (ActorAddress::Responder(t("acme")), "tenant/acme/responder"),
            (
                ActorAddress::Conversation(t("acme"), ChatId::new("16505551234").unwrap()),
                "tenant/acme/conv/16505551234",
            ),
        ];
        for (address, text) in cases {
            assert_eq!(address.to_string(), text);
            assert_eq!(text.parse::<ActorAddress>().unwrap(), address);
            assert_eq!(address.tenant(), &t("acme"));
        }
    }

    #[test]
    fn malformed_addresses_are_typed_errors() {
        assert!(matches!(
            "tenant/acme".parse::<ActorAddress>(),
            Err(AddressError::Shape(_))
        ));
        assert!(matches!(
            "tenant/a.b/session".parse::<ActorAddress>(),
            Err(AddressError::Id(_))
        ));
        assert!(matches!(
            "node/x/session".parse::<ActorAddress>(),
            Err(AddressError::Shape(_))
        ));
    }
}
