//! Seeding a sandbox's tenants straight into its database, in batches of multi-row inserts.

use salesboy_protocol::{PhoneNumberId, TenantId};
use sqlx::{AnyConnection, Connection, Row};

/// What every seeded tenant shares.
pub(super) struct Seed<'a> {
    pub(super) providers: &'a str,
    pub(super) knowledge: &'a str,
    pub(super) created_ms: i64,
}

impl Seed<'_> {
    /// Inserts one batch of tenants in one transaction. Values shared by every row are bound
    /// once (`$1`, `$2`) and constants written as literals, which keeps every statement small
    /// (see [`SEED_BATCH`](super::SEED_BATCH)).
    pub(super) async fn insert(
        &self,
        connection: &mut AnyConnection,
        batch: &[(TenantId, PhoneNumberId)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = connection.begin().await?;

        let mut tenants = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO tenants (id, name, system_prompt, llm_config, knowledge_version, \
             created_ms) VALUES {}",
            values(batch.len(), 2, &["?", "?", "NULL", "$1", "1", "$2"])
        )))
        .bind(self.providers.to_owned())
        .bind(self.created_ms);
        for (tenant, _) in batch {
            tenants = tenants
                .bind(tenant.to_string())
                .bind(format!("{tenant} shop"));
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
                .bind(format!("token-{tenant}"));
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
