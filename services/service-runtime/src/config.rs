//! Configuration: one TOML file per service, every key overridable by an
//! `AUTHMESH_*` environment variable (`__` separates nested keys:
//! `AUTHMESH_AUTH__LEEWAY_SECONDS=10` sets `auth.leeway_seconds`).
//! Secrets never live in the TOML itself; it names files that hold them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, de::DeserializeOwned};

use crate::{
    error::{ConfigProblem, RuntimeError},
    files::read_to_string,
};

/// Prefix of configuration overrides.
pub const ENV_PREFIX: &str = "AUTHMESH_";

/// `AUTHMESH_*` variables that are not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &["CONFIG", "LOG", "LOG_FORMAT", "CLIENT_SECRET", "STATE_DIR"];

/// A configuration and the directory its relative paths are relative to.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The parsed configuration.
    pub config: T,
    /// The configuration file's directory.
    pub dir: PathBuf,
}

impl<T> Loaded<T> {
    /// `path` resolved against the configuration file's directory.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.dir.join(path)
    }
}

/// Loads `path`, applies the `AUTHMESH_*` overrides from `env`, and parses the result.
///
/// # Errors
/// [`RuntimeError::Config`] for unreadable files, bad TOML, unknown keys or bad values.
pub fn load_config<T, I>(path: &Path, env: I) -> Result<Loaded<T>, RuntimeError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (String, String)>,
{
    let text = read_to_string(path)?;
    let origin = path.display().to_string();
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| RuntimeError::Config {
        origin: origin.clone(),
        problem: e.into(),
    })?;
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        // TEST_: the test suite's switches; COMPOSE_: docker-compose.yml's settings.
        if NOT_CONFIG_KEYS.contains(&key) || key.starts_with("TEST_") || key.starts_with("COMPOSE_")
        {
            continue;
        }
        apply_override(&mut table, key, &value).map_err(|problem| RuntimeError::Config {
            origin: name.clone(),
            problem,
        })?;
    }
    let config = T::deserialize(table).map_err(|e| RuntimeError::Config {
        origin,
        problem: e.into(),
    })?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded { config, dir })
}

fn apply_override(table: &mut toml::Table, key: &str, raw: &str) -> Result<(), ConfigProblem> {
    let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, parents)) = path.split_last() else {
        return Err(ConfigProblem::EmptyKey);
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| ConfigProblem::NotATable(part.clone()))?;
    }
    current.insert(last.clone(), parse_value(raw));
    Ok(())
}

/// A TOML literal when the text is one (`10`, `true`, `["a"]`), a string otherwise.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Where to reach another service (the token service, or SERVER2 from SERVER1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://host:port`, or `http://` with `insecure_plaintext`.
    pub url: String,
    /// Other replicas of the same upstream (`https://host:port` each): when
    /// the one in use cannot be reached, a new connection goes to the next.
    /// (A `url` whose name resolves to several addresses fails over too.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_urls: Vec<String>,
    /// CA certificate (PEM) that signed the upstream's server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) to present for mTLS; reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl UpstreamConfig {
    /// `url`, then every failover URL.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.failover_urls.iter().cloned())
            .collect()
    }
}

