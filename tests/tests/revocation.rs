//! Revocation without a shared store, against the real mesh: by `jti` and by
//! subject cutoff, pushed to every verifier within a second, kept across a
//! token service restart; and one-time tokens refused on replay.

use std::time::Duration;

use authmesh::dev_state::DEMO_CLIENT;
use authmesh_proto::{
    authmesh::v1::{SubjectRevocation, TokenRevocation, revoke_request},
    demo::{
        inventory::v1::{GetStockResponse, inventory_client::InventoryClient},
        orders::v1::{PlaceOrderRequest, PlaceOrderResponse, orders_client::OrdersClient},
    },
};
use authmesh_tests::{
    TestMesh, bearer, decode_claims, expect_status, get_stock, reason, reserve_one,
};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};

/// How soon a revocation must be enforced by every verifier.
const WITHIN: Duration = Duration::from_secs(1);

fn place_order() -> PlaceOrderRequest {
    PlaceOrderRequest {
        sku: "sku-1".into(),
        quantity: 1,
    }
}

fn revoke_jti(token: &str) -> revoke_request::Target {
    let claims = decode_claims(token);
    revoke_request::Target::Token(TokenRevocation {
        jti: claims.jti,
        expires_at: i64::try_from(claims.exp).ok(),
    })
}

