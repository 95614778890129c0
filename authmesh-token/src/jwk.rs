//! JSON Web Keys: the public form of the issuer's signing keys, and the
//! validation every key passes before the verifier trusts it.
//!
//! A key is bound to exactly one algorithm when it is loaded; the token's
//! `alg` must then equal it. Private parameters, symmetric keys, encryption
//! keys, wrong lengths, RSA keys under 2048 bits and duplicate `kid`s are
//! refused. An external identity provider's key set may also hold keys a
//! verifier has no use for (Keycloak publishes its encryption key beside
//! its signing keys): [`JwkSet::to_verification_keys_for`] can skip those.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::{JwsAlgorithm, SigningAlgorithm};

/// At most this many keys in one key set.
pub const MAX_KEYS: usize = 32;

/// Longest accepted `kid`.
const MAX_KID_LEN: usize = 128;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (what the RSA backend verifies).
const MAX_RSA_BITS: usize = 4096;

/// Shortest HS256 secret accepted, in bytes (RFC 7518 section 3.2).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The algorithms AuthMesh itself signs with: what its tokens' keys may be bound to.
pub const MESH_ALGORITHMS: [JwsAlgorithm; 2] = [JwsAlgorithm::EdDSA, JwsAlgorithm::ES256];

/// One public key (RFC 7517), as published by the issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`, `EC` or `RSA`.
    pub kty: String,
    /// Curve: `Ed25519` or `P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public key (OKP) or x coordinate (EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// y coordinate (EC), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Modulus (RSA), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// Public exponent (RSA), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Key id.
    pub kid: String,
    /// The one algorithm this key verifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use; only `sig` is accepted.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Private or symmetric key material; its presence alone refuses the key.
    #[serde(default, skip_serializing)]
    d: Option<serde_json::Value>,
    /// Symmetric key material (`oct` keys); refused.
    #[serde(default, skip_serializing)]
    k: Option<serde_json::Value>,
}

