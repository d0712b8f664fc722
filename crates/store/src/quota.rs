//! Quota counters: how much of a quota (the API gateway's daily and monthly request quotas)
//! has been used in one window of time.
//!
//! A counter is named by a `key` (the gateway's `gateway/<route>/<day|month>/<consumer>`)
//! and the start of its window (Unix milliseconds, chosen by the caller like every time in
//! the [`Store`](crate::Store) trait); it remembers when the window ends (for pruning) and
//! how many units are `used`. Units are *reserved*, not counted one by one: a caller takes a
//! block ([`Store::reserve_quota`](crate::Store::reserve_quota)), spends it in memory, and
//! gives back what it did not spend when it stops
//! ([`Store::release_quota`](crate::Store::release_quota)). A reservation never takes `used`
//! past the limit, so however many instances share the store, and whether or not they stop
//! cleanly, no more than the limit is ever handed out; a crash forgets at most the unspent
//! part of its blocks (fewer requests than the quota, never more).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The longest counter key, in bytes.
pub const MAX_QUOTA_KEY_LEN: usize = 1024;
/// The largest limit or reservation (what a signed 64-bit column holds).
pub const MAX_QUOTA_UNITS: u64 = i64::MAX as u64;

/// One counter as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct QuotaUsage {
    pub key: String,
    /// When the window starts (inclusive).
    pub window_start_ms: i64,
    /// When it ends (exclusive).
    pub window_end_ms: i64,
    /// Units reserved in the window (spent, or held by a caller that has not given back
    /// what it did not spend).
    pub used: u64,
}

/// What a reservation got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaGrant {
    /// Units granted: `min(want, limit - used)`, 0 when the quota is spent.
    pub granted: u64,
    /// The counter's `used` after the grant.
    pub used: u64,
}

/// Checks a counter key (`key`): 1 to [`MAX_QUOTA_KEY_LEN`] bytes, no control characters.
pub fn validate_quota_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_QUOTA_KEY_LEN {
        return Err(Error::invalid(
            "key",
            format!("must be 1 to {MAX_QUOTA_KEY_LEN} bytes (got {})", key.len()),
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(
            "key",
            format!("must not hold control characters (found {c:?})"),
        ));
    }
    Ok(())
}

/// Checks a prefix for [`Store::quotas`](crate::Store::quotas): empty (every counter) or a
/// valid start of a key.
pub fn validate_quota_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_quota_key(prefix).map_err(|e| match e {
        Error::InvalidInput { reason, .. } => Error::invalid("prefix", reason),
        other => other,
    })
}

/// Checks the arguments of a reservation.
pub fn validate_reservation(
    key: &str,
    window_start_ms: i64,
    window_end_ms: i64,
    limit: u64,
    want: u64,
) -> Result<()> {
    validate_quota_key(key)?;
    if window_end_ms <= window_start_ms {
        return Err(Error::invalid(
            "window-end-ms",
            format!("must be after window-start-ms ({window_end_ms} <= {window_start_ms})"),
        ));
    }
    for (field, v) in [("limit", limit), ("want", want)] {
        if v > MAX_QUOTA_UNITS {
            return Err(Error::invalid(
                field,
                format!("must be at most {MAX_QUOTA_UNITS} (got {v})"),
            ));
        }
    }
    Ok(())
}

/// Checks the arguments of a release.
pub fn validate_release(key: &str, n: u64) -> Result<()> {
    validate_quota_key(key)?;
    if n > MAX_QUOTA_UNITS {
        return Err(Error::invalid(
            "n",
            format!("must be at most {MAX_QUOTA_UNITS} (got {n})"),
        ));
    }
    Ok(())
}

/// The grant of `want` units under `limit` when `used` are used.
pub fn grant(used: u64, limit: u64, want: u64) -> QuotaGrant {
    let granted = want.min(limit.saturating_sub(used));
    QuotaGrant {
        granted,
        used: used + granted,
    }
}
