//! Seeding a sandbox's tenants straight into its database, in batches of multi-row inserts,
//! their secrets sealed under [`super::SANDBOX_SECRETS_KEY`] as the nodes seal them.

use std::sync::atomic::Ordering;

use salesboy_protocol::{PhoneNumberId, TenantId};
use sqlx::{AnyConnection, Connection, Executor, Row};

use salesboy_node::secrets::{Keyring, SecretContext};

use super::{ClusterSandbox, Db};

/// How many tenants one seeding transaction writes. Every statement of a batch stays well
/// under 16 KiB: sqlx 0.9 no longer sets `TCP_NODELAY`, and on Postgres a bigger message
/// waits ~40 ms for a delayed ACK (transact-rs/sqlx#4335), which made 500-tenant batches
/// ten times slower than these. The sealed secrets (≈ 300 bytes a tenant) keep batches at 50.
const SEED_BATCH: usize = 50;

/// What every seeded tenant shares.
pub(super) struct Seed<'a> {
    /// The `llm_config` JSON, sealed per tenant on the way in.
    pub(super) providers: &'a str,
    /// The nodes' secrets key.
    pub(super) keys: Keyring,
    pub(super) knowledge: &'a str,
    pub(super) created_ms: i64,
}

impl Seed<'_> {
    /// Inserts one batch of tenants in one transaction. Values shared by every row are bound
    /// once (`$1`, `$2`) and constants written as literals, which keeps every statement small
    /// (see [`SEED_BATCH`]).
    pub(super) async fn insert(
        &self,
        connection: &mut AnyConnection,
        batch: &[(TenantId, PhoneNumberId)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = connection.begin().await?;

        let mut tenants = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tenants (id, name, system_prompt, llm_config, knowledge_version, \
             created_ms) VALUES {}",
            values(batch.len(), 1, &["?", "?", "NULL", "?", "1", "$1"])
        )))
        .bind(self.created_ms);
        for (tenant, _) in batch {
            let providers = self.seal("tenants.llm_config", tenant, "", self.providers);
            tenants = tenants
                .bind(tenant.to_string())
                .bind(format!("{tenant} shop"))
                .bind(providers);
        }
        tenants.execute(&mut *tx).await?;

        let mut epochs = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES {} \
             ON CONFLICT (tenant_id) DO NOTHING",
            values(batch.len(), 0, &["?", "0"])
        )));
        for (tenant, _) in batch {
            epochs = epochs.bind(tenant.to_string());
        }
        epochs.execute(&mut *tx).await?;

        let mut numbers = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO whatsapp_numbers (phone_number_id, tenant_id, waba_id, access_token) \
             VALUES {}",
            values(batch.len(), 0, &["?", "?", "NULL", "?"])
        )));
        for (tenant, number) in batch {
            numbers = numbers
                .bind(number.to_string())
                .bind(tenant.to_string())
                .bind(self.seal(
                    "whatsapp_numbers.access_token",
                    tenant,
                    number.as_str(),
                    &format!("token-{tenant}"),
                ));
        }
        numbers.execute(&mut *tx).await?;

        let mut documents = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO knowledge_documents (tenant_id, title, created_ms) VALUES {} \
             RETURNING id, tenant_id",
            values(batch.len(), 1, &["?", "'seeded'", "$1"])
        )))
        .bind(self.created_ms);
        for (tenant, _) in batch {
            documents = documents.bind(tenant.to_string());
        }
        let documents = documents.fetch_all(&mut *tx).await?;

        let mut chunks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO knowledge_chunks (document_id, tenant_id, ordinal, text) VALUES {}",
            values(documents.len(), 1, &["?", "?", "0", "$1"])
        )))
        .bind(self.knowledge.to_owned());
        for document in &documents {
            chunks = chunks
                .bind(document.try_get::<i64, _>("id")?)
                .bind(document.try_get::<String, _>("tenant_id")?);
        }
        chunks.execute(&mut *tx).await?;

        tx.commit().await
    }
}

