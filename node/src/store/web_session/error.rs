//! [`WebSessionError`], and how it reaches the library: as the source of a `wacore`
//! `StoreError` (`Connection` when the database cannot be reached, `Database` otherwise), so
//! the session actor finds it again with [`WebSessionError::find`] and stops on a fenced
//! write instead of retrying.

use salesboy_actors::store::StoreError;
use salesboy_protocol::TenantId;
use whatsapp_rust::wacore::store::error::StoreError as LibraryError;

use super::super::error::{Failure, map_sqlx_error};

/// Why the Web engine's backend refused or failed an operation. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSessionError {
    /// A store error: [`StoreError::StaleEpoch`] when another node claimed a newer epoch
    /// (nothing was written), or a database or stored-row error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant's current epoch is older than the backend's or was never claimed: the
    /// backend was made before its epoch was claimed. Nothing was written.
    #[error(
        "web session of tenant {tenant} written at epoch {epoch}, which is not claimed \
         (current: {current:?})"
    )]
    EpochNotClaimed {
        /// The tenant written to.
        tenant: TenantId,
        /// The backend's epoch.
        epoch: u64,
        /// The tenant's current epoch, if it has one.
        current: Option<u64>,
    },
}

impl WebSessionError {
    /// Whether the write was refused by the fence: this node must stop the session (another
    /// owns the tenant, or this one has not claimed it).
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::StaleEpoch { .. }) | Self::EpochNotClaimed { .. }
        )
    }

    /// Our error inside one the library returned, if it came from this backend.
    pub fn find(error: &LibraryError) -> Option<&Self> {
        let mut source = std::error::Error::source(error);
        while let Some(error) = source {
            if let Some(ours) = error.downcast_ref::<Self>() {
                return Some(ours);
            }
            source = error.source();
        }
        None
    }
}

impl From<WebSessionError> for LibraryError {
    fn from(error: WebSessionError) -> Self {
        match error {
            WebSessionError::Store(StoreError::Unavailable { .. }) => {
                LibraryError::Connection(Box::new(error))
            }
            other => LibraryError::Database(Box::new(other)),
        }
    }
}

/// A failure inside the backend, before it is mapped (the database URL is needed for that).
#[derive(Debug)]
pub(super) enum Fault {
    /// A database error, mapped by the store's one mapper.
    Sql(sqlx::Error),
    /// An error already decided.
    Web(WebSessionError),
}

impl Fault {
    /// The library's error, ours as its source; `url` is already redacted.
    pub(super) fn into_library_error(self, url: &str) -> LibraryError {
        let error = match self {
            Self::Sql(error) => WebSessionError::Store(map_sqlx_error(error, url)),
            Self::Web(error) => error,
        };
        error.into()
    }

    /// A stored row that cannot be read back (named by `what`, never by its value).
    pub(super) fn invalid(what: &str, reason: impl std::fmt::Display) -> Self {
        Self::Web(WebSessionError::Store(StoreError::Invalid {
            reason: format!("stored {what} is invalid: {reason}"),
        }))
    }
}

impl From<sqlx::Error> for Fault {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<StoreError> for Fault {
    fn from(error: StoreError) -> Self {
        Self::Web(error.into())
    }
}

impl From<WebSessionError> for Fault {
    fn from(error: WebSessionError) -> Self {
        Self::Web(error)
    }
}

impl From<Failure> for Fault {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Sql(error) => Self::Sql(error),
            Failure::Store(error) => error.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_error_is_found_again_inside_the_librarys() {
        let tenant: TenantId = "acme".parse().unwrap();
        let stale = WebSessionError::Store(StoreError::StaleEpoch {
            tenant,
            given: 1,
            current: 2,
        });
        let library: LibraryError = stale.clone().into();
        assert!(matches!(library, LibraryError::Database(_)));
        let found = WebSessionError::find(&library).expect("our error is the source");
        assert_eq!(found, &stale);
        assert!(found.is_fenced());

        let down = WebSessionError::Store(StoreError::Unavailable {
            url: "postgres://u:***@h/db".to_owned(),
            reason: "refused".to_owned(),
        });
        let library: LibraryError = down.into();
        assert!(matches!(library, LibraryError::Connection(_)));
        assert!(!WebSessionError::find(&library).unwrap().is_fenced());
        assert!(WebSessionError::find(&LibraryError::Validation("x".into())).is_none());
    }
}
