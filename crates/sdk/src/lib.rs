//! # switchyard-sdk: a Switchyard service in Rust
//!
//! Write the handlers; the SDK gives them what every event-driven service needs and most
//! get wrong by hand:
//!
//! - **typed events**: a struct per CloudEvents type, `#[derive(Event)]` names its type,
//!   topic and partition key; data by serde.
//! - **an inbox** (idempotent consumer): each handler runs in a transaction of the
//!   service's own database (SQLite or PostgreSQL, sqlx) that also records the event's id;
//!   a redelivered event is acknowledged without running the handler again.
//! - **a transactional outbox**: what a handler publishes is written in that same
//!   transaction and published by a relay after the commit, with the event id as the dedup
//!   key: a crash between the two neither loses nor duplicates an event.
//! - **lineage**: events published from a handler carry its event's trace (a child span of
//!   its `traceparent`), correlation id and, as causation id, its id.
//! - **ordered, at-least-once delivery**, pushed by a subscription (`POST /events`) or
//!   pulled from the topics with a cursor committed with each handler's writes; a failing
//!   event is retried with backoff and then parked, blocking only its own key.
//! - **event-sourced entities** ([`Entity`], [`Entities`]): fold a key's events into state,
//!   append new ones on the condition that nobody else did meanwhile, retry on conflict.
//! - **many services in one process** ([`Host`]): each with its own database, port and
//!   consumers; one that panics is restarted on its own. Under `switchyard dev` they run
//!   inside the platform's process, straight on the embedded journal, with no HTTP hop.
//!
//! ## A complete service
//!
//! Payments: takes `stock.reserved`, charges the order once, publishes `payment.captured`
//! or `payment.failed`, and answers `GET /payments`.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use switchyard_sdk::axum::{Json, Router, extract::State, routing::get};
//! use switchyard_sdk::sqlx::{self, Sqlite};
//! use switchyard_sdk::{Context, Event, Handle, HandlerError, Host, Service};
//!
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(type = "stock.reserved", topic = "inventory.v1", key = order)]
//! struct StockReserved { order: String, customer: String, total_cents: i64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(type = "payment.captured", topic = "payments.v1", key = order)]
//! struct PaymentCaptured { order: String, amount_cents: i64 }
//!
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(type = "payment.failed", topic = "payments.v1", key = order)]
//! struct PaymentFailed { order: String, reason: String }
//!
//! /// Runs once per event: the inbox row, the payment row and the outbox row commit together.
//! async fn on_reserved(ctx: Context<Sqlite>, ev: StockReserved) -> Result<(), HandlerError> {
//!     let limit: i64 = ctx.env("PAYMENT_LIMIT_CENTS").and_then(|v| v.parse().ok()).unwrap_or(50_000);
//!     let declined = ev.total_cents > limit;
//!     let mut tx = ctx.tx().await?;
//!     sqlx::query("INSERT INTO payments (order_id, amount_cents, state) VALUES (?, ?, ?)")
//!         .bind(&ev.order)
//!         .bind(ev.total_cents)
//!         .bind(if declined { "failed" } else { "captured" })
//!         .execute(&mut *tx)
//!         .await?;
//!     drop(tx);
//!     if declined {
//!         ctx.publish(&PaymentFailed { order: ev.order, reason: "over the limit".into() })?;
//!     } else {
//!         ctx.publish(&PaymentCaptured { order: ev.order, amount_cents: ev.total_cents })?;
//!     }
//!     Ok(())
//! }
//!
//! async fn list(State(h): State<Handle<Sqlite>>) -> Json<Vec<(String, String)>> {
//!     let rows = sqlx::query_as("SELECT order_id, state FROM payments")
//!         .fetch_all(h.db())
//!         .await
//!         .unwrap_or_default();
//!     Json(rows)
//! }
//!
//! fn payments() -> Service<Sqlite> {
//!     Service::new("payments")
//!         .on(on_reserved)
//!         .routes(|h| Router::new().route("/payments", get(list)).with_state(h))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), switchyard_sdk::Error> {
//!     // PAYMENTS_PORT=8103 PAYMENTS_DATABASE_URL=sqlite://payments.db SWITCHYARD_URL=...
//!     let args: Vec<String> = std::env::args().skip(1).collect();
//!     Host::new().service(payments()).main_with_args(&args).await
//! }
//! ```
//!
//! The service's own tables come from its migrations (`switchyard dev` applies them); the
//! SDK creates its `switchyard_*` tables itself. Handlers answer with [`HandlerError`]:
//! `?` on any error retries the event with backoff, [`HandlerError::reject`] parks it,
//! [`HandlerError::later`] retries it no earlier than asked.
//!
//! ## Where it runs
//!
//! - **its own process**, over HTTP: [`Host::main_with_args`] runs the chosen services
//!   against `SWITCHYARD_URL` (they pull their topics over the API's streams, or serve
//!   `POST /events` to a subscription with `--push`).
//! - **inside `switchyard dev`**, with no HTTP hop: a host binary is `switchyard` with the
//!   services linked in (`switchyard::main_with(host)`), and the services marked
//!   `in-process = true` in their `service.toml` run in the platform's process on the
//!   embedded journal. `switchyard dev` builds that binary (cargo) and hands over to it;
//!   see `examples/shop` and ARCHITECTURE.md.
//! - **anywhere else you hold a journal**: [`Platform::Journal`] with [`Host::start`].
//!
//! Without a platform at all, [`Client`] is a typed client of the HTTP API: publish, read,
//! streams that resume where they dropped, subscriptions; it retries what is safe to retry
//! and turns problem+json answers into [`Error::Problem`] and [`Error::Conflict`].

pub mod client;
mod consume;
mod context;
pub mod db;
pub mod entity;
mod error;
mod event;
mod host;
mod log;
pub mod outbox;
pub mod platform;
mod progress;
mod push;
mod service;
pub mod trace;

pub use client::{
    Client, ClientRetry, EventStream, Page, PartitionExtent, Placed, SubscriptionSpec,
};
pub use consume::RetryPolicy;
pub use context::{Context, Handle, Tx};
pub use db::Backend;
pub use entity::{ConflictPolicy, Entities, Entity, Loaded, Updated};
pub use error::{Error, HandlerError, Problem, Result};
pub use event::{CloudEvent, Event, Events, Outgoing, new_id};
pub use host::{Exit, Host, Running, ServiceState, env_prefix, shutdown_signal};
pub use log::Log;
pub use outbox::{Outbox, Publisher, Relay};
pub use platform::{Follow, Platform};
pub use progress::ConsumerPosition;
pub use service::{Consume, Launch, Service};
pub use switchyard_sdk_macros::{Event, Events};
pub use switchyard_types::Expected;
pub use trace::{Lineage, TraceParent};

/// The versions the SDK is built with, for services' own routes and queries.
pub use axum;
pub use sqlx;

/// Resolves once `stop` is true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

#[doc(hidden)]
pub mod __private {
    /// `a == b` in a const context (the `Events` derive checks its variants' topics).
    pub const fn same_str(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}
