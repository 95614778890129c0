//! `orders --config orders.toml`: SERVER1 as its own process.

use clap::Parser;
use service_runtime::{Loaded, ServiceArgs};

/// AuthMesh demo orders service (SERVER1).
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
    let config = match args.service.load::<orders::Config>() {
        Ok(config) => config,
        Err(err) => return service_runtime::exit_code("orders", Err(err.into())),
    };
    let runtime = config.config.runtime;
    runtime.block_on("orders", serve(config))
}

async fn serve(config: Loaded<orders::Config>) -> Result<(), Box<dyn std::error::Error>> {
    let _metrics = service_runtime::metrics::start(config.config.metrics_listen.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&config.config.listen).await?;
    let clock = auth_interceptor::clock::system_clock();
    let shutdown = service_runtime::shutdown::signal();
    orders::run(listener, config, clock, Default::default(), shutdown).await?;
    Ok(())
}
