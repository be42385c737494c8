//! From database errors to [`StoreError`], and keeping passwords out of messages.
//!
//! [`map_sqlx_error`] is the one place where a sqlx error becomes a [`StoreError`]; the
//! store's functions return [`Failure`] so `?` works on sqlx and store errors alike, and the
//! [`Store`](salesboy_actors::store::Store) implementation converts once, at the boundary.

use salesboy_actors::store::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::migrate::MigrateError;

/// An error inside the store, before it is mapped to a [`StoreError`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// A database error, mapped by [`map_sqlx_error`].
    Sql(sqlx::Error),
    /// An error already decided by the store (stale epoch, not found, invalid row…).
    Store(StoreError),
}

impl Failure {
    /// Whether the connection it ran on was lost: an I/O, TLS or protocol error, SQLite's
    /// thread gone, or a PostgreSQL error of class 08 (connection exception) or 57P (the
    /// server shutting down).
    pub(crate) fn lost_connection(&self) -> bool {
        match self {
            Self::Sql(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            Self::Sql(sqlx::Error::Database(error)) => error.code().is_some_and(|code| {
                code.len() == 5 && (code.starts_with("08") || code.starts_with("57P"))
            }),
            _ => false,
        }
    }

    /// When the connection failed rather than a statement — none could be had (the pool
    /// timed out or is closed) or the one in use was lost (I/O, TLS, protocol, SQLite's
    /// thread gone) — an equal failure for another caller; `None` for any other failure.
    /// Once a group commit's writes can get no connection, each write left gets one instead
    /// of waiting for a connection in turn (`store::writer`).
    pub(crate) fn connection_failure_again(&self) -> Option<Self> {
        let Self::Sql(error) = self else {
            return None;
        };
        let again = match error {
            sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(e) => sqlx::Error::Io(std::io::Error::new(e.kind(), e.to_string())),
            sqlx::Error::Tls(e) => sqlx::Error::Tls(e.to_string().into()),
            sqlx::Error::Protocol(e) => sqlx::Error::Protocol(e.clone()),
            _ => return None,
        };
        Some(Self::Sql(again))
    }

    /// The [`StoreError`] for the caller; `url` must already be redacted.
    pub(crate) fn into_store_error(self, url: &str) -> StoreError {
        match self {
            Self::Sql(error) => map_sqlx_error(error, url),
            Self::Store(error) => error,
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// Maps a sqlx error to a [`StoreError`]. `url` (already redacted) names the database in
/// [`StoreError::Unavailable`].
pub(crate) fn map_sqlx_error(error: sqlx::Error, url: &str) -> StoreError {
    let unavailable = |reason: String| StoreError::Unavailable {
        url: url.to_owned(),
        reason,
    };
    match error {
        sqlx::Error::Io(e) => unavailable(format!("io error: {e}")),
        sqlx::Error::Tls(e) => unavailable(format!("tls error: {e}")),
        sqlx::Error::PoolTimedOut => {
            unavailable("timed out waiting for a database connection".to_owned())
        }
        sqlx::Error::PoolClosed => unavailable("the connection pool is closed".to_owned()),
        sqlx::Error::WorkerCrashed => unavailable("the sqlite worker thread crashed".to_owned()),
        sqlx::Error::Protocol(e) => unavailable(format!("protocol error: {e}")),
        sqlx::Error::Database(e) => map_database_error(e.as_ref(), url),
        sqlx::Error::RowNotFound => StoreError::NotFound {
            what: "row".to_owned(),
        },
        sqlx::Error::Configuration(e) => StoreError::Invalid {
            reason: format!("database configuration: {e}"),
        },
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::InvalidArgument(_)) => StoreError::Invalid {
            reason: e.to_string(),
        },
        sqlx::Error::Migrate(e) => match *e {
            MigrateError::Execute(inner) => map_sqlx_error(inner, url),
            MigrateError::ExecuteMigration(inner, version) => match map_sqlx_error(inner, url) {
                StoreError::Unavailable { url, reason } => StoreError::Unavailable {
                    url,
                    reason: format!("while applying migration {version}: {reason}"),
                },
                other => StoreError::Backend(format!("migration {version} failed: {other}")),
            },
            other => StoreError::Backend(format!("migrations: {other}")),
        },
        other => StoreError::Backend(other.to_string()),
    }
}

/// Constraint violations become [`StoreError::Conflict`] / [`StoreError::Invalid`]; errors
/// that mean "the server cannot serve now" become [`StoreError::Unavailable`].
fn map_database_error(error: &dyn DatabaseError, url: &str) -> StoreError {
    let message = error.message().to_owned();
    match error.kind() {
        ErrorKind::UniqueViolation => return StoreError::Conflict { reason: message },
        ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation
        | ErrorKind::ExclusionViolation => return StoreError::Invalid { reason: message },
        _ => {}
    }
    let code = error
        .code()
        .map(|code| code.into_owned())
        .unwrap_or_default();
    if is_unavailable_code(&code) {
        return StoreError::Unavailable {
            url: url.to_owned(),
            reason: format!("{message} (code {code})"),
        };
    }
    if code.is_empty() {
        StoreError::Backend(message)
    } else {
        StoreError::Backend(format!("{message} (code {code})"))
    }
}

/// Postgres SQLSTATEs (always five characters) of classes 08 (connection exception),
/// 53 (insufficient resources) and 57P (shutdown, cannot connect now); SQLite result codes
/// (decimal numbers) whose primary code is BUSY, LOCKED, IOERR, FULL or CANTOPEN.
fn is_unavailable_code(code: &str) -> bool {
    // SQLSTATEs are exactly five characters; SQLite's extended result codes stay below 10 000
    if code.len() == 5 {
        return code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    }
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    const SQLITE_IOERR: i64 = 10;
    const SQLITE_FULL: i64 = 13;
    const SQLITE_CANTOPEN: i64 = 14;
    code.parse::<i64>().is_ok_and(|code| {
        matches!(
            code & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
        )
    })
}

/// The URL with its password replaced by `***`: in the user info
/// (`postgres://user:***@host/db`) and in `password=` / `sslpassword=` query parameters.
/// SQLite URLs (no credentials) and strings that are not URLs come back unchanged.
///
/// Errs on the side of hiding: the user info is taken to end at the *last* `@`, so a
/// password with an unencoded `@`, `/` or `?` is still hidden.
pub fn redact_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let (mut out, rest) = match url[authority_start..].rfind('@') {
        Some(at) => {
            let user_info = &url[authority_start..authority_start + at];
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            let masked = if user.len() < user_info.len() {
                ":***"
            } else {
                ""
            };
            (
                format!("{}{user}{masked}", &url[..authority_start]),
                &url[authority_start + at..],
            )
        }
        None => (url[..authority_start].to_owned(), &url[authority_start..]),
    };
    match rest.split_once('?') {
        None => out.push_str(rest),
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if is_password_key(key) => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
    }
    out
}

fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_told_from_statement_failures_and_repeated_alike() {
        let url = "postgres://u:***@host/db";
        let connection = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::WorkerCrashed,
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            )),
            sqlx::Error::Tls("handshake failed".into()),
            sqlx::Error::Protocol("unexpected message".to_owned()),
        ];
        for error in connection {
            let failure = Failure::Sql(error);
            let again = failure
                .connection_failure_again()
                .unwrap_or_else(|| panic!("{failure:?} is a connection failure"));
            assert_eq!(again.lost_connection(), failure.lost_connection());
            let (first, second) = (failure.into_store_error(url), again.into_store_error(url));
            assert!(matches!(first, StoreError::Unavailable { .. }), "{first:?}");
            assert_eq!(first, second);
        }
        let statement = [
            Failure::Sql(sqlx::Error::RowNotFound),
            Failure::Sql(sqlx::Error::ColumnNotFound("id".to_owned())),
            Failure::Store(StoreError::NotFound {
                what: "row".to_owned(),
            }),
        ];
        for failure in statement {
            assert!(
                failure.connection_failure_again().is_none(),
                "{failure:?} is no connection failure"
            );
        }
    }

    #[test]
    fn passwords_in_user_info_are_replaced() {
        assert_eq!(
            redact_url("postgres://postgres:secretpw@127.0.0.1:5432/salesboy"),
            "postgres://postgres:***@127.0.0.1:5432/salesboy"
        );
        assert_eq!(
            redact_url("postgresql://u:p%40ss@db.example.com/x?sslmode=require"),
            "postgresql://u:***@db.example.com/x?sslmode=require"
        );
        // an unencoded '@' in the password: the user info ends at the last '@'
        assert_eq!(
            redact_url("postgres://u:a@b@host/db"),
            "postgres://u:***@host/db"
        );
        // an empty password is still replaced, so its absence is not revealed either
        assert_eq!(
            redact_url("postgres://u:@host/db"),
            "postgres://u:***@host/db"
        );
    }

    #[test]
    fn passwords_in_query_parameters_are_replaced() {
        assert_eq!(
            redact_url("postgres://host/db?user=u&password=hunter2&sslmode=require"),
            "postgres://host/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://host/db?sslpassword=k&Password=p"),
            "postgres://host/db?sslpassword=***&Password=***"
        );
    }

    #[test]
    fn urls_without_passwords_are_unchanged() {
        for url in [
            "postgres://postgres@127.0.0.1/x",
            "postgres://127.0.0.1:5432/x",
            "sqlite://./salesboy-data/salesboy.db?mode=rwc",
            "sqlite::memory:",
            "not a url",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn passwords_with_url_delimiters_are_still_hidden() {
        for (url, hidden) in [
            ("postgres://u:pa/ss@host/db", "pa/ss"),
            ("postgres://u:pa?ss@host/db", "pa?ss"),
            ("postgres://u:p@ss:w@host:5432/db", "p@ss:w"),
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains(hidden), "{url} gave {redacted}");
            assert!(
                redacted.starts_with("postgres://u:***@"),
                "{url} gave {redacted}"
            );
        }
    }

    #[test]
    fn sqlite_paths_are_not_credentials() {
        assert_eq!(
            redact_url("sqlite:///data/a:b@c.db?mode=rwc"),
            "sqlite:///data/a:b@c.db?mode=rwc"
        );
    }

    #[test]
    fn connection_trouble_codes_mean_unavailable() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "5", "6", "261", "517", "10",
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "40001", "19", "2067", "1", ""] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn pool_timeouts_name_the_redacted_url() {
        let error = map_sqlx_error(sqlx::Error::PoolTimedOut, "postgres://u:***@h/db");
        assert_eq!(
            error,
            StoreError::Unavailable {
                url: "postgres://u:***@h/db".to_owned(),
                reason: "timed out waiting for a database connection".to_owned(),
            }
        );
    }
}
