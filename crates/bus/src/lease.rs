//! Who dispatches which partition when several instances share one store.
//!
//! Each subscription partition is the lease `sub/<subscription>/<topic>/<partition>`
//! ([`Store::acquire_lease`]); an instance dispatches only the partitions it holds. Each
//! instance also holds `instance/<id>` while it runs, so that the others can count the
//! instances and take a fair share each: `ceil(partitions / instances)` per subscription.
//!
//! The keeper runs a round every [`tick`] (a second at most): it renews the leases held
//! whose last renewal is a third of the ttl old, releases what is beyond the fair share
//! (after the dispatcher has let go of it), takes free ones (never taken, expired or
//! released) up to the share, and restarts a subscription's dispatcher when the set of
//! partitions it holds changes. A renewal that fails (another owner took the lease: its
//! epoch moved on) stops the partition at once; a renewal the store cannot answer keeps
//! the partition until the lease's own expiry, then stops it too.
//!
//! Fencing: a dispatcher that lost a lease stops; until it has, the cursor it commits only
//! moves forward (`Store::advance_cursor`) and behind the cursor everything was
//! acknowledged or is a stored row, so the new owner's progress is never undone and no
//! event is lost (some may be delivered twice). When an instance dies, its leases move
//! after at most the ttl plus one tick.

use crate::{Bus, Place, now_ms};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use switchyard_journal::TopicName;
use switchyard_store::{Lease, Subscription};

/// One partition lease this instance holds.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub epoch: u64,
    pub expires_at_ms: i64,
    pub renewed_at_ms: i64,
}

/// The lease name of a subscription partition.
pub fn partition_lease(subscription: &str, topic: &str, partition: u32) -> String {
    format!("sub/{subscription}/{topic}/{partition}")
}

/// The lease name of an instance's presence.
pub fn instance_lease(instance: &str) -> String {
    format!("instance/{instance}")
}

/// How often the keeper runs a round.
pub(crate) fn tick(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(1))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A stable preference order per instance, so that instances starting at once do not all
/// race for the same partitions first.
fn preference(instance: &str, places: &[Place]) -> Vec<Place> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let n = places.len().max(1);
    let start = (h % n as u64) as usize;
    places
        .iter()
        .cycle()
        .skip(start)
        .take(places.len())
        .cloned()
        .collect()
}

/// Checks the lease settings of [`BusOptions`](crate::BusOptions).
pub(crate) fn validate(options: &crate::BusOptions) -> Result<(), crate::StoreError> {
    let bad = |field: &str, reason: String| crate::StoreError::InvalidInput {
        field: field.to_owned(),
        reason,
    };
    let ttl = options.lease_ttl;
    if ttl < Duration::from_millis(300) || ttl > Duration::from_secs(3600) {
        return Err(bad(
            "lease-ttl",
            format!("must be 300 ms to 1 h (got {} ms)", ttl.as_millis()),
        ));
    }
    switchyard_store::lease::validate_lease_owner(&options.instance).map_err(|e| match e {
        crate::StoreError::InvalidInput { reason, .. } => bad("instance", reason),
        other => other,
    })
}

impl Bus {
    fn ttl_ms(&self) -> i64 {
        ms(self.options.lease_ttl).max(1)
    }

    /// Every partition of the subscription's topics that exists now.
    async fn places(&self, sub: &Subscription, counts: &mut HashMap<String, u32>) -> Vec<Place> {
        let mut out = Vec::new();
        for topic in &sub.spec.topics {
            let count = match counts.get(topic) {
                Some(c) => *c,
                None => {
                    let Ok(name) = TopicName::new(topic) else {
                        continue;
                    };
                    let c = match self.journal.describe_topic(&name).await {
                        Ok(info) => info.partitions.len() as u32,
                        Err(_) => 0, // not there yet: the next round looks again
                    };
                    counts.insert(topic.clone(), c);
                    c
                }
            };
            out.extend((0..count).map(|p| (topic.clone(), p)));
        }
        out
    }

