use std::path::PathBuf;
use switchyard_types::{ConfigError, Expected, Offset, Partition, TopicName, TopicNameError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a journal operation can fail with. Each variant names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic `{0}` not found")]
    TopicNotFound(TopicName),

    #[error("topic `{topic}` already exists with a different config")]
    TopicExists { topic: TopicName },

    #[error(transparent)]
    InvalidTopicName(#[from] TopicNameError),

    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),

    #[error("partition {partition} is out of range: topic `{topic}` has {partitions}")]
    PartitionOutOfRange {
        topic: TopicName,
        partition: Partition,
        partitions: u32,
    },

    #[error("invalid record {index} in batch: {reason}")]
    InvalidRecord { index: usize, reason: String },

    #[error(
        "conflict on topic `{topic}` partition {partition} key {key:?}: expected {expected:?}, \
         but the key's last offset is {actual:?}"
    )]
    Conflict {
        topic: TopicName,
        partition: Partition,
        key: String,
        expected: Expected,
        actual: Option<Offset>,
    },

    #[error(
        "corruption in topic `{topic}` partition {partition} at offset {offset} \
         ({path}, byte {position}): {reason}"
    )]
    Corrupt {
        topic: String,
        partition: Partition,
        offset: Offset,
        path: PathBuf,
        position: u64,
        reason: String,
    },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "topic `{topic}` partition {partition} stopped accepting writes after an I/O error \
         ({reason}); reopen the journal to recover"
    )]
    Failed {
        topic: TopicName,
        partition: Partition,
        reason: String,
    },

    #[error("journal directory {path} is locked by another process")]
    Locked { path: PathBuf },

    #[error("the journal is closed")]
    Closed,

    /// A distributed backend did not complete the operation (unreachable, no quorum, a
    /// timeout, a refusal). An append that ends so may or may not have been written:
    /// retrying it with the same record ids is safe.
    #[error("the journal backend did not complete {op}: {reason}")]
    Unavailable { op: &'static str, reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
