//! Token exchange (RFC 8693 semantics): the rules that say which workloads
//! may act for which users, and the verifier that checks the user tokens
//! they present (from trusted external issuers, or this token service's
//! own tokens that already carry a user).

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Mutex,
};

use auth_interceptor::{
    AuthError, Claims, JwkSet, KeyRefreshHandle, KeyRefreshSettings, SharedClock, Verifier,
    VerifierConfig, token::MAX_ACTOR_CHAIN,
};
use service_runtime::{TrustedIssuerConfig, upstream::ClientTls};

use crate::{
    config::{Config, ExchangeRule},
    error::{IssueError, StartError},
    issuer::SELF_AUDIENCE,
    revocations::RevocationStore,
};

/// RFC 8693 token type of an access token; the default subject token type.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 token type of a JWT, also accepted for a subject token.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The exchange rules and the subject-token verifier.
pub struct Exchange {
    rules: Vec<ExchangeRule>,
    verifier: Verifier,
    /// The token service's own key set as last installed into `verifier`.
    mesh_keys: Mutex<JwkSet>,
    trusted: Vec<TrustedIssuerConfig>,
    dir: PathBuf,
    /// Key refresh of the trusted issuers, kept while the service runs.
    refresh: Mutex<Vec<(Option<KeyRefreshHandle>, Option<ClientTls>)>>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// The exchange of `config` (paths relative to `dir`); `None` when it
    /// has no `[[exchange]]` rule.
    ///
    /// # Errors
    /// [`StartError::Config`] naming an inconsistent rule or issuer.
    pub fn new(
        config: &Config,
        dir: &Path,
        clock: SharedClock,
    ) -> Result<Option<Self>, StartError> {
        if config.exchange.is_empty() {
            if !config.trusted_issuers.is_empty() {
                tracing::warn!("trusted_issuers are set but no [[exchange]] rule uses them");
            }
            return Ok(None);
        }
        let mut issuers: HashSet<&str> = config
            .trusted_issuers
            .iter()
            .map(|trusted| trusted.issuer.as_str())
            .collect();
        issuers.insert(&config.issuer);
        let mut names = HashSet::new();
        for rule in &config.exchange {
            let invalid = |what: &str| {
                Err(StartError::Config(format!(
                    "exchange rule {:?}: {what}",
                    rule.name
                )))
            };
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return invalid("every rule needs a name of its own");
            }
            if rule.actors.is_empty() {
                return invalid("no actor");
            }
            if rule.audience == SELF_AUDIENCE
                || rule.audience == config.issuer
                || !config.audiences.contains(&rule.audience)
            {
                return invalid("the audience is not one of `audiences`");
            }
            if rule.actors.contains(&rule.audience) {
                return invalid("a workload cannot exchange tokens for itself");
            }
            if rule.scopes.is_empty()
                || rule
                    .scopes
                    .iter()
                    .chain(&rule.subject_scopes)
                    .any(|scope| scope.is_empty() || scope.contains(char::is_whitespace))
            {
                return invalid("scopes must be non-empty words");
            }
            if rule.subject_issuers.is_empty()
                || rule
                    .subject_issuers
                    .iter()
                    .any(|issuer| !issuers.contains(issuer.as_str()))
            {
                return invalid(
                    "each subject issuer must be in trusted_issuers, or this token service's own issuer",
                );
            }
            if !(1..=MAX_ACTOR_CHAIN).contains(&rule.max_chain_depth) {
                return invalid(&format!(
                    "max_chain_depth must be between 1 and {MAX_ACTOR_CHAIN}"
                ));
            }
        }
        let verifier = Verifier::with_clock(
            VerifierConfig {
                record_metrics: false,
                max_lifetime_seconds: config.max_ttl_seconds,
                trusted_issuers: config
                    .trusted_issuers
                    .iter()
                    .map(TrustedIssuerConfig::profile)
                    .collect(),
                ..VerifierConfig::new(&config.issuer, SELF_AUDIENCE)
            },
            clock,
        )
        .map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Some(Self {
            rules: config.exchange.clone(),
            verifier,
            mesh_keys: Mutex::default(),
            trusted: config.trusted_issuers.clone(),
            dir: dir.to_path_buf(),
            refresh: Mutex::default(),
        }))
    }

    /// Starts fetching the trusted issuers' keys (call within the runtime).
    ///
    /// # Errors
    /// [`StartError::Runtime`] for an unusable key source.
    pub fn start_key_refresh(&self, settings: KeyRefreshSettings) -> Result<(), StartError> {
        let mut refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        for trusted in &self.trusted {
            refresh.push(service_runtime::spawn_trusted_keys(
                &self.verifier,
                trusted,
                settings,
                &self.dir,
            )?);
        }
        Ok(())
    }

    /// The rules under which `actor` (a client id) may exchange.
    pub fn rules_for<'r>(&'r self, actor: &'r str) -> impl Iterator<Item = &'r ExchangeRule> {
        self.rules
            .iter()
            .filter(move |rule| rule.actors.iter().any(|a| a == actor))
    }

    /// Verifies a subject token presented by `actor`: it must be for
    /// `actor` (its audience), verify with its issuer's keys (`mesh_keys`
    /// for this token service's own), and not be revoked in `revocations`.
    ///
    /// # Errors
    /// [`IssueError::SubjectTokenRefused`] with the verifier's reason, or
    /// [`IssueError::SubjectNotCheckable`] while its issuer's keys are not loaded.
    pub fn verify_subject(
        &self,
        token: &str,
        actor: &str,
        mesh_keys: JwkSet,
        revocations: &RevocationStore,
    ) -> Result<Claims, IssueError> {
        {
            let mut installed = self.mesh_keys.lock().unwrap_or_else(|p| p.into_inner());
            if *installed != mesh_keys && self.verifier.install_keys(&mesh_keys).is_ok() {
                *installed = mesh_keys;
            }
        }
        self.verifier.apply_revocations(&revocations.snapshot());
        self.verifier
            .verify_for_audience(token, actor)
            .map_err(|error| refused(&error))
    }
}

