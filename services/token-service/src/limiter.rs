//! Failed-attempt limiting for client authentication.
//!
//! Failures are counted per (client id, source address), per source address,
//! and per client id across all sources at a much higher threshold (against
//! distributed guessing). Past a threshold every attempt is refused with
//! RESOURCE_EXHAUSTED until the lockout ends, even with the right secret, so
//! a lockout gives no success signal. Keying the low threshold on the pair
//! means nobody can lock a client out just by naming it.
//!
//! An attempt is reserved before the (slow) secret check and settled after,
//! under one lock each time, so a burst of concurrent guesses is held to the
//! same thresholds as guesses made one by one.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use auth_interceptor::SharedClock;
use serde::{Deserialize, Serialize};

/// Thresholds of the limiter (`[auth_limits]` in token-service.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthLimits {
    /// Failures for one client id from one source address, within the window.
    pub max_failures_per_client: u32,
    /// Failures from one source address (any client id), within the window.
    pub max_failures_per_source: u32,
    /// Failures for one client id from all sources together, within the window.
    pub max_failures_per_client_global: u32,
    /// Length of the counting window, seconds.
    pub window_seconds: u64,
    /// How long a lockout lasts, seconds.
    pub lockout_seconds: u64,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            max_failures_per_client: 10,
            max_failures_per_source: 50,
            max_failures_per_client_global: 200,
            window_seconds: 60,
            lockout_seconds: 60,
        }
    }
}

/// Most keys tracked per map; beyond it, idle entries are dropped first.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    pending: u32,
    window_start: u64,
    locked_until: u64,
}

impl Entry {
    fn refuses(&self, now: u64, max: u32, window_seconds: u64) -> bool {
        // Failures of a window that has ended no longer count, even before
        // the next attempt starts a new window.
        let failures = if now >= self.window_start + window_seconds {
            0
        } else {
            self.failures
        };
        self.locked_until > now || failures + self.pending >= max
    }
}

/// Failure counters per key with a fixed window and a lockout.
#[derive(Debug)]
struct Counters<K> {
    max: u32,
    entries: HashMap<K, Entry>,
}

impl<K: Eq + Hash> Counters<K> {
    fn new(max: u32) -> Self {
        Self {
            max,
            entries: HashMap::new(),
        }
    }

    fn refuses(&self, key: &K, now: u64, window_seconds: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.refuses(now, self.max, window_seconds))
    }

    fn reserve(&mut self, key: K, now: u64, limits: &AuthLimits) {
        if self.entries.len() >= MAX_TRACKED {
            self.entries.retain(|_, e| {
                e.pending > 0
                    || e.locked_until > now
                    || now < e.window_start + limits.window_seconds
            });
        }
        if self.entries.len() >= MAX_TRACKED {
            // Still full of live windows: a flood of ids or addresses. Keep
            // locks and in-flight attempts, forget the rest, stay bounded.
            self.entries
                .retain(|_, e| e.pending > 0 || e.locked_until > now);
        }
        let entry = self.entries.entry(key).or_default();
        if now >= entry.window_start + limits.window_seconds {
            entry.failures = 0;
            entry.window_start = now;
        }
        entry.pending += 1;
    }

    fn settle(&mut self, key: &K, failed: bool, now: u64, limits: &AuthLimits) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.pending = entry.pending.saturating_sub(1);
        if failed {
            entry.failures += 1;
            if entry.failures >= self.max {
                entry.locked_until = now + limits.lockout_seconds;
            }
        }
    }
}

#[derive(Debug)]
struct State {
    pairs: Counters<(String, Option<IpAddr>)>,
    clients: Counters<String>,
    sources: Counters<IpAddr>,
}

/// One reserved authentication attempt; settle it with [`AttemptLimiter::settle`].
#[derive(Debug)]
pub struct Attempt {
    client: Option<String>,
    source: Option<IpAddr>,
}

/// Counts failed client authentications.
#[derive(Debug)]
pub struct AttemptLimiter {
    limits: AuthLimits,
    clock: SharedClock,
    state: Mutex<State>,
}

