//! Secrets at rest (issue 11, item 4), on SQLite and PostgreSQL: WhatsApp access tokens,
//! LLM API keys and webhook secrets are never in the clear in the database, read back
//! under the right key, fail clearly under a wrong one, survive a rotation, and plaintext
//! rows of an older database still read (and are encrypted at start). The node's data dir
//! is 0700, its database and key files 0600.

use std::path::Path;

use salesboy_actors::store::prelude::*;
use salesboy_actors::store::{AccessToken, NewTenant, NewWhatsAppNumber, StoreError};
use salesboy_node::cli::secrets::rotate;
use salesboy_node::config::Config;
use salesboy_node::secrets::{KEY_FILE_NAME, Keyring, SecretsKey};
use salesboy_node::store::{SqlStore, Webhook};
use salesboy_protocol::{PhoneNumberId, TenantId};
use salesboy_testkit::gateway::ADMIN_TOKEN;
use salesboy_testkit::{Db, Gateway, PostgresDatabase};
use secrecy::SecretString;
use serde_json::json;
use sqlx::{AnyConnection, Connection};

const TOKEN: &str = "EAAG-planted-access-token-7c1e";
const API_KEY: &str = "sk-planted-llm-api-key-93ad";
const WEBHOOK_SECRET: &str = "whsec-planted-webhook-secret-5b2f";
const PHONE: &str = "106540352242922";

/// A fresh database of one backend: its URL, and what keeps it (temp dir or Postgres db).
struct Database {
    url: String,
    _dir: tempfile::TempDir,
    _postgres: Option<PostgresDatabase>,
}

impl Database {
    async fn fresh(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PostgresDatabase::create().await.expect("test postgres")),
        };
        let url = match &postgres {
            Some(postgres) => postgres.url().to_owned(),
            None => format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display()),
        };
        Self {
            url,
            _dir: dir,
            _postgres: postgres,
        }
    }

    async fn store(&self, keys: Keyring) -> SqlStore {
        SqlStore::connect(&self.url)
            .await
            .expect("store")
            .with_secrets(keys)
    }

    /// Everything the database holds of the secret tables, as bytes: the SQLite files
    /// (database and write-ahead log), or a text dump of the Postgres tables.
    async fn raw(&self) -> Vec<u8> {
        if let Some(path) = salesboy_node::secrets::files::sqlite_file(&self.url) {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal"] {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                bytes.extend(std::fs::read(&name).unwrap_or_default());
            }
            return bytes;
        }
        dump_postgres(&self.url).await
    }

    async fn execute(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let mut connection = AnyConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap();
        connection.close().await.unwrap();
    }
}

/// `SELECT t::text` of every table that holds secrets.
async fn dump_postgres(url: &str) -> Vec<u8> {
    let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
    let mut dump = String::new();
    for table in ["tenants", "whatsapp_numbers", "webhooks"] {
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t"
        )))
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    connection.close().await.unwrap();
    dump.into_bytes()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn assert_no_secret_in(raw: &[u8], what: &str) {
    assert!(!raw.is_empty(), "{what}: nothing read");
    for secret in [TOKEN, API_KEY, WEBHOOK_SECRET] {
        assert!(!contains(raw, secret), "{secret} in the clear in {what}");
    }
}

fn acme() -> TenantId {
    TenantId::new("acme").unwrap()
}

fn llm_config() -> String {
    json!([{"kind": "openai", "model": "m", "api_key": API_KEY}]).to_string()
}

/// A tenant with the planted LLM configuration.
fn tenant_with_llm(id: TenantId) -> NewTenant {
    NewTenant {
        name: format!("{id} shop"),
        id,
        system_prompt: None,
        llm_config: Some(llm_config()),
        llm_monthly_spend_cap_micros: None,
        embedding_model: None,
        engine: Default::default(),
        web_hygiene: None,
        read_receipts: None,
        created_ms: 1,
    }
}