/// A JWK Set document (`{"keys": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// Why a key or key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key set is empty.
    #[error("key set is empty")]
    Empty,
    /// More keys than [`MAX_KEYS`].
    #[error("key set has more than {MAX_KEYS} keys")]
    TooManyKeys,
    /// Two keys share a `kid`.
    #[error("duplicate kid in key set")]
    DuplicateKid,
    /// The document is not JSON of the JWK Set shape.
    #[error("not a JWK Set: {0}")]
    NotAJwkSet(String),
    /// A key failed validation.
    #[error("key {kid:?} refused: {reason}")]
    Refused {
        /// The offending key's id (a public value), truncated.
        kid: String,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A validated public key, ready to verify signatures with its one algorithm.
#[derive(Clone)]
pub struct VerificationKey {
    /// Key id.
    pub kid: String,
    /// The algorithm bound to this key.
    pub algorithm: JwsAlgorithm,
    /// The public key material (base64url coordinates), to tell a changed key
    /// under the same `kid` from the same key republished.
    material: String,
    decoding: DecodingKey,
}

impl VerificationKey {
    /// An HS256 key from a shared secret: never from a key set, only from
    /// an issuer explicitly configured with one.
    ///
    /// # Errors
    /// [`KeyError::Refused`] for a secret shorter than [`MIN_HMAC_SECRET_BYTES`].
    pub fn hmac_secret(kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let kid = kid.into();
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(KeyError::Refused {
                kid,
                reason: "HS256 secret shorter than 32 bytes",
            });
        }
        Ok(Self {
            // Tells a changed secret from the same one re-read, without keeping a copy of it.
            material: URL_SAFE_NO_PAD.encode(Sha256::digest(secret)),
            kid,
            algorithm: JwsAlgorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// Whether `other` is the same key (same id, algorithm and material).
    pub fn same_key(&self, other: &VerificationKey) -> bool {
        self.kid == other.kid
            && self.algorithm == other.algorithm
            && self.material == other.material
    }

    /// Whether `signature` (base64url) is this key's signature over
    /// `signing_input` with its one algorithm. Any error (bad base64, a
    /// signature of the wrong length) is a "no".
    pub fn verify_signature(&self, signing_input: &[u8], signature: &str) -> bool {
        jsonwebtoken::crypto::verify(
            signature,
            signing_input,
            &self.decoding,
            self.algorithm.to_jwt(),
        )
        .unwrap_or(false)
    }
}

/// A valid signature for no key: verifying it must answer "no", never "error".
const PROBE_SIGNATURE: &str =
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    /// The public JWK of an Ed25519 key from its raw 32-byte public key.
    pub fn ed25519(kid: impl Into<String>, public_key: &[u8]) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(public_key)),
            y: None,
            kid: kid.into(),
            alg: Some(SigningAlgorithm::EdDSA.name().into()),
            key_use: Some("sig".into()),
            n: None,
            e: None,
            d: None,
            k: None,
        }
    }

    /// The public JWK of a P-256 key from its uncompressed SEC1 point (`04 || x || y`).
    pub fn p256(kid: impl Into<String>, uncompressed_point: &[u8]) -> Option<Jwk> {
        let [0x04, coordinates @ ..] = uncompressed_point else {
            return None;
        };
        if coordinates.len() != 64 {
            return None;
        }
        let (x, y) = coordinates.split_at(32);
        Some(Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(x)),
            y: Some(URL_SAFE_NO_PAD.encode(y)),
            kid: kid.into(),
            alg: Some(SigningAlgorithm::ES256.name().into()),
            key_use: Some("sig".into()),
            n: None,
            e: None,
            d: None,
            k: None,
        })
    }

    /// The public JWK of an RSA key for `algorithm` (RS256 or PS256) from its
    /// big-endian modulus and exponent; its `kid` is its RFC 7638 thumbprint.
    pub fn rsa(modulus: &[u8], exponent: &[u8], algorithm: JwsAlgorithm) -> Jwk {
        let jwk = Jwk {
            kty: "RSA".into(),
            crv: None,
            x: None,
            y: None,
            n: Some(URL_SAFE_NO_PAD.encode(modulus)),
            e: Some(URL_SAFE_NO_PAD.encode(exponent)),
            kid: String::new(),
            alg: Some(algorithm.name().into()),
            key_use: Some("sig".into()),
            d: None,
            k: None,
        };
        let kid = jwk.thumbprint();
        jwk.with_kid(kid)
    }

    /// The same key under another `kid`.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Jwk {
        self.kid = kid.into();
        self
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required public members in
    /// lexicographic order, base64url. A stable `kid` for the key (OKP, EC
    /// and RSA keys).
    pub fn thumbprint(&self) -> String {
        let member = |v: &Option<String>| v.clone().unwrap_or_default();
        let canonical = if self.kty == "EC" {
            serde_json::json!({"crv": member(&self.crv), "kty": "EC", "x": member(&self.x), "y": member(&self.y)})
        } else if self.kty == "RSA" {
            serde_json::json!({"e": member(&self.e), "kty": "RSA", "n": member(&self.n)})
        } else {
            serde_json::json!({"crv": member(&self.crv), "kty": self.kty, "x": member(&self.x)})
        };
        // serde_json's map keeps keys sorted, which is exactly RFC 7638's order.
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes()))
    }

    /// Validates this key as one of AuthMesh's own ([`MESH_ALGORITHMS`])
    /// and binds it to its one algorithm.
    ///
    /// # Errors
    /// [`KeyError::Refused`] naming what was wrong.
    pub fn to_verification_key(&self) -> Result<VerificationKey, KeyError> {
        self.to_verification_key_for(&MESH_ALGORITHMS)
    }

    /// Validates this key and binds it to its one algorithm, which must be
    /// one of `allowed`: its `alg` when it names one, else the algorithm of
    /// its type (RS256 for an RSA key, unless only PS256 is allowed).
    ///
    /// # Errors
    /// [`KeyError::Refused`] naming what was wrong.
    pub fn to_verification_key_for(
        &self,
        allowed: &[JwsAlgorithm],
    ) -> Result<VerificationKey, KeyError> {
        let refuse = |reason| KeyError::Refused {
            kid: self.kid.chars().take(MAX_KID_LEN).collect(),
            reason,
        };
        if self.kid.is_empty() || self.kid.len() > MAX_KID_LEN {
            return Err(refuse("kid missing or too long"));
        }
        if self.d.is_some() || self.k.is_some() {
            return Err(refuse("contains private or symmetric key material"));
        }
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return Err(refuse("use is not sig"));
        }
        let coordinate = |value: &Option<String>| -> Result<Vec<u8>, KeyError> {
            let value = value
                .as_deref()
                .ok_or_else(|| refuse("missing coordinate"))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| refuse("coordinate is not base64url"))?;
            if bytes.len() != 32 {
                return Err(refuse("wrong key length"));
            }
            Ok(bytes)
        };
        let (algorithm, decoding, material) = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                let x = coordinate(&self.x)?;
                let material = self.x.clone().unwrap_or_default();
                (JwsAlgorithm::EdDSA, DecodingKey::from_ed_der(&x), material)
            }
            ("EC", Some("P-256")) => {
                coordinate(&self.x)?;
                coordinate(&self.y)?;
                let (Some(x), Some(y)) = (&self.x, &self.y) else {
                    return Err(refuse("missing coordinate"));
                };
                let key = DecodingKey::from_ec_components(x, y)
                    .map_err(|_| refuse("invalid EC public key"))?;
                (JwsAlgorithm::ES256, key, format!("{x}.{y}"))
            }
            ("RSA", _) => {
                let algorithm = match self.alg.as_deref() {
                    Some("RS256") => JwsAlgorithm::RS256,
                    Some("PS256") => JwsAlgorithm::PS256,
                    Some(_) => return Err(refuse("alg is not RS256 or PS256")),
                    None if !allowed.contains(&JwsAlgorithm::RS256)
                        && allowed.contains(&JwsAlgorithm::PS256) =>
                    {
                        JwsAlgorithm::PS256
                    }
                    None => JwsAlgorithm::RS256,
                };
                let (n, e) =
                    rsa_components(self.n.as_deref(), self.e.as_deref()).map_err(refuse)?;
                let key = DecodingKey::from_rsa_components(n, e)
                    .map_err(|_| refuse("invalid RSA public key"))?;
                (algorithm, key, format!("{n}.{e}"))
            }
            ("oct", _) => return Err(refuse("symmetric keys are not accepted")),
            _ => return Err(refuse("unsupported kty/crv")),
        };
        if let Some(alg) = &self.alg
            && alg != algorithm.name()
        {
            return Err(refuse("alg does not match the key type"));
        }
        if !allowed.contains(&algorithm) {
            return Err(refuse("algorithm not accepted for this issuer"));
        }
        // The backend parses the point only when it verifies: probe once now
        // so a point off the curve refuses the key instead of every token.
        jsonwebtoken::crypto::verify(
            PROBE_SIGNATURE,
            b"authmesh key check",
            &decoding,
            algorithm.to_jwt(),
        )
        .map_err(|_| refuse("not a valid public key for its curve"))?;
        Ok(VerificationKey {
            kid: self.kid.clone(),
            algorithm,
            material,
            decoding,
        })
    }
}

