//! The route table's journal topic: every change to the routes is an event there, and the
//! table is what replaying the topic gives.
//!
//! Topic `switchyard.gateway.routes`, one partition, durability `always`, kept forever.
//! Each record is keyed by the route's name; its payload is JSON:
//!
//! ```json
//! {"op":"put","origin":"admin","route":{"name":"orders","path":"/api/{*rest}","service":"orders"}}
//! {"op":"delete","origin":"file","name":"orders"}
//! ```
//!
//! `origin` says who made the change: `file` (switchyard.toml, synced at start) or `admin`
//! (the admin API). A record that does not parse is skipped with a warning (it changes
//! nothing), never a crash: the topic is written by this crate only, so such a record
//! means damage, and the rest of the history still applies.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
const ROUTES_TOPIC_NOTE: &str =
    "the gateway's routes topic is created with durability `os`, as the journal refused `always`";

use switchyard_journal::{Journal, ReadLimits, Record, TopicConfig, TopicName};
use switchyard_manifest::RouteSpec;

pub const ROUTES_TOPIC: &str = "switchyard.gateway.routes";

/// Who changed a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    File,
    Admin,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Change {
    Put {
        origin: Origin,
        route: Box<RouteSpec>,
    },
    Delete {
        origin: Origin,
        name: String,
    },
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Put { route, .. } => &route.name,
            Change::Delete { name, .. } => name,
        }
    }
}

/// The routes as the history so far says, with who last put each.
pub type State = BTreeMap<String, (Origin, RouteSpec)>;

pub fn apply(state: &mut State, change: Change) {
    match change {
        Change::Put { origin, route } => {
            state.insert(route.name.clone(), (origin, *route));
        }
        Change::Delete { name, .. } => {
            state.remove(&name);
        }
    }
}

pub fn topic() -> TopicName {
    TopicName::new(ROUTES_TOPIC).expect("a valid topic name")
}

/// Creates the topic when it is missing (an existing one is used as it is).
pub async fn ensure_topic(journal: &dyn Journal) -> switchyard_journal::Result<()> {
    let t = topic();
    match journal.describe_topic(&t).await {
        Ok(_) => Ok(()),
        Err(switchyard_journal::Error::TopicNotFound(_)) => {
            let config = TopicConfig {
                partitions: 1,
                ..TopicConfig::default()
            };
            match journal.create_topic(&t, config).await {
                Ok(_) => Ok(()),
                // A journal that cannot promise `always` (NATS without `sync=always`): the
                // strongest it gives.
                Err(first) => {
                    let weaker = TopicConfig {
                        durability: switchyard_journal::Durability::Os,
                        ..config
                    };
                    match journal.create_topic(&t, weaker).await {
                        Ok(_) => {
                            tracing::warn!("{ROUTES_TOPIC_NOTE}: {first}");
                            Ok(())
                        }
                        Err(_) => Err(first),
                    }
                }
            }
        }
        Err(e) => Err(e),
    }
}

/// Appends one change; returns its offset.
pub async fn append(journal: &dyn Journal, change: &Change) -> switchyard_journal::Result<u64> {
    let payload = serde_json::to_vec(change).expect("a change serializes");
    let record = Record::new(payload).with_key(change.name().as_bytes().to_vec());
    let out = journal.append(&topic(), 0, vec![record], None).await?;
    Ok(out.first().map_or(0, |a| a.offset))
}

/// Reads the changes from `from` up to the partition's end as it was when called; applies
/// them to `state` and returns the next offset to read.
pub async fn catch_up(
    journal: &dyn Journal,
    state: &mut State,
    mut from: u64,
) -> switchyard_journal::Result<u64> {
    let t = topic();
    let end = journal
        .describe_topic(&t)
        .await?
        .partitions
        .first()
        .map_or(0, |p| p.next_offset);
    while from < end {
        let batch = journal.read(&t, 0, from, ReadLimits::default()).await?;
        if batch.records.is_empty() {
            break;
        }
        for r in &batch.records {
            match serde_json::from_slice::<Change>(&r.payload) {
                Ok(c) => apply(state, c),
                Err(e) => tracing::warn!(
                    offset = r.offset,
                    "skipping a record of {ROUTES_TOPIC} that does not parse: {e}"
                ),
            }
        }
        from = batch.next_offset;
    }
    Ok(from)
}
