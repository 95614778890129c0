//! The Verifier: checks a token against its issuer's keys and token
//! profile, without ever touching the network on the call path.
//!
//! A verifier trusts the mesh's own issuer (the strict AuthMesh profile)
//! and, optionally, external issuers, each with a profile of its own
//! ([`IssuerProfile`]) and a key set of its own: the issuer is chosen from
//! the token's `iss` before any key is tried, and a key verifies only
//! tokens of the issuer whose key set it came from.
//!
//! Keys live in an in-memory map per issuer, swapped atomically by the
//! background key refresh; a bounded cache keyed by the token's SHA-256
//! digest means a token is verified once, then only its expiry is checked
//! on later calls.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};

use crate::{
    clock::{SharedClock, system_clock},
    error::AuthError,
    jwk::{JwkSet, KeyError, MESH_ALGORITHMS, VerificationKey},
    observe::VerifierMetrics,
    peer::PeerIdentity,
    replay::ReplayCache,
    revocation::{Revocation, Revocations, RevokedTarget},
    token::{
        Claims, JwsAlgorithm, MAX_TOKEN_BYTES, TokenParts, parse_claims, parse_external_claims,
        parse_external_header, parse_header, peek_issuer, split_token,
    },
    token_profile::TokenError,
};

mod issuers;
pub use issuers::IssuerProfile;

/// Longest leeway the verifier accepts for `exp`/`nbf`/`iat`.
pub const MAX_LEEWAY_SECONDS: u64 = 60;

/// What a token must satisfy, besides a good signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Exact expected `iss`.
    pub issuer: String,
    /// Exact expected `aud`: this service's name.
    pub audience: String,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds (at most 60).
    pub leeway_seconds: u64,
    /// Longest accepted `exp - iat`, in seconds.
    pub max_lifetime_seconds: u64,
    /// How many verified tokens to remember.
    pub cache_capacity: usize,
    /// Refuse tokens that are not bound to a client certificate (`cnf`).
    /// Bound tokens are always checked against the connection, whatever this says.
    pub require_bound_tokens: bool,
    /// How many live one-time tokens to remember; beyond it they are refused.
    pub replay_cache_capacity: usize,
    /// Record metrics (labelled `service` = `audience`); off for throwaway
    /// verifiers such as the start-up self-test.
    pub record_metrics: bool,
    /// External issuers trusted besides `issuer`, each with its own profile
    /// and keys (installed through [`Verifier::for_issuer`]).
    pub trusted_issuers: Vec<IssuerProfile>,
}

impl VerifierConfig {
    /// Defaults: 30 s leeway, 3600 s maximum lifetime, 10,000 cached tokens,
    /// 100,000 remembered one-time tokens.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: 30,
            max_lifetime_seconds: 3600,
            cache_capacity: 10_000,
            require_bound_tokens: false,
            replay_cache_capacity: 100_000,
            record_metrics: true,
            trusted_issuers: Vec::new(),
        }
    }

    /// The same settings, also trusting `issuer`'s tokens.
    pub fn trust(mut self, issuer: IssuerProfile) -> Self {
        self.trusted_issuers.push(issuer);
        self
    }
}

/// Why a verifier could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Leeway above [`MAX_LEEWAY_SECONDS`].
    #[error("leeway of {0} s is above the {MAX_LEEWAY_SECONDS} s maximum")]
    LeewayTooLarge(u64),
    /// Empty issuer or audience.
    #[error("issuer and audience must not be empty")]
    MissingIdentity,
    /// Zero maximum lifetime or cache capacity.
    #[error("max lifetime and cache capacities must be positive")]
    ZeroLimit,
    /// A trusted issuer's profile is unusable (named, with the reason).
    #[error("trusted issuer {issuer:?}: {reason}")]
    TrustedIssuer {
        /// The issuer as configured.
        issuer: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The claims of a token that verified, as handlers find them in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims(Arc<Verified>);

/// Verified claims and the issuer (its index in the verifier) whose key verified them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    claims: Claims,
    issuer: usize,
}

impl VerifiedClaims {
    fn new(claims: Claims, issuer: usize) -> Self {
        Self(Arc::new(Verified { claims, issuer }))
    }

    /// Claims taken as verified, for tests of what happens after verification.
    #[cfg(test)]
    pub(crate) fn assume_verified(claims: Claims) -> Self {
        Self::new(claims, 0)
    }

