//! Time: expiry, not-before and issue time, and their types.

use serde_json::{Value, json};
use tonic::Code;

use crate::{Suite, named};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_beyond_the_leeway_is_refused_and_within_it_served() {
    let suite = Suite::start().await;
    let now = suite.mesh.now();
    let with_exp = |exp: u64| {
        let mut claims = suite.claims();
        claims["iat"] = json!(exp - 300);
        claims["exp"] = json!(exp);
        suite.sign(&suite.header(), &claims)
    };
    // The mesh's verifiers allow the default 30 s of leeway.
    let within = with_exp(now - 20);
    let handled = suite.mesh.inventory_handler.calls();
    suite.accepted(&within).await;
    assert_eq!(suite.mesh.inventory_handler.calls(), handled + 1);
    suite
        .refused(
            "expired 31 s ago",
            &with_exp(now - 31),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        )
        .await;
    suite
        .refused(
            "expired an hour ago",
            &with_exp(now - 3600),
            Code::Unauthenticated,
            "TOKEN_EXPIRED",
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_nbf_and_iat_of_the_wrong_type_or_range() {
    let suite = Suite::start().await;
    let now = suite.mesh.now();
    let values: Vec<(&str, Value)> = vec![
        ("a string", json!((now + 300).to_string())),
        ("a float", json!(now as f64 + 300.5)),
        ("huge", json!(u64::MAX)),
        (
            "beyond u64",
            serde_json::from_str("184467440737095516160").expect("number"),
        ),
        ("negative", json!(-1)),
        ("null", Value::Null),
        ("an array", json!([now + 300])),
        ("an object", json!({"t": now + 300})),
        ("a bool", json!(true)),
    ];
    for claim in ["exp", "nbf", "iat"] {
        for (what, value) in &values {
            let token = suite.with_claim(claim, Some(value.clone()));
            // Huge integers are integers: they fail the range checks instead.
            let reason = match (claim, *what) {
                ("exp", "huge") => "TOKEN_LIFETIME_TOO_LONG",
                ("nbf", "huge") => "TOKEN_NOT_YET_VALID",
                _ => "CLAIM_INVALID",
            };
            let status = suite
                .refused(
                    &format!("{claim} {what}"),
                    &token,
                    Code::Unauthenticated,
                    reason,
                )
                .await;
            if reason == "CLAIM_INVALID" {
                assert_eq!(named(&status, "claim").as_deref(), Some(claim), "{what}");
            }
        }
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exp_ten_years_ahead() {
    let suite = Suite::start().await;
    let token = suite.with_claim("exp", Some(json!(suite.mesh.now() + 10 * 365 * 24 * 3600)));
    suite
        .refused(
            "exp in ten years",
            &token,
            Code::Unauthenticated,
            "TOKEN_LIFETIME_TOO_LONG",
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbf_an_hour_ahead() {
    let suite = Suite::start().await;
    let mut claims = suite.claims();
    claims["nbf"] = json!(suite.mesh.now() + 3600);
    claims["exp"] = json!(suite.mesh.now() + 3600);
    let token = suite.sign(&suite.header(), &claims);
    suite
        .refused(
            "nbf in an hour",
            &token,
            Code::Unauthenticated,
            "TOKEN_NOT_YET_VALID",
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_in_the_future() {
    let suite = Suite::start().await;
    let now = suite.mesh.now();
    // Beyond the 30 s leeway by 5 s, not 1: the clock runs on between
    // signing and checking, and a loaded CI machine can pause for a second.
    for ahead in [35, 600] {
        let mut claims = suite.claims();
        claims["iat"] = json!(now + ahead);
        claims["exp"] = json!(now + ahead + 60);
        let token = suite.sign(&suite.header(), &claims);
        suite
            .refused(
                &format!("iat {ahead} s ahead"),
                &token,
                Code::Unauthenticated,
                "TOKEN_ISSUED_IN_FUTURE",
            )
            .await;
    }
    suite.mesh.stop().await;
}