/// Checks an RSA key's modulus (2048 to 4096 bits, no leading zero byte)
/// and exponent (odd, 3 to 2^31), and returns both as given.
fn rsa_components<'k>(
    n: Option<&'k str>,
    e: Option<&'k str>,
) -> Result<(&'k str, &'k str), &'static str> {
    let (Some(n), Some(e)) = (n, e) else {
        return Err("missing modulus or exponent");
    };
    let modulus = URL_SAFE_NO_PAD
        .decode(n)
        .map_err(|_| "modulus is not base64url")?;
    let exponent = URL_SAFE_NO_PAD
        .decode(e)
        .map_err(|_| "exponent is not base64url")?;
    let Some(&first) = modulus.first() else {
        return Err("empty modulus");
    };
    if first == 0 {
        return Err("modulus has a leading zero byte");
    }
    let bits = modulus.len() * 8 - first.leading_zeros() as usize;
    if bits < MIN_RSA_BITS {
        return Err("RSA key shorter than 2048 bits");
    }
    if bits > MAX_RSA_BITS {
        return Err("RSA key longer than 4096 bits");
    }
    if exponent.is_empty() || exponent.len() > 4 || exponent[0] == 0 {
        return Err("unusable RSA exponent");
    }
    let value = exponent
        .iter()
        .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
    if value < 3 || value % 2 == 0 || value > (1 << 31) {
        return Err("unusable RSA exponent");
    }
    Ok((n, e))
}

impl JwkSet {
    /// Parses a JWK Set document (`{"keys": [...]}`). The keys themselves
    /// are validated when a verifier installs them.
    ///
    /// # Errors
    /// [`KeyError::NotAJwkSet`] for anything but JSON of that shape.
    pub fn from_json(document: &[u8]) -> Result<JwkSet, KeyError> {
        serde_json::from_slice(document).map_err(|e| KeyError::NotAJwkSet(e.to_string()))
    }

    /// Validates every key. One bad key refuses the whole document, so a
    /// half-understood key set is never installed.
    ///
    /// # Errors
    /// [`KeyError`] naming the first problem.
    pub fn to_verification_keys(&self) -> Result<HashMap<String, VerificationKey>, KeyError> {
        self.to_verification_keys_for(&MESH_ALGORITHMS, false)
    }