/// Writes acme with an LLM config, a number and a webhook through the store.
async fn write_secrets(store: &SqlStore) {
    store.upsert_tenant(&tenant_with_llm(acme())).await.unwrap();
    store
        .upsert_whatsapp_number(&NewWhatsAppNumber {
            tenant: acme(),
            phone_number_id: PhoneNumberId::new(PHONE).unwrap(),
            waba_id: None,
            access_token: AccessToken::new(TOKEN),
        })
        .await
        .unwrap();
    store
        .add_webhook(&Webhook {
            id: "wh_1".into(),
            tenant: acme(),
            url: "https://example.com/hook".into(),
            kinds: None,
            secret: WEBHOOK_SECRET.into(),
            created_ms: 1,
        })
        .await
        .unwrap();
}

/// Reads the three secrets back and checks them.
async fn assert_secrets_read(store: &SqlStore) {
    let tenant = store.tenant(&acme()).await.unwrap().expect("acme");
    assert_eq!(tenant.llm_config.as_deref(), Some(llm_config().as_str()));
    assert_eq!(tenant.numbers[0].access_token.expose(), TOKEN);
    let listed = store.list_tenants().await.unwrap();
    assert_eq!(listed[0].numbers[0].access_token.expose(), TOKEN);
    let webhooks = store.webhooks(&acme()).await.unwrap();
    assert_eq!(webhooks[0].webhook.secret, WEBHOOK_SECRET);
}

/// The error reading acme gives, which must name the place and never a secret.
async fn read_error(store: &SqlStore) -> String {
    let error = store.tenant(&acme()).await.expect_err("must not decrypt");
    assert!(matches!(error, StoreError::Invalid { .. }), "{error:?}");
    let text = format!("{error} {error:?}");
    for secret in [TOKEN, API_KEY, WEBHOOK_SECRET] {
        assert!(!text.contains(secret), "{text}");
    }
    text
}

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(salesboy_testkit::Db::Sqlite).await; })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(salesboy_testkit::Db::Postgres).await; })*
        }
    };
}

on_both_databases!(
    secrets_are_encrypted_and_read_back_only_under_their_key,
    plaintext_rows_still_read_and_are_encrypted,
    rotation_encrypts_everything_under_the_new_key,
    a_node_encrypts_what_the_api_writes,
);

async fn secrets_are_encrypted_and_read_back_only_under_their_key(db: Db) {
    let database = Database::fresh(db).await;
    let key = SecretsKey::generate();
    let store = database.store(Keyring::new(key.clone(), [])).await;
    write_secrets(&store).await;
    assert_secrets_read(&store).await;
    store.close().await;
    assert_no_secret_in(&database.raw().await, "the database");

    let stranger = database
        .store(Keyring::new(SecretsKey::generate(), []))
        .await;
    let error = read_error(&stranger).await;
    assert!(
        error.contains(key.id()) && error.contains("not configured"),
        "{error}"
    );
    stranger.close().await;

    // a sealed value copied into another row does not open there
    database
        .execute(
            "INSERT INTO tenants (id, name, created_ms) VALUES ('globex', 'Globex', 1); \
             INSERT INTO whatsapp_numbers (phone_number_id, tenant_id, access_token) \
             SELECT '200', 'globex', access_token FROM whatsapp_numbers",
        )
        .await;
    let store = database.store(Keyring::new(key, [])).await;
    let copied = store
        .tenant(&TenantId::new("globex").unwrap())
        .await
        .expect_err("a copied token must not decrypt");
    assert!(copied.to_string().contains("altered or copied"), "{copied}");
    // (listing every tenant would fail on it too, naming it)
    database
        .execute("DELETE FROM whatsapp_numbers WHERE phone_number_id = '200'")
        .await;
    assert_secrets_read(&store).await;
    store.close().await;
}