/// Token verification settings of a service that accepts AuthMesh tokens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Exact `iss` to accept.
    pub issuer: String,
    /// Exact `aud` to accept: this service's name.
    pub audience: String,
    /// Clock skew tolerated, at most 60 s.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Longest accepted token lifetime.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Verified tokens remembered.
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: usize,
    /// Live one-time tokens remembered (replays are refused); beyond it,
    /// one-time tokens are refused with UNAVAILABLE until some expire.
    #[serde(default = "default_replay_cache_capacity")]
    pub replay_cache_capacity: usize,
    /// Use each one-time token once across every replica of this service:
    /// after everything else allowed a call with one, ask the token service
    /// (`ConsumeOneTime`) whether it is its first use. Other tokens never
    /// leave the call path. Off: once per verifier instance.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_time_via_token_service: bool,
    /// Routine key refresh period.
    #[serde(default = "default_key_refresh")]
    pub key_refresh_seconds: u64,
    /// Take keys from this HTTPS JWK Set URL (e.g. the token service's
    /// `/.well-known/jwks.json`) instead of its gRPC `GetJwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// CA for `jwks_url` (default: the token service upstream's TLS settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_ca: Option<PathBuf>,
    /// Whether server reflection needs no token.
    #[serde(default = "default_true")]
    pub public_reflection: bool,
    /// Refuse tokens not bound to a client certificate (`cnf`); bound tokens
    /// are always checked against the connection's certificate.
    #[serde(default)]
    pub require_bound_tokens: bool,
    /// Authorization policy file (TOML); without one the service's built-in
    /// rules apply. With a file, its `public` list alone decides what skips
    /// authentication (`public_reflection` is then ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    /// Refuse to start when a method of the service is neither covered by a
    /// rule nor public (otherwise each is logged and stays denied).
    #[serde(default = "default_true")]
    pub strict_policy: bool,
    /// External issuers whose tokens this service also accepts
    /// (`[[auth.trusted_issuers]]`), each with its own profile and keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
}

/// One external issuer a service trusts besides the mesh's own: its token
/// profile and exactly one key source (`discovery`, `jwks_url`,
/// `jwks_file` or `hs256_secret_file`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The exact `iss` (Auth0's ends with `/`, Keycloak's does not).
    pub issuer: String,
    /// Keys through OIDC discovery: `{issuer}/.well-known/openid-configuration`,
    /// then its `jwks_uri`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovery: bool,
    /// Keys from this HTTPS JWK Set URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Keys from this JWK Set file, re-read on every refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// HS256 with the shared secret in this file (at least 32 bytes): for
    /// migrations only; the issuer then accepts HS256 alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<PathBuf>,
    /// CA bundle (PEM) for `discovery` and `jwks_url`; for a public
    /// provider, the system's (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Accepted algorithms (default: RS256, PS256, ES256, EdDSA; HS256
    /// with `hs256_secret_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<auth_interceptor::JwsAlgorithm>>,
    /// Accepted `typ` values (default: `JWT`, `at+jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_types: Option<Vec<String>>,
    /// Refuse tokens without a `jti`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_jti: bool,
    /// Clock skew tolerated, at most 60 s.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Longest accepted token lifetime (default 24 h).
    #[serde(default = "default_external_max_lifetime")]
    pub max_lifetime_seconds: u64,
    /// Where the scopes are: `scope` (a string), `scp` (an array or a
    /// string) or `permissions` (an array).
    #[serde(default)]
    pub scope_claim: auth_interceptor::ScopeClaim,
}

