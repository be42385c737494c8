//! Tenants and their WhatsApp numbers.

use std::collections::BTreeMap;

use salesboy_actors::services::ReadReceipts;
use salesboy_actors::store::{
    AccessToken, Deletion, NewTenant, NewWhatsAppNumber, StoreError, Tenant, TenantRoute,
    WhatsAppNumber,
};
use salesboy_protocol::events::Event;
use salesboy_protocol::subjects::EventKind;
use salesboy_protocol::{PhoneNumberId, TenantId};
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use super::decode::{get, id, invalid_column, named, optional_named};
use super::error::Failure;
use super::outbox;
use super::secrets::{ACCESS_TOKEN, LLM_CONFIG};
use super::{Db, Dialect};

/// `SELECT` of the columns [`tenant_from_row`] reads, followed by `$rest`.
macro_rules! select_tenants {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, system_prompt, llm_config, knowledge_version, created_ms, \
             session_stopped_ms, llm_monthly_spend_cap_micros, embedding_model, engine, \
             web_hygiene, read_receipts FROM tenants ",
            $rest
        )
    };
}

/// `SELECT` of the columns [`number_from_row`] reads, followed by `$rest`.
macro_rules! select_numbers {
    ($rest:literal) => {
        concat!(
            "SELECT tenant_id, phone_number_id, waba_id, access_token FROM whatsapp_numbers ",
            $rest
        )
    };
}

/// Creates or updates a tenant; a new tenant starts at epoch 0, so fenced writes always find
/// its epoch row to lock.
pub(crate) async fn upsert_tenant(db: &Db, tenant: &NewTenant) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO tenants (id, name, system_prompt, llm_config, created_ms, \
         llm_monthly_spend_cap_micros, embedding_model, engine, web_hygiene, read_receipts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
         system_prompt = excluded.system_prompt, llm_config = excluded.llm_config, \
         llm_monthly_spend_cap_micros = excluded.llm_monthly_spend_cap_micros, \
         embedding_model = excluded.embedding_model, web_hygiene = excluded.web_hygiene, \
         read_receipts = excluded.read_receipts, deleted_ms = NULL",
    )
    .bind(tenant.id.as_str())
    .bind(tenant.name.as_str())
    .bind(tenant.system_prompt.as_deref())
    .bind(
        tenant
            .llm_config
            .as_deref()
            .map(|config| db.seal(LLM_CONFIG, tenant.id.as_str(), "", config)),
    )
    .bind(tenant.created_ms)
    .bind(tenant.llm_monthly_spend_cap_micros)
    .bind(tenant.embedding_model.as_deref())
    .bind(tenant.engine.as_str())
    .bind(
        tenant
            .web_hygiene
            .as_ref()
            .map(|hygiene| serde_json::to_string(hygiene).unwrap_or_default()),
    )
    .bind(tenant.read_receipts.map(ReadReceipts::as_str))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO tenant_epochs (tenant_id, epoch) VALUES ($1, 0) \
         ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.id.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// One tenant with its numbers.
pub(crate) async fn tenant(db: &Db, tenant: &TenantId) -> Result<Option<Tenant>, Failure> {
    let Some(row) = sqlx::query(select_tenants!("WHERE id = $1 AND deleted_ms IS NULL"))
        .bind(tenant.as_str())
        .fetch_optional(&db.pool)
        .await?
    else {
        return Ok(None);
    };
    let numbers = sqlx::query(select_numbers!(
        "WHERE tenant_id = $1 ORDER BY phone_number_id"
    ))
    .bind(tenant.as_str())
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|row| Ok(number_from_row(db, row)?.1))
    .collect::<Result<Vec<_>, Failure>>()?;
    tenant_from_row(db, &row, numbers).map(Some)
}

/// Every tenant with its numbers, ordered by id.
pub(crate) async fn list_tenants(db: &Db) -> Result<Vec<Tenant>, Failure> {
    let tenant_rows = sqlx::query(select_tenants!("WHERE deleted_ms IS NULL ORDER BY id"))
        .fetch_all(&db.pool)
        .await?;
    let number_rows = sqlx::query(select_numbers!("ORDER BY tenant_id, phone_number_id"))
        .fetch_all(&db.pool)
        .await?;
    let mut numbers: BTreeMap<TenantId, Vec<WhatsAppNumber>> = BTreeMap::new();
    for row in &number_rows {
        let (tenant, number) = number_from_row(db, row)?;
        numbers.entry(tenant).or_default().push(number);
    }
    tenant_rows
        .iter()
        .map(|row| {
            let tenant: TenantId = id(row, "id")?;
            let own = numbers.remove(&tenant).unwrap_or_default();
            tenant_from_row(db, row, own)
        })
        .collect()
}

