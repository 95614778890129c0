//! Per-method authorization: a policy of named rules, from code or a TOML
//! file, evaluated on the exact gRPC path after the token verified.
//!
//! - Rules match exact methods (`/pkg.Service/Method`) or a whole service
//!   (`/pkg.Service/*`), callers by exact `sub` (SPIFFE ID or client id) or a
//!   prefix (`spiffe://authmesh.local/*`), required scopes, and claim conditions.
//! - Delegation: a rule can require or forbid an actor (a token minted by
//!   token exchange, whose `sub` is a user and whose `act` names the
//!   workload acting for them), match the acting workload (`actors`),
//!   require the user to come from given issuers (`subject_issuers`), and
//!   cap the chain (`max_chain_depth`).
//! - Deny rules are evaluated before allow rules; a method no rule allows is
//!   denied. Only listed `public` methods (health, reflection) skip
//!   authentication altogether.
//! - A rule marked `dry_run` is evaluated, never decides, and its
//!   would-allow or would-deny comes back in the [`Evaluation`] (the auth
//!   layer logs and counts it).
//!
//! ```toml
//! public = ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]
//!
//! [[rule]]
//! name = "no-demo-writes"
//! effect = "deny"
//! methods = ["/demo.inventory.v1.Inventory/Reserve"]
//! callers = ["spiffe://authmesh.local/demo-cli"]
//!
//! [[rule]]
//! name = "reserve"
//! methods = ["/demo.inventory.v1.Inventory/Reserve"]
//! callers = ["spiffe://authmesh.local/*"]
//! actor = "forbidden"
//! scopes = ["inventory.reserve"]
//!
//! [[rule]]
//! name = "users-reserve-through-orders"
//! methods = ["/demo.inventory.v1.Inventory/Reserve"]
//! actors = ["spiffe://authmesh.local/orders"]
//! max_chain_depth = 1
//! scopes = ["inventory.reserve"]
//! ```

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use serde::Deserialize;

use crate::{
    error::AuthError,
    token::{Actor, Claims},
};

/// The gRPC health paths.
pub const HEALTH_PATHS: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The gRPC reflection paths (v1 and v1alpha).
pub const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML, or not the policy format.
    #[error("policy does not parse: {0}")]
    Parse(String),
    /// A rule is malformed.
    #[error("rule {rule:?}: {detail}")]
    Rule {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        detail: String,
    },
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// Allows matching calls (the default).
    #[default]
    Allow,
    /// Denies matching calls, before any allow rule is considered.
    Deny,
}

/// Whether a rule applies to tokens minted by token exchange (with an actor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorCondition {
    /// Tokens with or without an actor (the default).
    #[default]
    Any,
    /// Only tokens of a workload acting for a user.
    Required,
    /// Only tokens of a workload for itself.
    Forbidden,
}

/// One rule as written in a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    effect: Effect,
    methods: Vec<String>,
    #[serde(default)]
    callers: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    #[serde(default)]
    actor: ActorCondition,
    #[serde(default)]
    actors: Vec<String>,
    #[serde(default)]
    subject_issuers: Vec<String>,
    #[serde(default)]
    max_chain_depth: Option<usize>,
    #[serde(default)]
    dry_run: bool,
}

/// A policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    public: Vec<String>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(exact) => value == exact,
            Pattern::Prefix(prefix) => value.starts_with(prefix.as_str()),
        }
    }

    /// Whether every method `other` matches, this matches too.
    #[cfg(feature = "mint-analysis")]
    fn includes(&self, other: &Pattern) -> bool {
        match (self, other) {
            (_, Pattern::Exact(method)) => self.matches(method),
            (Pattern::Prefix(mine), Pattern::Prefix(theirs)) => theirs.starts_with(mine.as_str()),
            (Pattern::Exact(_), Pattern::Prefix(_)) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    // Shared, so an allowed call names its rule without copying the string.
    name: Arc<str>,
    effect: Effect,
    methods: Vec<Pattern>,
    callers: Vec<Pattern>,
    scopes: Vec<String>,
    claims: BTreeMap<String, String>,
    delegation: Delegation,
    dry_run: bool,
}

/// A rule's conditions on delegation; the default holds for every token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Delegation {
    actor: ActorCondition,
    /// The acting workload (the outermost `act`), when given.
    actors: Vec<Pattern>,
    /// The user's issuer: `subject_issuer`, or `iss` for a token an
    /// external issuer gave the caller directly.
    subject_issuers: Vec<String>,
    max_chain_depth: Option<usize>,
}