/// Where a trusted issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedKeys<'c> {
    /// OIDC discovery at the issuer.
    Discovery,
    /// An HTTPS JWK Set URL.
    JwksUrl(&'c str),
    /// A JWK Set file.
    JwksFile(&'c Path),
    /// An HS256 secret file.
    SharedSecret(&'c Path),
}

impl TrustedIssuerConfig {
    /// `issuer`, its keys through OIDC discovery over HTTPS trusting `ca`,
    /// and every other setting at its default.
    pub fn discovery(issuer: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        Self {
            issuer: issuer.into(),
            discovery: true,
            jwks_url: None,
            jwks_file: None,
            hs256_secret_file: None,
            ca: Some(ca.into()),
            algorithms: None,
            token_types: None,
            require_jti: false,
            leeway_seconds: default_leeway(),
            max_lifetime_seconds: default_external_max_lifetime(),
            scope_claim: Default::default(),
        }
    }

    /// The verifier's profile for this issuer.
    pub fn profile(&self) -> auth_interceptor::IssuerProfile {
        let mut profile = if self.hs256_secret_file.is_some() {
            auth_interceptor::IssuerProfile::shared_secret(&self.issuer)
        } else {
            auth_interceptor::IssuerProfile::external(&self.issuer)
        };
        if let Some(algorithms) = &self.algorithms {
            profile.algorithms.clone_from(algorithms);
        }
        if let Some(types) = &self.token_types {
            profile.token_types.clone_from(types);
        }
        profile.require_jti = self.require_jti;
        profile.leeway_seconds = self.leeway_seconds;
        profile.max_lifetime_seconds = self.max_lifetime_seconds;
        profile.scope_claim = self.scope_claim;
        profile
    }

    /// Its one key source.
    ///
    /// # Errors
    /// [`auth_interceptor::verifier::ConfigError::TrustedIssuer`] for none
    /// or several, or an HS256 secret beside other algorithms.
    pub fn keys(&self) -> Result<TrustedKeys<'_>, auth_interceptor::verifier::ConfigError> {
        let refuse = |reason| auth_interceptor::verifier::ConfigError::TrustedIssuer {
            issuer: self.issuer.clone(),
            reason,
        };
        let mut sources = Vec::new();
        if self.discovery {
            sources.push(TrustedKeys::Discovery);
        }
        if let Some(url) = &self.jwks_url {
            sources.push(TrustedKeys::JwksUrl(url));
        }
        if let Some(file) = &self.jwks_file {
            sources.push(TrustedKeys::JwksFile(file));
        }
        if let Some(file) = &self.hs256_secret_file {
            sources.push(TrustedKeys::SharedSecret(file));
        }
        let [source] = <[TrustedKeys<'_>; 1]>::try_from(sources).map_err(|_| {
            refuse("exactly one of discovery, jwks_url, jwks_file and hs256_secret_file")
        })?;
        let hs256 = self
            .algorithms
            .as_ref()
            .is_some_and(|algorithms| algorithms.contains(&auth_interceptor::JwsAlgorithm::HS256));
        match source {
            TrustedKeys::SharedSecret(_)
                if self.profile().algorithms != [auth_interceptor::JwsAlgorithm::HS256] =>
            {
                Err(refuse("an hs256_secret_file issuer accepts HS256 alone"))
            }
            TrustedKeys::Discovery | TrustedKeys::JwksUrl(_) | TrustedKeys::JwksFile(_)
                if hs256 =>
            {
                Err(refuse("HS256 needs hs256_secret_file, never a key set"))
            }
            source => Ok(source),
        }
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_max_lifetime() -> u64 {
    3600
}
fn default_cache_capacity() -> usize {
    10_000
}
fn default_replay_cache_capacity() -> usize {
    100_000
}
fn default_key_refresh() -> u64 {
    60
}
fn default_external_max_lifetime() -> u64 {
    24 * 3600
}
fn default_true() -> bool {
    true
}

impl AuthConfig {
    /// Defaults for `issuer` and `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: default_leeway(),
            max_lifetime_seconds: default_max_lifetime(),
            cache_capacity: default_cache_capacity(),
            replay_cache_capacity: default_replay_cache_capacity(),
            one_time_via_token_service: false,
            key_refresh_seconds: default_key_refresh(),
            jwks_url: None,
            jwks_ca: None,
            public_reflection: true,
            require_bound_tokens: false,
            policy_file: None,
            strict_policy: true,
            trusted_issuers: Vec::new(),
        }
    }

    /// The verifier settings.
    pub fn verifier_config(&self) -> auth_interceptor::VerifierConfig {
        auth_interceptor::VerifierConfig {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_seconds: self.leeway_seconds,
            max_lifetime_seconds: self.max_lifetime_seconds,
            cache_capacity: self.cache_capacity,
            require_bound_tokens: self.require_bound_tokens,
            replay_cache_capacity: self.replay_cache_capacity,
            record_metrics: true,
            trusted_issuers: self
                .trusted_issuers
                .iter()
                .map(TrustedIssuerConfig::profile)
                .collect(),
        }
    }

    /// The key refresh settings.
    pub fn key_refresh(&self) -> auth_interceptor::KeyRefreshSettings {
        auth_interceptor::KeyRefreshSettings {
            interval: std::time::Duration::from_secs(self.key_refresh_seconds.max(1)),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: String,
        auth: AuthConfig,
    }

    /// Every `[[auth.trusted_issuers]]` block of docs/external-issuers.md
    /// parses, with the profile and key source it says; and bad
    /// combinations are refused with the reason.
    #[test]
    fn the_documented_trusted_issuers_parse() {
        let doc = include_str!("../../../docs/external-issuers.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect();
        assert_eq!(blocks.len(), 3, "the page's TOML blocks");
        let parse = |block: &str| {
            let text = format!(
                "listen = \"x\"\n[auth]\nissuer = \"https://i\"\naudience = \"inventory\"\n{block}"
            );
            let sample: Sample = toml::from_str(&text).expect("documented TOML parses");
            let [trusted] = <[TrustedIssuerConfig; 1]>::try_from(sample.auth.trusted_issuers)
                .expect("one issuer per block");
            trusted
        };
        let auth0 = parse(blocks[0]);
        assert_eq!(auth0.keys(), Ok(TrustedKeys::Discovery));
        assert_eq!(
            auth0.profile().scope_claim,
            auth_interceptor::ScopeClaim::Permissions
        );
        let keycloak = parse(blocks[1]);
        assert!(matches!(keycloak.keys(), Ok(TrustedKeys::JwksUrl(_))));
        assert_eq!(
            keycloak.profile().algorithms,
            [auth_interceptor::JwsAlgorithm::RS256]
        );
        assert!(keycloak.profile().require_jti);
        let legacy = parse(blocks[2]);
        assert!(matches!(legacy.keys(), Ok(TrustedKeys::SharedSecret(_))));
        assert_eq!(
            legacy.profile().algorithms,
            [auth_interceptor::JwsAlgorithm::HS256]
        );

        for (bad, why) in [
            ("issuer = \"a\"", "exactly one"),
            (
                "issuer = \"a\"\ndiscovery = true\njwks_file = \"k.json\"",
                "exactly one",
            ),
            (
                "issuer = \"a\"\nhs256_secret_file = \"s\"\nalgorithms = [\"HS256\", \"RS256\"]",
                "HS256 alone",
            ),
            (
                "issuer = \"a\"\njwks_file = \"k.json\"\nalgorithms = [\"HS256\"]",
                "needs hs256_secret_file",
            ),
        ] {
            let refused = parse(&format!("[[auth.trusted_issuers]]\n{bad}"))
                .keys()
                .expect_err(why)
                .to_string();
            assert!(refused.contains(why), "{refused}");
        }
    }

    #[test]
    fn env_overrides_nested_keys_and_skips_non_config_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("svc.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\n[auth]\nissuer = \"https://i\"\naudience = \"inventory\"\n",
        )
        .expect("write");
        let env = [
            ("AUTHMESH_LISTEN".to_owned(), "0.0.0.0:50053".to_owned()),
            ("AUTHMESH_AUTH__LEEWAY_SECONDS".to_owned(), "10".to_owned()),
            ("AUTHMESH_CONFIG".to_owned(), "/elsewhere.toml".to_owned()),
            ("AUTHMESH_TEST_REQUIRE_TOOLS".to_owned(), "1".to_owned()),
            (
                "AUTHMESH_COMPOSE_IMAGE".to_owned(),
                "authmesh:local".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let loaded: Loaded<Sample> = load_config(&path, env).expect("load");
        assert_eq!(loaded.config.listen, "0.0.0.0:50053");
        assert_eq!(loaded.config.auth.leeway_seconds, 10);
        assert_eq!(loaded.dir, dir.path());
        let bad = [("AUTHMESH_NOPE".to_owned(), "1".to_owned())];
        assert!(load_config::<Sample, _>(&path, bad).is_err());
    }
}
