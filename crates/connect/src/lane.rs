//! One durable lane per adapter: its own cursor over the journal, its own workers and its
//! own rate limit, so a vendor that is down or slow holds up only its own lane.
//!
//! A lane runs these tasks:
//!
//! - **intake**, one per partition of the source topic: reads from the lane's cursor,
//!   keeps the events the adapter takes (type, then route), maps and encodes each into
//!   its request, and writes them with the cursor advance in one transaction
//!   ([`Store::lane_intake`]): the message store *is* the lane's buffer. A crash between
//!   two intakes reads the same events again, and the store inserts nothing twice.
//!   A mapping that fails puts the message straight into a case (stage `map`). A batch
//!   that produced no message writes its cursor lazily (`LazyCursor`). The messages the
//!   store reports ready (due and first of their key) are handed to the sender in memory.
//! - **sender**: starts the messages handed to it, and takes due messages from the store
//!   (oldest first, one at a time per key),
//!   waits until its vendor ([`Vendor`], shared by the lanes of adapters naming the same
//!   `vendor`) lets it: the rate limit (GCRA), any hold (a 429 or 503 for its
//!   Retry-After; a vendor that refuses connections or times out for a backoff that grows
//!   with the failures in a row, so a vendor that is down is probed, not flooded) and the
//!   send rate a 429 or 503 lowered; and runs at most `concurrency` attempts at once. Each attempt's outcome is one
//!   transaction ([`Store::finish_attempt`]); replies and business errors are appended as
//!   events *before* it, with ids derived from the message, so a crash in between appends
//!   nothing twice (the journal's dedup) and repeats the attempt at worst.
//! - **sweeper** (asynchronous adapters): messages whose reply did not come in time
//!   become failures (stage `reply`).
//!
//! Pause stops the sender (intake goes on: messages wait in the store); drain stops the
//! intake and lets the sender empty the lane; resume runs both. The state is kept in the
//! store, so it survives a restart.