impl Delegation {
    fn holds(&self, claims: &Claims) -> bool {
        // The common case, a policy without delegation conditions: nothing to walk.
        if *self == Self::default() {
            return true;
        }
        let depth = claims.act.as_ref().map_or(0, Actor::depth);
        let actor_ok = match self.actor {
            ActorCondition::Any => true,
            ActorCondition::Required => depth > 0,
            ActorCondition::Forbidden => depth == 0,
        };
        let actors_ok = self.actors.is_empty()
            || claims
                .act
                .as_ref()
                .is_some_and(|act| self.actors.iter().any(|p| p.matches(&act.sub)));
        let user_issuer = claims.subject_issuer.as_deref().unwrap_or(&claims.iss);
        let issuer_ok = self.subject_issuers.is_empty()
            || self.subject_issuers.iter().any(|i| i == user_issuer);
        let depth_ok = self.max_chain_depth.is_none_or(|max| depth <= max);
        actor_ok && actors_ok && issuer_ok && depth_ok
    }
}

impl Rule {
    fn covers(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.matches(method))
    }

    /// Whether the caller and claim conditions hold (scopes are checked apart,
    /// so a denial can name what is missing).
    fn applies_to(&self, claims: &Claims) -> bool {
        let caller_ok =
            self.callers.is_empty() || self.callers.iter().any(|c| c.matches(&claims.sub));
        caller_ok
            && self
                .claims
                .iter()
                .all(|(name, value)| claim_equals(claims, name, value))
            && self.delegation.holds(claims)
    }

    /// Whether the token holds every scope the rule requires (no allocation:
    /// this runs on every call).
    fn scopes_held(&self, claims: &Claims) -> bool {
        self.scopes.iter().all(|scope| claims.has_scope(scope))
    }

    fn missing_scopes<'a>(&'a self, claims: &Claims) -> Vec<&'a str> {
        self.scopes
            .iter()
            .map(String::as_str)
            .filter(|scope| !claims.has_scope(scope))
            .collect()
    }
}

/// Claim conditions compare the string claims a token carries.
fn claim_equals(claims: &Claims, name: &str, value: &str) -> bool {
    match name {
        "sub" => claims.sub == value,
        "client_id" => claims.client_id.as_deref() == Some(value),
        "iss" => claims.iss == value,
        "aud" => claims.aud == value,
        _ => false,
    }
}

/// The claims a rule's `claims` table may test.
const CLAIM_CONDITIONS: [&str; 4] = ["sub", "client_id", "iss", "aud"];

fn method_pattern(rule: &str, text: &str) -> Result<Pattern, PolicyError> {
    let invalid = |detail: &str| PolicyError::Rule {
        rule: rule.to_owned(),
        detail: format!("method {text:?}: {detail}"),
    };
    let rest = text
        .strip_prefix('/')
        .ok_or_else(|| invalid("must start with '/'"))?;
    let (service, method) = rest
        .split_once('/')
        .ok_or_else(|| invalid("must be /package.Service/Method or /package.Service/*"))?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return Err(invalid(
            "must be /package.Service/Method or /package.Service/*",
        ));
    }
    if method == "*" {
        return Ok(Pattern::Prefix(format!("/{service}/")));
    }
    if method.contains('*') || service.contains('*') {
        return Err(invalid("'*' may only stand for the whole method name"));
    }
    Ok(Pattern::Exact(text.to_owned()))
}

fn caller_pattern(rule: &str, text: &str) -> Result<Pattern, PolicyError> {
    match text.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
            Ok(Pattern::Prefix(prefix.to_owned()))
        }
        Some(_) => Err(PolicyError::Rule {
            rule: rule.to_owned(),
            detail: format!(
                "caller {text:?}: '*' only as a trailing path segment, e.g. spiffe://authmesh.local/*"
            ),
        }),
        None if text.is_empty() => Err(PolicyError::Rule {
            rule: rule.to_owned(),
            detail: "empty caller".into(),
        }),
        None => Ok(Pattern::Exact(text.to_owned())),
    }
}

/// A method is allowed by this rule of the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed<'policy> {
    /// The allowing rule's name.
    pub rule: &'policy str,
}

/// The authorization policy of one service. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodPolicy {
    public: HashSet<String, FastHash>,
    rules: Vec<Rule>,
    index: RuleIndex,
}

