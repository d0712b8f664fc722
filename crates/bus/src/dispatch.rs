//! One subscription's dispatcher: readers that move records from the journal into the
//! store's in-flight table, and a deliverer that pushes what is due.
//!
//! Two ways into a push. The fast way: a reader hands each record it read to the
//! deliverer together with the event itself, before the store has committed the
//! enqueue, and the deliverer pushes at once when per-key order allows; the outcome is
//! recorded only after that commit, so a push never gets ahead of the store's record of
//! it (a crash in between means one more delivery, never a lost one). The slow way: the
//! deliverer scans the store for what is due (retries, delayed events, parked events put
//! back, whatever the fast way could not take) and reads each event from the journal.

use crate::push::{self, Outcome};
use crate::{BusOptions, now_ms};
use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_journal::{Journal, Partition, ReadLimits, TopicName};
use switchyard_store::{Cursor, Delivery, DeliveryKey, RetryPolicy, Store, Subscription};
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
}

/// An acknowledgement to write, and where to say how it went.
type Ack = (DeliveryKey, oneshot::Sender<Result<(), String>>);

/// What orders deliveries: topic, partition and partition key.
type OrderKey = (String, u32, String);

fn order_key(d: &Delivery) -> Option<OrderKey> {
    d.partition_key
        .clone()
        .map(|k| (d.key.topic.clone(), d.key.partition, k))
}

/// Turns true once the store has committed a reader's enqueue; its sender is dropped
/// without that when the dispatcher stops first.
type Commit = watch::Receiver<bool>;

/// From a reader to the deliverer: records just read, with their events, on their way
/// into the store.
struct Handoff {
    deliveries: Vec<(Delivery, Bytes, Early)>,
    commit: Commit,
}

/// From a reader to its partition's enqueuer: what to write to the store, in read order.
struct Enqueue {
    deliveries: Vec<(Delivery, Early)>,
    cursor_after: Cursor,
    committed: watch::Sender<bool>,
}

/// Where a fresh delivery stands between its push and its enqueue: a push acknowledged
/// before the enqueuer took the delivery means it never needs a row (the cursor advance
/// that follows covers it), which saves the store two writes per event.
type Early = Arc<AtomicU8>;
const PENDING: u8 = 0;
const ACKED_EARLY: u8 = 1;
const ENQUEUING: u8 = 2;

/// How long an enqueuer holds a fresh batch so pushes in flight can finish first. It delays
/// only the store's record (and the outcome of pushes that failed), never a push.
const LINGER: Duration = Duration::from_millis(1);

/// A delivery about to be attempted: its event when already in hand, and for a fresh one
/// its enqueue's commit and early-acknowledgement flag.
struct Pending {
    d: Delivery,
    event: Option<Bytes>,
    fresh: Option<(Commit, Early)>,
}

/// How an attempt ended, for the deliverer's board.
enum Settled {
    /// Acknowledged or parked: no longer in flight.
    Done,
    /// Scheduled for another attempt.
    Retrying,
    /// Nothing was recorded (the dispatcher stopped before its enqueue committed).
    NotRecorded,
}

/// The deliverer's picture of the subscription: every delivery it knows to be in the
/// store's in-flight table, which of them are being attempted, and which settled lately.
#[derive(Default)]
struct Board {
    /// Enqueued and not yet acknowledged or parked, with the key that orders each.
    outstanding: HashMap<DeliveryKey, Option<OrderKey>>,
    /// The outstanding offsets of each order key: only the first may be attempted.
    by_key: HashMap<OrderKey, BTreeSet<u64>>,
    busy: HashSet<DeliveryKey>,
    busy_keys: HashSet<OrderKey>,
    /// Deliveries whose attempt ended, with the count of finished attempts at that moment:
    /// a scan of the store that began before may still list them as due.
    settled: HashMap<DeliveryKey, u64>,
    finished: u64,
    /// Events of fresh deliveries that had to wait for a scan, as the reader read them, so
    /// the scan's attempt need not read them again (at most `EVENT_CACHE_BYTES`).
    events: HashMap<DeliveryKey, Bytes>,
    event_bytes: usize,
}

