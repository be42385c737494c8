//! Reading rows back into records, and the integer conversions between Rust and SQL.
//!
//! Stored ids are validated again on the way out: a row that no longer holds a valid id is
//! reported as [`StoreError::Invalid`], never a panic.

use std::str::FromStr;

use salesboy_actors::store::StoreError;
use salesboy_protocol::IdError;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::error::Failure;

/// Reads column `column`, mapping decode errors through the one error mapper.
pub(crate) fn get<'r, T>(row: &'r AnyRow, column: &str) -> Result<T, Failure>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    Ok(row.try_get(column)?)
}

/// Reads a text column and validates it as an id type.
pub(crate) fn id<T>(row: &AnyRow, column: &str) -> Result<T, Failure>
where
    T: FromStr<Err = IdError>,
{
    let raw: String = get(row, column)?;
    raw.parse().map_err(|error| invalid_column(column, &error))
}

/// Reads a nullable text column and validates it as an id type.
pub(crate) fn optional_id<T>(row: &AnyRow, column: &str) -> Result<Option<T>, Failure>
where
    T: FromStr<Err = IdError>,
{
    let raw: Option<String> = get(row, column)?;
    raw.map(|raw| raw.parse().map_err(|error| invalid_column(column, &error)))
        .transpose()
}

/// Reads a text column through a parser of stored names (`Direction::parse`, …).
pub(crate) fn named<T>(
    row: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, Failure> {
    let raw: String = get(row, column)?;
    parse(&raw).ok_or_else(|| invalid_column(column, &format!("unknown value {raw:?}")))
}

/// Reads a nullable text column through a parser of stored names.
pub(crate) fn optional_named<T>(
    row: &AnyRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, Failure> {
    let raw: Option<String> = get(row, column)?;
    raw.map(|raw| {
        parse(&raw).ok_or_else(|| invalid_column(column, &format!("unknown value {raw:?}")))
    })
    .transpose()
}

/// Reads a nullable JSON text column through `parse`.
pub(crate) fn optional_json<T>(
    row: &AnyRow,
    column: &str,
    parse: fn(&str) -> Result<T, serde_json::Error>,
) -> Result<Option<T>, Failure> {
    let raw: Option<String> = get(row, column)?;
    raw.map(|raw| parse(&raw).map_err(|error| invalid_column(column, &error)))
        .transpose()
}

pub(crate) fn invalid_column(column: &str, error: &dyn std::fmt::Display) -> Failure {
    Failure::Store(StoreError::Invalid {
        reason: format!("stored {column} is invalid: {error}"),
    })
}

/// An epoch as SQL stores it (`BIGINT`).
pub(crate) fn epoch_to_sql(epoch: u64) -> Result<i64, Failure> {
    i64::try_from(epoch).map_err(|_| {
        Failure::Store(StoreError::Invalid {
            reason: format!("epoch {epoch} is larger than {}", i64::MAX),
        })
    })
}

/// An epoch read back from SQL.
pub(crate) fn epoch_from_sql(epoch: i64) -> Result<u64, Failure> {
    u64::try_from(epoch).map_err(|_| {
        Failure::Store(StoreError::Invalid {
            reason: format!("stored epoch {epoch} is negative"),
        })
    })
}

/// A row count or limit as SQL takes it.
pub(crate) fn limit(limit: u32) -> i64 {
    i64::from(limit)
}
