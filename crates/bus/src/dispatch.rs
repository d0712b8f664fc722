//! One subscription's dispatcher: readers that read the journal from the cursor, a
//! deliverer that pushes, and the tasks that write what must be remembered.
//!
//! A record a reader hands over is a *fresh* delivery: it lives in memory only. While the
//! subscriber keeps up nothing is written per event: a fresh delivery that is acknowledged
//! is simply forgotten, and the cursor, committed every few milliseconds, moves to each
//! partition's *low watermark*, the first offset read and not yet settled. A fresh delivery
//! is written to the store's in-flight table (*spilled*) only when it cannot go soon: its
//! first attempt failed (it is recorded with its retry or parked), an earlier delivery of
//! its key is in the store, it is delayed (`deliverat`), or memory is short. Until its row
//! has committed it keeps the watermark back. So every record behind the committed cursor
//! is acknowledged or in the store, and a crash redelivers at most what was read past it
//! (at least once, never lost).
//!
//! Deliveries in the store (retries, spilled ones, parked ones put back, and after a
//! restart what was in flight) are found by scanning `Store::due` and read from the
//! journal again.

use crate::push::{self, Outcome};
use crate::{BusOptions, now_ms};
use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_journal::{Journal, Partition, ReadLimits, TopicName};
use switchyard_store::{Delivery, DeliveryKey, RetryPolicy, Store, Subscription};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

pub(crate) struct Dispatcher {
    pub sub: Subscription,
    pub journal: Arc<dyn Journal>,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub options: BusOptions,
    pub stop: watch::Receiver<bool>,
    /// Woken by the bus when the store changed behind the dispatcher's back (a parked
    /// delivery was put back in flight): the deliverer scans the store at once.
    pub poke: Arc<Notify>,
    /// The acknowledger's queue, set when the dispatcher runs.
    pub acks: std::sync::OnceLock<mpsc::Sender<Ack>>,
    /// The partitions this instance holds the lease of: the only ones it reads, and the
    /// only ones whose stored deliveries it attempts.
    pub owned: Arc<std::collections::BTreeSet<Place>>,
    /// Asked before each push (`switchyard chaos`), when set.
    pub faults: Arc<std::sync::OnceLock<Arc<dyn push::PushFaults>>>,
}

/// An acknowledgement to write, and where to say how it went.
type Ack = (DeliveryKey, oneshot::Sender<Result<(), String>>);

/// What orders deliveries: topic, partition and partition key.
type OrderKey = (String, u32, String);

use crate::Place;

fn order_key(d: &Delivery) -> Option<OrderKey> {
    d.partition_key
        .clone()
        .map(|k| (d.key.topic.clone(), d.key.partition, k))
}

fn place(key: &DeliveryKey) -> Place {
    (key.topic.clone(), key.partition)
}

/// From a reader to the deliverer: the records of one read, and where the read ended.
struct Handoff {
    place: Place,
    deliveries: Vec<(Delivery, Bytes)>,
    read_end: u64,
}

/// How many events' bytes fresh deliveries may hold in memory while they wait for their
/// turn; beyond it they are spilled to the store.
const HELD_BYTES: usize = 32 << 20;

/// How often the committer writes moved cursors at most.
const COMMIT_EVERY: Duration = Duration::from_millis(5);

/// A delivery about to be attempted: its event when already in hand, and whether it is
/// fresh (in memory only: its outcome decides whether it needs a row at all).
struct Pending {
    d: Delivery,
    event: Option<Bytes>,
    fresh: bool,
}

/// How an attempt ended, for the deliverer's board.
enum Settled {
    /// Acknowledged or parked: no longer in flight.
    Done,
    /// Scheduled for another attempt (it is in the store).
    Retrying,
    /// Nothing was recorded (the dispatcher stopped first, or the store failed): a fresh
    /// delivery stays behind the watermark and is delivered again after a restart.
    NotRecorded,
}

/// What the board knows of one outstanding delivery.
struct Entry {
    order: Option<OrderKey>,
    /// In memory only: no row in the store (yet).
    fresh: bool,
}

/// The reading and settling of one partition: its low watermark is where the cursor may go.
#[derive(Default)]
struct Track {
    /// Fresh offsets handed over and not yet settled (acknowledged, or in the store).
    unsettled: BTreeSet<u64>,
    /// The next offset the reader will read.
    read_end: u64,
    /// The cursor as last committed.
    committed: u64,
}

impl Track {
    fn watermark(&self) -> u64 {
        self.unsettled.first().copied().unwrap_or(self.read_end)
    }
}

/// The deliverer's picture of the subscription: every delivery it knows to be outstanding
/// (fresh in memory, or in the store's in-flight table), which of them are being attempted,
/// which settled lately, and each partition's watermark.
#[derive(Default)]
struct Board {
    outstanding: HashMap<DeliveryKey, Entry>,
    /// The outstanding offsets of each order key: only the first may be attempted.
    by_key: HashMap<OrderKey, BTreeSet<u64>>,
    /// How many outstanding deliveries of each order key are in the store (or on their way
    /// there): a fresh delivery of such a key is spilled behind them.
    in_store: HashMap<OrderKey, usize>,
    busy: HashSet<DeliveryKey>,
    busy_keys: HashSet<OrderKey>,
    /// Deliveries whose attempt ended, with the count of finished attempts at that moment:
    /// a scan of the store that began before may still list them as due.
    settled: HashMap<DeliveryKey, u64>,
    finished: u64,
    /// Fresh deliveries waiting in memory for their key's predecessor or a free slot.
    held: HashMap<DeliveryKey, (Delivery, Bytes)>,
    held_bytes: usize,
    /// Held deliveries that may go as soon as a slot is free, in the order they became so.
    ready: VecDeque<DeliveryKey>,
    tracks: HashMap<Place, Track>,
}