    fn issuer(&self) -> usize {
        self.0.issuer
    }
}

impl Deref for VerifiedClaims {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.0.claims
    }
}

/// One issuer's keys, by `kid`.
#[derive(Debug, Default)]
struct KeySet {
    keys: HashMap<String, TrustedKey>,
}

impl KeySet {
    /// Whether the key installed as `serial` is still in the set.
    fn trusts(&self, serial: u64) -> bool {
        self.keys.values().any(|key| key.serial == serial)
    }
}

/// A trusted key and the serial number it was installed under. Cache
/// entries name the serial, not the key: a hit then compares integers
/// instead of cloning the key's reference count, which every core verifying
/// tokens of that key would otherwise write on every call.
#[derive(Debug, Clone)]
struct TrustedKey {
    key: Arc<VerificationKey>,
    serial: u64,
}

impl TrustedKey {
    fn new(key: VerificationKey) -> Self {
        // Never reused, so a serial names one key for the process's life.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self {
            key: Arc::new(key),
            serial: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A verified token, remembered with the serial of the key that verified
/// it: a hit counts only while that very key is still trusted.
#[derive(Clone)]
struct CachedToken {
    claims: VerifiedClaims,
    key_serial: u64,
}

/// One trusted issuer: how its tokens are read, and its keys.
struct IssuerState {
    profile: IssuerProfile,
    /// The mesh's own issuer: the strict AuthMesh token profile.
    mesh: bool,
    keys: ArcSwap<KeySet>,
    refresh_wanted: Notify,
    keys_loaded: watch::Sender<bool>,
}

impl IssuerState {
    fn new(profile: IssuerProfile, mesh: bool) -> Self {
        Self {
            profile,
            mesh,
            keys: ArcSwap::from_pointee(KeySet::default()),
            refresh_wanted: Notify::new(),
            keys_loaded: watch::Sender::new(false),
        }
    }
}

struct Inner {
    config: VerifierConfig,
    /// Names this verifier's entries in each thread's [`recent`] tokens.
    id: u64,
    /// The mesh's issuer first, then the trusted external issuers.
    issuers: Box<[IssuerState]>,
    /// Bumped whenever a key leaves a set: tokens a thread remembers as
    /// verified under an older generation are checked again.
    key_generation: AtomicU64,
    cache: Cache<[u8; 32], CachedToken>,
    clock: SharedClock,
    revocations: Revocations,
    revocations_synced: watch::Sender<bool>,
    /// Set while a revocation watch runs but has not delivered the full list:
    /// until then no token is accepted, since any might be revoked.
    revocations_pending: AtomicBool,
    replay: ReplayCache,
    metrics: VerifierMetrics,
}

/// Verifies tokens of its trusted issuers for one audience. Cheap to
/// clone. Each handle also names one of those issuers (the mesh's own,
/// unless obtained from [`Verifier::for_issuer`]): the one whose keys
/// [`Verifier::install_keys`] and the key refresh methods act on. Every
/// handle verifies tokens of every trusted issuer the same way.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
    issuer: usize,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .field("keys", &self.key_ids())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with no keys yet, on the system clock.
    ///
    /// # Errors
    /// [`ConfigError`] for settings outside the allowed ranges.
    pub fn new(config: VerifierConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, system_clock())
    }

