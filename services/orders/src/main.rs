//! `orders --config orders.toml`: SERVER1 as its own process.

use clap::Parser;
use service_runtime::ServiceArgs;

/// AuthMesh demo orders service (SERVER1).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    service_runtime::install_crypto_provider();
    service_runtime::telemetry::init_tracing();
    let args = Args::parse();
    service_runtime::exit_code("orders", serve(args.service).await)
}

async fn serve(args: ServiceArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.load::<orders::Config>()?;
    let _metrics = service_runtime::metrics::start(config.config.metrics_listen.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&config.config.listen).await?;
    let clock = auth_interceptor::clock::system_clock();
    let shutdown = service_runtime::shutdown::signal();
    orders::run(listener, config, clock, Default::default(), shutdown).await?;
    Ok(())
}