/// Calls `call` until it fails with TOKEN_REVOKED, and returns how long
/// after `since` that was; fails the test if it takes longer than `limit`.
async fn revoked_after<F, Fut, T>(
    since: Instant,
    limit: Duration,
    what: &str,
    mut call: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match call().await {
            Err(status) if reason(&status).as_deref() == Some("TOKEN_REVOKED") => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                return since.elapsed();
            }
            Err(status) => panic!("{what}: unexpected refusal {status:?}"),
            Ok(_) => {
                assert!(
                    since.elapsed() < limit,
                    "{what}: revoked token still accepted after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn inventory(mesh: &TestMesh, addr: std::net::SocketAddr) -> InventoryClient<Channel> {
    InventoryClient::new(mesh.channel(addr))
}

/// GetStock with `token`, as a future that owns what it needs.
fn stock_with(
    client: &InventoryClient<Channel>,
    token: &str,
) -> impl std::future::Future<Output = Result<tonic::Response<GetStockResponse>, tonic::Status>> + use<>
{
    let mut client = client.clone();
    let request = bearer(get_stock(), token);
    async move { client.get_stock(request).await }
}

/// PlaceOrder with `token`, as a future that owns what it needs.
fn order_with(
    client: &OrdersClient<Channel>,
    token: &str,
) -> impl std::future::Future<Output = Result<tonic::Response<PlaceOrderResponse>, tonic::Status>> + use<>
{
    let mut client = client.clone();
    let request = bearer(place_order(), token);
    async move { client.place_order(request).await }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_jti_reaches_two_verifiers_within_a_second() {
    let mesh = TestMesh::start().await;
    let (second, second_addr) = mesh.start_second_inventory().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let other = mesh.mint("inventory", &["inventory.read"], None).await;
    let (mut a, mut b) = (
        inventory(&mesh, mesh.addrs.inventory),
        inventory(&mesh, second_addr),
    );
    for client in [&mut a, &mut b] {
        client
            .get_stock(bearer(get_stock(), &token))
            .await
            .expect("accepted before the revocation");
    }

    let revoked = mesh.revoke(revoke_jti(&token)).await.expect("revoke");
    let since = Instant::now();
    assert_eq!(
        revoked.expires_at,
        i64::try_from(decode_claims(&token).exp).expect("exp"),
        "forgotten once the token has expired"
    );
    for (name, client) in [("inventory", &a), ("second inventory", &b)] {
        let took = revoked_after(since, WITHIN, name, || stock_with(client, &token)).await;
        eprintln!("{name}: revocation enforced {took:?} after Revoke returned");
    }
    // Only that token: another of the same caller still works on both.
    for client in [&mut a, &mut b] {
        client
            .get_stock(bearer(get_stock(), &other))
            .await
            .expect("another token is unaffected");
    }
    second.stop().await.expect("stop");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_cutoff_reaches_inventory_and_orders_within_a_second() {
    let mesh = TestMesh::start().await;
    let inventory_token = mesh.mint("inventory", &["inventory.read"], None).await;
    let orders_token = mesh.mint("orders", &["orders.write"], None).await;
    let mut stock = inventory(&mesh, mesh.addrs.inventory);
    let mut orders = OrdersClient::new(mesh.channel(mesh.addrs.orders));
    stock
        .get_stock(bearer(get_stock(), &inventory_token))
        .await
        .expect("inventory accepts before");
    orders
        .place_order(bearer(place_order(), &orders_token))
        .await
        .expect("orders accepts before");

    let revoked = mesh
        .revoke(revoke_request::Target::Subject(SubjectRevocation {
            sub: DEMO_CLIENT.into(),
            issued_before: None,
        }))
        .await
        .expect("revoke");
    let since = Instant::now();
    revoked_after(since, WITHIN, "inventory", || {
        stock_with(&stock, &inventory_token)
    })
    .await;
    revoked_after(since, WITHIN, "orders", || {
        order_with(&orders, &orders_token)
    })
    .await;

    // A token minted right away, even within the cutoff's second, is accepted.
    assert!(revoked.revoked_at > 0);
    let fresh = mesh.mint("orders", &["orders.write"], None).await;
    let placed = orders
        .place_order(bearer(place_order(), &fresh))
        .await
        .expect("a token minted after the cutoff works")
        .into_inner();
    // Orders' own tokens (another subject) were never affected.
    assert_eq!(placed.reserved_by, TestMesh::spiffe_id("orders"));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_a_token_service_restart_and_reach_reconnected_verifiers() {
    let mut mesh = TestMesh::start().await;
    let first = mesh.mint("inventory", &["inventory.read"], None).await;
    let second = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut stock = inventory(&mesh, mesh.addrs.inventory);
    mesh.revoke(revoke_jti(&first)).await.expect("revoke");
    revoked_after(Instant::now(), WITHIN, "before restart", || {
        stock_with(&stock, &first)
    })
    .await;

    // The token service restarts from its persisted state; inventory's
    // watch reconnects by itself and gets the full list again.
    mesh.restart_token_service().await;
    mesh.revoke(revoke_jti(&second))
        .await
        .expect("revoke after restart");
    // Allow for the reconnect backoff (at most 5 s) on top of the push.
    revoked_after(
        Instant::now(),
        Duration::from_secs(10),
        "after reconnect",
        || stock_with(&stock, &second),
    )
    .await;
    expect_status(
        stock.get_stock(bearer(get_stock(), &first)).await,
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );

    // A verifier that starts now learns both from the persisted list before
    // it reports SERVING.
    let (late, late_addr) = mesh.start_second_inventory().await;
    let mut late_client = inventory(&mesh, late_addr);
    for token in [&first, &second] {
        expect_status(
            late_client.get_stock(bearer(get_stock(), token)).await,
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    late.stop().await.expect("stop");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_revoking_client_may_revoke_and_bad_requests_change_nothing() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let target = || {
        revoke_request::Target::Token(TokenRevocation {
            jti: decode_claims(&token).jti,
            expires_at: None,
        })
    };
    let request = |target| authmesh_proto::authmesh::v1::RevokeRequest {
        target,
        reason: String::new(),
    };
    // demo-cli authenticates fine but may not revoke.
    expect_status(
        mesh.token_client_as(DEMO_CLIENT)
            .revoke(request(Some(target())))
            .await,
        Code::PermissionDenied,
        Some("REVOKE_NOT_ALLOWED"),
    );
    // No credentials at all.
    expect_status(
        mesh.token_client().revoke(request(Some(target()))).await,
        Code::Unauthenticated,
        Some("CREDENTIALS_MALFORMED"),
    );
    // The operator, with requests that name nothing or a future cutoff.
    expect_status(
        mesh.token_client_as("operator").revoke(request(None)).await,
        Code::InvalidArgument,
        Some("REVOCATION_INVALID"),
    );
    let future = i64::try_from(mesh.now() + 3600).expect("time");
    expect_status(
        mesh.revoke(revoke_request::Target::Subject(SubjectRevocation {
            sub: DEMO_CLIENT.into(),
            issued_before: Some(future),
        }))
        .await,
        Code::InvalidArgument,
        Some("REVOCATION_INVALID"),
    );
    // Nothing was revoked by any of these.
    tokio::time::sleep(Duration::from_millis(200)).await;
    inventory(&mesh, mesh.addrs.inventory)
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("still valid");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_token_is_accepted_once() {
    let mesh = TestMesh::start().await;
    let token = mesh
        .mint_one_time("inventory", &["inventory.read"], 60)
        .await;
    assert!(decode_claims(&token).one_time);
    let mut stock = inventory(&mesh, mesh.addrs.inventory);
    // A call the policy denies does not use the token up...
    expect_status(
        stock.reserve(bearer(reserve_one(), &token)).await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    // ...the first allowed call does, and any replay is refused.
    stock
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("first use");
    for _ in 0..2 {
        expect_status(
            stock.get_stock(bearer(get_stock(), &token)).await,
            Code::Unauthenticated,
            Some("TOKEN_REPLAYED"),
        );
    }
    // Ordinary tokens are reusable, as always.
    let reusable = mesh.mint("inventory", &["inventory.read"], None).await;
    for _ in 0..3 {
        stock
            .get_stock(bearer(get_stock(), &reusable))
            .await
            .expect("reusable token");
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_at_one_replica_reaches_verifiers_of_the_other() {
    let mesh = TestMesh::start().await;
    let (replica, replica_addr) = mesh.start_token_service_replica().await;
    // Inventory watches the first replica; the revocation is made at the second.
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let stock = inventory(&mesh, mesh.addrs.inventory);
    stock_with(&stock, &token).await.expect("accepted before");
    let mut at_replica =
        authmesh_proto::authmesh::v1::token_service_client::TokenServiceClient::new(
            mesh.channel_as(replica_addr, Some("operator")),
        );
    at_replica
        .revoke(authmesh_proto::authmesh::v1::RevokeRequest {
            target: Some(revoke_jti(&token)),
            reason: "at the other replica".into(),
        })
        .await
        .expect("revoke at the replica");
    // The first replica reads the shared file every 0.5 s, then pushes.
    let took = revoked_after(Instant::now(), Duration::from_secs(3), "inventory", || {
        stock_with(&stock, &token)
    })
    .await;
    eprintln!("revocation made at the replica enforced after {took:?}");
    replica.stop().await.expect("stop");
    mesh.stop().await;
}
