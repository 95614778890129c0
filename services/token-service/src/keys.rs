//! Signing keys: generated on first start, persisted with 0600 permissions,
//! reloaded after a restart so tokens minted before it still verify.
//!
//! Every key file in the key directory is published; the one matching the
//! configured algorithm signs. `kid` is the RFC 7638 thumbprint of the
//! public key, so it is stable across restarts without extra metadata.

use std::path::{Path, PathBuf};

use auth_interceptor::{
    Claims, Jwk, JwkSet, SigningAlgorithm, TokenHeader, token::ACCESS_TOKEN_TYPE,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

use crate::error::StartError;

/// A private signing key with its public JWK.
pub struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key and its PKCS#8 PEM.
    ///
    /// # Errors
    /// [`StartError::Key`] if the system RNG fails.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<(Self, String), StartError> {
        let rcgen_alg = match algorithm {
            SigningAlgorithm::EdDSA => &PKCS_ED25519,
            _ => &PKCS_ECDSA_P256_SHA256,
        };
        let pair = KeyPair::generate_for(rcgen_alg).map_err(|e| StartError::Key(e.to_string()))?;
        let pem = pair.serialize_pem();
        Ok((Self::from_key_pair(&pair)?, pem))
    }

    /// Loads a PKCS#8 PEM key (Ed25519 or P-256).
    ///
    /// # Errors
    /// [`StartError::Key`] for unreadable or unsupported keys.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, StartError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| StartError::Key(e.to_string()))?;
        Self::from_key_pair(&pair)
    }

    fn from_key_pair(pair: &KeyPair) -> Result<Self, StartError> {
        let public = pair.public_key_raw();
        let (algorithm, encoding, jwk) = if pair.algorithm() == &PKCS_ED25519 {
            let jwk = Jwk::ed25519("", public);
            (
                SigningAlgorithm::EdDSA,
                EncodingKey::from_ed_der(&pair.serialize_der()),
                jwk,
            )
        } else if pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            let jwk = Jwk::p256("", public).ok_or_else(|| {
                StartError::Key("P-256 public key is not an uncompressed point".into())
            })?;
            (
                SigningAlgorithm::ES256,
                EncodingKey::from_ec_der(&pair.serialize_der()),
                jwk,
            )
        } else {
            return Err(StartError::Key(
                "only Ed25519 and P-256 keys are supported".into(),
            ));
        };
        let kid = jwk.thumbprint();
        Ok(Self {
            jwk: jwk.with_kid(kid.clone()),
            kid,
            algorithm,
            encoding,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` under the AuthMesh header (`alg`, `kid`, `typ: at+jwt`).
    ///
    /// # Errors
    /// When serialization or signing fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let header = TokenHeader {
            alg: self.algorithm.name().into(),
            kid: self.kid.clone(),
            typ: ACCESS_TOKEN_TYPE.into(),
        };
        self.sign_raw(&serde_json::to_vec(&header)?, &serde_json::to_vec(claims)?)
    }

    /// Signs arbitrary header and payload bytes: the building block of
    /// [`SigningKey::sign`], public so tests can forge tokens that are signed
    /// by a real key but break the profile.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_raw(
        &self,
        header: &[u8],
        payload: &[u8],
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.algorithm.to_jwt())?;
        Ok(format!("{input}.{signature}"))
    }
}

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
                let key = SigningKey::from_pkcs8_pem(&pem)?;
                if key.algorithm() != candidate {
                    return Err(StartError::Key(format!(
                        "{} does not hold a {candidate} key",
                        path.display()
                    )));
                }
                key
            } else if candidate == algorithm {
                let (key, pem) = SigningKey::generate(algorithm)?;
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
    use auth_interceptor::{Clock, SystemClock, Verifier, VerifierConfig};

    use super::*;

    fn round_trip(algorithm: SigningAlgorithm) {
        let (generated, pem) = SigningKey::generate(algorithm).expect("generate");
        let key = SigningKey::from_pkcs8_pem(&pem).expect("reload");
        assert_eq!(key.kid(), generated.kid(), "kid is stable across reloads");
        assert_eq!(key.algorithm(), algorithm);
        let now = SystemClock.now();
        let claims = Claims {
            iss: "https://issuer".into(),
            sub: "orders".into(),
            aud: "inventory".into(),
            exp: now + 60,
            nbf: Some(now),
            iat: now,
            jti: "j".into(),
            scope: "inventory.read".into(),
            client_id: Some("orders".into()),
        };
        let token = key.sign(&claims).expect("sign");
        let verifier =
            Verifier::new(VerifierConfig::new("https://issuer", "inventory")).expect("verifier");
        verifier
            .install_keys(&JwkSet {
                keys: vec![key.jwk().clone()],
            })
            .expect("keys");
        assert_eq!(
            verifier.verify(&token).map(|c| c.sub.clone()),
            Ok("orders".into())
        );
    }

    #[test]
    fn eddsa_keys_sign_tokens_the_verifier_accepts() {
        round_trip(SigningAlgorithm::EdDSA);
    }

    #[test]
    fn es256_keys_sign_tokens_the_verifier_accepts() {
        round_trip(SigningAlgorithm::ES256);
    }

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
