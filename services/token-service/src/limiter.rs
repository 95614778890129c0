//! Failed-attempt limiting for client authentication: after too many wrong
//! secrets for one client id, or from one source address, every attempt is
//! refused with RESOURCE_EXHAUSTED until the lockout ends. During a lockout
//! even the right secret is refused, so it gives no success signal.

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
    /// Failed attempts for one client id within the window before it is locked.
    pub max_failures_per_client: u32,
    /// Failed attempts from one source address within the window before it is locked.
    pub max_failures_per_source: u32,
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
    window_start: u64,
    locked_until: u64,
}

/// Failure counters per key with a fixed window and a lockout.
#[derive(Debug)]
struct Counters<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> Counters<K> {
    fn locked(&self, key: &K, now: u64) -> bool {
        self.entries.get(key).is_some_and(|e| e.locked_until > now)
    }

    fn fail(&mut self, key: K, now: u64, max: u32, limits: &AuthLimits) {
        if self.entries.len() >= MAX_TRACKED {
            self.entries.retain(|_, e| {
                e.locked_until > now || now < e.window_start + limits.window_seconds
            });
        }
        if self.entries.len() >= MAX_TRACKED {
            // Still full of live entries: an address or id flood. Forgetting
            // the oldest windows keeps memory bounded; locks survive.
            self.entries.retain(|_, e| e.locked_until > now);
        }
        let entry = self.entries.entry(key).or_default();
        if now >= entry.window_start + limits.window_seconds {
            *entry = Entry {
                failures: 0,
                window_start: now,
                locked_until: entry.locked_until,
            };
        }
        entry.failures += 1;
        if entry.failures >= max {
            entry.locked_until = now + limits.lockout_seconds;
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }
}

#[derive(Debug, Default)]
struct State {
    clients: Counters<String>,
    sources: Counters<IpAddr>,
}

/// Counts failed client authentications per client id and per source.
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
            limits,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an attempt for `client` from `source` is refused outright.
    pub fn is_locked(&self, client: Option<&str>, source: Option<IpAddr>) -> bool {
        let now = self.clock.now();
        let state = self.state();
        client.is_some_and(|c| state.clients.locked(&c.to_owned(), now))
            || source.is_some_and(|s| state.sources.locked(&s, now))
    }

    /// Records a failed attempt.
    pub fn record_failure(&self, client: Option<&str>, source: Option<IpAddr>) {
        let now = self.clock.now();
        let limits = self.limits;
        let mut state = self.state();
        if let Some(client) = client {
            state.clients.fail(
                client.to_owned(),
                now,
                limits.max_failures_per_client,
                &limits,
            );
        }
        if let Some(source) = source {
            state
                .sources
                .fail(source, now, limits.max_failures_per_source, &limits);
        }
    }

    /// Records a success: the client's own count starts over (the source's does not,
    /// so one valid credential cannot launder a brute force on others).
    pub fn record_success(&self, client: &str) {
        self.state().clients.clear(&client.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use auth_interceptor::OffsetClock;

    use super::*;

    #[test]
    fn locks_after_the_threshold_and_unlocks_after_the_lockout() {
        let clock = OffsetClock::new();
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(clock.clone()));
        let source: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..9 {
            limiter.record_failure(Some("orders"), Some(source));
        }
        assert!(!limiter.is_locked(Some("orders"), Some(source)));
        limiter.record_failure(Some("orders"), Some(source));
        assert!(limiter.is_locked(Some("orders"), None));
        assert!(
            !limiter.is_locked(Some("demo-cli"), Some(source)),
            "source not yet at its threshold"
        );
        clock.advance(61);
        assert!(!limiter.is_locked(Some("orders"), Some(source)));
    }

    #[test]
    fn failures_spread_over_windows_do_not_lock() {
        let clock = OffsetClock::new();
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(clock.clone()));
        for _ in 0..3 {
            for _ in 0..9 {
                limiter.record_failure(Some("orders"), None);
            }
            clock.advance(61);
        }
        assert!(!limiter.is_locked(Some("orders"), None));
    }

    #[test]
    fn many_sources_lock_one_client_and_memory_stays_bounded() {
        let clock = OffsetClock::new();
        let limiter = AttemptLimiter::new(AuthLimits::default(), Arc::new(clock));
        for i in 0..(MAX_TRACKED as u32 + 500) {
            let source = IpAddr::from(i.to_be_bytes());
            limiter.record_failure(Some(&format!("id-{i}")), Some(source));
        }
        assert!(limiter.state().clients.entries.len() <= MAX_TRACKED);
        assert!(limiter.state().sources.entries.len() <= MAX_TRACKED);
    }
}
