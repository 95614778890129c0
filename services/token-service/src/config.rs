//! The token service's configuration file.

use std::{collections::BTreeMap, path::PathBuf};

use auth_interceptor::SigningAlgorithm;
use serde::{Deserialize, Serialize};
use service_runtime::{RuntimeConfig, ServerTlsFiles};

use crate::{limiter::AuthLimits, store::StoreConfig};

/// Hard ceiling of any token lifetime, whatever the configuration says.
pub const MAX_TTL_CEILING_SECONDS: u64 = 3600;

/// `token-service.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address, e.g. `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The `iss` of every token: this issuer's URL.
    pub issuer: String,
    /// Serve without TLS (logged as a warning).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Where to serve Prometheus `/metrics` (plain HTTP), e.g. `0.0.0.0:9090`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// How the service uses the machine's cores (`[runtime]`: mode, worker_threads).
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_default")]
    pub runtime: RuntimeConfig,
    /// Server certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsFiles>,
    /// Where signing keys live (created with 0600 on first start).
    pub key_dir: PathBuf,
    /// Algorithm of the active signing key.
    #[serde(default = "default_algorithm")]
    pub algorithm: SigningAlgorithm,
    /// Lifetime when a request names none.
    #[serde(default = "default_ttl")]
    pub default_ttl_seconds: u64,
    /// Longest lifetime any client may ask for (at most 3600).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// The services tokens may be minted for.
    pub audiences: Vec<String>,
    /// Whether server reflection is served (without credentials, like GetJwks).
    #[serde(default = "default_true")]
    pub public_reflection: bool,
    /// Failed-authentication limits.
    #[serde(default)]
    pub auth_limits: AuthLimits,
    /// Registered clients and what each may ask for.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Where revocations are persisted (relative to this file).
    #[serde(default = "default_revocations_file")]
    pub revocations_file: PathBuf,
    /// Audience → the policy file that audience enforces (the very file the
    /// service reads, relative to this file). Tokens no rule of it would
    /// accept are not minted; the files are reloaded when they change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audience_policies: BTreeMap<String, PathBuf>,
    /// Refuse to start unless every audience has a policy in `audience_policies`.
    #[serde(default)]
    pub require_audience_policies: bool,
    /// SPIFFE IDs whose client certificates may call `WorkloadAdmin`
    /// (register and remove workloads at run time), as SPIRE's `admin_ids`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_ids: Vec<String>,
    /// With the files store: where workloads registered at run time are kept
    /// (relative to this file; replicas sharing it follow it).
    #[serde(default = "default_workloads_file")]
    pub workloads_file: PathBuf,
    /// Where replicas share public keys and revocations (`[store]`,
    /// `kind = "files"` or `"etcd"`); files by default.
    #[serde(default, skip_serializing_if = "StoreConfig::is_files")]
    pub store: StoreConfig,
    /// External identity providers whose users' tokens may be exchanged
    /// (`[[trusted_issuers]]`, as a service's `[[auth.trusted_issuers]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_issuers: Vec<service_runtime::TrustedIssuerConfig>,
    /// Who may exchange whose tokens for what (`[[exchange]]`); none by
    /// default, so `ExchangeToken` refuses every caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchange: Vec<ExchangeRule>,
}

/// One token-exchange rule: these workloads, presenting a token of a user
/// of these issuers (with these scopes), may get a token for this audience
/// with at most these scopes, on a delegation chain at most this deep.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRule {
    /// Names the rule in logs and refusals.
    pub name: String,
    /// Client ids of the workloads that may exchange under this rule.
    pub actors: Vec<String>,
    /// Issuers of the subject tokens: trusted external issuers, or this
    /// token service's own issuer for a token exchanged before (a chain).
    pub subject_issuers: Vec<String>,
    /// Scopes the subject token must carry, all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_scopes: Vec<String>,
    /// The service the new token is for.
    pub audience: String,
    /// The most the new token may hold.
    pub scopes: Vec<String>,
    /// Longest delegation chain the new token may carry, counting its own
    /// actor: 1 lets a workload act for a user; 2 lets a workload that
    /// received such a token exchange it again.
    #[serde(default = "default_chain_depth")]
    pub max_chain_depth: usize,
}

fn default_chain_depth() -> usize {
    1
}

/// One registered client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Client id; the token's `sub` when it authenticates with a secret only.
    pub id: String,
    /// argon2id hash (PHC string) of the client secret, e.g. from
    /// `authmesh hash-secret`. The secret itself never goes in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_hash: Option<String>,
    /// The workload's SPIFFE ID: a client certificate with this URI SAN
    /// authenticates as this client, and becomes the token's `sub`. A client
    /// with a `spiffe_id` and no `secret_hash` is mTLS-only: no secret can
    /// stand in for its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// This client's lifetime cap, below the global one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    /// Audience → the scopes this client may have for it.
    #[serde(default)]
    pub audiences: BTreeMap<String, Vec<String>>,
    /// May revoke tokens (`Revoke`): an operator's client.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_revoke: bool,
}

fn default_workloads_file() -> PathBuf {
    "workloads.json".into()
}
fn default_revocations_file() -> PathBuf {
    "revocations.json".into()
}
fn default_true() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:50051".into()
}
fn default_algorithm() -> SigningAlgorithm {
    SigningAlgorithm::EdDSA
}
fn default_ttl() -> u64 {
    300
}
fn default_max_ttl() -> u64 {
    MAX_TTL_CEILING_SECONDS
}
