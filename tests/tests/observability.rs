//! Observability against the real mesh: Prometheus `/metrics` over real
//! HTTP counts decisions by reason, cache hits, verification latency, tokens
//! issued and revocations applied; request ids travel from orders to
//! inventory and come back to the caller.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use authmesh_proto::{
    authmesh::v1::{TokenRevocation, revoke_request},
    demo::orders::v1::PlaceOrderRequest,
};
use authmesh_tests::{TestMesh, bearer, decode_claims, expect_status, get_stock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};

/// `GET path` over a fresh HTTP/1.1 connection: status line and body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Every sample of the exposition text, by its full series name.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum over the series of `name` that carry every label in `labels`.
fn value(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    samples(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_decisions_cache_tokens_and_revocations() {
    let mesh = TestMesh::start().await;
    let metrics = service_runtime::metrics::start(Some("127.0.0.1:0"))
        .await
        .expect("bind")
        .expect("endpoint");
    // Other tests in this process share the recorder: compare before and after.
    let before = scrape(metrics.addr).await;

    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut inventory = mesh.inventory_client();
    for _ in 0..3 {
        inventory
            .get_stock(bearer(get_stock(), &token))
            .await
            .expect("allowed");
    }
    expect_status(
        inventory.get_stock(Request::new(get_stock())).await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
    mesh.revoke(revoke_request::Target::Token(TokenRevocation {
        jti: decode_claims(&token).jti,
        expires_at: None,
    }))
    .await
    .expect("revoke");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while inventory
        .get_stock(bearer(get_stock(), &token))
        .await
        .is_ok()
    {
        assert!(tokio::time::Instant::now() < deadline, "never revoked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let after = scrape(metrics.addr).await;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let inv = ("service", "inventory");
    assert!(grew("authmesh_decisions_total", &[inv, ("decision", "allow")]) >= 3.0);
    assert!(
        grew(
            "authmesh_decisions_total",
            &[inv, ("decision", "deny"), ("reason", "TOKEN_MISSING")]
        ) >= 1.0
    );
    assert!(
        grew(
            "authmesh_decisions_total",
            &[inv, ("decision", "deny"), ("reason", "TOKEN_REVOKED")]
        ) >= 1.0
    );
    assert!(grew("authmesh_token_cache_total", &[inv, ("result", "hit")]) >= 2.0);
    assert!(grew("authmesh_token_cache_total", &[inv, ("result", "miss")]) >= 1.0);
    assert!(
        grew(
            "authmesh_verification_seconds_count",
            &[inv, ("cache", "hit")]
        ) >= 2.0
    );
    assert!(
        grew(
            "authmesh_tokens_issued_total",
            &[("client", "demo-cli"), ("aud", "inventory")]
        ) >= 1.0
    );
    assert!(grew("authmesh_revocations_applied_total", &[inv]) >= 1.0);
    assert!(grew("authmesh_revocations_made_total", &[("kind", "jti")]) >= 1.0);
    assert!(value(&after, "authmesh_keys_loaded_timestamp_seconds", &[inv]) > 1.0e9);
    assert!(value(&after, "authmesh_keys", &[inv]) >= 1.0);

    // Nothing else is served, and the token never shows up.
    let (status, _) = http_get(metrics.addr, "/").await;
    assert!(status.contains("404"), "{status}");
    let (_, text) = http_get(metrics.addr, "/metrics").await;
    assert!(!text.contains(&token));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_travel_from_orders_to_inventory_and_back() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("orders", &["orders.write"], None).await;
    let order = || PlaceOrderRequest {
        sku: "sku-1".into(),
        quantity: 1,
    };
    let mut orders = mesh.orders_client();

    let mut request = bearer(order(), &token);
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().expect("ascii"));
    let response = orders.place_order(request).await.expect("order");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("req-42"))
    );
    let reserved = mesh.inventory_handler.reservations();
    assert_eq!(
        reserved.last().and_then(|r| r.request_id.as_deref()),
        Some("req-42"),
        "inventory saw the caller's request id"
    );

    // No id, or one that is not sane: a fresh one is made up and used all the way.
    for sent in [None, Some("bad id with spaces"), Some(&*"x".repeat(200))] {
        let mut request = bearer(order(), &token);
        if let Some(sent) = sent {
            request
                .metadata_mut()
                .insert("x-request-id", sent.parse().expect("ascii"));
        }
        let response = orders.place_order(request).await.expect("order");
        let made_up = response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("an id comes back")
            .to_owned();
        assert_eq!(made_up.len(), 16, "{made_up}");
        assert_ne!(Some(made_up.as_str()), sent);
        let reserved = mesh.inventory_handler.reservations();
        assert_eq!(
            reserved.last().and_then(|r| r.request_id.as_deref()),
            Some(made_up.as_str())
        );
    }

    // Denials carry it too, so a refused caller can quote it.
    let mut anonymous = Request::new(order());
    anonymous
        .metadata_mut()
        .insert("x-request-id", "req-denied".parse().expect("ascii"));
    let status = expect_status(
        orders.place_order(anonymous).await,
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
    assert_eq!(
        status
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("req-denied"))
    );
    mesh.stop().await;
}
