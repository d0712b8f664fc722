//! Leases: one owner at a time for a named piece of work (a subscription partition
//! `sub/<subscription>/<topic>/<partition>`, an adapter lane `lane/<adapter>`), when several
//! Switchyard instances share one store.
//!
//! A lease is held by `owner` until `expires-at-ms` (Unix milliseconds, chosen by the caller
//! like every time in the [`Store`](crate::Store) trait); its holder renews it before then.
//! The `epoch` counts owners: it grows by one each time the lease passes to another owner
//! (taken after it expired or was released, or stolen), and stays the same while one owner
//! renews it. A holder that finds the epoch changed, or cannot renew, has lost the lease
//! and must stop the work: that is the fence.
//!
//! Released leases keep their row (with the epoch), so an epoch never goes back.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The longest lease name, in bytes.
pub const MAX_LEASE_NAME_LEN: usize = 512;
/// The longest owner id, in bytes.
pub const MAX_LEASE_OWNER_LEN: usize = 200;
/// The longest time to live of one grant (one day).
pub const MAX_LEASE_TTL_MS: i64 = 86_400_000;
/// `expires-at-ms` of a released lease.
pub const RELEASED_AT_MS: i64 = i64::MIN;

/// One lease as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lease {
    /// What is leased (`sub/orders-mailer/orders.v1/3`, `lane/bakery`).
    pub name: String,
    /// The instance that holds (or last held) it.
    pub owner: String,
    /// How many times the lease has changed owner, starting at 1.
    pub epoch: u64,
    /// When the current owner took it.
    pub acquired_at_ms: i64,
    /// Until when the owner holds it, unless renewed; [`RELEASED_AT_MS`] once released.
    pub expires_at_ms: i64,
}

impl Lease {
    /// Whether its owner holds it at `now_ms` (not expired, not released).
    pub fn is_held_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms > now_ms
    }

    /// Whether it was released by its owner.
    pub fn is_released(&self) -> bool {
        self.expires_at_ms == RELEASED_AT_MS
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() || value.len() > max {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {max} bytes (got {})", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Error::invalid(
            field,
            format!("must be printable ASCII without spaces (found {c:?})"),
        ));
    }
    Ok(())
}

/// Checks a lease name (`name`).
pub fn validate_lease_name(name: &str) -> Result<()> {
    check_text("name", name, MAX_LEASE_NAME_LEN)
}

/// Checks an owner id (`owner`).
pub fn validate_lease_owner(owner: &str) -> Result<()> {
    check_text("owner", owner, MAX_LEASE_OWNER_LEN)
}

/// Checks the arguments of an acquire or steal, and returns when the grant expires.
pub fn validate_grant(name: &str, owner: &str, now_ms: i64, ttl_ms: i64) -> Result<i64> {
    validate_lease_name(name)?;
    validate_lease_owner(owner)?;
    if ttl_ms <= 0 || ttl_ms > MAX_LEASE_TTL_MS {
        return Err(Error::invalid(
            "ttl-ms",
            format!("must be 1 to {MAX_LEASE_TTL_MS} (got {ttl_ms})"),
        ));
    }
    if now_ms == RELEASED_AT_MS {
        return Err(Error::invalid("now-ms", "is out of range"));
    }
    now_ms
        .checked_add(ttl_ms)
        .ok_or_else(|| Error::invalid("now-ms", format!("{now_ms} + ttl overflows")))
}

/// Checks a prefix for [`Store::leases`](crate::Store::leases): empty (every lease) or a
/// valid start of a name.
pub fn validate_lease_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_text("prefix", prefix, MAX_LEASE_NAME_LEN)
}
