//! Per-method authorization, decided on the exact `:path` before routing.

use authmesh_proto::demo::inventory::v1::{GetStockRequest, GetStockResponse};
use authmesh_tests::{bearer, get_stock, reserve_one};
use tonic::{Code, Request, codegen::http::uri::PathAndQuery};

use crate::Suite;

/// Calls `path` on inventory with a GetStock message.
async fn call_path(
    suite: &Suite,
    path: &str,
    request: Request<GetStockRequest>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(suite.mesh.channel(suite.mesh.addrs.inventory));
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<GetStockRequest, GetStockResponse>::default();
    let path = PathAndQuery::try_from(path).expect("path");
    grpc.unary(request, path, codec).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_caller_on_a_method_not_granted() {
    let suite = Suite::start().await;
    // Read scope only; Reserve needs inventory.reserve.
    let token = suite
        .mesh
        .mint("inventory", &["inventory.read"], None)
        .await;
    let mut inventory = suite.mesh.inventory_client();
    suite
        .refused_by(
            "Reserve with read scope",
            bearer(reserve_one(), &token),
            Code::PermissionDenied,
            "POLICY_DENIED",
            &[&token],
            |request| async move { inventory.reserve(request).await.map(drop) },
        )
        .await;
    assert!(suite.mesh.inventory_handler.reservations().is_empty());
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_with_no_rule_at_all() {
    let suite = Suite::start().await;
    let token = suite.with_claim(
        "scope",
        Some(serde_json::json!("inventory.read inventory.reserve")),
    );
    // Paths no rule names, including near-misses of real methods: the
    // policy compares the exact path the router dispatches on.
    for path in [
        "/demo.inventory.v1.Inventory/DropTables",
        "/demo.inventory.v1.Inventory/getstock",
        "/demo.inventory.v1.Inventory/GetStock/",
        "/demo.inventory.v1.Inventory//GetStock",
        "/demo.inventory.v1.Inventory/GetStock%20",
        "/demo.inventory.v1.inventory/GetStock",
        "/demo.inventory.v2.Inventory/GetStock",
    ] {
        suite
            .refused_by(
                path,
                bearer(get_stock(), &token),
                Code::PermissionDenied,
                "POLICY_DENIED",
                &[&token],
                |request| call_path(&suite, path, request),
            )
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_without_a_token() {
    let suite = Suite::start().await;
    for path in [
        "/demo.inventory.v1.Inventory/DropTables",
        "/no.such.Service/Method",
        "/grpc.health.v1.Health/Check/",
        "/grpc.health.v1.Health/check",
    ] {
        suite
            .refused_by(
                path,
                Request::new(get_stock()),
                Code::Unauthenticated,
                "TOKEN_MISSING",
                &[],
                |request| call_path(&suite, path, request),
            )
            .await;
    }
    suite.mesh.stop().await;
}
