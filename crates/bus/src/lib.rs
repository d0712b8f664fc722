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
pub mod lease;
pub mod push;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
    /// How long a partition lease lasts unless renewed (renewed every third of it): when
    /// an instance dies, its partitions move to the others after at most this plus one
    /// keeper tick (see [`lease`]).
    pub lease_ttl: Duration,
    /// This instance's name, the owner of its leases; unique among the instances sharing
    /// a store.
    pub instance: String,
}

/// A name for this process: host, process id and a random part.
pub fn default_instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        .unwrap_or_else(|| "switchyard".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            push_timeout: Duration::from_secs(10),
            poll: Duration::from_millis(100),
            max_in_flight: 10_000,
            lease_ttl: Duration::from_secs(10),
            instance: default_instance(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    switchyard_types::Timestamp::now().millis()
}

/// The lease keeper's stop switch and task.
type Keeper = (watch::Sender<bool>, tokio::task::JoinHandle<()>);

/// A topic's partition.
pub(crate) type Place = (String, u32);

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Running {
    generation: u64,
    owned: Arc<BTreeSet<Place>>,
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
    /// The partition leases held, per subscription.
    owned: Arc<Mutex<HashMap<String, BTreeMap<Place, lease::Held>>>>,
    /// Subscriptions paused on this instance (not launched by the lease keeper).
    paused: Arc<Mutex<HashSet<String>>>,
    /// One lease round at a time.
    round: Arc<tokio::sync::Mutex<()>>,
    /// The lease keeper: its stop switch and task.
    keeper: Arc<Mutex<Option<Keeper>>>,
    /// Asked before every push (`switchyard chaos`); set once.
    faults: Arc<std::sync::OnceLock<Arc<dyn push::PushFaults>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("options", &self.options)
            .finish()
    }
}

impl Bus {
    /// Takes this instance's share of the subscriptions' partition leases, starts a
    /// dispatcher for each subscription with the partitions it holds, and keeps the leases
    /// (see [`lease`]).
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
            owned: Arc::default(),
            paused: Arc::default(),
            round: Arc::default(),
            keeper: Arc::default(),
            faults: Arc::default(),
        };
        crate::lease::validate(&bus.options)?;
        bus.store.list_subscriptions().await?;
        bus.lease_round(None).await;
        let (stop, mut stop_rx) = watch::channel(false);
        let keeper = bus.clone();
        let tick = lease::tick(bus.options.lease_ttl);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(tick) => keeper.lease_round(None).await,
                    _ = stop_rx.changed() => return,
                }
            }
        });
        *lock(&bus.keeper) = Some((stop, task));
        Ok(bus)
    }

    /// This instance's name (the owner of its leases).
    pub fn instance(&self) -> &str {
        &self.options.instance
    }

    /// The partitions of `subscription` this instance dispatches, as `(topic, partition)`.
    pub fn owned_partitions(&self, subscription: &str) -> Vec<(String, u32)> {
        self.owned_places(subscription).into_iter().collect()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Makes every push of this bus ask `faults` first (fault injection, a development
    /// tool: see [`push::PushFaults`]). Only the first call counts; false after that.
    pub fn set_push_faults(&self, faults: Arc<dyn push::PushFaults>) -> bool {
        self.faults.set(faults).is_ok()
    }

    /// Starts (or restarts) the dispatcher of `sub` over the partitions this instance
    /// holds; with none, stops it.
    fn launch(&self, sub: Subscription) {
        let owned = Arc::new(self.owned_places(&sub.spec.name));
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&sub.spec.name).is_some_and(|r| {
            r.generation == sub.generation && r.owned == owned && !r.task.is_finished()
        }) {
            return;
        }
        if let Some(old) = running.remove(&sub.spec.name) {
            let _ = old.stop.send(true);
        }
        if owned.is_empty() {
            return;
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
            owned: owned.clone(),
            faults: self.faults.clone(),
        };
        let task = tokio::spawn(d.run());
        running.insert(
            name,
            Running {
                generation,
                owned,
                stop,
                poke,
                task,
            },
        );
    }

    /// Creates or replaces a subscription and (re)starts its dispatcher.
    pub async fn put(&self, spec: SubscriptionSpec) -> Result<(Subscription, bool), StoreError> {
        let (sub, created) = self.store.put_subscription(spec).await?;
        lock(&self.paused).remove(&sub.spec.name);
        self.lease_round(Some(&sub.spec.name)).await;
        self.launch(sub.clone());
        Ok((sub, created))
    }

    /// Stops a subscription's dispatcher and deletes it with all its state.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let _round = self.round.lock().await;
        self.stop_dispatcher(name).await;
        let held = lock(&self.owned).remove(name).unwrap_or_default();
        for (topic, p) in held.keys() {
            let lease = lease::partition_lease(name, topic, *p);
            let _ = self
                .store
                .release_lease(&lease, &self.options.instance)
                .await;
        }
        self.store.delete_subscription(name).await
    }

    /// Stops `name`'s dispatcher until the subscription is put again or the bus restarts:
    /// its events wait in the journal behind its cursor (`switchyard dev --only` leaves
    /// out services this way).
    pub async fn pause(&self, name: &str) {
        lock(&self.paused).insert(name.to_owned());
        self.stop_dispatcher(name).await;
    }

    /// Stops `name`'s dispatcher, if one runs, and waits for it (attempts in progress
    /// record their outcome first).
    pub(crate) async fn stop_dispatcher(&self, name: &str) {
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

    /// Stops the lease keeper and every dispatcher, letting attempts in progress record
    /// their outcome, then gives back the leases held.
    pub async fn shutdown(&self) {
        let keeper = lock(&self.keeper).take();
        if let Some((stop, task)) = keeper {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let _round = self.round.lock().await;
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
        self.release_all().await;
    }
}
