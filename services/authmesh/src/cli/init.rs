//! `authmesh init`: the mesh's state without starting it.

use std::{path::Path, path::PathBuf, process::ExitCode};

use clap::ValueEnum;

use super::CliError;
use crate::dev_state::{DEFAULT_PORTS, DevState, MeshLayout, WorkloadOwner, is_mesh_server};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// `local`: what `up` uses (127.0.0.1, localhost, the files store).
    /// `compose`: each server on all interfaces, reached by its
    /// docker-compose.yml name, the token service on the etcd members.
    /// `kubernetes`: the same servers reached through their Services in
    /// `--namespace` (deploy/kubernetes), etcd the `etcd` StatefulSet.
    #[arg(long, value_enum, default_value_t = Layout::Local)]
    layout: Layout,
    /// The Kubernetes namespace the mesh runs in (`--layout kubernetes`).
    #[arg(long, required_if_eq("layout", "kubernetes"))]
    namespace: Option<String>,
    /// The cluster's DNS domain (`--layout kubernetes`; default `cluster.local`).
    #[arg(long)]
    cluster_domain: Option<String>,
    /// Also copy what a client on the host needs (the CA certificate, the
    /// demo-cli and operator certificates and keys, demo-cli's secret)
    /// into this directory, laid out like a state directory and owned by
    /// the directory's owner.
    #[arg(long)]
    client_kit: Option<PathBuf>,
    /// `WORKLOAD=UID[:GID]`: the user a server (token-service, orders,
    /// inventory, etcd) runs as, given its own private files (and, for a
    /// token service on files, its keys and revocations) and nothing else.
    /// Repeat for each server.
    #[arg(long = "owner", value_parser = WorkloadOwner::parse)]
    owners: Vec<WorkloadOwner>,
    /// `WORKLOAD=GID`: hand a server its private files by group instead,
    /// keeping their owner (readable by that group alone). Needs no
    /// privilege when the group is one of this process's (an init Job in
    /// Kubernetes running with each server's group as a supplemental one).
    /// Repeat for each server.
    #[arg(long = "reader", value_parser = WorkloadOwner::parse_reader)]
    readers: Vec<WorkloadOwner>,
    /// A workload of your own to issue a certificate for (and renew with
    /// the mesh's on every run), valid for its Service's names in a
    /// Kubernetes layout; hand it its key with `--reader`. Repeat for each.
    #[arg(long = "workload")]
    workloads: Vec<String>,
}

/// Where the servers of a generated state listen and find each other.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Layout {
    Local,
    Compose,
    Kubernetes,
}

pub(super) fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let mut layout = match args.layout {
        Layout::Local => MeshLayout::local(DEFAULT_PORTS),
        Layout::Compose => MeshLayout::compose(),
        Layout::Kubernetes => MeshLayout::kubernetes(
            args.namespace.as_deref().unwrap_or_default(),
            args.cluster_domain.as_deref().unwrap_or("cluster.local"),
        )?,
    };
    if !matches!(args.layout, Layout::Kubernetes)
        && (args.namespace.is_some() || args.cluster_domain.is_some())
    {
        return Err("--namespace and --cluster-domain place a --layout kubernetes".into());
    }
    for workload in &args.workloads {
        layout.add_workload(workload)?;
    }
    if let Some(unknown) = args
        .readers
        .iter()
        .find(|r| !is_mesh_server(&r.workload) && !layout.has_workload(&r.workload))
    {
        return Err(format!(
            "--reader {}: no such workload here; add one of your own with --workload {}",
            unknown.workload, unknown.workload
        )
        .into());
    }
    let state = DevState::ensure_layout(state_dir, &layout)?;
    state.hand_over(&args.owners)?;
    state.hand_over(&args.readers)?;
    println!("state ready in {}", state.dir().display());
    if let Some(kit) = args.client_kit {
        state.export_client_kit(&kit)?;
        println!("client kit in {} (use it as --state-dir)", kit.display());
    }
    Ok(ExitCode::SUCCESS)
}