async fn plaintext_rows_still_read_and_are_encrypted(db: Db) {
    let database = Database::fresh(db).await;
    let store = database
        .store(Keyring::new(SecretsKey::generate(), []))
        .await;
    database
        .execute(&format!(
            "INSERT INTO tenants (id, name, llm_config, created_ms) VALUES ('acme', 'Acme', '{}', 1); \
             INSERT INTO tenant_epochs (tenant_id, epoch) VALUES ('acme', 0); \
             INSERT INTO whatsapp_numbers (phone_number_id, tenant_id, access_token) \
             VALUES ('{PHONE}', 'acme', '{TOKEN}'); \
             INSERT INTO webhooks (id, tenant_id, url, secret, created_ms) \
             VALUES ('wh_1', 'acme', 'https://example.com/hook', '{WEBHOOK_SECRET}', 1)",
            llm_config()
        ))
        .await;
    assert_secrets_read(&store).await;
    // a value under a key this store lacks is left alone, and does not stop the sealing
    let other = database
        .store(Keyring::new(SecretsKey::generate(), []))
        .await;
    let globex = tenant_with_llm(TenantId::new("globex").unwrap());
    other.upsert_tenant(&globex).await.unwrap();
    other.close().await;
    let reports = store.seal_plaintext_secrets().await.unwrap();
    // the three columns written here, then the Web engine's (no rows in this test)
    let sealed: Vec<u64> = reports.iter().map(|r| r.sealed_plaintext).collect();
    assert_eq!(sealed, vec![1, 1, 1, 0, 0, 0, 0, 0, 0], "{reports:?}");
    let again = store.seal_plaintext_secrets().await.unwrap();
    let unchanged: Vec<u64> = again.iter().map(|r| r.unchanged).collect();
    assert_eq!(unchanged, vec![1, 2, 1, 0, 0, 0, 0, 0, 0], "{again:?}");
    assert!(again.iter().all(|r| r.sealed_plaintext == 0));
    database
        .execute("DELETE FROM tenants WHERE id = 'globex'")
        .await;
    assert_secrets_read(&store).await;
    store.close().await;
    assert_no_secret_in(&database.raw().await, "the database after sealing");
}

async fn rotation_encrypts_everything_under_the_new_key(db: Db) {
    let database = Database::fresh(db).await;
    let old = SecretsKey::generate();
    let store = database.store(Keyring::new(old.clone(), [])).await;
    write_secrets(&store).await;
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let new_key_file = dir.path().join("new.key");
    let config = Config {
        database_url: Some(database.url.clone()),
        data_dir: dir.path().join("data"),
        secrets_key: Some(SecretString::from(old.to_base64().to_string())),
        ..Config::default()
    };
    let mut out = Vec::new();
    let reports = rotate(&config, Some(&new_key_file), &mut out)
        .await
        .unwrap();
    let printed = String::from_utf8(out).unwrap();
    // the three columns written here; the Web engine's have no rows in this test
    let written: Vec<_> = reports.iter().filter(|r| r.rows > 0).collect();
    assert_eq!(written.len(), 3, "{printed}");
    assert!(written.iter().all(|r| r.resealed == 1), "{printed}");
    assert!(printed.contains("done, in one transaction"), "{printed}");
    assert!(
        printed.contains("whatsapp_numbers.access_token: 1 rows, 1 re-encrypted"),
        "{printed}"
    );
    assert!(!contains(printed.as_bytes(), TOKEN), "{printed}");
    assert_key_file_private(&new_key_file);

    let new = salesboy_node::secrets::keys::read_key_file(&new_key_file).unwrap();
    let rotated = database.store(Keyring::new(new.clone(), [])).await;
    assert_secrets_read(&rotated).await;
    rotated.close().await;
    let old_only = database.store(Keyring::new(old, [])).await;
    let error = read_error(&old_only).await;
    assert!(error.contains(new.id()), "{error}");
    old_only.close().await;
    assert_no_secret_in(&database.raw().await, "the database after rotation");

    // with the new key configured and nothing to do, the command changes nothing
    let config = Config {
        secrets_key: None,
        secrets_key_file: Some(new_key_file),
        ..config
    };
    let reports = rotate(&config, None, &mut Vec::new()).await.unwrap();
    assert!(
        reports
            .iter()
            .all(|r| r.unchanged == r.rows && r.resealed == 0 && r.rows <= 1)
    );
    assert_eq!(reports.iter().filter(|r| r.rows == 1).count(), 3);
}

