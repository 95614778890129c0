//! `authmesh explain`: the decision a service would make, without the call.

use std::{path::Path, path::PathBuf, process::ExitCode};

use super::CliError;
use crate::{
    dev_state::DevState,
    explain::{ExplainRequest, explain},
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The bearer token.
    #[arg(long)]
    token: String,
    /// The service: inventory or orders (or demo.inventory.v1.Inventory, demo.orders.v1.Orders).
    #[arg(long)]
    service: String,
    /// The exact gRPC path, e.g. /demo.inventory.v1.Inventory/Reserve.
    #[arg(long)]
    method: String,
    /// The client certificate the call would present (checks a bound token's binding).
    #[arg(long)]
    cert: Option<PathBuf>,
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let state = DevState::open(state_dir);
    let request = ExplainRequest {
        token: args.token.trim(),
        service: &args.service,
        method: &args.method,
        cert: args.cert.as_deref(),
    };
    let report = explain(&state, &request).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report["decision"] == "deny" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
