//! A server stream may not outlive the token that opened it by more than the
//! leeway: `Inventory/WatchStock` keeps sending while the token holds, and
//! ends with UNAUTHENTICATED once it expires beyond the leeway or is revoked,
//! whether the stream is busy or idle.

use std::time::Duration;

use authmesh_proto::{
    authmesh::v1::{TokenRevocation, revoke_request},
    demo::inventory::v1::GetStockResponse,
};
use authmesh_tests::{
    TestMesh, bearer, decode_claims, expect_status, get_stock, reason, reserve_one,
};
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

/// Long enough for a one-second recheck on a loaded machine; a stream that
/// is never cut fails the test here instead of hanging it.
const CUT_WITHIN: Duration = Duration::from_secs(15);

async fn next(stream: &mut Streaming<GetStockResponse>) -> u32 {
    tokio::time::timeout(CUT_WITHIN, stream.message())
        .await
        .expect("an update in time")
        .expect("the stream goes on")
        .expect("not ended")
        .available
}

async fn ended(stream: &mut Streaming<GetStockResponse>) -> Status {
    tokio::time::timeout(CUT_WITHIN, stream.message())
        .await
        .expect("the stream ends in time")
        .expect_err("the stream ends with an error")
}

/// Opens `WatchStock` on `sku-1` with `token`, over a connection of its own.
async fn watch(mesh: &TestMesh, token: &str) -> Streaming<GetStockResponse> {
    mesh.inventory_client()
        .watch_stock(bearer(get_stock(), token))
        .await
        .expect("WatchStock")
        .into_inner()
}

/// A token with both inventory scopes, signed with the issuer's real key.
fn read_and_reserve(mesh: &TestMesh, ttl: u64) -> String {
    mesh.issuer_key()
        .sign(&mesh.claims(
            "inventory",
            "inventory.read inventory.reserve",
            mesh.now(),
            ttl,
        ))
        .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_token_expires_beyond_the_leeway() {
    let mesh = TestMesh::start().await;
    let mut inventory = mesh.inventory_client();
    let watcher = read_and_reserve(&mesh, 60);
    let mut stream = watch(&mesh, &watcher).await;
    assert_eq!(next(&mut stream).await, 100, "the level now");

    inventory
        .reserve(bearer(reserve_one(), &watcher))
        .await
        .expect("Reserve");
    assert_eq!(
        next(&mut stream).await,
        99,
        "each change while the token holds"
    );

    // Expired, but within the 30 s leeway: the stream still delivers.
    mesh.clock.advance(60 + 20);
    let fresh = read_and_reserve(&mesh, 60);
    inventory
        .reserve(bearer(reserve_one(), &fresh))
        .await
        .expect("Reserve");
    assert_eq!(next(&mut stream).await, 98, "within the leeway");

    // Beyond it the stream is cut, with no further change to wake it.
    mesh.clock.advance(15);
    let status = ended(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("TOKEN_EXPIRED"));
    assert!(!status.message().contains(&watcher));
    // Like every denial, the cut names its decision, which the log line carries.
    let decision_id = status
        .get_details_error_info()
        .and_then(|info| info.metadata.get("decision_id").cloned())
        .expect("decision_id");
    assert_eq!(decision_id.len(), 16, "{decision_id}");

    // The cut ended that stream only: the server and new streams go on.
    let mut again = watch(&mesh, &fresh).await;
    assert_eq!(next(&mut again).await, 98);
    drop(again);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_ends_when_its_token_is_revoked() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut stream = watch(&mesh, &token).await;
    assert_eq!(next(&mut stream).await, 100);

    let claims = decode_claims(&token);
    mesh.revoke(revoke_request::Target::Token(TokenRevocation {
        jti: claims.jti,
        expires_at: i64::try_from(claims.exp).ok(),
    }))
    .await
    .expect("revoke");
    let status = ended(&mut stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("TOKEN_REVOKED"));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_stream_needs_a_token_with_the_read_scope() {
    let mesh = TestMesh::start().await;
    let mut inventory = mesh.inventory_client();
    expect_status(
        inventory.watch_stock(get_stock()).await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
    let orders_token = mesh.mint("orders", &["orders.write"], None).await;
    expect_status(
        inventory
            .watch_stock(bearer(get_stock(), &orders_token))
            .await,
        Code::Unauthenticated,
        Some("AUDIENCE_MISMATCH"),
    );
    let reserve_only = mesh
        .issuer_key()
        .sign(&mesh.claims("inventory", "inventory.reserve", mesh.now(), 60))
        .expect("sign");
    expect_status(
        inventory
            .watch_stock(bearer(get_stock(), &reserve_only))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    assert_eq!(
        mesh.inventory_handler.calls(),
        0,
        "no refused call reached the handler"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_does_not_hold_shutdown_past_the_drain_timeout() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut stream = watch(&mesh, &token).await;
    assert_eq!(next(&mut stream).await, 100);
    // The token lives minutes; shutdown waits for the stream only as long
    // as the drain timeout (a generous bound: it fails only if stop hangs).
    let bound = service_runtime::server::DRAIN_TIMEOUT + Duration::from_secs(30);
    tokio::time::timeout(bound, mesh.stop())
        .await
        .expect("the servers stop despite the open stream");
    drop(stream);
}
