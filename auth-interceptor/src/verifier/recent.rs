//! The tokens this thread verified last, per verifier. Callers reuse a
//! token for minutes, so most calls end here: no hashing of the token, no
//! look-up in the shared cache, and no write to memory another core uses
//! (the cache shard's lock, the cached claims' reference count), which
//! every core serving that caller would otherwise make on every call.
//!
//! A token's bytes are compared in full with what was remembered, so a hit
//! is the very token seen before, by the same verifier; what a hit may
//! still skip (the characters, the signature, the profile) was checked
//! then. What can change since (time, revocation) the verifier checks on
//! every call, and a key leaving the set outdates every entry
//! (the verifier's key generation).

use std::{cell::RefCell, sync::Arc};

use super::VerifiedClaims;

/// Tokens remembered per thread: a server thread sees few callers at a time.
const RECENT: usize = 4;

/// One remembered token.
struct Entry {
    /// The verifier that saw it.
    verifier: u64,
    /// Its bytes; the buffer is reused, so remembering costs no allocation
    /// once it is big enough.
    token: String,
    /// Its SHA-256: the shared cache's key.
    digest: [u8; 32],
    /// This thread's own copy of its claims and the verifier's key
    /// generation then: made the second time the token is seen here.
    verified: Option<(VerifiedClaims, u64)>,
}

impl Entry {
    const EMPTY: Entry = Entry {
        verifier: u64::MAX,
        token: String::new(),
        digest: [0; 32],
        verified: None,
    };

    fn is(&self, verifier: u64, token: &[u8]) -> bool {
        let remembered = self.token.as_bytes();
        // Tokens of one issuer share their first hundred bytes or so (the
        // header, `iss`, often `sub`); their signatures differ at once.
        // So the tail first: a miss is then found in a few bytes.
        let tail = remembered.len().saturating_sub(16);
        self.verifier == verifier
            && remembered.len() == token.len()
            && remembered[tail..] == token[tail..]
            && remembered == token
    }
}

struct Recent {
    entries: [Entry; RECENT],
    /// The entry the next new token replaces (round robin).
    next: usize,
}

thread_local! {
    static RECENT_TOKENS: RefCell<Recent> = const {
        RefCell::new(Recent {
            entries: [Entry::EMPTY; RECENT],
            next: 0,
        })
    };
}

/// What this thread remembers of a token.
pub(super) struct Recalled {
    /// Its SHA-256.
    pub(super) digest: [u8; 32],
    /// The thread's own copy of its claims and the key generation they
    /// were verified under, once it has one.
    pub(super) verified: Option<(VerifiedClaims, u64)>,
}

/// What this thread remembers of `token` for `verifier`, if it saw it.
pub(super) fn recall(verifier: u64, token: &[u8]) -> Option<Recalled> {
    RECENT_TOKENS
        .try_with(|recent| {
            let recent = recent.borrow();
            let entry = recent.entries.iter().find(|e| e.is(verifier, token))?;
            Some(Recalled {
                digest: entry.digest,
                verified: entry.verified.clone(),
            })
        })
        // During thread teardown nothing is remembered.
        .unwrap_or(None)
}

/// Remembers that `verifier` saw `token`, whose SHA-256 is `digest`, in
/// place of the oldest entry.
pub(super) fn note(verifier: u64, token: &str, digest: [u8; 32]) {
    let _ = RECENT_TOKENS.try_with(|recent| {
        let mut recent = recent.borrow_mut();
        let slot = recent.next;
        recent.next = (slot + 1) % RECENT;
        let entry = &mut recent.entries[slot];
        entry.verifier = verifier;
        entry.token.clear();
        entry.token.push_str(token);
        entry.digest = digest;
        entry.verified = None;
    });
}

/// Keeps a copy of `claims`, verified by `verifier` under key `generation`,
/// of this thread's own for `token` (when it is still remembered), and
/// returns it: its reference count is then written by this thread alone.
pub(super) fn keep(
    verifier: u64,
    token: &str,
    claims: &VerifiedClaims,
    generation: u64,
) -> VerifiedClaims {
    let own = VerifiedClaims(Arc::new((*claims.0).clone()));
    let _ = RECENT_TOKENS.try_with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(entry) = recent
            .entries
            .iter_mut()
            .find(|e| e.is(verifier, token.as_bytes()))
        {
            entry.verified = Some((own.clone(), generation));
        }
    });
    own
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::token::Claims;

    fn claims(sub: &str) -> VerifiedClaims {
        VerifiedClaims::assume_verified(Claims {
            iss: "https://issuer".into(),
            sub: sub.into(),
            aud: "inventory".into(),
            exp: 2,
            nbf: None,
            iat: 1,
            jti: "jti".into(),
            scope: String::new(),
            client_id: None,
            cnf: None,
            one_time: false,
            act: None,
            subject_issuer: None,
        })
    }

    #[test]
    fn remembered_digests_are_the_digests_of_the_exact_bytes() {
        let fresh = |token: &str| -> [u8; 32] { Sha256::digest(token.as_bytes()).into() };
        let digest = |token: &str| recall(7, token.as_bytes()).map(|r| r.digest);
        // More tokens than are remembered, in turn, so entries are reused.
        let tokens: Vec<String> = (0..RECENT * 3).map(|i| format!("h.p.{i}")).collect();
        for _ in 0..3 {
            for token in &tokens {
                assert_eq!(digest(token), None, "forgotten after {RECENT} others");
                note(7, token, fresh(token));
                assert_eq!(digest(token), Some(fresh(token)));
            }
        }
        // A prefix or an extension of a remembered token is a different token.
        let remembered = "h.p.signature";
        note(7, remembered, fresh(remembered));
        assert_eq!(digest(remembered), Some(fresh(remembered)));
        for other in ["h.p.signatur", "h.p.signaturee"] {
            assert_eq!(digest(other), None);
        }
    }

    #[test]
    fn entries_belong_to_one_verifier_and_claims_are_this_threads_own() {
        let token = "h.p.s";
        note(1, token, [1; 32]);
        assert!(recall(2, token.as_bytes()).is_none(), "another verifier");
        let recalled = recall(1, token.as_bytes()).expect("remembered");
        assert!(
            recalled.verified.is_none(),
            "no claims before they are kept"
        );

        let shared = claims("orders");
        let own = keep(1, token, &shared, 5);
        assert_eq!(own, shared);
        assert!(
            !Arc::ptr_eq(&own.0, &shared.0),
            "a copy, not the shared claims"
        );
        let (kept, generation) = recall(1, token.as_bytes())
            .and_then(|r| r.verified)
            .expect("kept");
        assert!(Arc::ptr_eq(&kept.0, &own.0));
        assert_eq!(generation, 5);

        // Forgotten, claims and all, once as many other tokens came since.
        for other in 0..RECENT {
            note(1, &format!("h.p.{other}"), [2; 32]);
        }
        assert!(recall(1, token.as_bytes()).is_none());
    }
}
