//! The replay cache of one-time tokens: each `jti` is accepted once, and
//! remembered until the token could no longer verify anyway.

use std::{collections::HashMap, sync::Mutex};

use crate::error::AuthError;

/// `jti` → the time after which the token is expired for good.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Records the first use of `jti`, valid until `dead_after`.
    ///
    /// # Errors
    /// [`AuthError::Replayed`] when it was used before; [`AuthError::ReplayCacheFull`]
    /// when it cannot be remembered (refusing is the only safe answer then).
    pub(crate) fn first_use(&self, jti: &str, dead_after: u64, now: u64) -> Result<(), AuthError> {
        // Only one-time tokens come here, so this lock is off the common path.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains_key(jti) {
            return Err(AuthError::Replayed);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, dead| *dead >= now);
            if seen.len() >= self.capacity {
                return Err(AuthError::ReplayCacheFull);
            }
        }
        seen.insert(jti.to_owned(), dead_after);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_a_replay() {
        let cache = ReplayCache::new(10);
        assert_eq!(cache.first_use("a", 100, 0), Ok(()));
        assert_eq!(cache.first_use("a", 100, 50), Err(AuthError::Replayed));
        assert_eq!(cache.first_use("b", 100, 50), Ok(()));
    }

    #[test]
    fn full_cache_makes_room_only_from_expired_entries() {
        let cache = ReplayCache::new(2);
        cache.first_use("a", 100, 0).expect("a");
        cache.first_use("b", 300, 0).expect("b");
        assert_eq!(
            cache.first_use("c", 300, 50),
            Err(AuthError::ReplayCacheFull)
        );
        // "a" is dead by 150, so it makes room; "b" is still remembered.
        assert_eq!(cache.first_use("c", 300, 150), Ok(()));
        assert_eq!(cache.first_use("b", 300, 150), Err(AuthError::Replayed));
    }
}
