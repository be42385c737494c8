//! Statements sent to the database together: on SQLite as one command to the connection's
//! thread (one hand-off there and one back, however many statements), on Postgres one after
//! the other.
//!
//! A SQLite connection runs on a thread of its own; each command handed to it costs a
//! wake-up of that thread and one of the caller's task with the answer, and under load these
//! round trips, not the statements, made up most of a group commit's time
//! (docs/benchmarks.md). SQLite runs the statements of one command in order, each seeing the
//! ones before, and reads a parameter named `$n` as the command's `n`th argument, so each
//! statement takes its parameters from [`RoundTrip::next_param`] on: on Postgres every
//! statement numbers its own from 1.

use futures::StreamExt;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Either, Executor};

use super::Dialect;
use super::error::Failure;
use salesboy_actors::store::StoreError;

/// Where a statement's rows are among a round trip's [`Answers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(usize);

/// Statements that go to the database in one round trip (on SQLite).
#[derive(Debug)]
pub(crate) struct RoundTrip {
    dialect: Dialect,
    statements: Vec<(String, Vec<String>)>,
    params: usize,
}

impl RoundTrip {
    /// No statements yet.
    pub(crate) fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            statements: Vec::new(),
            params: 0,
        }
    }

    /// The database the statements are for.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The number of the next statement's first parameter: 1 on Postgres; on SQLite the one
    /// after the parameters of the statements before it.
    pub(crate) fn next_param(&self) -> usize {
        match self.dialect {
            Dialect::Postgres => 1,
            Dialect::Sqlite => self.params + 1,
        }
    }

    /// Adds a statement (without a trailing `;`), its parameters numbered from
    /// [`next_param`](Self::next_param), all of them text.
    pub(crate) fn push(&mut self, sql: String, params: Vec<String>) -> Slot {
        self.params += params.len();
        self.statements.push((sql, params));
        Slot(self.statements.len() - 1)
    }

    /// Runs the statements in order; answers each one's rows (none for a statement that
    /// returns none). Nothing is sent when there are no statements.
    pub(crate) async fn run(self, tx: &mut AnyConnection) -> Result<Answers, Failure> {
        let count = self.statements.len();
        let mut rows = Vec::with_capacity(count);
        match self.dialect {
            Dialect::Postgres => {
                for (sql, params) in self.statements {
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for param in params {
                        query = query.bind(param);
                    }
                    rows.push(query.fetch_all(&mut *tx).await?);
                }
            }
            Dialect::Sqlite if count == 0 => {}
            Dialect::Sqlite => {
                let mut sql = String::new();
                let mut query_params = Vec::with_capacity(self.params);
                for (statement, params) in self.statements {
                    if !sql.is_empty() {
                        sql.push_str(";\n");
                    }
                    sql.push_str(&statement);
                    query_params.extend(params);
                }
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for param in query_params {
                    query = query.bind(param);
                }
                // Each statement's rows, then its result (every statement gives one).
                // (`Query::fetch_many` is deprecated for this; the executor's is the same call,
                // see decision 0023.)
                let mut stream = tx.fetch_many(query);
                let mut current = Vec::new();
                while let Some(item) = stream.next().await {
                    match item? {
                        Either::Left(_) => rows.push(std::mem::take(&mut current)),
                        Either::Right(row) => current.push(row),
                    }
                }
            }
        }
        if rows.len() != count {
            return Err(StoreError::Backend(format!(
                "{count} statements sent together gave {} results",
                rows.len()
            ))
            .into());
        }
        Ok(Answers(rows.into_iter().map(Some).collect()))
    }
}

/// The rows of a round trip's statements, each taken once by its [`Slot`].
pub(crate) struct Answers(Vec<Option<Vec<AnyRow>>>);

impl Answers {
    /// The rows of the statement at `slot`.
    pub(crate) fn take(&mut self, slot: Slot) -> Result<Vec<AnyRow>, Failure> {
        self.0
            .get_mut(slot.0)
            .and_then(Option::take)
            .ok_or_else(|| {
                StoreError::Backend("a statement's rows were taken twice".to_owned()).into()
            })
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{AnyConnection, Connection};

    use super::*;
    use crate::store::decode::get;

    /// Three statements in one round trip: their rows each in its slot, the third seeing
    /// what the first wrote, the parameters numbered across them on SQLite.
    async fn three_statements(dialect: Dialect, connection: &mut AnyConnection) {
        let empty = RoundTrip::new(dialect);
        assert_eq!(empty.next_param(), 1);
        assert!(empty.run(&mut *connection).await.is_ok());

        let mut round = RoundTrip::new(dialect);
        let first = round.next_param();
        let inserted = round.push(
            format!(
                "INSERT INTO t (v) VALUES (${first}), (${}) RETURNING v",
                first + 1
            ),
            vec!["a".to_owned(), "b".to_owned()],
        );
        let second = round.next_param();
        assert_eq!(second, if dialect == Dialect::Sqlite { 3 } else { 1 });
        let updated = round.push(
            format!("UPDATE t SET v = ${second} WHERE v = 'b'"),
            vec!["c".to_owned()],
        );
        let read = round.push(
            format!(
                "SELECT v FROM t WHERE v <> ${} ORDER BY v",
                round.next_param()
            ),
            vec!["z".to_owned()],
        );
        let mut answers = round.run(&mut *connection).await.unwrap();
        let values = |rows: Vec<AnyRow>| -> Vec<String> {
            rows.iter().map(|row| get(row, "v").unwrap()).collect()
        };
        assert_eq!(values(answers.take(inserted).unwrap()), ["a", "b"]);
        assert!(answers.take(updated).unwrap().is_empty());
        assert_eq!(values(answers.take(read).unwrap()), ["a", "c"]);
        assert!(answers.take(read).is_err(), "rows are taken once");

        // A statement that fails fails the round trip.
        let mut round = RoundTrip::new(dialect);
        round.push("SELECT v FROM t".to_owned(), Vec::new());
        round.push("SELECT nothing FROM no_such_table".to_owned(), Vec::new());
        assert!(round.run(&mut *connection).await.is_err());
    }

    #[tokio::test]
    async fn statements_sent_together_on_sqlite() {
        sqlx::any::install_default_drivers();
        let mut connection = AnyConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut connection)
            .await
            .unwrap();
        three_statements(Dialect::Sqlite, &mut connection).await;
    }

    #[tokio::test]
    async fn statements_one_after_the_other_on_postgres() {
        sqlx::any::install_default_drivers();
        let url = salesboy_testkit::postgres::admin_url();
        let mut connection = AnyConnection::connect(&url).await.unwrap_or_else(|e| {
            panic!("cannot reach the test postgres ({e}); start it with scripts/test")
        });
        sqlx::query("CREATE TEMP TABLE t (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&mut connection)
            .await
            .unwrap();
        three_statements(Dialect::Postgres, &mut connection).await;
    }
}
