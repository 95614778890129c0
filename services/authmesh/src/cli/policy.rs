//! `authmesh policy check`: a policy file checked offline.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use super::CliError;
use crate::explain::demo_service;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file offline: it parses, and every method of the
    /// service is covered by a rule or public (the check a strict server runs at start).
    Check {
        /// The policy file.
        file: PathBuf,
        /// The gRPC service it protects, e.g. demo.inventory.v1.Inventory
        /// (or a demo service's short name: inventory, orders).
        #[arg(long)]
        service: String,
    },
}

pub(super) fn run(args: Args) -> Result<ExitCode, CliError> {
    let PolicyCommand::Check { file, service } = args.command;
    let service = demo_service(&service).map_or(service.as_str(), |(_, grpc)| grpc);
    let policy = service_runtime::load_policy(&file)?;
    let methods = service_runtime::service_methods(service);
    if methods.is_empty() {
        return Err(format!(
            "unknown service {service:?}: expected a service of this mesh's protos, e.g. demo.inventory.v1.Inventory"
        )
        .into());
    }
    service_runtime::check_coverage(&policy, service, true)?;
    println!(
        "{}: {} methods of {service} covered",
        file.display(),
        methods.len()
    );
    Ok(ExitCode::SUCCESS)
}
