//! Time as the verifier and the minter see it, injectable so that expiry can
//! be tested without waiting.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// A source of the current Unix time in whole seconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// The system clock shifted by an adjustable offset, for tests and drills
/// that need to move time forward or back.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock {
    offset: Arc<AtomicI64>,
}

impl OffsetClock {
    /// A clock that starts in step with the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock (and every clone of it) by `seconds`, which may be negative.
    pub fn advance(&self, seconds: i64) {
        self.offset.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> u64 {
        SystemClock
            .now()
            .saturating_add_signed(self.offset.load(Ordering::SeqCst))
    }
}

/// A shared, type-erased clock.
pub type SharedClock = Arc<dyn Clock>;

/// The default clock: the system's.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}
