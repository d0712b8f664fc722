//! `switchyard serve`: the HTTP API v1 over a [`Journal`].
//!
//! - `PUT/GET/DELETE /v1/topics/{topic}`, `GET /v1/topics`: topics and their extent.
//! - `POST /v1/topics/{topic}/events`: CloudEvents in binary, structured or batch mode;
//!   answered once the topic's durability is met, with each event's partition and offset.
//! - `GET /v1/topics/{topic}/events?from=&limit=&partition=`: read and replay.
//! - `GET /v1/topics/{topic}/stream?from=`: Server-Sent Events or NDJSON, live, resumable.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`.
//!
//! Every error is RFC 9457 problem+json with a stable `code` ([`problem`]). With tokens
//! configured every endpoint but the health checks needs a bearer token ([`auth`]).

mod api;
pub mod auth;
pub mod cloudevents;
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
    let app = router(journal, options, stop_rx);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Live streams end so the graceful shutdown does not wait on them forever.
            let _ = stop_tx.send(true);
        })
        .await
}
