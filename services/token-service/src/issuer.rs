//! Minting: who may get which audience, scopes and lifetime, and the token itself.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use arc_swap::ArcSwap;
use auth_interceptor::{
    Claims, Confirmation, JwkSet, PeerIdentity, SharedClock, SharedPolicy, policy::MintRefusal,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{
    config::{ClientConfig, Config, MAX_TTL_CEILING_SECONDS},
    credentials::{ClientRegistry, RegisteredClient, parse_basic},
    error::{IssueError, StartError},
    keys::KeyStore,
    limiter::AttemptLimiter,
    revocations::RevocationStore,
    store::Freshness,
};

/// The name the token service answers to as a service; never a valid audience.
pub const SELF_AUDIENCE: &str = "token-service";

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    /// Target service.
    pub audience: String,
    /// Requested scopes; empty means all the client may have.
    pub scopes: Vec<String>,
    /// Requested lifetime; `None` means the default.
    pub ttl_seconds: Option<i64>,
    /// A one-time token: verifiers accept it on one call only.
    pub one_time: bool,
}

/// A caller that proved who it is, and how.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The registered client (as registered when it authenticated).
    pub client: Arc<RegisteredClient>,
    /// The token's `sub`: the SPIFFE ID when a certificate proved it, else the client id.
    pub subject: String,
    /// The client certificate's thumbprint, when one was presented: tokens are bound to it.
    pub binding: Option<String>,
}

/// A freshly minted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The signed JWT.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
}

/// The issuer: clients, keys, limits and clock.
#[derive(Debug)]
pub struct Issuer {
    issuer: String,
    audiences: HashSet<String>,
    default_ttl: u64,
    max_ttl: u64,
    /// Every client: the configuration's and those registered at run time.
    clients: ArcSwap<ClientRegistry>,
    /// The configuration's clients, kept to rebuild the registry.
    static_clients: Vec<ClientConfig>,
    limiter: AttemptLimiter,
    keys: KeyStore,
    clock: SharedClock,
    /// Audience → the policy that audience enforces (kept current by a file watch).
    policies: HashMap<String, SharedPolicy>,
    /// Consulted so a token minted right after a subject cutoff is not covered by it.
    revocations: Arc<RevocationStore>,
    /// With a shared store: whether this replica's state is known to be current.
    store_gate: Option<Arc<Freshness>>,
}

impl Issuer {
    /// Builds the issuer and checks the configuration is consistent.
    /// `policies` holds each audience's policy, where the token service knows it.
    ///
    /// # Errors
    /// [`StartError::Config`] naming what is inconsistent.
    pub fn new(
        config: &Config,
        keys: KeyStore,
        clock: SharedClock,
        policies: HashMap<String, SharedPolicy>,
        revocations: Arc<RevocationStore>,
    ) -> Result<Self, StartError> {
        if config.max_ttl_seconds == 0 || config.max_ttl_seconds > MAX_TTL_CEILING_SECONDS {
            return Err(StartError::Config(format!(
                "max_ttl_seconds must be between 1 and {MAX_TTL_CEILING_SECONDS}"
            )));
        }
        if config.default_ttl_seconds == 0 || config.default_ttl_seconds > config.max_ttl_seconds {
            return Err(StartError::Config(
                "default_ttl_seconds must be between 1 and max_ttl_seconds".into(),
            ));
        }
        let audiences: HashSet<String> = config.audiences.iter().cloned().collect();
        if audiences.contains(SELF_AUDIENCE) || audiences.contains(&config.issuer) {
            return Err(StartError::Config(
                "the token service cannot be an audience".into(),
            ));
        }
        for client in &config.clients {
            if let Some(unknown) = client.audiences.keys().find(|a| !audiences.contains(*a)) {
                return Err(StartError::Config(format!(
                    "client {} is allowed audience {unknown}, which is not in `audiences`",
                    client.id
                )));
            }
        }
        if let Some(unknown) = policies.keys().find(|a| !audiences.contains(*a)) {
            return Err(StartError::Config(format!(
                "audience_policies names {unknown}, which is not in `audiences`"
            )));
        }
        if config.require_audience_policies
            && let Some(missing) = audiences.iter().find(|a| !policies.contains_key(*a))
        {
            return Err(StartError::Config(format!(
                "require_audience_policies: audience {missing} has no entry in audience_policies"
            )));
        }
        Ok(Self {
            policies,
            revocations,
            issuer: config.issuer.clone(),
            audiences,
            default_ttl: config.default_ttl_seconds,
            max_ttl: config.max_ttl_seconds,
            clients: ArcSwap::from_pointee(ClientRegistry::new(
                &config.clients,
                config.max_ttl_seconds,
            )?),
            static_clients: config.clients.clone(),
            limiter: AttemptLimiter::new(config.auth_limits, clock.clone()),
            keys,
            clock,
            store_gate: None,
        })
    }