/// Which rules can cover a method, so a call looks at those alone instead
/// of scanning every rule: rule positions (ascending, the policy's order) by
/// exact method and by `/package.Service/` for whole-service rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RuleIndex {
    by_method: HashMap<String, Vec<usize>, FastHash>,
    by_service: HashMap<String, Vec<usize>, FastHash>,
}

/// The hasher of the maps every call looks its method up in: SipHash was a
/// visible share of the call path. The keys come from the policy, so a
/// caller cannot fill a map with colliding entries.
type FastHash = ahash::RandomState;

impl RuleIndex {
    fn new(rules: &[Rule]) -> Self {
        let mut index = Self::default();
        for (position, rule) in rules.iter().enumerate() {
            for pattern in &rule.methods {
                let (map, key) = match pattern {
                    Pattern::Exact(method) => (&mut index.by_method, method),
                    Pattern::Prefix(service) => (&mut index.by_service, service),
                };
                let positions = map.entry(key.clone()).or_default();
                // A rule naming one method twice is listed once.
                if positions.last() != Some(&position) {
                    positions.push(position);
                }
            }
        }
        index
    }

    /// The rules that cover `path`, in policy order.
    /// The positions of the rules that can cover `path`.
    fn covering(&self, path: &str) -> Covering<'_> {
        let exact = self.by_method.get(path).map(Vec::as_slice).unwrap_or(&[]);
        // Most policies name methods one by one: no service to look up then.
        let whole_service = (!self.by_service.is_empty())
            .then(|| service_prefix(path))
            .flatten()
            .and_then(|service| self.by_service.get(service))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        Covering {
            exact,
            whole_service,
        }
    }
}

/// The rules that can cover one method, as positions in the policy.
#[derive(Clone, Copy)]
struct Covering<'a> {
    exact: &'a [usize],
    whole_service: &'a [usize],
}

impl<'a> Covering<'a> {
    /// Those rules of `rules`, in the policy's order, each once.
    fn rules(self, rules: &'a [Rule]) -> impl Iterator<Item = &'a Rule> {
        MergeAscending {
            left: self.exact,
            right: self.whole_service,
        }
        .filter_map(|position| rules.get(position))
    }
}

/// `/package.Service/` of `/package.Service/Method`.
fn service_prefix(path: &str) -> Option<&str> {
    let end = path.get(1..)?.find('/')? + 2;
    path.get(..end)
}

/// The union of two ascending lists of positions, ascending, each once.
struct MergeAscending<'a> {
    left: &'a [usize],
    right: &'a [usize],
}

impl Iterator for MergeAscending<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let next = match (self.left.first(), self.right.first()) {
            (Some(&l), Some(&r)) => l.min(r),
            (Some(&l), None) => l,
            (None, Some(&r)) => r,
            (None, None) => return None,
        };
        if self.left.first() == Some(&next) {
            self.left = &self.left[1..];
        }
        if self.right.first() == Some(&next) {
            self.right = &self.right[1..];
        }
        Some(next)
    }
}

impl MethodPolicy {
    /// An empty policy: every method denied, only the health paths public.
    pub fn new() -> Self {
        Self {
            public: HEALTH_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            rules: Vec::new(),
            index: RuleIndex::default(),
        }
    }

