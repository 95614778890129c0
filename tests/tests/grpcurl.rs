//! The README walkthrough with the real grpcurl binary: reflection, health,
//! mint, call, and the two denials, against a mesh built from dev state the
//! way `authmesh up` builds it.

use std::path::{Path, PathBuf};

use authmesh::token_cli::{self, TokenServiceEndpoint};
use authmesh_client::ClientCredentials;
use authmesh_tests::TestMesh;
use base64::{Engine, engine::general_purpose::STANDARD};

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

/// grpcurl with `-cacert`, presenting `cert` (`-cert`/`-key`) when given.
async fn grpcurl(
    bin: &Path,
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    port: u16,
    args: &[&str],
) -> Output {
    let mut command = std::process::Command::new(bin);
    command.arg("-cacert").arg(ca);
    if let Some((cert, key)) = cert {
        command.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    command.args(&args[..args.len() - 1]);
    command
        .arg(format!("localhost:{port}"))
        .arg(args[args.len() - 1]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("grpcurl runs");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_walkthrough() {
    let Some(bin) = authmesh_tests::grpcurl() else {
        return;
    };
    let mesh = TestMesh::start().await;
    let ca: PathBuf = mesh.ca_path();
    let demo_cert = mesh.state.workload_files("demo-cli");
    let cert = Some(&demo_cert);
    let (ts, orders, inventory) = (
        mesh.addrs.token_service.port(),
        mesh.addrs.orders.port(),
        mesh.addrs.inventory.port(),
    );

    // Inventory and orders require a client certificate from the mesh CA.
    let no_cert = grpcurl(&bin, &ca, None, inventory, &["list"]).await;
    assert!(
        !no_cert.success,
        "inventory refuses a client without a certificate"
    );

    // Reflection and health need no token.
    let list = grpcurl(&bin, &ca, cert, inventory, &["list"]).await;
    assert!(list.success, "{}", list.stderr);
    for service in [
        "demo.inventory.v1.Inventory",
        "grpc.health.v1.Health",
        "authmesh.v1.TokenService",
    ] {
        assert!(
            list.stdout.contains(service),
            "{service} missing from {}",
            list.stdout
        );
    }
    let health = grpcurl(&bin, &ca, cert, orders, &["grpc.health.v1.Health/Check"]).await;
    assert!(
        health.success && health.stdout.contains("SERVING"),
        "{} {}",
        health.stdout,
        health.stderr
    );

    // Mint with grpcurl alone (secret only, no certificate), then call.
    let basic = format!(
        "authorization: Basic {}",
        STANDARD.encode(format!("demo-cli:{}", mesh.secret("demo-cli")))
    );
    let minted = grpcurl(
        &bin,
        &ca,
        None,
        ts,
        &[
            "-H",
            &basic,
            "-d",
            r#"{"audience":"inventory","scopes":["inventory.read"]}"#,
            "authmesh.v1.TokenService/IssueToken",
        ],
    )
    .await;
    assert!(minted.success, "{}", minted.stderr);
    let minted: serde_json::Value = serde_json::from_str(&minted.stdout).expect("json");
    let token = minted["token"].as_str().expect("token").to_owned();
    let bearer = format!("authorization: Bearer {token}");
    let stock = grpcurl(
        &bin,
        &ca,
        cert,
        inventory,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"sku":"sku-1"}"#,
            "demo.inventory.v1.Inventory/GetStock",
        ],
    )
    .await;
    assert!(
        stock.success && stock.stdout.contains(r#""available": 100"#),
        "{} {}",
        stock.stdout,
        stock.stderr
    );

    // Denials, with the reason readable through reflection.
    let anonymous = grpcurl(
        &bin,
        &ca,
        cert,
        inventory,
        &[
            "-d",
            r#"{"sku":"sku-1"}"#,
            "demo.inventory.v1.Inventory/GetStock",
        ],
    )
    .await;
    assert!(!anonymous.success);
    assert!(
        anonymous.stderr.contains("Unauthenticated") && anonymous.stderr.contains("TOKEN_MISSING"),
        "{}",
        anonymous.stderr
    );
    let reserve = grpcurl(
        &bin,
        &ca,
        cert,
        inventory,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"sku":"sku-1","quantity":1}"#,
            "demo.inventory.v1.Inventory/Reserve",
        ],
    )
    .await;
    assert!(!reserve.success);
    assert!(
        reserve.stderr.contains("PermissionDenied") && reserve.stderr.contains("POLICY_DENIED"),
        "{}",
        reserve.stderr
    );
    // The ErrorInfo names the rule and carries the decision id of the server's log line.
    for field in ["\"rule\":\"reserve-stock\"", "\"decision_id\":\""] {
        assert!(
            reserve.stderr.contains(field),
            "{field} in {}",
            reserve.stderr
        );
    }
    assert!(
        !reserve.stderr.contains(&token),
        "the token never appears in an error"
    );

    // The CLI's own mint (what `authmesh token mint` runs: certificate and
    // secret), bound to demo-cli's certificate, then PlaceOrder through the mesh.
    let endpoint = TokenServiceEndpoint {
        url: mesh.issuer(),
        ca: ca.clone(),
        identity: Some(demo_cert.clone()),
    };
    let credentials = ClientCredentials::new("demo-cli", mesh.secret("demo-cli"));
    let order_token = token_cli::mint(&endpoint, Some(&credentials), "orders", vec![], None, false)
        .await
        .expect("cli mint")
        .token;
    let order = grpcurl(
        &bin,
        &ca,
        cert,
        orders,
        &[
            "-H",
            &format!("authorization: Bearer {order_token}"),
            "-d",
            r#"{"sku":"sku-2","quantity":2}"#,
            "demo.orders.v1.Orders/PlaceOrder",
        ],
    )
    .await;
    assert!(order.success, "{}", order.stderr);
    assert!(
        order
            .stdout
            .contains(r#""reservedBy": "spiffe://authmesh.local/orders""#)
            && order
                .stdout
                .contains(r#""placedBy": "spiffe://authmesh.local/demo-cli""#)
            && order.stdout.contains(r#""remaining": 3"#),
        "{}",
        order.stdout
    );

    // `authmesh token inspect` on the same token.
    let report = token_cli::inspect(&endpoint, &mesh.state, &order_token)
        .await
        .expect("inspect");
    assert_eq!(report["verification"]["verified"], true, "{report}");
    assert_eq!(report["claims"]["aud"], "orders");

    // Revocation with grpcurl alone, as the operator workload: the token
    // that read stock above is refused with TOKEN_REVOKED from then on.
    let operator = mesh.state.workload_files("operator");
    let jti = authmesh_tests::decode_claims(&token).jti;
    let revoked = grpcurl(
        &bin,
        &ca,
        Some(&operator),
        ts,
        &[
            "-d",
            &format!(r#"{{"token":{{"jti":"{jti}"}},"reason":"grpcurl walkthrough"}}"#),
            "authmesh.v1.TokenService/Revoke",
        ],
    )
    .await;
    assert!(revoked.success, "{}", revoked.stderr);
    assert!(revoked.stdout.contains(&jti), "{}", revoked.stdout);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let refused = grpcurl(
            &bin,
            &ca,
            cert,
            inventory,
            &[
                "-H",
                &bearer,
                "-d",
                r#"{"sku":"sku-1"}"#,
                "demo.inventory.v1.Inventory/GetStock",
            ],
        )
        .await;
        if !refused.success {
            assert!(
                refused.stderr.contains("Unauthenticated")
                    && refused.stderr.contains("TOKEN_REVOKED"),
                "{}",
                refused.stderr
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revoked token still accepted"
        );
    }
    mesh.stop().await;
}
