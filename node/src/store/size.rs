//! What the alerts measure of the database: its size and the knowledge chunks it holds; and
//! the embedded database's online copy (`salesboy backup`).

use sqlx::Row;

use super::error::Failure;
use super::{Db, Dialect};

/// The database's size in bytes: PostgreSQL's `pg_database_size` of the current database;
/// SQLite's pages times the page size (the main file's size once the write-ahead log is
/// checkpointed).
pub(crate) async fn database_size_bytes(db: &Db) -> Result<u64, Failure> {
    let size: i64 = match db.dialect {
        Dialect::Postgres => sqlx::query("SELECT pg_database_size(current_database())")
            .fetch_one(&db.reader)
            .await?
            .try_get(0)?,
        Dialect::Sqlite => sqlx::query(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&db.reader)
        .await?
        .try_get(0)?,
    };
    Ok(size.max(0).unsigned_abs())
}

/// The knowledge chunks of every tenant together.
pub(crate) async fn knowledge_chunks(db: &Db) -> Result<u64, Failure> {
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM knowledge_chunks")
        .fetch_one(&db.reader)
        .await?
        .try_get(0)?;
    Ok(count.max(0).unsigned_abs())
}

/// Writes a consistent copy of the SQLite database to `path` (`VACUUM INTO`: online, the
/// node keeps serving); `path` must not exist.
pub(crate) async fn backup_sqlite(db: &Db, path: &str) -> Result<(), Failure> {
    sqlx::query("VACUUM INTO $1")
        .bind(path)
        .execute(&db.pool)
        .await?;
    Ok(())
}