    /// Parses a policy file. Health paths are always public.
    ///
    /// # Errors
    /// [`PolicyError`] naming the first problem; nothing is partially applied.
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Parse(e.message().to_owned()))?;
        Self::from_file(file)
    }

    /// Builds a policy from its file form, whatever format it was read from.
    #[cfg_attr(not(feature = "toml"), allow(dead_code))]
    fn from_file(file: PolicyFile) -> Result<Self, PolicyError> {
        let mut policy = Self::new();
        for path in file.public {
            let allowed =
                HEALTH_PATHS.contains(&path.as_str()) || REFLECTION_PATHS.contains(&path.as_str());
            if !allowed {
                return Err(PolicyError::Rule {
                    rule: "public".into(),
                    detail: format!("{path:?}: only health and reflection methods may be public"),
                });
            }
            policy.public.insert(path);
        }
        let mut names = HashSet::new();
        for rule in file.rules {
            let name = rule.name.clone();
            let invalid = |detail: &str| PolicyError::Rule {
                rule: name.clone(),
                detail: detail.to_owned(),
            };
            if name.is_empty() || !names.insert(name.clone()) {
                return Err(invalid("rule names must be present and unique"));
            }
            if rule.methods.is_empty() {
                return Err(invalid("a rule needs at least one method"));
            }
            if rule
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
            {
                return Err(invalid(
                    "scopes must be non-empty and contain no whitespace",
                ));
            }
            if let Some(unknown) = rule
                .claims
                .keys()
                .find(|k| !CLAIM_CONDITIONS.contains(&k.as_str()))
            {
                return Err(invalid(&format!(
                    "claim condition on {unknown:?}; allowed: {CLAIM_CONDITIONS:?}"
                )));
            }
            let forbidden = rule.actor == ActorCondition::Forbidden;
            if forbidden && (!rule.actors.is_empty() || rule.max_chain_depth.is_some()) {
                return Err(invalid(
                    "actor = \"forbidden\" leaves nothing for actors or max_chain_depth to match",
                ));
            }
            if rule.max_chain_depth == Some(0) {
                return Err(invalid(
                    "max_chain_depth must be at least 1 (forbid actors with actor = \"forbidden\")",
                ));
            }
            if rule.subject_issuers.iter().any(String::is_empty) {
                return Err(invalid("empty subject issuer"));
            }
            let delegation = Delegation {
                actor: rule.actor,
                actors: rule
                    .actors
                    .iter()
                    .map(|a| caller_pattern(&name, a))
                    .collect::<Result<_, _>>()?,
                subject_issuers: rule.subject_issuers,
                max_chain_depth: rule.max_chain_depth,
            };
            policy.rules.push(Rule {
                delegation,
                methods: rule
                    .methods
                    .iter()
                    .map(|m| method_pattern(&name, m))
                    .collect::<Result<_, _>>()?,
                callers: rule
                    .callers
                    .iter()
                    .map(|c| caller_pattern(&name, c))
                    .collect::<Result<_, _>>()?,
                name: rule.name.into(),
                effect: rule.effect,
                scopes: rule.scopes,
                claims: rule.claims,
                dry_run: rule.dry_run,
            });
        }
        policy.index = RuleIndex::new(&policy.rules);
        Ok(policy)
    }

    /// Allows `path` (e.g. `/demo.inventory.v1.Inventory/Reserve`) to any
    /// caller whose token holds every scope in `scopes`; the rule is named after the path.
    pub fn require<I, S>(mut self, path: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let path = path.into();
        self.rules.push(Rule {
            name: path.as_str().into(),
            effect: Effect::Allow,
            methods: vec![Pattern::Exact(path)],
            callers: Vec::new(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            claims: BTreeMap::new(),
            delegation: Delegation::default(),
            dry_run: false,
        });
        self.index = RuleIndex::new(&self.rules);
        self
    }

    /// Makes server reflection reachable without a token (what grpcurl users expect in dev).
    pub fn public_reflection(mut self, public: bool) -> Self {
        for path in REFLECTION_PATHS {
            if public {
                self.public.insert(path.to_owned());
            } else {
                self.public.remove(path);
            }
        }
        self
    }

    /// Whether `path` skips authentication altogether.
    pub fn is_public(&self, path: &str) -> bool {
        self.public.contains(path)
    }

    /// The methods in `methods` that no rule covers and that are not public:
    /// with default deny they could never be called.
    pub fn uncovered<'a>(&self, methods: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        methods
            .into_iter()
            .filter(|m| !self.is_public(m) && !self.rules.iter().any(|r| !r.dry_run && r.covers(m)))
            .collect()
    }

    /// Decides whether verified `claims` may call `path`; what dry-run rules
    /// would have decided is left out (see [`MethodPolicy::evaluate`]).
    ///
    /// # Errors
    /// [`AuthError::RuleDenied`] for a matching deny rule, [`AuthError::MissingScopes`]
    /// when an allow rule for the method applies but scopes are missing,
    /// [`AuthError::NoRule`] when no allow rule applies.
    pub fn authorize(&self, path: &str, claims: &Claims) -> Result<Allowed<'_>, AuthError> {
        self.evaluate(path, claims).result
    }

    /// Decides whether verified `claims` may call `path`, and returns what
    /// every dry-run rule met on the way would have decided. Changes nothing
    /// and logs nothing: recording the dry-run outcomes is the caller's
    /// (the auth layer logs and counts them; `authmesh explain` prints them).
    pub fn evaluate(&self, path: &str, claims: &Claims) -> Evaluation<'_> {
        let mut dry_run = Vec::new();
        let result = self.decide_recording(path, claims, &mut dry_run);
        Evaluation { result, dry_run }
    }

    fn decide_recording(
        &self,
        path: &str,
        claims: &Claims,
        dry_run: &mut Vec<DryRunOutcome>,
    ) -> Result<Allowed<'_>, AuthError> {
        // Looked up once: the deny pass and the allow pass walk the same rules.
        let covering = self.index.covering(path);
        let covering = || covering.rules(&self.rules);
        let seen = |rule: &Rule, would: DryRunEffect| DryRunOutcome {
            rule: rule.name.clone(),
            would,
        };
        for rule in covering().filter(|r| r.effect == Effect::Deny) {
            if rule.applies_to(claims) && rule.scopes_held(claims) {
                if rule.dry_run {
                    dry_run.push(seen(rule, DryRunEffect::WouldDeny));
                    continue;
                }
                return Err(AuthError::RuleDenied {
                    method: path.to_owned(),
                    rule: rule.name.to_string(),
                });
            }
        }
        let mut closest: Option<(&Rule, Vec<&str>)> = None;
        for rule in covering().filter(|r| r.effect == Effect::Allow) {
            if !rule.applies_to(claims) {
                continue;
            }
            if rule.scopes_held(claims) {
                if rule.dry_run {
                    dry_run.push(seen(rule, DryRunEffect::WouldAllow));
                    continue;
                }
                return Ok(Allowed { rule: &rule.name });
            }
            let missing = rule.missing_scopes(claims);
            if !rule.dry_run
                && closest
                    .as_ref()
                    .is_none_or(|(_, m)| missing.len() < m.len())
            {
                closest = Some((rule, missing));
            }
        }
        match closest {
            Some((rule, missing)) => Err(AuthError::MissingScopes {
                method: path.to_owned(),
                missing: missing.join(" "),
                rule: rule.name.to_string(),
            }),
            None => Err(AuthError::NoRule {
                method: path.to_owned(),
            }),
        }
    }
}