impl AttemptLimiter {
    /// A limiter with `limits`, on `clock`.
    pub fn new(limits: AuthLimits, clock: SharedClock) -> Self {
        Self {
            state: Mutex::new(State {
                pairs: Counters::new(limits.max_failures_per_client),
                clients: Counters::new(limits.max_failures_per_client_global),
                sources: Counters::new(limits.max_failures_per_source),
            }),
            limits,
            clock,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves an attempt for the claimed `client` from `source`, or refuses
    /// it when any of its counters is locked or full of in-flight attempts.
    pub fn reserve(&self, client: Option<&str>, source: Option<IpAddr>) -> Option<Attempt> {
        let now = self.clock.now();
        let limits = self.limits;
        let mut state = self.state();
        let pair = client.map(|c| (c.to_owned(), source));
        let window = limits.window_seconds;
        let refused = pair
            .as_ref()
            .is_some_and(|p| state.pairs.refuses(p, now, window))
            || client.is_some_and(|c| state.clients.refuses(&c.to_owned(), now, window))
            || source.is_some_and(|s| state.sources.refuses(&s, now, window));
        if refused {
            return None;
        }
        if let (Some(pair), Some(client)) = (pair, client) {
            state.pairs.reserve(pair, now, &limits);
            state.clients.reserve(client.to_owned(), now, &limits);
        }
        if let Some(source) = source {
            state.sources.reserve(source, now, &limits);
        }
        Some(Attempt {
            client: client.map(str::to_owned),
            source,
        })
    }

    /// Settles a reserved attempt: a failure counts against every counter, a
    /// success just releases the reservation.
    pub fn settle(&self, attempt: Attempt, succeeded: bool) {
        let now = self.clock.now();
        let limits = self.limits;
        let failed = !succeeded;
        let mut state = self.state();
        if let Some(client) = attempt.client {
            state
                .pairs
                .settle(&(client.clone(), attempt.source), failed, now, &limits);
            state.clients.settle(&client, failed, now, &limits);
        }
        if let Some(source) = attempt.source {
            state.sources.settle(&source, failed, now, &limits);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use auth_interceptor::OffsetClock;

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    fn fail(limiter: &AttemptLimiter, client: &str, source: Option<IpAddr>) -> bool {
        match limiter.reserve(Some(client), source) {
            Some(attempt) => {
                limiter.settle(attempt, false);
                true
            }
            None => false,
        }
    }

    #[test]
    fn locks_the_pair_after_the_threshold_and_unlocks_after_the_lockout() {
        let clock = OffsetClock::new();
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(clock.clone()));
        let attacker = ip("10.0.0.66");
        for _ in 0..10 {
            assert!(fail(&limiter, "orders", attacker));
        }
        assert!(
            limiter.reserve(Some("orders"), attacker).is_none(),
            "locked"
        );
        let legit = limiter.reserve(Some("orders"), ip("10.0.0.1"));
        assert!(
            legit.is_some(),
            "naming a client does not lock it out elsewhere"
        );
        clock.advance(61);
        assert!(limiter.reserve(Some("orders"), attacker).is_some());
    }

    #[test]
    fn concurrent_attempts_are_held_to_the_threshold() {
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(OffsetClock::new()));
        let source = ip("10.0.0.66");
        let in_flight: Vec<Attempt> = (0..500)
            .filter_map(|_| limiter.reserve(Some("orders"), source))
            .collect();
        assert_eq!(in_flight.len(), 10);
        for attempt in in_flight {
            limiter.settle(attempt, false);
        }
        assert!(limiter.reserve(Some("orders"), source).is_none());
    }

    #[test]
    fn success_releases_its_reservation_without_counting() {
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(OffsetClock::new()));
        for _ in 0..100 {
            let attempt = limiter
                .reserve(Some("orders"), ip("10.0.0.1"))
                .expect("open");
            limiter.settle(attempt, true);
        }
        assert!(limiter.reserve(Some("orders"), ip("10.0.0.1")).is_some());
    }

    #[test]
    fn sources_and_distributed_guessing_have_their_own_thresholds() {
        let clock = OffsetClock::new();
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(clock.clone()));
        let source = ip("10.0.0.66");
        for i in 0..50 {
            assert!(fail(&limiter, &format!("client-{i}"), source));
        }
        assert!(
            limiter.reserve(Some("fresh"), source).is_none(),
            "source locked"
        );
        clock.advance(61);
        for i in 0..200u32 {
            let source = Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            assert!(fail(&limiter, "orders", source));
        }
        assert!(
            limiter.reserve(Some("orders"), ip("10.9.9.9")).is_none(),
            "global client lock"
        );
    }

    #[test]
    fn memory_stays_bounded_under_a_flood() {
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(OffsetClock::new()));
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let source = Some(IpAddr::from(i.to_be_bytes()));
            fail(&limiter, &format!("id-{i}"), source);
        }
        let state = limiter.state();
        assert!(state.pairs.entries.len() <= MAX_TRACKED);
        assert!(state.clients.entries.len() <= MAX_TRACKED);
        assert!(state.sources.entries.len() <= MAX_TRACKED);
    }
}
