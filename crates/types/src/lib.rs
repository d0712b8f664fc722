//! Switchyard's shared vocabulary: topic names, partitions and offsets, journal records,
//! durability and topic configuration, and the stable partition hash.
//!
//! Pure data: nothing in this crate does I/O, so every other crate (journal backends, the
//! store, the server, the SDK) can depend on it without pulling in a runtime.

mod config;
mod media;
mod partition;
mod record;
mod topic;

pub use config::{ConfigError, Durability, Retention, TopicConfig};
pub use media::{is_json_media_type, media_type_essence};
pub use partition::{murmur2, partition_for_key};
pub use record::{Expectation, Expected, Record, StoredRecord, Timestamp};
pub use topic::{TopicName, TopicNameError};

/// The most events a push subscription may carry in one POST (its `max-batch`): the store
/// and the manifests both hold subscriptions to it.
pub const MAX_BATCH: u32 = 1000;

/// A partition number within a topic, `0..partitions`.
pub type Partition = u32;

/// A record's position within its partition. Offsets strictly increase within a partition;
/// a backend may leave gaps (see `Journal` in `switchyard-journal`).
pub type Offset = u64;
