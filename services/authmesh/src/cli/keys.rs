//! `authmesh keys rotate`: schedule a key rotation.

use std::{path::Path, path::PathBuf, process::ExitCode};

use auth_interceptor::{Clock, SigningAlgorithm, SystemClock};
use clap::Subcommand;

use super::CliError;
use crate::dev_state::DevState;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Schedule a key rotation in the token service's key directory: a new
    /// key is published at once and signs after the overlap; the old one is
    /// published until every token it signed has expired. Running token
    /// services (every replica sharing the directory) pick it up within a second.
    Rotate {
        /// Seconds between publishing the new key and signing with it: longer
        /// than the verifiers' key refresh interval (`auth.key_refresh_seconds`, default 60).
        #[arg(long, default_value_t = 150)]
        overlap_seconds: u64,
        /// Algorithm of the new key (default: the configured one).
        #[arg(long, value_parser = parse_algorithm)]
        algorithm: Option<SigningAlgorithm>,
        /// The token service's configuration (default: <state-dir>/token-service.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn parse_algorithm(name: &str) -> Result<SigningAlgorithm, String> {
    SigningAlgorithm::from_name(name).ok_or_else(|| format!("{name:?}: expected EdDSA or ES256"))
}

pub(super) fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let KeysCommand::Rotate {
        overlap_seconds,
        algorithm,
        config,
    } = args.command;
    let path = config.unwrap_or_else(|| DevState::open(state_dir).token_service_config());
    let loaded: service_runtime::Loaded<token_service::Config> =
        service_runtime::load_config(&path, std::iter::empty())?;
    let settings = &loaded.config;
    let now = SystemClock.now();
    if overlap_seconds < 60 {
        eprintln!(
            "warning: an overlap of {overlap_seconds} s is shorter than the default key refresh interval (60 s): verifiers refreshing less often will refuse new tokens until they fetch the key"
        );
    }
    let rotation = token_service::keys::rotate(
        &loaded.path(&settings.key_dir),
        settings.algorithm,
        algorithm.unwrap_or(settings.algorithm),
        overlap_seconds,
        settings.max_ttl_seconds,
        now,
    )?;
    let report = serde_json::json!({
        "next_kid": rotation.next_kid,
        "published_from": now,
        "signs_from": rotation.signs_from,
        "retiring": rotation.retiring.iter()
            .map(|(kid, until)| serde_json::json!({"kid": kid, "published_until": until}))
            .collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
