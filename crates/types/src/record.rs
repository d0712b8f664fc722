use bytes::Bytes;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. The journal stamps every record with its append time;
/// within a partition timestamps never decrease, which is what makes time seeks exact.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self - d`, saturating at the epoch's lower bound of `i64`.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }
}

/// A record to append.
///
/// `id` is the dedup key: a record whose id was already appended to the topic within the
/// topic's dedup window is not appended again. `key` is the partition key: it picks the
/// partition (see [`crate::partition_for_key`]) and is what optimistic concurrency checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub id: Option<String>,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub payload: Bytes,
}

impl Record {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A record as read back from the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp: Timestamp,
    pub id: Option<String>,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub payload: Bytes,
}

/// What an optimistic-concurrency append requires of the key's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No record with this key exists yet (in the partition's retained history).
    NoRecord,
    /// The key's last record is at exactly this offset.
    LastOffset(u64),
}

/// A condition on an append: the batch is appended only if `key`'s last record matches
/// `expected`; otherwise the append fails with a conflict and nothing is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub key: Bytes,
    pub expected: Expected,
}
