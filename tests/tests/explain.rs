//! `authmesh explain` against the real mesh: the decision it prints is the
//! one the service makes on the real call (same reason, rule and method),
//! including revocations and certificate binding, and explaining uses
//! nothing up.

use authmesh::{
    dev_state::{DEMO_CLIENT, OPERATOR_CLIENT},
    explain::{ExplainRequest, explain},
};
use authmesh_proto::authmesh::v1::{TokenRevocation, revoke_request};
use authmesh_tests::{TestMesh, bearer, decode_claims, expect_status, get_stock, reserve_one};
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const GET_STOCK: &str = "/demo.inventory.v1.Inventory/GetStock";
const RESERVE: &str = "/demo.inventory.v1.Inventory/Reserve";

async fn explained(mesh: &TestMesh, token: &str, method: &str, cert_of: Option<&str>) -> Value {
    let cert = cert_of.map(|workload| mesh.state.workload_files(workload).0);
    explain(
        &mesh.state,
        &ExplainRequest {
            token,
            service: "inventory",
            method,
            cert: cert.as_deref(),
        },
    )
    .await
    .expect("explain")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_prints_the_decision_the_service_makes() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;

    let allowed = explained(&mesh, &token, GET_STOCK, None).await;
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    assert_eq!(allowed["rule"], "read-stock");
    assert_eq!(allowed["caller"]["sub"], DEMO_CLIENT);

    // The denial matches the real call's ErrorInfo field by field.
    let denied = explained(&mesh, &token, RESERVE, None).await;
    let status = expect_status(
        mesh.inventory_client()
            .reserve(bearer(reserve_one(), &token))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    let info = status.get_details_error_info().expect("error info");
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["code"], "PermissionDenied");
    assert_eq!(denied["reason"], info.reason.as_str());
    assert_eq!(denied["message"], status.message());
    for key in ["rule", "method"] {
        assert_eq!(
            denied["metadata"][key],
            info.metadata[key].as_str(),
            "{key}"
        );
    }

    let public = explained(&mesh, &token, "/grpc.health.v1.Health/Check", None).await;
    assert_eq!(public["public"], true, "{public}");
    let garbage = explained(&mesh, "not.a.token", GET_STOCK, None).await;
    assert_eq!(garbage["reason"], "TOKEN_MALFORMED", "{garbage}");
    assert!(
        explain(
            &mesh.state,
            &ExplainRequest {
                token: &token,
                service: "billing",
                method: GET_STOCK,
                cert: None,
            },
        )
        .await
        .is_err(),
        "an unknown service is an error, not a decision"
    );

    // Revocations count, as the service's verifier sees them.
    mesh.revoke(revoke_request::Target::Token(TokenRevocation {
        jti: decode_claims(&token).jti,
        expires_at: None,
    }))
    .await
    .expect("revoke");
    let revoked = explained(&mesh, &token, GET_STOCK, None).await;
    assert_eq!(revoked["reason"], "TOKEN_REVOKED", "{revoked}");
    assert_eq!(revoked["code"], "Unauthenticated");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_checks_binding_when_given_the_certificate_and_uses_nothing_up() {
    let mesh = TestMesh::start().await;
    let bound = mesh
        .mint_with_cert(DEMO_CLIENT, None, "inventory", &["inventory.read"])
        .await
        .expect("bound token")
        .token;
    let unchecked = explained(&mesh, &bound, GET_STOCK, None).await;
    assert_eq!(unchecked["decision"], "allow", "{unchecked}");
    assert!(
        unchecked["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("binding not checked")),
        "{unchecked}"
    );
    let right = explained(&mesh, &bound, GET_STOCK, Some(DEMO_CLIENT)).await;
    assert_eq!(right["decision"], "allow", "{right}");
    assert!(right.get("notes").is_none(), "{right}");
    let wrong = explained(&mesh, &bound, GET_STOCK, Some(OPERATOR_CLIENT)).await;
    assert_eq!(wrong["reason"], "TOKEN_BINDING_MISMATCH", "{wrong}");

    // A one-time token explained twice is still good for its one real call;
    // whether the service has seen it already, only the service knows, so
    // explain does not claim a plain allow.
    let once = mesh
        .mint_one_time("inventory", &["inventory.read"], 60)
        .await;
    for _ in 0..2 {
        let report = explained(&mesh, &once, GET_STOCK, None).await;
        assert_eq!(report["decision"], "allow_if_unused", "{report}");
    }
    let mut client = mesh.inventory_client();
    client
        .get_stock(bearer(get_stock(), &once))
        .await
        .expect("first real use");
    expect_status(
        client.get_stock(bearer(get_stock(), &once)).await,
        Code::Unauthenticated,
        Some("TOKEN_REPLAYED"),
    );
    mesh.stop().await;
}
