//! `authmesh certs issue`: a workload certificate from the mesh CA.

use std::{path::Path, path::PathBuf, process::ExitCode};

use clap::Subcommand;
use service_runtime::pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert, spiffe_id};

use super::CliError;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Issue (or renew) a workload certificate whose URI SAN is
    /// spiffe://<trust-domain>/<name>, signed by the mesh CA in <state-dir>/tls.
    Issue {
        /// Workload name, the last segment of its SPIFFE ID.
        #[arg(long)]
        name: String,
        /// A DNS name the workload also serves as; repeat for several (none: client only).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// Trust domain of the SPIFFE ID.
        #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
        /// Directory for <name>.pem and <name>-key.pem (default: <state-dir>/tls).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(super) fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let CertsCommand::Issue {
        name,
        dns_names,
        trust_domain,
        ttl_hours,
        out,
    } = args.command;
    let tls_dir = state_dir.join("tls");
    let pki = DevPki::ensure(&tls_dir, &[])?;
    let dns: Vec<&str> = dns_names.iter().map(String::as_str).collect();
    let lifetime = std::time::Duration::from_secs(ttl_hours.max(1) * 3600);
    let spec = WorkloadCert::new(&name, &trust_domain, &dns, lifetime);
    let files = pki.issue_workload(&spec, &out.unwrap_or(tls_dir))?;
    println!("{}", spiffe_id(&trust_domain, &name));
    println!("cert: {}", files.cert.display());
    println!("key:  {}", files.key.display());
    println!("ca:   {}", pki.ca_cert().display());
    Ok(ExitCode::SUCCESS)
}
