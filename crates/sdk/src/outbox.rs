//! The transactional outbox: events are written to `switchyard_outbox` inside the
//! service's own transaction, so they exist exactly when the state change they describe
//! does; the [`Relay`] publishes them afterwards with the event id as the dedup key and
//! deletes them once the platform has them.
//!
//! A crash between the commit and the publish leaves the rows: the relay of the restarted
//! service publishes them. A crash between the publish and the delete publishes them again:
//! the journal recognises the ids (within the topic's dedup window, default 2 minutes) and
//! appends nothing, and consumers' inboxes drop any that come later still.

use crate::client::Placed;
use crate::db::Backend;
use crate::error::{Error, Result};
use crate::event::{CloudEvent, Event, Outgoing, new_id};
use crate::log::Log;
use crate::platform::Platform;
use crate::trace::Lineage;
use sqlx::{Pool, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Where the relay hands events: the [`Platform`], or anything that stands in for it.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync + 'static {
    async fn publish(&self, topic: &str, events: Vec<CloudEvent>) -> Result<Vec<Placed>>;
}

#[async_trait::async_trait]
impl Publisher for Platform {
    async fn publish(&self, topic: &str, events: Vec<CloudEvent>) -> Result<Vec<Placed>> {
        Platform::publish(self, topic, events, None).await
    }
}

/// Writes events into a service's outbox. Cheap to clone.
pub struct Outbox<DB: Backend> {
    pool: Pool<DB>,
    wake: Arc<Notify>,
    source: Arc<str>,
}

impl<DB: Backend> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox {
            pool: self.pool.clone(),
            wake: self.wake.clone(),
            source: self.source.clone(),
        }
    }
}

impl<DB: Backend> std::fmt::Debug for Outbox<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("source", &self.source)
            .finish()
    }
}

impl<DB: Backend> Outbox<DB> {
    /// The outbox of the database behind `pool`; events get `source` (e.g. `/shop/payments`).
    pub fn new(pool: Pool<DB>, source: &str) -> Self {
        Outbox {
            pool,
            wake: Arc::new(Notify::new()),
            source: source.into(),
        }
    }

    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Adds `event` (a fresh id) within the transaction behind `conn`; it is published once
    /// that transaction commits. Returns the event as it will be published.
    pub async fn add<E: Event>(
        &self,
        conn: &mut DB::Connection,
        lineage: &Lineage,
        event: &E,
    ) -> Result<CloudEvent> {
        self.add_as(conn, new_id(), lineage, event).await
    }

    /// [`Self::add`] with the id given: an id derived from what caused the event (say
    /// `payment.captured/ord-1`) makes doing the same work twice publish it once.
    pub async fn add_as<E: Event>(
        &self,
        conn: &mut DB::Connection,
        id: String,
        lineage: &Lineage,
        event: &E,
    ) -> Result<CloudEvent> {
        let ce = Outgoing::of(event)?.stamp(id, &self.source, lineage)?;
        self.add_event(conn, E::TOPIC, &ce).await?;
        Ok(ce)
    }

    /// Adds a ready CloudEvent for `topic`.
    pub async fn add_event(
        &self,
        conn: &mut DB::Connection,
        topic: &str,
        event: &CloudEvent,
    ) -> Result<()> {
        switchyard_types::TopicName::new(topic)
            .map_err(|e| Error::config("topic", format!("{topic:?}: {e}")))?;
        let json = serde_json::to_string(event.as_map())
            .map_err(|e| Error::invalid("data", e.to_string()))?;
        DB::outbox_add(conn, topic, event.id(), &json).await
    }

