//! External identity providers beside the mesh's own issuer, with tokens
//! from an independent JWT library: PyJWT signs user tokens shaped like
//! Auth0's (RS256, PS256) and Keycloak's (ES256, EdDSA) and a legacy HS256
//! issuer's; their discovery documents and JWK Sets are served over local
//! HTTPS; inventory (one process) trusts all three besides the mesh, and a
//! real tonic client calls it with each token.

use std::time::Duration;

use authmesh_tests::{TestMesh, bearer, expect_status, get_stock, idp::Idp};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_verifies_mesh_tokens_and_external_user_tokens_in_one_process() {
    let mut mesh = TestMesh::start().await;
    let Some(idp) = Idp::start(&mesh, "inventory").await else {
        return;
    };
    // Inventory trusts both providers through discovery and the legacy
    // issuer's secret.
    let trusted = format!(
        "{}\n[[auth.trusted_issuers]]\nissuer = \"{}\"\nhs256_secret_file = \"{}\"\n",
        idp.trusted_issuers_toml("auth.trusted_issuers", &mesh.ca_path()),
        idp.legacy(),
        idp.secret_file.display(),
    );
    let config = mesh.state.inventory_config();
    let mut text = std::fs::read_to_string(&config).expect("inventory.toml");
    text.push_str(&trusted);
    std::fs::write(&config, text).expect("write inventory.toml");
    mesh.restart_inventory().await;

    let mut inventory = mesh.inventory_client();
    let token = |name: &str| idp.token(name);
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
    mesh.stop().await;
}
