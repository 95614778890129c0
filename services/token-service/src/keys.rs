//! The issuer's signing keys: generated on first start, persisted with 0600
//! permissions, reloaded after a restart so tokens minted before it still
//! verify. Every key file in the key directory is published; the one
//! matching the configured algorithm signs. `kid` is the RFC 7638 thumbprint
//! of the public key, so it is stable across restarts without metadata.

use std::path::{Path, PathBuf};

use auth_interceptor::{JwkSet, SigningAlgorithm, SigningKey};

use crate::error::StartError;

/// The issuer's keys: one active for signing, all published.
#[derive(Debug)]
pub struct KeyStore {
    active: SigningKey,
    published: JwkSet,
}

impl KeyStore {
    /// Loads every key in `dir` (`eddsa.pem`, `es256.pem`), creating the one
    /// for `algorithm` if it is missing.
    ///
    /// # Errors
    /// [`StartError`] when a key file is unreadable or cannot be written.
    pub fn load_or_create(dir: &Path, algorithm: SigningAlgorithm) -> Result<Self, StartError> {
        let mut active = None;
        let mut published = Vec::new();
        for candidate in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256] {
            let path = key_path(dir, candidate);
            let key = if path.exists() {
                let pem = service_runtime::files::read_to_string(&path)?;
                let key =
                    SigningKey::from_pkcs8_pem(&pem).map_err(|e| StartError::Key(e.to_string()))?;
                if key.algorithm() != candidate {
                    return Err(StartError::Key(format!(
                        "{} does not hold a {candidate} key",
                        path.display()
                    )));
                }
                key
            } else if candidate == algorithm {
                let (key, pem) =
                    SigningKey::generate(algorithm).map_err(|e| StartError::Key(e.to_string()))?;
                service_runtime::files::write_private(&path, pem.as_bytes())?;
                tracing::info!(kid = key.kid(), alg = %algorithm, path = %path.display(), "generated signing key");
                key
            } else {
                continue;
            };
            published.push(key.jwk().clone());
            if candidate == algorithm {
                active = Some(key);
            }
        }
        let active = active.ok_or_else(|| StartError::Key("no active signing key".into()))?;
        Ok(Self {
            active,
            published: JwkSet { keys: published },
        })
    }

    /// A store around one in-memory key (tests, drills).
    pub fn from_key(key: SigningKey) -> Self {
        let published = JwkSet {
            keys: vec![key.jwk().clone()],
        };
        Self {
            active: key,
            published,
        }
    }

    /// The key that signs new tokens.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Every key verifiers should trust.
    pub fn published(&self) -> &JwkSet {
        &self.published
    }
}

fn key_path(dir: &Path, algorithm: SigningAlgorithm) -> PathBuf {
    dir.join(format!("{}.pem", algorithm.name().to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_and_publish_every_algorithm_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = KeyStore::load_or_create(dir.path(), SigningAlgorithm::EdDSA).expect("create");
        let again = KeyStore::load_or_create(dir.path(), SigningAlgorithm::EdDSA).expect("reload");
        assert_eq!(first.active().kid(), again.active().kid());
        let switched =
            KeyStore::load_or_create(dir.path(), SigningAlgorithm::ES256).expect("switch");
        assert_eq!(switched.active().algorithm(), SigningAlgorithm::ES256);
        assert_eq!(
            switched.published().keys.len(),
            2,
            "old key stays published"
        );
    }
}
