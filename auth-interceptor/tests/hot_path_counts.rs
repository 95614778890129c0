//! The per-call cost of the auth layer as counts, not times: a shared
//! machine's timings move by 15% between runs, counts do not. A hot call
//! (a token the verifier has seen) through `AuthLayer` is measured against
//! the same handler without the layer: heap allocations beyond the bare
//! handler's, and what the handler finds in the request.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a test binary: panics are its failures

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::SystemTime,
};

use auth_interceptor::{
    AuthLayer, Claims, JwkSet, MethodKinds, MethodPolicy, Verifier, VerifierConfig,
};
use authmesh_signing::SigningKey;
use tower::{Layer, Service, service_fn};

mod support;
use support::{call_now, tonic_answer, tonic_request};

const ISSUER: &str = "https://counts.authmesh.local";
const AUDIENCE: &str = "inventory";
const METHOD: &str = "/demo.inventory.v1.Inventory/GetStock";
const SCOPE: &str = "inventory.read";
/// Calls per measurement: a count per call must come out whole.
const CALLS: u64 = 200;

fn token(key: &SigningKey) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    key.sign(&Claims {
        iss: ISSUER.into(),
        sub: "counts-client".into(),
        aud: AUDIENCE.into(),
        exp: now + 3000,
        nbf: None,
        iat: now,
        jti: "0123456789abcdef0123456789abcdef".into(),
        scope: SCOPE.into(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    })
    .unwrap()
}

fn request(bearer: &str, request_id: Option<&str>) -> http::Request<tonic::body::Body> {
    tonic_request(METHOD, bearer, request_id)
}

/// Heap allocations per call of `service` on `requests` (made beforehand,
/// so building them is not counted).
fn allocations_per_call<S>(service: &mut S, bearer: &str, request_id: Option<&str>) -> u64
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    let requests: Vec<_> = (0..CALLS).map(|_| request(bearer, request_id)).collect();
    let mut responses = Vec::with_capacity(requests.len());
    let info = allocation_counter::measure(|| {
        for request in requests {
            responses.push(call_now(service, request));
        }
    });
    assert!(
        responses
            .iter()
            .all(|r| r.headers().get("grpc-status").is_none()),
        "every call was allowed"
    );
    assert_eq!(info.count_total % CALLS, 0, "{info:?}");
    info.count_total / CALLS
}

/// What one hot call costs with the layer, beyond the bare handler.
struct Extra {
    /// Allocations, when the caller sent no request id.
    generated_id: u64,
    /// Allocations, when it sent a valid one.
    sent_id: u64,
    /// Extensions the layer added for the handler.
    extensions: usize,
    /// Allocations of a cache-hit verification alone.
    verify: u64,
}

fn extra_allocations(kinds: MethodKinds) -> Extra {
    let (key, _pem) = SigningKey::generate(auth_interceptor::SigningAlgorithm::EdDSA).unwrap();
    let verifier = Verifier::new(VerifierConfig::new(ISSUER, AUDIENCE)).unwrap();
    verifier
        .install_keys(&JwkSet {
            keys: vec![key.jwk().clone()],
        })
        .unwrap();
    let bearer = format!("Bearer {}", token(&key));
    let extensions_seen = Arc::new(AtomicUsize::new(0));
    let seen = extensions_seen.clone();
    // Cloned per call by the layer (tower's ready-service swap), as tonic's
    // routes are: without an allocation.
    let mut plain = service_fn(move |request: http::Request<tonic::body::Body>| {
        // Beside the transport's own.
        seen.store(request.extensions().len() - 1, Ordering::Relaxed);
        async { Ok::<_, Infallible>(tonic_answer()) }
    });
    let mut authed = AuthLayer::new(
        verifier.clone(),
        MethodPolicy::new().require(METHOD, [SCOPE]),
    )
    .method_kinds(kinds)
    .layer(plain.clone());
    // Warm: the first call verifies the signature and fills the cache.
    for _ in 0..3 {
        call_now(&mut authed, request(&bearer, None));
    }
    let token = bearer.trim_start_matches("Bearer ");
    let verify = allocation_counter::measure(|| {
        for _ in 0..CALLS {
            verifier.verify(token).unwrap();
        }
    });
    let bare = allocations_per_call(&mut plain, &bearer, None);
    let generated_id = allocations_per_call(&mut authed, &bearer, None);
    let sent_id = allocations_per_call(&mut authed, &bearer, Some("req-0123456789"));
    let extensions = extensions_seen.load(Ordering::Relaxed);
    eprintln!(
        "allocations per call: bare handler {bare}; with the layer {generated_id} (request id generated), {sent_id} (request id sent); verify alone {}; extensions seen by the handler {extensions}",
        verify.count_total / CALLS
    );
    Extra {
        generated_id: generated_id - bare,
        sent_id: sent_id - bare,
        extensions,
        verify: verify.count_total / CALLS,
    }
}

#[test]
fn a_hot_unary_call_costs_a_fixed_number_of_allocations() {
    let unary = MethodKinds::new().single_response(METHOD);
    let extra = extra_allocations(unary);
    assert_eq!(extra.verify, 0, "a cache hit allocates nothing");
    assert_eq!(
        extra.extensions, 1,
        "one call context, one extension insert"
    );
    assert_eq!(
        extra.generated_id, UNARY_GENERATED_ID,
        "request id generated"
    );
    assert_eq!(
        extra.sent_id, UNARY_SENT_ID,
        "request id sent by the caller"
    );
}

#[test]
fn a_hot_call_of_an_unknown_kind_also_binds_its_response() {
    let extra = extra_allocations(MethodKinds::new());
    assert_eq!(
        extra.extensions, 1,
        "one call context, one extension insert"
    );
    assert_eq!(
        extra.generated_id, UNKNOWN_GENERATED_ID,
        "request id generated"
    );
    assert_eq!(
        extra.sent_id, UNKNOWN_SENT_ID,
        "request id sent by the caller"
    );
}

// What the counts are made of, so a change to them is a decision:
// - the call context: one box in the request's extensions;
// - the request id: the generated one's bytes for the response header; the
//   caller's is shared with the request, no allocation (header values come
//   as h2's decoder makes them: slices of a shared buffer);
// - a response of unknown kind: the token-bound body's box.
// Verifying from the cache and the policy decision allocate nothing.

/// Allocations the layer adds to a hot unary call that sent no request id.
const UNARY_GENERATED_ID: u64 = 2;
/// ... and to one that sent a valid one.
const UNARY_SENT_ID: u64 = 1;
/// The same for a method the layer was not told the kind of.
const UNKNOWN_GENERATED_ID: u64 = 3;
/// ... and to one that sent a valid request id.
const UNKNOWN_SENT_ID: u64 = 2;
