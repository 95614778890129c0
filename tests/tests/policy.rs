//! Policy files against real servers: deny before allow, dry-run rules,
//! default deny with a strict start-up check, and denials that explain
//! themselves (rule, method and a decision id in `google.rpc.ErrorInfo`),
//! and a token service that mints nothing the target's policy would refuse.

use authmesh::dev_state::DEMO_CLIENT;
use authmesh_proto::demo::inventory::v1::ReserveRequest;
use authmesh_tests::{TestMesh, bearer, expect_status, get_stock};
use tonic::Code;
use tonic_types::StatusExt;

const PUBLIC: &str = r#"public = ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]
"#;

const READ: &str = r#"
[[rule]]
name = "read-stock"
methods = ["/demo.inventory.v1.Inventory/GetStock", "/demo.inventory.v1.Inventory/WatchStock"]
scopes = ["inventory.read"]
"#;

const RESERVE: &str = r#"
[[rule]]
name = "reserve-stock"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
scopes = ["inventory.reserve"]
"#;

fn write_policy(mesh: &TestMesh, policy: &str) {
    std::fs::write(mesh.state.dir().join("inventory.policy.toml"), policy).expect("write policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rules_win_and_the_denial_names_its_rule_and_decision() {
    let mut mesh = TestMesh::start().await;
    let deny = r#"
[[rule]]
name = "no-demo-reads"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/*"]
callers = ["demo-cli"]
"#;
    write_policy(&mesh, &format!("{PUBLIC}{deny}{READ}{RESERVE}"));
    mesh.restart_inventory().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let status = expect_status(
        mesh.inventory_client()
            .get_stock(bearer(get_stock(), &token))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.domain, "authmesh");
    assert_eq!(
        info.metadata.get("rule").map(String::as_str),
        Some("no-demo-reads")
    );
    assert_eq!(
        info.metadata.get("method").map(String::as_str),
        Some("/demo.inventory.v1.Inventory/GetStock")
    );
    let decision = info.metadata.get("decision_id").expect("decision id");
    assert_eq!(decision.len(), 16, "{decision}");
    assert!(!status.message().contains(&token));
    // Another caller (orders, by certificate) is still allowed by the allow rule.
    let orders = mesh
        .mint_with_cert("orders", None, "inventory", &["inventory.read"])
        .await
        .expect("mint");
    let mut as_orders = authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient::new(
        mesh.channel_as(mesh.addrs.inventory, Some("orders")),
    );
    as_orders
        .get_stock(bearer(get_stock(), &orders.token))
        .await
        .expect("orders reads");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_rule_is_logged_but_does_not_block() {
    let mut mesh = TestMesh::start().await;
    let dry = r#"
[[rule]]
name = "planned-lockdown"
effect = "deny"
dry_run = true
methods = ["/demo.inventory.v1.Inventory/*"]
"#;
    write_policy(&mesh, &format!("{PUBLIC}{dry}{READ}{RESERVE}"));
    mesh.restart_inventory().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    mesh.inventory_client()
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("dry-run deny does not block");
    // `explain` runs the same decision and reports what the dry-run rule
    // would have done, next to the rule that really decided.
    let report = authmesh::explain::explain(
        &mesh.state,
        &authmesh::explain::ExplainRequest {
            token: &token,
            service: "inventory",
            method: "/demo.inventory.v1.Inventory/GetStock",
            cert: None,
        },
    )
    .await
    .expect("explain");
    assert_eq!(report["decision"], "allow", "{report}");
    assert_eq!(report["rule"], "read-stock", "{report}");
    assert_eq!(
        report["dry_run"],
        serde_json::json!([{ "rule": "planned-lockdown", "decision": "would-deny" }]),
        "{report}"
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_without_a_rule_is_denied_and_strict_servers_refuse_to_start() {
    let mut mesh = TestMesh::start().await;
    // Reserve has no rule any more.
    write_policy(&mesh, &format!("{PUBLIC}{READ}"));
    let server = mesh.replace_inventory().await;
    let refused = server
        .join()
        .await
        .expect_err("strict policy refuses to start");
    assert!(
        refused
            .to_string()
            .contains("/demo.inventory.v1.Inventory/Reserve"),
        "{refused}"
    );

    // Not strict: the server starts, logs the gap, and the method stays denied.
    let config = mesh.state.inventory_config();
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(
        text.contains("strict_policy = true"),
        "strict is the default: {text}"
    );
    std::fs::write(
        &config,
        text.replace("strict_policy = true", "strict_policy = false"),
    )
    .expect("write config");
    mesh.restart_inventory().await;
    let token = mesh
        .mint_with_cert("demo-cli", None, "inventory", &["inventory.read"])
        .await
        .expect("mint")
        .token;
    let status = expect_status(
        mesh.inventory_client()
            .reserve(bearer(
                ReserveRequest {
                    sku: "sku-1".into(),
                    quantity: 1,
                },
                &token,
            ))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    assert!(
        status.message().contains("no rule allows"),
        "{}",
        status.message()
    );
    assert!(mesh.inventory_handler.reservations().is_empty());
    mesh.stop().await;
}

/// Polls `call` until it returns `expected`'s code (Ok = 0), at most `within`.
async fn eventually<F, Fut>(
    within: std::time::Duration,
    expected: Code,
    mut call: F,
) -> std::time::Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = tokio::time::Instant::now();
    loop {
        let code = call().await.err().map_or(Code::Ok, |s| s.code());
        if code == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {code:?} after {within:?}, want {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_policy_file_applies_within_two_seconds_and_a_bad_one_is_ignored() {
    let mesh = TestMesh::start().await;
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let inventory = mesh.inventory_client();
    let mut read = move || {
        let request = bearer(get_stock(), &token);
        let mut client = inventory.clone();
        async move { client.get_stock(request).await.map(|_| ()) }
    };
    read().await.expect("allowed by the generated policy");

    let deny = r#"
[[rule]]
name = "freeze"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/*"]
"#;
    write_policy(&mesh, &format!("{PUBLIC}{deny}{READ}{RESERVE}"));
    let took = eventually(
        std::time::Duration::from_secs(2),
        Code::PermissionDenied,
        &mut read,
    )
    .await;
    assert!(
        took <= std::time::Duration::from_secs(2),
        "applied after {took:?}"
    );

    // An invalid file (and one that leaves Reserve uncovered, in strict mode)
    // is rejected: the freeze stays in force.
    write_policy(
        &mesh,
        "[[rule]]\nname = \"broken\"\nmethods = [\"not a method\"]\n",
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        read().await.map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );
    write_policy(&mesh, &format!("{PUBLIC}{READ}"));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        read().await.map_err(|s| s.code()),
        Err(Code::PermissionDenied)
    );

    write_policy(&mesh, &format!("{PUBLIC}{READ}{RESERVE}"));
    eventually(std::time::Duration::from_secs(2), Code::Ok, &mut read).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_refuses_tokens_the_target_policy_never_accepts() {
    let mesh = TestMesh::start().await;
    // Reading stock becomes orders' alone, reserving a billing workload's:
    // demo-cli's inventory.read and orders' inventory.reserve are now useless.
    let narrowed = r#"
[[rule]]
name = "read-stock"
methods = ["/demo.inventory.v1.Inventory/GetStock", "/demo.inventory.v1.Inventory/WatchStock"]
callers = ["spiffe://authmesh.local/orders"]
scopes = ["inventory.read"]

[[rule]]
name = "reserve-stock"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
callers = ["spiffe://authmesh.local/billing"]
scopes = ["inventory.reserve"]
"#;
    write_policy(&mesh, &format!("{PUBLIC}{narrowed}"));
    let secret = mesh.secret(DEMO_CLIENT);
    let mint_read = || {
        let (mesh, secret) = (&mesh, &secret);
        async move {
            mesh.mint_as(DEMO_CLIENT, secret, "inventory", &["inventory.read"], None)
                .await
                .map(|_| ())
        }
    };
    // The token service reads the same file and reloads it too.
    eventually(
        std::time::Duration::from_secs(3),
        Code::PermissionDenied,
        mint_read,
    )
    .await;
    let refused = expect_status(
        mint_read().await,
        Code::PermissionDenied,
        Some("SCOPE_NOT_ACCEPTED"),
    );
    assert!(refused.message().contains("inventory.read"), "{refused:?}");
    // Asking for "everything I may have" leaves nothing any rule accepts.
    expect_status(
        mesh.mint_as(DEMO_CLIENT, &secret, "inventory", &[], None)
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    // Orders: "everything" narrows to what the policy would use...
    let narrowed_token = mesh
        .mint_with_cert("orders", None, "inventory", &[])
        .await
        .expect("orders still gets a token");
    assert_eq!(narrowed_token.scope, "inventory.read");
    // ...and an explicit over-broad scope is refused.
    expect_status(
        mesh.mint_with_cert("orders", None, "inventory", &["inventory.reserve"])
            .await,
        Code::PermissionDenied,
        Some("SCOPE_NOT_ACCEPTED"),
    );
    // Other audiences are not affected.
    mesh.mint("orders", &["orders.write"], None).await;
    mesh.stop().await;
}
