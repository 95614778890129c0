//! `token-service --config token-service.toml`: the issuer as its own process.

use clap::Parser;
use service_runtime::{Loaded, ServiceArgs};

/// AuthMesh token service.
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
    let config = match args.service.load::<token_service::Config>() {
        Ok(config) => config,
        Err(err) => return service_runtime::exit_code("token-service", Err(err.into())),
    };
    let runtime = config.config.runtime;
    runtime.block_on("token-service", serve(config))
}

async fn serve(config: Loaded<token_service::Config>) -> Result<(), Box<dyn std::error::Error>> {
    let _metrics = service_runtime::metrics::start(config.config.metrics_listen.as_deref()).await?;
    let prepared = token_service::prepare(&config, auth_interceptor::clock::system_clock())?;
    let listener = tokio::net::TcpListener::bind(&config.config.listen).await?;
    token_service::run(
        listener,
        config,
        prepared,
        service_runtime::shutdown::signal(),
    )
    .await?;
    Ok(())
}
