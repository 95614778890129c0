//! `token-service --config token-service.toml`: the issuer as its own process.

use clap::Parser;
use service_runtime::ServiceArgs;

/// AuthMesh token service.
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
    service_runtime::exit_code("token-service", serve(args.service).await)
}

async fn serve(args: ServiceArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.load::<token_service::Config>()?;
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
