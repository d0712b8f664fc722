//! The journal: Switchyard's single source of truth.
//!
//! [`Journal`] is the contract every backend meets: topics of N partitions, atomic batch
//! appends acknowledged only once the topic's [`Durability`] is met, dedup by record id,
//! optimistic concurrency per key, reads from an offset or a time, and tailing without
//! polling. [`file::FileJournal`] is the embedded backend (a segmented, CRC-framed log);
//! [`nats::NatsJournal`] keeps topics in NATS JetStream streams, for several instances
//! sharing one cluster (see ARCHITECTURE.md for the mapping).
//! Every backend runs the same [`conformance`] suite (feature `test-util`).

mod error;
pub mod file;
pub mod nats;

#[cfg(feature = "test-util")]
pub mod conformance;
#[cfg(feature = "test-util")]
pub mod nats_server;

pub use error::{Error, Result};
pub use switchyard_types::{
    Durability, Expectation, Expected, Offset, Partition, Record, Retention, StoredRecord,
    Timestamp, TopicConfig, TopicName,
};

use async_trait::async_trait;

/// Where a batch goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionChoice {
    /// This exact partition.
    Explicit(Partition),
    /// The partition of this key: `(murmur2(key) & 0x7fffffff) % partitions`.
    Key(bytes::Bytes),
    /// The next partition in round-robin order.
    RoundRobin,
}

/// The outcome of appending one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The partition that holds the record (for a duplicate: the original's partition).
    pub partition: Partition,
    /// The record's offset (for a duplicate: the original's offset).
    pub offset: Offset,
    /// True when the id was already appended within the dedup window and nothing was written.
    pub duplicate: bool,
}

/// Limits on one read. A read returns at least one record when any is available at or
/// after `from`, even if that record alone exceeds `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_records: usize,
    pub max_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_records: 1000,
            max_bytes: 4 << 20,
        }
    }
}

/// A batch of records read from one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<StoredRecord>,
    /// Where the next read should start: one past the last record returned, or, when nothing
    /// was returned, the first offset that may hold a record at or after `from`.
    pub next_offset: Offset,
}

/// A partition's extent. Records live at offsets in `first_offset..next_offset` (possibly
/// with gaps, on backends that have them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionInfo {
    pub partition: Partition,
    /// The oldest retained offset (equal to `next_offset` when the partition is empty).
    pub first_offset: Offset,
    /// The offset the next appended record will have at least.
    pub next_offset: Offset,
    /// Bytes the partition occupies in the backend.
    pub bytes: u64,
    /// Time of the newest record, if any.
    pub last_timestamp: Option<Timestamp>,
}

/// A topic's settings and extent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TopicInfo {
    pub name: TopicName,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// The journal contract. Every method is safe to call concurrently from many tasks.
///
/// Offsets strictly increase within a partition; the file backend's are contiguous from 0,
/// the JetStream backend's are the stream sequence and may leave gaps. Callers must not
/// assume `offset + 1` is the next record: continue from [`ReadBatch::next_offset`].
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Creates a topic. Creating an existing topic with the same config succeeds and
    /// changes nothing; with a different config it fails with [`Error::TopicExists`].
    async fn create_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo>;

    /// Changes durability, dedup window, retention, segment size or index interval.
    /// The partition count cannot change ([`Error::InvalidConfig`]).
    async fn update_topic(&self, name: &TopicName, config: TopicConfig) -> Result<TopicInfo>;

    /// The topic's settings and per-partition extent.
    async fn describe_topic(&self, name: &TopicName) -> Result<TopicInfo>;

    /// Every topic's name, sorted.
    async fn list_topics(&self) -> Result<Vec<TopicName>>;

    /// Deletes the topic and all its records. Pending tails on it return
    /// [`Error::TopicNotFound`].
    async fn delete_topic(&self, name: &TopicName) -> Result<()>;

    /// The partition a record with this choice would go to. `RoundRobin` advances the
    /// topic's round-robin counter.
    async fn choose_partition(
        &self,
        topic: &TopicName,
        choice: &PartitionChoice,
    ) -> Result<Partition>;

    /// Appends `records` to one partition atomically: after a crash either every new
    /// record of the batch is present or none is. Returns once the topic's durability is met,
    /// with one [`Appended`] per input record, in order.
    ///
    /// Records whose id was appended to the topic within the dedup window are not written
    /// again; their entry reports the original's place with `duplicate: true`. If
    /// `expectation` is given and at least one record is new, the key's last offset in this
    /// partition must match or the call fails with [`Error::Conflict`] and writes nothing.
    async fn append(
        &self,
        topic: &TopicName,
        partition: Partition,
        records: Vec<Record>,
        expectation: Option<Expectation>,
    ) -> Result<Vec<Appended>>;

    /// Reads records at offsets `>= from`, in order. Starting before the oldest retained
    /// record starts at the oldest one. Never returns records that are not yet acknowledged.
    /// A corrupt record is never returned: the read stops before it, or fails with
    /// [`Error::Corrupt`] when it is the first one.
    async fn read(
        &self,
        topic: &TopicName,
        partition: Partition,
        from: Offset,
        limits: ReadLimits,
    ) -> Result<ReadBatch>;

    /// The first offset whose record's timestamp is `>= at`, or the partition's
    /// `next_offset` when every record is older.
    async fn offset_for_time(
        &self,
        topic: &TopicName,
        partition: Partition,
        at: Timestamp,
    ) -> Result<Offset>;

    /// Waits, without polling, until a record at an offset `>= offset` is readable, and
    /// returns the partition's new `next_offset`. Returns at once if one already is.
    /// Cancel-safe: drop the future to stop waiting.
    async fn wait_for(
        &self,
        topic: &TopicName,
        partition: Partition,
        offset: Offset,
    ) -> Result<Offset>;
}
