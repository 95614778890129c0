//! Revoked tokens, as a verifier holds them: by `jti`, and by subject with
//! an `iat` cutoff. Kept in memory only until no token they cover can still
//! be valid; read on every call without a lock.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
#[cfg(feature = "token-service")]
use authmesh_proto::authmesh::v1 as proto;

use crate::{error::AuthError, token::Claims};

/// Longest `jti` or `sub` a revocation may name.
pub const MAX_REVOCATION_ID_BYTES: usize = 1024;

/// What a revocation covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RevokedTarget {
    /// The one token with this `jti`.
    Token(String),
    /// Every token of `sub` with `iat <= issued_before`.
    Subject {
        /// The subject (client id or SPIFFE ID).
        sub: String,
        /// Unix seconds, inclusive.
        issued_before: u64,
    },
}

/// One revocation in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What it covers.
    pub target: RevokedTarget,
    /// Unix seconds after which every token it covers has expired.
    pub expires_at: u64,
    /// Unix seconds when it was made.
    pub revoked_at: u64,
}

/// A revocation message that is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed revocation: {0}")]
pub struct MalformedRevocation(pub &'static str);

#[cfg(feature = "token-service")]
impl TryFrom<proto::Revocation> for Revocation {
    type Error = MalformedRevocation;

    fn try_from(value: proto::Revocation) -> Result<Self, Self::Error> {
        let non_negative = |v: i64, what| u64::try_from(v).map_err(|_| MalformedRevocation(what));
        let valid_id = |id: String| {
            if id.is_empty() || id.len() > MAX_REVOCATION_ID_BYTES {
                Err(MalformedRevocation("empty or oversized jti or sub"))
            } else {
                Ok(id)
            }
        };
        let target = match value.target {
            Some(proto::revocation::Target::Jti(jti)) => RevokedTarget::Token(valid_id(jti)?),
            Some(proto::revocation::Target::Subject(subject)) => RevokedTarget::Subject {
                sub: valid_id(subject.sub)?,
                issued_before: non_negative(subject.issued_before, "negative cutoff")?,
            },
            None => return Err(MalformedRevocation("no target")),
        };
        Ok(Self {
            target,
            expires_at: non_negative(value.expires_at, "negative expiry")?,
            revoked_at: non_negative(value.revoked_at, "negative time")?,
        })
    }
}

#[cfg(feature = "token-service")]
impl From<Revocation> for proto::Revocation {
    fn from(value: Revocation) -> Self {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            target: Some(match value.target {
                RevokedTarget::Token(jti) => proto::revocation::Target::Jti(jti),
                RevokedTarget::Subject { sub, issued_before } => {
                    proto::revocation::Target::Subject(proto::SubjectCutoff {
                        sub,
                        issued_before: signed(issued_before),
                    })
                }
            }),
            expires_at: signed(value.expires_at),
            revoked_at: signed(value.revoked_at),
        }
    }
}

/// The revocations in force, in lookup form. Every call looks its `jti`
/// and `sub` up here, so the maps hash with ahash (as the policy's do):
/// the keys come from the token service, not from callers.
#[derive(Debug, Clone, Default)]
struct RevocationSet {
    /// `jti` → when to forget it.
    tokens: HashMap<String, u64, ahash::RandomState>,
    /// `sub` → (cutoff, when to forget it).
    subjects: HashMap<String, (u64, u64), ahash::RandomState>,
}

impl RevocationSet {
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.subjects.is_empty()
    }
}

/// The revocations a verifier enforces. Writers (the revocation watch) copy
/// and swap; readers (every call) only load.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    set: ArcSwap<RevocationSet>,
    writer: std::sync::Mutex<()>,
}

impl Revocations {
    /// Adds `entries`, skipping those already past `forget_before`; returns how many were new.
    /// Revocations only ever widen: a later subject cutoff replaces an earlier one.
    pub(crate) fn apply(&self, entries: &[Revocation], forget_before: u64) -> usize {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = RevocationSet::clone(&self.set.load());
        let mut added = 0;
        let mut changed = false;
        for entry in entries.iter().filter(|e| e.expires_at >= forget_before) {
            let forget = match &entry.target {
                RevokedTarget::Token(jti) => next.tokens.entry(jti.clone()).or_insert_with(|| {
                    added += 1;
                    0
                }),
                RevokedTarget::Subject { sub, issued_before } => {
                    let (cutoff, forget) = next.subjects.entry(sub.clone()).or_insert((0, 0));
                    if *issued_before > *cutoff || *forget == 0 {
                        added += 1;
                        *cutoff = (*cutoff).max(*issued_before);
                    }
                    forget
                }
            };
            if entry.expires_at > *forget {
                *forget = entry.expires_at;
                changed = true;
            }
        }
        if changed || added > 0 {
            self.set.store(Arc::new(next));
        }
        added
    }

