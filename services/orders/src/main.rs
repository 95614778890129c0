//! `orders --config orders.toml`: SERVER1 as its own process.

use std::path::PathBuf;

use clap::Parser;
use orders::Config;

/// AuthMesh demo orders service (SERVER1).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); every key can be overridden by AUTHMESH_* variables.
    #[arg(long, env = "AUTHMESH_CONFIG")]
    config: PathBuf,
    /// Serve without TLS (development only; logged as a warning).
    #[arg(long)]
    insecure_plaintext: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_runtime::install_crypto_provider();
    service_runtime::telemetry::init_tracing();
    match serve(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "orders failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = service_runtime::load_config::<Config, _>(&args.config, std::env::vars())?;
    config.config.insecure_plaintext |= args.insecure_plaintext;
    let listener = tokio::net::TcpListener::bind(&config.config.listen).await?;
    let clock = auth_interceptor::clock::system_clock();
    orders::run(
        listener,
        config,
        clock,
        Default::default(),
        service_runtime::shutdown::signal(),
    )
    .await?;
    Ok(())
}