const EVENT_CACHE_BYTES: usize = 32 << 20;

impl Board {
    fn learn(&mut self, d: &Delivery) {
        if self.settled.contains_key(&d.key) || self.outstanding.contains_key(&d.key) {
            return;
        }
        let k = order_key(d);
        if let Some(k) = &k {
            self.by_key
                .entry(k.clone())
                .or_default()
                .insert(d.key.offset);
        }
        self.outstanding.insert(d.key.clone(), k);
    }

    fn keep_event(&mut self, key: &DeliveryKey, event: Bytes) {
        if self.event_bytes + event.len() <= EVENT_CACHE_BYTES
            && self.outstanding.contains_key(key)
            && !self.events.contains_key(key)
        {
            self.event_bytes += event.len();
            self.events.insert(key.clone(), event);
        }
    }

    fn take_event(&mut self, key: &DeliveryKey) -> Option<Bytes> {
        let e = self.events.remove(key)?;
        self.event_bytes -= e.len();
        Some(e)
    }

    fn forget(&mut self, key: &DeliveryKey) {
        self.take_event(key);
        if let Some(Some(k)) = self.outstanding.remove(key)
            && let Some(offsets) = self.by_key.get_mut(&k)
        {
            offsets.remove(&key.offset);
            if offsets.is_empty() {
                self.by_key.remove(&k);
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

    fn finish(&mut self, d: &Delivery, how: Settled) {
        self.busy.remove(&d.key);
        if let Some(k) = order_key(d) {
            self.busy_keys.remove(&k);
        }
        match how {
            Settled::Done => {
                self.finished += 1;
                self.settled.insert(d.key.clone(), self.finished);
                self.forget(&d.key);
            }
            Settled::Retrying => {
                self.finished += 1;
                self.settled.insert(d.key.clone(), self.finished);
            }
            Settled::NotRecorded => self.forget(&d.key),
        }
    }

    /// Whether a scan of the store could find something to start: an outstanding
    /// delivery that is not being attempted.
    fn waiting(&self) -> bool {
        self.outstanding.len() > self.busy.len()
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

impl Dispatcher {
    pub async fn run(self) {
        let me = Arc::new(self);
        let name = me.sub.spec.name.clone();
        let mut partitions = Vec::new();
        for topic in &me.sub.spec.topics {
            let Ok(topic) = TopicName::new(topic) else {
                continue; // validated by the store: cannot happen
            };
            let count = loop {
                match me.journal.describe_topic(&topic).await {
                    Ok(info) => break info.partitions.len() as Partition,
                    Err(e) => {
                        tracing::warn!(subscription = %name, %topic, "waiting for the topic: {e}");
                        let mut stop = me.stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopped(&mut stop) => return,
                        }
                    }
                }
            };
            partitions.extend((0..count).map(|p| (topic.clone(), p)));
        }
        // The board starts from the store's in-flight table, before any reader adds to it.
        let mut board = Board::default();
        for (topic, p) in &partitions {
            loop {
                match me.store.in_flight(&name, topic.as_str(), *p).await {
                    Ok(all) => {
                        all.iter().for_each(|d| board.learn(d));
                        break;
                    }
                    Err(e) => {
                        tracing::error!(subscription = %name, "reading in-flight deliveries: {e}");
                        let mut stop = me.stop.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = stopped(&mut stop) => return,
                        }
                    }
                }
            }
        }
        let outstanding = Arc::new(AtomicUsize::new(board.outstanding.len()));
        let wake = Arc::new(Notify::new());
        // A few batches per partition in transit at most; readers wait when it is full.
        let (handoff, handoffs) = mpsc::channel(8 * partitions.len().max(1));
        let (acks, queued) = mpsc::channel(1024);
        let _ = me.acks.set(acks);
        let mut tasks = vec![tokio::spawn(me.clone().acknowledge(queued))];
        for (topic, p) in partitions {
            // A few batches ahead at most: the reader waits when the store falls behind.
            let (enqueue, enqueues) = mpsc::channel(4);
            tasks.push(tokio::spawn(
                me.clone().enqueue_in_order(enqueues, wake.clone()),
            ));
            tasks.push(tokio::spawn(me.clone().read(
                topic,
                p,
                handoff.clone(),
                enqueue,
                outstanding.clone(),
            )));
        }
        drop(handoff);
        me.deliver(board, handoffs, wake, outstanding).await;
        for t in tasks {
            t.abort();
        }
    }

    /// Reads one partition from the cursor: hands each batch to the deliverer and to the
    /// partition's enqueuer, and goes on reading without waiting for the store.
    async fn read(
        self: Arc<Self>,
        topic: TopicName,
        partition: Partition,
        handoff: mpsc::Sender<Handoff>,
        enqueue: mpsc::Sender<Enqueue>,
        outstanding: Arc<AtomicUsize>,
    ) {
        let name = &self.sub.spec.name;
        let mut stop = self.stop.clone();
        let mut cursor = match self.store.cursors(name).await {
            Ok(cs) => cs
                .into_iter()
                .find(|c| c.topic == topic.as_str() && c.partition == partition)
                .map_or(0, |c| c.offset),
            Err(e) => {
                tracing::error!(subscription = %name, "reading cursors: {e}");
                return;
            }
        };
        let types = &self.sub.spec.types;
        loop {
            if *stop.borrow() {
                return;
            }
            // Backpressure: do not read further ahead than the subscriber can take.
            if outstanding.load(Ordering::Relaxed) >= self.options.max_in_flight as usize {
                tokio::select! {
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
                tokio::select! {
                    _ = self.journal.wait_for(&topic, partition, batch.next_offset) => {}
                    _ = stopped(&mut stop) => return,
                }
                cursor = batch.next_offset.max(cursor);
                continue;
            }
            let now = now_ms();
            let fresh: Vec<(Delivery, Bytes, Early)> = batch
                .records
                .into_iter()
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
                        (d, r.payload, Early::default())
                    })
                })
                .collect();
            let deliveries: Vec<(Delivery, Early)> = fresh
                .iter()
                .map(|(d, _, e)| (d.clone(), e.clone()))
                .collect();
            let (committed, commit) = watch::channel(false);
            let enqueue_this = Enqueue {
                deliveries,
                cursor_after: Cursor::new(topic.as_str(), partition, batch.next_offset),
                committed,
            };
            let sent = tokio::select! {
                r = async {
                    if !fresh.is_empty() {
                        handoff.send(Handoff { deliveries: fresh, commit }).await.ok()?;
                    }
                    enqueue.send(enqueue_this).await.ok()
                } => r.is_some(),
                _ = stopped(&mut stop) => return,
            };
            if !sent {
                return; // the dispatcher is stopping
            }
            cursor = batch.next_offset;
        }
    }

