//! Whether a replica can know its shared state is current: it is while its
//! etcd session was renewed within the session's lifetime. Read on every
//! mint, so it is one atomic load.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// The last time etcd confirmed this replica's session, and for how long that holds.
#[derive(Debug)]
pub struct Freshness {
    origin: Instant,
    /// Milliseconds after `origin` until which the state counts as current (0: never confirmed).
    fresh_until_ms: AtomicU64,
    /// The same, as a value streams and health can wait on.
    fresh: watch::Sender<bool>,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            fresh_until_ms: AtomicU64::new(0),
            fresh: watch::Sender::new(false),
        }
    }
}

impl Freshness {
    /// etcd just confirmed the session: current for `ttl` more.
    pub fn confirm(&self, ttl: Duration) {
        let until = self.elapsed_ms().saturating_add(ttl.as_millis() as u64);
        self.fresh_until_ms.fetch_max(until, Ordering::AcqRel);
        self.publish();
    }

    /// Whether the shared state can be trusted as current now.
    pub fn is_fresh(&self) -> bool {
        self.elapsed_ms() < self.fresh_until_ms.load(Ordering::Acquire)
    }

    /// How long it has been stale (whole seconds), if it is.
    pub fn stale_for(&self) -> Option<u64> {
        let until = self.fresh_until_ms.load(Ordering::Acquire);
        let now = self.elapsed_ms();
        (now >= until).then(|| (now - until) / 1000)
    }

    /// Re-checks the time and tells watchers when freshness changed.
    pub fn publish(&self) {
        let fresh = self.is_fresh();
        self.fresh.send_if_modified(|held| {
            let changed = *held != fresh;
            *held = fresh;
            changed
        });
    }

    /// Follows freshness as it changes (call [`Freshness::publish`] to re-check the time).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.fresh.subscribe()
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_within_the_confirmed_lifetime() {
        let freshness = Freshness::default();
        assert!(!freshness.is_fresh(), "never confirmed");
        freshness.confirm(Duration::from_secs(60));
        assert!(freshness.is_fresh());
        assert_eq!(freshness.stale_for(), None);
        assert!(*freshness.subscribe().borrow());
        freshness.confirm(Duration::ZERO);
        assert!(
            freshness.is_fresh(),
            "a shorter confirmation never shortens it"
        );
        let lapsed = Freshness::default();
        lapsed.confirm(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!lapsed.is_fresh());
        assert_eq!(lapsed.stale_for(), Some(0));
        lapsed.publish();
        assert!(!*lapsed.subscribe().borrow());
    }
}
