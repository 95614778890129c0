//! A JWKS document as a key source serves it: parsed as a JWK Set, then
//! every key validated and installed, as the mesh's own key set (all or
//! nothing) and as an external provider's (RSA too, unusable keys left
//! out). A refused document must leave the verifier's keys as they were;
//! nothing may panic.

#![no_main]

use auth_interceptor::{JwkSet, JwsAlgorithm};
use authmesh_fuzz::empty_verifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = serde_json::from_slice::<JwkSet>(data) else {
        return;
    };
    let verifier = empty_verifier();
    let checked = set.to_verification_keys();
    let installed = verifier.install_keys(&set);
    assert_eq!(
        checked.is_ok(),
        installed.is_ok(),
        "install agrees with validation"
    );
    match installed {
        Ok(()) => assert!(!verifier.key_ids().is_empty()),
        Err(_) => assert!(
            verifier.key_ids().is_empty(),
            "a refused set installs nothing"
        ),
    }
    // An external provider's set: never more keys than the document has,
    // and only keys of the algorithms asked for.
    let allowed = [
        JwsAlgorithm::RS256,
        JwsAlgorithm::PS256,
        JwsAlgorithm::ES256,
        JwsAlgorithm::EdDSA,
    ];
    if let Ok(keys) = set.to_verification_keys_for(&allowed, true) {
        assert!(!keys.is_empty() && keys.len() <= set.keys.len());
        assert!(keys.values().all(|key| allowed.contains(&key.algorithm)));
    }
});
