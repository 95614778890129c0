//! External identity providers beside the mesh's own issuer, with tokens
//! from an independent JWT library: PyJWT signs user tokens shaped like
//! Auth0's (RS256, PS256) and Keycloak's (ES256, EdDSA) and a legacy HS256
//! issuer's; their discovery documents and JWK Sets are served over local
//! HTTPS; inventory (one process) trusts all three besides the mesh, and a
//! real tonic client calls it with each token.

use std::{collections::BTreeMap, process::Command, time::Duration};

use authmesh_tests::{TestMesh, bearer, expect_status, get_stock, python_with_pyjwt};
use service_runtime::{
    http_endpoint::{Bytes, Routes, serve_http},
    tls::tls_incoming,
};
use tonic::Code;

/// What `external_issuers/idp.py` prints.
#[derive(serde::Deserialize)]
struct Idp {
    issuers: BTreeMap<String, String>,
    jwks: BTreeMap<String, serde_json::Value>,
    tokens: BTreeMap<String, String>,
}

/// A discovery document shaped like the provider's (only `issuer` and
/// `jwks_uri` matter to a verifier).
fn discovery(issuer: &str, jwks_uri: &str) -> Bytes {
    let base = issuer.trim_end_matches('/');
    Bytes::from(
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "jwks_uri": jwks_uri,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        })
        .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_verifies_mesh_tokens_and_external_user_tokens_in_one_process() {
    let Some(python) = python_with_pyjwt() else {
        return;
    };
    let mut mesh = TestMesh::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = dir.path().join("legacy.secret");
    let idp = {
        let (base, secret_file) = (base.clone(), secret_file.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .args(["-c", include_str!("external_issuers/idp.py"), &base])
                .arg(&secret_file)
                .output()
                .expect("python3 runs")
        })
        .await
        .expect("join")
    };
    assert!(
        idp.status.success(),
        "{}",
        String::from_utf8_lossy(&idp.stderr)
    );
    let idp: Idp = serde_json::from_slice(&idp.stdout).expect("idp.py output");
    let (auth0, keycloak) = (&idp.issuers["auth0"], &idp.issuers["keycloak"]);

    let pages: BTreeMap<String, Bytes> = [
        (
            "/auth0/.well-known/openid-configuration".to_owned(),
            discovery(auth0, &format!("{auth0}.well-known/jwks.json")),
        ),
        (
            "/auth0/.well-known/jwks.json".to_owned(),
            Bytes::from(idp.jwks["auth0"].to_string()),
        ),
        (
            "/realms/demo/.well-known/openid-configuration".to_owned(),
            discovery(
                keycloak,
                &format!("{keycloak}/protocol/openid-connect/certs"),
            ),
        ),
        (
            "/realms/demo/protocol/openid-connect/certs".to_owned(),
            Bytes::from(idp.jwks["keycloak"].to_string()),
        ),
    ]
    .into();
    let routes: Routes = std::sync::Arc::new(move |path: &str| {
        pages
            .get(path)
            .map(|page| ("application/json", page.clone()))
    });
    let server = tokio::spawn(serve_http(
        Box::pin(tls_incoming(listener, mesh.https_server_config())),
        routes,
        std::future::pending(),
    ));

    // Inventory trusts both providers through discovery (Auth0's scopes
    // in `permissions`, Keycloak's `jti` required) and the legacy issuer's secret.
    let ca = mesh.ca_path();
    let trusted = format!(
        r#"
[[auth.trusted_issuers]]
issuer = "{auth0}"
discovery = true
ca = "{ca}"
scope_claim = "permissions"

[[auth.trusted_issuers]]
issuer = "{keycloak}"
discovery = true
ca = "{ca}"
require_jti = true

[[auth.trusted_issuers]]
issuer = "{legacy}"
hs256_secret_file = "{secret}"
"#,
        ca = ca.display(),
        legacy = idp.issuers["legacy"],
        secret = secret_file.display(),
    );
    let config = mesh.state.inventory_config();
    let mut text = std::fs::read_to_string(&config).expect("inventory.toml");
    text.push_str(&trusted);
    std::fs::write(&config, text).expect("write inventory.toml");
    mesh.restart_inventory().await;

    let mut inventory = mesh.inventory_client();
    let token = |name: &str| idp.tokens[name].clone();
    // The providers' keys arrive in the background; until then their
    // tokens are refused (UNAVAILABLE), never let through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for name in ["auth0_rs256", "keycloak_es256"] {
        loop {
            match inventory.get_stock(bearer(get_stock(), &token(name))).await {
                Ok(_) => break,
                Err(status) if status.code() == Code::Unavailable => {
                    assert!(tokio::time::Instant::now() < deadline, "{name}: {status:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{name}: {status:?}"),
            }
        }
    }
    for name in [
        "auth0_rs256",
        "auth0_ps256",
        "keycloak_es256",
        "keycloak_eddsa",
        "legacy_hs256",
    ] {
        inventory
            .get_stock(bearer(get_stock(), &token(name)))
            .await
            .unwrap_or_else(|status| panic!("{name}: {status:?}"));
    }
    // The mesh's own token, in the same process.
    let mesh_token = mesh.mint("inventory", &["inventory.read"], None).await;
    inventory
        .get_stock(bearer(get_stock(), &mesh_token))
        .await
        .expect("a mesh token beside the user tokens");

    for (name, code, reason) in [
        (
            "same_kid_other_issuer",
            Code::Unauthenticated,
            "SIGNATURE_INVALID",
        ),
        ("kid_of_other_issuer", Code::Unauthenticated, "UNKNOWN_KEY"),
        ("trailing_slash", Code::Unauthenticated, "ISSUER_UNTRUSTED"),
        ("issuer_case", Code::Unauthenticated, "ISSUER_UNTRUSTED"),
        (
            "untrusted_issuer",
            Code::Unauthenticated,
            "ISSUER_UNTRUSTED",
        ),
        ("weak_key", Code::Unauthenticated, "UNKNOWN_KEY"),
        ("encryption_key", Code::Unauthenticated, "UNKNOWN_KEY"),
        ("alg_none", Code::Unauthenticated, "ALGORITHM_MISMATCH"),
        (
            "hs256_with_public_key",
            Code::Unauthenticated,
            "ALGORITHM_MISMATCH",
        ),
        ("legacy_rs256", Code::Unauthenticated, "ALGORITHM_MISMATCH"),
        ("jku_header", Code::Unauthenticated, "HEADER_UNSUPPORTED"),
        ("wrong_audience", Code::Unauthenticated, "AUDIENCE_MISMATCH"),
        ("expired", Code::Unauthenticated, "TOKEN_EXPIRED"),
        ("too_long", Code::Unauthenticated, "TOKEN_LIFETIME_TOO_LONG"),
        ("no_jti_at_keycloak", Code::Unauthenticated, "CLAIM_MISSING"),
        (
            "permission_missing",
            Code::PermissionDenied,
            "POLICY_DENIED",
        ),
    ] {
        let status = expect_status(
            inventory.get_stock(bearer(get_stock(), &token(name))).await,
            code,
            Some(reason),
        );
        // The refusal never echoes the token.
        let signature = token(name)
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            signature.is_empty() || !status.message().contains(&signature),
            "{name}"
        );
    }
    server.abort();
    mesh.stop().await;
}
