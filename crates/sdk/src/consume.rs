//! Handling events: one event in one transaction with its inbox row (and, pulled, the
//! consumer's cursor), whether it was pushed by a subscription or pulled from a partition.
//!
//! Pulled ([`PartitionWorker`]): events of a partition are read in order; each handled one
//! commits its inbox row and the cursor with the handler's writes. A failing event is retried
//! with backoff while the events behind it go on, except those of its own key, which wait
//! (a failing key blocks only itself); after the policy's attempts, or at once when the
//! handler rejects it, it is parked in `switchyard_parked` and its key moves on. The cursor
//! never passes an unfinished event, so after a crash everything from the first unfinished
//! one is read again and the inbox drops what was already handled.

use crate::context::{Context, Handle};
use crate::db::{Backend, CursorMove, ParkedEvent};
use crate::error::{Error, HandlerError, Result};
use crate::event::CloudEvent;
use crate::progress::Positions;
use futures::FutureExt as _;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub(crate) type HandlerFn<DB> = Arc<
    dyn Fn(Context<DB>, CloudEvent) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;

/// The handlers of a service, by topic and type.
pub(crate) struct Handlers<DB: Backend> {
    pub by_topic: BTreeMap<String, HashMap<String, HandlerFn<DB>>>,
}

impl<DB: Backend> Clone for Handlers<DB> {
    fn clone(&self) -> Self {
        Handlers {
            by_topic: self.by_topic.clone(),
        }
    }
}

impl<DB: Backend> Handlers<DB> {
    pub fn find(&self, topic: Option<&str>, ty: &str) -> Option<&HandlerFn<DB>> {
        match topic {
            Some(t) => self.by_topic.get(t)?.get(ty),
            // Pushed events do not say their topic: the type decides (types are unique
            // across a service's topics; registration checks).
            None => self.by_topic.values().find_map(|m| m.get(ty)),
        }
    }
}