impl Board {
    /// Learns a delivery found in the store (at start, or by a scan).
    fn learn_stored(&mut self, d: &Delivery) {
        if self.settled.contains_key(&d.key) || self.outstanding.contains_key(&d.key) {
            return;
        }
        self.insert(d, false);
    }

    fn insert(&mut self, d: &Delivery, fresh: bool) {
        let order = order_key(d);
        if let Some(k) = &order {
            self.by_key
                .entry(k.clone())
                .or_default()
                .insert(d.key.offset);
            if !fresh {
                *self.in_store.entry(k.clone()).or_default() += 1;
            }
        }
        self.outstanding
            .insert(d.key.clone(), Entry { order, fresh });
    }

    /// Takes a fresh delivery from a reader: it is outstanding and keeps its partition's
    /// watermark until settled.
    fn learn_fresh(&mut self, d: &Delivery) {
        if let Some(t) = self.tracks.get_mut(&place(&d.key)) {
            t.unsettled.insert(d.key.offset);
        }
        self.insert(d, true);
    }

    /// A reader's read ended at `read_end`: the watermark may pass what it skipped.
    fn read_to(&mut self, place: &Place, read_end: u64) {
        if let Some(t) = self.tracks.get_mut(place) {
            t.read_end = t.read_end.max(read_end);
        }
    }

    /// A fresh delivery no longer needs memory to be remembered: acknowledged, or its row
    /// committed.
    fn settle_fresh(&mut self, key: &DeliveryKey) {
        if let Some(t) = self.tracks.get_mut(&place(key)) {
            t.unsettled.remove(&key.offset);
        }
    }

    /// Whether a fresh delivery must go to the store rather than wait in memory: an earlier
    /// one of its key is there.
    fn behind_the_store(&self, d: &Delivery) -> bool {
        order_key(d).is_some_and(|k| self.in_store.get(&k).is_some_and(|&n| n > 0))
    }

    /// Marks a fresh delivery as on its way into the store.
    fn move_to_store(&mut self, key: &DeliveryKey) {
        let Some(e) = self.outstanding.get_mut(key) else {
            return;
        };
        if e.fresh {
            e.fresh = false;
            if let Some(k) = &e.order {
                *self.in_store.entry(k.clone()).or_default() += 1;
            }
        }
    }

    /// Keeps a fresh delivery that cannot go yet; one that may go as soon as a slot is free
    /// is queued as ready. Returns it when memory is short (it must be spilled).
    fn hold(&mut self, d: Delivery, event: Bytes) -> Option<Delivery> {
        if self.held_bytes + event.len() > HELD_BYTES && !self.held.is_empty() {
            return Some(d);
        }
        if self.may_start(&d) {
            self.ready.push_back(d.key.clone());
        }
        self.held_bytes += event.len();
        self.held.insert(d.key.clone(), (d, event));
        None
    }

    fn take_held(&mut self, key: &DeliveryKey) -> Option<(Delivery, Bytes)> {
        let h = self.held.remove(key)?;
        self.held_bytes -= h.1.len();
        Some(h)
    }

    /// Takes out of memory every held delivery of `k`, for the store (their key waits on a
    /// delivery there, possibly for long).
    fn unhold_key(&mut self, k: &OrderKey, subscription: &str) -> Vec<Delivery> {
        let offsets: Vec<u64> = self
            .by_key
            .get(k)
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for offset in offsets {
            let key = DeliveryKey::new(subscription, k.0.clone(), k.1, offset);
            if let Some((d, _)) = self.take_held(&key) {
                self.move_to_store(&key);
                out.push(d);
            }
        }
        out
    }

    fn forget(&mut self, key: &DeliveryKey) {
        self.take_held(key);
        let Some(e) = self.outstanding.remove(key) else {
            return;
        };
        if e.fresh {
            self.settle_fresh(key);
        }
        let Some(k) = e.order else {
            return;
        };
        if !e.fresh
            && let Some(n) = self.in_store.get_mut(&k)
        {
            *n -= 1;
            if *n == 0 {
                self.in_store.remove(&k);
            }
        }
        if let Some(offsets) = self.by_key.get_mut(&k) {
            offsets.remove(&key.offset);
            match offsets.first() {
                None => {
                    self.by_key.remove(&k);
                }
                // The key's next delivery, if it waits in memory, may go now.
                Some(&next) => {
                    let next = DeliveryKey::new(key.subscription.clone(), k.0, k.1, next);
                    if self.held.contains_key(&next) {
                        self.ready.push_back(next);
                    }
                }
            }
        }
    }

    /// Whether `d` may be attempted now: not in progress or just settled, and no earlier
    /// delivery of its key is outstanding or in progress.
    fn may_start(&self, d: &Delivery) -> bool {
        if self.busy.contains(&d.key) || self.settled.contains_key(&d.key) {
            return false;
        }
        match order_key(d) {
            None => true,
            Some(k) => {
                !self.busy_keys.contains(&k)
                    && self
                        .by_key
                        .get(&k)
                        .and_then(|offsets| offsets.first())
                        .is_none_or(|&first| first >= d.key.offset)
            }
        }
    }

    fn start(&mut self, d: &Delivery) {
        self.busy.insert(d.key.clone());
        if let Some(k) = order_key(d) {
            self.busy_keys.insert(k);
        }
    }

    /// Up to `max` held deliveries that may start now, marked started.
    fn start_ready(&mut self, max: usize) -> Vec<Pending> {
        let mut group = Vec::new();
        while group.len() < max
            && let Some(key) = self.ready.pop_front()
        {
            // Queued earlier: it may have been spilled meanwhile, or its key may be busy
            // again (it is queued again when that attempt finishes).
            let startable = self.held.get(&key).is_some_and(|(d, _)| self.may_start(d));
            if !startable {
                continue;
            }
            let Some((d, event)) = self.take_held(&key) else {
                continue;
            };
            self.start(&d);
            group.push(Pending {
                d,
                event: Some(event),
                fresh: true,
            });
        }
        group
    }

