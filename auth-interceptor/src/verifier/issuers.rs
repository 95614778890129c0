//! How the tokens of one trusted external issuer are read and checked.

use crate::{
    token::{ACCESS_TOKEN_TYPE, JwsAlgorithm, ScopeClaim},
    verifier::{ConfigError, MAX_LEEWAY_SECONDS},
};

/// The token profile of one trusted issuer. The mesh's own issuer always
/// has the strict AuthMesh profile (`typ` `at+jwt`, `jti` required,
/// EdDSA or ES256, `aud` exactly this service); an external identity
/// provider gets the profile its tokens need.
///
/// ```no_run
/// use auth_interceptor::{IssuerProfile, KeySource, ScopeClaim, Verifier, VerifierConfig};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let auth0 = "https://example.eu.auth0.com/";
/// let verifier = Verifier::new(
///     VerifierConfig::new("https://localhost:50051", "inventory")
///         .trust(IssuerProfile::external(auth0).with_scope_claim(ScopeClaim::Permissions)),
/// )?;
/// // The mesh's keys go to `verifier` itself; the provider's to a handle
/// // on it (with the `jwks-url` feature, `KeySource::OidcDiscovery`).
/// let provider = verifier.for_issuer(auth0).expect("trusted above");
/// let _refresh = KeySource::file("auth0-jwks.json").spawn(&provider, Default::default())?;
/// provider.keys_loaded().await;
/// // The same verifier (any handle) now checks mesh and Auth0 tokens alike.
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerProfile {
    /// The exact `iss`, byte for byte (a trailing slash or a case
    /// difference is another issuer).
    pub issuer: String,
    /// Accepted algorithms. HS256 only alone ([`IssuerProfile::shared_secret`]).
    pub algorithms: Vec<JwsAlgorithm>,
    /// Accepted `typ` header values (a token without `typ` is refused).
    pub token_types: Vec<String>,
    /// Refuse tokens without a `jti` (which can then be revoked one by one).
    pub require_jti: bool,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, at most 60 s.
    pub leeway_seconds: u64,
    /// Longest accepted `exp - iat`.
    pub max_lifetime_seconds: u64,
    /// Where the issuer puts the scopes it grants.
    pub scope_claim: ScopeClaim,
}

impl IssuerProfile {
    /// An external OIDC provider with the defaults that fit Auth0, Okta,
    /// Keycloak and Entra ID access tokens: RS256, PS256, ES256 or EdDSA;
    /// `typ` `JWT` or `at+jwt`; `jti` optional; 30 s leeway; at most 24 h
    /// of lifetime; scopes in `scope`.
    pub fn external(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            algorithms: vec![
                JwsAlgorithm::RS256,
                JwsAlgorithm::PS256,
                JwsAlgorithm::ES256,
                JwsAlgorithm::EdDSA,
            ],
            token_types: vec!["JWT".into(), ACCESS_TOKEN_TYPE.into()],
            require_jti: false,
            leeway_seconds: 30,
            max_lifetime_seconds: 24 * 3600,
            scope_claim: ScopeClaim::Scope,
        }
    }

    /// A shared-secret issuer (HS256 alone), for migrating services whose
    /// tokens were signed with one secret. Anyone holding the secret can
    /// mint its tokens: an explicit opt-in, never a default.
    pub fn shared_secret(issuer: impl Into<String>) -> Self {
        Self {
            algorithms: vec![JwsAlgorithm::HS256],
            ..Self::external(issuer)
        }
    }

    /// The same profile with these algorithms.
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = JwsAlgorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// The same profile, reading scopes from `claim`.
    pub fn with_scope_claim(mut self, claim: ScopeClaim) -> Self {
        self.scope_claim = claim;
        self
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |reason| {
            Err(ConfigError::TrustedIssuer {
                issuer: self.issuer.clone(),
                reason,
            })
        };
        if self.issuer.is_empty() {
            return refuse("the issuer must not be empty");
        }
        if self.algorithms.is_empty() {
            return refuse("no algorithm accepted");
        }
        if self.algorithms.contains(&JwsAlgorithm::HS256) && self.algorithms.len() > 1 {
            return refuse("HS256 is accepted only alone, never beside asymmetric algorithms");
        }
        if self.token_types.is_empty() {
            return refuse("no token type accepted");
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return refuse("leeway above 60 s");
        }
        if self.max_lifetime_seconds == 0 {
            return refuse("max lifetime must be positive");
        }
        Ok(())
    }
}
