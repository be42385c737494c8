//! `salesboy backup PATH`: an online copy of the embedded SQLite database (`VACUUM INTO`),
//! taken while the node runs. PostgreSQL is backed up with `pg_dump` (docs/operations.md).

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::secrets::files::protect_sqlite_files;
use crate::store::{Dialect, SqlStore, redact_url};

/// Copies the configured SQLite database to the new file `path` (mode 0600), consistent as
/// of one moment, and prints where; a PostgreSQL database or an existing `path` is an error.
pub async fn backup(config: &Config, path: &Path) -> anyhow::Result<()> {
    let url = config.effective_database_url();
    if Dialect::from_url(&url)? != Dialect::Sqlite {
        anyhow::bail!(
            "{} is not an sqlite database: back PostgreSQL up with pg_dump (docs/operations.md)",
            redact_url(&url)
        );
    }
    if path.exists() {
        anyhow::bail!(
            "{} exists: a backup is written to a new file",
            path.display()
        );
    }
    let sql = SqlStore::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&url)))?;
    // Made empty and owner-only (0600) first: the copy holds the tenants' data.
    let backup_url = format!("sqlite://{}", path.display());
    let copied = match protect_sqlite_files(&backup_url) {
        Ok(()) => sql.backup_sqlite(path).await.map_err(anyhow::Error::from),
        Err(e) => Err(anyhow::Error::from(e).context("making the backup file private (0600)")),
    };
    sql.close().await;
    copied.with_context(|| format!("backing up to {}", path.display()))?;
    println!(
        "backed up {} to {}; keep the secrets key (secrets.key in the data dir, or SALESBOY_SECRETS_KEY_FILE) with it: the stored secrets are encrypted under it",
        redact_url(&url),
        path.display()
    );
    Ok(())
}
