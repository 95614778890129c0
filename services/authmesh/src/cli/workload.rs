//! `authmesh workload add | list | remove`: workloads registered with the
//! token service at run time, through its `WorkloadAdmin` service, as the
//! operator (its workload certificate must be in the token service's
//! `admin_ids`). Every replica applies a change within a second.

use std::{collections::BTreeMap, path::Path, path::PathBuf, process::ExitCode};

use authmesh_proto::authmesh::v1::{
    AddWorkloadRequest, ListWorkloadsRequest, RemoveWorkloadRequest, ScopeList, Workload,
    workload_admin_client::WorkloadAdminClient,
};
use clap::Subcommand;
use service_runtime::pki::{DEFAULT_TRUST_DOMAIN, spiffe_id};
use tonic::transport::Channel;

use super::{CliError, endpoint::EndpointArgs};
use crate::dev_state::{DevState, OPERATOR_CLIENT};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: WorkloadCommand,
}

/// Which token service, as which admin workload.
#[derive(Debug, clap::Args)]
struct Connection {
    /// The admin workload whose certificate is presented (one of the token service's admin_ids).
    #[arg(long, default_value = OPERATOR_CLIENT)]
    admin: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

#[derive(Debug, Subcommand)]
enum WorkloadCommand {
    /// Register a workload: by certificate (its SPIFFE ID), by secret, or both.
    Add {
        /// Client id (the `sub` of its tokens when it uses a secret alone).
        #[arg(long)]
        id: String,
        /// Its SPIFFE ID (default: spiffe://authmesh.local/<id> unless
        /// --secret-only); a certificate with it authenticates the workload.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Also give it a secret: generated, written to this file (0600) and never shown.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// Authenticate by secret only (no SPIFFE ID); needs --secret-out.
        #[arg(long, requires = "secret_out", conflicts_with = "spiffe_id")]
        secret_only: bool,
        /// AUDIENCE=SCOPE[,SCOPE...]: what it may ask tokens for; repeat per audience.
        #[arg(long = "audience", required = true)]
        audiences: Vec<String>,
        /// Its token lifetime cap in seconds (default: the service's maximum).
        #[arg(long)]
        max_ttl: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Every workload: from token-service.toml ("file") and registered here ("registered").
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Remove a workload registered at run time. Its tokens stay valid until
    /// they expire; `authmesh revoke --sub` ends them at once.
    Remove {
        /// Client id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

impl Connection {
    fn client(self, state: &DevState) -> Result<WorkloadAdminClient<Channel>, CliError> {
        let endpoint = self.endpoint.endpoint(state, &self.admin);
        Ok(WorkloadAdminClient::new(endpoint.channel()?))
    }
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let state = DevState::open(state_dir);
    match args.command {
        WorkloadCommand::Add {
            id,
            spiffe_id: given,
            secret_out,
            secret_only,
            audiences,
            max_ttl,
            connection,
        } => {
            let mut admin = connection.client(&state)?;
            let audiences = parse_audiences(&audiences)?;
            let spiffe = match (given, secret_only) {
                (_, true) => String::new(),
                (Some(given), false) => given,
                (None, false) => spiffe_id(DEFAULT_TRUST_DOMAIN, &id),
            };
            let secret = secret_out
                .as_ref()
                .map(|_| token_service::credentials::generate_secret());
            let secret_hash = match &secret {
                Some(secret) => token_service::credentials::hash_secret(secret)?,
                None => String::new(),
            };
            let workload = Workload {
                id,
                spiffe_id: spiffe,
                secret_hash,
                audiences: audiences.into_iter().collect(),
                max_ttl_seconds: max_ttl.unwrap_or(0),
                origin: String::new(),
            };
            let added = admin
                .add_workload(AddWorkloadRequest {
                    workload: Some(workload),
                })
                .await
                .map_err(refused)?
                .into_inner()
                .workload
                .ok_or("the token service answered without the workload")?;
            // Only once the workload exists: a secret for nothing is not kept.
            if let (Some(path), Some(secret)) = (&secret_out, &secret) {
                service_runtime::files::write_private(path, secret.as_bytes())?;
            }
            println!("{}", serde_json::to_string_pretty(&report(&added))?);
        }
        WorkloadCommand::List { connection } => {
            let listed = connection
                .client(&state)?
                .list_workloads(ListWorkloadsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let all: Vec<_> = listed.workloads.iter().map(report).collect();
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        WorkloadCommand::Remove { id, connection } => {
            connection
                .client(&state)?
                .remove_workload(RemoveWorkloadRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            println!("{}", serde_json::json!({ "removed": id }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The token service's answer as `Code: reason`, what an operator acts on.
fn refused(status: tonic::Status) -> CliError {
    format!("{:?}: {}", status.code(), status.message()).into()
}

/// `AUDIENCE=SCOPE[,SCOPE...]` arguments, merged per audience.
fn parse_audiences(specs: &[String]) -> Result<BTreeMap<String, ScopeList>, CliError> {
    let mut audiences: BTreeMap<String, ScopeList> = BTreeMap::new();
    for spec in specs {
        let (audience, scopes) = spec
            .split_once('=')
            .filter(|(a, s)| !a.is_empty() && !s.is_empty())
            .ok_or_else(|| format!("--audience {spec:?}: write AUDIENCE=SCOPE[,SCOPE...]"))?;
        audiences
            .entry(audience.to_owned())
            .or_default()
            .scopes
            .extend(scopes.split(',').map(str::to_owned));
    }
    Ok(audiences)
}

fn report(workload: &Workload) -> serde_json::Value {
    let audiences: BTreeMap<&str, &[String]> = workload
        .audiences
        .iter()
        .map(|(a, s)| (a.as_str(), s.scopes.as_slice()))
        .collect();
    serde_json::json!({
        "id": workload.id,
        "spiffe_id": (!workload.spiffe_id.is_empty()).then_some(&workload.spiffe_id),
        "audiences": audiences,
        "max_ttl_seconds": workload.max_ttl_seconds,
        "origin": workload.origin,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_audiences;

    #[test]
    fn audiences_merge_and_malformed_ones_are_refused() {
        let parsed = parse_audiences(&[
            "inventory=inventory.read".into(),
            "inventory=inventory.write,x".into(),
            "orders=orders.write".into(),
        ])
        .expect("parsed");
        assert_eq!(
            parsed["inventory"].scopes,
            ["inventory.read", "inventory.write", "x"]
        );
        assert_eq!(parsed["orders"].scopes, ["orders.write"]);
        for bad in ["inventory", "=x", "inventory="] {
            assert!(parse_audiences(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