/// Attaches a number to a tenant or updates it; refuses a number owned by another tenant.
pub(crate) async fn upsert_whatsapp_number(
    db: &Db,
    number: &NewWhatsAppNumber,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    let tenant_exists = sqlx::query("SELECT 1 FROM tenants WHERE id = $1 AND deleted_ms IS NULL")
        .bind(number.tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !tenant_exists {
        return Err(StoreError::NotFound {
            what: format!("tenant {}", number.tenant),
        }
        .into());
    }
    let written = sqlx::query(
        "INSERT INTO whatsapp_numbers (phone_number_id, tenant_id, waba_id, access_token) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (phone_number_id) DO UPDATE SET waba_id = excluded.waba_id, \
         access_token = excluded.access_token \
         WHERE whatsapp_numbers.tenant_id = excluded.tenant_id",
    )
    .bind(number.phone_number_id.as_str())
    .bind(number.tenant.as_str())
    .bind(number.waba_id.as_deref())
    .bind(db.seal(
        ACCESS_TOKEN,
        number.tenant.as_str(),
        number.phone_number_id.as_str(),
        number.access_token.expose(),
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if written == 0 {
        return Err(StoreError::Conflict {
            reason: format!(
                "phone number id {} belongs to another tenant",
                number.phone_number_id
            ),
        }
        .into());
    }
    tx.commit().await?;
    Ok(())
}

/// The tenant that owns a phone number id.
pub(crate) async fn tenant_by_phone_number(
    db: &Db,
    phone_number_id: &PhoneNumberId,
) -> Result<Option<TenantRoute>, Failure> {
    let row = sqlx::query(
        "SELECT tenant_id, phone_number_id FROM whatsapp_numbers WHERE phone_number_id = $1",
    )
    .bind(phone_number_id.as_str())
    .fetch_optional(&db.pool)
    .await?;
    row.map(|row| {
        Ok(TenantRoute {
            tenant: id(&row, "tenant_id")?,
            phone_number_id: id(&row, "phone_number_id")?,
        })
    })
    .transpose()
}

/// Stops the tenant's session since `at_ms`, or lets it run again; a change writes its
/// `session_status` event in the same transaction.
pub(crate) async fn set_session_stopped(
    db: &Db,
    tenant: &TenantId,
    stopped: bool,
    at_ms: i64,
) -> Result<(), Failure> {
    let mut tx = db.begin().await?;
    let update = if stopped {
        sqlx::query(
            "UPDATE tenants SET session_stopped_ms = $2 \
             WHERE id = $1 AND deleted_ms IS NULL AND session_stopped_ms IS NULL",
        )
        .bind(tenant.as_str())
        .bind(at_ms)
    } else {
        sqlx::query(
            "UPDATE tenants SET session_stopped_ms = NULL \
             WHERE id = $1 AND deleted_ms IS NULL AND session_stopped_ms IS NOT NULL",
        )
        .bind(tenant.as_str())
    };
    let changed = update.execute(&mut *tx).await?.rows_affected() > 0;
    if changed {
        let status = if stopped { "stopped" } else { "started" };
        outbox::append(
            &mut tx,
            &Event::tenant(
                EventKind::SessionStatus,
                tenant.clone(),
                at_ms,
                serde_json::json!({ "status": status }),
            ),
        )
        .await?;
    } else if sqlx::query("SELECT 1 FROM tenants WHERE id = $1 AND deleted_ms IS NULL")
        .bind(tenant.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound {
            what: format!("tenant {tenant}"),
        }
        .into());
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a tenant: numbers, API tokens, event webhooks, pending sends and epoch first,
/// then its data kept (marked deleted) or erased (its events too).
pub(crate) async fn delete_tenant(
    db: &Db,
    tenant: &TenantId,
    deletion: Deletion,
    at_ms: i64,
) -> Result<bool, Failure> {
    let mut tx = db.begin().await?;
    let marked = sqlx::query(
        "UPDATE tenants SET deleted_ms = $2, session_stopped_ms = NULL \
         WHERE id = $1 AND deleted_ms IS NULL",
    )
    .bind(tenant.as_str())
    .bind(at_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("UPDATE tenant_epochs SET epoch = epoch + 1 WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    // Its credentials and event webhooks stop with it, data kept or not.
    for delete in [
        "DELETE FROM whatsapp_numbers WHERE tenant_id = $1",
        "DELETE FROM tenant_tokens WHERE tenant_id = $1",
        "DELETE FROM webhook_deliveries WHERE webhook_id IN \
         (SELECT id FROM webhooks WHERE tenant_id = $1)",
        "DELETE FROM webhooks WHERE tenant_id = $1",
        "DELETE FROM placement_decisions WHERE tenant_id = $1",
    ] {
        sqlx::query(delete)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
    }
    // So does its WhatsApp Web session: the linked device's keys and protocol state.
    super::web_session::delete_session(&mut tx, tenant).await?;
    match deletion {
        Deletion::KeepData => {
            sqlx::query(
                "UPDATE messages SET status = 'failed', status_ms = $2, error_code = NULL, \
                 error_title = 'tenant_deleted' WHERE tenant_id = $1 AND status = 'pending'",
            )
            .bind(tenant.as_str())
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        }
        Deletion::EraseData => erase_data(&mut tx, db.dialect, tenant).await?,
    }
    tx.commit().await?;
    Ok(true)
}

/// The most rows one statement of an erasure deletes on SQLite: a `DELETE` holds the id of
/// every row it deletes until it ends (about 24 bytes a row, docs/storage.md), so there a
/// tenant's data goes a bounded batch per statement, all in the erasing transaction.
const ERASE_BATCH: u16 = 500;

/// A table an erasure empties of the tenant's rows: one statement for all of them
/// (PostgreSQL), and one for a batch of [`ERASE_BATCH`] (`$2`) that is run until it finds
/// fewer (SQLite).
struct Erased {
    all: &'static str,
    batch: &'static str,
}

/// The tables [`erase_data`] empties, in this order: messages (their reply links with them)
/// before the conversations they belong to, passages (their vectors with them) before their
/// documents, so no cascade from a later table has rows left to delete. A batch picks its
/// rows by primary key alone: with `tenant_id = $1 AND id IN (…)` SQLite walks the tenant's
/// index over every row still left, each batch (500,000 messages: 34–38 s against 3 s,
/// `scripts/erase-memory.py`). Conversations are keyed by tenant and chat.
const ERASED: [Erased; 5] = [
    Erased {
        all: "DELETE FROM llm_usage WHERE tenant_id = $1",
        batch: "DELETE FROM llm_usage WHERE id IN \
                (SELECT id FROM llm_usage WHERE tenant_id = $1 LIMIT $2)",
    },
    Erased {
        all: "DELETE FROM messages WHERE tenant_id = $1",
        batch: "DELETE FROM messages WHERE id IN \
                (SELECT id FROM messages WHERE tenant_id = $1 LIMIT $2)",
    },
    Erased {
        all: "DELETE FROM conversations WHERE tenant_id = $1",
        batch: "DELETE FROM conversations WHERE tenant_id = $1 AND chat_id IN \
                (SELECT chat_id FROM conversations WHERE tenant_id = $1 LIMIT $2)",
    },
    Erased {
        all: "DELETE FROM knowledge_chunks WHERE tenant_id = $1",
        batch: "DELETE FROM knowledge_chunks WHERE id IN \
                (SELECT id FROM knowledge_chunks WHERE tenant_id = $1 LIMIT $2)",
    },
    Erased {
        all: "DELETE FROM knowledge_documents WHERE tenant_id = $1",
        batch: "DELETE FROM knowledge_documents WHERE id IN \
                (SELECT id FROM knowledge_documents WHERE tenant_id = $1 LIMIT $2)",
    },
];

/// Deletes everything of `tenant` inside `tx`: its LLM calls, messages, conversations and
/// knowledge ([`ERASED`]), its events and usage (no foreign key), then the tenant row, whose
/// foreign keys take the rest (`ON DELETE CASCADE`: its Web session's tables, its rejected
/// webhook items). On SQLite the large tables go [`ERASE_BATCH`] rows per statement, and the
/// loops stop at the first short batch: SQLite has one writer, nothing else deletes
/// meanwhile. PostgreSQL deletes each table in one statement: within one transaction its
/// indexes still hold the rows the transaction deleted, so every batch would walk all the
/// earlier ones again.
async fn erase_data(
    tx: &mut Transaction<'static, Any>,
    dialect: Dialect,
    tenant: &TenantId,
) -> Result<(), Failure> {
    for table in &ERASED {
        match dialect {
            Dialect::Postgres => {
                sqlx::query(table.all)
                    .bind(tenant.as_str())
                    .execute(&mut **tx)
                    .await?;
            }
            Dialect::Sqlite => loop {
                let deleted = sqlx::query(table.batch)
                    .bind(tenant.as_str())
                    .bind(i64::from(ERASE_BATCH))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if deleted < u64::from(ERASE_BATCH) {
                    break;
                }
            },
        }
    }
    match dialect {
        Dialect::Postgres => {
            sqlx::query("DELETE FROM event_outbox WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(&mut **tx)
                .await?;
        }
        // The outbox has no index by tenant: one walk along `seq`, a batch at a time.
        Dialect::Sqlite => {
            let mut after = i64::MIN;
            loop {
                let erased: Vec<i64> = sqlx::query_scalar(
                    "DELETE FROM event_outbox WHERE seq IN \
                     (SELECT seq FROM event_outbox WHERE tenant_id = $1 AND seq > $2 \
                      ORDER BY seq LIMIT $3) RETURNING seq",
                )
                .bind(tenant.as_str())
                .bind(after)
                .bind(i64::from(ERASE_BATCH))
                .fetch_all(&mut **tx)
                .await?;
                match erased.iter().max() {
                    Some(&last) if erased.len() >= usize::from(ERASE_BATCH) => after = last,
                    _ => break,
                }
            }
        }
    }
    for delete in [
        "DELETE FROM usage_monthly WHERE tenant_id = $1",
        "DELETE FROM tenants WHERE id = $1",
    ] {
        sqlx::query(delete)
            .bind(tenant.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn tenant_from_row(db: &Db, row: &AnyRow, numbers: Vec<WhatsAppNumber>) -> Result<Tenant, Failure> {
    let tenant: TenantId = id(row, "id")?;
    let llm_config: Option<String> = get(row, "llm_config")?;
    let web_hygiene: Option<String> = get(row, "web_hygiene")?;
    Ok(Tenant {
        llm_config: llm_config
            .map(|stored| db.open(LLM_CONFIG, tenant.as_str(), "", stored))
            .transpose()?,
        id: tenant,
        name: get(row, "name")?,
        system_prompt: get(row, "system_prompt")?,
        llm_monthly_spend_cap_micros: get(row, "llm_monthly_spend_cap_micros")?,
        embedding_model: get(row, "embedding_model")?,
        knowledge_version: get(row, "knowledge_version")?,
        engine: named(row, "engine", |name| name.parse().ok())?,
        web_hygiene: web_hygiene
            .map(|json| {
                serde_json::from_str(&json).map_err(|error| invalid_column("web_hygiene", &error))
            })
            .transpose()?,
        read_receipts: optional_named(row, "read_receipts", ReadReceipts::parse)?,
        created_ms: get(row, "created_ms")?,
        numbers,
        session_stopped_ms: get(row, "session_stopped_ms")?,
    })
}

fn number_from_row(db: &Db, row: &AnyRow) -> Result<(TenantId, WhatsAppNumber), Failure> {
    let tenant: TenantId = id(row, "tenant_id")?;
    let phone_number_id: PhoneNumberId = id(row, "phone_number_id")?;
    let stored: String = get(row, "access_token")?;
    let token = db.open(
        ACCESS_TOKEN,
        tenant.as_str(),
        phone_number_id.as_str(),
        stored,
    )?;
    Ok((
        tenant,
        WhatsAppNumber {
            phone_number_id,
            waba_id: get(row, "waba_id")?,
            access_token: AccessToken::new(token),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::web_session::WEB_SESSION_TABLES;

    #[test]
    fn every_web_session_table_goes_with_its_tenant() {
        for migration in [
            include_str!("../../../migrations/sqlite/0010_web_sessions.sql"),
            include_str!("../../../migrations/postgres/0010_web_sessions.sql"),
        ] {
            let created: Vec<&str> = migration
                .lines()
                .filter_map(|line| line.strip_prefix("CREATE TABLE "))
                .filter_map(|rest| rest.split_whitespace().next())
                .collect();
            assert_eq!(created, WEB_SESSION_TABLES);
        }
    }
}
