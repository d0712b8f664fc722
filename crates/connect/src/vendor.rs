//! What the lanes of one vendor share (adapters with the same `vendor`; by default each
//! adapter is its own vendor): the outbound rate limit (governor's GCRA, one bucket per
//! vendor), the pause the vendor asked for (a 429 or 503 with its Retry-After), the hold
//! while it is unreachable (a backoff growing with the failures in a row, like a circuit
//! breaker) and the send rate a 429 or 503 lowered.
//!
//! The lowered rate is AIMD: a 429 or 503 halves it (at most once a second: the answers
//! of attempts already in flight say the same thing once), starting from the configured
//! rate, or without one from the rate sent in the last second; each later answer that is
//! not a 429 or 503 raises it by 5%, and once it is back to where it started the pacing
//! ends. It is never below one message a second.

use crate::config::RateLimit;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lowest rate a 429 or 503 brings a vendor down to (messages per second).
const MIN_RATE: f64 = 1.0;
/// Each good answer raises a lowered rate by this factor.
const RECOVERY: f64 = 1.05;

/// One vendor's shared sending state.
#[derive(Debug)]
pub(crate) struct Vendor {
    gcra: Mutex<Option<(RateLimit, Arc<DefaultDirectRateLimiter>)>>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// No attempt starts before this (a 429 or 503's delay, or an unreachable vendor's
    /// backoff).
    hold_until: Option<Instant>,
    /// Attempts in a row that found the vendor unreachable or asking for a pause.
    failures: u32,
    pace: Option<Pace>,
    /// Sends counted per second: (start of this second, sends in it, sends in the last).
    window: (Instant, u32, u32),
}

/// A send rate lowered by a 429 or 503.
#[derive(Debug)]
struct Pace {
    rate: f64,
    /// Where the rate was when first lowered: the pacing ends once back there.
    ceiling: f64,
    /// The next send slot.
    next_at: Instant,
    lowered_at: Instant,
}

impl Vendor {
    pub fn new() -> Self {
        Self {
            gcra: Mutex::new(None),
            state: Mutex::new(State {
                hold_until: None,
                failures: 0,
                pace: None,
                window: (Instant::now(), 0, 0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the vendor's rate limit (kept when it is the same, so the bucket's state
    /// survives a reload).
    pub fn set_rate_limit(&self, limit: Option<&RateLimit>) {
        let mut gcra = self.gcra.lock().unwrap_or_else(|e| e.into_inner());
        if gcra.as_ref().map(|(l, _)| l) == limit {
            return;
        }
        *gcra = limit.and_then(|l| {
            let per_second = NonZeroU32::new(l.per_second)?;
            let burst = l.burst.and_then(NonZeroU32::new).unwrap_or(per_second);
            let limiter = RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst));
            Some((l.clone(), Arc::new(limiter)))
        });
    }

    fn configured_rate(&self) -> Option<f64> {
        self.gcra
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(l, _)| f64::from(l.per_second))
    }

    /// Waits until an attempt may start: the vendor's hold, the rate limit, the lowered
    /// rate. Cancel-safe (a cancelled wait took at most a slot).
    pub async fn ready(&self) {
        loop {
            let hold = self.state().hold_until;
            if let Some(until) = hold
                && until > Instant::now()
            {
                tokio::time::sleep_until(until.into()).await;
            }
            let gcra = self
                .gcra
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|(_, g)| g.clone());
            if let Some(g) = gcra {
                g.until_ready().await;
            }
            let slot = {
                let mut st = self.state();
                st.pace.as_mut().map(|p| {
                    let now = Instant::now();
                    let slot = p.next_at.max(now);
                    p.next_at = slot + Duration::from_secs_f64(1.0 / p.rate);
                    slot
                })
            };
            if let Some(slot) = slot {
                tokio::time::sleep_until(slot.into()).await;
            }
            // A pause asked for while this one waited comes first.
            if self
                .state()
                .hold_until
                .is_none_or(|until| until <= Instant::now())
            {
                break;
            }
        }
        let mut st = self.state();
        let now = Instant::now();
        let (start, n, _) = st.window;
        let elapsed = now.duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            let last = if elapsed < Duration::from_secs(2) {
                n
            } else {
                0
            };
            st.window = (now, 0, last);
        }
        st.window.1 += 1;
    }