    /// Validates every key for an issuer whose tokens use `allowed`. With
    /// `skip_unusable`, a key that is not for signing with one of those
    /// algorithms (an encryption key, another algorithm, a malformed or
    /// short key) is left out instead of refusing the document; at least
    /// one usable key must remain. Duplicate `kid`s refuse it either way.
    ///
    /// # Errors
    /// [`KeyError`] naming the first problem.
    pub fn to_verification_keys_for(
        &self,
        allowed: &[JwsAlgorithm],
        skip_unusable: bool,
    ) -> Result<HashMap<String, VerificationKey>, KeyError> {
        if self.keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if self.keys.len() > MAX_KEYS {
            return Err(KeyError::TooManyKeys);
        }
        let mut keys = HashMap::with_capacity(self.keys.len());
        let mut kids = std::collections::HashSet::with_capacity(self.keys.len());
        for jwk in &self.keys {
            if !kids.insert(jwk.kid.as_str()) {
                return Err(KeyError::DuplicateKid);
            }
            match jwk.to_verification_key_for(allowed) {
                Ok(key) => {
                    keys.insert(key.kid.clone(), key);
                }
                Err(KeyError::Refused { .. }) if skip_unusable => {}
                Err(err) => return Err(err),
            }
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(keys)
    }
}

#[cfg(feature = "proto")]
impl From<authmesh_proto::authmesh::v1::JsonWebKey> for Jwk {
    fn from(key: authmesh_proto::authmesh::v1::JsonWebKey) -> Jwk {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Jwk {
            kty: key.kty,
            crv: non_empty(key.crv),
            x: non_empty(key.x),
            y: non_empty(key.y),
            kid: key.kid,
            alg: non_empty(key.alg),
            key_use: non_empty(key.r#use),
            n: None,
            e: None,
            d: None,
            k: None,
        }
    }
}

#[cfg(feature = "proto")]
impl From<Jwk> for authmesh_proto::authmesh::v1::JsonWebKey {
    fn from(key: Jwk) -> Self {
        Self {
            kty: key.kty,
            crv: key.crv.unwrap_or_default(),
            x: key.x.unwrap_or_default(),
            y: key.y.unwrap_or_default(),
            kid: key.kid,
            alg: key.alg.unwrap_or_default(),
            r#use: key.key_use.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<HashMap<String, VerificationKey>, KeyError> {
        serde_json::from_str::<JwkSet>(json)
            .map_err(|_| KeyError::Empty)?
            .to_verification_keys()
    }

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn accepts_an_ed25519_signing_key() {
        let doc = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a","alg":"EdDSA","use":"sig"}}]}}"#
        );
        let keys = parse(&doc).map_err(|e| e.to_string());
        assert_eq!(keys.map(|k| k["a"].algorithm), Ok(JwsAlgorithm::EdDSA));
    }

