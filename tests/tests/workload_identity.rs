//! Workload identity: callers prove who they are with certificates, the
//! token service names them by SPIFFE ID, and tokens are bound to the
//! certificate they were minted for (RFC 8705).

use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
use authmesh_proto::demo::orders::v1::PlaceOrderRequest;
use authmesh_tests::{TestMesh, bearer, decode_claims, expect_status, get_stock};
use service_runtime::pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_alone_authenticates_and_binds_the_token() {
    let mesh = TestMesh::start().await;
    let minted = mesh
        .mint_with_cert("orders", None, "inventory", &["inventory.read"])
        .await
        .expect("orders authenticates by certificate");
    let claims = decode_claims(&minted.token);
    assert_eq!(
        claims.sub,
        TestMesh::spiffe_id("orders"),
        "sub is the SPIFFE ID"
    );
    assert_eq!(claims.client_id.as_deref(), Some("orders"));
    assert_eq!(
        claims.cnf.map(|c| c.x5t_s256),
        Some(mesh.thumbprint("orders")),
        "bound to the presented certificate"
    );
    // A secret alone never authenticates a certificate-only client.
    expect_status(
        mesh.mint_as("orders", "any-secret", "inventory", &[], None)
            .await,
        Code::Unauthenticated,
        Some("CREDENTIALS_INVALID"),
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_a_secret_that_disagree_are_refused() {
    let mesh = TestMesh::start().await;
    let demo = mesh.secret("demo-cli");
    expect_status(
        mesh.mint_with_cert("orders", Some(("demo-cli", &demo)), "inventory", &[])
            .await,
        Code::Unauthenticated,
        Some("IDENTITY_CONFLICT"),
    );
    // Agreeing certificate and secret: fine, and still bound.
    let both = mesh
        .mint_with_cert("demo-cli", Some(("demo-cli", &demo)), "inventory", &[])
        .await
        .expect("certificate and secret agree");
    assert_eq!(
        decode_claims(&both.token).sub,
        TestMesh::spiffe_id("demo-cli")
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_certificate_for_an_unregistered_workload_is_refused() {
    let mesh = TestMesh::start().await;
    let pki = DevPki::ensure(&mesh.state.dir().join("tls"), &[]).expect("pki");
    let spec = WorkloadCert::new(
        "billing",
        DEFAULT_TRUST_DOMAIN,
        &[],
        std::time::Duration::from_secs(3600),
    );
    pki.issue_workload(&spec, &mesh.state.dir().join("tls"))
        .expect("issue");
    expect_status(
        mesh.mint_with_cert("billing", None, "inventory", &[]).await,
        Code::Unauthenticated,
        Some("UNKNOWN_WORKLOAD"),
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_works_only_over_its_own_certificate() {
    let mesh = TestMesh::start().await;
    let token = mesh
        .mint_with_cert("demo-cli", None, "inventory", &["inventory.read"])
        .await
        .expect("mint")
        .token;
    let mut right = InventoryClient::new(mesh.channel_as(mesh.addrs.inventory, Some("demo-cli")));
    right
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("same certificate");
    // The same token copied to another workload is useless there.
    let mut stolen = InventoryClient::new(mesh.channel_as(mesh.addrs.inventory, Some("orders")));
    let status = expect_status(
        stolen.get_stock(bearer(get_stock(), &token)).await,
        Code::Unauthenticated,
        Some("TOKEN_BINDING_MISMATCH"),
    );
    assert!(!status.message().contains(&token));
    // Unbound tokens (minted with a secret only) work over any mesh certificate.
    let unbound = mesh.mint("inventory", &["inventory.read"], None).await;
    stolen
        .get_stock(bearer(get_stock(), &unbound))
        .await
        .expect("unbound token");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_both_the_claims_and_the_certificate_identity() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("orders", &[], None).await;
    mesh.orders_client()
        .place_order(bearer(
            PlaceOrderRequest {
                sku: "sku-1".into(),
                quantity: 1,
            },
            &token,
        ))
        .await
        .expect("order");
    let reservation = &mesh.inventory_handler.reservations()[0];
    assert_eq!(
        reservation.caller,
        TestMesh::spiffe_id("orders"),
        "token sub"
    );
    assert_eq!(
        reservation.peer.as_deref(),
        Some(TestMesh::spiffe_id("orders").as_str()),
        "certificate"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_certificate_never_reaches_a_handler() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let mut anonymous = InventoryClient::new(mesh.channel_as(mesh.addrs.inventory, None));
    let status = anonymous
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect_err("inventory requires a client certificate");
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{status:?}"
    );
    assert!(mesh.inventory_handler.reservations().is_empty());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_certificate_moves_bound_tokens_without_a_failed_call() {
    let mesh = TestMesh::start().await;
    let caller = mesh.mint("orders", &[], Some(3600)).await;
    let old = mesh.thumbprint("orders");
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let traffic = {
        let mut orders = mesh.orders_client();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: at most 90 orders (stock is 100), one every 40 ms.
            for _ in 0..90 {
                if stopped.try_recv().is_ok() {
                    break;
                }
                let order = PlaceOrderRequest {
                    sku: "sku-1".into(),
                    quantity: 1,
                };
                if let Err(status) = orders.place_order(bearer(order, &caller)).await {
                    failures.push(status);
                }
                tokio::time::sleep(std::time::Duration::from_millis(40)).await;
            }
            failures
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pki = DevPki::ensure(&mesh.state.dir().join("tls"), &[]).expect("pki");
    let spec = WorkloadCert::new(
        "orders",
        DEFAULT_TRUST_DOMAIN,
        &["localhost", "orders"],
        std::time::Duration::from_secs(86_400),
    );
    pki.issue_workload(&spec, &mesh.state.dir().join("tls"))
        .expect("renew");
    let new = mesh.thumbprint("orders");
    assert_ne!(old, new);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let last = mesh
            .inventory_handler
            .reservations()
            .last()
            .and_then(|r| r.token_binding.clone());
        if last.as_deref() == Some(new.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders never moved to the renewed certificate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let _ = stop.send(());
    let failures = traffic.await.expect("traffic");
    assert!(
        failures.is_empty(),
        "{} failed calls, first: {:?}",
        failures.len(),
        failures.first()
    );
    let bindings: Vec<Option<String>> = mesh
        .inventory_handler
        .reservations()
        .into_iter()
        .map(|r| r.token_binding)
        .collect();
    assert_eq!(
        bindings.first().cloned().flatten(),
        Some(old),
        "before: bound to the old certificate"
    );
    assert_eq!(
        bindings.last().cloned().flatten(),
        Some(new),
        "after: bound to the new one"
    );
    mesh.stop().await;
}
