//! Micro-benchmarks of the verification path: a cache hit (one caller, and
//! a thousand in turn), a cold verify
//! per algorithm beside the bare signature check it cannot beat (the
//! floor), minting, policy evaluation by policy size, and the whole auth
//! layer around a handler that does nothing. `cargo bench -p auth-interceptor`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a benchmark binary: panics are its failures

use std::{convert::Infallible, hint::black_box, time::SystemTime};

use auth_interceptor::{
    AuthLayer, Claims, JwkSet, MethodKinds, MethodPolicy, SigningAlgorithm, Verifier,
    VerifierConfig, token::split_token,
};
use authmesh_signing::SigningKey;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, service_fn};

#[path = "../tests/support/mod.rs"]
mod support;
use support::{call_now, tonic_answer, tonic_request};

const ISSUER: &str = "https://bench.authmesh.local";
const AUDIENCE: &str = "inventory";
const METHOD: &str = "/demo.inventory.v1.Inventory/GetStock";
const SCOPE: &str = "inventory.read";
const ALGORITHMS: [SigningAlgorithm; 2] = [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256];

fn claims() -> Claims {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Claims {
        iss: ISSUER.into(),
        sub: "bench-client".into(),
        aud: AUDIENCE.into(),
        exp: now + 3000,
        nbf: None,
        iat: now,
        jti: format!("{:032x}", rand::random::<u128>()),
        scope: SCOPE.into(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    }
}

fn key_and_verifier(algorithm: SigningAlgorithm) -> (SigningKey, Verifier) {
    let (key, _pem) = SigningKey::generate(algorithm).unwrap();
    let verifier = Verifier::new(VerifierConfig::new(ISSUER, AUDIENCE)).unwrap();
    verifier
        .install_keys(&JwkSet {
            keys: vec![key.jwk().clone()],
        })
        .unwrap();
    (key, verifier)
}

fn verify(c: &mut Criterion) {
    let (key, verifier) = key_and_verifier(SigningAlgorithm::EdDSA);
    let token = key.sign(&claims()).unwrap();
    verifier.verify(&token).unwrap();
    c.bench_function("verify/hot", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    // Cache hits from a thousand callers in turn: each token is hashed again.
    let callers: Vec<String> = (0..1000).map(|_| key.sign(&claims()).unwrap()).collect();
    for token in &callers {
        verifier.verify(token).unwrap();
    }
    let mut turn = callers.iter().cycle();
    c.bench_function("verify/hot-1000-callers", |b| {
        b.iter(|| verifier.verify(turn.next().unwrap()).unwrap())
    });
    for algorithm in ALGORITHMS {
        let (key, verifier) = key_and_verifier(algorithm);
        c.bench_function(&format!("verify/cold/{algorithm}"), |b| {
            b.iter_batched(
                || key.sign(&claims()).unwrap(),
                |token| verifier.verify(&token).unwrap(),
                BatchSize::SmallInput,
            )
        });
        // The floor: jsonwebtoken's signature check alone, same key, same token shape.
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(serde_json::to_value(key.jwk()).unwrap()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let token = key.sign(&claims()).unwrap();
        let parts = split_token(&token).unwrap();
        c.bench_function(&format!("signature/raw/{algorithm}"), |b| {
            b.iter(|| {
                assert!(
                    jsonwebtoken::crypto::verify(
                        black_box(parts.signature),
                        black_box(parts.signing_input.as_bytes()),
                        &decoding,
                        algorithm.to_jwt(),
                    )
                    .unwrap()
                )
            })
        });
        c.bench_function(&format!("mint/{algorithm}"), |b| {
            b.iter(|| key.sign(black_box(&claims())).unwrap())
        });
    }
}

fn policy(c: &mut Criterion) {
    let (key, verifier) = key_and_verifier(SigningAlgorithm::EdDSA);
    let verified = verifier.verify(&key.sign(&claims()).unwrap()).unwrap();
    for rules in [1, 100, 1000] {
        // The method called is covered by the last rule added.
        let policy = (1..rules).fold(MethodPolicy::new(), |policy, index| {
            policy.require(format!("/bench.Service{index}/Method"), [SCOPE])
        });
        let policy = policy.require(METHOD, [SCOPE]);
        c.bench_function(&format!("policy/authorize/{rules}"), |b| {
            b.iter(|| policy.authorize(black_box(METHOD), &verified).unwrap())
        });
    }
}

fn layer(c: &mut Criterion) {
    let (key, verifier) = key_and_verifier(SigningAlgorithm::EdDSA);
    let bearer = format!("Bearer {}", key.sign(&claims()).unwrap());
    let handler = service_fn(|_request: http::Request<tonic::body::Body>| async {
        Ok::<_, Infallible>(tonic_answer())
    });
    // As tonic's transport hands requests to the layers: with its
    // connection info in the extensions.
    let request = || tonic_request(METHOD, &bearer, None);
    let mut plain = handler;
    c.bench_function("layer/none", |b| {
        b.iter_batched(
            request,
            |request| call_now(&mut plain, request),
            BatchSize::SmallInput,
        )
    });
    let layer = AuthLayer::new(verifier, MethodPolicy::new().require(METHOD, [SCOPE]));
    // As AuthMesh's servers run it: told which methods are unary.
    let unary = MethodKinds::new().single_response(METHOD);
    let authed = layer.clone().method_kinds(unary).layer(handler);
    bench_allowed(c, "layer/auth-hot", authed, request);
    // A method of unknown kind: its response is bound to the token.
    bench_allowed(c, "layer/auth-hot-bound", layer.layer(handler), request);
}

/// Benchmarks calls of `service` that must all be allowed.
fn bench_allowed<S>(
    c: &mut Criterion,
    name: &str,
    mut service: S,
    request: impl Fn() -> http::Request<tonic::body::Body>,
) where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.iter_batched(
            &request,
            |request| {
                let response = call_now(&mut service, request);
                assert!(response.headers().get("grpc-status").is_none());
                response
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, verify, policy, layer);
criterion_main!(benches);
