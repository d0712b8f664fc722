//! Leases (see [`crate::lease`]): one owner at a time, expiry, renewal keeps the epoch, a
//! steal fences the old owner, release, bad input. Each case uses lease names under its
//! prefix; the rows stay (leases keep their epoch), so the suite can run again on the same
//! database under new prefixes.

use super::{assert_invalid, ok};
use crate::Store;
use crate::lease::{Lease, MAX_LEASE_TTL_MS};
use std::collections::BTreeMap;
use std::sync::Arc;

const TTL: i64 = 10_000;
const T0: i64 = 1_000_000;

fn held(lease: Option<Lease>, what: &str) -> Lease {
    match lease {
        Some(l) => l,
        None => panic!("{what}: the lease was refused"),
    }
}

/// Acquire, renew (same epoch, later expiry), refuse a second owner while held, hand over
/// after expiry (epoch + 1), and the listing by prefix.
pub async fn leases_have_one_owner_and_expire(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}/sub/s/orders.v1/0");
    let a = held(
        ok(store.acquire_lease(&name, "a", T0, TTL).await, "acquire"),
        "first acquire",
    );
    assert_eq!(
        (a.owner.as_str(), a.epoch, a.acquired_at_ms, a.expires_at_ms),
        ("a", 1, T0, T0 + TTL)
    );
    assert!(a.is_held_at(T0) && !a.is_held_at(T0 + TTL));
    // Another owner is refused while it is held, and that changes nothing.
    assert_eq!(
        ok(store.acquire_lease(&name, "b", T0 + 1, TTL).await, "b"),
        None
    );
    // Renewing keeps the epoch and moves the expiry.
    let renewed = held(
        ok(
            store.acquire_lease(&name, "a", T0 + 5_000, TTL).await,
            "renew",
        ),
        "renew",
    );
    assert_eq!((renewed.epoch, renewed.acquired_at_ms), (1, T0));
    assert_eq!(renewed.expires_at_ms, T0 + 5_000 + TTL);
    assert_eq!(
        ok(
            store
                .acquire_lease(&name, "b", T0 + 5_000 + TTL - 1, TTL)
                .await,
            "b before expiry"
        ),
        None
    );
    // Once expired, another owner takes it with a new epoch; the old owner is refused.
    let later = T0 + 5_000 + TTL;
    let b = held(
        ok(
            store.acquire_lease(&name, "b", later, TTL).await,
            "b after expiry",
        ),
        "b after expiry",
    );
    assert_eq!(
        (b.owner.as_str(), b.epoch, b.acquired_at_ms),
        ("b", 2, later)
    );
    assert_eq!(
        ok(
            store.acquire_lease(&name, "a", later + 1, TTL).await,
            "a again"
        ),
        None
    );
    // The listing: by prefix, by name, held or not.
    let other = format!("{prefix}/lane/bakery");
    held(
        ok(store.acquire_lease(&other, "a", later, 1).await, "other"),
        "other",
    );
    let listed = ok(store.leases(&format!("{prefix}/")).await, "leases");
    assert_eq!(
        listed.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        [other.as_str(), name.as_str()]
    );
    assert_eq!(listed[1], b);
    assert!(!listed[0].is_held_at(later + 1), "a 1 ms grant has expired");
    let subs = ok(store.leases(&format!("{prefix}/sub/")).await, "sub leases");
    assert_eq!(subs, std::slice::from_ref(&b));
    assert!(
        ok(store.leases(&format!("{prefix}/none/")).await, "none").is_empty(),
        "a prefix nothing starts with lists nothing"
    );
    let all = ok(store.leases("").await, "all");
    assert!(all.contains(&b), "the empty prefix lists every lease");
}

/// A steal takes the lease whatever its state with the epoch plus one; the old owner's
/// renewal then fails, and so does its release.
pub async fn steal_fences_the_old_owner(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}/lane/acme");
    let a = held(
        ok(store.acquire_lease(&name, "blue", T0, TTL).await, "acquire"),
        "acquire",
    );
    let stolen = ok(
        store.steal_lease(&name, "green", T0 + 10, TTL).await,
        "steal",
    );
    assert_eq!(
        (stolen.owner.as_str(), stolen.epoch, stolen.expires_at_ms),
        ("green", a.epoch + 1, T0 + 10 + TTL)
    );
    assert_eq!(
        ok(
            store.acquire_lease(&name, "blue", T0 + 20, TTL).await,
            "old renew"
        ),
        None,
        "the old owner's renewal fails after a steal"
    );
    assert!(
        !ok(store.release_lease(&name, "blue").await, "old release"),
        "the old owner cannot release a stolen lease"
    );
    // The new owner renews with its epoch.
    let renewed = held(
        ok(
            store.acquire_lease(&name, "green", T0 + 30, TTL).await,
            "renew",
        ),
        "renew",
    );
    assert_eq!(renewed.epoch, stolen.epoch);
    // A steal of a lease never taken starts at epoch 1; stealing again (even one's own)
    // bumps it.
    let fresh = format!("{prefix}/lane/fresh");
    let first = ok(store.steal_lease(&fresh, "green", T0, TTL).await, "fresh");
    assert_eq!(first.epoch, 1);
    let again = ok(store.steal_lease(&fresh, "green", T0, TTL).await, "again");
    assert_eq!(again.epoch, 2);
}

