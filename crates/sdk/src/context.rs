//! What a handler gets: the event's envelope and lineage, the transaction its writes go in
//! (the inbox row and the outbox rows commit with them), and the service's [`Handle`].

use crate::db::Backend;
use crate::entity::Entities;
use crate::error::{Error, Result};
use crate::event::{CloudEvent, Event, Outgoing, new_id};
use crate::log::Log;
use crate::outbox::Outbox;
use crate::platform::Platform;
use crate::trace::Lineage;
use sqlx::{Pool, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMappedMutexGuard};

pub(crate) struct Shared<DB: Backend> {
    pub name: String,
    pub outbox: Outbox<DB>,
    pub platform: Platform,
    pub log: Log,
    pub env: BTreeMap<String, String>,
}

/// A running service: its name, database, outbox, platform, log and settings. What routes
/// and background tasks get; cheap to clone.
pub struct Handle<DB: Backend>(pub(crate) Arc<Shared<DB>>);

impl<DB: Backend> Clone for Handle<DB> {
    fn clone(&self) -> Self {
        Handle(self.0.clone())
    }
}

impl<DB: Backend> std::fmt::Debug for Handle<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("service", &self.0.name)
            .finish()
    }
}

impl<DB: Backend> Handle<DB> {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The service's database. On SQLite the pool has one connection (SQLite has one
    /// writer; a single connection handed over in order is faster than a second one put to
    /// sleep by the busy handler), so inside an event handler use the handler's transaction
    /// (`ctx.tx()`): a query on this pool there waits until the handler is done, and fails
    /// after 10 s.
    pub fn db(&self) -> &Pool<DB> {
        self.0.outbox.pool()
    }

    pub fn outbox(&self) -> &Outbox<DB> {
        &self.0.outbox
    }

    pub fn platform(&self) -> &Platform {
        &self.0.platform
    }

    pub fn log(&self) -> &Log {
        &self.0.log
    }

    /// A setting: the service's environment as the host gave it (under `switchyard dev`:
    /// the manifest's `[env]` plus what the runner injects).
    pub fn env(&self, name: &str) -> Option<&str> {
        self.0.env.get(name).map(String::as_str)
    }

    /// Event-sourced entities on the platform, publishing as this service.
    pub fn entities(&self) -> Entities {
        Entities::new(self.0.platform.clone(), self.0.outbox.source())
    }

    /// A write transaction on the service's database (SQLite: `BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<Transaction<'static, DB>> {
        DB::begin(self.db()).await
    }
}

type SharedTx<DB> = Arc<Mutex<Option<Transaction<'static, DB>>>>;

/// The handler's context. Cheap to clone; use it only while the handler runs.
pub struct Context<DB: Backend> {
    handle: Handle<DB>,
    event: Arc<CloudEvent>,
    lineage: Lineage,
    tx: SharedTx<DB>,
    pending: Arc<std::sync::Mutex<Vec<(String, CloudEvent)>>>,
}

impl<DB: Backend> Clone for Context<DB> {
    fn clone(&self) -> Self {
        Context {
            handle: self.handle.clone(),
            event: self.event.clone(),
            lineage: self.lineage.clone(),
            tx: self.tx.clone(),
            pending: self.pending.clone(),
        }
    }
}

impl<DB: Backend> std::fmt::Debug for Context<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("service", &self.handle.0.name)
            .field("event", &self.event.id())
            .finish()
    }
}

/// The handler's transaction: use `&mut *tx` as the sqlx executor. Drop it before the
/// handler returns.
pub struct Tx<DB: Backend>(
    OwnedMappedMutexGuard<Option<Transaction<'static, DB>>, Transaction<'static, DB>>,
);

impl<DB: Backend> std::fmt::Debug for Tx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tx")
    }
}

impl<DB: Backend> std::ops::Deref for Tx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.0
    }
}

impl<DB: Backend> std::ops::DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.0
    }
}

impl<DB: Backend> Context<DB> {
    pub(crate) fn new(handle: Handle<DB>, event: CloudEvent, tx: Transaction<'static, DB>) -> Self {
        let lineage = Lineage::caused_by(&event);
        Context {
            handle,
            event: Arc::new(event),
            lineage,
            tx: Arc::new(Mutex::new(Some(tx))),
            pending: Arc::default(),
        }
    }

    /// The transaction and the events to add to the outbox, once the handler is done.
    pub(crate) async fn finish(
        self,
    ) -> Option<(Transaction<'static, DB>, Vec<(String, CloudEvent)>)> {
        let tx = self.tx.lock().await.take()?;
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        Some((tx, pending))
    }

    /// The event being handled (`id`, `source`, `subject`, `time`, `partition`, ...).
    pub fn event(&self) -> &CloudEvent {
        &self.event
    }

    /// What events published from this handler carry: a child span of the event's trace,
    /// its correlation id, the event as their cause.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    pub fn handle(&self) -> &Handle<DB> {
        &self.handle
    }

    pub fn log(&self) -> &Log {
        self.handle.log()
    }

    pub fn env(&self, name: &str) -> Option<&str> {
        self.handle.env(name)
    }

    /// Event-sourced entities, publishing as this service with this event's lineage (its
    /// trace, correlation id, and the event as their cause). The appends go to the journal
    /// directly, not through the handler's transaction: a handler retried after appending
    /// meets its own events (and a conflict, with an expected offset).
    pub fn entities(&self) -> Entities {
        self.handle.entities().with_lineage(self.lineage.clone())
    }

    /// The handler's transaction: the inbox row is in it, and the outbox rows of
    /// [`Self::publish`] join it when the handler returns `Ok`.
    pub async fn tx(&self) -> Result<Tx<DB>> {
        let guard = self.tx.clone().lock_owned().await;
        tokio::sync::OwnedMutexGuard::try_map(guard, |t| t.as_mut())
            .map(Tx)
            .map_err(|_| Error::TransactionEnded {
                event_id: self.event.id().to_string(),
            })
    }

    /// Publishes `event` through the outbox, in the handler's transaction: it goes out
    /// exactly when the handler's writes commit, with this event's lineage. The id is fresh.
    pub fn publish<E: Event>(&self, event: &E) -> Result<CloudEvent> {
        self.publish_as(new_id(), event)
    }

    /// [`Self::publish`] with the id given: derive it from the cause (`payment.captured/ord-1`)
    /// and doing the same work twice publishes one event.
    pub fn publish_as<E: Event>(&self, id: impl Into<String>, event: &E) -> Result<CloudEvent> {
        let ce =
            Outgoing::of(event)?.stamp(id.into(), self.handle.outbox().source(), &self.lineage)?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((E::TOPIC.to_string(), ce.clone()));
        Ok(ce)
    }
}