use crate::adapter::{Adapter, Answer, Verdict, stage};
use crate::vendor::Vendor;
use crate::writer::{Sent, Writer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_journal::{Journal, PartitionChoice, ReadLimits};
use switchyard_store::connect::{
    Attempt, AttemptOutcome, Failure, Intake, LaneState, Message, MessageState, NewMessage,
};
use switchyard_store::{Cursor, Store};
use switchyard_types::{Record, StoredRecord, TopicName};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How long an idle sender sleeps before it looks at the store again (a message due
/// later, a retry, a replay from another instance).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a lane waits after a store or journal error before trying again.
const ERROR_PAUSE: Duration = Duration::from_millis(500);
/// Events read per intake.
const INTAKE_BATCH: usize = 256;

/// How long the cursor over events that produced no message may go unwritten.
const LAZY_CURSOR: Duration = Duration::from_secs(1);

/// The cursor of an intake whose events produced no message: written at most once every
/// [`LAZY_CURSOR`] (and when it is due while the partition is idle), not after each
/// batch, so lanes that take little do not take the store's write connection from those
/// that take their events (one write per event per lane otherwise). After a crash those
/// events are read again and produce nothing again.
pub(crate) struct LazyCursor {
    pending: Option<Cursor>,
    written_at: Instant,
}

impl LazyCursor {
    pub fn new() -> Self {
        Self {
            pending: None,
            written_at: Instant::now(),
        }
    }

    /// Whether a batch that produced nothing may leave `cursor` unwritten for now (it is
    /// kept for later).
    pub fn defer(&mut self, cursor: &Cursor) -> bool {
        if self.written_at.elapsed() < LAZY_CURSOR {
            self.pending = Some(cursor.clone());
            true
        } else {
            false
        }
    }

    /// The cursor was written (with or without messages).
    pub fn written(&mut self) {
        self.pending = None;
        self.written_at = Instant::now();
    }

    /// Writes a deferred cursor now (the intake stops: a new version of the adapter goes
    /// on from where this one read).
    pub async fn flush(&mut self, store: &dyn Store, lane: &str) {
        if let Some(cursor) = self.pending.take()
            && let Err(e) = store
                .lane_intake(lane, Vec::new(), Some(cursor), now_ms())
                .await
        {
            tracing::warn!(lane, "writing the lane's cursor: {e}");
        }
    }

    /// A deferred cursor and when it is due.
    pub fn due(&self) -> Option<(Cursor, Instant)> {
        self.pending
            .clone()
            .map(|c| (c, self.written_at + LAZY_CURSOR))
    }
}

/// Sleeps until a deferred cursor is due (forever without one).
pub(crate) async fn lazy_due(due: Option<&(Cursor, Instant)>) {
    match due {
        Some((_, at)) => tokio::time::sleep_until((*at).into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn now_ms() -> i64 {
    switchyard_types::Timestamp::now().millis()
}

/// Counters of one lane since it started.
#[derive(Debug, Default)]
pub struct LaneCounters {
    pub taken: AtomicU64,
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

/// What a lane shares between its tasks and its handle.
pub(crate) struct LaneShared {
    pub adapter: Arc<Adapter>,
    writer: Arc<dyn Writer>,
    store: Arc<dyn Store>,
    journal: Arc<dyn Journal>,
    pub state: watch::Sender<LaneState>,
    wake: Notify,
    /// The rate limit, holds and lowered rate, shared with the lanes of the same vendor.
    pub vendor: Arc<Vendor>,
    in_flight: std::sync::Mutex<HashSet<u64>>,
    /// Messages the intake just stored that were ready to send ([`Intake::ready`]), handed
    /// to the sender so it need not read them back (at most `concurrency`; any it does not
    /// start stay pending in the store, where `due_messages` finds them).
    handed: std::sync::Mutex<Vec<Message>>,
    pub counters: LaneCounters,
}

impl std::fmt::Debug for LaneShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneShared")
            .field("adapter", &self.adapter.name)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

/// A running lane: its shared state and its tasks.
#[derive(Debug)]
pub(crate) struct Lane {
    pub shared: Arc<LaneShared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Lane {
    /// Starts the lane of `adapter` in `state`.
    pub fn start(
        adapter: Arc<Adapter>,
        writer: Arc<dyn Writer>,
        store: Arc<dyn Store>,
        journal: Arc<dyn Journal>,
        vendor: Arc<Vendor>,
        state: LaneState,
    ) -> Self {
        let shared = Arc::new(LaneShared {
            adapter,
            writer,
            store,
            journal,
            state: watch::channel(state).0,
            wake: Notify::new(),
            vendor,
            in_flight: std::sync::Mutex::new(HashSet::new()),
            handed: std::sync::Mutex::new(Vec::new()),
            counters: LaneCounters::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(intakes(shared.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(sender(shared.clone(), stop_rx.clone())));
        if shared.adapter.correlation.is_some() {
            tasks.push(tokio::spawn(sweeper(shared.clone(), stop_rx.clone())));
        }
        Self {
            shared,
            stop,
            tasks,
        }
    }

    /// Adds a task that stops with the lane (a reply reader).
    pub fn attach(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops the lane: no new attempt starts; attempts in progress finish and record
    /// their outcome.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub fn set_state(&self, state: LaneState) {
        self.shared.state.send_replace(state);
        self.shared.wake.notify_one();
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Wakes the sender (messages were put back in the lane).
    pub fn poke(&self) {
        self.shared.wake.notify_one();
    }
}

/// Waits until `stop` turns true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The message the lane writes for one event it read, or `None` when the adapter does
/// not take it.
pub(crate) fn take(
    adapter: &Adapter,
    topic: &str,
    partition: u32,
    record: &StoredRecord,
) -> Option<NewMessage> {
    let event: Value = match serde_json::from_slice(&record.payload) {
        Ok(v @ Value::Object(_)) => v,
        // Not a CloudEvent (a raw journal record): not for adapters.
        _ => return None,
    };
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !adapter.wants_type(&event_type) {
        return None;
    }
    let event_id = event
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("{partition}-{}", record.offset), str::to_owned);
    let mut message = NewMessage {
        adapter: adapter.name.clone(),
        adapter_hash: adapter.hash.clone(),
        topic: topic.to_owned(),
        partition,
        offset: record.offset,
        event_id,
        event_type,
        partition_key: None,
        event: event.clone(),
        request: None,
        correlation_id: None,
        state: MessageState::Pending,
        failure: None,
    };
    let fail = |m: &mut NewMessage, stage: &str, class: &str, e: String| {
        m.state = MessageState::Failed;
        m.failure = Some(Failure {
            case: adapter.case_key(stage, class, None, &e),
            error: e,
        });
    };
    match adapter.takes(&event) {
        Ok(false) => return None,
        Ok(true) => {}
        Err(e) => {
            fail(
                &mut message,
                stage::ROUTE,
                "route-error",
                format!("route: {e}"),
            );
            return Some(message);
        }
    }
    match adapter.partition_key(&event) {
        Ok(k) => message.partition_key = k,
        Err(e) => {
            fail(&mut message, stage::MAP, "key-error", format!("key: {e}"));
            return Some(message);
        }
    }
    match adapter.prepare(&event) {
        Ok(p) => {
            message.request = Some(p.request);
            message.correlation_id = p.correlation_id;
        }
        Err(e) => fail(
            &mut message,
            stage::MAP,
            "mapping-error",
            format!("mapping: {e}"),
        ),
    }
    Some(message)
}

/// Where a partition's reading starts: the stored cursor, or (first start) the
/// partition's end or beginning, recorded at once.
async fn start_offset(
    s: &LaneShared,
    topic: &TopicName,
    partition: u32,
    from_start: bool,
) -> switchyard_store::Result<u64> {
    let lane = &s.adapter.name;
    if let Some(c) = s
        .store
        .lane_cursors(lane)
        .await?
        .into_iter()
        .find(|c| c.topic == topic.as_str() && c.partition == partition)
    {
        return Ok(c.offset);
    }
    let offset = match s.adapter.start {
        _ if from_start => 0,
        crate::config::Start::Earliest => 0,
        crate::config::Start::Latest => match s.journal.describe_topic(topic).await {
            Ok(info) => info
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .map_or(0, |p| p.next_offset),
            Err(_) => 0,
        },
    };
    s.store
        .set_lane_cursor(lane, Cursor::new(topic.as_str(), partition, offset))
        .await?;
    Ok(offset)
}

/// Waits for the source topic to exist, then runs one intake per partition.
async fn intakes(s: Arc<LaneShared>, mut stop: watch::Receiver<bool>) {
    // A topic created after the lane started holds only events the lane is meant to see:
    // it starts at its beginning whatever `start` says.
    let mut appeared_later = false;
    let partitions = loop {
        match s.journal.describe_topic(&s.adapter.topic).await {
            Ok(info) => break info.partitions.len(),
            Err(e) => {
                appeared_later = true;
                tracing::debug!(lane = s.adapter.name, "waiting for the source topic: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => return,
        }
    };
    let mut set = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let p = u32::try_from(p).unwrap_or(u32::MAX);
        set.spawn(intake(s.clone(), p, appeared_later, stop.clone()));
    }
    while set.join_next().await.is_some() {}
}

async fn intake(s: Arc<LaneShared>, partition: u32, from_start: bool, stop: watch::Receiver<bool>) {
    let mut lazy = LazyCursor::new();
    read_partition(&s, partition, from_start, stop, &mut lazy).await;
    lazy.flush(&*s.store, &s.adapter.name).await;
}

async fn read_partition(
    s: &LaneShared,
    partition: u32,
    from_start: bool,
    mut stop: watch::Receiver<bool>,
    lazy: &mut LazyCursor,
) {
    let topic = s.adapter.topic.clone();
    let lane = s.adapter.name.clone();
    let mut state = s.state.subscribe();
    let mut next = loop {
        tokio::select! {
            r = start_offset(s, &topic, partition, from_start) => match r {
                Ok(o) => break o,
                Err(e) => {
                    tracing::warn!(lane, "reading the lane's cursor: {e}");
                }
            },
            _ = stopped(&mut stop) => return,
        }
        tokio::time::sleep(ERROR_PAUSE).await;
    };
    loop {
        if *stop.borrow() {
            return;
        }
        if *state.borrow() == LaneState::Draining {
            tokio::select! {
                _ = state.changed() => continue,
                _ = stopped(&mut stop) => return,
            }
        }
        let limits = ReadLimits {
            max_records: INTAKE_BATCH,
            ..ReadLimits::default()
        };
        let batch = tokio::select! {
            b = s.journal.read(&topic, partition, next, limits) => b,
            _ = stopped(&mut stop) => return,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(lane, partition, "reading the journal: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        if batch.records.is_empty() {
            if !wait_for_more(s, partition, batch.next_offset, &mut state, &mut stop, lazy).await {
                return;
            }
            continue;
        }
        // The read reached the partition's end: wait for more before reading again (an
        // empty read is work for nothing while the partition is quiet).
        let at_end = batch.records.len() < INTAKE_BATCH;
        let messages: Vec<NewMessage> = batch
            .records
            .iter()
            .filter_map(|r| take(&s.adapter, topic.as_str(), partition, r))
            .collect();
        let taken = messages.len() as u64;
        let cursor = Cursor::new(topic.as_str(), partition, batch.next_offset);
        if messages.is_empty() && lazy.defer(&cursor) {
            next = batch.next_offset;
        } else {
            match s
                .store
                .lane_intake(&lane, messages, Some(cursor), now_ms())
                .await
            {
                Ok(intake) => {
                    lazy.written();
                    next = batch.next_offset;
                    s.counters.taken.fetch_add(taken, Ordering::Relaxed);
                    s.hand_over(intake);
                    if taken > 0 {
                        s.wake.notify_one();
                    }
                }
                Err(e) => {
                    tracing::warn!(lane, partition, "writing the lane's intake: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(ERROR_PAUSE) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    continue;
                }
            }
        }
        if at_end && !wait_for_more(s, partition, next, &mut state, &mut stop, lazy).await {
            return;
        }
    }
}

/// Waits until the partition holds records from `next`, the lane's state changes, or a
/// deferred cursor is due (then writes it). `false` when the lane stops.
async fn wait_for_more(
    s: &LaneShared,
    partition: u32,
    next: u64,
    state: &mut watch::Receiver<LaneState>,
    stop: &mut watch::Receiver<bool>,
    lazy: &mut LazyCursor,
) -> bool {
    let lane = &s.adapter.name;
    let due = lazy.due();
    tokio::select! {
        _ = s.journal.wait_for(&s.adapter.topic, partition, next) => {}
        _ = state.changed() => {}
        _ = lazy_due(due.as_ref()) => {
            if let Some((cursor, _)) = due {
                match s.store.lane_intake(lane, Vec::new(), Some(cursor), now_ms()).await {
                    Ok(_) => lazy.written(),
                    Err(e) => tracing::warn!(lane, partition, "writing the lane's cursor: {e}"),
                }
            }
        }
        _ = stopped(stop) => return false,
    }
    true
}

impl LaneShared {
    /// Hands the intake's ready messages to the sender, while the lane runs and up to
    /// `concurrency` of them (the rest the sender reads from the store).
    fn hand_over(&self, intake: Intake) {
        if intake.ready.is_empty() || *self.state.borrow() != LaneState::Running {
            return;
        }
        let room = self.adapter.concurrency as usize;
        if let Ok(mut handed) = self.handed.lock() {
            let free = room.saturating_sub(handed.len());
            handed.extend(intake.ready.into_iter().take(free));
        }
    }
}

async fn sender(s: Arc<LaneShared>, mut stop: watch::Receiver<bool>) {
    let lane = s.adapter.name.clone();
    let concurrency = s.adapter.concurrency as usize;
    let mut state = s.state.subscribe();
    let mut attempts = tokio::task::JoinSet::new();
    // The highest message id started. A handed message at or below it may have been
    // started already (read from the store before it was handed): it is left to
    // `due_messages`, which knows.
    let mut high_water = 0;
    // Until when nothing in the store is due (as of the last look).
    let mut quiet_until = Instant::now();
    loop {
        // Reap finished attempts (their outcome is recorded already).
        while attempts.try_join_next().is_some() {}
        if *stop.borrow() {
            break;
        }
        if *state.borrow() == LaneState::Paused {
            tokio::select! {
                _ = state.changed() => {}
                _ = stopped(&mut stop) => break,
            }
            continue;
        }
        let busy: Vec<u64> = s
            .in_flight
            .lock()
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        if busy.len() >= concurrency {
            tokio::select! {
                _ = s.wake.notified() => {}
                _ = stopped(&mut stop) => break,
            }
            continue;
        }
        let mut room = concurrency - busy.len();
        // What the intake just stored, ready to go: started without reading it back.
        let handed = s
            .handed
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        if !handed.is_empty() {
            let mut started_all = true;
            for message in handed {
                if room == 0 || message.id <= high_water {
                    started_all = false;
                    continue;
                }
                tokio::select! {
                    _ = s.vendor.ready() => {}
                    _ = stopped(&mut stop) => break,
                }
                if *state.borrow() == LaneState::Paused {
                    started_all = false;
                    break;
                }
                high_water = high_water.max(message.id);
                s.start(&mut attempts, message);
                room -= 1;
            }
            // Nothing else was due a moment ago, and the attempts just started wake the
            // sender when they finish: no need to look in the store before then.
            if started_all && Instant::now() < quiet_until {
                tokio::select! {
                    _ = s.wake.notified() => {}
                    _ = tokio::time::sleep_until(quiet_until.into()) => {}
                    _ = state.changed() => {}
                    _ = stopped(&mut stop) => break,
                }
            }
            continue;
        }
        let room = u32::try_from(room).unwrap_or(1);
        let due = match s.store.due_messages(&lane, now_ms(), &busy, room).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(lane, "reading due messages: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(ERROR_PAUSE) => continue,
                    _ = stopped(&mut stop) => break,
                }
            }
        };
        if due.is_empty() {
            let wait = match s.store.next_due_at(&lane).await {
                Ok(Some(at)) => {
                    let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                    Duration::from_millis(ms).min(IDLE_POLL)
                }
                _ => IDLE_POLL,
            };
            quiet_until = Instant::now() + wait;
            tokio::select! {
                _ = s.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = state.changed() => {}
                _ = stopped(&mut stop) => break,
            }
            continue;
        }
        for message in due {
            // The vendor's pause (429, 503, unreachable), rate limit and lowered rate.
            tokio::select! {
                _ = s.vendor.ready() => {}
                _ = stopped(&mut stop) => break,
            }
            if *state.borrow() == LaneState::Paused {
                break;
            }
            high_water = high_water.max(message.id);
            s.start(&mut attempts, message);
        }
    }
    // Attempts in progress finish and record their outcome.
    while attempts.join_next().await.is_some() {}
}

impl LaneShared {
    /// Starts an attempt of `message` (in flight until its outcome is recorded).
    fn start(self: &Arc<Self>, attempts: &mut tokio::task::JoinSet<()>, message: Message) {
        if let Ok(mut set) = self.in_flight.lock() {
            set.insert(message.id);
        }
        attempts.spawn(attempt(self.clone(), message));
    }
}

/// One attempt of one message, recorded.
async fn attempt(s: Arc<LaneShared>, message: Message) {
    let id = message.id;
    run_attempt(&s, message).await;
    if let Ok(mut set) = s.in_flight.lock() {
        set.remove(&id);
    }
    s.wake.notify_one();
}

async fn run_attempt(s: &LaneShared, message: Message) {
    let a = &s.adapter;
    let Some(request) = message.request.clone() else {
        return;
    };
    s.counters.attempts.fetch_add(1, Ordering::Relaxed);
    let at_ms = now_ms();
    let started = Instant::now();
    let sent =
        match tokio::time::timeout(a.timeout + Duration::from_secs(1), s.writer.send(&request))
            .await
        {
            Ok(sent) => sent,
            Err(_) => Sent::Failed {
                class: crate::writer::class::TIMEOUT,
                message: format!("no answer within {:?}", a.timeout),
            },
        };
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut record = Attempt {
        n: 0,
        at_ms,
        request,
        status: None,
        response_body: None,
        latency_us,
        delay_ms: None,
        error: None,
        outcome: String::new(),
    };
    let failed_attempts = message.attempts + 1;
    let exhausted = failed_attempts >= a.retry.max_attempts;
    let outcome = match sent {
        Sent::Failed { class, message: e } => {
            record.error = Some(format!("{class}: {e}"));
            let unreachable = matches!(
                class,
                crate::writer::class::CONNECT | crate::writer::class::TIMEOUT
            );
            if unreachable {
                s.vendor.unreachable(|n| a.backoff(n));
            }
            if exhausted {
                failure(a, class, None, &e, failed_attempts)
            } else {
                retry(a.backoff(failed_attempts))
            }
        }
        Sent::Answer(answer) => {
            if matches!(answer.status, Some(429 | 503)) {
                s.vendor
                    .slow_down(crate::adapter::retry_after(&answer), |n| a.backoff(n));
            } else {
                s.vendor.answered();
            }
            record.status = answer.status;
            record.response_body = Some(answer.body.clone());
            match a.classify(&answer) {
                Verdict::Success => match &a.correlation {
                    Some(k) => AttemptOutcome::AwaitReply {
                        deadline_ms: now_ms()
                            + i64::try_from(k.timeout.as_millis()).unwrap_or(i64::MAX / 2),
                    },
                    None => match append_reply(s, &message, &answer).await {
                        Ok(()) => AttemptOutcome::Delivered,
                        // Mapping the same reply again fails the same way: a case.
                        Err(ReplyError::Mapping(e)) => {
                            record.error = Some(e.clone());
                            AttemptOutcome::Failed(Failure {
                                case: a.case_key(stage::REPLY, "mapping-error", answer.status, &e),
                                error: e,
                            })
                        }
                        Err(ReplyError::Append(e)) => {
                            record.error = Some(e);
                            retry(a.backoff(failed_attempts))
                        }
                    },
                },
                Verdict::Retry { delay, reason } => {
                    record.error = Some(reason.clone());
                    record.delay_ms =
                        delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    if exhausted {
                        failure(a, "http-status", answer.status, &reason, failed_attempts)
                    } else {
                        retry(delay.unwrap_or_else(|| a.backoff(failed_attempts)))
                    }
                }
                Verdict::Business { event_type, reason } => {
                    record.error = Some(reason.clone());
                    match append_business(s, &message, &answer, &event_type, &reason).await {
                        Ok(()) => AttemptOutcome::Rejected { reason },
                        Err(e) => {
                            record.error = Some(e);
                            retry(a.backoff(failed_attempts))
                        }
                    }
                }
                Verdict::Unknown { class, message: m } => {
                    record.error = Some(m.clone());
                    AttemptOutcome::Failed(Failure {
                        case: a.case_key(stage::DELIVER, &class, answer.status, &m),
                        error: m,
                    })
                }
            }
        }
    };
    let counter = match &outcome {
        AttemptOutcome::Delivered | AttemptOutcome::AwaitReply { .. } => &s.counters.delivered,
        AttemptOutcome::Retry { .. } => &s.counters.retried,
        AttemptOutcome::Rejected { .. } => &s.counters.rejected,
        AttemptOutcome::Failed(_) => &s.counters.failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    // The attempt happened: its outcome must be recorded, so keep trying while the store
    // is unavailable (a message left pending is only sent again).
    for _ in 0..20 {
        match s
            .store
            .finish_attempt(message.id, record.clone(), outcome.clone(), now_ms())
            .await
        {
            Ok(_) => return,
            Err(
                switchyard_store::Error::Conflict { .. } | switchyard_store::Error::NotFound { .. },
            ) => return,
            Err(e) => {
                tracing::warn!(
                    lane = a.name,
                    message = message.id,
                    "recording an attempt: {e}"
                );
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

/// A retry `after` from now.
fn retry(after: Duration) -> AttemptOutcome {
    AttemptOutcome::Retry {
        next_at_ms: now_ms() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2),
    }
}

fn failure(
    a: &Adapter,
    class: &str,
    status: Option<u16>,
    e: &str,
    attempts: u32,
) -> AttemptOutcome {
    let message = format!("gave up after {attempts} attempts: {e}");
    AttemptOutcome::Failed(Failure {
        case: a.case_key(stage::DELIVER, class, status, e),
        error: message,
    })
}

/// Appends an event produced by the gateway for `message`, with an id derived from the
/// message (and `what`), so appending it again is a duplicate.
pub(crate) async fn append_event(
    journal: &dyn Journal,
    adapter: &Adapter,
    topic: &TopicName,
    message: &Message,
    what: &str,
    event_type: &str,
    data: Value,
) -> Result<(), String> {
    let id = format!("{}-{}-{what}", adapter.name, message.id);
    let mut event = json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("/switchyard/connect/{}", adapter.name),
        "type": event_type,
        "causationid": message.event_id,
        "correlationid": message.event.get("correlationid").cloned().unwrap_or_else(|| Value::String(message.event_id.clone())),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(k) = &message.partition_key {
        event["partitionkey"] = Value::String(k.clone());
    }
    let payload = serde_json::to_vec(&event).map_err(|e| format!("encoding the event: {e}"))?;
    let key = message
        .partition_key
        .as_ref()
        .map(|k| bytes::Bytes::copy_from_slice(k.as_bytes()));
    let choice = match &key {
        Some(k) => PartitionChoice::Key(k.clone()),
        None => PartitionChoice::RoundRobin,
    };
    let partition = journal
        .choose_partition(topic, &choice)
        .await
        .map_err(|e| format!("appending the {event_type} event to {topic}: {e}"))?;
    let record = Record {
        id: Some(id),
        key,
        headers: Vec::new(),
        payload: payload.into(),
    };
    journal
        .append(topic, partition, vec![record], None)
        .await
        .map(drop)
        .map_err(|e| format!("appending the {event_type} event to {topic}: {e}"))
}

/// Why a reply did not become its event.
enum ReplyError {
    /// The reply mapping failed (it would again).
    Mapping(String),
    /// The journal did not take the event (it may next time).
    Append(String),
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Mapping(e) | Self::Append(e) => f.write_str(e),
        }
    }
}

async fn append_reply(
    s: &LaneShared,
    message: &Message,
    answer: &Answer,
) -> Result<(), ReplyError> {
    let a = &s.adapter;
    let Some(r) = &a.reply else {
        return Ok(());
    };
    let data = a
        .reply_data(answer, &message.event)
        .map_err(|e| ReplyError::Mapping(format!("reply mapping: {e}")))?
        .unwrap_or(Value::Null);
    append_event(
        &*s.journal,
        a,
        &r.topic,
        message,
        "reply",
        &r.event_type,
        data,
    )
    .await
    .map_err(ReplyError::Append)
}

pub(crate) async fn append_business(
    s: &LaneShared,
    message: &Message,
    answer: &Answer,
    event_type: &str,
    reason: &str,
) -> Result<(), String> {
    let a = &s.adapter;
    let topic = a.reply.as_ref().map_or(&a.topic, |r| &r.topic);
    let view = answer.as_json();
    let data = json!({
        "adapter": a.name,
        "message-id": message.id,
        "event-id": message.event_id,
        "reason": reason,
        "status": answer.status,
        "body": view["body"],
    });
    append_event(&*s.journal, a, topic, message, "rejected", event_type, data).await
}

async fn sweeper(s: Arc<LaneShared>, mut stop: watch::Receiver<bool>) {
    let a = s.adapter.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopped(&mut stop) => return,
        }
        let e = "no reply within the correlation timeout";
        let failure = Failure {
            case: a.case_key(stage::REPLY, "timeout", None, e),
            error: e.to_owned(),
        };
        if let Err(err) = s.store.expire_replies(&a.name, now_ms(), failure).await {
            tracing::warn!(lane = a.name, "expiring replies: {err}");
        }
    }
}

impl LaneShared {
    /// Handles a reply from the vendor (the HTTP callback or the reply queue): finds its
    /// message by correlation id and, if it awaits a reply, settles it (the reply mapped
    /// into an event, a business error into its event, anything else into a case).
    /// Unmatched and late replies are recorded too.
    pub async fn receive_reply(
        &self,
        answer: Answer,
    ) -> crate::Result<switchyard_store::connect::Reply> {
        let a = &self.adapter;
        let correlation = a.reply_correlation(&answer);
        let now = now_ms();
        let message = match &correlation {
            Some(c) => self.store.message_by_correlation(&a.name, c).await?,
            None => None,
        };
        let mut settle = None;
        if let Some(m) = message
            .as_ref()
            .filter(|m| m.state == MessageState::AwaitingReply)
        {
            settle = Some(match a.classify(&answer) {
                Verdict::Success => match append_reply(self, m, &answer).await {
                    Ok(()) => AttemptOutcome::Delivered,
                    Err(e) => {
                        let e = e.to_string();
                        AttemptOutcome::Failed(Failure {
                            case: a.case_key(stage::REPLY, "reply-event", None, &e),
                            error: e,
                        })
                    }
                },
                Verdict::Business { event_type, reason } => {
                    match append_business(self, m, &answer, &event_type, &reason).await {
                        Ok(()) => AttemptOutcome::Rejected { reason },
                        Err(e) => AttemptOutcome::Failed(Failure {
                            case: a.case_key(stage::REPLY, "reply-event", None, &e),
                            error: e,
                        }),
                    }
                }
                Verdict::Retry { reason, .. }
                | Verdict::Unknown {
                    message: reason, ..
                } => AttemptOutcome::Failed(Failure {
                    case: a.case_key(stage::REPLY, "reply-error", answer.status, &reason),
                    error: reason,
                }),
            });
        }
        let reply = switchyard_store::connect::NewReply {
            adapter: a.name.clone(),
            correlation_id: correlation,
            received_at_ms: now,
            // Readable over the API: no credential is stored.
            headers: answer.recordable_headers(),
            body: answer.body.clone(),
        };
        Ok(self.store.record_reply(reply, settle, now).await?)
    }
}
