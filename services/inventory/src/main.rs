//! `inventory --config inventory.toml`: SERVER2 as its own process.

use clap::Parser;
use service_runtime::{Loaded, ServiceArgs};

/// AuthMesh demo inventory service (SERVER2).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

// No `#[tokio::main]`: the runtime's shape comes from the configuration.
fn main() -> std::process::ExitCode {
    service_runtime::install_crypto_provider();
    service_runtime::telemetry::init_tracing();
    let args = Args::parse();
    let config = match args.service.load::<inventory::Config>() {
        Ok(config) => config,
        Err(err) => return service_runtime::exit_code("inventory", Err(err.into())),
    };
    let runtime = config.config.runtime;
    runtime.block_on("inventory", serve(config))
}

async fn serve(config: Loaded<inventory::Config>) -> Result<(), Box<dyn std::error::Error>> {
    let _metrics = service_runtime::metrics::start(config.config.metrics_listen.as_deref()).await?;
    let handler = inventory::InventoryHandler::new(&config.config.stock);
    let listener = tokio::net::TcpListener::bind(&config.config.listen).await?;
    let clock = auth_interceptor::clock::system_clock();
    let shutdown = service_runtime::shutdown::signal();
    inventory::run(listener, config, handler, clock, shutdown).await?;
    Ok(())
}
