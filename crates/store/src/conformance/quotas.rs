//! Quota counters (see [`crate::quota`]): reservations never take a counter past its limit
//! (alone or racing), releases give units back and never go below zero, counters are
//! separate per key and window, listed by prefix and pruned by window end; bad input
//! changes nothing. Each case uses keys under its prefix.

use super::{assert_invalid, ok};
use crate::Store;
use crate::quota::{MAX_QUOTA_KEY_LEN, QuotaGrant, QuotaUsage};
use std::sync::Arc;

const DAY: i64 = 86_400_000;
const T0: i64 = 1_700_000_000_000;

fn granted(granted: u64, used: u64) -> QuotaGrant {
    QuotaGrant { granted, used }
}

/// Grants up to the limit and no more, per key and window; a release gives units back
/// (never below zero); a lowered limit grants nothing; the listing by prefix.
pub async fn reservations_stop_at_the_limit(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/route/day/ann");
    let r = |want| store.reserve_quota(&key, T0, T0 + DAY, 10, want);
    assert_eq!(ok(r(4).await, "first"), granted(4, 4));
    assert_eq!(ok(r(4).await, "second"), granted(4, 8));
    assert_eq!(ok(r(4).await, "third: what is left"), granted(2, 10));
    assert_eq!(ok(r(1).await, "spent"), granted(0, 10));
    // Giving back 3 unspent units lets 3 more be reserved.
    assert_eq!(ok(store.release_quota(&key, T0, 3).await, "release"), 7);
    assert_eq!(ok(r(5).await, "after release"), granted(3, 10));
    // The limit lowered below what is used: nothing, and the counter stays.
    assert_eq!(
        ok(
            store.reserve_quota(&key, T0, T0 + DAY, 6, 1).await,
            "lowered"
        ),
        granted(0, 10)
    );
    // A release never takes it below zero; one of an unknown counter changes nothing.
    assert_eq!(
        ok(store.release_quota(&key, T0, 50).await, "over-release"),
        0
    );
    assert_eq!(
        ok(
            store
                .release_quota(&format!("{prefix}/nothing"), T0, 1)
                .await,
            "unknown"
        ),
        0
    );
    // Wanting 0 creates the counter and grants nothing.
    let empty = format!("{prefix}/route/day/bob");
    assert_eq!(
        ok(
            store.reserve_quota(&empty, T0, T0 + DAY, 10, 0).await,
            "zero"
        ),
        granted(0, 0)
    );
    // Another window and another key have their own counters.
    assert_eq!(
        ok(
            store
                .reserve_quota(&key, T0 + DAY, T0 + 2 * DAY, 10, 10)
                .await,
            "next day"
        ),
        granted(10, 10)
    );
    let other = format!("{prefix}/route/day/cid");
    assert_eq!(
        ok(
            store.reserve_quota(&other, T0, T0 + DAY, 10, 7).await,
            "other"
        ),
        granted(7, 7)
    );
    let listed = ok(store.quotas(&format!("{prefix}/route/")).await, "list");
    let expected = [
        (key.clone(), T0, 0),
        (key.clone(), T0 + DAY, 10),
        (empty, T0, 0),
        (other, T0, 7),
    ];
    assert_eq!(
        listed,
        expected
            .iter()
            .map(|(k, start, used)| QuotaUsage {
                key: k.clone(),
                window_start_ms: *start,
                window_end_ms: start + DAY,
                used: *used,
            })
            .collect::<Vec<_>>()
    );
    assert!(ok(store.quotas(&format!("{prefix}/none")).await, "none").is_empty());
    assert!(
        ok(store.quotas("").await, "all")
            .iter()
            .any(|q| q.key == key),
        "the empty prefix lists everything"
    );
}

