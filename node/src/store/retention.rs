//! Retention: deleting old messages in batches.

use super::Db;
use super::error::Failure;

/// Retention deletes in batches of this many messages, each its own transaction.
const RETENTION_BATCH: i64 = 1_000;

/// Deletes messages created before `cutoff_ms`, in batches; reply links go with them
/// (`ON DELETE CASCADE` / `SET NULL`).
pub(crate) async fn delete_messages_before(db: &Db, cutoff_ms: i64) -> Result<u64, Failure> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM messages WHERE id IN \
             (SELECT id FROM messages WHERE created_ms < $1 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(RETENTION_BATCH)
        .execute(&db.pool)
        .await?
        .rows_affected();
        deleted += batch;
        if batch < RETENTION_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}
