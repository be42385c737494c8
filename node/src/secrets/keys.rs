//! Where the secrets keys come from.
//!
//! The current key is, in order: `secrets_key` (base64 or hex), `secrets_key_file` (a file
//! holding one); with neither, on an SQLite database in a file, the key file
//! [`KEY_FILE_NAME`] beside the database (in the data dir for the embedded default), made
//! with mode 0600 on first start and read afterwards; on an in-memory SQLite database a key
//! that lives as long as the process (so does the database). PostgreSQL without a key is
//! refused: nodes sharing one database must share one key, and no node can make it for the
//! others. `secrets_previous_key` / `secrets_previous_key_file` add a key that only opens,
//! for rotations.

use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::files::{create_private, sqlite_file};
use super::{Keyring, SecretsError, SecretsKey};
use crate::config::Config;
use crate::store::{Dialect, redact_url};

/// The key file made beside an SQLite database when no key is configured.
pub const KEY_FILE_NAME: &str = "secrets.key";

/// Where the current key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `secrets_key`.
    Configured,
    /// `secrets_key_file`.
    File(PathBuf),
    /// The key file beside the SQLite database, read.
    BesideDatabase(PathBuf),
    /// The key file beside the SQLite database, made on this start.
    Generated(PathBuf),
    /// A key of this process only (an in-memory database).
    Ephemeral,
}

/// Why the keys could not be had. Never carries a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read the secrets key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file or setting does not hold a key.
    #[error("{what}: {source}")]
    Bad {
        /// The setting or file.
        what: String,
        /// What is wrong.
        source: SecretsError,
    },
    /// The key file beside the database could not be made.
    #[error("cannot write the secrets key file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// PostgreSQL without a configured key.
    #[error(
        "no secrets key for the database {database}: set SALESBOY_SECRETS_KEY or \
         SALESBOY_SECRETS_KEY_FILE, the same on every node (`salesboy secrets generate-key` \
         makes one)"
    )]
    Missing {
        /// The database, redacted.
        database: String,
    },
}

/// The keyring of a node on `database_url` configured by `config`, and where its current key
/// came from.
pub fn keyring_for(config: &Config, database_url: &str) -> Result<(Keyring, KeySource), KeyError> {
    let (current, source) = current_key(config, database_url)?;
    let previous = match (
        &config.secrets_previous_key,
        &config.secrets_previous_key_file,
    ) {
        (Some(key), _) => Some(parse(key.expose_secret(), "secrets_previous_key")?),
        (None, Some(path)) => Some(read_key_file(path)?),
        (None, None) => None,
    };
    Ok((Keyring::new(current, previous), source))
}

/// Reads the key a key file holds.
pub fn read_key_file(path: &Path) -> Result<SecretsKey, KeyError> {
    let text = secrecy::SecretString::from(std::fs::read_to_string(path).map_err(|source| {
        KeyError::Read {
            path: path.to_owned(),
            source,
        }
    })?);
    parse(
        text.expose_secret(),
        &format!("the secrets key file {}", path.display()),
    )
}

/// The key in `path`, made (mode 0600) when the file does not exist; whether it was made.
pub fn read_or_create_key_file(path: &Path) -> Result<(SecretsKey, bool), KeyError> {
    let key = SecretsKey::generate();
    let created = create_private(path, &key.to_base64()).map_err(|source| KeyError::Write {
        path: path.to_owned(),
        source,
    })?;
    if created {
        Ok((key, true))
    } else {
        Ok((read_key_file(path)?, false))
    }
}

fn current_key(config: &Config, database_url: &str) -> Result<(SecretsKey, KeySource), KeyError> {
    if let Some(key) = &config.secrets_key {
        return Ok((
            parse(key.expose_secret(), "secrets_key")?,
            KeySource::Configured,
        ));
    }
    if let Some(path) = &config.secrets_key_file {
        return Ok((read_key_file(path)?, KeySource::File(path.clone())));
    }
    let dialect = Dialect::from_url(database_url).ok();
    if dialect != Some(Dialect::Sqlite) {
        return Err(KeyError::Missing {
            database: redact_url(database_url),
        });
    }
    let Some(database) = sqlite_file(database_url) else {
        return Ok((SecretsKey::generate(), KeySource::Ephemeral));
    };
    let path = database
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(KEY_FILE_NAME);
    let (key, created) = read_or_create_key_file(&path)?;
    let source = if created {
        KeySource::Generated(path)
    } else {
        KeySource::BesideDatabase(path)
    };
    Ok((key, source))
}

fn parse(text: &str, what: &str) -> Result<SecretsKey, KeyError> {
    SecretsKey::parse(text).map_err(|source| KeyError::Bad {
        what: what.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_makes_its_key_beside_the_database_once_and_postgres_needs_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let config = Config::default();
        let (first, source) = keyring_for(&config, &url).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        assert_eq!(source, KeySource::Generated(path.clone()));
        let (again, source) = keyring_for(&config, &url).unwrap();
        assert_eq!(source, KeySource::BesideDatabase(path));
        assert_eq!(first.current().id(), again.current().id());
        let error = keyring_for(&config, "postgres://app:pw-planted@h/db").unwrap_err();
        assert!(matches!(error, KeyError::Missing { .. }), "{error}");
        assert!(!error.to_string().contains("pw-planted"), "{error}");
        let (_, source) = keyring_for(&config, "sqlite::memory:").unwrap();
        assert_eq!(source, KeySource::Ephemeral);
    }

    #[test]
    fn a_bad_key_file_is_named_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not-a-key-planted").unwrap();
        let config = Config {
            secrets_key_file: Some(path),
            ..Config::default()
        };
        let error = keyring_for(&config, "postgres://h/db")
            .unwrap_err()
            .to_string();
        assert!(error.contains("the secrets key file"), "{error}");
        assert!(!error.contains("planted"), "{error}");
    }
}