    #[test]
    fn thumbprint_matches_rfc_8037() {
        let jwk = Jwk::ed25519("", &URL_SAFE_NO_PAD.decode(X).expect("b64"));
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    /// An RSA JWK with a modulus of `bits` bits (validation reads its
    /// size, not its factors).
    fn rsa(kid: &str, bits: usize, e: &str, alg: Option<&str>) -> Jwk {
        let mut modulus = vec![0x5a_u8; bits.div_ceil(8)];
        modulus[0] = 0x80 >> ((8 - bits % 8) % 8);
        let alg = alg.map_or(String::new(), |alg| format!(r#","alg":"{alg}""#));
        serde_json::from_str(&format!(
            r#"{{"kty":"RSA","kid":"{kid}","use":"sig","n":"{}","e":"{e}"{alg}}}"#,
            URL_SAFE_NO_PAD.encode(&modulus)
        ))
        .expect("jwk")
    }

    #[test]
    fn rsa_keys_are_bound_to_rs256_or_ps256_and_at_least_2048_bits() {
        let all = [
            JwsAlgorithm::RS256,
            JwsAlgorithm::PS256,
            JwsAlgorithm::ES256,
            JwsAlgorithm::EdDSA,
        ];
        let bound = |jwk: Jwk, allowed: &[JwsAlgorithm]| {
            jwk.to_verification_key_for(allowed)
                .map(|key| key.algorithm)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            bound(rsa("a", 2048, "AQAB", Some("RS256")), &all),
            Ok(JwsAlgorithm::RS256)
        );
        assert_eq!(
            bound(rsa("a", 4096, "AQAB", Some("PS256")), &all),
            Ok(JwsAlgorithm::PS256)
        );
        assert_eq!(
            bound(rsa("a", 2048, "AQAB", None), &all),
            Ok(JwsAlgorithm::RS256)
        );
        assert_eq!(
            bound(rsa("a", 3072, "AQAB", None), &[JwsAlgorithm::PS256]),
            Ok(JwsAlgorithm::PS256)
        );
        for (jwk, allowed, why) in [
            (rsa("a", 2047, "AQAB", None), &all[..], "shorter than 2048"),
            (
                rsa("a", 1024, "AQAB", Some("RS256")),
                &all[..],
                "shorter than 2048",
            ),
            (rsa("a", 8192, "AQAB", None), &all[..], "longer than 4096"),
            (rsa("a", 2048, "Ag", None), &all[..], "exponent"),
            (rsa("a", 2048, "AAEAAQ", None), &all[..], "exponent"),
            (
                rsa("a", 2048, "AQAB", Some("RS384")),
                &all[..],
                "not RS256 or PS256",
            ),
            (
                rsa("a", 2048, "AQAB", Some("RS256")),
                &MESH_ALGORITHMS[..],
                "not accepted",
            ),
        ] {
            let refused = bound(jwk, allowed).expect_err(why);
            assert!(refused.contains(why), "{refused}");
        }
        // The mesh's own key sets take no RSA key at all.
        assert!(
            JwkSet {
                keys: vec![rsa("a", 2048, "AQAB", None)]
            }
            .to_verification_keys()
            .is_err()
        );
    }

    #[test]
    fn an_external_set_leaves_out_what_it_cannot_use_but_not_duplicates() {
        let ed = |kid: &str| Jwk::ed25519(kid, &URL_SAFE_NO_PAD.decode(X).expect("b64"));
        let mut encryption = rsa("enc", 2048, "AQAB", None);
        encryption.key_use = Some("enc".into());
        let set = JwkSet {
            keys: vec![
                ed("a"),
                encryption,
                rsa("weak", 1024, "AQAB", None),
                rsa("b", 2048, "AQAB", None),
            ],
        };
        let allowed = [JwsAlgorithm::RS256, JwsAlgorithm::EdDSA];
        let mut kids: Vec<String> = set
            .to_verification_keys_for(&allowed, true)
            .expect("usable keys")
            .into_keys()
            .collect();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
        assert!(set.to_verification_keys_for(&allowed, false).is_err());
        let duplicate = JwkSet {
            keys: vec![ed("a"), rsa("a", 2048, "AQAB", None)],
        };
        assert_eq!(
            duplicate
                .to_verification_keys_for(&allowed, true)
                .map(|_| ()),
            Err(KeyError::DuplicateKid)
        );
        let nothing_usable = JwkSet {
            keys: vec![rsa("weak", 1024, "AQAB", None)],
        };
        assert_eq!(
            nothing_usable
                .to_verification_keys_for(&allowed, true)
                .map(|_| ()),
            Err(KeyError::Empty)
        );
    }

    #[test]
    fn a_shared_secret_has_at_least_32_bytes() {
        assert!(VerificationKey::hmac_secret("", &[7; 31]).is_err());
        let key = VerificationKey::hmac_secret("", &[7; 32]).expect("32 bytes");
        assert_eq!(key.algorithm, JwsAlgorithm::HS256);
        assert!(
            !format!("{key:?}").contains("7, 7"),
            "the secret stays out of Debug"
        );
    }

    #[test]
    fn rsa_thumbprint_matches_rfc_7638() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let jwk = Jwk::rsa(
            &URL_SAFE_NO_PAD.decode(n).expect("b64"),
            &[1, 0, 1],
            JwsAlgorithm::RS256,
        );
        assert_eq!(jwk.kid, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        assert_eq!(
            jwk.to_verification_key_for(&[JwsAlgorithm::RS256])
                .map(|key| key.algorithm),
            Ok(JwsAlgorithm::RS256)
        );
    }

    #[test]
    fn refuses_dangerous_keys() {
        for doc in [
            r#"{"keys":[]}"#.to_owned(),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a","use":"enc"}}]}}"#
            ),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a","d":"{X}"}}]}}"#
            ),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a","alg":"HS256"}}]}}"#
            ),
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a"}},{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"a"}}]}}"#
            ),
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}"#.to_owned(),
            r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"a"}]}"#.to_owned(),
            r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"a"}]}"#.to_owned(),
            // 32 bytes, but not a point on the curve.
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","kid":"a"}]}"#.to_owned(),
        ] {
            assert!(parse(&doc).is_err(), "{doc}");
        }
    }
}
