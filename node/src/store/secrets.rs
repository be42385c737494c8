//! Secrets at rest ([`crate::secrets`]) in the store: the secret columns are sealed on the
//! way in and opened on the way out, each under its row's context; and every secret can be
//! sealed again in one transaction (legacy plaintext at start, everything on a rotation).
//!
//! The secret columns: `whatsapp_numbers.access_token`, `tenants.llm_config` (sealed whole:
//! it holds the providers' API keys) and `webhooks.secret`; and the WhatsApp Web engine's key
//! material (`web_session`, docs/engines.md): the device (sealed whole), Signal sessions,
//! pre-keys, signed pre-keys, sender keys and app-state sync keys, each row under its own
//! context (tenant and row key). Tenant API tokens are stored as digests (`tokens`) and need
//! no key.

use salesboy_actors::store::StoreError;

use super::decode::get;
use super::error::Failure;
use super::{Db, Dialect, SqlStore};
use crate::secrets::{Keyring, Sealing, SecretContext};
use tracing::warn;

/// `whatsapp_numbers.access_token`, per tenant and phone number id.
pub(crate) const ACCESS_TOKEN: &str = "whatsapp_numbers.access_token";
/// `tenants.llm_config`, per tenant.
pub(crate) const LLM_CONFIG: &str = "tenants.llm_config";
/// `webhooks.secret`, per tenant and webhook id.
pub(crate) const WEBHOOK_SECRET: &str = "webhooks.secret";
/// `web_devices.device` (the Web engine's device, JSON), per tenant.
pub(crate) const WEB_DEVICE: &str = "web_devices.device";
/// `web_signal_sessions.session`, per tenant and address.
pub(crate) const SIGNAL_SESSION: &str = "web_signal_sessions.session";
/// `web_prekeys.record`, per tenant and pre-key id.
pub(crate) const PREKEY: &str = "web_prekeys.record";
/// `web_signed_prekeys.record`, per tenant and signed pre-key id.
pub(crate) const SIGNED_PREKEY: &str = "web_signed_prekeys.record";
/// `web_sender_keys.record`, per tenant and address.
pub(crate) const SENDER_KEY: &str = "web_sender_keys.record";
/// `web_app_state_keys.key_data`, per tenant and key id (hex).
pub(crate) const APP_STATE_KEY: &str = "web_app_state_keys.key_data";

/// A secret column: how its rows are read and how one is written again.
struct SecretColumn {
    name: &'static str,
    /// `SELECT` of `tenant`, `row_id` (the key of `update`) and `value` of every row, with a
    /// `WHERE` clause (`{only}` stands for a further condition) and an `ORDER BY`.
    select: &'static str,
    /// Counts the column's rows (the `WHERE` of `select`, without `{only}`).
    count: &'static str,
    /// The column itself, for `{only}`.
    value: &'static str,
    /// Whether the row's context names the row (`row_id`) or only the tenant.
    per_row: bool,
    /// Writes `$1` into the row keyed `$2` of tenant `$4` if it still holds `$3`.
    update: &'static str,
}

