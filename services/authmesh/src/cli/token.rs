//! `authmesh token mint` and `authmesh token inspect`.

use std::{path::Path, path::PathBuf, process::ExitCode};

use clap::Subcommand;

use super::{
    CliError,
    endpoint::{EndpointArgs, client_credentials},
};
use crate::{
    dev_state::{DEMO_CLIENT, DevState},
    token_cli,
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: Box<TokenCommand>,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a token from the running token service (only the token, for `$(...)`).
    Mint {
        /// Target service.
        #[arg(long)]
        aud: String,
        /// A scope to ask for; repeat for several. None asks for all the client may have.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime in seconds (default 300, at most 3600).
        #[arg(long)]
        ttl: Option<i64>,
        /// A one-time token: each verifier accepts it on one call only.
        #[arg(long)]
        one_time: bool,
        /// Client to mint as.
        #[arg(long, default_value = DEMO_CLIENT)]
        client_id: String,
        /// File holding the client's secret (default: <state-dir>/clients/<client-id>.secret).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// Show a token's header and claims and whether it verifies now against
    /// the issuer's keys and revocations (read from the state directory when
    /// the token service is down). Exits 0 when it verifies, 1 when it does
    /// not, 2 when that cannot be told.
    Inspect {
        /// The token.
        token: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let state = DevState::open(state_dir);
    match *args.command {
        TokenCommand::Mint {
            aud,
            scopes,
            ttl,
            one_time,
            client_id,
            secret_file,
            endpoint,
        } => {
            let endpoint = endpoint.endpoint(&state, &client_id);
            let credentials = client_credentials(&state, &client_id, secret_file, &endpoint)?;
            let minted =
                token_cli::mint(&endpoint, credentials.as_ref(), &aud, scopes, ttl, one_time)
                    .await?;
            println!("{}", minted.token);
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Inspect { token, endpoint } => {
            let endpoint = endpoint.endpoint(&state, DEMO_CLIENT);
            let report = token_cli::inspect(&endpoint, &state, token.trim()).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(match report["verification"]["verified"].as_bool() {
                Some(true) => ExitCode::SUCCESS,
                Some(false) => ExitCode::FAILURE,
                None => ExitCode::from(2),
            })
        }
    }
}
