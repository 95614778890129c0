//! `ConsumeOneTime`: the first use of each one-time token, for every
//! replica of the services that ask. With the etcd store it is one
//! create-if-absent in etcd (see `store`); with the files store, this
//! process's memory (so "once" then holds per token service process).

use std::{collections::HashMap, sync::Mutex};

use crate::{config::MAX_TTL_CEILING_SECONDS, error::IssueError};

/// Most one-time uses remembered at once (each until its token expired).
pub const MAX_REMEMBERED: usize = 100_000;

/// Checks a `jti` and bounds how long its use is remembered: from now to
/// at most the longest token lifetime plus the largest verifier leeway.
///
/// # Errors
/// [`IssueError::InvalidOneTime`] for an empty, over-long or non-printable `jti`.
pub fn remember_until(jti: &str, expires_at: i64, now: u64) -> Result<u64, IssueError> {
    if !crate::revocations::is_printable_id(jti) {
        return Err(IssueError::InvalidOneTime(
            "jti must be 1 to 1024 visible ASCII characters",
        ));
    }
    let leeway = auth_interceptor::verifier::MAX_LEEWAY_SECONDS;
    let latest = now + MAX_TTL_CEILING_SECONDS;
    Ok(u64::try_from(expires_at).unwrap_or(0).clamp(now, latest) + leeway)
}

/// One-time uses remembered in this process.
#[derive(Debug, Default)]
pub struct LocalUses {
    seen: Mutex<HashMap<String, u64>>,
}

impl LocalUses {
    /// Whether this is the first use of `jti` (remembered until `until`).
    ///
    /// # Errors
    /// [`IssueError::Busy`] when [`MAX_REMEMBERED`] live uses are held already.
    pub fn first_use(&self, jti: &str, until: u64, now: u64) -> Result<bool, IssueError> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains_key(jti) {
            return Ok(false);
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, until| *until >= now);
            if seen.len() >= MAX_REMEMBERED {
                return Err(IssueError::Busy);
            }
        }
        seen.insert(jti.to_owned(), until);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_used_once_and_bad_ones_are_refused() {
        let uses = LocalUses::default();
        let until = remember_until("abc", 1_000, 900).expect("valid");
        assert_eq!(
            until,
            1_000 + auth_interceptor::verifier::MAX_LEEWAY_SECONDS
        );
        assert_eq!(uses.first_use("abc", until, 900), Ok(true));
        assert_eq!(uses.first_use("abc", until, 901), Ok(false));
        assert!(remember_until("", 1, 0).is_err());
        assert!(remember_until("a b", 1, 0).is_err());
        assert!(
            remember_until(
                &"x".repeat(auth_interceptor::revocation::MAX_REVOCATION_ID_BYTES + 1),
                1,
                0
            )
            .is_err()
        );
        // Far-future or negative exp stays within the longest lifetime.
        assert!(remember_until("x", i64::MAX, 10).expect("clamped") <= 10 + 3600 + 60);
        assert_eq!(remember_until("x", -5, 10).expect("clamped"), 10 + 60);
    }
}
