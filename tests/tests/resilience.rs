//! The mesh across token-service restarts and outages: persisted keys,
//! cached tokens and keys, UNAVAILABLE once nothing valid is left, recovery.

use std::time::Duration;

use authmesh_proto::demo::{inventory::v1::GetStockRequest, orders::v1::PlaceOrderRequest};
use authmesh_tests::{TestMesh, bearer, expect_status};
use tonic::Code;

fn order() -> PlaceOrderRequest {
    PlaceOrderRequest {
        sku: "sku-1".into(),
        quantity: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_minted_before_a_restart_still_verify_after_it() {
    let mut mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let kid_before = mesh.issuer_key().kid().to_owned();
    mesh.restart_token_service().await;
    assert_eq!(
        mesh.issuer_key().kid(),
        kid_before,
        "the signing key was reloaded, not regenerated"
    );
    // A fresh inventory learns its keys only from the restarted token service.
    mesh.restart_inventory().await;
    mesh.inventory_client()
        .get_stock(bearer(
            GetStockRequest {
                sku: "sku-1".into(),
            },
            &token,
        ))
        .await
        .expect("pre-restart token verifies");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_rides_out_a_token_service_outage_until_its_token_expires() {
    let mut mesh = TestMesh::start().await;
    // The caller's own token outlives the whole outage.
    let caller = mesh.mint("orders", &[], Some(3600)).await;
    let mut orders = mesh.orders_client();
    orders
        .place_order(bearer(order(), &caller))
        .await
        .expect("healthy mesh");

    mesh.stop_token_service().await;
    for _ in 0..3 {
        orders
            .place_order(bearer(order(), &caller))
            .await
            .expect("cached token and keys keep the mesh serving");
    }

    // Orders' token for inventory (300 s) is now expired and none can be fetched.
    mesh.clock.advance(301);
    // The token source's reason reaches orders' caller: the status table's promise.
    let status = expect_status(
        orders.place_order(bearer(order(), &caller)).await,
        Code::Unavailable,
        Some("TOKEN_SOURCE_UNAVAILABLE"),
    );
    assert!(
        status
            .message()
            .contains("no valid token for audience inventory"),
        "{}",
        status.message()
    );
    assert_eq!(
        mesh.inventory_handler.reservations().len(),
        4,
        "no reservation without a token"
    );

    // Back up: orders recovers on its own, without a restart.
    mesh.restart_token_service().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match orders.place_order(bearer(order(), &caller)).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "orders did not recover: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    mesh.stop().await;
}
