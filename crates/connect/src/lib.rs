//! The integration gateway: declarative adapters that carry events from the journal to
//! third-party vendors, one durable lane per adapter, replies and correlation, the
//! message store and cases.
//!
//! ```text
//! journal ──> lane (cursor) ── route (jq) ── mapping (jq) ── encoding ──> message store
//!                                                                             │
//!            vendor <── writer (HTTP | AMQP | file) <── rate limit <── sender ┘
//!              │                                                    (per key, in order)
//!              └── answer ── classification ──> delivered | retry | business event | case
//!              └── reply (callback, queue) ── correlation ──> event
//! ```
//!
//! [`config`] reads adapters (`[adapters.<name>]` in switchyard.toml); [`adapter`] checks
//! and compiles them; [`lane`] is the engine; [`writer`] holds the writers and the contract
//! they meet; [`reader`] the reply readers; [`Connect`] is the handle the server uses.
//! Every message is delivered, rejected (as an event), in a case, or still pending; an
//! event no route takes is recorded in the `unrouted` lane.

pub mod adapter;
pub mod config;
pub mod encode;
mod error;
pub mod jq;
pub mod lane;
pub mod reader;
mod service;
pub mod template;
mod unrouted;
mod vendor;
pub mod writer;

#[cfg(feature = "test-util")]
pub mod testing;

pub use adapter::Answer;
pub use error::{ConfigError, ConfigErrors, Error, Result};
pub use service::{
    Connect, ConnectOptions, CountersView, LaneView, ReloadReport, ReplayMode, load,
};