    /// Drops every revocation whose tokens have all expired by `forget_before`.
    pub(crate) fn prune(&self, forget_before: u64) -> usize {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.set.load();
        let mut next = RevocationSet::clone(&current);
        next.tokens.retain(|_, forget| *forget >= forget_before);
        next.subjects
            .retain(|_, (_, forget)| *forget >= forget_before);
        let dropped =
            current.tokens.len() + current.subjects.len() - next.tokens.len() - next.subjects.len();
        if dropped > 0 {
            self.set.store(Arc::new(next));
        }
        dropped
    }

    /// How many revocations are held.
    pub(crate) fn len(&self) -> usize {
        let set = self.set.load();
        set.tokens.len() + set.subjects.len()
    }

    /// Refuses a token some revocation covers.
    pub(crate) fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let set = self.set.load();
        if set.is_empty() {
            return Ok(());
        }
        let by_subject = set
            .subjects
            .get(&claims.sub)
            .is_some_and(|(cutoff, _)| claims.iat <= *cutoff);
        if by_subject || set.tokens.contains_key(&claims.jti) {
            return Err(AuthError::Revoked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: &str, iat: u64) -> Claims {
        Claims {
            iss: "https://issuer".into(),
            sub: sub.into(),
            aud: "inventory".into(),
            exp: iat + 300,
            nbf: None,
            iat,
            jti: jti.into(),
            scope: String::new(),
            client_id: None,
            cnf: None,
            one_time: false,
            act: None,
            subject_issuer: None,
        }
    }

    fn token(jti: &str, expires_at: u64) -> Revocation {
        Revocation {
            target: RevokedTarget::Token(jti.into()),
            expires_at,
            revoked_at: 0,
        }
    }

    fn subject(sub: &str, issued_before: u64, expires_at: u64) -> Revocation {
        Revocation {
            target: RevokedTarget::Subject {
                sub: sub.into(),
                issued_before,
            },
            expires_at,
            revoked_at: 0,
        }
    }

    #[test]
    fn jti_and_subject_cutoff_are_enforced() {
        let revocations = Revocations::default();
        assert_eq!(
            revocations.apply(&[token("a", 2000), subject("svc", 1000, 4600)], 0),
            2
        );
        assert_eq!(
            revocations.check(&claims("other", "a", 1500)),
            Err(AuthError::Revoked)
        );
        assert_eq!(revocations.check(&claims("other", "b", 1500)), Ok(()));
        // The cutoff is inclusive: a token of the same second is covered.
        assert_eq!(
            revocations.check(&claims("svc", "c", 1000)),
            Err(AuthError::Revoked)
        );
        assert_eq!(revocations.check(&claims("svc", "d", 1001)), Ok(()));
    }

    #[test]
    fn cutoffs_only_widen_and_duplicates_are_not_new() {
        let revocations = Revocations::default();
        revocations.apply(&[subject("svc", 1000, 4600)], 0);
        assert_eq!(revocations.apply(&[subject("svc", 900, 4500)], 0), 0);
        assert_eq!(
            revocations.check(&claims("svc", "x", 950)),
            Err(AuthError::Revoked)
        );
        assert_eq!(revocations.apply(&[token("a", 10)], 0), 1);
        assert_eq!(revocations.apply(&[token("a", 10)], 0), 0);
    }

    #[test]
    fn expired_revocations_are_forgotten() {
        let revocations = Revocations::default();
        revocations.apply(&[token("a", 100), subject("svc", 50, 200)], 0);
        assert_eq!(revocations.prune(150), 1);
        assert_eq!(revocations.len(), 1);
        assert_eq!(revocations.prune(201), 1);
        assert_eq!(revocations.len(), 0);
        // Already past: never stored.
        assert_eq!(revocations.apply(&[token("b", 100)], 150), 0);
        assert_eq!(revocations.len(), 0);
    }

    #[cfg(feature = "token-service")]
    #[test]
    fn malformed_messages_are_refused() {
        let bad = [
            proto::Revocation {
                target: None,
                expires_at: 1,
                revoked_at: 1,
            },
            proto::Revocation {
                target: Some(proto::revocation::Target::Jti(String::new())),
                expires_at: 1,
                revoked_at: 1,
            },
            proto::Revocation {
                target: Some(proto::revocation::Target::Jti("a".into())),
                expires_at: -1,
                revoked_at: 1,
            },
        ];
        for message in bad {
            assert!(Revocation::try_from(message).is_err());
        }
        let round_trip = subject("svc", 10, 20);
        assert_eq!(
            Revocation::try_from(proto::Revocation::from(round_trip.clone())),
            Ok(round_trip)
        );
    }
}
