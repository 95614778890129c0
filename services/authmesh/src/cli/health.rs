//! `authmesh health`: one server's gRPC health, for scripts and containers.

use std::{path::Path, process::ExitCode, time::Duration};

use super::{CliError, endpoint::EndpointArgs};
use crate::{
    dev_state::{DEMO_CLIENT, DevState},
    token_cli,
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The health service name to ask about ("" for the whole server).
    #[arg(long, default_value = "")]
    service: String,
    /// Present this workload's certificate.
    #[arg(long, default_value = DEMO_CLIENT)]
    client_id: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5)]
    timeout: u64,
    /// The server: `--url https://host:port` (any AuthMesh server).
    #[command(flatten)]
    endpoint: EndpointArgs,
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let state = DevState::open(state_dir);
    let endpoint = args.endpoint.endpoint(&state, &args.client_id);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let status = token_cli::health(&endpoint, &args.service, timeout).await?;
    println!("{status}");
    if status == "SERVING" {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("{} is {status}", endpoint.url).into())
    }
}
