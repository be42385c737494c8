//! Values to and from columns: the library's `u32` ids as `BIGINT`, flags as 0/1, binary
//! keys as hex text, its serde types as JSON, and secret bytes sealed in their place
//! (base64, then [`Db::seal`]; without a secrets key, the base64 as it is).
//!
//! Errors name the column, never the value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::super::Db;
use super::error::Fault;

/// An id of the library (`u32`) as SQL stores it.
pub(super) fn id_to_sql(id: u32) -> i64 {
    i64::from(id)
}

/// An id read back from SQL.
pub(super) fn id_from_sql(id: i64, what: &str) -> Result<u32, Fault> {
    u32::try_from(id).map_err(|_| Fault::invalid(what, format!("{id} is not a u32")))
}

/// A flag as SQL stores it.
pub(super) fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// Bytes that key a row (app-state key ids, index MACs), as text.
pub(super) fn key_text(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A row key written with [`key_text`], back to bytes.
pub(super) fn key_bytes(text: &str, what: &str) -> Result<Vec<u8>, Fault> {
    hex::decode(text).map_err(|_| Fault::invalid(what, "not hex"))
}

/// Exactly 32 bytes (identity keys).
pub(super) fn array32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], Fault> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| Fault::invalid(what, format!("{len} bytes, expected 32")))
}

/// A value of the library as JSON text.
pub(super) fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, Fault> {
    serde_json::to_string(value).map_err(|error| {
        Fault::Web(super::WebSessionError::Store(
            salesboy_actors::store::StoreError::Invalid {
                reason: format!("{what} cannot be written as JSON: {error}"),
            },
        ))
    })
}

/// JSON text written with [`to_json`], back to the library's value.
pub(super) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Fault> {
    // serde_json's own message may quote a value (of the device: key bytes): only where
    serde_json::from_str(text).map_err(|error| {
        let kind = match error.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not the library's shape",
            serde_json::error::Category::Eof => "cut short",
        };
        Fault::invalid(
            what,
            format!("{kind} (line {}, column {})", error.line(), error.column()),
        )
    })
}

/// Secret bytes as column `column` of the row (`tenant`, `row`) stores them.
pub(super) fn seal(db: &Db, column: &'static str, tenant: &str, row: &str, bytes: &[u8]) -> String {
    db.seal(column, tenant, row, &STANDARD.encode(bytes))
}

/// A column written with [`seal`], back to its bytes.
pub(super) fn open(
    db: &Db,
    column: &'static str,
    tenant: &str,
    row: &str,
    stored: String,
) -> Result<Vec<u8>, Fault> {
    let text = db.open(column, tenant, row, stored)?;
    STANDARD
        .decode(text.as_bytes())
        .map_err(|_| Fault::invalid(column, "not base64"))
}

/// Secret text (the device's JSON) as column `column` stores it.
pub(super) fn seal_text(db: &Db, column: &'static str, tenant: &str, text: &str) -> String {
    db.seal(column, tenant, "", text)
}

/// A column written with [`seal_text`], back to its text.
pub(super) fn open_text(
    db: &Db,
    column: &'static str,
    tenant: &str,
    stored: String,
) -> Result<String, Fault> {
    Ok(db.open(column, tenant, "", stored)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_never_quote_the_value() {
        let error = from_json::<Vec<u8>>(r#"["secret-byte"]"#, "web_devices.device").unwrap_err();
        let text = format!("{error:?}");
        assert!(!text.contains("secret-byte"), "{text}");
        assert!(text.contains("web_devices.device"), "{text}");
    }

    #[test]
    fn ids_and_keys_round_trip() {
        assert_eq!(id_from_sql(id_to_sql(u32::MAX), "id").unwrap(), u32::MAX);
        assert!(id_from_sql(-1, "id").is_err());
        assert!(id_from_sql(i64::from(u32::MAX) + 1, "id").is_err());
        assert_eq!(
            key_bytes(&key_text(&[0, 255, 7]), "k").unwrap(),
            [0, 255, 7]
        );
        assert!(key_bytes("zz", "k").is_err());
        assert_eq!(array32(vec![1; 32], "k").unwrap(), [1; 32]);
        assert!(array32(vec![1; 31], "k").is_err());
    }
}