const COLUMNS: [SecretColumn; 9] = [
    SecretColumn {
        name: ACCESS_TOKEN,
        select: "SELECT tenant_id AS tenant, phone_number_id AS row_id, access_token AS value \
                 FROM whatsapp_numbers WHERE {only} ORDER BY phone_number_id",
        count: "SELECT COUNT(*) FROM whatsapp_numbers",
        value: "access_token",
        per_row: true,
        update: "UPDATE whatsapp_numbers SET access_token = $1 \
                 WHERE phone_number_id = $2 AND access_token = $3 AND tenant_id = $4",
    },
    SecretColumn {
        name: LLM_CONFIG,
        select: "SELECT id AS tenant, id AS row_id, llm_config AS value FROM tenants \
                 WHERE llm_config IS NOT NULL AND {only} ORDER BY id",
        count: "SELECT COUNT(*) FROM tenants WHERE llm_config IS NOT NULL",
        value: "llm_config",
        per_row: false,
        update: "UPDATE tenants SET llm_config = $1 WHERE id = $2 AND llm_config = $3 \
                 AND id = $4",
    },
    SecretColumn {
        name: WEBHOOK_SECRET,
        select: "SELECT tenant_id AS tenant, id AS row_id, secret AS value FROM webhooks \
                 WHERE {only} ORDER BY id",
        count: "SELECT COUNT(*) FROM webhooks",
        value: "secret",
        per_row: true,
        update: "UPDATE webhooks SET secret = $1 WHERE id = $2 AND secret = $3 \
                 AND tenant_id = $4",
    },
    SecretColumn {
        name: WEB_DEVICE,
        select: "SELECT tenant_id AS tenant, tenant_id AS row_id, device AS value \
                 FROM web_devices WHERE {only} ORDER BY tenant_id",
        count: "SELECT COUNT(*) FROM web_devices",
        value: "device",
        per_row: false,
        update: "UPDATE web_devices SET device = $1 WHERE tenant_id = $2 AND device = $3 \
                 AND tenant_id = $4",
    },
    SecretColumn {
        name: SIGNAL_SESSION,
        select: "SELECT tenant_id AS tenant, address AS row_id, session AS value \
                 FROM web_signal_sessions WHERE {only} ORDER BY tenant_id, address",
        count: "SELECT COUNT(*) FROM web_signal_sessions",
        value: "session",
        per_row: true,
        update: "UPDATE web_signal_sessions SET session = $1 \
                 WHERE address = $2 AND session = $3 AND tenant_id = $4",
    },
    SecretColumn {
        name: PREKEY,
        select: "SELECT tenant_id AS tenant, CAST(id AS TEXT) AS row_id, record AS value \
                 FROM web_prekeys WHERE {only} ORDER BY tenant_id, id",
        count: "SELECT COUNT(*) FROM web_prekeys",
        value: "record",
        per_row: true,
        update: "UPDATE web_prekeys SET record = $1 \
                 WHERE id = CAST($2 AS BIGINT) AND record = $3 AND tenant_id = $4",
    },
    SecretColumn {
        name: SIGNED_PREKEY,
        select: "SELECT tenant_id AS tenant, CAST(id AS TEXT) AS row_id, record AS value \
                 FROM web_signed_prekeys WHERE {only} ORDER BY tenant_id, id",
        count: "SELECT COUNT(*) FROM web_signed_prekeys",
        value: "record",
        per_row: true,
        update: "UPDATE web_signed_prekeys SET record = $1 \
                 WHERE id = CAST($2 AS BIGINT) AND record = $3 AND tenant_id = $4",
    },
    SecretColumn {
        name: SENDER_KEY,
        select: "SELECT tenant_id AS tenant, address AS row_id, record AS value \
                 FROM web_sender_keys WHERE {only} ORDER BY tenant_id, address",
        count: "SELECT COUNT(*) FROM web_sender_keys",
        value: "record",
        per_row: true,
        update: "UPDATE web_sender_keys SET record = $1 \
                 WHERE address = $2 AND record = $3 AND tenant_id = $4",
    },
    SecretColumn {
        name: APP_STATE_KEY,
        select: "SELECT tenant_id AS tenant, key_id AS row_id, key_data AS value \
                 FROM web_app_state_keys WHERE {only} ORDER BY tenant_id, key_id",
        count: "SELECT COUNT(*) FROM web_app_state_keys",
        value: "key_data",
        per_row: true,
        update: "UPDATE web_app_state_keys SET key_data = $1 \
                 WHERE key_id = $2 AND key_data = $3 AND tenant_id = $4",
    },
];

fn context(column: &'static str, tenant: &str, row: &str) -> SecretContext {
    SecretContext {
        column,
        tenant: tenant.to_owned(),
        row: row.to_owned(),
    }
}

impl Db {
    /// `value` as column `column` of the row (`tenant`, `row`) stores it: sealed when the
    /// store has a key.
    pub(crate) fn seal(
        &self,
        column: &'static str,
        tenant: &str,
        row: &str,
        value: &str,
    ) -> String {
        match self.secrets.get() {
            Some(keys) => keys.seal(value, &context(column, tenant, row)),
            None => value.to_owned(),
        }
    }

    /// The value of a stored secret; [`StoreError::Invalid`] (naming the place, never the
    /// value) when it does not open.
    pub(crate) fn open(
        &self,
        column: &'static str,
        tenant: &str,
        row: &str,
        stored: String,
    ) -> Result<String, Failure> {
        let place = context(column, tenant, row);
        match self.secrets.get() {
            Some(keys) => keys
                .open(&stored, &place)
                .map(|(value, _)| value)
                .map_err(|error| invalid(error.to_string())),
            None if crate::secrets::is_sealed(&stored) => Err(invalid(format!(
                "{place} is encrypted and this store has no secrets key"
            ))),
            None => Ok(stored),
        }
    }
}

fn invalid(reason: String) -> Failure {
    StoreError::Invalid { reason }.into()
}

/// What sealing the secrets again did to one column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnReport {
    /// `table.column`.
    pub column: &'static str,
    /// Rows of the column (a start reads only the plaintext ones).
    pub rows: u64,
    /// Plaintext rows sealed.
    pub sealed_plaintext: u64,
    /// Rows under a previous key sealed under the current one.
    pub resealed: u64,
    /// Rows left: already under the current key (at start: every sealed value).
    pub unchanged: u64,
    /// Rows changed by someone else during the transaction (left as they were written).
    pub changed_meanwhile: u64,
}

/// How far a re-sealing is: `done` of `rows` rows of `column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResealProgress {
    /// `table.column`.
    pub column: &'static str,
    /// Rows handled.
    pub done: u64,
    /// Rows to handle (a rotation: every row of the column).
    pub rows: u64,
}

