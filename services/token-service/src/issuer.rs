//! Minting: who may get which audience, scopes and lifetime, and the token itself.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use arc_swap::ArcSwap;
use auth_interceptor::{
    Claims, Confirmation, JwkSet, PeerIdentity, SharedClock, SharedPolicy, policy::MintRefusal,
    token::Actor,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{
    config::{ClientConfig, Config, MAX_TTL_CEILING_SECONDS},
    credentials::{ClientRegistry, RegisteredClient, parse_basic},
    error::{IssueError, StartError},
    exchange::{ACCESS_TOKEN_TYPE, Exchange, JWT_TOKEN_TYPE},
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

/// What an exchanging workload asks for (`ExchangeToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The user's token.
    pub subject_token: String,
    /// Its RFC 8693 type; empty means an access token.
    pub subject_token_type: String,
    /// Target service.
    pub audience: String,
    /// Requested scopes; empty means all the rules allow.
    pub scopes: Vec<String>,
    /// Requested lifetime; `None` means the default.
    pub ttl_seconds: Option<i64>,
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
    /// Token exchange rules, when any are configured.
    exchange: Option<Arc<Exchange>>,
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
            exchange: None,
        })
    }

    /// Exchanges tokens under `exchange`'s rules.
    #[must_use]
    pub fn with_exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = Some(Arc::new(exchange));
        self
    }

    /// The exchange rules, when any are configured.
    pub fn exchange(&self) -> Option<&Arc<Exchange>> {
        self.exchange.as_ref()
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
                act: None,
                subject_issuer: None,
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
        let ttl = self.ttl_for(caller, request.ttl_seconds)?;
        let audience = request.audience.as_str();
        self.check_audience(caller, audience)?;
        let allowed =
            client
                .audiences
                .get(audience)
                .ok_or_else(|| IssueError::AudienceNotAllowed {
                    audience: audience.to_owned(),
                })?;
        let granted = grant(
            allowed.iter().map(String::as_str),
            &request.scopes,
            audience,
        )?;
        let now = self.issue_time(&caller.subject);
        let claims = Claims {
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
            act: None,
            subject_issuer: None,
        };
        self.sign(claims, granted, request.scopes.is_empty())
    }

    /// Exchanges a user's token presented by an authenticated workload for
    /// a token for one audience on that user's behalf, under the exchange
    /// rules: `sub` is the user, `act` the caller (and whoever acted
    /// before), scopes at most what the matching rules allow, `exp` no
    /// later than the subject token's, bound to the caller's certificate.
    ///
    /// # Errors
    /// [`IssueError::SubjectTokenRefused`], [`IssueError::ExchangeNotAllowed`],
    /// [`IssueError::DelegationTooDeep`], or a refusal minting makes too.
    pub fn exchange_token(
        &self,
        caller: &Authenticated,
        request: &ExchangeRequest,
    ) -> Result<Minted, IssueError> {
        self.check_current()?;
        let actor = caller.client.id.as_str();
        let exchange = self.exchange.as_ref().ok_or_else(|| {
            IssueError::ExchangeNotAllowed("this token service has no exchange rules".into())
        })?;
        if ![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE, ""].contains(&request.subject_token_type.as_str()) {
            return Err(IssueError::InvalidExchange(
                "subject_token_type must be an access token or a JWT (RFC 8693)",
            ));
        }
        let ttl = self.ttl_for(caller, request.ttl_seconds)?;
        let audience = request.audience.as_str();
        self.check_audience(caller, audience)?;
        if audience == actor {
            return Err(IssueError::ExchangeNotAllowed(
                "a workload cannot exchange a token for itself".into(),
            ));
        }
        if exchange.rules_for(actor).next().is_none() {
            return Err(IssueError::ExchangeNotAllowed(format!(
                "workload {actor} may not exchange tokens"
            )));
        }
        let subject = exchange.verify_subject(
            &request.subject_token,
            actor,
            self.jwks(),
            &self.revocations,
        )?;
        // The user's issuer: the subject token's own, or, for a token this
        // service minted by an earlier exchange, the one it carries.
        let subject_issuer = if subject.iss == self.issuer {
            match (&subject.act, &subject.subject_issuer) {
                (Some(_), Some(issuer)) => issuer.clone(),
                _ => {
                    return Err(IssueError::SubjectTokenRefused {
                        cause: "SUBJECT_NOT_A_USER",
                        detail: "a token of this token service that carries no user".into(),
                    });
                }
            }
        } else {
            subject.iss.clone()
        };
        let rules: Vec<_> = exchange
            .rules_for(actor)
            .filter(|rule| {
                rule.audience == audience
                    && rule.subject_issuers.contains(&subject.iss)
                    && rule.subject_scopes.iter().all(|s| subject.has_scope(s))
            })
            .collect();
        if rules.is_empty() {
            return Err(IssueError::ExchangeNotAllowed(format!(
                "no exchange rule lets {actor} exchange this token (issuer {}) for audience {audience}",
                subject.iss
            )));
        }
        let actor_chain = Actor {
            sub: caller.subject.clone(),
            act: subject.act.clone().map(Box::new),
        };
        let depth = actor_chain.depth();
        let max = rules
            .iter()
            .map(|rule| rule.max_chain_depth)
            .max()
            .unwrap_or(1);
        if depth > max {
            return Err(IssueError::DelegationTooDeep { depth, max });
        }
        let granted = grant(
            rules
                .iter()
                .flat_map(|rule| rule.scopes.iter().map(String::as_str)),
            &request.scopes,
            audience,
        )?;
        let now = self.issue_time(&subject.sub);
        if subject.exp <= now {
            return Err(IssueError::SubjectTokenRefused {
                cause: "TOKEN_EXPIRED",
                detail: "the subject token expires now".into(),
            });
        }
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.sub.clone(),
            aud: audience.to_owned(),
            exp: (now + ttl).min(subject.exp),
            nbf: Some(now),
            iat: now,
            jti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
            scope: String::new(),
            client_id: Some(actor.to_owned()),
            cnf: caller
                .binding
                .clone()
                .map(|x5t_s256| Confirmation { x5t_s256 }),
            one_time: false,
            act: Some(actor_chain),
            subject_issuer: Some(subject_issuer),
        };
        self.sign(claims, granted, request.scopes.is_empty())
    }

    /// The lifetime a caller gets: the one asked for, or the default, within its cap.
    fn ttl_for(&self, caller: &Authenticated, requested: Option<i64>) -> Result<u64, IssueError> {
        let max_ttl = caller.client.max_ttl_seconds.min(self.max_ttl);
        match requested {
            None => Ok(self.default_ttl.min(max_ttl)),
            Some(ttl) => u64::try_from(ttl)
                .ok()
                .filter(|ttl| (1..=max_ttl).contains(ttl))
                .ok_or(IssueError::TtlOutOfRange { max: max_ttl }),
        }
    }

    /// Refuses the token service itself and audiences it does not mint for.
    fn check_audience(&self, caller: &Authenticated, audience: &str) -> Result<(), IssueError> {
        if audience == SELF_AUDIENCE || audience == self.issuer {
            return Err(IssueError::SelfAudience);
        }
        if !self.audiences.contains(audience) {
            let mut allowed: Vec<&str> =
                caller.client.audiences.keys().map(String::as_str).collect();
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
        Ok(())
    }

    /// Now, or just after a subject cutoff of `subject` made in this very
    /// second. The cutoff is inclusive and in whole seconds: a token minted
    /// in the second of a subject revocation, after it, starts one second
    /// later so that it is not revoked with the tokens it replaces.
    fn issue_time(&self, subject: &str) -> u64 {
        let now = self.clock.now();
        match self.revocations.subject_cutoff(subject) {
            Some(cutoff) if cutoff >= now => cutoff + 1,
            _ => now,
        }
    }

    /// Settles the scopes of `claims` (all of `granted`, or, when the caller
    /// named none, those the audience's policy would use), checks the
    /// audience's policy accepts the token, and signs it.
    fn sign(
        &self,
        mut claims: Claims,
        mut granted: BTreeSet<&str>,
        all_allowed: bool,
    ) -> Result<Minted, IssueError> {
        let audience = claims.aud.clone();
        let policy = self.policies.get(&audience).map(SharedPolicy::current);
        if let Some(policy) = &policy
            && all_allowed
        {
            // "Everything I may have" narrows to what the target would use.
            let used = policy.scopes_used_for(&claims);
            granted.retain(|scope| used.contains(scope));
        }
        claims.scope = granted.into_iter().collect::<Vec<_>>().join(" ");
        if let Some(policy) = &policy {
            policy.admits(&claims).map_err(|refusal| match refusal {
                MintRefusal::UnusedScopes(scopes) => IssueError::ScopeNotAccepted {
                    audience: audience.clone(),
                    scopes: scopes.join(" "),
                },
                MintRefusal::NoRule => IssueError::PolicyRefused {
                    audience: audience.clone(),
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

/// The scopes granted: every one of `allowed` when `requested` is empty,
/// else `requested`, each of which must be a word in `allowed`.
fn grant<'a>(
    allowed: impl Iterator<Item = &'a str> + Clone,
    requested: &'a [String],
    audience: &str,
) -> Result<BTreeSet<&'a str>, IssueError> {
    if requested.is_empty() {
        return Ok(allowed.collect());
    }
    let mut granted = BTreeSet::new();
    for scope in requested {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            return Err(IssueError::InvalidScope);
        }
        if !allowed.clone().any(|allowed| allowed == scope) {
            return Err(IssueError::ScopeNotAllowed {
                audience: audience.to_owned(),
                scope: scope.clone(),
            });
        }
        granted.insert(scope.as_str());
    }
    Ok(granted)
}
