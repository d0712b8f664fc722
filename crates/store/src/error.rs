use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend's driver, kept as the `source` of [`Error::Backend`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store operation can fail with. Each variant names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing (`subscription`, `delivery`, `parked delivery`) does not exist.
    #[error("{what} `{name}` not found")]
    NotFound { what: &'static str, name: String },

    /// The operation contradicts the current state of the named thing.
    #[error("conflict on {what} `{name}`: {reason}")]
    Conflict {
        what: &'static str,
        name: String,
        reason: String,
    },

    /// An argument is invalid. `field` is the path of the bad value as it appears in the
    /// input (`retry.jitter`, `topics[2]`, `offset`); nothing was changed.
    #[error("invalid `{field}`: {reason}")]
    InvalidInput { field: String, reason: String },

    /// A row on disk does not parse: `table` and `key` say which one. Nothing is repaired
    /// silently; the row has to be fixed or deleted by hand.
    #[error("corrupt row in table `{table}` (key {key}): {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },

    /// The store could not be opened (the file is not a database, is unreadable, or holds a
    /// schema this version does not know).
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<BackendError>,
    },

    /// The backend failed while running `op` (the store operation, such as `enqueue`).
    #[error("store operation `{op}` failed: {source}")]
    Backend {
        op: &'static str,
        #[source]
        source: BackendError,
    },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            name: name.into(),
        }
    }

    pub(crate) fn backend(op: &'static str, source: impl Into<BackendError>) -> Self {
        Error::Backend {
            op,
            source: source.into(),
        }
    }
}
