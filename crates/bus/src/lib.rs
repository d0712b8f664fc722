//! Subscriptions: each one reads its topics from the [`Journal`] and pushes the events it
//! wants to its endpoint (CloudEvents binary mode), at least once, in order per key, with
//! retries and parking, keeping every bit of its state in a [`Store`].
//!
//! [`Bus::start`] runs one dispatcher per subscription (see `dispatch.rs`): per partition a
//! reader hands what it reads to a deliverer, which pushes at most `concurrency` at once and
//! one at a time per partition key, so a key that is retrying or waiting blocks only itself.
//! An event that is acknowledged at its first attempt costs the store nothing: the cursor is
//! committed every few milliseconds at each partition's low watermark (the first offset
//! read and not yet settled). One that fails, is delayed or has to wait behind a key that is
//! retrying gets a row in the store's in-flight table before the cursor passes it. A restart
//! loses nothing: what is behind the cursor is acknowledged or in the store, what is after
//! it is read again, so an event may be delivered again, never skipped.
//!
//! Delayed delivery: an event with the `deliverat` extension (RFC 3339) is not pushed
//! before that time (and, being in flight, holds back later events of its key).

mod dispatch;
pub mod push;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_journal::Journal;
use switchyard_store::{
    DeliveryKey, Parked, Store, Subscription, SubscriptionSpec, SubscriptionStats,
};
use tokio::sync::{Notify, watch};

pub use switchyard_store::Error as StoreError;

/// Timings and bounds of every dispatcher.
#[derive(Clone, Debug)]
pub struct BusOptions {
    /// How long one push may take before it counts as failed.
    pub push_timeout: Duration,
    /// How often a dispatcher looks for due retries when nothing wakes it.
    pub poll: Duration,
    /// A subscription stops reading ahead once this many deliveries are in flight.
    pub max_in_flight: u64,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            push_timeout: Duration::from_secs(10),
            poll: Duration::from_millis(100),
            max_in_flight: 10_000,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    switchyard_types::Timestamp::now().millis()
}

struct Running {
    generation: u64,
    stop: watch::Sender<bool>,
    poke: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// The handle to the running subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    journal: Arc<dyn Journal>,
    store: Arc<dyn Store>,
    client: reqwest::Client,
    options: BusOptions,
    running: Arc<Mutex<HashMap<String, Running>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("options", &self.options)
            .finish()
    }
}

impl Bus {
    /// Starts a dispatcher for every subscription in the store.
    pub async fn start(
        journal: Arc<dyn Journal>,
        store: Arc<dyn Store>,
        options: BusOptions,
    ) -> Result<Self, StoreError> {
        let bus = Bus {
            journal,
            store,
            client: reqwest::Client::new(),
            options,
            running: Arc::default(),
        };
        for sub in bus.store.list_subscriptions().await? {
            bus.launch(sub);
        }
        Ok(bus)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn launch(&self, sub: Subscription) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running
            .get(&sub.spec.name)
            .is_some_and(|r| r.generation == sub.generation && !r.task.is_finished())
        {
            return;
        }
        if let Some(old) = running.remove(&sub.spec.name) {
            let _ = old.stop.send(true);
        }
        let (stop, stop_rx) = watch::channel(false);
        let name = sub.spec.name.clone();
        let generation = sub.generation;
        let poke = Arc::new(Notify::new());
        let d = dispatch::Dispatcher {
            sub,
            journal: self.journal.clone(),
            store: self.store.clone(),
            client: self.client.clone(),
            options: self.options.clone(),
            stop: stop_rx,
            poke: poke.clone(),
            acks: std::sync::OnceLock::new(),
        };
        let task = tokio::spawn(d.run());
        running.insert(
            name,
            Running {
                generation,
                stop,
                poke,
                task,
            },
        );
    }

    /// Creates or replaces a subscription and (re)starts its dispatcher.
    pub async fn put(&self, spec: SubscriptionSpec) -> Result<(Subscription, bool), StoreError> {
        let (sub, created) = self.store.put_subscription(spec).await?;
        self.launch(sub.clone());
        Ok((sub, created))
    }

    /// Stops a subscription's dispatcher and deletes it with all its state.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.stop_dispatcher(name).await;
        self.store.delete_subscription(name).await
    }

    /// Stops `name`'s dispatcher until the subscription is put again or the bus restarts:
    /// its events wait in the journal behind its cursor (`switchyard dev --only` leaves
    /// out services this way).
    pub async fn pause(&self, name: &str) {
        self.stop_dispatcher(name).await;
    }

    /// Stops `name`'s dispatcher, if one runs, and waits for it (attempts in progress
    /// record their outcome first).
    async fn stop_dispatcher(&self, name: &str) {
        let old = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(old) = old {
            let _ = old.stop.send(true);
            let _ = old.task.await;
        }
    }

    pub async fn get(&self, name: &str) -> Result<(Subscription, SubscriptionStats), StoreError> {
        let sub = self.store.get_subscription(name).await?;
        let stats = self.store.stats(name).await?;
        Ok((sub, stats))
    }

    pub async fn list(&self) -> Result<Vec<Subscription>, StoreError> {
        self.store.list_subscriptions().await
    }

    pub async fn parked(
        &self,
        name: &str,
        after: Option<&DeliveryKey>,
        limit: u32,
    ) -> Result<Vec<Parked>, StoreError> {
        self.store.get_subscription(name).await?;
        self.store.parked(name, after, limit).await
    }

    /// Puts a parked delivery back in flight, due now.
    pub async fn retry_parked(&self, key: &DeliveryKey) -> Result<(), StoreError> {
        self.store.unpark(key, now_ms()).await?;
        // The dispatcher does not watch the parked table: tell it to look.
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key.subscription)
        {
            r.poke.notify_one();
        }
        Ok(())
    }

    pub async fn discard_parked(&self, key: &DeliveryKey) -> Result<(), StoreError> {
        self.store.discard(key).await
    }

    /// Moves a subscription's cursor in one partition (replay or skip); that partition's
    /// in-flight deliveries are dropped. The dispatcher restarts from there.
    pub async fn seek(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<u64, StoreError> {
        let sub = self.store.get_subscription(name).await?;
        self.stop_dispatcher(name).await;
        let dropped = self.store.seek(name, topic, partition, offset).await;
        self.launch(sub);
        dropped
    }

    /// Stops every dispatcher, letting attempts in progress record their outcome.
    pub async fn shutdown(&self) {
        let all: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| r)
            .collect();
        for r in &all {
            let _ = r.stop.send(true);
        }
        for r in all {
            let _ = r.task.await;
        }
    }
}
