//! One call's path, top to bottom: the connection's certificate identity,
//! then bearer → verify (cache) → revocation → certificate binding →
//! policy → one-time consumption, each step in order below.
//!
//! [`decide`] is the part that changes nothing, so `authmesh explain` runs
//! the very same decision without making the call. [`admit`] adds the two
//! ends only a real call has: reading the request, and using up a one-time
//! token. Neither logs nor counts; the service records what they return.

use http::HeaderMap;

use crate::{
    bearer::{checked_token, presented_token},
    error::AuthError,
    peer::{PeerError, PeerIdentity},
    policy::{DryRunOutcome, Evaluation, MethodPolicy},
    verifier::{VerifiedClaims, Verifier},
};

/// A call that may go through: who calls, and the rule of `policy` that
/// allowed it.
#[derive(Debug, Clone)]
pub struct Decision<'policy> {
    /// The verified token.
    pub claims: VerifiedClaims,
    /// The allowing rule's name.
    pub rule: &'policy str,
    /// What the policy's dry-run rules would have decided.
    pub dry_run: Vec<DryRunOutcome>,
}

/// A call that may not, with the caller when its token verified.
#[derive(Debug, Clone)]
pub struct Denial {
    /// Why.
    pub error: AuthError,
    /// The token's claims, if it verified (a policy denial or a replay).
    pub claims: Option<VerifiedClaims>,
    /// What the policy's dry-run rules would have decided, when it was reached.
    pub dry_run: Vec<DryRunOutcome>,
}

impl From<AuthError> for Denial {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            claims: None,
            dry_run: Vec::new(),
        }
    }
}

impl Denial {
    fn of(error: AuthError, claims: VerifiedClaims) -> Self {
        Self {
            error,
            claims: Some(claims),
            dry_run: Vec::new(),
        }
    }
}

/// The check of one call to `path` with `token` over a connection whose
/// client certificate is `peer`: steps 2 to 5 of the call path. It changes
/// nothing and records nothing (dry-run outcomes are returned), so
/// `authmesh explain` runs the very same decision without making the call.
///
/// # Errors
/// A [`Denial`] naming the first check that failed.
pub fn decide<'policy>(
    verifier: &Verifier,
    policy: &'policy MethodPolicy,
    path: &str,
    token: &str,
    peer: Option<&PeerIdentity>,
) -> Result<Decision<'policy>, Denial> {
    // 2. Verify: signature, profile and times, or the cache's earlier answer.
    let claims = verifier.authenticate(token)?;
    decide_verified(verifier, policy, path, claims, peer)
}

/// Steps 3 to 5, for claims that verified.
fn decide_verified<'policy>(
    verifier: &Verifier,
    policy: &'policy MethodPolicy,
    path: &str,
    claims: VerifiedClaims,
    peer: Option<&PeerIdentity>,
) -> Result<Decision<'policy>, Denial> {
    // 3. Revocation, on every call: a cached token may have been revoked since.
    if let Err(error) = verifier.check_revocations(&claims) {
        return Err(Denial::of(error, claims));
    }
    // 4. Certificate binding, on every call: one token may arrive on many connections.
    if let Err(error) = verifier.check_binding(&claims, peer) {
        return Err(Denial::of(error, claims));
    }
    // 5. Policy.
    authorize(policy, path, claims)
}

/// Step 5 alone: `policy` on a call to `path` by verified `claims`. For
/// `authmesh explain` of a bound token without its certificate, where the
/// binding cannot be checked but the rest can.
///
/// # Errors
/// A [`Denial`] naming the rule (or the absence of one) that refused.
pub fn authorize<'policy>(
    policy: &'policy MethodPolicy,
    path: &str,
    claims: VerifiedClaims,
) -> Result<Decision<'policy>, Denial> {
    let Evaluation { result, dry_run } = policy.evaluate(path, &claims);
    match result {
        Ok(allowed) => Ok(Decision {
            claims,
            rule: allowed.rule,
            dry_run,
        }),
        Err(error) => Err(Denial {
            error,
            claims: Some(claims),
            dry_run,
        }),
    }
}

/// A real call let through: its decision and its connection's identity.
#[derive(Debug)]
pub(crate) struct Admitted<'policy> {
    pub(crate) decision: Decision<'policy>,
    pub(crate) peer: Option<PeerIdentity>,
}

/// The whole path of a real call to `path` with request `headers`, over a
/// connection whose certificate identity was read as `peer`.
pub(crate) fn admit<'policy>(
    verifier: &Verifier,
    policy: &'policy MethodPolicy,
    path: &str,
    headers: &HeaderMap,
    peer: Result<Option<PeerIdentity>, PeerError>,
) -> Result<Admitted<'policy>, Denial> {
    // 0. The connection: a client certificate that yields no identity is refused.
    let peer = peer.map_err(AuthError::from)?;
    // 1. Bearer: exactly one `authorization: Bearer <token>`.
    let token = presented_token(headers)?;
    // 2. Verify. The token's characters are checked unless this thread
    // verified these very bytes before (and checked them then).
    let claims = verifier.authenticate_presented(token, checked_token)?;
    // 3–5. Revocation, certificate binding, policy.
    let decision = decide_verified(verifier, policy, path, claims, peer.as_ref())?;
    // 6. One-time consumption, last: a call denied by any step above does
    // not use the token up.
    if let Err(error) = verifier.consume_one_time(&decision.claims) {
        return Err(Denial {
            error,
            claims: Some(decision.claims),
            dry_run: decision.dry_run,
        });
    }
    Ok(Admitted { decision, peer })
}
