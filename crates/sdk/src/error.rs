//! The SDK's errors, and what a handler answers when it cannot handle an event.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A problem+json answer of the Switchyard API (RFC 9457): the status, the stable `code`
/// to match on, the detail for people, and the pointer to the bad part when there is one.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub status: u16,
    pub code: String,
    pub detail: String,
    pub pointer: Option<String>,
    /// Every member of the answer, as sent (`actual-offset` on a conflict, ...).
    pub body: serde_json::Value,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)?;
        if let Some(p) = &self.pointer {
            write!(f, " (at {p})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with a problem (other than an offset conflict).
    #[error("switchyard answered {0}")]
    Problem(Problem),
    /// An append that required the key's last offset to be `expected` found `actual`
    /// (`None`: no record of the key yet). Nothing was appended.
    #[error("offset conflict on key {key:?}: expected {expected}, the key's last offset is {}",
        actual.map_or("none".to_string(), |a| a.to_string()))]
    Conflict {
        key: String,
        expected: String,
        actual: Option<u64>,
    },
    /// The API could not be reached, or answered something that is not the API.
    #[error("{what}: {detail}")]
    Http { what: String, detail: String },
    /// An event that is not a valid CloudEvent, or whose data does not decode: `field`
    /// names the attribute (or `data`).
    #[error("invalid event: {field}: {detail}")]
    InvalidEvent { field: String, detail: String },
    /// The in-process journal refused or failed.
    #[error(transparent)]
    Journal(#[from] switchyard_journal::Error),
    /// The service's database.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A setting or argument that cannot work; `what` names it.
    #[error("{what}: {detail}")]
    Config { what: String, detail: String },
    /// The handler's transaction is over (the context was used after the handler returned).
    #[error(
        "the transaction of event {event_id} has ended: use the context only inside its handler"
    )]
    TransactionEnded { event_id: String },
    /// Something the SDK runs stopped: the service is shutting down.
    #[error("stopped: {0}")]
    Stopped(String),
}

impl Error {
    pub(crate) fn config(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Config {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::InvalidEvent {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// True when trying again later may succeed: the platform or the database was away or
    /// busy. False for errors that will repeat (a bad event, a refused setting, a conflict:
    /// reload first).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http { .. } | Error::Stopped(_) => true,
            Error::Problem(p) => matches!(p.status, 429 | 500..=599),
            Error::Journal(e) => matches!(
                e,
                switchyard_journal::Error::Io { .. }
                    | switchyard_journal::Error::Failed { .. }
                    | switchyard_journal::Error::Closed
            ),
            Error::Database(e) => !matches!(
                e,
                sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::TypeNotFound { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::Configuration(_)
            ),
            Error::Conflict { .. }
            | Error::InvalidEvent { .. }
            | Error::Config { .. }
            | Error::TransactionEnded { .. } => false,
        }
    }
}

/// Why a handler did not handle its event, which decides what happens to the event.
///
/// Any error converts into [`HandlerError::Retry`] (so `?` works on database calls); say
/// [`HandlerError::reject`] for data that can never be handled, and [`HandlerError::later`]
/// for "not yet" (another event has to come first).
#[derive(Debug)]
pub enum HandlerError {
    /// A transient failure: the event is retried with backoff, then parked after the
    /// service's attempts (pushed events: answered 500, the subscription retries).
    Retry(String),
    /// Not now: retried no earlier than `after` (pushed: 503 with `Retry-After`).
    Later { after: Duration, reason: String },
    /// Never going to work: parked at once for a person to look at (pushed: 400).
    Reject(String),
}

impl HandlerError {
    pub fn reject(why: impl std::fmt::Display) -> Self {
        HandlerError::Reject(why.to_string())
    }

    pub fn later(after: Duration, why: impl std::fmt::Display) -> Self {
        HandlerError::Later {
            after,
            reason: why.to_string(),
        }
    }

    pub fn retry(why: impl std::fmt::Display) -> Self {
        HandlerError::Retry(why.to_string())
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerError::Retry(why) => write!(f, "failed (will be retried): {why}"),
            HandlerError::Later { after, reason } => {
                write!(f, "not now (retry in {} ms): {reason}", after.as_millis())
            }
            HandlerError::Reject(why) => write!(f, "rejected: {why}"),
        }
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::Retry(e.to_string())
    }
}
