//! Suites run on both databases: a fresh SQLite or PostgreSQL database per test, a store on
//! it, and [`database_suite!`](crate::database_suite) to instantiate a suite's tests on both.
//!
//! SQLite lives in a temp dir, PostgreSQL in a [`PostgresDatabase`]; both are removed after
//! the test, also when it fails. A Postgres that cannot be reached fails the Postgres tests:
//! they are never skipped.

use std::future::Future;

use salesboy_node::secrets::{Keyring, SecretsKey};
use salesboy_node::store::{Dialect, SqlStore};
use tempfile::TempDir;
use tokio::task::JoinError;

use crate::postgres::PostgresDatabase;

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temp dir.
    Sqlite,
    /// A uniquely named database on the test PostgreSQL server.
    Postgres,
}

/// A fresh, empty database of one backend, removed when dropped.
#[derive(Debug)]
pub struct FreshDatabase {
    backend: Backend,
    url: String,
    _sqlite_dir: Option<TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl FreshDatabase {
    /// Creates the database; panics, naming the server, when Postgres cannot be reached.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("salesboy.db").display());
                Self {
                    backend,
                    url,
                    _sqlite_dir: Some(dir),
                    _postgres: None,
                }
            }
            Backend::Postgres => {
                let database = PostgresDatabase::create()
                    .await
                    .unwrap_or_else(|error| panic!("postgres tests need a server: {error}"));
                Self {
                    backend,
                    url: database.url().to_owned(),
                    _sqlite_dir: None,
                    _postgres: Some(database),
                }
            }
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on the database (migrated), encrypting secrets at rest as a node's does,
    /// under a key of its own.
    pub async fn store(&self) -> SqlStore {
        let store = SqlStore::connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("cannot open the {:?} store: {error}", self.backend))
            .with_secrets(Keyring::new(SecretsKey::generate(), []));
        let dialect = match self.backend {
            Backend::Sqlite => Dialect::Sqlite,
            Backend::Postgres => Dialect::Postgres,
        };
        assert_eq!(store.dialect(), dialect);
        store
    }
}

/// Runs `test` with the URL of a fresh database of `backend`, on a task of its own; the
/// database is removed afterwards, also when the test panics (the panic is then raised
/// again here).
pub async fn run_on_fresh_database<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = FreshDatabase::create(backend).await;
    let outcome = tokio::spawn(test(database.url().to_owned())).await;
    drop(database);
    resume_panic(outcome);
}

/// Runs `test` with a store on a fresh database of `backend` ([`FreshDatabase::store`])
/// and the database's URL (for plain SQL), on a task of its own; the store is closed and
/// the database removed afterwards, also when the test panics (the panic is then raised
/// again here).
pub async fn run_on_fresh_store<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(SqlStore, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = FreshDatabase::create(backend).await;
    let store = database.store().await;
    let outcome = tokio::spawn(test(store.clone(), database.url().to_owned())).await;
    store.close().await;
    drop(database);
    resume_panic(outcome);
}

fn resume_panic(outcome: Result<(), JoinError>) {
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Instantiates every listed test twice, `sqlite::<name>` and `postgres::<name>`, each as
/// `run_on(Backend::…, <name>)` with the `run_on` given first:
///
/// ```ignore
/// database_suite!(run_on => health_answers, tenants_round_trip);
/// ```
#[macro_export]
macro_rules! database_suite {
    ($run_on:ident => $($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$run_on($crate::Backend::Sqlite, super::$test).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$run_on($crate::Backend::Postgres, super::$test).await;
                }
            )*
        }
    };
}
