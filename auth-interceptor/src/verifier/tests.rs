use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;

use super::*;
use crate::{
    clock::{Clock, OffsetClock},
    jwk::Jwk,
};

struct TestKey {
    encoding: EncodingKey,
    jwk: Jwk,
}

fn ed25519_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keygen");
    TestKey {
        encoding: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: Jwk::ed25519(kid, pair.public_key_raw()),
    }
}

fn sign(key: &TestKey, header: &str, claims: &str) -> String {
    sign_with(
        &key.encoding,
        jsonwebtoken::Algorithm::EdDSA,
        header,
        claims,
    )
}

/// `header` and `claims` as given, signed with `encoding` and `algorithm`.
fn sign_with(
    encoding: &EncodingKey,
    algorithm: jsonwebtoken::Algorithm,
    header: &str,
    claims: &str,
) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), encoding, algorithm).expect("sign");
    format!("{input}.{sig}")
}

fn claims_json(now: u64, aud: &str, exp_in: u64) -> String {
    format!(
        r#"{{"iss":"https://issuer","sub":"orders","aud":"{aud}","exp":{},"iat":{now},"jti":"j1","scope":"inventory.read"}}"#,
        now + exp_in
    )
}

fn setup() -> (Verifier, TestKey, OffsetClock) {
    let clock = OffsetClock::new();
    let verifier = Verifier::with_clock(
        VerifierConfig::new("https://issuer", "inventory"),
        Arc::new(clock.clone()),
    )
    .expect("config");
    let key = ed25519_key("k1");
    verifier
        .install_keys(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .expect("keys");
    (verifier, key, clock)
}

fn header(kid: &str) -> String {
    format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"at+jwt"}}"#)
}

#[test]
fn verifies_then_serves_from_cache_but_still_checks_expiry() {
    let (verifier, key, clock) = setup();
    let now = clock.now();
    let token = sign(&key, &header("k1"), &claims_json(now, "inventory", 60));
    assert_eq!(
        verifier.verify(&token).map(|c| c.sub.clone()),
        Ok("orders".into())
    );
    assert!(verifier.verify(&token).is_ok());
    clock.advance(60 + 29);
    assert!(verifier.verify(&token).is_ok(), "within leeway");
    clock.advance(2);
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
}

#[test]
fn refuses_wrong_audience_issuer_and_times() {
    let (verifier, key, clock) = setup();
    let now = clock.now();
    let cases = [
        (claims_json(now, "orders", 60), AuthError::AudienceMismatch),
        (
            claims_json(now, "inventory", 60).replace("https://issuer", "https://evil"),
            AuthError::IssuerMismatch,
        ),
        (
            claims_json(now, "inventory", 86_400 * 3650),
            AuthError::LifetimeTooLong,
        ),
        (
            format!(
                r#"{{"iss":"https://issuer","sub":"o","aud":"inventory","exp":{},"iat":{},"jti":"j"}}"#,
                now + 7200,
                now + 3600
            ),
            AuthError::IssuedInFuture,
        ),
        (
            format!(
                r#"{{"iss":"https://issuer","sub":"o","aud":"inventory","exp":{},"nbf":{},"iat":{now},"jti":"j"}}"#,
                now + 3600,
                now + 3000
            ),
            AuthError::NotYetValid,
        ),
    ];
    for (claims, expected) in cases {
        assert_eq!(
            verifier.verify(&sign(&key, &header("k1"), &claims)),
            Err(expected),
            "{claims}"
        );
    }
}

