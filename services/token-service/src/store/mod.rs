//! Where the token service keeps the state its replicas share: `files`
//! (one directory, today's default) or `etcd` (replicas on any number of
//! machines). Signing keys never enter either: only public keys are shared.

pub mod etcd;
mod freshness;
mod replica;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use freshness::Freshness;
pub use replica::{EtcdStore, ReplicaState};

/// `[store]` in `token-service.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Keys, revocations and clients in files beside the configuration.
    #[default]
    Files,
    /// Public keys, revocations and (with the admin service) clients in etcd.
    Etcd(EtcdConfig),
}

impl StoreConfig {
    /// Whether this is the default, for skipping it when written.
    pub fn is_files(&self) -> bool {
        matches!(self, Self::Files)
    }
}

/// How a replica reaches etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs of the members, e.g. `https://etcd-1:2379`.
    pub endpoints: Vec<String>,
    /// Every key AuthMesh writes starts with this (one cluster can serve several meshes).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Client certificate, key and CA for mTLS to etcd (paths relative to the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
    /// This replica's name in etcd; default: the host name and the listen port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
    /// A replica that has not renewed its session with etcd for this long
    /// stops minting and reports NOT_SERVING (it cannot know its
    /// revocations and registry are current).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_seconds: u64,
    /// A new signing key is published this long before it signs: longer
    /// than the verifiers' key refresh interval (60 s by default).
    #[serde(default = "default_publish_lead")]
    pub publish_lead_seconds: u64,
}

/// mTLS files for etcd.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificates.
    pub ca: PathBuf,
    /// This replica's client certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

fn default_prefix() -> String {
    "/authmesh/".into()
}
fn default_session_ttl() -> u64 {
    10
}
fn default_publish_lead() -> u64 {
    65
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The `[store]` settings are unusable.
    #[error("store configuration: {0}")]
    Config(String),
    /// No etcd member answered, or the cluster has no quorum.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// A lease or key that was expected is gone.
    #[error("not found in etcd")]
    NotFound,
    /// The history a watch resumes from was compacted: read everything again.
    #[error("etcd history compacted")]
    Compacted,
    /// A value in etcd that AuthMesh cannot use.
    #[error("unusable value at {key}: {detail}")]
    Corrupt {
        /// The etcd key.
        key: String,
        /// What is wrong.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        #[serde(default)]
        store: StoreConfig,
    }

    fn parse(text: &str) -> Result<StoreConfig, toml::de::Error> {
        toml::from_str::<Wrapper>(text).map(|w| w.store)
    }

    #[test]
    fn the_store_setting_defaults_to_files_and_reads_etcd_with_its_defaults() {
        assert_eq!(parse("").expect("none"), StoreConfig::Files);
        assert_eq!(
            parse("[store]\nkind = \"files\"").expect("files"),
            StoreConfig::Files
        );
        let etcd = parse(
            "[store]\nkind = \"etcd\"\nendpoints = [\"https://etcd-1:2379\"]\n\
             [store.tls]\nca = \"tls/ca.pem\"\ncert = \"tls/ts.pem\"\nkey = \"tls/ts-key.pem\"",
        )
        .expect("etcd");
        let StoreConfig::Etcd(etcd) = etcd else {
            panic!("not etcd: {etcd:?}");
        };
        assert_eq!(etcd.prefix, "/authmesh/");
        assert_eq!(etcd.session_ttl_seconds, 10);
        assert_eq!(etcd.publish_lead_seconds, 65);
        assert_eq!(etcd.tls.map(|t| t.cert), Some(PathBuf::from("tls/ts.pem")));
        for bad in [
            "[store]\nkind = \"sql\"",
            "[store]\nkind = \"etcd\"",
            "[store]\nkind = \"etcd\"\nendpoints = []\nendpoint = \"x\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
