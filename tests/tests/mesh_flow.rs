//! SERVER1 calls SERVER2 with its own token: the flow the mesh exists for.

use authmesh::dev_state::{DevState, MeshAddrs};
use authmesh_proto::demo::orders::v1::PlaceOrderRequest;
use authmesh_tests::{TestMesh, bearer, expect_status};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_order_reserves_at_inventory_with_orders_own_token() {
    let mesh = TestMesh::start().await;
    let caller_token = mesh.mint("orders", &[], None).await;
    let order = mesh
        .orders_client()
        .place_order(bearer(
            PlaceOrderRequest {
                sku: "sku-1".into(),
                quantity: 3,
            },
            &caller_token,
        ))
        .await
        .expect("PlaceOrder succeeds")
        .into_inner();
    assert_eq!(order.placed_by, "demo-cli");
    assert_eq!(order.reserved_by, TestMesh::spiffe_id("orders"));
    assert_eq!(order.remaining, 97);

    let reservations = mesh.inventory_handler.reservations();
    assert_eq!(reservations.len(), 1);
    let seen = &reservations[0];
    assert_eq!(
        seen.caller,
        TestMesh::spiffe_id("orders"),
        "inventory saw orders' identity"
    );
    assert_eq!(seen.audience, "inventory");
    assert_eq!(seen.quantity, 3);
    assert_eq!(order.reservation_id, seen.id);
    // The caller's token was not forwarded: inventory saw a token with another jti.
    let caller_claims = authmesh_tests::decode_claims(&caller_token);
    assert_ne!(seen.jti, caller_claims.jti);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_order_without_a_token_never_reaches_inventory() {
    let mesh = TestMesh::start().await;
    let mut orders = mesh.orders_client();
    expect_status(
        orders
            .place_order(PlaceOrderRequest {
                sku: "sku-1".into(),
                quantity: 1,
            })
            .await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
    let wrong_scope = mesh.mint("inventory", &[], None).await;
    expect_status(
        orders
            .place_order(bearer(
                PlaceOrderRequest {
                    sku: "sku-1".into(),
                    quantity: 1,
                },
                &wrong_scope,
            ))
            .await,
        Code::Unauthenticated,
        Some("AUDIENCE_MISMATCH"),
    );
    assert!(mesh.inventory_handler.reservations().is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_state_is_created_once_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = authmesh::dev_state::DEFAULT_PORTS;
    let first = DevState::ensure(dir.path(), addrs).expect("first start");
    let read = |path: std::path::PathBuf| std::fs::read(path).expect("state file");
    let files = |state: &DevState| {
        [
            read(state.dir().join("tls/ca.pem")),
            read(state.secret_file("demo-cli")),
            read(state.workload_files("orders").0),
            read(state.token_service_config()),
            read(state.orders_config()),
        ]
    };
    let before = files(&first);
    // Different ports on a later start must not overwrite the existing configs.
    let other = MeshAddrs {
        orders: "127.0.0.1:1".parse().expect("addr"),
        ..addrs
    };
    let second = DevState::ensure(dir.path(), other).expect("second start");
    assert_eq!(before, files(&second));
    use std::os::unix::fs::PermissionsExt;
    for private in [
        second.secret_file("demo-cli"),
        second.dir().join("tls/ca-key.pem"),
        second.workload_files("orders").1,
    ] {
        let mode = std::fs::metadata(&private)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{}", private.display());
    }
}

/// The dev state's own user flow, as `authmesh up` runs it: a user token
/// from the local OIDC issuer (RS256, discovered over HTTPS) places an
/// order, which orders exchanges and inventory records for the user with
/// orders as the actor; a user token without `orders.write` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_the_local_issuer_orders_through_orders() {
    use authmesh::local_idp::UserTokenRequest;

    let mesh = TestMesh::start().await;
    let (_server, idp) = mesh.start_local_idp().await;
    let user_token = |scopes: &[&str]| {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        idp.user_token(
            &UserTokenRequest {
                user: "alice",
                audience: "orders",
                scopes: &scopes,
                ttl_seconds: 600,
            },
            mesh.now(),
        )
        .expect("user token")
    };
    let header = authmesh_tests::decode_header(&user_token(&[]));
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str()),
        (Some("RS256"), Some("JWT"))
    );
    let place = |token: String| {
        let mesh = &mesh;
        async move { mesh.place_order(&token, 1).await }
    };
    // The issuer started after orders and the token service: they find
    // its keys on their next refresh, and refuse with UNAVAILABLE until then.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let order = loop {
        match place(user_token(&["orders.write"])).await {
            Ok(order) => break order,
            Err(status) if status.code() == Code::Unavailable => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    assert_eq!(order.placed_by, "alice");
    assert_eq!(order.reserved_by, "alice");
    assert_eq!(order.reserved_through, TestMesh::spiffe_id("orders"));
    expect_status(
        place(user_token(&["orders.read"])).await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    mesh.stop().await;
}