impl Seed<'_> {
    /// `value` sealed as the node stores column `column` of the row (`tenant`, `row`).
    fn seal(&self, column: &'static str, tenant: &TenantId, row: &str, value: &str) -> String {
        let place = SecretContext {
            column,
            tenant: tenant.to_string(),
            row: row.to_owned(),
        };
        self.keys.seal(value, &place)
    }
}

/// The rows of a multi-row `VALUES`: in each copy of `row`, every `?` becomes the next
/// placeholder, numbered after the `shared` ones (`$1..=$shared`, bound first); any other
/// item (a shared placeholder, a literal) is copied as it is.
fn values(rows: usize, shared: usize, row: &[&str]) -> String {
    let mut next = shared;
    (0..rows)
        .map(|_| {
            let items: Vec<String> = row
                .iter()
                .map(|item| {
                    if *item == "?" {
                        next += 1;
                        format!("${next}")
                    } else {
                        (*item).to_owned()
                    }
                })
                .collect();
            format!("({})", items.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl ClusterSandbox {
    /// Writes `count` new tenants straight into the database, each with one WhatsApp number,
    /// the fake LLM as its provider and one knowledge passage, `knowledge`; returns them in
    /// order. Tenants are numbered on from earlier calls: tenant `n` is `seed-<n:05>` with
    /// number `1<n:014>` and access token `token-seed-<n:05>`.
    ///
    /// The rows are those the store's own calls write (tenant at epoch 0 and knowledge
    /// version 1, number, document, passage), inserted 200 tenants per transaction
    /// with multi-row statements, so thousands seed in well under a second. It bypasses the
    /// `Store` API for speed: the sandbox tests read seeded tenants back through it, which
    /// catches a schema change this writer missed.
    pub async fn seed_tenants(
        &self,
        count: usize,
        knowledge: &str,
    ) -> Result<Vec<(TenantId, PhoneNumberId)>, String> {
        let providers = serde_json::json!([{
            "kind": "openai",
            "model": "gpt-4o-mini",
            "api_key": "sk-sandbox",
            "base_url": self.llm.openai_base_url(),
        }]);
        self.seed_tenants_with(count, knowledge, &providers).await
    }

    /// As [`Self::seed_tenants`], with the tenants' LLM provider chain `providers` (the
    /// `llm_config` JSON array, e.g. a Gemini fake first and an OpenAI-compatible fallback).
    pub async fn seed_tenants_with(
        &self,
        count: usize,
        knowledge: &str,
        providers: &serde_json::Value,
    ) -> Result<Vec<(TenantId, PhoneNumberId)>, String> {
        let first = self.seeded.fetch_add(count, Ordering::SeqCst);
        let tenants = (first..first + count)
            .map(|n| {
                let tenant = TenantId::new(format!("seed-{n:05}"))
                    .map_err(|e| format!("bad seeded tenant id: {e}"))?;
                let number = PhoneNumberId::new(format!("1{n:014}"))
                    .map_err(|e| format!("bad seeded phone number id: {e}"))?;
                Ok((tenant, number))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let providers = providers.to_string();
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let seeding = |e: sqlx::Error| format!("cannot seed tenants: {e}");

        sqlx::any::install_default_drivers();
        let mut connection = AnyConnection::connect(&self.database_url)
            .await
            .map_err(seeding)?;
        if self.database == Db::Sqlite {
            connection
                .execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                .await
                .map_err(seeding)?;
        }
        let seed = Seed {
            providers: &providers,
            keys: super::sandbox_keyring(),
            knowledge,
            created_ms,
        };
        for batch in tenants.chunks(SEED_BATCH) {
            seed.insert(&mut connection, batch).await.map_err(seeding)?;
        }
        let _ = connection.close().await;
        Ok(tenants)
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn numbers_fresh_placeholders_after_the_shared_ones() {
        assert_eq!(values(2, 0, &["?", "?"]), "($1, $2), ($3, $4)");
        assert_eq!(
            values(2, 1, &["?", "$1", "NULL"]),
            "($2, $1, NULL), ($3, $1, NULL)"
        );
    }
}
