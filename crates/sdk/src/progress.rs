//! Where each pulling consumer of a [`crate::Host`] stands in its partitions, for whoever
//! runs the host: `switchyard dev` shows it on its status page, and `switchyard seed` waits
//! until in-process consumers have caught up, as it does for push subscriptions.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One consumer's place in one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConsumerPosition {
    /// The service that consumes.
    pub service: String,
    pub topic: String,
    pub partition: u32,
    /// Every event before this offset is finished: handled, parked, or not for this
    /// consumer.
    pub position: u64,
    /// Events read and not finished: being handled, or waiting for a retry.
    pub in_flight: u64,
}

type Key = (String, String, u32);

/// The positions of a host's consumers, written by their partition workers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Positions(Arc<Mutex<BTreeMap<Key, (u64, u64)>>>);

impl Positions {
    pub fn set(&self, service: &str, topic: &str, partition: u32, position: u64, in_flight: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let value = (position, in_flight);
        match map.get_mut(&(service.to_string(), topic.to_string(), partition)) {
            Some(v) => *v = value,
            None => {
                map.insert((service.to_string(), topic.to_string(), partition), value);
            }
        }
    }

    /// Forgets a service's positions (its run starts again from its stored cursors).
    pub fn forget(&self, service: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|(s, _, _), _| s != service);
    }

    pub fn all(&self) -> Vec<ConsumerPosition> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .map(
                |((service, topic, partition), &(position, in_flight))| ConsumerPosition {
                    service: service.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    position,
                    in_flight,
                },
            )
            .collect()
    }
}
