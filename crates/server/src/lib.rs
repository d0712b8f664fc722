//! `switchyard serve`: the HTTP API v1 over a [`Journal`].
//!
//! - `PUT/GET/DELETE /v1/topics/{topic}`, `GET /v1/topics`: topics and their extent.
//! - `POST /v1/topics/{topic}/events`: CloudEvents in binary, structured or batch mode;
//!   answered once the topic's durability is met, with each event's partition and offset.
//! - `GET /v1/topics/{topic}/events?from=&limit=&partition=`: read and replay.
//! - `GET /v1/topics/{topic}/stream?from=`: Server-Sent Events or NDJSON, live, resumable.
//! - `/v1/adapters`, `/v1/messages`, `/v1/cases`: the integration gateway's lanes, message
//!   store and cases, and the reply callback of asynchronous vendors.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Every error is RFC 9457 problem+json with a stable `code` ([`problem`]). With tokens
//! configured every endpoint but the health checks needs a bearer token ([`auth`]).

mod api;
pub mod auth;
pub mod cloudevents;
mod connect;
mod metrics;
pub mod position;
pub mod problem;
mod schemas;
mod stream;
mod subs;

pub use api::{OPENAPI, Options, ROUTES, router};

use std::sync::Arc;
use switchyard_journal::Journal;

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets
/// requests in progress finish (streams end), and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    journal: Arc<dyn Journal>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let write_timeout = options.stalled_write_timeout;
    let app = router(journal, options, stop_rx);
    serve_router(listener, app, write_timeout, async move {
        shutdown.await;
        // Live streams end so the graceful shutdown does not wait on them forever.
        let _ = stop_tx.send(true);
    })
    .await
}

/// Serves `app` the way [`serve`] does (connections whose writes stall for
/// `write_timeout` are dropped) until `shutdown` resolves, then drains requests in
/// progress. For hosts that put more routes around the API (`switchyard dev`).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    write_timeout: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router_until(listener, app, write_timeout, Box::pin(shutdown)).await
}

/// [`serve_router`] with the shutdown signal boxed: the connection loop is instantiated
/// (and optimized) in this crate, whatever crate the signal comes from (the command line's
/// is built for size).
async fn serve_router_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    write_timeout: std::time::Duration,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> std::io::Result<()> {
    let listener = StallGuardedListener {
        inner: listener,
        write_timeout,
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A TCP listener whose connections fail a write that has made no progress for
/// `write_timeout`: a client that stops reading (a stream it never consumes, a response it
/// never takes) is disconnected instead of holding its connection and buffers forever.
/// Idle connections are not affected: the clock only runs while a write is blocked.
struct StallGuardedListener {
    inner: tokio::net::TcpListener,
    write_timeout: std::time::Duration,
}

impl axum::serve::Listener for StallGuardedListener {
    type Io = std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let _ = stream.set_nodelay(true);
        let mut guarded = tokio_io_timeout::TimeoutStream::new(stream);
        guarded.set_write_timeout(Some(self.write_timeout));
        (Box::pin(guarded), addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
