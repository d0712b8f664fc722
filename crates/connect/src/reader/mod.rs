//! Readers of vendors' replies. The HTTP callback reader is an endpoint of the server
//! (`POST /v1/adapters/{name}/replies`, which calls [`crate::Connect::receive_reply`]);
//! the AMQP reader (`amqp.rs`) consumes the adapter's `reply-queue`. Both hand each reply
//! to the lane, which matches it by correlation id and records it, matched or not; a
//! reply is acknowledged to the broker only once it is recorded.

pub mod amqp;
