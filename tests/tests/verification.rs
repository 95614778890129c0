//! SERVER2 refuses every token it should, with the right status and reason,
//! and its handler is never reached.

use std::time::Duration;

use auth_interceptor::SigningAlgorithm;
use authmesh_proto::demo::inventory::v1::{GetStockRequest, GetStockResponse, ReserveRequest};
use authmesh_tests::{SigningKey, TestMesh, bearer, expect_status, get_stock};
use tonic::{Code, Request, codegen::http::uri::PathAndQuery};
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_token_with_the_right_scope_is_served() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let stock = mesh
        .inventory_client()
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("GetStock")
        .into_inner();
    assert_eq!(stock.available, 100);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated() {
    let mesh = TestMesh::start().await;
    let mut inventory = mesh.inventory_client();
    expect_status(
        inventory.get_stock(get_stock()).await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );

    // {"alg":"EdDSA"}: the header names what it lacks.
    let garbled = "eyJhbGciOiJFZERTQSJ9.garbage.garbage";
    let status = expect_status(
        inventory.get_stock(bearer(get_stock(), garbled)).await,
        Code::Unauthenticated,
        Some("HEADER_MISSING"),
    );
    assert_eq!(
        status
            .get_details_error_info()
            .map(|info| info.metadata["header"].clone()),
        Some("kid".to_owned())
    );

    let for_orders = mesh.mint("orders", &[], None).await;
    let status = expect_status(
        inventory.get_stock(bearer(get_stock(), &for_orders)).await,
        Code::Unauthenticated,
        Some("AUDIENCE_MISMATCH"),
    );
    assert!(
        !status.message().contains(&for_orders),
        "the token never appears in the message"
    );

    let mut basic = Request::new(get_stock());
    basic.metadata_mut().insert(
        "authorization",
        "Basic b3JkZXJzOnNlY3JldA==".parse().expect("ascii"),
    );
    expect_status(
        inventory.get_stock(basic).await,
        Code::Unauthenticated,
        Some("AUTHORIZATION_MALFORMED"),
    );

    // Far above the 8 KiB cap but inside the HTTP/2 header limit: refused
    // by the auth layer without decoding, not by the transport.
    let huge = format!(
        "{}.{}.{}",
        "a".repeat(20 * 1024),
        "b".repeat(20 * 1024),
        "c".repeat(20 * 1024)
    );
    expect_status(
        inventory.get_stock(bearer(get_stock(), &huge)).await,
        Code::Unauthenticated,
        Some("TOKEN_TOO_LARGE"),
    );

    let valid = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut twice = bearer(get_stock(), &valid);
    twice.metadata_mut().append(
        "authorization",
        format!("Bearer {valid}").parse().expect("ascii"),
    );
    expect_status(
        inventory.get_stock(twice).await,
        Code::Unauthenticated,
        Some("AUTHORIZATION_MALFORMED"),
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused_by_the_clock_not_by_waiting() {
    let mesh = TestMesh::start().await;
    let mut inventory = mesh.inventory_client();
    let token = mesh.mint("inventory", &["inventory.read"], Some(60)).await;
    inventory
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("valid now");
    // Within the 30 s leeway the (cached) token still passes; beyond it, not.
    mesh.clock.advance(60 + 20);
    inventory
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("within leeway");
    mesh.clock.advance(15);
    expect_status(
        inventory.get_stock(bearer(get_stock(), &token)).await,
        Code::Unauthenticated,
        Some("TOKEN_EXPIRED"),
    );

    // Signed by the real issuer key, but expired before it was ever presented.
    let now = mesh.now();
    let forged = mesh
        .issuer_key()
        .sign(&mesh.claims("inventory", "inventory.read", now - 600, 300))
        .expect("sign");
    expect_status(
        inventory.get_stock(bearer(get_stock(), &forged)).await,
        Code::Unauthenticated,
        Some("TOKEN_EXPIRED"),
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_keys_the_issuer_never_published_are_refused() {
    let mesh = TestMesh::start().await;
    let mut inventory = mesh.inventory_client();
    let claims = mesh.claims("inventory", "inventory.read", mesh.now(), 300);
    let (attacker, _) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("keygen");
    let own_kid = attacker.sign(&claims).expect("sign");
    expect_status(
        inventory.get_stock(bearer(get_stock(), &own_kid)).await,
        Code::Unauthenticated,
        Some("UNKNOWN_KEY"),
    );
    let header =
        serde_json::json!({"alg": "EdDSA", "kid": mesh.issuer_key().kid(), "typ": "at+jwt"});
    let borrowed_kid = attacker
        .sign_raw(
            header.to_string().as_bytes(),
            &serde_json::to_vec(&claims).expect("json"),
        )
        .expect("sign");
    expect_status(
        inventory
            .get_stock(bearer(get_stock(), &borrowed_kid))
            .await,
        Code::Unauthenticated,
        Some("SIGNATURE_INVALID"),
    );
    // The same claims under the issuer's key pass: only the key was wrong.
    let genuine = mesh.issuer_key().sign(&claims).expect("sign");
    inventory
        .get_stock(bearer(get_stock(), &genuine))
        .await
        .expect("genuine token");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_permission_denied_naming_the_method() {
    let mesh = TestMesh::start().await;
    let read_only = mesh.mint("inventory", &["inventory.read"], None).await;
    let status = expect_status(
        mesh.inventory_client()
            .reserve(bearer(
                ReserveRequest {
                    sku: "sku-1".into(),
                    quantity: 1,
                },
                &read_only,
            ))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    assert!(
        status
            .message()
            .contains("/demo.inventory.v1.Inventory/Reserve"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("inventory.reserve"),
        "{}",
        status.message()
    );
    assert!(
        mesh.inventory_handler.reservations().is_empty(),
        "handler never reached"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_authenticate_before_routing() {
    let mesh = TestMesh::start().await;
    let mut grpc = tonic::client::Grpc::new(mesh.channel(mesh.addrs.inventory));
    let path = PathAndQuery::from_static("/demo.inventory.v1.Inventory/DropTables");
    let codec = || tonic_prost::ProstCodec::<GetStockRequest, GetStockResponse>::default();
    grpc.ready().await.expect("ready");
    expect_status(
        grpc.unary(Request::new(get_stock()), path.clone(), codec())
            .await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    grpc.ready().await.expect("ready");
    let status = expect_status(
        grpc.unary(bearer(get_stock(), &token), path, codec()).await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    assert!(status.message().contains("DropTables"));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_yet_is_unavailable_not_unauthenticated() {
    let mut mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    mesh.stop_token_service().await;
    // A fresh inventory that has never reached the token service.
    let server = mesh.replace_inventory().await;
    let mut inventory = mesh.inventory_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        match inventory.get_stock(bearer(get_stock(), &token)).await {
            Err(status)
                if status.code() == Code::Unavailable
                    && authmesh_tests::reason(&status).is_some() =>
            {
                break status;
            }
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never UNAVAILABLE: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(
        authmesh_tests::reason(&status).as_deref(),
        Some("KEYS_UNAVAILABLE")
    );
    server.stop().await.expect("stop");
    mesh.stop().await;
}