    /// A verifier with no keys yet, on the given clock.
    ///
    /// # Errors
    /// [`ConfigError`] for settings outside the allowed ranges.
    pub fn with_clock(config: VerifierConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        if config.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(ConfigError::LeewayTooLarge(config.leeway_seconds));
        }
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(ConfigError::MissingIdentity);
        }
        if config.max_lifetime_seconds == 0
            || config.cache_capacity == 0
            || config.replay_cache_capacity == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        let mesh = IssuerProfile {
            issuer: config.issuer.clone(),
            algorithms: MESH_ALGORITHMS.to_vec(),
            token_types: vec![crate::token::ACCESS_TOKEN_TYPE.to_owned()],
            require_jti: true,
            leeway_seconds: config.leeway_seconds,
            max_lifetime_seconds: config.max_lifetime_seconds,
            scope_claim: Default::default(),
        };
        let mut issuers = vec![IssuerState::new(mesh, true)];
        for profile in &config.trusted_issuers {
            profile.validate()?;
            if issuers
                .iter()
                .any(|known| known.profile.issuer == profile.issuer)
            {
                return Err(ConfigError::TrustedIssuer {
                    issuer: profile.issuer.clone(),
                    reason: "trusted twice (or the mesh's own issuer)",
                });
            }
            issuers.push(IssuerState::new(profile.clone(), false));
        }
        // Never reused, so an id names one verifier for the process's life.
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            issuer: 0,
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                issuers: issuers.into_boxed_slice(),
                key_generation: AtomicU64::new(0),
                cache: Cache::new(config.cache_capacity),
                replay: ReplayCache::new(config.replay_cache_capacity),
                metrics: if config.record_metrics {
                    VerifierMetrics::new(&config.audience)
                } else {
                    VerifierMetrics::disabled()
                },
                config,
                clock,
                revocations: Revocations::default(),
                revocations_synced: watch::Sender::new(false),
                revocations_pending: AtomicBool::new(false),
            }),
        })
    }

    /// The settings this verifier enforces.
    pub fn config(&self) -> &VerifierConfig {
        &self.inner.config
    }

    /// A handle on this verifier naming `issuer` (exactly as configured),
    /// whose keys its key methods then act on; `None` for an issuer this
    /// verifier does not trust.
    pub fn for_issuer(&self, issuer: &str) -> Option<Verifier> {
        let index = self
            .inner
            .issuers
            .iter()
            .position(|state| state.profile.issuer == issuer)?;
        Some(Verifier {
            inner: self.inner.clone(),
            issuer: index,
        })
    }

    /// The issuer this handle names.
    pub fn issuer(&self) -> &str {
        &self.state().profile.issuer
    }

    /// Every trusted issuer, the mesh's own first.
    pub fn trusted_issuers(&self) -> impl Iterator<Item = &IssuerProfile> {
        self.inner.issuers.iter().map(|state| &state.profile)
    }

    fn state(&self) -> &IssuerState {
        &self.inner.issuers[self.issuer]
    }

    /// How many verified tokens are cached now (at most the configured capacity).
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.len()
    }

    /// The `kid`s of this handle's issuer currently trusted, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.state().keys.load().keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// Validates and installs a new key set for this handle's issuer,
    /// replacing its old one whole. Tokens cached under a key that left
    /// the set are forgotten. The mesh's own issuer accepts only a set
    /// whose every key is an AuthMesh key; an external issuer's set may
    /// hold keys it has no use for (encryption keys, other algorithms),
    /// which are left out.
    ///
    /// # Errors
    /// [`KeyError`] when the set or a key in it is refused (or, for an
    /// external issuer, no key is usable); the previous keys then stay in force.
    pub fn install_keys(&self, set: &JwkSet) -> Result<(), KeyError> {
        let state = self.state();
        let keys = set.to_verification_keys_for(&state.profile.algorithms, !state.mesh)?;
        self.install(keys);
        Ok(())
    }

    /// Installs an HS256 shared secret as the only key of this handle's
    /// issuer, which must accept HS256 alone.
    ///
    /// # Errors
    /// [`KeyError::Refused`] for a short secret or an issuer that does not
    /// accept HS256.
    pub fn install_shared_secret(&self, secret: &[u8]) -> Result<(), KeyError> {
        if self.state().profile.algorithms != [JwsAlgorithm::HS256] {
            return Err(KeyError::Refused {
                kid: String::new(),
                reason: "this issuer does not accept HS256 alone",
            });
        }
        let key = VerificationKey::hmac_secret("", secret)?;
        self.install(HashMap::from([(String::new(), key)]));
        Ok(())
    }

    fn install(&self, keys: HashMap<String, VerificationKey>) {
        let state = self.state();
        let previous = state.keys.load_full();
        let keys = keys
            .into_iter()
            .map(|(kid, key)| {
                // An unchanged key keeps its serial, so cached tokens stay valid across refreshes.
                let key = match previous.keys.get(&kid) {
                    Some(old) if old.key.same_key(&key) => old.clone(),
                    _ => TrustedKey::new(key),
                };
                (kid, key)
            })
            .collect();
        state.keys.store(Arc::new(KeySet { keys }));
        let current = state.keys.load();
        let key_left = previous
            .keys
            .values()
            .any(|old| !current.trusts(old.serial));
        if key_left {
            // After the new set is stored: a thread that sees the new
            // generation also sees the new keys.
            self.inner.key_generation.fetch_add(1, Ordering::Release);
            // Correctness does not depend on this (hits re-check their key);
            // it just frees entries that can no longer be used.
            self.inner.cache.clear();
        }
        state.keys_loaded.send_replace(true);
        let trusted: usize = self
            .inner
            .issuers
            .iter()
            .map(|state| state.keys.load().keys.len())
            .sum();
        self.inner
            .metrics
            .keys_installed(trusted, self.inner.clock.now());
        // A refresh that changed nothing is not news (it runs every interval).
        let changed = key_left || current.keys.len() != previous.keys.len();
        if changed {
            tracing::info!(issuer = %state.profile.issuer, keys = current.keys.len(), kids = ?self.key_ids(), "verification keys installed");
        } else {
            tracing::debug!(issuer = %state.profile.issuer, keys = current.keys.len(), "verification keys unchanged");
        }
    }

    /// Resolves once a key set has been installed for this handle's issuer
    /// (at once if one already is).
    pub async fn keys_loaded(&self) {
        let mut loaded = self.state().keys_loaded.subscribe();
        // Err only if the sender is gone, which cannot happen while `self` lives.
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Resolves when some call met an unknown `kid` of this handle's issuer
    /// and asked for a refresh. Requests made while nobody waits are kept,
    /// so none is lost.
    pub async fn refresh_requested(&self) {
        self.state().refresh_wanted.notified().await;
    }

    /// Verifies `token` and returns its claims. Never waits on the network:
    /// an unknown `kid` fails at once and asks the background refresh for new keys.
    ///
    /// # Errors
    /// [`AuthError::KeysUnavailable`] when no keys are loaded; another
    /// [`AuthError`] naming the first check the token failed.
    pub fn verify(&self, token: &str) -> Result<VerifiedClaims, AuthError> {
        let claims = self.authenticate(token)?;
        self.check_revocations(&claims)?;
        Ok(claims)
    }

    /// The token's signature, profile and times, from the cache when this
    /// token verified before: everything [`Verifier::verify`] checks but
    /// revocation, which the call path runs as its own step.
    pub(crate) fn authenticate(&self, token: &str) -> Result<VerifiedClaims, AuthError> {
        self.timed(|cache_hit| {
            self.authenticate_recording(token.as_bytes(), |_| Ok(token), cache_hit)
        })
    }

    /// [`Verifier::authenticate`] of the bytes a caller presented after
    /// `Bearer `: `check` (the characters) runs only when this thread has
    /// not verified these very bytes before.
    pub(crate) fn authenticate_presented(
        &self,
        presented: &[u8],
        check: impl FnOnce(&[u8]) -> Result<&str, AuthError>,
    ) -> Result<VerifiedClaims, AuthError> {
        self.timed(|cache_hit| self.authenticate_recording(presented, check, cache_hit))
    }

    /// Runs `authenticate`, recording its outcome and latency when metrics are on.
    fn timed(
        &self,
        authenticate: impl FnOnce(&mut bool) -> Result<VerifiedClaims, AuthError>,
    ) -> Result<VerifiedClaims, AuthError> {
        // Two clock reads per call, only for the latency histogram.
        let started = self
            .inner
            .metrics
            .is_recording()
            .then(std::time::Instant::now);
        let mut cache_hit = false;
        let verified = authenticate(&mut cache_hit);
        if let Some(started) = started {
            self.inner.metrics.verified(cache_hit, started.elapsed());
        }
        verified
    }

    fn authenticate_recording<'t>(
        &self,
        presented: &'t [u8],
        check: impl FnOnce(&'t [u8]) -> Result<&'t str, AuthError>,
        cache_hit: &mut bool,
    ) -> Result<VerifiedClaims, AuthError> {
        let now = self.inner.clock.now();
        // Read before the keys: an entry remembered under it is only as
        // current as the keys loaded after it.
        let generation = self.inner.key_generation.load(Ordering::Acquire);
        let recalled = match recent::recall(self.inner.id, presented) {
            Some(Recalled {
                verified: Some((claims, remembered)),
                ..
            }) if remembered == generation => {
                *cache_hit = true;
                self.check_times(&claims, now)?;
                return Ok(claims);
            }
            recalled => recalled,
        };
        let token = check(presented)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                max: MAX_TOKEN_BYTES,
            }
            .into());
        }
        // A token seen on this thread before is worth a copy of its claims
        // of the thread's own; one seen once (say, one of a thousand callers
        // in turn) is not.
        let (digest, seen_before) = match recalled {
            Some(recalled) => (recalled.digest, true),
            None => {
                let digest = Sha256::digest(token.as_bytes()).into();
                recent::note(self.inner.id, token, digest);
                (digest, false)
            }
        };
        let claims = match self.inner.cache.get(&digest) {
            Some(hit)
                if self.inner.issuers[hit.claims.issuer()]
                    .keys
                    .load()
                    .trusts(hit.key_serial) =>
            {
                *cache_hit = true;
                self.check_times(&hit.claims, now)?;
                hit.claims
            }
            _ => {
                let audience = &self.inner.config.audience;
                let (claims, issuer, key_serial) = self.verify_uncached(token, audience, now)?;
                let claims = VerifiedClaims::new(claims, issuer);
                // Cached whether or not it is revoked: a revoked token stays
                // revoked on every later call anyway, and revocation is
                // checked on each.
                self.inner.cache.insert(
                    digest,
                    CachedToken {
                        claims: claims.clone(),
                        key_serial,
                    },
                );
                claims
            }
        };
        if seen_before {
            return Ok(recent::keep(self.inner.id, token, &claims, generation));
        }
        Ok(claims)
    }

    /// Accepts a one-time token's `jti` once per verifier; other tokens pass.
    /// Call it only for a call that is otherwise allowed, so a denied call
    /// does not use the token up.
    ///
    /// # Errors
    /// [`AuthError::Replayed`] on a second use, [`AuthError::ReplayCacheFull`]
    /// when too many live one-time tokens are remembered already.
    pub fn consume_one_time(&self, claims: &Claims) -> Result<(), AuthError> {
        if !claims.one_time {
            return Ok(());
        }
        let dead_after = claims.exp.saturating_add(self.inner.config.leeway_seconds);
        self.inner
            .replay
            .first_use(&claims.jti, dead_after, self.inner.clock.now())
    }

    /// Enforces `revocations` from now on; returns how many were new. Each is
    /// kept until every token it covers has expired (for a subject cutoff, at
    /// least the cutoff plus this verifier's maximum token lifetime).
    pub fn apply_revocations(&self, revocations: &[Revocation]) -> usize {
        let max_lifetime = self.inner.config.max_lifetime_seconds;
        let entries: Vec<Revocation> = revocations
            .iter()
            .cloned()
            .map(|mut entry| {
                if let RevokedTarget::Subject { issued_before, .. } = &entry.target {
                    entry.expires_at = entry
                        .expires_at
                        .max(issued_before.saturating_add(max_lifetime));
                }
                entry
            })
            .collect();
        let added = self.inner.revocations.apply(&entries, self.forget_before());
        self.inner
            .metrics
            .revocations(added, self.inner.revocations.len());
        added
    }

    /// Forgets revocations whose tokens have all expired; returns how many.
    pub fn prune_revocations(&self) -> usize {
        let dropped = self.inner.revocations.prune(self.forget_before());
        self.inner
            .metrics
            .revocations(0, self.inner.revocations.len());
        dropped
    }

    /// This verifier's metric handles.
    pub(crate) fn metrics(&self) -> &VerifierMetrics {
        &self.inner.metrics
    }

    /// How many revocations are enforced now.
    pub fn revocation_count(&self) -> usize {
        self.inner.revocations.len()
    }

    /// Refuses every token (UNAVAILABLE) until [`Verifier::mark_revocations_synced`]:
    /// called when a revocation watch starts, so a verifier never accepts a
    /// token it has not yet been able to check against the revocation list.
    pub fn require_revocation_sync(&self) {
        if !*self.inner.revocations_synced.borrow() {
            self.inner
                .revocations_pending
                .store(true, Ordering::Release);
        }
    }

    /// Records that the full revocation list has been received once.
    pub fn mark_revocations_synced(&self) {
        self.inner.revocations_synced.send_replace(true);
        self.inner
            .revocations_pending
            .store(false, Ordering::Release);
    }

    /// Resolves once the full revocation list has been received (at once if it was).
    pub async fn revocations_synced(&self) {
        let mut synced = self.inner.revocations_synced.subscribe();
        let _ = synced.wait_for(|synced| *synced).await;
    }

    /// Refuses a revoked token, and every token while the revocation list
    /// has not arrived (a token that verified might still be revoked).
    pub(crate) fn check_revocations(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.inner.revocations_pending.load(Ordering::Acquire) {
            return Err(AuthError::RevocationsUnavailable);
        }
        self.inner.revocations.check(claims)
    }

    /// Whether a token verified earlier still holds: not expired beyond the
    /// leeway and not revoked. Long-lived calls re-check with this.
    ///
    /// # Errors
    /// [`AuthError::Expired`], [`AuthError::Revoked`] or
    /// [`AuthError::RevocationsUnavailable`].
    pub fn still_valid(&self, claims: &Claims) -> Result<(), AuthError> {
        let issuer = self.issuer_of(claims);
        self.check_expiry(issuer, claims, self.inner.clock.now())?;
        self.check_revocations(claims)
    }

    /// The index of the issuer `claims` verified under (the mesh's own
    /// when there is no other, or none matches).
    fn issuer_of(&self, claims: &Claims) -> usize {
        if self.inner.issuers.len() == 1 {
            return 0;
        }
        self.inner
            .issuers
            .iter()
            .position(|state| state.profile.issuer == claims.iss)
            .unwrap_or(0)
    }

    /// Tokens that expired before this, leeway included, fail verification anyway.
    fn forget_before(&self) -> u64 {
        self.inner
            .clock
            .now()
            .saturating_sub(self.inner.config.leeway_seconds)
    }

    /// Checks a verified token's certificate binding against the connection:
    /// a bound token passes only where the client certificate has its
    /// thumbprint. Runs on every call, since one token may arrive on many
    /// connections. `require_bound_tokens` applies to the mesh's own
    /// tokens: an external issuer's user tokens are never bound.
    ///
    /// # Errors
    /// [`AuthError::BindingMismatch`] or [`AuthError::BindingRequired`].
    pub fn check_binding(
        &self,
        claims: &Claims,
        peer: Option<&PeerIdentity>,
    ) -> Result<(), AuthError> {
        match (&claims.cnf, peer) {
            (Some(cnf), Some(peer)) if cnf.x5t_s256 == peer.thumbprint() => Ok(()),
            (Some(_), _) => Err(AuthError::BindingMismatch),
            (None, _) if self.inner.config.require_bound_tokens && self.issuer_of(claims) == 0 => {
                Err(AuthError::BindingRequired)
            }
            (None, _) => Ok(()),
        }
    }

    /// Verifies `token` as a token for `audience` rather than this
    /// verifier's own, bypassing the cache: for a token service checking a
    /// subject token that `audience` (the exchanging workload) presents.
    /// Revocations apply as for any token.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub fn verify_for_audience(&self, token: &str, audience: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge {
                max: MAX_TOKEN_BYTES,
            }
            .into());
        }
        let (claims, _, _) = self.verify_uncached(token, audience, self.inner.clock.now())?;
        self.check_revocations(&claims)?;
        Ok(claims)
    }

    fn verify_uncached(
        &self,
        token: &str,
        audience: &str,
        now: u64,
    ) -> Result<(Claims, usize, u64), AuthError> {
        let parts = split_token(token)?;
        let issuer = self.choose_issuer(&parts)?;
        let state = &self.inner.issuers[issuer];
        let (claims, serial) = if state.mesh {
            self.verify_mesh(state, &parts, audience, now)?
        } else {
            self.verify_external(state, &parts, audience, now)?
        };
        Ok((claims, issuer, serial))
    }

    /// Whose keys to try: the only issuer, or the one the token's `iss`
    /// names exactly. Nothing else of the payload is read before the
    /// signature verifies.
    fn choose_issuer(&self, parts: &TokenParts<'_>) -> Result<usize, AuthError> {
        if self.inner.issuers.len() == 1 {
            return Ok(0);
        }
        let iss = peek_issuer(parts.payload)?;
        self.inner
            .issuers
            .iter()
            .position(|state| state.profile.issuer == iss)
            .ok_or(AuthError::UntrustedIssuer)
    }

    /// The AuthMesh token profile: the strict header, the key its `kid`
    /// names, the strict claims.
    fn verify_mesh(
        &self,
        state: &IssuerState,
        parts: &TokenParts<'_>,
        audience: &str,
        now: u64,
    ) -> Result<(Claims, u64), AuthError> {
        let header = parse_header(parts.header)?;
        let keys = state.keys.load();
        if keys.keys.is_empty() {
            return Err(AuthError::KeysUnavailable);
        }
        let Some(TrustedKey { key, serial }) = keys.keys.get(&header.kid) else {
            state.refresh_wanted.notify_one();
            return Err(AuthError::UnknownKey);
        };
        if JwsAlgorithm::from_name(&header.alg) != Some(key.algorithm) {
            return Err(AuthError::AlgorithmMismatch);
        }
        if !key.verify_signature(parts.signing_input.as_bytes(), parts.signature) {
            return Err(AuthError::BadSignature);
        }
        let claims = parse_claims(parts.payload)?;
        if claims.iss.as_bytes() != self.inner.config.issuer.as_bytes() {
            return Err(AuthError::IssuerMismatch);
        }
        if claims.aud.as_bytes() != audience.as_bytes() {
            return Err(AuthError::AudienceMismatch);
        }
        if claims.sub.is_empty() {
            return Err(TokenError::InvalidClaim("sub").into());
        }
        if claims.jti.is_empty() {
            return Err(TokenError::InvalidClaim("jti").into());
        }
        check_lifetime(&state.profile, &claims, now)?;
        Ok((claims, *serial))
    }

    /// An external issuer's tokens, read per its profile: an accepted
    /// `typ` and algorithm, the key its `kid` names (or its one shared
    /// secret), this service among the audiences, scopes from the
    /// configured claim.
    fn verify_external(
        &self,
        state: &IssuerState,
        parts: &TokenParts<'_>,
        audience: &str,
        now: u64,
    ) -> Result<(Claims, u64), AuthError> {
        let profile = &state.profile;
        let header = parse_external_header(parts.header, &profile.token_types)?;
        let algorithm = JwsAlgorithm::from_name(&header.alg)
            .filter(|alg| profile.algorithms.contains(alg))
            .ok_or(AuthError::AlgorithmMismatch)?;
        let keys = state.keys.load();
        if keys.keys.is_empty() {
            return Err(AuthError::KeysUnavailable);
        }
        let found = if profile.algorithms == [JwsAlgorithm::HS256] {
            // A shared-secret issuer has one key, whatever the token's `kid`.
            keys.keys.values().next()
        } else {
            let kid = header
                .kid
                .as_deref()
                .ok_or(TokenError::MissingHeader("kid"))?;
            keys.keys.get(kid)
        };
        let Some(TrustedKey { key, serial }) = found else {
            state.refresh_wanted.notify_one();
            return Err(AuthError::UnknownKey);
        };
        if key.algorithm != algorithm {
            return Err(AuthError::AlgorithmMismatch);
        }
        if !key.verify_signature(parts.signing_input.as_bytes(), parts.signature) {
            return Err(AuthError::BadSignature);
        }
        let external = parse_external_claims(parts.payload, profile.scope_claim)?;
        let mut claims = external.claims;
        if claims.iss.as_bytes() != profile.issuer.as_bytes() {
            return Err(AuthError::IssuerMismatch);
        }
        if !external.audiences.iter().any(|aud| aud == audience) {
            return Err(AuthError::AudienceMismatch);
        }
        audience.clone_into(&mut claims.aud);
        if claims.sub.is_empty() {
            return Err(TokenError::InvalidClaim("sub").into());
        }
        if profile.require_jti && claims.jti.is_empty() {
            return Err(TokenError::MissingClaim("jti").into());
        }
        check_lifetime(profile, &claims, now)?;
        Ok((claims, *serial))
    }

    /// The check that must run on every call, cached or not.
    fn check_times(&self, claims: &VerifiedClaims, now: u64) -> Result<(), AuthError> {
        self.check_expiry(claims.issuer(), claims, now)
    }

    fn check_expiry(&self, issuer: usize, claims: &Claims, now: u64) -> Result<(), AuthError> {
        let leeway = self.inner.issuers[issuer].profile.leeway_seconds;
        if now > claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

/// `iat`, `nbf`, `exp` and the lifetime against an issuer's leeway and
/// maximum lifetime.
fn check_lifetime(profile: &IssuerProfile, claims: &Claims, now: u64) -> Result<(), AuthError> {
    // Issued after it expires: the issue time is what cannot be right.
    let lifetime = claims
        .exp
        .checked_sub(claims.iat)
        .ok_or(TokenError::InvalidClaim("iat"))?;
    if lifetime > profile.max_lifetime_seconds {
        return Err(AuthError::LifetimeTooLong);
    }
    let leeway = profile.leeway_seconds;
    if claims.iat > now.saturating_add(leeway) {
        return Err(AuthError::IssuedInFuture);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err(AuthError::NotYetValid);
    }
    if now > claims.exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

mod recent;
use recent::Recalled;
