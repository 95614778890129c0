//! Signing AuthMesh tokens: the issuer's half of the token profile. Used by
//! the token service and by test tools that forge tokens; a verifier never
//! links it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use p256::ecdsa::signature::Signer as _;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519};

use authmesh_token::{
    ACCESS_TOKEN_TYPE, Claims, Clock, Jwk, SigningAlgorithm, SystemClock, TokenHeader,
    parse_claims, parse_header, split_token,
};

/// Why a key could not be made or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The key is unreadable, unsupported or could not be generated.
    #[error("signing key: {0}")]
    Key(String),
    /// The sign-then-verify self-test failed.
    #[error("self-test failed for {algorithm}: {detail}")]
    SelfTest {
        /// The algorithm under test.
        algorithm: SigningAlgorithm,
        /// What went wrong.
        detail: String,
    },
}

/// A private signing key with its public JWK.
pub struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    signer: KeySigner,
    jwk: Jwk,
}

/// The private key, parsed once. jsonwebtoken's `crypto::sign` parses the
/// PKCS#8 key again (and for Ed25519 derives its public half) on every
/// call, which doubled the cost of minting.
enum KeySigner {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
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
    /// [`SigningError`] if the system RNG fails.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<(Self, String), SigningError> {
        let rcgen_alg = match algorithm {
            SigningAlgorithm::EdDSA => &PKCS_ED25519,
            _ => &PKCS_ECDSA_P256_SHA256,
        };
        let pair =
            KeyPair::generate_for(rcgen_alg).map_err(|e| SigningError::Key(e.to_string()))?;
        let pem = pair.serialize_pem();
        Ok((Self::from_key_pair(&pair)?, pem))
    }

    /// Loads a PKCS#8 PEM key (Ed25519 or P-256).
    ///
    /// # Errors
    /// [`SigningError::Key`] for unreadable or unsupported keys.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| SigningError::Key(e.to_string()))?;
        Self::from_key_pair(&pair)
    }

    fn from_key_pair(pair: &KeyPair) -> Result<Self, SigningError> {
        let public = pair.public_key_raw();
        let unreadable = |e: &dyn std::fmt::Display| SigningError::Key(e.to_string());
        let (algorithm, signer, jwk) = if pair.algorithm() == &PKCS_ED25519 {
            let jwk = Jwk::ed25519("", public);
            let key = ed25519_dalek::SigningKey::from_pkcs8_der(&pair.serialize_der())
                .map_err(|e| unreadable(&e))?;
            (
                SigningAlgorithm::EdDSA,
                KeySigner::Ed25519(Box::new(key)),
                jwk,
            )
        } else if pair.algorithm() == &PKCS_ECDSA_P256_SHA256 {
            let jwk = Jwk::p256("", public).ok_or_else(|| {
                SigningError::Key("P-256 public key is not an uncompressed point".into())
            })?;
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(&pair.serialize_der())
                .map_err(|e| unreadable(&e))?;
            (SigningAlgorithm::ES256, KeySigner::P256(Box::new(key)), jwk)
        } else {
            return Err(SigningError::Key(
                "only Ed25519 and P-256 keys are supported".into(),
            ));
        };
        let kid = jwk.thumbprint();
        Ok(Self {
            jwk: jwk.with_kid(kid.clone()),
            kid,
            algorithm,
            signer,
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
        // JWS signatures: Ed25519's 64 bytes; ES256's fixed-size r || s (RFC 7518 3.4).
        let signature = match &self.signer {
            KeySigner::Ed25519(key) => ed25519_dalek::Signer::sign(key.as_ref(), input.as_bytes())
                .to_bytes()
                .to_vec(),
            KeySigner::P256(key) => {
                let signature: p256::ecdsa::Signature = key
                    .try_sign(input.as_bytes())
                    .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)?;
                signature.to_bytes().to_vec()
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// Signs a token with `key` and verifies it against the key's own public
/// JWK, then checks that a tampered signature is refused: the issuer runs
/// this on every key it loads, so a key that cannot produce tokens its
/// verifiers accept stops it at start instead of failing every mint.
///
/// # Errors
/// [`SigningError::SelfTest`] describing the step that failed.
pub fn check_round_trip(key: &SigningKey) -> Result<(), SigningError> {
    let algorithm = key.algorithm();
    let failed = |detail: String| SigningError::SelfTest { algorithm, detail };
    let now = SystemClock.now();
    let claims = Claims {
        iss: "urn:authmesh:self-test".into(),
        sub: "self-test".into(),
        aud: "self-test".into(),
        exp: now + 60,
        nbf: Some(now),
        iat: now,
        jti: "self-test".into(),
        scope: String::new(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    };
    let token = key.sign(&claims).map_err(|e| failed(e.to_string()))?;
    let public = key
        .jwk()
        .to_verification_key()
        .map_err(|e| failed(e.to_string()))?;
    let parts = split_token(&token).map_err(|e| failed(e.to_string()))?;
    let header = parse_header(parts.header).map_err(|e| failed(e.to_string()))?;
    if header.kid != public.kid || header.alg != algorithm.name() {
        return Err(failed("header does not name the key".into()));
    }
    if !public.verify_signature(parts.signing_input.as_bytes(), parts.signature) {
        return Err(failed("the signature does not verify".into()));
    }
    if parse_claims(parts.payload).as_ref() != Ok(&claims) {
        return Err(failed("the claims do not read back".into()));
    }
    let swapped = if parts.signature.starts_with('A') {
        'B'
    } else {
        'A'
    };
    let tampered = format!("{swapped}{}", parts.signature.get(1..).unwrap_or_default());
    if public.verify_signature(parts.signing_input.as_bytes(), &tampered) {
        return Err(failed("a tampered signature verified".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
            cnf: None,
            one_time: false,
            act: None,
            subject_issuer: None,
        };
        let token = key.sign(&claims).expect("sign");
        let public = key.jwk().to_verification_key().expect("public key");
        let parts = split_token(&token).expect("three segments");
        assert_eq!(
            parse_header(parts.header).map(|h| h.kid),
            Ok(key.kid().to_owned())
        );
        assert!(public.verify_signature(parts.signing_input.as_bytes(), parts.signature));
        assert_eq!(parse_claims(parts.payload), Ok(claims));
        check_round_trip(&key).expect("round trip");
    }

    #[test]
    fn eddsa_keys_sign_tokens_the_verifier_accepts() {
        round_trip(SigningAlgorithm::EdDSA);
    }

    #[test]
    fn es256_keys_sign_tokens_the_verifier_accepts() {
        round_trip(SigningAlgorithm::ES256);
    }
}
