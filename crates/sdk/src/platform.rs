//! [`Platform`]: how a service reaches Switchyard. Over HTTP ([`Client`]) from a process of
//! its own, or straight on the journal (`Arc<dyn Journal>`) when it is hosted in the process
//! that holds the journal (`switchyard dev`, benchmarks, tests): the same events in the same
//! form either way, with no HTTP hop in the second.

use crate::client::{Client, PartitionExtent, Placed};
use crate::error::{Error, Result};
use crate::event::CloudEvent;
use bytes::Bytes;
use std::sync::Arc;
use switchyard_journal::{Journal, PartitionChoice, ReadLimits};
use switchyard_types::{Expectation, Expected, Partition, TopicName};

#[derive(Clone)]
pub enum Platform {
    Http(Client),
    Journal(Arc<dyn Journal>),
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Platform::Http(c) => write!(f, "Platform::Http({})", c.base_url()),
            Platform::Journal(_) => f.write_str("Platform::Journal(in process)"),
        }
    }
}

fn topic_name(topic: &str) -> Result<TopicName> {
    TopicName::new(topic).map_err(|e| Error::config("topic", format!("{topic:?}: {e}")))
}

/// A journal error, with a conflict as the SDK's [`Error::Conflict`].
fn journal_error(e: switchyard_journal::Error) -> Error {
    match e {
        switchyard_journal::Error::Conflict {
            key,
            expected,
            actual,
            ..
        } => Error::Conflict {
            key,
            expected: match expected {
                Expected::NoRecord => "none".into(),
                Expected::LastOffset(o) => o.to_string(),
            },
            actual,
        },
        other => Error::Journal(other),
    }
}

impl Platform {
    /// Appends `events` to `topic`, each to its key's partition (round-robin without a
    /// key), deduplicated by event id. With `expected`, every event must have the same
    /// partition key, and nothing is appended unless that key's last offset matches.
    pub async fn publish(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
        expected: Option<Expected>,
    ) -> Result<Vec<Placed>> {
        let journal = match self {
            Platform::Http(c) => return c.publish(topic, &events, expected).await,
            Platform::Journal(j) => j,
        };
        let name = topic_name(topic)?;
        let expectation = match expected {
            None => None,
            Some(expected) => {
                let key = events
                    .first()
                    .and_then(CloudEvent::partition_key)
                    .ok_or_else(|| {
                        Error::invalid("partitionkey", "a conditional append needs a partition key")
                    })?;
                if events.iter().any(|e| e.partition_key() != Some(key)) {
                    return Err(Error::invalid(
                        "partitionkey",
                        "a conditional append applies to one key: every event needs the same",
                    ));
                }
                Some(Expectation {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    expected,
                })
            }
        };
        // Group by partition, keeping each event's place in the answer.
        let mut groups: Vec<(Partition, Vec<usize>, Vec<switchyard_types::Record>)> = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let choice = match e.partition_key() {
                Some(k) => PartitionChoice::Key(Bytes::copy_from_slice(k.as_bytes())),
                None => PartitionChoice::RoundRobin,
            };
            let p = journal
                .choose_partition(&name, &choice)
                .await
                .map_err(journal_error)?;
            let g = match groups.iter().position(|g| g.0 == p) {
                Some(g) => g,
                None => {
                    groups.push((p, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.push(e.to_record());
        }
        let mut placed: Vec<Option<Placed>> = vec![None; events.len()];
        for (p, places, records) in groups {
            let appended = journal
                .append(&name, p, records, expectation.clone())
                .await
                .map_err(journal_error)?;
            for (i, a) in places.into_iter().zip(appended) {
                placed[i] = Some(Placed {
                    id: events[i].id().to_string(),
                    partition: a.partition,
                    offset: a.offset,
                    duplicate: a.duplicate,
                });
            }
        }
        placed
            .into_iter()
            .map(|p| p.ok_or_else(|| Error::Stopped("the journal answered fewer records".into())))
            .collect()
    }

    /// Each partition's extent.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionExtent>> {
        match self {
            Platform::Http(c) => c.partitions(topic).await,
            Platform::Journal(j) => {
                let info = j
                    .describe_topic(&topic_name(topic)?)
                    .await
                    .map_err(journal_error)?;
                Ok(info
                    .partitions
                    .iter()
                    .map(|p| PartitionExtent {
                        partition: p.partition,
                        first_offset: p.first_offset,
                        next_offset: p.next_offset,
                    })
                    .collect())
            }
        }
    }

    /// The partition that holds `key`'s events.
    pub async fn partition_of(&self, topic: &str, key: &str) -> Result<Partition> {
        match self {
            Platform::Http(_) => {
                let n = self.partitions(topic).await?.len() as u32;
                Ok(switchyard_types::partition_for_key(
                    key.as_bytes(),
                    n.max(1),
                ))
            }
            Platform::Journal(j) => j
                .choose_partition(
                    &topic_name(topic)?,
                    &PartitionChoice::Key(Bytes::copy_from_slice(key.as_bytes())),
                )
                .await
                .map_err(journal_error),
        }
    }

    /// Up to `max` events of one partition at offsets `>= from`, and the offset to continue
    /// from.
    pub async fn read(
        &self,
        topic: &str,
        partition: Partition,
        from: u64,
        max: usize,
    ) -> Result<(Vec<CloudEvent>, u64)> {
        match self {
            Platform::Http(c) => {
                let page = c
                    .read(topic, Some(partition), &from.to_string(), max)
                    .await?;
                let next = page
                    .events
                    .last()
                    .and_then(CloudEvent::sequence)
                    .map_or(from, |s| s + 1);
                Ok((page.events, next))
            }
            Platform::Journal(j) => {
                let batch = j
                    .read(
                        &topic_name(topic)?,
                        partition,
                        from,
                        ReadLimits {
                            max_records: max.max(1),
                            ..ReadLimits::default()
                        },
                    )
                    .await
                    .map_err(journal_error)?;
                let events = batch
                    .records
                    .iter()
                    .map(|r| CloudEvent::from_record(r, partition))
                    .collect();
                Ok((events, batch.next_offset))
            }
        }
    }

    /// Follows one partition from `from`: every event, as it is appended.
    pub fn follow(&self, topic: &str, partition: Partition, from: u64) -> Follow {
        Follow {
            platform: self.clone(),
            topic: topic.to_string(),
            partition,
            next: from,
            stream: match self {
                Platform::Http(c) => Some(c.stream(topic, Some(partition), &from.to_string())),
                Platform::Journal(_) => None,
            },
        }
    }
}

/// One partition, followed (see [`Platform::follow`]).
#[derive(Debug)]
pub struct Follow {
    platform: Platform,
    topic: String,
    partition: Partition,
    next: u64,
    stream: Option<crate::client::EventStream>,
}

impl Follow {
    /// The next events (at least one), waiting for them without polling.
    pub async fn next_batch(&mut self) -> Result<Vec<CloudEvent>> {
        if let Some(s) = &mut self.stream {
            let first = s.next().await?;
            if let Some(seq) = first.sequence() {
                self.next = seq + 1;
            }
            return Ok(vec![first]);
        }
        let Platform::Journal(j) = &self.platform else {
            return Err(Error::Stopped("no stream".into()));
        };
        let name = topic_name(&self.topic)?;
        loop {
            let (events, next) = self
                .platform
                .read(&self.topic, self.partition, self.next, 256)
                .await?;
            self.next = next.max(self.next);
            if !events.is_empty() {
                return Ok(events);
            }
            j.wait_for(&name, self.partition, self.next)
                .await
                .map_err(journal_error)?;
        }
    }
}
