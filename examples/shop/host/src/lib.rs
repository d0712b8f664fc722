//! The shop's Rust services, hosted in one process: `payments` and `notifications`.
//! They use the platform only through switchyard-sdk: typed events, handlers with an inbox,
//! an outbox for what they publish. Under `switchyard dev` they run inside the platform's
//! process, straight on the embedded journal.

pub mod events;
pub mod notifications;
pub mod payments;

/// Both services, in one host.
pub fn host() -> switchyard_sdk::Host {
    switchyard_sdk::Host::new()
        .service(payments::service())
        .service(notifications::service())
}

/// `12345` → `123.45`.
pub fn cents(n: i64) -> String {
    format!("{}.{:02}", n / 100, n % 100)
}