/// What a policy decided on one call, with what its dry-run rules would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation<'policy> {
    /// The decision of the rules in force.
    pub result: Result<Allowed<'policy>, AuthError>,
    /// Each dry-run rule that would have decided the call, in evaluation
    /// order. Empty (and unallocated) when the policy has none for the method.
    pub dry_run: Vec<DryRunOutcome>,
}

/// What one dry-run rule would have decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunOutcome {
    /// The rule's name.
    pub rule: Arc<str>,
    /// Its effect, had it been in force.
    pub would: DryRunEffect,
}

/// A dry-run rule's effect, had it been in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRunEffect {
    /// An allow rule whose caller and scopes matched.
    WouldAllow,
    /// A deny rule whose caller and scopes matched.
    WouldDeny,
}

impl DryRunEffect {
    /// `would-allow` or `would-deny`, as logged and as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DryRunEffect::WouldAllow => "would-allow",
            DryRunEffect::WouldDeny => "would-deny",
        }
    }
}

/// The policy in force, replaceable while the server runs (hot reload):
/// each call reads whichever policy is current, without a lock.
#[derive(Debug, Clone)]
pub struct SharedPolicy(std::sync::Arc<arc_swap::ArcSwap<MethodPolicy>>);

impl SharedPolicy {
    /// Starts with `policy`.
    pub fn new(policy: MethodPolicy) -> Self {
        Self(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(policy)))
    }

    /// The policy in force now.
    pub fn current(&self) -> std::sync::Arc<MethodPolicy> {
        self.0.load_full()
    }

    /// The policy in force now, borrowed for one call: unlike
    /// [`SharedPolicy::current`] it does not touch the shared reference count,
    /// which every core would otherwise write on every call.
    pub(crate) fn load(&self) -> arc_swap::Guard<std::sync::Arc<MethodPolicy>> {
        self.0.load()
    }

    /// Puts `policy` in force for every call that starts from now on.
    pub fn replace(&self, policy: MethodPolicy) {
        self.0.store(std::sync::Arc::new(policy));
    }
}

impl From<MethodPolicy> for SharedPolicy {
    fn from(policy: MethodPolicy) -> Self {
        Self::new(policy)
    }
}

#[cfg(feature = "mint-analysis")]
mod mint;
#[cfg(feature = "mint-analysis")]
pub use mint::MintRefusal;

#[cfg(test)]
#[cfg(feature = "toml")]
mod tests;