    /// Commits `tx` and tells the relay, which publishes at once.
    pub async fn commit(&self, tx: Transaction<'static, DB>) -> Result<()> {
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Tells the relay there is something to publish (after a commit of your own).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The relay of this outbox.
    pub fn relay(&self, publisher: Arc<dyn Publisher>, log: Log) -> Relay<DB> {
        Relay {
            pool: self.pool.clone(),
            wake: self.wake.clone(),
            publisher,
            log,
            batch: 500,
            poll: Duration::from_secs(1),
        }
    }
}

/// Publishes what the outbox holds, oldest first, and deletes it once published.
pub struct Relay<DB: Backend> {
    pool: Pool<DB>,
    wake: Arc<Notify>,
    publisher: Arc<dyn Publisher>,
    log: Log,
    batch: i64,
    /// How often it looks without being woken (rows of a process that died meanwhile).
    poll: Duration,
}

impl<DB: Backend> std::fmt::Debug for Relay<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("batch", &self.batch).finish()
    }
}

impl<DB: Backend> Relay<DB> {
    /// Publishes until the outbox is empty (or only parked rows remain); returns how many
    /// rows were published. A refused event is parked (`parked`, with the reason) so the
    /// rows behind it go on; an unreachable platform is an error (try again later).
    pub async fn flush(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let rows = DB::outbox_pending(&self.pool, self.batch).await?;
            if rows.is_empty() {
                return Ok(total);
            }
            let mut i = 0;
            while i < rows.len() {
                // A run of rows of one topic goes in one request.
                let mut j = i + 1;
                while j < rows.len() && rows[j].topic == rows[i].topic {
                    j += 1;
                }
                total += self.publish_run(&rows[i..j]).await?;
                i = j;
            }
        }
    }

    async fn publish_run(&self, rows: &[crate::db::OutboxRow]) -> Result<usize> {
        let mut events = Vec::with_capacity(rows.len());
        let mut seqs = Vec::with_capacity(rows.len());
        for row in rows {
            let parsed = serde_json::from_str(&row.event)
                .map_err(|e| Error::invalid("/", e.to_string()))
                .and_then(CloudEvent::from_json);
            match parsed {
                Ok(e) => {
                    events.push(e);
                    seqs.push(row.seq);
                }
                Err(e) => self.park(row.seq, &e.to_string()).await?,
            }
        }
        if events.is_empty() {
            return Ok(0);
        }
        let topic = &rows[0].topic;
        match self.publisher.publish(topic, events.clone()).await {
            Ok(_) => {
                DB::outbox_done(&self.pool, &seqs).await?;
                Ok(seqs.len())
            }
            Err(e) if e.is_transient() => Err(e),
            // Refused for good: find which one, one by one, and park only that one.
            Err(e) if events.len() == 1 => {
                self.park(seqs[0], &e.to_string()).await?;
                Ok(0)
            }
            Err(_) => {
                let mut done = 0;
                for (event, seq) in events.into_iter().zip(seqs) {
                    match self.publisher.publish(topic, vec![event]).await {
                        Ok(_) => {
                            DB::outbox_done(&self.pool, &[seq]).await?;
                            done += 1;
                        }
                        Err(e) if e.is_transient() => return Err(e),
                        Err(e) => self.park(seq, &e.to_string()).await?,
                    }
                }
                Ok(done)
            }
        }
    }

    async fn park(&self, seq: i64, why: &str) -> Result<()> {
        self.log.line(format_args!(
            "outbox: row {seq} refused for good, parked in switchyard_outbox: {why}"
        ));
        DB::outbox_park(&self.pool, seq, why).await
    }

    /// Publishes whenever woken, and every second regardless, until `stop`. While the
    /// platform is away it retries with backoff (100 ms doubling to 5 s), saying so once.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        loop {
            let wait = match self.flush().await {
                Ok(_) => {
                    if failing {
                        self.log.line("outbox: publishing again");
                    }
                    failing = false;
                    backoff = Duration::from_millis(100);
                    self.poll
                }
                Err(e) => {
                    if !failing {
                        self.log
                            .line(format_args!("outbox: cannot publish ({e}); will retry"));
                    }
                    failing = true;
                    let d = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    d
                }
            };
            tokio::select! {
                _ = self.wake.notified(), if !failing => {}
                _ = tokio::time::sleep(wait) => {}
                _ = crate::stopped(&mut stop) => return,
            }
        }
    }
}
