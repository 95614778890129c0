//! Standards-based key discovery: an independent JWT library (PyJWT with
//! PyJWKClient) verifies an AuthMesh token knowing only the issuer URL and
//! the CA, through `/.well-known/openid-configuration` and the JWK Set it
//! points to, served over HTTPS on the token service's gRPC port.

use std::process::Command;

use authmesh_tests::{TestMesh, bearer, expect_status, get_stock, python_with_pyjwt};
use tonic::Code;

/// Fetches the discovery document, then the keys through PyJWKClient, and
/// verifies the token with them (signature, `iss`, `aud`, `exp`). Prints the
/// claims as JSON on success; exits non-zero on any failure.
const VERIFY_WITH_PYJWT: &str = r#"
import json, ssl, sys, urllib.request
import jwt

issuer, ca, token, audience = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", context=ctx, timeout=10) as r:
    doc = json.load(r)
assert doc["issuer"] == issuer, doc
keys = jwt.PyJWKClient(doc["jwks_uri"], ssl_context=ctx, timeout=10)
key = keys.get_signing_key_from_jwt(token)
claims = jwt.decode(token, key.key, algorithms=doc["id_token_signing_alg_values_supported"],
                    audience=audience, issuer=doc["issuer"])
print(json.dumps(claims))
"#;

/// Prints the body of an HTTPS GET.
const FETCH: &str = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10) as r:
    assert r.headers["Content-Type"].startswith("application/"), r.headers
    sys.stdout.write(r.read().decode())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_an_authmesh_token_from_discovery_alone() {
    let Some(python) = python_with_pyjwt() else {
        return;
    };
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let (issuer, ca) = (mesh.issuer(), mesh.ca_path());
    let run = |token: String, audience: &'static str| {
        let (issuer, ca) = (issuer.clone(), ca.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .args(["-c", VERIFY_WITH_PYJWT, &issuer])
                .arg(&ca)
                .args([&token, audience])
                .output()
                .expect("python3 runs")
        })
    };
    let verified = run(token.clone(), "inventory").await.expect("join");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("claims");
    assert_eq!(claims["aud"], "inventory");
    assert_eq!(claims["sub"], "demo-cli");
    assert_eq!(claims["iss"], mesh.issuer());

    // The same library refuses what it should: another audience, a forged signature.
    let wrong_audience = run(token.clone(), "orders").await.expect("join");
    assert!(!wrong_audience.status.success());
    assert!(String::from_utf8_lossy(&wrong_audience.stderr).contains("Audience"));
    let mut forged = token.clone();
    let last = forged
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    forged.push(last);
    let tampered = run(forged, "inventory").await.expect("join");
    assert!(!tampered.status.success(), "a tampered signature verifies");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_publishes_the_keys_grpc_publishes() {
    let Some(python) = python_with_pyjwt() else {
        return;
    };
    let mesh = TestMesh::start().await;
    let (url, ca) = (
        format!("{}/.well-known/jwks.json", mesh.issuer()),
        mesh.ca_path(),
    );
    // A plain HTTP/1.1 client (urllib offers no ALPN), as JWKS fetchers are.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", FETCH, &url])
            .arg(ca)
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let published: auth_interceptor::JwkSet =
        serde_json::from_slice(&output.stdout).expect("a JWK Set");
    let grpc = mesh
        .token_client()
        .get_jwks(authmesh_proto::authmesh::v1::GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner();
    let kids: Vec<&str> = published.keys.iter().map(|k| k.kid.as_str()).collect();
    let grpc_kids: Vec<&str> = grpc.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, grpc_kids);
    // The verifier's own key checks pass: public keys only, well formed.
    published.to_verification_keys().expect("valid public keys");
    mesh.stop().await;
}