#[test]
fn unknown_kid_asks_for_refresh_and_wrong_alg_is_refused() {
    let (verifier, key, clock) = setup();
    let claims = claims_json(clock.now(), "inventory", 60);
    let unknown = sign(&key, &header("nope"), &claims);
    assert_eq!(verifier.verify(&unknown), Err(AuthError::UnknownKey));
    let hs = sign(
        &key,
        r#"{"alg":"HS256","kid":"k1","typ":"at+jwt"}"#,
        &claims,
    );
    assert_eq!(verifier.verify(&hs), Err(AuthError::AlgorithmMismatch));
    let other = ed25519_key("k1");
    assert_eq!(
        verifier.verify(&sign(&other, &header("k1"), &claims)),
        Err(AuthError::BadSignature)
    );
    let token = sign(&key, &header("k1"), &claims);
    let (head, _) = token.rsplit_once('.').expect("dot");
    assert_eq!(
        verifier.verify(&format!("{head}.")),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn no_keys_means_unavailable_and_key_removal_empties_the_cache() {
    let clock = OffsetClock::new();
    let verifier = Verifier::with_clock(
        VerifierConfig::new("https://issuer", "inventory"),
        Arc::new(clock.clone()),
    )
    .expect("config");
    let key = ed25519_key("k1");
    let token = sign(
        &key,
        &header("k1"),
        &claims_json(clock.now(), "inventory", 60),
    );
    assert_eq!(verifier.verify(&token), Err(AuthError::KeysUnavailable));
    verifier
        .install_keys(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .expect("keys");
    // Twice and more: this thread then holds its own copy of the claims.
    for _ in 0..3 {
        assert!(verifier.verify(&token).is_ok());
    }
    let next = ed25519_key("k2");
    verifier
        .install_keys(&JwkSet {
            keys: vec![next.jwk],
        })
        .expect("keys");
    assert_eq!(verifier.verify(&token), Err(AuthError::UnknownKey));
}

#[test]
fn leeway_above_a_minute_is_refused() {
    let mut config = VerifierConfig::new("i", "a");
    config.leeway_seconds = 61;
    assert!(matches!(
        Verifier::new(config),
        Err(ConfigError::LeewayTooLarge(61))
    ));
}

#[test]
fn a_cached_token_counts_only_while_its_exact_key_is_trusted() {
    let (verifier, key, clock) = setup();
    let token = sign(
        &key,
        &header("k1"),
        &claims_json(clock.now(), "inventory", 60),
    );
    assert!(verifier.verify(&token).is_ok());
    // A routine refresh with the same key keeps the cached entry usable.
    verifier
        .install_keys(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .expect("same keys");
    assert!(verifier.verify(&token).is_ok());
    // Different material under the same kid: the cached token must not pass.
    let replacement = ed25519_key("k1");
    verifier
        .install_keys(&JwkSet {
            keys: vec![replacement.jwk],
        })
        .expect("new key");
    assert_eq!(verifier.verify(&token), Err(AuthError::BadSignature));
}

#[test]
fn a_token_remembered_by_one_verifier_means_nothing_to_another() {
    let (inventory, key, clock) = setup();
    let orders = Verifier::with_clock(
        VerifierConfig::new("https://issuer", "orders"),
        Arc::new(clock.clone()),
    )
    .expect("config");
    orders
        .install_keys(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .expect("keys");
    let token = sign(
        &key,
        &header("k1"),
        &claims_json(clock.now(), "inventory", 60),
    );
    for _ in 0..3 {
        assert!(inventory.verify(&token).is_ok());
        assert_eq!(orders.verify(&token), Err(AuthError::AudienceMismatch));
    }
}

const HEADER: &str = r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#;

#[test]
fn no_token_passes_until_the_revocation_list_arrived() {
    let (verifier, key, clock) = setup();
    let token = sign(&key, HEADER, &claims_json(clock.now(), "inventory", 300));
    verifier.verify(&token).expect("no watch: no list needed");
    verifier.require_revocation_sync();
    // Even a token already in the cache.
    assert_eq!(
        verifier.verify(&token),
        Err(AuthError::RevocationsUnavailable)
    );
    verifier.mark_revocations_synced();
    verifier.verify(&token).expect("list received");
    // A reconnecting watch does not close the gate again.
    verifier.require_revocation_sync();
    verifier.verify(&token).expect("still synced");
}

#[test]
fn revocations_apply_to_cached_tokens_and_subject_cutoffs_outlive_their_tokens() {
    let (verifier, key, clock) = setup();
    let now = clock.now();
    let token = sign(&key, HEADER, &claims_json(now, "inventory", 300));
    verifier.verify(&token).expect("cached");
    verifier.apply_revocations(&[Revocation {
        target: RevokedTarget::Subject {
            sub: "orders".into(),
            issued_before: now,
        },
        // Too short by the issuer's account; the verifier's own maximum lifetime wins.
        expires_at: now,
        revoked_at: now,
    }]);
    assert_eq!(verifier.verify(&token), Err(AuthError::Revoked));
    clock.advance(600);
    assert_eq!(
        verifier.prune_revocations(),
        0,
        "kept for the maximum lifetime"
    );
    clock.advance(3600);
    assert_eq!(verifier.prune_revocations(), 1);
}

mod trusted_issuers;
