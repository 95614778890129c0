//! A verifier trusting the mesh's issuer and external ones: the issuer is
//! chosen by `iss` before any key is tried, keys verify only their own
//! issuer's tokens, and each issuer's tokens are read per its profile.

use super::*;
use crate::token::ScopeClaim;

const MESH: &str = "https://issuer";
const IDP: &str = "https://idp.example/";
const LEGACY: &str = "https://legacy.example";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn hs256(claims: &str, header: &str) -> String {
    sign_with(
        &EncodingKey::from_secret(SECRET),
        jsonwebtoken::Algorithm::HS256,
        header,
        claims,
    )
}

/// Trusts the mesh (key `k1`), the IdP (its own key, also named `k1`,
/// scopes in `permissions`) and a shared-secret issuer.
fn setup() -> (Verifier, TestKey, TestKey, OffsetClock) {
    let clock = OffsetClock::new();
    let config = VerifierConfig::new(MESH, "inventory")
        .trust(IssuerProfile::external(IDP).with_scope_claim(ScopeClaim::Permissions))
        .trust(IssuerProfile::shared_secret(LEGACY));
    let verifier = Verifier::with_clock(config, Arc::new(clock.clone())).expect("config");
    let mesh_key = ed25519_key("k1");
    let idp_key = ed25519_key("k1");
    verifier
        .install_keys(&JwkSet {
            keys: vec![mesh_key.jwk.clone()],
        })
        .expect("mesh keys");
    verifier
        .for_issuer(IDP)
        .expect("trusted")
        .install_keys(&JwkSet {
            keys: vec![idp_key.jwk.clone()],
        })
        .expect("idp keys");
    verifier
        .for_issuer(LEGACY)
        .expect("trusted")
        .install_shared_secret(SECRET)
        .expect("secret");
    (verifier, mesh_key, idp_key, clock)
}

fn user_claims(iss: &str, aud: &str, now: u64) -> String {
    format!(
        r#"{{"iss":"{iss}","sub":"auth0|alice","aud":{aud},"exp":{},"iat":{now},"permissions":["inventory.read","inventory.reserve"],"azp":"web"}}"#,
        now + 600
    )
}

const USER_HEADER: &str = r#"{"alg":"EdDSA","kid":"k1","typ":"JWT","x5t":"informational"}"#;