/// How a pulled event that fails is retried before it is parked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    /// Attempts in all; the event is parked after the last one fails.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            multiplier: 2.0,
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`-th failure (1-based), with up to 20% jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_backoff.as_secs_f64() * exp;
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = 1.0 + 0.2 * rand::random::<f64>();
        Duration::from_secs_f64((capped * jitter).min(self.max_backoff.as_secs_f64()))
    }
}

/// What became of one event.
#[derive(Debug)]
pub(crate) enum Outcome {
    Handled,
    /// Handled before (the inbox has it): nothing ran.
    Duplicate,
    /// No handler for its type.
    Unhandled,
    Failed(HandlerError),
}

/// Handles `event` once: inbox claim, handler, outbox rows and cursor in one transaction.
pub(crate) async fn process<DB: Backend>(
    handle: &Handle<DB>,
    handlers: &Handlers<DB>,
    topic: Option<&str>,
    event: CloudEvent,
    cursor: Option<CursorMove<'_>>,
) -> Outcome {
    let Some(handler) = handlers.find(topic, event.ty()).cloned() else {
        return Outcome::Unhandled;
    };
    match run_handler(handle, handler, event, cursor).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed(HandlerError::Retry(e.to_string())),
    }
}

async fn run_handler<DB: Backend>(
    handle: &Handle<DB>,
    handler: HandlerFn<DB>,
    event: CloudEvent,
    cursor: Option<CursorMove<'_>>,
) -> Result<Outcome> {
    let claimed = DB::begin_claiming(
        handle.db(),
        handle.name(),
        event.source(),
        event.id(),
        cursor,
    )
    .await?;
    let Some(tx) = claimed else {
        if let Some(c) = cursor {
            let mut tx = DB::begin(handle.db()).await?;
            DB::set_cursor(&mut tx, handle.name(), c.topic, c.partition, c.next_offset).await?;
            tx.commit().await?;
        }
        return Ok(Outcome::Duplicate);
    };
    let ctx = Context::new(handle.clone(), event, tx);
    let result = AssertUnwindSafe(handler(ctx.clone(), ctx.event().clone()))
        .catch_unwind()
        .await;
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => Some(HandlerError::Retry(format!(
            "the handler panicked: {}",
            panic_message(&*panic)
        ))),
    };
    let id = ctx.event().id().to_string();
    let Some((mut tx, pending)) = ctx.finish().await else {
        return Err(Error::TransactionEnded { event_id: id });
    };
    if let Some(f) = failure {
        // Dropping the transaction rolls back the inbox row and the handler's writes.
        drop(tx);
        return Ok(Outcome::Failed(f));
    }
    for (topic, e) in &pending {
        handle.outbox().add_event(&mut tx, topic, e).await?;
    }
    tx.commit().await?;
    if !pending.is_empty() {
        handle.outbox().wake();
    }
    Ok(Outcome::Handled)
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

struct Entry {
    event: CloudEvent,
    attempts: u32,
    /// Not before; `None`: ready.
    due: Option<Instant>,
    last_error: String,
}

/// Most events read ahead and not finished yet; reading waits beyond.
const MAX_UNFINISHED: usize = 1000;

/// Pulls one partition of one topic for a service, from its stored cursor.
pub(crate) struct PartitionWorker<DB: Backend> {
    pub handle: Handle<DB>,
    pub handlers: Handlers<DB>,
    pub topic: String,
    pub partition: u32,
    pub policy: RetryPolicy,
    /// Where it stands, for the host's owner.
    pub positions: Positions,
}

impl<DB: Backend> PartitionWorker<DB> {
    /// Runs until `stop`; an error means the partition cannot be read (the service restarts).
    pub async fn run(self, start: u64, mut stop: watch::Receiver<bool>) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<Result<Vec<CloudEvent>>>(4);
        let mut follow = self
            .handle
            .platform()
            .follow(&self.topic, self.partition, start);
        let reader = tokio::spawn(async move {
            loop {
                let batch = follow.next_batch().await;
                let failed = batch.is_err();
                if tx.send(batch).await.is_err() || failed {
                    return;
                }
            }
        });
        let _abort = AbortOnDrop(reader);
        let handled: HashSet<String> = self
            .handlers
            .by_topic
            .get(&self.topic)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut unfinished: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut read_next = start;
        let mut saved = start;
        loop {
            if let Some(written) = self.drain(&mut unfinished, read_next).await? {
                saved = written;
            }
            self.positions.set(
                self.handle.name(),
                &self.topic,
                self.partition,
                unfinished.keys().next().copied().unwrap_or(read_next),
                unfinished.len() as u64,
            );
            if unfinished.is_empty() && saved != read_next {
                // Only events it does not take since the last commit: move the cursor.
                let mut tx = DB::begin(self.handle.db()).await?;
                DB::set_cursor(
                    &mut tx,
                    self.handle.name(),
                    &self.topic,
                    self.partition,
                    read_next,
                )
                .await?;
                tx.commit().await?;
                saved = read_next;
            }
            let next_due = unfinished.values().filter_map(|e| e.due).min();
            tokio::select! {
                batch = rx.recv(), if unfinished.len() < MAX_UNFINISHED => {
                    let Some(batch) = batch else {
                        return Err(Error::Stopped(format!("reading {}/{}", self.topic, self.partition)));
                    };
                    for event in batch? {
                        let offset = event.sequence().unwrap_or(read_next);
                        if offset < read_next {
                            continue;
                        }
                        read_next = offset + 1;
                        if handled.contains(event.ty()) {
                            unfinished.insert(offset, Entry {
                                event,
                                attempts: 0,
                                due: None,
                                last_error: String::new(),
                            });
                        }
                    }
                }
                _ = sleep_until(next_due), if next_due.is_some() => {}
                _ = crate::stopped(&mut stop) => return Ok(()),
            }
        }
    }

    /// Handles every event that may go now, in offset order: one not due yet, or behind an
    /// unfinished one of its key, waits. Returns the last cursor it committed, if any.
    async fn drain(
        &self,
        unfinished: &mut BTreeMap<u64, Entry>,
        read_next: u64,
    ) -> Result<Option<u64>> {
        let now = Instant::now();
        let mut written = None;
        let mut held: HashSet<String> = HashSet::new();
        let offsets: Vec<u64> = unfinished.keys().copied().collect();
        for offset in offsets {
            let Some(entry) = unfinished.get(&offset) else {
                continue;
            };
            let key = entry.event.partition_key().map(str::to_string);
            if key.as_ref().is_some_and(|k| held.contains(k)) {
                continue;
            }
            if entry.due.is_some_and(|d| d > now) {
                held.extend(key);
                continue;
            }
            // The cursor after this one: the first other unfinished event, else the end.
            let after = unfinished
                .keys()
                .copied()
                .find(|&o| o != offset)
                .map_or(read_next, |o| o.min(read_next));
            let cursor = CursorMove {
                topic: &self.topic,
                partition: self.partition,
                next_offset: after,
            };
            let outcome = process(
                &self.handle,
                &self.handlers,
                Some(&self.topic),
                entry.event.clone(),
                Some(cursor),
            )
            .await;
            match outcome {
                Outcome::Handled | Outcome::Duplicate => {
                    unfinished.remove(&offset);
                    written = Some(after);
                }
                Outcome::Unhandled => {
                    unfinished.remove(&offset);
                }
                Outcome::Failed(failure) => {
                    let Some(entry) = unfinished.get_mut(&offset) else {
                        continue;
                    };
                    entry.attempts += 1;
                    entry.last_error = failure.to_string();
                    let give_up = matches!(failure, HandlerError::Reject(_))
                        || entry.attempts >= self.policy.max_attempts;
                    if give_up {
                        self.park(offset, entry, after).await?;
                        unfinished.remove(&offset);
                        written = Some(after);
                        continue;
                    }
                    let wait = match &failure {
                        HandlerError::Later { after, .. } => *after,
                        _ => self.policy.backoff(entry.attempts),
                    };
                    self.handle.log().line(format_args!(
                        "{} {} ({}/{}@{offset}): {failure}; attempt {} of {}, next in {} ms",
                        entry.event.ty(),
                        entry.event.id(),
                        self.topic,
                        self.partition,
                        entry.attempts,
                        self.policy.max_attempts,
                        wait.as_millis()
                    ));
                    entry.due = Some(Instant::now() + wait);
                    held.extend(key);
                }
            }
        }
        Ok(written)
    }

    async fn park(&self, offset: u64, entry: &Entry, cursor_after: u64) -> Result<()> {
        let json = serde_json::to_string(entry.event.as_map()).unwrap_or_default();
        let mut tx = DB::begin(self.handle.db()).await?;
        DB::park(
            &mut tx,
            ParkedEvent {
                consumer: self.handle.name(),
                topic: &self.topic,
                partition: self.partition,
                offset,
                event_id: entry.event.id(),
                event: &json,
                error: &entry.last_error,
                attempts: entry.attempts,
            },
        )
        .await?;
        DB::set_cursor(
            &mut tx,
            self.handle.name(),
            &self.topic,
            self.partition,
            cursor_after,
        )
        .await?;
        tx.commit().await?;
        self.handle.log().line(format_args!(
            "{} {} ({}/{}@{offset}): parked after {} attempt(s): {}",
            entry.event.ty(),
            entry.event.id(),
            self.topic,
            self.partition,
            entry.attempts,
            entry.last_error
        ));
        Ok(())
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts the task when dropped (a worker that returns stops its reader).
pub(crate) struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