/// Report every this many rows.
const PROGRESS_EVERY: u64 = 100;

impl SqlStore {
    /// This store with secrets sealed under `keys` (without, they are written as they come
    /// and sealed ones cannot be read: the node always gives one). Every clone of the store
    /// shares them; they are set once, before use: a second call keeps the first keys.
    pub fn with_secrets(self, keys: Keyring) -> Self {
        if self.db.secrets.set(keys).is_err() {
            warn!("the store's secrets keys were already set: the first are kept");
        }
        self
    }

    /// Seals the plaintext secrets of a database from before encryption, in one
    /// transaction (the node does this at start); sealed values are left unopened, whatever
    /// their key.
    pub async fn seal_plaintext_secrets(&self) -> Result<Vec<ColumnReport>, StoreError> {
        self.run(reseal(&self.db, false, &mut |_| {})).await
    }

    /// Seals every secret not under the current key (plaintext and previous keys) under it,
    /// in one transaction, telling `progress` along the way. Afterwards the previous keys
    /// are no longer needed.
    pub async fn rotate_secrets(
        &self,
        progress: &mut (dyn FnMut(ResealProgress) + Send),
    ) -> Result<Vec<ColumnReport>, StoreError> {
        self.run(reseal(&self.db, true, progress)).await
    }
}

async fn reseal(
    db: &Db,
    previous_too: bool,
    progress: &mut (dyn FnMut(ResealProgress) + Send),
) -> Result<Vec<ColumnReport>, Failure> {
    let Some(keys) = db.secrets.get() else {
        return Err(invalid("this store has no secrets key".to_owned()));
    };
    // On SQLite the old values' bytes are zeroed where they were (`secure_delete`) and the
    // write-ahead log emptied afterwards, so no plaintext or old ciphertext stays in the files.
    let sqlite = db.dialect == Dialect::Sqlite;
    let mut connection = db.pool.acquire().await?;
    if sqlite {
        sqlx::raw_sql("PRAGMA secure_delete = ON")
            .execute(&mut *connection)
            .await?;
    }
    let mut tx = db.begin_on(&mut connection).await?;
    let mut reports = Vec::with_capacity(COLUMNS.len());
    for column in &COLUMNS {
        // At start only plaintext is read (the Web engine's columns hold many rows per
        // tenant, nearly all sealed); a rotation reads every row.
        let only = if previous_too {
            "1 = 1".to_owned()
        } else {
            format!("substr({}, 1, 7) <> 'enc:v1:'", column.value)
        };
        let select = column.select.replace("{only}", &only);
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .fetch_all(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar(column.count).fetch_one(&mut *tx).await?;
        let total = u64::try_from(total).unwrap_or_default();
        let mut report = ColumnReport {
            column: column.name,
            rows: total,
            // the sealed rows a start does not read
            unchanged: total.saturating_sub(rows.len() as u64),
            ..ColumnReport::default()
        };
        let read = rows.len() as u64;
        for (done, row) in rows.iter().enumerate() {
            let tenant: String = get(row, "tenant")?;
            let row_id: String = get(row, "row_id")?;
            let stored: String = get(row, "value")?;
            let place = context(
                column.name,
                &tenant,
                if column.per_row { &row_id } else { "" },
            );
            // At start only plaintext is opened: a value under a key this node lacks must
            // not stop it.
            let opened = if previous_too || !crate::secrets::is_sealed(&stored) {
                Some(
                    keys.open(&stored, &place)
                        .map_err(|error| invalid(error.to_string()))?,
                )
            } else {
                None
            };
            let counter = match opened.as_ref().map(|(_, sealing)| sealing) {
                None | Some(Sealing::Current) => None,
                Some(Sealing::Previous) if !previous_too => None,
                Some(Sealing::Previous) => Some(&mut report.resealed),
                Some(Sealing::Plaintext) => Some(&mut report.sealed_plaintext),
            };
            match (counter, opened) {
                (Some(counter), Some((value, _))) => {
                    let written = sqlx::query(column.update)
                        .bind(keys.seal(&value, &place))
                        .bind(row_id.as_str())
                        .bind(stored.as_str())
                        .bind(tenant.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if written == 0 {
                        report.changed_meanwhile += 1;
                    } else {
                        *counter += 1;
                    }
                }
                _ => report.unchanged += 1,
            }
            let done = done as u64 + 1;
            if done.is_multiple_of(PROGRESS_EVERY) || done == read {
                progress(ResealProgress {
                    column: column.name,
                    done,
                    rows: read,
                });
            }
        }
        reports.push(report);
    }
    tx.commit().await?;
    if sqlite {
        sqlx::raw_sql("PRAGMA secure_delete = OFF; PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *connection)
            .await?;
    }
    Ok(reports)
}