async fn a_node_encrypts_what_the_api_writes(db: Db) {
    let gateway = Gateway::start(db, |_| {}).await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", gateway.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let created = post(
        "/api/tenants",
        json!({"id": "acme", "phone_number_id": PHONE, "access_token": TOKEN,
               "llm": [{"kind": "openai", "model": "m", "api_key": API_KEY}]}),
    )
    .await
    .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let hook = post(
        "/api/tenants/acme/webhooks",
        json!({"url": "https://example.com/hook", "secret": WEBHOOK_SECRET}),
    )
    .await
    .unwrap();
    assert_eq!(hook.status().as_u16(), 201);
    let shown = http
        .get(format!("{}/api/tenants/acme", gateway.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [TOKEN, API_KEY, WEBHOOK_SECRET] {
        assert!(!shown.contains(secret), "{shown}");
    }
    let tenant = gateway.store().tenant(&acme()).await.unwrap().unwrap();
    assert_eq!(tenant.numbers[0].access_token.expose(), TOKEN);

    let url = gateway.config.effective_database_url();
    let raw = match salesboy_node::secrets::files::sqlite_file(&url) {
        Some(file) => {
            let data_dir = &gateway.config.data_dir;
            assert_mode(data_dir, 0o700);
            assert_mode(&file, 0o600);
            for suffix in ["-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(suffix);
                assert_mode(Path::new(&name), 0o600);
            }
            assert_key_file_private(&data_dir.join(KEY_FILE_NAME));
            let mut bytes = std::fs::read(&file).unwrap();
            let mut wal = file.into_os_string();
            wal.push("-wal");
            bytes.extend(std::fs::read(&wal).unwrap());
            bytes
        }
        None => dump_postgres(&url).await,
    };
    assert_no_secret_in(&raw, "the node's database");
}

fn assert_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let actual = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(actual, mode, "mode of {}: {actual:o}", path.display());
}

fn assert_key_file_private(path: &Path) {
    assert_mode(path, 0o600);
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        SecretsKey::parse(&text).is_ok(),
        "{} holds no key",
        path.display()
    );
}

#[tokio::test]
async fn postgres_without_a_key_is_refused_with_a_clear_error() {
    let postgres = PostgresDatabase::create().await.expect("test postgres");
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        database_url: Some(postgres.url().to_owned()),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        ..Config::default()
    };
    let error = match salesboy_node::run::start_with_bus(config, None).await {
        Ok(_) => panic!("a node on postgres without a secrets key must not start"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("SALESBOY_SECRETS_KEY"), "{error}");
    assert!(!error.contains("postgres:postgres@"), "{error}");
}

#[tokio::test]
async fn the_embedded_key_is_rotated_by_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    let url = config.effective_database_url();
    let open = || async {
        let (keys, _) = salesboy_node::secrets::keyring_for(&config, &url).unwrap();
        SqlStore::connect(&url).await.unwrap().with_secrets(keys)
    };
    let store = open().await;
    write_secrets(&store).await;
    store.close().await;
    let old_key = std::fs::read_to_string(data.join(KEY_FILE_NAME)).unwrap();

    let new_key_file = dir.path().join("new.key");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_salesboy"))
        .args(["secrets", "rotate", "--new-key-file"])
        .arg(&new_key_file)
        .env_clear()
        .env("SALESBOY_DATA_DIR", &data)
        .output()
        .expect("salesboy runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("webhooks.secret: 1 rows, 1 re-encrypted"),
        "{printed}"
    );
    assert!(printed.contains("next: stop the node, move"), "{printed}");
    for secret in [TOKEN, API_KEY, WEBHOOK_SECRET, old_key.trim()] {
        assert!(!printed.contains(secret), "{printed}");
    }

    std::fs::rename(&new_key_file, data.join(KEY_FILE_NAME)).unwrap();
    let store = open().await;
    assert_secrets_read(&store).await;
    store.close().await;
    let raw = std::fs::read(salesboy_node::secrets::files::sqlite_file(&url).unwrap()).unwrap();
    assert_no_secret_in(&raw, "the rotated embedded database");
}