    /// Replaces the workloads registered at run time (the configuration's
    /// clients stay); takes effect on the next call.
    pub fn set_registered(&self, registered: &[ClientConfig]) {
        let next =
            self.clients
                .load()
                .with_registered(&self.static_clients, registered, self.max_ttl);
        self.clients.store(Arc::new(next));
    }

    /// Every client as registered now.
    pub fn registry(&self) -> Arc<ClientRegistry> {
        self.clients.load_full()
    }

    /// Checks a workload to be registered at run time against what this
    /// issuer knows: its audiences, what their policies accept, the
    /// lifetime cap, and the ids already taken.
    ///
    /// # Errors
    /// [`IssueError::InvalidWorkload`] (INVALID_ARGUMENT) or
    /// [`IssueError::WorkloadConflict`] (FAILED_PRECONDITION), saying why.
    pub fn check_registration(&self, workload: &ClientConfig) -> Result<(), IssueError> {
        let invalid = |detail: String| Err(IssueError::InvalidWorkload(detail));
        if let Some(unknown) = workload
            .audiences
            .keys()
            .find(|a| !self.audiences.contains(*a))
        {
            let mut known: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
            known.sort_unstable();
            return invalid(format!(
                "unknown audience {unknown:?}; this token service mints for: {}",
                known.join(", ")
            ));
        }
        if workload
            .max_ttl_seconds
            .is_some_and(|t| t == 0 || t > self.max_ttl)
        {
            return invalid(format!(
                "max_ttl_seconds must be between 1 and {}",
                self.max_ttl
            ));
        }
        let registry = self.clients.load();
        if registry.get(&workload.id).is_some() {
            return Err(IssueError::WorkloadConflict(format!(
                "a workload with id {:?} is already registered",
                workload.id
            )));
        }
        if let Some(spiffe_id) = &workload.spiffe_id
            && let Some(holder) = registry.id_for_spiffe_id(spiffe_id)
        {
            return Err(IssueError::WorkloadConflict(format!(
                "{spiffe_id} is already registered, as {holder:?}"
            )));
        }
        // Each audience's policy must accept every scope from some rule for
        // this workload: the same check every mint makes, made once here.
        let now = self.clock.now();
        for (audience, scopes) in &workload.audiences {
            let Some(policy) = self.policies.get(audience).map(SharedPolicy::current) else {
                continue;
            };
            let claims = Claims {
                iss: self.issuer.clone(),
                sub: workload
                    .spiffe_id
                    .clone()
                    .unwrap_or_else(|| workload.id.clone()),
                aud: audience.clone(),
                exp: now + 1,
                nbf: Some(now),
                iat: now,
                jti: String::new(),
                scope: scopes.join(" "),
                client_id: Some(workload.id.clone()),
                cnf: None,
                one_time: false,
            };
            match policy.admits(&claims) {
                Ok(_) => {}
                Err(MintRefusal::UnusedScopes(unused)) => {
                    return Err(IssueError::WorkloadConflict(format!(
                        "audience {audience}'s policy accepts scope(s) {} from no rule for this workload",
                        unused.join(" ")
                    )));
                }
                Err(MintRefusal::NoRule) => {
                    return Err(IssueError::WorkloadConflict(format!(
                        "audience {audience}'s policy accepts a token of this workload for no method"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Mints only while `gate` says the shared state is current.
    #[must_use]
    pub fn with_store_gate(mut self, gate: Arc<Freshness>) -> Self {
        self.store_gate = Some(gate);
        self
    }

    /// Refuses when this replica cannot know its shared state is current.
    ///
    /// # Errors
    /// [`IssueError::CutOff`] with how long it has been.
    pub fn check_current(&self) -> Result<(), IssueError> {
        match &self.store_gate {
            Some(gate) if !gate.is_fresh() => Err(IssueError::CutOff {
                seconds: gate.stale_for().unwrap_or(0),
            }),
            _ => Ok(()),
        }
    }

    /// The shared store's freshness, when there is a shared store.
    pub fn store_gate(&self) -> Option<&Arc<Freshness>> {
        self.store_gate.as_ref()
    }

    /// The issuer's clock, in Unix seconds.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public keys to publish now.
    pub fn jwks(&self) -> JwkSet {
        self.keys.published()
    }

    /// The signing keys, to reload when the ring changes.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Establishes who the caller is, from its verified client certificate
    /// (`peer`), its `Basic` credentials, or both (which must then agree).
    /// Secret checks are CPU-heavy (argon2): call this off the executor.
    ///
    /// # Errors
    /// [`IssueError::UnknownWorkload`] for a certificate no client is
    /// registered under, [`IssueError::IdentityConflict`] when certificate
    /// and secret name different clients, [`IssueError::TooManyAttempts`]
    /// during a lockout, else the secret check's error.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        peer: Option<&PeerIdentity>,
        source: Option<IpAddr>,
    ) -> Result<Authenticated, IssueError> {
        let workload = peer.and_then(|p| p.spiffe_id().map(|id| (id, p.thumbprint())));
        match (workload, authorization) {
            (Some((spiffe_id, thumbprint)), None) => Ok(Authenticated {
                client: self.clients.load().by_spiffe_id(spiffe_id)?.clone(),
                subject: spiffe_id.to_owned(),
                binding: Some(thumbprint.to_owned()),
            }),
            (Some((spiffe_id, thumbprint)), Some(authorization)) => {
                let client = self.authenticate_secret(authorization, source)?;
                if client.spiffe_id.as_deref() != Some(spiffe_id) {
                    return Err(IssueError::IdentityConflict);
                }
                Ok(Authenticated {
                    client,
                    subject: spiffe_id.to_owned(),
                    binding: Some(thumbprint.to_owned()),
                })
            }
            // mTLS-only clients have no secret hash, so no secret can pass here.
            (None, Some(authorization)) => {
                let client = self.authenticate_secret(authorization, source)?;
                Ok(Authenticated {
                    subject: client.id.clone(),
                    client,
                    binding: None,
                })
            }
            (None, None) => Err(IssueError::MalformedCredentials),
        }
    }

    fn authenticate_secret(
        &self,
        authorization: &str,
        source: Option<IpAddr>,
    ) -> Result<Arc<RegisteredClient>, IssueError> {
        let claimed = parse_basic(authorization).ok().map(|(id, _)| id);
        let attempt = self
            .limiter
            .reserve(claimed.as_deref(), source)
            .ok_or(IssueError::TooManyAttempts)?;
        let outcome = self.clients.load().authenticate(authorization).cloned();
        self.limiter.settle(attempt, outcome.is_ok());
        outcome
    }

    /// Mints a token for an authenticated `client`, never granting more than
    /// its allowlist and never setting `sub` from the request.
    ///
    /// # Errors
    /// [`IssueError`] for a request outside the client's allowlist or the limits.
    pub fn mint(
        &self,
        caller: &Authenticated,
        request: &MintRequest,
    ) -> Result<Minted, IssueError> {
        self.check_current()?;
        let client = &caller.client;
        let max_ttl = client.max_ttl_seconds.min(self.max_ttl);
        let ttl = match request.ttl_seconds {
            None => self.default_ttl.min(max_ttl),
            Some(ttl) => u64::try_from(ttl)
                .ok()
                .filter(|ttl| (1..=max_ttl).contains(ttl))
                .ok_or(IssueError::TtlOutOfRange { max: max_ttl })?,
        };
        let audience = request.audience.as_str();
        if audience == SELF_AUDIENCE || audience == self.issuer {
            return Err(IssueError::SelfAudience);
        }
        if !self.audiences.contains(audience) {
            let mut allowed: Vec<&str> = client.audiences.keys().map(String::as_str).collect();
            allowed.sort_unstable();
            return Err(IssueError::UnknownAudience {
                audience: audience
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect(),
                allowed: if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                },
            });
        }
        let allowed =
            client
                .audiences
                .get(audience)
                .ok_or_else(|| IssueError::AudienceNotAllowed {
                    audience: audience.to_owned(),
                })?;
        let mut granted: BTreeSet<&str> = if request.scopes.is_empty() {
            allowed.iter().map(String::as_str).collect()
        } else {
            let mut granted = BTreeSet::new();
            for scope in &request.scopes {
                if scope.is_empty() || scope.contains(char::is_whitespace) {
                    return Err(IssueError::InvalidScope);
                }
                if !allowed.contains(scope) {
                    return Err(IssueError::ScopeNotAllowed {
                        audience: audience.to_owned(),
                        scope: scope.clone(),
                    });
                }
                granted.insert(scope.as_str());
            }
            granted
        };
        let mut now = self.clock.now();
        // The cutoff is inclusive and in whole seconds: a token minted in the
        // second of a subject revocation, after it, starts one second later
        // so that it is not revoked with the tokens it replaces.
        if let Some(cutoff) = self.revocations.subject_cutoff(&caller.subject)
            && cutoff >= now
        {
            now = cutoff + 1;
        }
        let mut claims = Claims {
            iss: self.issuer.clone(),
            sub: caller.subject.clone(),
            aud: audience.to_owned(),
            exp: now + ttl,
            nbf: Some(now),
            iat: now,
            jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            scope: String::new(),
            client_id: Some(client.id.clone()),
            cnf: caller
                .binding
                .clone()
                .map(|x5t_s256| Confirmation { x5t_s256 }),
            one_time: request.one_time,
        };
        let policy = self.policies.get(audience).map(SharedPolicy::current);
        if let Some(policy) = &policy
            && request.scopes.is_empty()
        {
            // "Everything I may have" narrows to what the target would use.
            let used = policy.scopes_used_for(&claims);
            granted.retain(|scope| used.contains(scope));
        }
        claims.scope = granted.into_iter().collect::<Vec<_>>().join(" ");
        if let Some(policy) = &policy {
            policy.admits(&claims).map_err(|refusal| match refusal {
                MintRefusal::UnusedScopes(scopes) => IssueError::ScopeNotAccepted {
                    audience: audience.to_owned(),
                    scopes: scopes.join(" "),
                },
                MintRefusal::NoRule => IssueError::PolicyRefused {
                    audience: audience.to_owned(),
                },
            })?;
        }
        let token = self
            .keys
            .signing()
            .ok_or_else(|| {
                if self.keys.awaiting_publication() {
                    IssueError::KeyNotYetPublished
                } else {
                    IssueError::Signing
                }
            })?
            .sign(&claims)
            .map_err(|_| IssueError::Signing)?;
        Ok(Minted { token, claims })
    }

    /// Signs a token with the active key and verifies it through the same
    /// code every verifier runs, before the issuer serves anything.
    ///
    /// # Errors
    /// [`StartError::SelfTest`] when the round trip fails.
    pub fn self_test(&self) -> Result<(), StartError> {
        let key = self
            .keys
            .local_signing()
            .ok_or_else(|| StartError::Key("no key can sign now: nothing to self-test".into()))?;
        authmesh_signing::check_round_trip(&key).map_err(StartError::SelfTest)
    }
}