    /// Records how an attempt of `d` ended. Returns the held deliveries that must now go to
    /// the store: those of a key whose first delivery just went there to be retried.
    fn finish(&mut self, d: &Delivery, how: Settled) -> Vec<Delivery> {
        self.busy.remove(&d.key);
        if let Some(k) = order_key(d) {
            self.busy_keys.remove(&k);
        }
        match how {
            Settled::Done => {
                self.finished += 1;
                self.settled.insert(d.key.clone(), self.finished);
                self.forget(&d.key);
                Vec::new()
            }
            Settled::Retrying => {
                self.finished += 1;
                self.settled.insert(d.key.clone(), self.finished);
                let was_fresh = self.outstanding.get(&d.key).is_some_and(|e| e.fresh);
                if !was_fresh {
                    return Vec::new();
                }
                // Its row committed: it is the store's now.
                self.move_to_store(&d.key);
                self.settle_fresh(&d.key);
                match order_key(d) {
                    Some(k) => self.unhold_key(&k, &d.key.subscription),
                    None => Vec::new(),
                }
            }
            Settled::NotRecorded => {
                let fresh = self.outstanding.get(&d.key).is_some_and(|e| e.fresh);
                self.forget(&d.key);
                // Fresh: it stays behind the watermark (delivered again after a restart).
                if fresh && let Some(t) = self.tracks.get_mut(&place(&d.key)) {
                    t.unsettled.insert(d.key.offset);
                }
                Vec::new()
            }
        }
    }

    /// Whether a scan of the store could find something to start: an outstanding
    /// delivery that is neither being attempted nor held in memory for its turn.
    fn waiting(&self) -> bool {
        self.outstanding.len() > self.busy.len() + self.held.len()
    }

