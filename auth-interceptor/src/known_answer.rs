//! The start-up self-test: fixed tokens, signed once by an independent
//! implementation (Python `cryptography`), must verify through the very
//! [`Verifier`] code every call runs, and copies with one signature byte
//! changed must not. A broken or mis-linked crypto backend then stops a
//! service at start instead of failing (or passing) every call. Nothing is
//! signed here: a verifier never links signing code.

use crate::{
    clock::Clock,
    jwk::{Jwk, JwkSet},
    token::SigningAlgorithm,
    verifier::{Verifier, VerifierConfig},
};

const ISSUER: &str = "urn:authmesh:known-answer";
const AUDIENCE: &str = "known-answer";
/// Between the vectors' `iat` (1700000000) and `exp` (1700000060).
const AT: u64 = 1_700_000_030;

/// One algorithm's vector: the public key and a token it signed.
struct Vector {
    algorithm: SigningAlgorithm,
    jwk: &'static str,
    token: &'static str,
}

/// RFC 8032 test key 1 for Ed25519; a fixed scalar for P-256.
const VECTORS: [Vector; 2] = [
    Vector {
        algorithm: SigningAlgorithm::EdDSA,
        jwk: r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"kat-ed25519","alg":"EdDSA","use":"sig"}"#,
        token: "eyJhbGciOiJFZERTQSIsImtpZCI6ImthdC1lZDI1NTE5IiwidHlwIjoiYXQrand0In0.eyJpc3MiOiJ1cm46YXV0aG1lc2g6a25vd24tYW5zd2VyIiwic3ViIjoiZWQyNTUxOSIsImF1ZCI6Imtub3duLWFuc3dlciIsImV4cCI6MTcwMDAwMDA2MCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiJrbm93bi1hbnN3ZXItRWREU0EifQ.u2DWlKupIzzA7The7kieFL12byGHusDH17SwSOZHPn_HWu1KUCGyl5hMWAVaurk10XbfoIW7enFVE_PP6dW6CQ",
    },
    Vector {
        algorithm: SigningAlgorithm::ES256,
        jwk: r#"{"kty":"EC","crv":"P-256","x":"2M0S6lxn8vigDBEkiT7c-mdUxNbO3mvhO98ilcgQqX8","y":"paidLSo2DAyppNbHye1LKNPhmdZify5pbWicMQpbD0g","kid":"kat-p256","alg":"ES256","use":"sig"}"#,
        token: "eyJhbGciOiJFUzI1NiIsImtpZCI6ImthdC1wMjU2IiwidHlwIjoiYXQrand0In0.eyJpc3MiOiJ1cm46YXV0aG1lc2g6a25vd24tYW5zd2VyIiwic3ViIjoicDI1NiIsImF1ZCI6Imtub3duLWFuc3dlciIsImV4cCI6MTcwMDAwMDA2MCwiaWF0IjoxNzAwMDAwMDAwLCJqdGkiOiJrbm93bi1hbnN3ZXItRVMyNTYifQ.J9dnv0friJAWBINCtENsVdPGRa1Kn-x0SCgCiYWVfL804TwRGaEmLSlK_8nPTKR_ucenu2WDJ_UubnKIGSg9iA",
    },
];

/// The self-test failed: the crypto backend cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("crypto self-test failed for {algorithm}: {detail}")]
pub struct SelfTestError {
    /// The algorithm whose vector failed.
    pub algorithm: SigningAlgorithm,
    /// Which step failed.
    pub detail: String,
}

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        AT
    }
}

/// Runs the known-answer test for every algorithm AuthMesh verifies.
///
/// # Errors
/// [`SelfTestError`] naming the algorithm and the step that failed.
pub fn self_test() -> Result<(), SelfTestError> {
    VECTORS.iter().try_for_each(check)
}

fn check(vector: &Vector) -> Result<(), SelfTestError> {
    let failed = |detail: String| SelfTestError {
        algorithm: vector.algorithm,
        detail,
    };
    let jwk: Jwk = serde_json::from_str(vector.jwk).map_err(|e| failed(e.to_string()))?;
    let verifier = Verifier::with_clock(
        VerifierConfig {
            record_metrics: false,
            ..VerifierConfig::new(ISSUER, AUDIENCE)
        },
        std::sync::Arc::new(FixedClock),
    )
    .map_err(|e| failed(e.to_string()))?;
    verifier
        .install_keys(&JwkSet { keys: vec![jwk] })
        .map_err(|e| failed(e.to_string()))?;
    verifier
        .verify(vector.token)
        .map_err(|e| failed(format!("the known token does not verify: {e}")))?;
    let (input, signature) = vector
        .token
        .rsplit_once('.')
        .ok_or_else(|| failed("vector is not a JWS".into()))?;
    // Change a byte in the middle: the first and last characters can carry
    // padding bits a lenient decoder might ignore.
    let middle = signature.len() / 2;
    let swapped = if signature.as_bytes()[middle] == b'A' {
        "B"
    } else {
        "A"
    };
    let tampered = format!(
        "{input}.{}{swapped}{}",
        &signature[..middle],
        &signature[middle + 1..]
    );
    if verifier.verify(&tampered).is_ok() {
        return Err(failed("a tampered signature verified".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_passes() {
        assert_eq!(self_test(), Ok(()));
    }

    #[test]
    fn a_wrong_key_fails_the_self_test() {
        let wrong = Vector {
            algorithm: SigningAlgorithm::EdDSA,
            jwk: VECTORS[1].jwk,
            token: VECTORS[0].token,
        };
        assert!(check(&wrong).is_err());
    }
}