#[test]
fn each_issuers_tokens_verify_with_its_own_keys_only() {
    let (verifier, mesh_key, idp_key, clock) = setup();
    let now = clock.now();
    let user = sign(
        &idp_key,
        USER_HEADER,
        &user_claims(IDP, r#"["inventory","https://idp.example/userinfo"]"#, now),
    );
    let claims = verifier.verify(&user).expect("the IdP's user token");
    assert_eq!(claims.iss, IDP);
    assert_eq!(claims.sub, "auth0|alice");
    assert_eq!(claims.aud, "inventory", "the audience this service matched");
    assert_eq!(claims.scope, "inventory.read inventory.reserve");
    assert_eq!(claims.client_id.as_deref(), Some("web"));
    assert!(claims.jti.is_empty() && !claims.one_time);
    // The mesh's own tokens, in the same verifier, still verify strictly.
    let mesh = sign(&mesh_key, &header("k1"), &claims_json(now, "inventory", 60));
    assert_eq!(
        verifier.verify(&mesh).map(|c| c.iss.clone()),
        Ok(MESH.into())
    );

    // The same kid at two issuers is two keys: neither verifies the other's tokens.
    let forged_user = sign(
        &mesh_key,
        USER_HEADER,
        &user_claims(IDP, r#""inventory""#, now),
    );
    assert_eq!(verifier.verify(&forged_user), Err(AuthError::BadSignature));
    let forged_mesh = sign(&idp_key, &header("k1"), &claims_json(now, "inventory", 60));
    assert_eq!(verifier.verify(&forged_mesh), Err(AuthError::BadSignature));

    // An `iss` that differs by a trailing slash or by case is not trusted.
    for iss in [
        "https://idp.example",
        "https://IDP.example/",
        "https://evil",
    ] {
        let token = sign(
            &idp_key,
            USER_HEADER,
            &user_claims(iss, r#""inventory""#, now),
        );
        assert_eq!(
            verifier.verify(&token),
            Err(AuthError::UntrustedIssuer),
            "{iss}"
        );
    }
    // A kid only the IdP publishes is unknown to the mesh issuer.
    let idp_only = ed25519_key("k2");
    verifier
        .for_issuer(IDP)
        .expect("trusted")
        .install_keys(&JwkSet {
            keys: vec![idp_key.jwk.clone(), idp_only.jwk.clone()],
        })
        .expect("idp keys");
    let token = sign(&idp_only, &header("k2"), &claims_json(now, "inventory", 60));
    assert_eq!(verifier.verify(&token), Err(AuthError::UnknownKey));
}

#[test]
fn an_external_token_is_read_per_its_issuers_profile() {
    let (verifier, mesh_key, idp_key, clock) = setup();
    let now = clock.now();
    let claims = |aud: &str| user_claims(IDP, aud, now);
    let cases: Vec<(String, String, AuthError)> = vec![
        (
            USER_HEADER.into(),
            claims(r#"["orders","billing"]"#),
            AuthError::AudienceMismatch,
        ),
        (
            r#"{"alg":"EdDSA","kid":"k1"}"#.into(),
            claims(r#""inventory""#),
            TokenError::MissingHeader("typ").into(),
        ),
        (
            r#"{"alg":"EdDSA","kid":"k1","typ":"id+jwt"}"#.into(),
            claims(r#""inventory""#),
            TokenError::WrongType.into(),
        ),
        (
            r#"{"alg":"EdDSA","kid":"k1","typ":"JWT","jku":"https://evil/jwks"}"#.into(),
            claims(r#""inventory""#),
            TokenError::UnsupportedHeader("jku").into(),
        ),
        (
            r#"{"alg":"none","kid":"k1","typ":"JWT"}"#.into(),
            claims(r#""inventory""#),
            AuthError::AlgorithmMismatch,
        ),
        (
            r#"{"alg":"EdDSA","typ":"JWT"}"#.into(),
            claims(r#""inventory""#),
            TokenError::MissingHeader("kid").into(),
        ),
        (
            USER_HEADER.into(),
            claims(r#""inventory""#).replace(r#""sub":"auth0|alice","#, ""),
            TokenError::MissingClaim("sub").into(),
        ),
        (
            USER_HEADER.into(),
            claims(r#"[1]"#),
            TokenError::InvalidClaim("aud").into(),
        ),
        (
            USER_HEADER.into(),
            claims(r#""inventory""#).replace(r#""inventory.read","#, r#""a b","#),
            TokenError::InvalidClaim("permissions").into(),
        ),
        (
            USER_HEADER.into(),
            claims(r#""inventory""#).replace(
                &format!(r#""exp":{}"#, now + 600),
                &format!(r#""exp":{}"#, now + 2 * 86_400),
            ),
            AuthError::LifetimeTooLong,
        ),
    ];
    for (header, claims, expected) in cases {
        assert_eq!(
            verifier.verify(&sign(&idp_key, &header, &claims)),
            Err(expected),
            "{header} {claims}"
        );
    }
    // The mesh issuer keeps its profile: no `JWT` type, no `aud` array.
    let mesh_claims = claims_json(now, "inventory", 60);
    assert_eq!(
        verifier.verify(&sign(
            &mesh_key,
            r#"{"alg":"EdDSA","kid":"k1","typ":"JWT"}"#,
            &mesh_claims
        )),
        Err(TokenError::WrongType.into())
    );
    assert_eq!(
        verifier.verify(&sign(
            &mesh_key,
            &header("k1"),
            &mesh_claims.replace(r#""aud":"inventory""#, r#""aud":["inventory"]"#)
        )),
        Err(TokenError::InvalidClaim("aud").into())
    );
    // An external token's `one_time` is not the mesh's to honour.
    let one_time = sign(
        &idp_key,
        USER_HEADER,
        &claims(r#""inventory""#).replace(r#""azp""#, r#""one_time":true,"azp""#),
    );
    assert!(!verifier.verify(&one_time).expect("verifies").one_time);
}

#[test]
fn a_shared_secret_issuer_takes_hs256_alone() {
    let (verifier, _, idp_key, clock) = setup();
    let now = clock.now();
    let legacy_claims = user_claims(LEGACY, r#""inventory""#, now);
    // express-jwt's tokens: HS256, often without a kid.
    let token = hs256(&legacy_claims, r#"{"alg":"HS256","typ":"JWT"}"#);
    assert_eq!(
        verifier.verify(&token).map(|c| c.iss.clone()),
        Ok(LEGACY.into())
    );
    // Another algorithm for that issuer, and HS256 for any other, are refused.
    let asymmetric = sign(&idp_key, USER_HEADER, &legacy_claims);
    assert_eq!(
        verifier.verify(&asymmetric),
        Err(AuthError::AlgorithmMismatch)
    );
    let confused = hs256(
        &user_claims(IDP, r#""inventory""#, now),
        r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#,
    );
    assert_eq!(
        verifier.verify(&confused),
        Err(AuthError::AlgorithmMismatch)
    );

    // Short secrets, HS256 beside other algorithms, and secrets for an
    // issuer that accepts more than HS256 are refused.
    let legacy = verifier.for_issuer(LEGACY).expect("trusted");
    assert!(legacy.install_shared_secret(&SECRET[..31]).is_err());
    assert!(
        verifier
            .for_issuer(IDP)
            .expect("trusted")
            .install_shared_secret(SECRET)
            .is_err()
    );
    let mixed = VerifierConfig::new(MESH, "inventory").trust(
        IssuerProfile::shared_secret(LEGACY)
            .with_algorithms([JwsAlgorithm::HS256, JwsAlgorithm::RS256]),
    );
    assert!(matches!(
        Verifier::new(mixed),
        Err(ConfigError::TrustedIssuer { .. })
    ));
    let twice = VerifierConfig::new(MESH, "inventory").trust(IssuerProfile::external(MESH));
    assert!(matches!(
        Verifier::new(twice),
        Err(ConfigError::TrustedIssuer { .. })
    ));
}

#[test]
fn an_external_key_set_keeps_the_keys_it_can_use() {
    let (verifier, _, idp_key, _) = setup();
    let idp = verifier.for_issuer(IDP).expect("trusted");
    // Keycloak publishes its encryption key beside its signing keys.
    let mut encryption = ed25519_key("enc").jwk;
    encryption.key_use = Some("enc".into());
    idp.install_keys(&JwkSet {
        keys: vec![idp_key.jwk.clone(), encryption.clone()],
    })
    .expect("the signing key is kept");
    assert_eq!(idp.key_ids(), ["k1"]);
    assert!(
        idp.install_keys(&JwkSet {
            keys: vec![encryption.clone()]
        })
        .is_err()
    );
    // The mesh's own set is all or nothing, as before.
    assert!(
        verifier
            .install_keys(&JwkSet {
                keys: vec![idp_key.jwk.clone(), encryption]
            })
            .is_err()
    );
    assert_eq!(verifier.issuer(), MESH);
    assert_eq!(idp.issuer(), IDP);
    assert!(verifier.for_issuer("https://idp.example").is_none());
}

#[test]
fn cached_external_tokens_expire_per_their_issuers_leeway() {
    let clock = OffsetClock::new();
    let mut profile = IssuerProfile::external(IDP);
    profile.leeway_seconds = 5;
    let verifier = Verifier::with_clock(
        VerifierConfig::new(MESH, "inventory").trust(profile),
        Arc::new(clock.clone()),
    )
    .expect("config");
    let key = ed25519_key("k1");
    verifier
        .for_issuer(IDP)
        .expect("trusted")
        .install_keys(&JwkSet {
            keys: vec![key.jwk.clone()],
        })
        .expect("keys");
    let now = clock.now();
    let token = sign(&key, USER_HEADER, &user_claims(IDP, r#""inventory""#, now));
    let claims = verifier.verify(&token).expect("verifies");
    assert!(verifier.verify(&token).is_ok(), "from the cache");
    clock.advance(600 + 5);
    assert!(verifier.verify(&token).is_ok(), "within the IdP's leeway");
    assert!(verifier.still_valid(&claims).is_ok());
    clock.advance(1);
    assert_eq!(verifier.verify(&token), Err(AuthError::Expired));
    assert_eq!(verifier.still_valid(&claims), Err(AuthError::Expired));
}
