//! `authmesh up`: the whole mesh in one process on 127.0.0.1.

use std::{net::SocketAddr, path::Path, process::ExitCode, time::Duration};

use auth_interceptor::clock::system_clock;

use super::CliError;
use crate::{
    dev_state::{DEFAULT_PORTS, DEMO_CLIENT, DevState},
    mesh::Mesh,
    token_cli::{self, TokenServiceEndpoint},
};

/// Longest wait for every server to answer SERVING before `up` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Where to serve Prometheus /metrics for the whole mesh (plain HTTP); "off" for none.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: String,
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let metrics_listen = (args.metrics_listen != "off").then_some(args.metrics_listen.as_str());
    up(state_dir, metrics_listen).await?;
    Ok(ExitCode::SUCCESS)
}

async fn up(state_dir: &Path, metrics_listen: Option<&str>) -> Result<(), CliError> {
    let state = DevState::ensure(state_dir, DEFAULT_PORTS)?;
    let metrics = service_runtime::metrics::start(metrics_listen).await?;
    let mesh = Mesh::start(&state, system_clock()).await?;
    // 24 h workload certificates are renewed at half-life while the mesh
    // runs; servers and clients pick the new files up without a restart.
    let renewer = {
        let state = state.clone();
        service_runtime::BackgroundTask::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                match state.renew_due_certificates() {
                    Ok(0) => {}
                    Ok(renewed) => tracing::info!(renewed, "renewed workload certificates"),
                    Err(err) => {
                        tracing::error!(error = %err, "renewing workload certificates failed")
                    }
                }
            }
        })
    };
    // The banner promises servers that answer: a server that fails to start
    // (a broken key, a port in use) stops `up` with its error instead.
    if !all_serving(&state, &mesh).await {
        drop(renewer);
        mesh.stop().await?;
        return Err(
            "the mesh did not come up: no server failed, but not all answered SERVING within 30 s"
                .into(),
        );
    }
    print_walkthrough(state_dir, &mesh, metrics.as_ref().map(|m| m.addr));
    tokio::select! {
        () = service_runtime::shutdown::signal() => {
            tracing::info!("stopping the mesh");
        }
        () = wait_for_failure(&mesh) => {
            tracing::error!("a server stopped unexpectedly; stopping the mesh");
        }
    }
    drop(renewer);
    mesh.stop().await?;
    Ok(())
}

/// Whether every server answers its health check with SERVING (over mTLS,
/// as demo-cli) before one stops or [`READY_TIMEOUT`] passes.
async fn all_serving(state: &DevState, mesh: &Mesh) -> bool {
    let addrs = [
        mesh.token_service.addr(),
        mesh.orders.addr(),
        mesh.inventory.addr(),
    ];
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        if failed(mesh) {
            return false;
        }
        let mut still = Vec::new();
        for addr in pending {
            let endpoint = TokenServiceEndpoint {
                url: format!("https://localhost:{}", addr.port()),
                ca: state.ca_cert(),
                identity: Some(state.workload_files(DEMO_CLIENT)),
            };
            let status = token_cli::health(&endpoint, "", Duration::from_secs(1)).await;
            if !matches!(status.as_deref(), Ok("SERVING")) {
                still.push(addr);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    pending.is_empty() && !failed(mesh)
}

fn failed(mesh: &Mesh) -> bool {
    mesh.token_service.is_finished()
        || mesh.orders.is_finished()
        || mesh.inventory.is_finished()
        || mesh.idp.as_ref().is_some_and(|idp| idp.is_finished())
}

async fn wait_for_failure(mesh: &Mesh) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if failed(mesh) {
            return;
        }
    }
}

fn print_walkthrough(state_dir: &Path, mesh: &Mesh, metrics: Option<SocketAddr>) {
    let tls = state_dir.join("tls");
    let mtls = format!(
        "-cacert {ca} -cert {cert} -key {key}",
        ca = tls.join("ca.pem").display(),
        cert = tls.join("demo-cli.pem").display(),
        key = tls.join("demo-cli-key.pem").display()
    );
    let (ts, orders, inventory) = (
        mesh.token_service.addr().port(),
        mesh.orders.addr().port(),
        mesh.inventory.addr().port(),
    );
    println!(
        r#"
AuthMesh is up (state in {state}; every hop is mutual TLS):
  token-service  https://localhost:{ts}
  orders         https://localhost:{orders}   (SERVER1)
  inventory      https://localhost:{inventory}   (SERVER2)

Try it (in another terminal, from this directory). grpcurl presents the
demo-cli workload certificate (spiffe://authmesh.local/demo-cli):
  M="{mtls}"
  grpcurl $M localhost:{inventory} list
  grpcurl $M localhost:{inventory} grpc.health.v1.Health/Check
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud orders)
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":2}}' localhost:{orders} demo.orders.v1.Orders/PlaceOrder
  grpcurl $M -d '{{"sku":"sku-1"}}' localhost:{inventory} demo.inventory.v1.Inventory/GetStock          # UNAUTHENTICATED
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud inventory)
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":1}}' localhost:{inventory} demo.inventory.v1.Inventory/Reserve   # PERMISSION_DENIED
  cargo run -q --release --bin authmesh -- explain --token "$TOKEN" --service inventory --method /demo.inventory.v1.Inventory/Reserve
  cargo run -q --release --bin authmesh -- revoke --token "$TOKEN"
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1"}}' localhost:{inventory} demo.inventory.v1.Inventory/GetStock          # UNAUTHENTICATED: TOKEN_REVOKED
{user}
Ctrl-C stops the mesh."#,
        state = state_dir.display(),
        user = match &mesh.idp {
            Some(idp) => format!(
                r#"
On a user's behalf: a user token from the local OIDC issuer (https://localhost:{idp}),
which orders exchanges to reserve at inventory as the user, with orders as the actor:
  USER_TOKEN=$(cargo run -q --release --bin authmesh -- user-token --user alice)
  grpcurl $M -H "authorization: Bearer $USER_TOKEN" -d '{{"sku":"sku-1","quantity":1}}' localhost:{orders} demo.orders.v1.Orders/PlaceOrder
"#,
                idp = idp.addr().port()
            ),
            None => String::new(),
        }
    );
    if let Some(addr) = metrics {
        println!("Metrics of all three servers: curl http://{addr}/metrics");
    }
}