    /// The partitions whose watermark passed their committed cursor.
    fn moved(&self) -> Vec<(Place, u64)> {
        self.tracks
            .iter()
            .filter(|(_, t)| t.watermark() > t.committed)
            .map(|(p, t)| (p.clone(), t.watermark()))
            .collect()
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What the deliverer's helpers share.
struct Shared {
    board: Mutex<Board>,
    permits: Arc<Semaphore>,
    /// Wakes the deliverer: an attempt ended, or spilled rows committed.
    wake: Notify,
    /// Wakes the committer: a watermark may have moved.
    moved: Notify,
    /// Wakes readers waiting for room.
    room: Notify,
    /// Outstanding deliveries, for the readers' backpressure.
    outstanding: AtomicUsize,
    /// Fresh deliveries on their way into the store, and how many are.
    spill: mpsc::UnboundedSender<Vec<Delivery>>,
    spilling: AtomicUsize,
}

impl Shared {
    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        lock(&self.board)
    }

    fn send_spill(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let n = deliveries.len();
        self.spilling.fetch_add(n, Ordering::AcqRel);
        if self.spill.send(deliveries).is_err() {
            self.spilling.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl Dispatcher {
    pub async fn run(self) {
        let me = Arc::new(self);
        let name = me.sub.spec.name.clone();
        let Some(partitions) = me.partitions().await else {
            return;
        };
        // The board starts from the store: cursors, and the in-flight table, before any
        // reader adds to it. What the store already holds at or after a cursor (written
        // before the cursor was committed) is not read again as fresh.
        let mut board = Board::default();
        let mut skips = Vec::with_capacity(partitions.len());
        let cursors = loop {
            match me.store.cursors(&name).await {
                Ok(cs) => break cs,
                Err(e) => {
                    tracing::error!(subscription = %name, "reading cursors: {e}");
                    if me.pause(Duration::from_secs(1)).await {
                        return;
                    }
                }
            }
        };
        for (topic, p) in &partitions {
            let cursor = cursors
                .iter()
                .find(|c| c.topic == topic.as_str() && c.partition == *p)
                .map_or(0, |c| c.offset);
            let Some(known) = me.known_from(topic.as_str(), *p, cursor, &mut board).await else {
                return;
            };
            skips.push(known);
            board.tracks.insert(
                (topic.as_str().to_string(), *p),
                Track {
                    read_end: cursor,
                    committed: cursor,
                    ..Track::default()
                },
            );
        }
        let (spill, spills) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            outstanding: AtomicUsize::new(board.outstanding.len()),
            board: Mutex::new(board),
            permits: Arc::new(Semaphore::new(me.sub.spec.concurrency as usize)),
            wake: Notify::new(),
            moved: Notify::new(),
            room: Notify::new(),
            spill,
            spilling: AtomicUsize::new(0),
        });
        // A few batches per partition in transit at most; readers wait when it is full.
        let (handoff, handoffs) = mpsc::channel(8 * partitions.len().max(1));
        let (acks, queued) = mpsc::channel(1024);
        let _ = me.acks.set(acks);
        let acknowledger = tokio::spawn(me.clone().acknowledge(queued));
        let spiller = tokio::spawn(me.clone().spill(spills, shared.clone()));
        let committer = tokio::spawn(me.clone().commit_cursors(shared.clone()));
        let mut readers = Vec::new();
        for ((topic, p), skip) in partitions.into_iter().zip(skips) {
            let cursor = shared.board().tracks[&(topic.as_str().to_string(), p)].read_end;
            readers.push(tokio::spawn(me.clone().read(
                topic,
                p,
                cursor,
                skip,
                handoff.clone(),
                shared.clone(),
            )));
        }
        drop(handoff);
        me.deliver(&shared, handoffs).await;
        for r in readers {
            r.abort();
        }
        // Spilled rows first (the watermark waits for them), then the last cursors.
        committer.abort();
        let _ = tokio::time::timeout(me.options.push_timeout, async {
            while shared.spilling.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        spiller.abort();
        me.commit_once(&shared).await;
        acknowledger.abort();
    }

    /// Every partition of the subscription's topics (waiting for topics that do not exist
    /// yet), or None when the dispatcher was stopped meanwhile.
    async fn partitions(&self) -> Option<Vec<(TopicName, Partition)>> {
        let name = &self.sub.spec.name;
        let mut partitions = Vec::new();
        for topic in &self.sub.spec.topics {
            let Ok(topic) = TopicName::new(topic) else {
                continue; // validated by the store: cannot happen
            };
            let count = loop {
                match self.journal.describe_topic(&topic).await {
                    Ok(info) => break info.partitions.len() as Partition,
                    Err(e) => {
                        tracing::warn!(subscription = %name, %topic, "waiting for the topic: {e}");
                        if self.pause(Duration::from_secs(1)).await {
                            return None;
                        }
                    }
                }
            };
            partitions.extend(
                (0..count)
                    .filter(|p| self.owned.contains(&(topic.as_str().to_string(), *p)))
                    .map(|p| (topic.clone(), p)),
            );
        }
        Some(partitions)
    }

    /// Waits `d`; true when the dispatcher was stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => *stop.borrow(),
            _ = stopped(&mut stop) => true,
        }
    }

    /// Loads one partition's in-flight deliveries into the board and returns the offsets at
    /// or after `cursor` that the store holds (in flight or parked), or None when stopped.
    async fn known_from(
        &self,
        topic: &str,
        partition: Partition,
        cursor: u64,
        board: &mut Board,
    ) -> Option<HashSet<u64>> {
        let name = &self.sub.spec.name;
        let mut known = HashSet::new();
        loop {
            match self.store.in_flight(name, topic, partition).await {
                Ok(all) => {
                    for d in &all {
                        board.learn_stored(d);
                        if d.key.offset >= cursor {
                            known.insert(d.key.offset);
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::error!(subscription = %name, "reading in-flight deliveries: {e}");
                    if self.pause(Duration::from_secs(1)).await {
                        return None;
                    }
                }
            }
        }
        // Parked ones, a page at a time from the cursor on (keyset order: topic, partition,
        // offset).
        let mut after = cursor
            .checked_sub(1)
            .map(|before| DeliveryKey::new(name.clone(), topic, partition, before));
        loop {
            let page = match self.store.parked(name, after.as_ref(), 1000).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(subscription = %name, "reading parked deliveries: {e}");
                    if self.pause(Duration::from_secs(1)).await {
                        return None;
                    }
                    continue;
                }
            };
            let full = page.len() == 1000;
            for p in &page {
                let k = &p.delivery.key;
                if (k.topic.as_str(), k.partition) > (topic, partition) {
                    return Some(known);
                }
                if k.topic == topic && k.partition == partition && k.offset >= cursor {
                    known.insert(k.offset);
                }
            }
            match page.last() {
                Some(last) if full => after = Some(last.delivery.key.clone()),
                _ => return Some(known),
            }
        }
    }

    /// Reads one partition from `cursor` and hands each read to the deliverer, skipping the
    /// offsets in `skip` (the store has them); it does not read further ahead than the
    /// subscriber can take.
    async fn read(
        self: Arc<Self>,
        topic: TopicName,
        partition: Partition,
        mut cursor: u64,
        skip: HashSet<u64>,
        handoff: mpsc::Sender<Handoff>,
        shared: Arc<Shared>,
    ) {
        let name = &self.sub.spec.name;
        let mut stop = self.stop.clone();
        let types = &self.sub.spec.types;
        let place: Place = (topic.as_str().to_string(), partition);
        loop {
            if *stop.borrow() {
                return;
            }
            // Backpressure: do not read further ahead than the subscriber can take.
            if shared.outstanding.load(Ordering::Relaxed) >= self.options.max_in_flight as usize {
                tokio::select! {
                    _ = shared.room.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stopped(&mut stop) => return,
                }
                continue;
            }
            let batch = match self
                .journal
                .read(
                    &topic,
                    partition,
                    cursor,
                    ReadLimits {
                        max_records: 256,
                        ..ReadLimits::default()
                    },
                )
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(subscription = %name, %topic, partition, "read: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                }
            };
            if batch.records.is_empty() {
                if batch.next_offset > cursor {
                    // Nothing there (a backend whose offsets have gaps): the watermark may
                    // pass it all the same.
                    cursor = batch.next_offset;
                    let passed = Handoff {
                        place: place.clone(),
                        deliveries: Vec::new(),
                        read_end: cursor,
                    };
                    if handoff.send(passed).await.is_err() {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = self.journal.wait_for(&topic, partition, batch.next_offset) => {}
                    _ = stopped(&mut stop) => return,
                }
                continue;
            }
            let now = now_ms();
            let deliveries: Vec<(Delivery, Bytes)> = batch
                .records
                .into_iter()
                .filter(|r| !skip.contains(&r.offset))
                .filter_map(|r| {
                    // Parsed only when something here needs it: the attempt parses anyway.
                    let needed = !types.is_empty()
                        || r.payload.windows(DELIVER_AT.len()).any(|w| w == DELIVER_AT);
                    let event: Option<Value> = needed
                        .then(|| serde_json::from_slice(&r.payload).ok())
                        .flatten();
                    // With no type filter a record that is not a CloudEvent is delivered
                    // too: the attempt parks it with the reason, so it is accounted for.
                    let wanted = types.is_empty()
                        || event
                            .as_ref()
                            .and_then(|e| e.get("type"))
                            .and_then(Value::as_str)
                            .is_some_and(|t| types.iter().any(|w| w == t));
                    wanted.then(|| {
                        let d = Delivery::new(
                            DeliveryKey::new(name.clone(), topic.as_str(), partition, r.offset),
                            r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                            event.as_ref().and_then(deliver_at).unwrap_or(now),
                        );
                        (d, r.payload)
                    })
                })
                .collect();
            let sent = tokio::select! {
                r = handoff.send(Handoff {
                    place: place.clone(),
                    deliveries,
                    read_end: batch.next_offset,
                }) => r.is_ok(),
                _ = stopped(&mut stop) => return,
            };
            if !sent {
                return; // the dispatcher is stopping
            }
            cursor = batch.next_offset;
        }
    }

    /// Writes spilled fresh deliveries to the store's in-flight table, whatever queued
    /// meanwhile in one transaction; once committed they no longer hold the watermark back,
    /// and a scan may start them. A failed write is retried.
    async fn spill(
        self: Arc<Self>,
        mut spills: mpsc::UnboundedReceiver<Vec<Delivery>>,
        shared: Arc<Shared>,
    ) {
        let name = &self.sub.spec.name;
        while let Some(mut batch) = spills.recv().await {
            while batch.len() < 4096 {
                match spills.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            while let Err(e) = self.store.enqueue(name, batch.clone(), None).await {
                tracing::error!(subscription = %name, "spilling deliveries to the store (retrying in 1 s): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            {
                let mut b = shared.board();
                for d in &batch {
                    b.settle_fresh(&d.key);
                }
            }
            shared.spilling.fetch_sub(batch.len(), Ordering::AcqRel);
            shared.moved.notify_one();
            shared.wake.notify_one();
        }
    }

    /// Commits each partition's cursor as its watermark moves, at most every
    /// `COMMIT_EVERY`: one small write per partition, however many events settled.
    async fn commit_cursors(self: Arc<Self>, shared: Arc<Shared>) {
        loop {
            shared.moved.notified().await;
            self.commit_once(&shared).await;
            tokio::time::sleep(COMMIT_EVERY).await;
        }
    }

    async fn commit_once(&self, shared: &Shared) {
        let name = &self.sub.spec.name;
        let moved = shared.board().moved();
        for ((topic, partition), to) in moved {
            match self.store.advance_cursor(name, &topic, partition, to).await {
                Ok(_) => {
                    if let Some(t) = shared.board().tracks.get_mut(&(topic, partition)) {
                        t.committed = t.committed.max(to);
                    }
                }
                Err(e) => {
                    tracing::error!(subscription = %name, %topic, partition, "committing the cursor: {e}");
                }
            }
        }
    }

    /// Pushes what may go now, at most `concurrency` at once, one at a time per key: fresh
    /// records as they are handed over or their turn comes, and what a scan of the store
    /// finds due.
    async fn deliver(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        mut handoffs: mpsc::Receiver<Handoff>,
    ) {
        let name = self.sub.spec.name.clone();
        let mut stop = self.stop.clone();
        let mut scan = true;
        let mut poll = tokio::time::interval(self.options.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max = self.sub.spec.max_batch.max(1) as usize;
        'run: loop {
            if *stop.borrow() {
                break;
            }
            let mut due = Vec::new();
            if scan {
                let before = shared.board().finished;
                due = match self.store.due(&name, now_ms(), 512).await {
                    // Other instances' partitions are theirs to attempt.
                    Ok(mut d) => {
                        d.retain(|d| self.owned.contains(&place(&d.key)));
                        d
                    }
                    Err(e) => {
                        tracing::error!(subscription = %name, "due: {e}");
                        Vec::new()
                    }
                };
                // Attempts that ended before the scan began are reflected in what it read.
                shared.board().settled.retain(|_, at| *at > before);
            }
            {
                let mut b = shared.board();
                due.iter().for_each(|d| b.learn_stored(d));
            }
            let mut group: Vec<Pending> = Vec::new();
            let mut permit = None;
            for d in due {
                if !shared.board().may_start(&d) {
                    continue;
                }
                if permit.is_none() {
                    permit = tokio::select! {
                        p = shared.permits.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => break 'run },
                        _ = stopped(&mut stop) => break 'run,
                    };
                }
                // Fresh handoffs may have started the same key meanwhile: check again.
                let mut b = shared.board();
                if !b.may_start(&d) {
                    continue;
                }
                b.start(&d);
                drop(b);
                group.push(Pending {
                    d,
                    event: None,
                    fresh: false,
                });
                if group.len() == max
                    && let Some(p) = permit.take()
                {
                    self.spawn_attempt(std::mem::take(&mut group), p, shared);
                }
            }
            if let Some(p) = permit
                && !group.is_empty()
            {
                self.spawn_attempt(group, p, shared);
            }
            self.start_ready(shared);
            let outstanding = shared.board().outstanding.len();
            shared.outstanding.store(outstanding, Ordering::Relaxed);
            if outstanding < self.options.max_in_flight as usize {
                shared.room.notify_waiters();
            }
            tokio::select! {
                h = handoffs.recv() => {
                    match h {
                        Some(h) => self.take(h, shared),
                        None => break,
                    }
                    scan = false;
                }
                _ = shared.wake.notified() => scan = shared.board().waiting(),
                _ = self.poke.notified() => scan = true,
                _ = poll.tick() => scan = true,
                _ = stopped(&mut stop) => break,
            }
        }
        // Let attempts in progress finish and record their outcome, up to a bound.
        let all = self.sub.spec.concurrency;
        let _ = tokio::time::timeout(self.options.push_timeout, async {
            let _ = shared.permits.acquire_many(all).await;
            while !shared.board().busy.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Takes a reader's handoff: learns the records, starts those that may go now, holds
    /// those that must wait their turn and spills those that cannot go soon.
    fn take(self: &Arc<Self>, handoff: Handoff, shared: &Arc<Shared>) {
        let Handoff {
            place,
            deliveries,
            read_end,
        } = handoff;
        let now = now_ms();
        let max = self.sub.spec.max_batch.max(1) as usize;
        let mut group: Vec<Pending> = Vec::new();
        let mut spill = Vec::new();
        let mut permit = None;
        {
            let mut b = shared.board();
            for (d, _) in &deliveries {
                b.learn_fresh(d);
            }
            b.read_to(&place, read_end);
        }
        for (d, event) in deliveries {
            let mut b = shared.board();
            if d.next_attempt_at_ms > now || b.behind_the_store(&d) {
                // Delayed, or its key waits on the store: the store keeps it meanwhile.
                b.move_to_store(&d.key);
                spill.push(d);
                continue;
            }
            let go = b.may_start(&d);
            if go && permit.is_none() {
                permit = shared.permits.clone().try_acquire_owned().ok();
            }
            if !go || permit.is_none() {
                if let Some(d) = b.hold(d, event) {
                    b.move_to_store(&d.key);
                    spill.push(d);
                }
                continue;
            }
            b.start(&d);
            drop(b);
            group.push(Pending {
                d,
                event: Some(event),
                fresh: true,
            });
            if group.len() == max
                && let Some(p) = permit.take()
            {
                self.spawn_attempt(std::mem::take(&mut group), p, shared);
            }
        }
        if let Some(p) = permit
            && !group.is_empty()
        {
            self.spawn_attempt(group, p, shared);
        }
        shared.send_spill(spill);
        shared.moved.notify_one();
    }

    /// Starts the held deliveries whose turn came (their key's predecessor finished, or
    /// they waited for a slot), as long as slots are free.
    fn start_ready(self: &Arc<Self>, shared: &Arc<Shared>) {
        let max = self.sub.spec.max_batch.max(1) as usize;
        while !shared.board().ready.is_empty() {
            let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
                return; // a finishing attempt wakes the deliverer
            };
            let group = shared.board().start_ready(max);
            if group.is_empty() {
                return;
            }
            self.spawn_attempt(group, permit, shared);
        }
    }

    fn spawn_attempt(
        self: &Arc<Self>,
        group: Vec<Pending>,
        permit: tokio::sync::OwnedSemaphorePermit,
        shared: &Arc<Shared>,
    ) {
        let me = self.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let ds: Vec<Delivery> = group.iter().map(|p| p.d.clone()).collect();
            let settled = me.attempt(group, permit).await;
            let mut spill = Vec::new();
            {
                let mut b = shared.board();
                for (d, how) in ds.iter().zip(settled) {
                    spill.extend(b.finish(d, how));
                }
            }
            shared.send_spill(spill);
            shared.moved.notify_one();
            shared.wake.notify_one();
        });
    }

    /// One push of `group` (one event, or a batch with `max-batch` above 1), then for each
    /// delivery: ack, retry later or park. The concurrency permit covers the push only:
    /// recording does not hold up the next push (the keys stay busy until recorded).
    async fn attempt(
        &self,
        group: Vec<Pending>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Vec<Settled> {
        let now = now_ms();
        // An event that cannot be loaded or sent is rejected on its own.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(group.len());
        let mut events = Vec::with_capacity(group.len());
        for p in &group {
            let event = match &p.event {
                Some(payload) => event_of(payload, &p.d),
                None => self.load(&p.d).await,
            };
            match event {
                Ok(e) => {
                    events.push(e);
                    outcomes.push(None);
                }
                Err(error) => outcomes.push(Some(Outcome::Reject { error })),
            }
        }
        let attempt = group.iter().map(|p| p.d.attempts).max().unwrap_or(0) + 1;
        let (spec, timeout) = (&self.sub.spec, self.options.push_timeout);
        let request = if events.is_empty() {
            None
        } else if spec.max_batch > 1 {
            Some(push::batch_request(
                &self.client,
                &spec.endpoint,
                &events,
                &spec.name,
                attempt,
                timeout,
            ))
        } else {
            Some(push::request(
                &self.client,
                &spec.endpoint,
                &events[0],
                &spec.name,
                attempt,
                timeout,
            ))
        };
        let fault = self
            .faults
            .get()
            .and_then(|f| f.before_push(&spec.endpoint));
        let pushed = match request {
            Some(Ok(req)) => Some(match fault {
                None => push::attempt(req).await,
                Some(fault) => push::attempt_with_fault(fault, req, timeout).await,
            }),
            Some(Err(error)) => Some(Outcome::Reject { error }),
            None => None,
        };
        drop(permit);
        // One retry time for the whole push: a failed batch's events fall due together and
        // are retried as one batch again (a delay each, with its own jitter, split it).
        let retry_at = match &pushed {
            Some(Outcome::Retry { not_before, .. }) => {
                let delay = not_before.unwrap_or_else(|| backoff(&spec.retry, attempt - 1));
                now_ms().saturating_add(delay.as_millis() as i64)
            }
            _ => now,
        };
        // Recorded side by side: the acknowledger writes a batch's acks in one transaction.
        let records = group.into_iter().zip(outcomes).map(|(p, own)| {
            let outcome = own.or_else(|| pushed.clone());
            async move {
                match outcome {
                    Some(outcome) => self.record(&p.d, p.fresh, outcome, now, retry_at).await,
                    None => Settled::NotRecorded,
                }
            }
        });
        futures::future::join_all(records).await
    }

    /// Records the outcome of one delivery's attempt. A fresh delivery that was delivered
    /// needs nothing written; one that failed first gets its row, then is recorded like any
    /// other. A retry is due at `retry_at`.
    async fn record(
        &self,
        d: &Delivery,
        fresh: bool,
        outcome: Outcome,
        now: i64,
        retry_at: i64,
    ) -> Settled {
        if fresh {
            if matches!(outcome, Outcome::Delivered) {
                return Settled::Done;
            }
            if !self.write_row(d).await {
                return Settled::NotRecorded;
            }
        }
        let (result, how) = match outcome {
            Outcome::Delivered => (self.ack(&d.key).await, Settled::Done),
            Outcome::Reject { error } => (
                self.store
                    .park(&d.key, now_ms(), &error)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Settled::Done,
            ),
            Outcome::Retry { error, .. } => {
                let policy = &self.sub.spec.retry;
                let first = d.first_attempt_at_ms.unwrap_or(now);
                let attempts = d.attempts + 1;
                if attempts >= policy.max_attempts
                    || now_ms().saturating_sub(first) >= policy.max_age_ms as i64
                {
                    let reason = format!("gave up after {attempts} attempt(s): {error}");
                    let r = self.store.park(&d.key, now_ms(), &reason).await;
                    (r.map(|_| ()).map_err(|e| e.to_string()), Settled::Done)
                } else {
                    let r = self.store.retry_later(&d.key, now, retry_at, &error).await;
                    (r.map(|_| ()).map_err(|e| e.to_string()), Settled::Retrying)
                }
            }
        };
        match result {
            Ok(()) => how,
            Err(e) => {
                tracing::error!(subscription = %self.sub.spec.name, key = %d.key, "recording the outcome: {e}");
                // Still in flight in the store: a later scan attempts it again.
                Settled::Retrying
            }
        }
    }

    /// Writes a fresh delivery's in-flight row, retrying until it commits; false when the
    /// dispatcher stopped first (the delivery then stays behind the watermark).
    async fn write_row(&self, d: &Delivery) -> bool {
        let name = &self.sub.spec.name;
        loop {
            match self.store.enqueue(name, vec![d.clone()], None).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::error!(subscription = %name, key = %d.key, "recording a failed delivery (retrying in 1 s): {e}");
                    if self.pause(Duration::from_secs(1)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Acknowledges `key` through the acknowledger, which writes the acknowledgements that
    /// queue up meanwhile in one transaction.
    async fn ack(&self, key: &DeliveryKey) -> Result<(), String> {
        let Some(acks) = self.acks.get() else {
            return Err("the acknowledger is not running".into());
        };
        let (reply, answer) = oneshot::channel();
        acks.send((key.clone(), reply))
            .await
            .map_err(|_| "the acknowledger stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the acknowledger stopped".to_string())?
    }

    /// Writes acknowledgements in batches: whatever queued while the last write ran.
    async fn acknowledge(self: Arc<Self>, mut acks: mpsc::Receiver<Ack>) {
        while let Some(first) = acks.recv().await {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match acks.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let keys: Vec<DeliveryKey> = batch.iter().map(|(k, _)| k.clone()).collect();
            let result = self
                .store
                .ack_all(&keys)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            for (_, reply) in batch {
                let _ = reply.send(result.clone());
            }
        }
    }

    /// The stored event of `d`.
    async fn load(&self, d: &Delivery) -> Result<Map<String, Value>, String> {
        let topic = TopicName::new(&d.key.topic).map_err(|e| e.to_string())?;
        let batch = self
            .journal
            .read(
                &topic,
                d.key.partition,
                d.key.offset,
                ReadLimits {
                    max_records: 1,
                    // One record: a small first read (a bigger record is read whole anyway).
                    max_bytes: 4096,
                },
            )
            .await
            .map_err(|e| format!("reading the event from the journal: {e}"))?;
        let record = batch
            .records
            .into_iter()
            .find(|r| r.offset == d.key.offset)
            .ok_or_else(|| {
                "the event is no longer in the journal (retention removed it)".to_string()
            })?;
        event_of(&record.payload, d)
    }
}

/// The event a record holds, with the `partition` and `sequence` extensions of `d`.
fn event_of(payload: &[u8], d: &Delivery) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut m)) => {
            m.insert("partition".into(), d.key.partition.into());
            m.insert("sequence".into(), d.key.offset.to_string().into());
            Ok(m)
        }
        _ => Err("the record is not a CloudEvent (it was not published through the API)".into()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The delay before retry number `attempts + 1`: exponential, capped, with jitter.
pub(crate) fn backoff(policy: &RetryPolicy, attempts: u32) -> Duration {
    let base = policy.initial_backoff_ms as f64 * policy.multiplier.powi(attempts.min(64) as i32);
    let capped = base.min(policy.max_backoff_ms as f64);
    let jitter = rand::rng().random_range(0.0..=policy.jitter.clamp(0.0, 1.0));
    Duration::from_millis((capped * (1.0 - jitter)).max(1.0) as u64)
}

/// The `deliverat` attribute as it appears in a stored event's JSON.
const DELIVER_AT: &[u8] = b"\"deliverat\"";

/// The `deliverat` extension (RFC 3339): the event is not delivered before it.
fn deliver_at(event: &Value) -> Option<i64> {
    let t = event.get("deliverat")?.as_str()?;
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(offset: u64, key: Option<&str>) -> Delivery {
        Delivery::new(
            DeliveryKey::new("s", "t", 0, offset),
            key.map(str::to_string),
            0,
        )
    }

    fn board() -> Board {
        let mut b = Board::default();
        b.tracks.insert(("t".into(), 0), Track::default());
        b
    }

    fn event() -> Bytes {
        Bytes::from_static(b"{}")
    }

    fn offsets(group: &[Pending]) -> Vec<u64> {
        group.iter().map(|p| p.d.key.offset).collect()
    }

    #[test]
    fn the_board_starts_one_delivery_per_key_in_offset_order() {
        let mut b = board();
        let (a1, a2, b1, free) = (
            delivery(1, Some("a")),
            delivery(2, Some("a")),
            delivery(3, Some("b")),
            delivery(4, None),
        );
        // Learned out of order (a scan can list a later one first): still offset order.
        for d in [&a2, &b1, &a1, &free] {
            b.learn_stored(d);
        }
        assert!(!b.may_start(&a2), "a2 waits for a1");
        assert!(b.may_start(&a1) && b.may_start(&b1) && b.may_start(&free));
        b.start(&a1);
        assert!(!b.may_start(&a1), "a1 is in progress");
        assert!(b.waiting());
        // A retry keeps a1 first in line: a2 still waits.
        b.finish(&a1, Settled::Retrying);
        assert!(!b.may_start(&a2));
        assert!(
            !b.may_start(&a1),
            "just settled: a stale scan must not restart it"
        );
        b.settled.clear();
        b.start(&a1);
        b.finish(&a1, Settled::Done);
        assert!(b.may_start(&a2), "a1 acknowledged: a2 may go");
        b.learn_stored(&a1);
        assert!(b.may_start(&a2), "a settled delivery is not learned again");
        // An attempt that recorded nothing leaves no trace.
        b.start(&b1);
        b.finish(&b1, Settled::NotRecorded);
        assert!(!b.outstanding.contains_key(&b1.key) && !b.settled.contains_key(&b1.key));
    }

    #[test]
    fn a_held_delivery_starts_when_its_predecessor_is_done() {
        let mut b = board();
        let (a1, a2, a3, free) = (
            delivery(1, Some("a")),
            delivery(2, Some("a")),
            delivery(3, Some("a")),
            delivery(4, None),
        );
        for d in [&a1, &a2, &a3, &free] {
            b.learn_fresh(d);
        }
        b.read_to(&("t".into(), 0), 5);
        b.start(&a1);
        assert!(b.hold(a2.clone(), event()).is_none());
        assert!(b.hold(a3.clone(), event()).is_none());
        // `free` waited only for a slot: ready at once.
        assert!(b.hold(free.clone(), event()).is_none());
        assert!(
            !b.waiting(),
            "everything not in progress is held: no scan needed"
        );
        assert_eq!(offsets(&b.start_ready(10)), [4], "a2 waits for a1");
        b.finish(&free, Settled::Done);
        assert_eq!(b.tracks[&("t".into(), 0)].watermark(), 1, "a1 is unsettled");
        b.finish(&a1, Settled::Done);
        assert_eq!(b.tracks[&("t".into(), 0)].watermark(), 2);
        assert_eq!(offsets(&b.start_ready(10)), [2], "one at a time per key");
        assert!(b.start_ready(10).is_empty());
        b.finish(&a2, Settled::Done);
        let last = b.start_ready(10);
        assert_eq!(offsets(&last), [3]);
        assert!(last[0].fresh && last[0].event.is_some());
        b.finish(&a3, Settled::Done);
        assert!(b.held.is_empty() && b.held_bytes == 0);
        assert_eq!(
            b.tracks[&("t".into(), 0)].watermark(),
            5,
            "all settled: the cursor may go to where the read ended"
        );
        assert_eq!(b.moved(), [(("t".to_string(), 0), 5)]);
    }

    #[test]
    fn a_failed_fresh_delivery_takes_its_key_into_the_store() {
        let mut b = board();
        let (a1, a2, a3, c1) = (
            delivery(1, Some("a")),
            delivery(2, Some("a")),
            delivery(3, Some("a")),
            delivery(4, Some("c")),
        );
        for d in [&a1, &a2, &c1] {
            b.learn_fresh(d);
        }
        b.read_to(&("t".into(), 0), 5);
        b.start(&a1);
        b.hold(a2.clone(), event());
        b.start(&c1);
        // a1's first attempt failed and its row committed: a2, held, must follow it there.
        let spilled = b.finish(&a1, Settled::Retrying);
        assert_eq!(
            spilled.iter().map(|d| d.key.offset).collect::<Vec<_>>(),
            [2]
        );
        assert!(b.held.is_empty());
        assert!(
            b.behind_the_store(&a3),
            "later ones of `a` go to the store too"
        );
        assert!(!b.behind_the_store(&c1));
        // a2 holds the watermark until the spiller commits it.
        assert_eq!(b.tracks[&("t".into(), 0)].watermark(), 2);
        b.settle_fresh(&a2.key);
        b.finish(&c1, Settled::Done);
        assert_eq!(b.tracks[&("t".into(), 0)].watermark(), 5);
        assert!(b.waiting(), "a1 and a2 are the store's: a scan finds them");
        // Once both are done, `a` is no longer behind the store.
        b.settled.clear();
        b.start(&a1);
        b.finish(&a1, Settled::Done);
        b.start(&a2);
        b.finish(&a2, Settled::Done);
        assert!(!b.behind_the_store(&a3));
        assert!(b.in_store.is_empty() && b.outstanding.is_empty());
    }

    #[test]
    fn an_unrecorded_fresh_delivery_keeps_the_watermark() {
        let mut b = board();
        let a1 = delivery(1, Some("a"));
        b.learn_fresh(&a1);
        b.read_to(&("t".into(), 0), 2);
        b.start(&a1);
        b.finish(&a1, Settled::NotRecorded);
        assert!(b.outstanding.is_empty());
        assert_eq!(b.tracks[&("t".into(), 0)].watermark(), 1);
    }

    #[test]
    fn a_held_delivery_beyond_the_memory_budget_is_spilled() {
        let mut b = board();
        let (a1, a2, a3) = (
            delivery(1, Some("a")),
            delivery(2, Some("a")),
            delivery(3, Some("a")),
        );
        for d in [&a1, &a2, &a3] {
            b.learn_fresh(d);
        }
        b.start(&a1);
        let big = Bytes::from(vec![b'x'; HELD_BYTES]);
        assert!(b.hold(a2.clone(), big).is_none(), "one always fits");
        assert!(b.hold(a3.clone(), event()).is_some(), "over the budget");
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            multiplier: 2.0,
            jitter: 0.0,
            max_attempts: 10,
            max_age_ms: 60_000,
        };
        let ms: Vec<u128> = (0..6).map(|a| backoff(&p, a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        let j = RetryPolicy { jitter: 0.5, ..p };
        for _ in 0..100 {
            let d = backoff(&j, 3).as_millis();
            assert!((400..=800).contains(&d), "{d}");
        }
    }

    #[test]
    fn deliver_at_reads_the_extension() {
        let at = |s: &str| deliver_at(&serde_json::from_str(s).unwrap());
        assert_eq!(at(r#"{"deliverat":"1970-01-01T00:00:01Z"}"#), Some(1000));
        assert_eq!(at(r#"{"deliverat":"later"}"#), None);
        assert_eq!(at(r#"{"deliverat":5}"#), None);
        assert_eq!(at("[1]"), None);
    }
}
