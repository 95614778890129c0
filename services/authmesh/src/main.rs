//! `authmesh`: run the whole mesh locally, mint and inspect tokens.

use std::{path::PathBuf, process::ExitCode};

use auth_interceptor::{ClientCredentials, clock::system_clock};
use authmesh::{
    dev_state::{DEFAULT_PORTS, DEMO_CLIENT, DevState},
    mesh::Mesh,
    token_cli::{self, TokenServiceEndpoint},
};
use clap::{Parser, Subcommand};

/// AuthMesh operator CLI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Dev state directory (CA, keys, client secrets, service configs).
    #[arg(
        long,
        global = true,
        env = "AUTHMESH_STATE_DIR",
        default_value = ".authmesh"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run token-service (:50051), orders (:50052) and inventory (:50053) on 127.0.0.1 over TLS.
    Up,
    /// Mint and inspect tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Print the argon2id hash of a client secret read from standard input,
    /// for `secret_hash` in token-service.toml.
    HashSecret,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a token from the running token service (only the token, for `$(...)`).
    Mint {
        /// Target service.
        #[arg(long)]
        aud: String,
        /// A scope to ask for; repeat for several. None asks for all the client may have.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in seconds (default 300, at most 3600).
        #[arg(long)]
        ttl: Option<i64>,
        /// Client to mint as.
        #[arg(long, default_value = DEMO_CLIENT)]
        client_id: String,
        /// File holding the client's secret (default: <state-dir>/clients/<client-id>.secret).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Show a token's header and claims and whether it verifies against the issuer's keys.
    Inspect {
        /// The token.
        token: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Debug, clap::Args)]
struct EndpointArgs {
    /// Token service URL.
    #[arg(long, default_value = "https://localhost:50051")]
    url: String,
    /// CA certificate of the token service (default: <state-dir>/tls/ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl EndpointArgs {
    fn endpoint(self, state: &DevState) -> TokenServiceEndpoint {
        TokenServiceEndpoint {
            url: self.url,
            ca: self.ca.unwrap_or_else(|| state.ca_cert()),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::install_crypto_provider();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Up) {
        service_runtime::telemetry::init_tracing();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Up => up(&cli.state_dir).await,
        Command::HashSecret => {
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret)?;
            println!(
                "{}",
                token_service::credentials::hash_secret(secret.trim())?
            );
            Ok(())
        }
        Command::Token { command } => {
            let state = DevState::open(&cli.state_dir);
            match command {
                TokenCommand::Mint {
                    aud,
                    scopes,
                    ttl,
                    client_id,
                    secret_file,
                    endpoint,
                } => {
                    let secret_file = secret_file.unwrap_or_else(|| state.secret_file(&client_id));
                    let secret = service_runtime::files::read_to_string(&secret_file)?;
                    let credentials = ClientCredentials::new(client_id, secret.trim());
                    let minted = token_cli::mint(
                        &endpoint.endpoint(&state),
                        &credentials,
                        &aud,
                        scopes,
                        ttl,
                    )
                    .await?;
                    println!("{}", minted.token);
                    Ok(())
                }
                TokenCommand::Inspect { token, endpoint } => {
                    let report =
                        token_cli::inspect(&endpoint.endpoint(&state), token.trim()).await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(())
                }
            }
        }
    }
}

async fn up(state_dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let state = DevState::ensure(state_dir, DEFAULT_PORTS)?;
    let mesh = Mesh::start(&state, system_clock()).await?;
    print_walkthrough(state_dir, &mesh);
    tokio::select! {
        () = service_runtime::shutdown::signal() => {
            tracing::info!("stopping the mesh");
        }
        () = wait_for_failure(&mesh) => {
            tracing::error!("a server stopped unexpectedly; stopping the mesh");
        }
    }
    mesh.stop().await?;
    Ok(())
}

async fn wait_for_failure(mesh: &Mesh) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if mesh.token_service.is_finished()
            || mesh.orders.is_finished()
            || mesh.inventory.is_finished()
        {
            return;
        }
    }
}

fn print_walkthrough(state_dir: &std::path::Path, mesh: &Mesh) {
    let ca = state_dir.join("tls/ca.pem");
    let ca = ca.display();
    let (ts, orders, inventory) = (
        mesh.token_service.addr().port(),
        mesh.orders.addr().port(),
        mesh.inventory.addr().port(),
    );
    println!(
        r#"
AuthMesh is up (state in {state}):
  token-service  https://localhost:{ts}
  orders         https://localhost:{orders}   (SERVER1)
  inventory      https://localhost:{inventory}   (SERVER2)

Try it (in another terminal, from this directory):
  grpcurl -cacert {ca} localhost:{inventory} list
  grpcurl -cacert {ca} localhost:{inventory} grpc.health.v1.Health/Check
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud orders)
  grpcurl -cacert {ca} -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":2}}' localhost:{orders} demo.orders.v1.Orders/PlaceOrder
  grpcurl -cacert {ca} -d '{{"sku":"sku-1"}}' localhost:{inventory} demo.inventory.v1.Inventory/GetStock          # UNAUTHENTICATED
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud inventory)
  grpcurl -cacert {ca} -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":1}}' localhost:{inventory} demo.inventory.v1.Inventory/Reserve   # PERMISSION_DENIED

Ctrl-C stops the mesh."#,
        state = state_dir.display()
    );
}
