//! How a command reaches a server: URL, trust, the client certificate, and
//! the client's secret.

use std::path::PathBuf;

use authmesh_client::ClientCredentials;

use super::CliError;
use crate::{dev_state::DevState, token_cli::TokenServiceEndpoint};

/// Where the server is and how to trust it.
#[derive(Debug, clap::Args)]
pub(super) struct EndpointArgs {
    /// The server's URL (https://host:port); for every command but
    /// `health`, the token service's.
    #[arg(long, default_value = "https://localhost:50051")]
    url: String,
    /// CA certificate of the server (default: <state-dir>/tls/ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate to present (default: <state-dir>/tls/<client-id>.pem when it exists).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key (default: <state-dir>/tls/<client-id>-key.pem).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Present no client certificate, even if the state has one.
    #[arg(long, conflicts_with_all = ["cert", "key"])]
    no_cert: bool,
}

impl EndpointArgs {
    /// The endpoint, presenting `client_id`'s certificate when the state has one.
    pub(super) fn endpoint(self, state: &DevState, client_id: &str) -> TokenServiceEndpoint {
        let identity = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ if self.no_cert => None,
            _ => Some(state.workload_files(client_id))
                .filter(|(cert, key)| cert.exists() && key.exists()),
        };
        TokenServiceEndpoint {
            url: self.url,
            ca: self.ca.unwrap_or_else(|| state.ca_cert()),
            identity,
        }
    }
}

/// The client's secret from `secret_file`, or from the state's default file
/// if it exists; none when the client authenticates by certificate alone.
///
/// # Errors
/// When `secret_file` is unreadable, or when `endpoint` has no certificate
/// and the default secret file is missing too: the client would have no
/// credential at all, and the error names both files looked for.
pub(super) fn client_credentials(
    state: &DevState,
    client_id: &str,
    secret_file: Option<PathBuf>,
    endpoint: &TokenServiceEndpoint,
) -> Result<Option<ClientCredentials>, CliError> {
    let default_file = state.secret_file(client_id);
    let secret_file = secret_file.unwrap_or_else(|| default_file.clone());
    match service_runtime::files::read_to_string(&secret_file) {
        Ok(secret) => Ok(Some(ClientCredentials::new(client_id, secret.trim()))),
        Err(_) if secret_file == default_file && endpoint.identity.is_some() => Ok(None),
        Err(_) if secret_file == default_file => {
            let (cert, _) = state.workload_files(client_id);
            Err(format!(
                "no credentials for client {client_id:?}: neither {} nor {} exists (pass --secret-file, or --cert and --key)",
                default_file.display(),
                cert.display()
            )
            .into())
        }
        Err(err) => Err(err.into()),
    }
}