/// Release by the owner frees the lease at once (the epoch stays and grows with the next
/// owner); a release by anyone else, or of an unknown lease, does nothing.
pub async fn release_frees_only_for_the_owner(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}/sub/s/orders.v1/1");
    held(
        ok(store.acquire_lease(&name, "a", T0, TTL).await, "acquire"),
        "acquire",
    );
    assert!(!ok(store.release_lease(&name, "b").await, "release by b"));
    assert_eq!(
        ok(store.acquire_lease(&name, "b", T0 + 1, TTL).await, "b"),
        None,
        "a release by a non-owner changes nothing"
    );
    assert!(ok(store.release_lease(&name, "a").await, "release by a"));
    assert!(
        !ok(store.release_lease(&name, "a").await, "second release"),
        "a second release does nothing"
    );
    let listed = ok(store.leases(&name).await, "listed");
    assert!(listed.len() == 1 && listed[0].is_released() && !listed[0].is_held_at(T0 + 1));
    let b = held(
        ok(
            store.acquire_lease(&name, "b", T0 + 2, TTL).await,
            "b after release",
        ),
        "b after release",
    );
    assert_eq!((b.owner.as_str(), b.epoch), ("b", 2));
    assert!(!ok(
        store.release_lease(&format!("{prefix}/never"), "a").await,
        "unknown"
    ));
}

/// Bad names, owners, ttls and prefixes are rejected naming the field, and change nothing.
pub async fn bad_lease_input_changes_nothing(store: &dyn Store, prefix: &str) {
    let name = format!("{prefix}/sub/s/t/0");
    let long = "x".repeat(513);
    for (n, o, ttl, field, what) in [
        ("", "a", TTL, "name", "empty name"),
        (name.as_str(), "", TTL, "owner", "empty owner"),
        (name.as_str(), "a", 0, "ttl-ms", "zero ttl"),
        (name.as_str(), "a", -5, "ttl-ms", "negative ttl"),
        (
            name.as_str(),
            "a",
            MAX_LEASE_TTL_MS + 1,
            "ttl-ms",
            "ttl too long",
        ),
        ("has space", "a", TTL, "name", "space in name"),
        ("tab\tname", "a", TTL, "name", "control character"),
        (long.as_str(), "a", TTL, "name", "name too long"),
        (name.as_str(), "own\ner", TTL, "owner", "newline in owner"),
    ] {
        assert_invalid(store.acquire_lease(n, o, T0, ttl).await, field, what);
        assert_invalid(store.steal_lease(n, o, T0, ttl).await, field, what);
    }
    assert_invalid(
        store.acquire_lease(&name, "a", i64::MAX - 1, TTL).await,
        "now-ms",
        "overflowing expiry",
    );
    assert_invalid(
        store.release_lease("", "a").await,
        "name",
        "release empty name",
    );
    assert_invalid(
        store.release_lease(&name, "").await,
        "owner",
        "release empty owner",
    );
    assert_invalid(
        store.leases("bad prefix").await,
        "prefix",
        "prefix with a space",
    );
    assert!(
        ok(store.leases(&format!("{prefix}/")).await, "nothing stored").is_empty(),
        "bad input stored nothing"
    );
}

/// Many tasks of several owners race for a few leases over many rounds of the clock; at
/// every instant at most one owner holds each lease, and each epoch has one owner.
pub async fn racing_owners_never_both_hold_a_lease(store: Arc<dyn Store>, prefix: &str) {
    const OWNERS: usize = 4;
    const TASKS_PER_OWNER: usize = 3;
    const ROUNDS: i64 = 12;
    const NAMES: usize = 3;
    // A round is one ttl: every round, the lease taken in the previous one has expired.
    const ROUND_TTL: i64 = 1_000;
    let names: Vec<String> = (0..NAMES)
        .map(|i| format!("{prefix}/sub/s/t/{i}"))
        .collect();
    for round in 0..ROUNDS {
        let now = T0 + round * ROUND_TTL;
        let mut handles = Vec::new();
        for owner in 0..OWNERS {
            for _ in 0..TASKS_PER_OWNER {
                let store = store.clone();
                let names = names.clone();
                handles.push(tokio::spawn(async move {
                    let owner = format!("owner-{owner}");
                    let mut got = Vec::new();
                    for name in &names {
                        if let Some(l) = ok(
                            store.acquire_lease(name, &owner, now, ROUND_TTL).await,
                            "racing acquire",
                        ) {
                            got.push(l);
                        }
                    }
                    got
                }));
            }
        }
        let mut winners: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for h in handles {
            let got = match h.await {
                Ok(g) => g,
                Err(e) => panic!("a racing task failed: {e}"),
            };
            for l in got {
                assert!(l.is_held_at(now), "a grant handed out already expired");
                if let Some((owner, epoch)) = winners.get(&l.name) {
                    assert_eq!(
                        (owner, *epoch),
                        (&l.owner, l.epoch),
                        "round {round}: `{}` granted to two owners (or two epochs) at once",
                        l.name
                    );
                }
                winners.insert(l.name.clone(), (l.owner.clone(), l.epoch));
            }
        }
        assert_eq!(
            winners.len(),
            NAMES,
            "round {round}: some lease was taken by no one"
        );
        for name in &names {
            let stored = ok(store.leases(name).await, "stored");
            assert_eq!(stored.len(), 1);
            assert_eq!(
                (&stored[0].owner, stored[0].epoch),
                (&winners[name].0, winners[name].1),
                "round {round}: the store says another owner holds `{name}`"
            );
        }
    }
    // Epochs only grow: each is at most one more per round.
    for name in &names {
        let stored = ok(store.leases(name).await, "final");
        assert!(stored[0].epoch >= 1 && stored[0].epoch <= ROUNDS as u64);
    }
}
