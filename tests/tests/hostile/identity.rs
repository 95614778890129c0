//! Identity: who the token is for, who issued it, and what kind it is.

use authmesh_proto::demo::orders::v1::PlaceOrderRequest;
use authmesh_tests::bearer;
use serde_json::{Value, json};
use tonic::Code;

use crate::{Suite, named};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aud_missing_another_services_or_of_a_wrong_type() {
    let suite = Suite::start().await;
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("aud missing", None, "CLAIM_MISSING"),
        ("aud orders", Some(json!("orders")), "AUDIENCE_MISMATCH"),
        (
            "aud the issuer",
            Some(json!(suite.mesh.issuer())),
            "AUDIENCE_MISMATCH",
        ),
        (
            "aud with a case change",
            Some(json!("Inventory")),
            "AUDIENCE_MISMATCH",
        ),
        (
            "aud with a trailing space",
            Some(json!("inventory ")),
            "AUDIENCE_MISMATCH",
        ),
        ("aud an array", Some(json!(["inventory"])), "CLAIM_INVALID"),
        (
            "aud two services",
            Some(json!(["orders", "inventory"])),
            "CLAIM_INVALID",
        ),
        ("aud a number", Some(json!(1)), "CLAIM_INVALID"),
        ("aud null", Some(Value::Null), "CLAIM_INVALID"),
    ];
    for (case, aud, reason) in cases {
        let token = suite.with_claim("aud", aud);
        let status = suite
            .refused(case, &token, Code::Unauthenticated, reason)
            .await;
        if reason.starts_with("CLAIM_") {
            assert_eq!(named(&status, "claim").as_deref(), Some("aud"), "{case}");
        }
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server2_forwarding_server1s_token_to_a_third_service() {
    let suite = Suite::start().await;
    // What inventory (SERVER2) received from orders (SERVER1): a genuine
    // token for inventory. Replayed at orders, it is for someone else.
    let received = suite
        .mesh
        .mint("inventory", &["inventory.read"], None)
        .await;
    suite.accepted(&received).await;
    let mut orders = suite.mesh.orders_client();
    let request = bearer(
        PlaceOrderRequest {
            sku: "sku-1".into(),
            quantity: 1,
        },
        &received,
    );
    suite
        .refused_by(
            "forwarded token",
            request,
            Code::Unauthenticated,
            "AUDIENCE_MISMATCH",
            &[&received],
            |request| async move { orders.place_order(request).await.map(drop) },
        )
        .await;
    assert!(
        suite.mesh.inventory_handler.reservations().is_empty(),
        "orders never acted on the forwarded token"
    );
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_missing_or_another_issuers() {
    let suite = Suite::start().await;
    let issuer = suite.mesh.issuer();
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("iss missing", None, "CLAIM_MISSING"),
        (
            "iss another issuer",
            Some(json!("https://evil.example")),
            "ISSUER_MISMATCH",
        ),
        (
            "iss with a trailing slash",
            Some(json!(format!("{issuer}/"))),
            "ISSUER_MISMATCH",
        ),
        (
            "iss upper case",
            Some(json!(issuer.to_uppercase())),
            "ISSUER_MISMATCH",
        ),
        ("iss an array", Some(json!([issuer])), "CLAIM_INVALID"),
        ("iss null", Some(Value::Null), "CLAIM_INVALID"),
    ];
    for (case, iss, reason) in cases {
        let token = suite.with_claim("iss", iss);
        let status = suite
            .refused(case, &token, Code::Unauthenticated, reason)
            .await;
        if reason.starts_with("CLAIM_") {
            assert_eq!(named(&status, "claim").as_deref(), Some("iss"), "{case}");
        }
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typ_missing_or_jwt() {
    let suite = Suite::start().await;
    let claims = suite.claims();
    for (case, typ) in [
        ("typ missing", None),
        ("typ JWT", Some(json!("JWT"))),
        ("typ jwt", Some(json!("jwt"))),
        ("typ AT+JWT", Some(json!("AT+JWT"))),
        ("typ application/at+jwt", Some(json!("application/at+jwt"))),
        ("typ id_token", Some(json!("id_token+jwt"))),
    ] {
        let mut header = suite.header();
        match typ {
            Some(typ) => header["typ"] = typ,
            None => {
                header.as_object_mut().expect("object").remove("typ");
            }
        }
        let token = suite.sign(&header, &claims);
        // Without `typ` the header names the member it lacks.
        let reason = if case == "typ missing" {
            "HEADER_MISSING"
        } else {
            "TOKEN_TYPE_INVALID"
        };
        suite
            .refused(case, &token, Code::Unauthenticated, reason)
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_outside_the_rule_with_substring_or_case_tricks() {
    let suite = Suite::start().await;
    for scope in [
        "",
        "inventory",
        "inventory.rea",
        "inventory.read2",
        "inventory.readx",
        "xinventory.read",
        "Inventory.Read",
        "INVENTORY.READ",
        "inventory.read,inventory.reserve",
        "inventory.*",
        "*",
        "inventory.reserve",
        "orders.write",
    ] {
        let token = suite.with_claim("scope", Some(json!(scope)));
        suite
            .refused(
                &format!("scope {scope:?}"),
                &token,
                Code::PermissionDenied,
                "POLICY_DENIED",
            )
            .await;
    }
    suite.mesh.stop().await;
}