    /// The partitions of `name` this instance holds.
    pub(crate) fn owned_places(&self, name: &str) -> BTreeSet<Place> {
        crate::lock(&self.owned)
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Renews this instance's presence and counts the live instances (itself included).
    async fn instances(&self, now: i64) -> usize {
        let id = &self.options.instance;
        let presence = instance_lease(id);
        if let Err(e) = self
            .store
            .acquire_lease(&presence, id, now, self.ttl_ms())
            .await
        {
            tracing::warn!("renewing the instance lease: {e}");
        }
        match self.store.leases("instance/").await {
            Ok(all) => all
                .iter()
                .filter(|l| l.is_held_at(now) && l.owner != *id)
                .count()
                .saturating_add(1),
            Err(_) => 1,
        }
    }

    /// One round for every subscription (or only `only`): renew, release the excess, take
    /// free partitions up to the fair share, restart the dispatchers whose set changed.
    pub(crate) async fn lease_round(&self, only: Option<&str>) {
        let _round = self.round.lock().await;
        let now = now_ms();
        let ttl = self.ttl_ms();
        let renew_every = ttl / 3;
        let me = self.options.instance.clone();
        let instances = self.instances(now).await;
        let subs = match self.store.list_subscriptions().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("listing subscriptions for their leases: {e}");
                self.expire_unrenewed(now).await;
                return;
            }
        };
        let taken: HashMap<String, Lease> = match self.store.leases("sub/").await {
            Ok(all) => all.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                tracing::warn!("listing partition leases: {e}");
                self.expire_unrenewed(now).await;
                return;
            }
        };
        let mut counts = HashMap::new();
        let names: BTreeSet<String> = subs.iter().map(|s| s.spec.name.clone()).collect();
        if only.is_none() {
            // Deleted subscriptions: let go of their leases.
            let gone: Vec<String> = crate::lock(&self.owned)
                .keys()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                self.stop_dispatcher(&name).await;
                let held = crate::lock(&self.owned).remove(&name).unwrap_or_default();
                for (topic, p) in held.keys() {
                    let _ = self
                        .store
                        .release_lease(&partition_lease(&name, topic, *p), &me)
                        .await;
                }
            }
        }
        for sub in subs {
            let name = sub.spec.name.clone();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let places = self.places(&sub, &mut counts).await;
            let target = places.len().div_ceil(instances);
            let before: BTreeMap<Place, Held> = crate::lock(&self.owned)
                .get(&name)
                .cloned()
                .unwrap_or_default();
            let mut mine = before.clone();
            // Renew what is due; a refused renewal is a lost lease.
            for (place, held) in before.iter() {
                if !places.contains(place) {
                    mine.remove(place);
                    continue;
                }
                if now - held.renewed_at_ms < renew_every {
                    continue;
                }
                let lease = partition_lease(&name, &place.0, place.1);
                match self.store.acquire_lease(&lease, &me, now, ttl).await {
                    Ok(Some(l)) if l.epoch == held.epoch => {
                        mine.insert(
                            place.clone(),
                            Held {
                                epoch: l.epoch,
                                expires_at_ms: l.expires_at_ms,
                                renewed_at_ms: now,
                            },
                        );
                    }
                    Ok(Some(l)) => {
                        // Someone held it in between: what this instance did is stale.
                        // Let the dispatcher go; the lease is released below.
                        tracing::warn!(lease, epoch = l.epoch, "lease changed hands meanwhile");
                        mine.remove(place);
                    }
                    Ok(None) => {
                        tracing::warn!(lease, "lease lost to another instance");
                        mine.remove(place);
                    }
                    Err(e) => {
                        if held.expires_at_ms <= now {
                            tracing::warn!(lease, "lease expired unrenewed: {e}");
                            mine.remove(place);
                        }
                    }
                }
            }
            // Do not hog: beyond the fair share, give back the last ones by preference.
            let order = preference(&me, &places);
            if mine.len() > target {
                for place in order.iter().rev() {
                    if mine.len() <= target {
                        break;
                    }
                    mine.remove(place);
                }
            }
            // Take free ones up to the share.
            for place in &order {
                if mine.len() >= target {
                    break;
                }
                if mine.contains_key(place) {
                    continue;
                }
                let lease = partition_lease(&name, &place.0, place.1);
                if taken
                    .get(&lease)
                    .is_some_and(|l| l.owner != me && l.is_held_at(now))
                {
                    continue;
                }
                match self.store.acquire_lease(&lease, &me, now, ttl).await {
                    Ok(Some(l)) => {
                        mine.insert(
                            place.clone(),
                            Held {
                                epoch: l.epoch,
                                expires_at_ms: l.expires_at_ms,
                                renewed_at_ms: now,
                            },
                        );
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(lease, "taking a lease: {e}"),
                }
            }
            let changed = before.keys().ne(mine.keys());
            let dropped: Vec<Place> = before
                .keys()
                .filter(|p| !mine.contains_key(*p))
                .cloned()
                .collect();
            if changed {
                // The old dispatcher stops (committing its cursors) before a dropped
                // lease is released, so the next owner starts from there.
                self.stop_dispatcher(&name).await;
            }
            crate::lock(&self.owned).insert(name.clone(), mine);
            for (topic, p) in &dropped {
                let _ = self
                    .store
                    .release_lease(&partition_lease(&name, topic, *p), &me)
                    .await;
            }
            if changed && !crate::lock(&self.paused).contains(&name) {
                self.launch(sub);
            }
        }
    }

    /// When the store cannot be asked: partitions whose lease has run out stop.
    async fn expire_unrenewed(&self, now: i64) {
        let expired: Vec<String> = {
            let mut owned = crate::lock(&self.owned);
            let mut names = Vec::new();
            for (name, held) in owned.iter_mut() {
                let n = held.len();
                held.retain(|_, h| h.expires_at_ms > now);
                if held.len() != n {
                    names.push(name.clone());
                }
            }
            names
        };
        for name in expired {
            self.stop_dispatcher(&name).await;
            if !crate::lock(&self.paused).contains(&name)
                && let Ok(sub) = self.store.get_subscription(&name).await
            {
                self.launch(sub);
            }
        }
    }

    /// Gives back every lease this instance holds (at shutdown, after the dispatchers
    /// stopped).
    pub(crate) async fn release_all(&self) {
        let me = &self.options.instance;
        let owned = std::mem::take(&mut *crate::lock(&self.owned));
        for (name, held) in owned {
            for (topic, p) in held.keys() {
                let _ = self
                    .store
                    .release_lease(&partition_lease(&name, topic, *p), me)
                    .await;
            }
        }
        let _ = self.store.release_lease(&instance_lease(me), me).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_is_a_rotation_of_every_place() {
        let places: Vec<Place> = (0..5).map(|p| ("t".to_string(), p)).collect();
        for who in ["a", "b", "instance-42"] {
            let order = preference(who, &places);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, places, "{who}: every place once");
            assert_eq!(preference(who, &places), order, "{who}: stable");
        }
        assert!(preference("a", &[]).is_empty());
    }

    #[test]
    fn the_tick_is_a_third_of_the_ttl_at_most_a_second() {
        assert_eq!(tick(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(tick(Duration::from_millis(900)), Duration::from_millis(300));
    }
}
