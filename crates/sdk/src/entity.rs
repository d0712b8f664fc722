//! Event-sourced entities: an entity's state is the fold of its events (every event of its
//! key on its topic); a change appends new events on the condition that the key's last
//! offset is still the one the state was folded to (the journal's optimistic concurrency:
//! `switchyard-expected-offset` over HTTP). A conflict means someone appended meanwhile:
//! [`Entities::update`] loads again and decides again, as its [`ConflictPolicy`] says.
//!
//! Loading reads the key's partition from its oldest retained event and keeps the events of
//! the key: its cost grows with the partition, not with the entity (size topics for it).

use crate::client::Placed;
use crate::error::{Error, Result};
use crate::event::{Events, new_id};
use crate::platform::Platform;
use crate::trace::Lineage;
use std::time::Duration;
use switchyard_types::Expected;

/// State folded from events.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use switchyard_sdk::{Entity, Event, Events};
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(type = "account.deposited", topic = "accounts.v1", key = account)]
/// struct Deposited { account: String, cents: i64 }
///
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(type = "account.withdrawn", topic = "accounts.v1", key = account)]
/// struct Withdrawn { account: String, cents: i64 }
///
/// #[derive(Events)]
/// enum AccountEvent { Deposited(Deposited), Withdrawn(Withdrawn) }
///
/// #[derive(Default)]
/// struct Account { balance: i64 }
///
/// impl Entity for Account {
///     type Events = AccountEvent;
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Deposited(d) => self.balance += d.cents,
///             AccountEvent::Withdrawn(w) => self.balance -= w.cents,
///         }
///     }
/// }
/// ```
pub trait Entity: Default + Send + Sync + 'static {
    type Events: Events;
    fn apply(&mut self, event: &Self::Events);
}

/// An entity as loaded: its state and the offset of its key's last event (`None`: none yet).
#[derive(Debug)]
pub struct Loaded<E> {
    pub key: String,
    pub state: E,
    pub version: Option<u64>,
    /// Events folded.
    pub events: usize,
}

/// How many times a conflicting update is tried, and how long it waits between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictPolicy {
    /// Tries in all (1: no retry).
    pub attempts: u32,
    /// Wait before the second try, doubled for each one after (with jitter).
    pub backoff: Duration,
}

impl Default for ConflictPolicy {
    fn default() -> Self {
        ConflictPolicy {
            attempts: 5,
            backoff: Duration::from_millis(5),
        }
    }
}

/// What an update's decision came to.
#[derive(Debug)]
pub struct Updated<E> {
    /// The state with the new events applied.
    pub state: E,
    /// Where the new events went (empty when the decision was to append nothing).
    pub placed: Vec<Placed>,
    /// Tries it took (1: no conflict).
    pub tries: u32,
}

/// Loads and changes entities on the platform. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Entities {
    platform: Platform,
    source: String,
    lineage: Lineage,
}

impl Entities {
    /// Entities whose new events carry `source`.
    pub fn new(platform: Platform, source: &str) -> Self {
        Entities {
            platform,
            source: source.to_string(),
            lineage: Lineage::root(),
        }
    }

    /// New events carry this lineage (say [`crate::Context::lineage`] inside a handler).
    pub fn with_lineage(mut self, lineage: Lineage) -> Self {
        self.lineage = lineage;
        self
    }

    /// Folds every event of `key` into a fresh state.
    pub async fn load<E: Entity>(&self, key: &str) -> Result<Loaded<E>> {
        if key.is_empty() {
            return Err(Error::invalid("partitionkey", "an entity's key is empty"));
        }
        let topic = <E::Events as Events>::topic();
        let partition = self.platform.partition_of(topic, key).await?;
        let mut state = E::default();
        let mut version = None;
        let mut events = 0;
        let mut from = 0;
        loop {
            let (page, next) = self.platform.read(topic, partition, from, 1000).await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if e.partition_key() != Some(key) {
                    continue;
                }
                // Every event of the key counts for the expectation, decoded or not.
                version = e.sequence().or(version);
                if let Some(ev) = <E::Events as Events>::decode(e)? {
                    state.apply(&ev);
                    events += 1;
                }
            }
            if next <= from {
                break;
            }
            from = next;
        }
        Ok(Loaded {
            key: key.to_string(),
            state,
            version,
            events,
        })
    }

    /// Appends `events` for `loaded`'s key if nobody appended to the key since it was
    /// loaded; otherwise [`Error::Conflict`] and nothing is appended. Every event must be
    /// of the key.
    pub async fn append<E: Entity>(
        &self,
        loaded: &Loaded<E>,
        events: &[E::Events],
    ) -> Result<Vec<Placed>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let o = e.encode()?;
            if o.key.as_deref() != Some(loaded.key.as_str()) {
                return Err(Error::invalid(
                    "partitionkey",
                    format!(
                        "{} has key {:?}, not the entity's {:?}",
                        o.ty, o.key, loaded.key
                    ),
                ));
            }
            out.push(o.stamp(new_id(), &self.source, &self.lineage)?);
        }
        let expected = match loaded.version {
            Some(v) => Expected::LastOffset(v),
            None => Expected::NoRecord,
        };
        self.platform
            .publish(<E::Events as Events>::topic(), out, Some(expected))
            .await
    }

    /// Loads `key`, asks `decide` for the events to append, and appends them on the
    /// condition that nothing else was appended to the key meanwhile; on a conflict, loads
    /// again and decides again, up to the policy's attempts. `decide` may refuse with an
    /// error of its own (returned as is, nothing appended).
    pub async fn update<E, F, X>(
        &self,
        key: &str,
        policy: ConflictPolicy,
        mut decide: F,
    ) -> Result<std::result::Result<Updated<E>, X>>
    where
        E: Entity,
        F: FnMut(&E) -> std::result::Result<Vec<E::Events>, X>,
    {
        let attempts = policy.attempts.max(1);
        let mut wait = policy.backoff;
        for tries in 1..=attempts {
            let mut loaded = self.load::<E>(key).await?;
            let events = match decide(&loaded.state) {
                Ok(e) => e,
                Err(x) => return Ok(Err(x)),
            };
            match self.append(&loaded, &events).await {
                Ok(placed) => {
                    for e in &events {
                        loaded.state.apply(e);
                    }
                    return Ok(Ok(Updated {
                        state: loaded.state,
                        placed,
                        tries,
                    }));
                }
                Err(Error::Conflict { .. }) if tries < attempts => {
                    let jitter = 1.0 + rand::random::<f64>();
                    tokio::time::sleep(wait.mul_f64(jitter)).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Stopped("conflict retries exhausted".into()))
    }
}
