//! Writers: where a lane sends its mapped requests. One file per writer (`http.rs`,
//! `amqp.rs`, `file.rs`), each with its settings (in [`crate::config::WriterConfig`]),
//! its implementation and its tests.
//!
//! # The contract every writer meets
//!
//! - **One attempt per call.** [`Writer::send`] makes exactly one attempt and never
//!   retries: retries, backoff and Retry-After are the lane's (so every attempt is in the
//!   message store).
//! - **Acknowledgement means durable at the vendor's side.** `Sent::Answer` is returned
//!   only once the vendor has the request: an HTTP response (whatever its status: the
//!   adapter's classification decides what it means), a publisher confirm from the broker
//!   (AMQP), or a file renamed into place after `fsync` (files). A lost connection, a
//!   timeout or a nack is `Sent::Failed` with a stable `class`.
//! - **Bounded.** A call returns within the adapter's `timeout` (the lane also cuts it
//!   off there), and reads at most [`MAX_BODY_LEN`] bytes of a response body.
//! - **Backpressure is the lane's.** A writer is called by at most `concurrency` attempts
//!   at once, after the lane's rate limit let them through; it holds no queue of its own.
//! - **Lazy connections.** A writer connects at its first send (and again after a
//!   failure), so an instance that sends nothing (a standby) holds no connection.
//! - **Telemetry.** The lane times each call (latency in the message store, per attempt)
//!   and counts outcomes per adapter; writers add nothing of their own.

pub mod amqp;
pub mod file;
pub mod http;

use crate::adapter::{Answer, WriterSpec};
use std::sync::Arc;
use std::time::Duration;
pub use switchyard_store::connect::MAX_BODY_LEN;
use switchyard_store::connect::OutboundRequest;

/// The stable classes of a failed send (no answer from the vendor).
pub mod class {
    pub const TIMEOUT: &str = "timeout";
    pub const CONNECT: &str = "connect";
    /// The connection broke mid-exchange (reset, closed).
    pub const RESET: &str = "reset";
    /// The vendor answered something that is not its protocol.
    pub const PROTOCOL: &str = "protocol";
    /// The broker refused the message (AMQP nack).
    pub const NACK: &str = "nack";
    /// A local write failed (file writer).
    pub const IO: &str = "io";
}

/// The outcome of one send.
#[derive(Clone, Debug)]
pub enum Sent {
    /// The vendor has it and answered (for HTTP, any status).
    Answer(Answer),
    /// No answer: `class` is one of [`class`].
    Failed {
        class: &'static str,
        message: String,
    },
}

/// A writer (see the module docs for the contract).
#[async_trait::async_trait]
pub trait Writer: Send + Sync + std::fmt::Debug {
    async fn send(&self, request: &OutboundRequest) -> Sent;
}

/// The writer an adapter's settings describe.
pub fn build(spec: &WriterSpec, timeout: Duration) -> Result<Arc<dyn Writer>, String> {
    Ok(match spec {
        WriterSpec::Http { authorization, .. } => {
            Arc::new(http::HttpWriter::new(timeout, authorization.clone())?)
        }
        WriterSpec::Amqp {
            url, persistent, ..
        } => Arc::new(amqp::AmqpWriter::new(url.clone(), *persistent)),
        WriterSpec::File { dir, .. } => Arc::new(file::FileWriter::new(dir.clone())),
    })
}