    /// The vendor asked for a pause (429, 503): hold every lane of the vendor for
    /// `delay` (its Retry-After), else for `backoff(failures in a row)`, and lower the
    /// send rate.
    pub fn slow_down(&self, delay: Option<Duration>, backoff: impl Fn(u32) -> Duration) {
        let configured = self.configured_rate();
        let mut st = self.state();
        st.failures += 1;
        let wait = delay.unwrap_or_else(|| backoff(st.failures));
        hold(&mut st, wait);
        let now = Instant::now();
        let sent = f64::from(st.window.1.max(st.window.2));
        match &mut st.pace {
            Some(p) => {
                if now.duration_since(p.lowered_at) >= Duration::from_secs(1) {
                    p.rate = (p.rate / 2.0).max(MIN_RATE);
                    p.lowered_at = now;
                }
            }
            None => {
                let from = configured.unwrap_or(sent).max(MIN_RATE);
                st.pace = Some(Pace {
                    rate: (from / 2.0).max(MIN_RATE),
                    ceiling: from,
                    next_at: now,
                    lowered_at: now,
                });
            }
        }
    }

    /// The vendor is unreachable (connection refused, timeout): hold its lanes for a
    /// backoff growing with the failures in a row.
    pub fn unreachable(&self, backoff: impl Fn(u32) -> Duration) {
        let mut st = self.state();
        st.failures += 1;
        let wait = backoff(st.failures);
        hold(&mut st, wait);
    }

    /// The vendor answered something other than a 429 or 503: the failures in a row end,
    /// and a lowered rate climbs back.
    pub fn answered(&self) {
        let mut st = self.state();
        st.failures = 0;
        if let Some(p) = &mut st.pace {
            p.rate *= RECOVERY;
            if p.rate >= p.ceiling {
                st.pace = None;
            }
        }
    }

    /// The send rate a 429 or 503 lowered the vendor to (messages per second), `None`
    /// when it is not lowered.
    pub fn lowered_rate(&self) -> Option<f64> {
        self.state().pace.as_ref().map(|p| p.rate)
    }
}

fn hold(st: &mut State, wait: Duration) {
    let until = Instant::now() + wait;
    if st.hold_until.is_none_or(|h| h < until) {
        st.hold_until = Some(until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(n: u32) -> Duration {
        Duration::from_millis(10 * u64::from(n))
    }

    #[tokio::test]
    async fn a_429_halves_the_configured_rate_and_good_answers_restore_it() {
        let v = Vendor::new();
        v.set_rate_limit(Some(&RateLimit {
            per_second: 40,
            burst: None,
        }));
        assert_eq!(v.lowered_rate(), None);
        v.slow_down(Some(Duration::ZERO), backoff);
        assert_eq!(v.lowered_rate(), Some(20.0));
        // Answers of attempts already in flight: the same signal, halved once.
        v.slow_down(Some(Duration::ZERO), backoff);
        assert_eq!(v.lowered_rate(), Some(20.0));
        let mut n = 0;
        while v.lowered_rate().is_some() {
            v.answered();
            n += 1;
            assert!(n < 100, "the rate never came back");
        }
        // 20 * 1.05^n >= 40: n = 15.
        assert_eq!(n, 15);
    }

    #[tokio::test]
    async fn without_a_configured_rate_the_rate_sent_is_halved() {
        let v = Vendor::new();
        for _ in 0..30 {
            v.ready().await;
        }
        v.slow_down(None, backoff);
        assert_eq!(v.lowered_rate(), Some(15.0));
        // The hold: the backoff of one failure in a row.
        let t0 = Instant::now();
        v.ready().await;
        assert!(
            t0.elapsed() >= Duration::from_millis(5),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn the_rate_is_never_below_one_a_second() {
        let v = Vendor::new();
        v.slow_down(Some(Duration::ZERO), backoff);
        assert_eq!(v.lowered_rate(), Some(MIN_RATE));
    }

    #[tokio::test]
    async fn a_lowered_rate_spaces_the_sends() {
        let v = Vendor::new();
        v.set_rate_limit(Some(&RateLimit {
            per_second: 40,
            burst: None,
        }));
        v.slow_down(Some(Duration::ZERO), backoff);
        // 20 a second: 5 sends take at least 4 intervals of 50 ms.
        let t0 = Instant::now();
        for _ in 0..5 {
            v.ready().await;
        }
        assert!(
            t0.elapsed() >= Duration::from_millis(195),
            "{:?}",
            t0.elapsed()
        );
    }

    #[tokio::test]
    async fn an_unreachable_vendor_is_held_longer_with_each_failure() {
        let v = Vendor::new();
        v.unreachable(backoff);
        v.unreachable(backoff);
        v.unreachable(backoff);
        let held = v.state().hold_until.expect("held");
        assert!(held > Instant::now() + Duration::from_millis(20));
        assert_eq!(v.lowered_rate(), None, "unreachable is not a rate signal");
        v.answered();
        assert_eq!(v.state().failures, 0);
    }
}
