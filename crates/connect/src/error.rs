use std::fmt;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem in an adapter's configuration, located in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the file could not be read at all.
    pub line: u32,
    pub column: u32,
    /// The key path, such as `adapters.bakery.writer.url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in the configuration (at least one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Everything the integration gateway's operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The adapters' configuration is invalid; nothing was changed.
    #[error("invalid adapter configuration:\n{0}")]
    Config(ConfigErrors),

    /// No adapter has this name.
    #[error("adapter `{0}` not found")]
    UnknownAdapter(String),

    /// An argument is invalid (`field` names it); nothing was changed.
    #[error("invalid `{field}`: {reason}")]
    InvalidInput { field: String, reason: String },

    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] switchyard_store::Error),

    /// The journal failed or refused.
    #[error(transparent)]
    Journal(#[from] switchyard_journal::Error),

    /// This instance is a standby: replies go to the active side.
    #[error("this instance is a standby: it takes no replies until it is promoted")]
    Standby,

    /// The gateway is shutting down.
    #[error("the integration gateway is shutting down")]
    Closed,
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