/// Sets `auth.jwks_url` (and nothing else) in inventory's config file.
fn point_inventory_at(mesh: &TestMesh, jwks_url: &str) {
    let path = mesh.state.inventory_config();
    let text = std::fs::read_to_string(&path).expect("inventory.toml");
    let text: String = text
        .lines()
        .filter(|line| !line.starts_with("jwks_url"))
        .map(|line| {
            if line == "[auth]" {
                format!("[auth]\njwks_url = \"{jwks_url}\"\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&path, text).expect("write inventory.toml");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_can_take_its_keys_from_the_https_jwks_url() {
    let mut mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;

    // A URL that serves no keys: inventory has none, and says so.
    point_inventory_at(
        &mesh,
        &format!("{}/.well-known/missing.json", mesh.issuer()),
    );
    let server = mesh.replace_inventory().await;
    expect_status(
        mesh.inventory_client()
            .get_stock(bearer(get_stock(), &token))
            .await,
        Code::Unavailable,
        Some("KEYS_UNAVAILABLE"),
    );
    server.stop().await.expect("stop");

    // The token service's own JWK Set over HTTPS.
    point_inventory_at(&mesh, &format!("{}/.well-known/jwks.json", mesh.issuer()));
    mesh.restart_inventory().await;
    let fresh = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut inventory = mesh.inventory_client();
    inventory
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("verified with keys from the URL");
    // The issuer goes away: the last good keys stay in force.
    mesh.stop_token_service().await;
    inventory
        .get_stock(bearer(get_stock(), &fresh))
        .await
        .expect("a token never seen before still verifies");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_jwks_servers_are_refused() {
    use auth_interceptor::key_source::{MAX_DOCUMENT_BYTES as MAX_JWKS_BYTES, fetch_jwks};
    use service_runtime::{
        http_endpoint::{Bytes, Routes, serve_http},
        tls::tls_incoming,
        upstream::ClientTls,
    };

    let mesh = TestMesh::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let good = serde_json::to_vec(&auth_interceptor::JwkSet::default()).expect("json");
    let routes: Routes = std::sync::Arc::new(move |path: &str| match path {
        "/huge" => Some((
            "application/json",
            Bytes::from(vec![b' '; MAX_JWKS_BYTES + 1]),
        )),
        "/garbage" => Some(("application/json", Bytes::from_static(b"{\"keys\": 42}"))),
        "/good" => Some(("application/json", Bytes::from(good.clone()))),
        _ => None,
    });
    let server = tokio::spawn(serve_http(
        Box::pin(tls_incoming(listener, mesh.https_server_config())),
        routes,
        std::future::pending(),
    ));
    let tls = ClientTls::new(&mesh.ca_path(), None, std::time::Duration::from_secs(60))
        .expect("client tls");
    let connector = tls.client_config();
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let fetched = fetch_jwks(&url("/good"), &connector).await;
    assert_eq!(
        fetched.map_err(|e| e.to_string()),
        Ok(auth_interceptor::JwkSet::default())
    );
    for (path, expected) in [
        ("/huge", "at most"),
        ("/garbage", "not a JWK Set"),
        ("/missing", "status 404"),
    ] {
        let refused = fetch_jwks(&url(path), &connector)
            .await
            .expect_err("refused")
            .to_string();
        assert!(refused.contains(expected), "{path}: {refused}");
    }
    server.abort();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_takes_its_keys_from_oidc_discovery_and_only_for_its_issuer() {
    use auth_interceptor::{AuthError, KeySource, Verifier, VerifierConfig};
    use service_runtime::upstream::ClientTls;

    let mesh = TestMesh::start().await;
    let tls = ClientTls::new(&mesh.ca_path(), None, std::time::Duration::from_secs(60))
        .expect("client tls")
        .client_config();
    let token = mesh.mint("inventory", &["inventory.read"], None).await;

    let verifier =
        Verifier::new(VerifierConfig::new(mesh.issuer(), "inventory")).expect("verifier");
    let _keys = KeySource::OidcDiscovery { tls: tls.clone() }
        .spawn(&verifier, Default::default())
        .expect("discovery source");
    tokio::time::timeout(std::time::Duration::from_secs(10), verifier.keys_loaded())
        .await
        .expect("keys found through the discovery document");
    assert_eq!(
        verifier.verify(&token).map(|claims| claims.sub.clone()),
        Ok(authmesh_tests::decode_claims(&token).sub)
    );

    // A document served for another issuer name (here: one with a trailing
    // slash) is not trusted: no keys, and calls fail closed.
    let other = Verifier::new(VerifierConfig::new(
        format!("{}/", mesh.issuer()),
        "inventory",
    ))
    .expect("verifier");
    let _refused = KeySource::OidcDiscovery { tls }
        .spawn(&other, Default::default())
        .expect("discovery source");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(other.key_ids().is_empty());
    assert_eq!(other.verify(&token), Err(AuthError::KeysUnavailable));
    mesh.stop().await;
}