/// Pruning deletes the counters whose window ended, and only those.
pub async fn ended_windows_are_pruned(store: &dyn Store, prefix: &str) {
    // Windows far in the past, so that pruning them touches nothing another case made.
    let old = format!("{prefix}/old");
    let current = format!("{prefix}/current");
    ok(store.reserve_quota(&old, 1_000, 2_000, 5, 1).await, "old");
    ok(store.reserve_quota(&old, 2_000, 3_000, 5, 1).await, "old 2");
    ok(
        store.reserve_quota(&current, 2_000, 5_000, 5, 1).await,
        "current",
    );
    let pruned = ok(store.prune_quotas(3_000).await, "prune");
    assert!(pruned >= 2, "two ended windows, {pruned} pruned");
    let left = ok(store.quotas(prefix).await, "left");
    assert_eq!(
        left.iter()
            .map(|q| (q.key.as_str(), q.window_start_ms))
            .collect::<Vec<_>>(),
        [(current.as_str(), 2_000)]
    );
    assert_eq!(ok(store.prune_quotas(4_999).await, "not yet"), 0);
    ok(store.prune_quotas(5_000).await, "the rest");
    assert!(ok(store.quotas(prefix).await, "gone").is_empty());
}

/// Bad keys, windows and amounts are refused naming the field, and change nothing.
pub async fn bad_quota_input_changes_nothing(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/k");
    assert_invalid(
        store.reserve_quota("", T0, T0 + DAY, 1, 1).await,
        "key",
        "empty key",
    );
    assert_invalid(
        store
            .reserve_quota(&"k".repeat(MAX_QUOTA_KEY_LEN + 1), T0, T0 + DAY, 1, 1)
            .await,
        "key",
        "long key",
    );
    assert_invalid(
        store
            .reserve_quota(&format!("{key}\u{0}"), T0, T0 + DAY, 1, 1)
            .await,
        "key",
        "NUL in key",
    );
    assert_invalid(
        store.reserve_quota(&key, T0, T0, 1, 1).await,
        "window-end-ms",
        "empty window",
    );
    assert_invalid(
        store.reserve_quota(&key, T0, T0 + DAY, u64::MAX, 1).await,
        "limit",
        "huge limit",
    );
    assert_invalid(
        store.reserve_quota(&key, T0, T0 + DAY, 1, u64::MAX).await,
        "want",
        "huge want",
    );
    assert_invalid(store.release_quota(&key, T0, u64::MAX).await, "n", "huge n");
    assert_invalid(store.quotas("a\nb").await, "prefix", "bad prefix");
    assert!(
        ok(store.quotas(prefix).await, "after").is_empty(),
        "refused input wrote something"
    );
    // A key of any printable text (a JWT's `sub` may hold spaces and more).
    let text = format!("{prefix}/user:Ann Müller \"x\"");
    assert_eq!(
        ok(store.reserve_quota(&text, T0, T0 + DAY, 2, 1).await, "text"),
        granted(1, 1)
    );
    assert_eq!(ok(store.quotas(&text).await, "text listed")[0].key, text);
}

/// Many tasks reserving from one counter at once are granted exactly the limit in all.
pub async fn racing_reservations_never_pass_the_limit(store: Arc<dyn Store>, prefix: &str) {
    const LIMIT: u64 = 25;
    const TASKS: usize = 16;
    const EACH: usize = 5;
    let key = format!("{prefix}/race");
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let mut got = 0;
            for _ in 0..EACH {
                got += ok(
                    store.reserve_quota(&key, T0, T0 + DAY, LIMIT, 1).await,
                    "racing reserve",
                )
                .granted;
            }
            got
        }));
    }
    let mut total = 0;
    for h in handles {
        total += match h.await {
            Ok(n) => n,
            Err(e) => panic!("a racing task failed: {e}"),
        };
    }
    assert_eq!(total, LIMIT, "{TASKS}x{EACH} reservations of one unit");
    assert_eq!(ok(store.quotas(&key).await, "stored")[0].used, LIMIT);
}
