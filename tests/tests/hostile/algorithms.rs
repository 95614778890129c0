//! Algorithms and keys: the header tries to choose how it is checked.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;

use crate::{Suite, attacker_ed25519, b64, named, sign_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_in_any_spelling_empty_missing_or_not_a_string() {
    let suite = Suite::start().await;
    let claims = b64(suite.claims().to_string());
    let genuine = suite.genuine();
    let (_, real_signature) = genuine.rsplit_once('.').expect("signature");
    let algs: Vec<(&str, Option<Value>)> = vec![
        ("none", Some(json!("none"))),
        ("None", Some(json!("None"))),
        ("NONE", Some(json!("NONE"))),
        ("nOnE", Some(json!("nOnE"))),
        ("empty", Some(json!(""))),
        ("missing", None),
        ("null", Some(Value::Null)),
        ("number", Some(json!(0))),
        ("array", Some(json!(["EdDSA"]))),
        ("object", Some(json!({"alg": "EdDSA"}))),
    ];
    for (case, alg) in algs {
        let mut header = json!({"typ": "at+jwt", "kid": suite.kid});
        let is_string = alg.as_ref().is_some_and(Value::is_string);
        if let Some(alg) = alg {
            header["alg"] = alg;
        }
        let header = b64(header.to_string());
        for signature in ["", real_signature] {
            suite
                .refused(
                    &format!("alg {case}"),
                    &format!("{header}.{claims}.{signature}"),
                    Code::Unauthenticated,
                    // A string is an algorithm name (one the key does not
                    // have); anything else is a header member of the wrong type.
                    if is_string {
                        "ALGORITHM_MISMATCH"
                    } else if case == "missing" {
                        "HEADER_MISSING"
                    } else {
                        "HEADER_INVALID"
                    },
                )
                .await;
        }
    }
    suite.mesh.stop().await;
}

/// Signs the suite's claims with HS256 under `secret`, naming the issuer's `kid`.
fn hs256(suite: &Suite, secret: &[u8]) -> String {
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": suite.kid});
    sign_with(
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
        header.to_string().as_bytes(),
        suite.claims().to_string().as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_signed_with_the_public_key_in_any_encoding() {
    let suite = Suite::start().await;
    let issuer = rcgen::KeyPair::from_pem(&suite.issuer_pem).expect("issuer key");
    let jwks = suite
        .mesh
        .token_client()
        .get_jwks(authmesh_proto::authmesh::v1::GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner();
    let jwk = auth_interceptor::Jwk::from(jwks.keys.into_iter().next().expect("a key"));
    let jwk_text = serde_json::to_string(&jwk).expect("jwk");
    let x = jwk.x.clone().expect("x");
    for (case, secret) in [
        ("PEM", issuer.public_key_pem().into_bytes()),
        (
            "DER",
            rcgen::PublicKeyData::subject_public_key_info(&issuer),
        ),
        ("raw", issuer.public_key_raw().to_vec()),
        ("JWK text", jwk_text.into_bytes()),
        ("JWK x", x.into_bytes()),
    ] {
        suite
            .refused(
                &format!("HS256 with the public key as {case}"),
                &hs256(&suite, &secret),
                Code::Unauthenticated,
                "ALGORITHM_MISMATCH",
            )
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_with_an_empty_or_common_secret() {
    let suite = Suite::start().await;
    let issuer = suite.mesh.issuer();
    for secret in [
        "", "secret", "password", "changeme", "authmesh", &suite.kid, &issuer,
    ] {
        suite
            .refused(
                &format!("HS256 with {secret:?}"),
                &hs256(&suite, secret.as_bytes()),
                Code::Unauthenticated,
                "ALGORITHM_MISMATCH",
            )
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kid_of_an_ed25519_key_with_any_other_alg() {
    let suite = Suite::start().await;
    let claims = suite.claims().to_string();
    let es256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let es256 = EncodingKey::from_ec_der(&es256.serialize_der());
    for alg in [
        "ES256", "ES384", "RS256", "PS256", "HS256", "HS512", "Ed25519", "eddsa", "EDDSA",
    ] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": suite.kid}).to_string();
        // Signed with whatever fits the claimed algorithm; the alg alone must refuse it.
        let token = match alg {
            "ES256" => sign_with(
                &es256,
                Algorithm::ES256,
                header.as_bytes(),
                claims.as_bytes(),
            ),
            "HS256" | "HS512" => sign_with(
                &EncodingKey::from_secret(b"secret"),
                Algorithm::HS256,
                header.as_bytes(),
                claims.as_bytes(),
            ),
            _ => suite.sign_bytes(header.as_bytes(), claims.as_bytes()),
        };
        suite
            .refused(
                &format!("alg {alg}"),
                &token,
                Code::Unauthenticated,
                "ALGORITHM_MISMATCH",
            )
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_jwk_or_jku_and_x5u_pointing_elsewhere() {
    let suite = Suite::start().await;
    // Where an obedient verifier would fetch keys from: it must never be dialled.
    let bait = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://127.0.0.1:{}/jwks.json",
        bait.local_addr().expect("addr").port()
    );
    let (attacker, pair) = attacker_ed25519();
    let attacker_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "kid": "attacker", "alg": "EdDSA", "use": "sig",
        "x": b64(pair.public_key_raw()),
    });
    let claims = suite.claims().to_string();
    let headers = [
        (
            "embedded jwk",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker", "jwk": attacker_jwk}),
        ),
        (
            "embedded jwk, real kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "jwk": attacker_jwk}),
        ),
        (
            "jku",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "attacker", "jku": url}),
        ),
        (
            "jku, real kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "jku": url}),
        ),
        (
            "x5u",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "x5u": url}),
        ),
        (
            "x5c",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "x5c": [b64(rcgen::PublicKeyData::subject_public_key_info(&pair))]}),
        ),
        (
            "crit",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "crit": ["exp"]}),
        ),
        (
            "b64",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "b64": false}),
        ),
        (
            "zip",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "zip": "DEF"}),
        ),
        (
            "cty",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "cty": "JWT"}),
        ),
        (
            "unknown name",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": suite.kid, "x-extra": 1}),
        ),
    ];
    for (case, header) in headers {
        let token = sign_with(
            &attacker,
            Algorithm::EdDSA,
            header.to_string().as_bytes(),
            claims.as_bytes(),
        );
        // Registered names are named; anything else is `unknown`, so no
        // text of the attacker's comes back.
        let extra = header
            .as_object()
            .and_then(|h| {
                h.keys()
                    .find(|k| !["alg", "kid", "typ"].contains(&k.as_str()))
            })
            .cloned()
            .unwrap_or_default();
        let expected = if extra == "x-extra" {
            "unknown"
        } else {
            extra.as_str()
        };
        let status = suite
            .refused(case, &token, Code::Unauthenticated, "HEADER_UNSUPPORTED")
            .await;
        assert_eq!(
            named(&status, "header").as_deref(),
            Some(expected),
            "{case}"
        );
        // The same header signed with the issuer's own key: still refused.
        let token = suite.sign(&header, &suite.claims());
        suite
            .refused(case, &token, Code::Unauthenticated, "HEADER_UNSUPPORTED")
            .await;
    }
    let dialled = tokio::time::timeout(std::time::Duration::from_secs(1), bait.accept()).await;
    assert!(
        dialled.is_err(),
        "a token made a server connect to the URL it named"
    );
    suite.mesh.stop().await;
}