/// The refusal of a subject token the verifier refused; UNAVAILABLE when
/// the verifier could not decide yet (its issuer's keys not loaded).
fn refused(error: &AuthError) -> IssueError {
    if error.code() == tonic::Code::Unavailable {
        return IssueError::SubjectNotCheckable {
            cause: error.reason(),
            detail: error.to_string(),
        };
    }
    IssueError::SubjectTokenRefused {
        cause: error.reason(),
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration docs/token-exchange.md shows parses into rules and
    /// issuers the token service accepts.
    #[test]
    fn the_documented_exchange_configuration_starts() {
        let doc = include_str!("../../../docs/token-exchange.md");
        let block = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the page's TOML block");
        let text = format!(
            "issuer = \"https://localhost:50051\"\nkey_dir = \"keys\"\n\
             audiences = [\"inventory\", \"billing\"]\n{block}"
        );
        let config: Config = toml::from_str(&text).expect("documented TOML parses");
        assert_eq!(config.exchange.len(), 2);
        assert_eq!(config.exchange[1].max_chain_depth, 2);
        let exchange = Exchange::new(
            &config,
            Path::new("."),
            auth_interceptor::clock::system_clock(),
        )
        .expect("a configuration the token service starts with")
        .expect("rules");
        assert_eq!(exchange.rules_for("orders").count(), 1);
        assert_eq!(exchange.rules_for("demo-cli").count(), 0);

        // Inconsistent rules stop the token service at start, naming the rule.
        for (bad, why) in [
            (("audience", "\"inventory\""), ("audience", "\"orders\"")),
            (("actors", "[\"orders\"]"), ("actors", "[\"inventory\"]")),
            (("max_chain_depth", "1"), ("max_chain_depth", "9")),
        ]
        .map(|((key, old), (_, new))| {
            (
                text.replacen(&format!("{key} = {old}"), &format!("{key} = {new}"), 1),
                key,
            )
        }) {
            let config: Config = toml::from_str(&bad).expect("parses");
            let refused = Exchange::new(
                &config,
                Path::new("."),
                auth_interceptor::clock::system_clock(),
            )
            .expect_err(why);
            assert!(
                refused.to_string().contains("orders-for-users"),
                "{why}: {refused}"
            );
        }
    }
}