    /// Writes one partition's batches to the store in read order, each with the cursor
    /// after it, several at once when they queue up; a failed write is retried (the
    /// deliveries it carries wait, since an outcome is recorded only after the enqueue).
    async fn enqueue_in_order(
        self: Arc<Self>,
        mut enqueues: mpsc::Receiver<Enqueue>,
        wake: Arc<Notify>,
    ) {
        let name = &self.sub.spec.name;
        let mut stop = self.stop.clone();
        while let Some(first) = enqueues.recv().await {
            if !first.deliveries.is_empty() {
                tokio::time::sleep(LINGER).await;
            }
            let mut batch = vec![first];
            while batch.len() < 16 {
                match enqueues.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            // From here on a push's outcome waits for the commit; those acknowledged
            // already are left out.
            let deliveries: Vec<Delivery> = batch
                .iter()
                .flat_map(|e| e.deliveries.iter())
                .filter(|(_, early)| {
                    early
                        .compare_exchange(PENDING, ENQUEUING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
                .map(|(d, _)| d.clone())
                .collect();
            let cursor = batch.last().map(|e| e.cursor_after.clone());
            while let Err(e) = self
                .store
                .enqueue(name, deliveries.clone(), cursor.clone())
                .await
            {
                tracing::error!(subscription = %name, "enqueue (retrying in 1 s): {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stopped(&mut stop) => return,
                }
            }
            for e in batch {
                let _ = e.committed.send(true);
            }
            wake.notify_one();
        }
    }

    /// Pushes what may go now, at most `concurrency` at once, one at a time per key: fresh
    /// records as they are handed over, and what a scan of the store finds due.
    async fn deliver(
        self: &Arc<Self>,
        board: Board,
        mut handoffs: mpsc::Receiver<Handoff>,
        wake: Arc<Notify>,
        outstanding: Arc<AtomicUsize>,
    ) {
        let name = self.sub.spec.name.clone();
        let permits = Arc::new(Semaphore::new(self.sub.spec.concurrency as usize));
        let board = Arc::new(Mutex::new(board));
        let mut stop = self.stop.clone();
        let mut scan = true;
        let mut poll = tokio::time::interval(self.options.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'run: loop {
            if *stop.borrow() {
                break;
            }
            // Scan before taking handoffs: a record the scan finds was handed over before
            // its enqueue committed, so the board learns it below before it is started.
            let mut due = Vec::new();
            if scan {
                let before = lock(&board).finished;
                due = match self.store.due(&name, now_ms(), 512).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(subscription = %name, "due: {e}");
                        Vec::new()
                    }
                };
                // Attempts that ended before the scan began are reflected in what it read.
                lock(&board).settled.retain(|_, at| *at > before);
            }
            while let Ok(h) = handoffs.try_recv() {
                self.take(h, &board, &permits, &wake);
            }
            {
                let mut b = lock(&board);
                due.iter().for_each(|d| b.learn(d));
            }
            let max = self.sub.spec.max_batch.max(1) as usize;
            let mut group: Vec<Pending> = Vec::new();
            let mut permit = None;
            for d in due {
                if !lock(&board).may_start(&d) {
                    continue;
                }
                if permit.is_none() {
                    permit = tokio::select! {
                        p = permits.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => break 'run },
                        _ = stopped(&mut stop) => break 'run,
                    };
                }
                // Fresh handoffs may have started the same key meanwhile: check again.
                let mut b = lock(&board);
                if !b.may_start(&d) {
                    continue;
                }
                b.start(&d);
                let event = b.take_event(&d.key);
                drop(b);
                group.push(Pending {
                    d,
                    event,
                    fresh: None,
                });
                if group.len() == max
                    && let Some(p) = permit.take()
                {
                    self.spawn_attempt(std::mem::take(&mut group), p, &board, &wake);
                }
            }
            if let Some(p) = permit
                && !group.is_empty()
            {
                self.spawn_attempt(group, p, &board, &wake);
            }
            outstanding.store(lock(&board).outstanding.len(), Ordering::Relaxed);
            tokio::select! {
                h = handoffs.recv() => {
                    match h {
                        Some(h) => self.take(h, &board, &permits, &wake),
                        None => break,
                    }
                    scan = false;
                }
                _ = wake.notified() => scan = lock(&board).waiting(),
                _ = self.poke.notified() => scan = true,
                _ = poll.tick() => scan = true,
                _ = stopped(&mut stop) => break,
            }
        }
        // Let attempts in progress finish and record their outcome, up to a bound.
        let all = self.sub.spec.concurrency;
        let _ = tokio::time::timeout(self.options.push_timeout, async {
            let _ = permits.acquire_many(all).await;
            while !lock(&board).busy.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Takes a reader's handoff: learns the records and starts those that may go now and
    /// are due (delayed ones and those that must wait are left to a scan of the store).
    fn take(
        self: &Arc<Self>,
        handoff: Handoff,
        board: &Arc<Mutex<Board>>,
        permits: &Arc<Semaphore>,
        wake: &Arc<Notify>,
    ) {
        let Handoff { deliveries, commit } = handoff;
        let now = now_ms();
        for (d, _, _) in &deliveries {
            lock(board).learn(d);
        }
        let max = self.sub.spec.max_batch.max(1) as usize;
        let mut group: Vec<Pending> = Vec::new();
        let mut permit = None;
        for (d, event, early) in deliveries {
            let mut b = lock(board);
            let go = d.next_attempt_at_ms <= now && b.may_start(&d);
            if go && permit.is_none() {
                permit = permits.clone().try_acquire_owned().ok();
            }
            if !go || permit.is_none() {
                b.keep_event(&d.key, event); // for the scan that will start it
                continue;
            }
            b.start(&d);
            drop(b);
            let fresh = Some((commit.clone(), early));
            group.push(Pending {
                d,
                event: Some(event),
                fresh,
            });
            if group.len() == max
                && let Some(p) = permit.take()
            {
                self.spawn_attempt(std::mem::take(&mut group), p, board, wake);
            }
        }
        if let Some(p) = permit
            && !group.is_empty()
        {
            self.spawn_attempt(group, p, board, wake);
        }
    }

    fn spawn_attempt(
        self: &Arc<Self>,
        group: Vec<Pending>,
        permit: tokio::sync::OwnedSemaphorePermit,
        board: &Arc<Mutex<Board>>,
        wake: &Arc<Notify>,
    ) {
        let me = self.clone();
        let (board, wake) = (board.clone(), wake.clone());
        tokio::spawn(async move {
            let ds: Vec<Delivery> = group.iter().map(|p| p.d.clone()).collect();
            let settled = me.attempt(group, permit).await;
            let mut b = lock(&board);
            for (d, how) in ds.iter().zip(settled) {
                b.finish(d, how);
            }
            drop(b);
            wake.notify_one();
        });
    }

    /// One push of `group` (one event, or a batch with `max-batch` above 1), then for each
    /// delivery: ack, retry later or park. A fresh delivery waits for its enqueue to
    /// commit before anything is recorded. The concurrency permit covers the push only:
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
        let pushed = match request {
            Some(Ok(req)) => Some(push::attempt(req).await),
            Some(Err(error)) => Some(Outcome::Reject { error }),
            None => None,
        };
        drop(permit);
        // Recorded side by side: the acknowledger writes a batch's acks in one transaction.
        let records = group.into_iter().zip(outcomes).map(|(p, own)| {
            let outcome = own.or_else(|| pushed.clone());
            async move {
                match outcome {
                    Some(outcome) => self.record(&p.d, p.fresh, outcome, now).await,
                    None => Settled::NotRecorded,
                }
            }
        });
        futures::future::join_all(records).await
    }

    /// Records the outcome of one delivery's attempt.
    async fn record(
        &self,
        d: &Delivery,
        fresh: Option<(Commit, Early)>,
        outcome: Outcome,
        now: i64,
    ) -> Settled {
        if let Some((mut commit, early)) = fresh {
            let acked = matches!(outcome, Outcome::Delivered);
            if acked
                && early
                    .compare_exchange(PENDING, ACKED_EARLY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return Settled::Done; // the enqueuer leaves it out
            }
            if commit.wait_for(|&done| done).await.is_err() {
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
            Outcome::Retry { error, not_before } => {
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
                    let delay = not_before.unwrap_or_else(|| backoff(policy, d.attempts));
                    let at = now_ms().saturating_add(delay.as_millis() as i64);
                    let r = self.store.retry_later(&d.key, now, at, &error).await;
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

    #[test]
    fn the_board_starts_one_delivery_per_key_in_offset_order() {
        let mut b = Board::default();
        let (a1, a2, b1, free) = (
            delivery(1, Some("a")),
            delivery(2, Some("a")),
            delivery(3, Some("b")),
            delivery(4, None),
        );
        // Learned out of order (a scan can list a later one first): still offset order.
        for d in [&a2, &b1, &a1, &free] {
            b.learn(d);
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
        b.learn(&a1);
        assert!(b.may_start(&a2), "a settled delivery is not learned again");
        // An attempt that recorded nothing leaves no trace.
        b.start(&b1);
        b.finish(&b1, Settled::NotRecorded);
        assert!(!b.outstanding.contains_key(&b1.key) && !b.settled.contains_key(&b1.key));
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
