//! What the fuzz targets share: a verifier with one real Ed25519 key, on a
//! clock that never moves, so an input means the same thing on every run.

use std::sync::{Arc, OnceLock};

use auth_interceptor::{Clock, JwkSet, SigningAlgorithm, Verifier, VerifierConfig};
use authmesh_signing::SigningKey;

/// The issuer the fixture verifier trusts.
pub const ISSUER: &str = "https://issuer.fuzz";
/// The audience it verifies for.
pub const AUDIENCE: &str = "inventory";
/// Its fixed "now" (2033-05-18).
pub const NOW: u64 = 2_000_000_000;
/// In a header, stands for the fixture key's `kid` (which is random per run).
pub const KID_PLACEHOLDER: &[u8] = b"@kid";

#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        NOW
    }
}

/// The fixture: a signing key and a verifier that trusts exactly it.
pub struct Fixture {
    /// Signs what the fuzzer builds, so claim checks are reached.
    pub key: SigningKey,
    /// Verifies for [`ISSUER`] and [`AUDIENCE`] at [`NOW`].
    pub verifier: Verifier,
}

/// A verifier on a clock fixed at [`NOW`] with no keys installed.
pub fn empty_verifier() -> Verifier {
    let mut config = VerifierConfig::new(ISSUER, AUDIENCE);
    config.record_metrics = false;
    Verifier::with_clock(config, Arc::new(FixedClock)).expect("fixed settings are valid")
}

/// The shared fixture, built on first use.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (key, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("keygen");
        let verifier = empty_verifier();
        verifier
            .install_keys(&JwkSet {
                keys: vec![key.jwk().clone()],
            })
            .expect("the fixture key installs");
        Fixture { key, verifier }
    })
}
