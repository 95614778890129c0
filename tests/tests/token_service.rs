//! The issuer: who gets which token, and what it refuses.

use std::os::unix::fs::PermissionsExt;

use authmesh_proto::authmesh::v1::GetJwksRequest;
use authmesh_tests::{TestMesh, decode_claims, decode_header, expect_status};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_follow_the_profile() {
    let mesh = TestMesh::start().await;
    let minted = mesh
        .mint_as(
            "demo-cli",
            &mesh.secret("demo-cli"),
            "inventory",
            &["inventory.read"],
            Some(60),
        )
        .await
        .expect("mint");
    assert_eq!(minted.token_type, "Bearer");
    assert_eq!(minted.scope, "inventory.read");
    let header = decode_header(&minted.token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], mesh.issuer_key().kid());
    assert_eq!(
        header.as_object().map(|h| h.len()),
        Some(3),
        "only alg, kid, typ"
    );
    let claims = decode_claims(&minted.token);
    assert_eq!(claims.sub, "demo-cli", "sub is the authenticated caller");
    assert_eq!(claims.iss, mesh.issuer());
    assert_eq!(claims.aud, "inventory");
    assert_eq!(claims.exp - claims.iat, 60);
    assert_eq!(claims.exp as i64, minted.expires_at);
    assert_eq!(claims.jti.len(), 22, "128 random bits, base64url");
    let default_ttl = decode_claims(&mesh.mint("inventory", &[], None).await);
    assert_eq!(default_ttl.exp - default_ttl.iat, 300);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthenticated() {
    let mesh = TestMesh::start().await;
    let secret = mesh.secret("demo-cli");
    expect_status(
        mesh.mint_as("demo-cli", "wrong-secret", "inventory", &[], None)
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_INVALID"),
    );
    expect_status(
        mesh.mint_as("nobody", &secret, "inventory", &[], None)
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_INVALID"),
    );
    let mut client = mesh.token_client();
    expect_status(
        client
            .issue_token(authmesh_proto::authmesh::v1::IssueTokenRequest {
                audience: "inventory".into(),
                scopes: vec![],
                ttl_seconds: None,
                one_time: false,
            })
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MALFORMED"),
    );
    mesh.stop().await;
}

/// client, secret, audience, scopes, ttl → expected code and reason.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [&'a str],
    Option<i64>,
    Code,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_allowlist_are_refused() {
    let mesh = TestMesh::start().await;
    let demo = mesh.secret("demo-cli");
    let cases: [Case<'_>; 8] = [
        (
            "demo-cli",
            &demo,
            "inventory",
            &["inventory.reserve"],
            None,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
        ),
        (
            "demo-cli",
            &demo,
            "inventory",
            &["inventory.read", "inventory.*"],
            None,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
        ),
        (
            "demo-cli",
            &demo,
            "token-service",
            &[],
            None,
            Code::PermissionDenied,
            "AUDIENCE_NOT_ALLOWED",
        ),
        (
            "demo-cli",
            &demo,
            "billing",
            &[],
            None,
            Code::InvalidArgument,
            "AUDIENCE_UNKNOWN",
        ),
        (
            "demo-cli",
            &demo,
            "inventory",
            &[],
            Some(3601),
            Code::InvalidArgument,
            "TTL_OUT_OF_RANGE",
        ),
        (
            "demo-cli",
            &demo,
            "inventory",
            &[],
            Some(0),
            Code::InvalidArgument,
            "TTL_OUT_OF_RANGE",
        ),
        (
            "demo-cli",
            &demo,
            "inventory",
            &[],
            Some(-5),
            Code::InvalidArgument,
            "TTL_OUT_OF_RANGE",
        ),
        (
            "demo-cli",
            &demo,
            "inventory",
            &["inventory.read extra"],
            None,
            Code::InvalidArgument,
            "SCOPE_INVALID",
        ),
    ];
    for (client, secret, audience, scopes, ttl, code, reason) in cases {
        let status = expect_status(
            mesh.mint_as(client, secret, audience, scopes, ttl).await,
            code,
            Some(reason),
        );
        assert!(!status.message().contains(secret));
    }
    // orders (certificate only) may have exactly its inventory scopes, and nothing else.
    let granted = mesh
        .mint_with_cert("orders", None, "inventory", &[])
        .await
        .expect("orders' own allowlist");
    assert_eq!(granted.scope, "inventory.read inventory.reserve");
    expect_status(
        mesh.mint_with_cert("orders", None, "orders", &[]).await,
        Code::PermissionDenied,
        Some("AUDIENCE_NOT_ALLOWED"),
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_keys_need_no_credentials_and_private_keys_stay_private() {
    let mesh = TestMesh::start().await;
    let jwks = mesh
        .token_client()
        .get_jwks(GetJwksRequest {})
        .await
        .expect("GetJwks without credentials")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let key = &jwks.keys[0];
    assert_eq!(
        (
            key.kty.as_str(),
            key.crv.as_str(),
            key.alg.as_str(),
            key.r#use.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA", "sig")
    );
    assert_eq!(key.kid, mesh.issuer_key().kid());
    let key_file = mesh.state.dir().join("keys/eddsa.pem");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    mesh.stop().await;
}
