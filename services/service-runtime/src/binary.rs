//! What every service binary shares: its command line and its exit.

use std::{path::PathBuf, process::ExitCode};

use serde::de::DeserializeOwned;

use crate::{
    config::{Loaded, load_config},
    error::RuntimeError,
};

/// The command line of a service binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Configuration file (TOML); every key can be overridden by AUTHMESH_* variables.
    #[arg(long, env = "AUTHMESH_CONFIG")]
    pub config: PathBuf,
    /// Serve without TLS (development only; logged as a warning).
    #[arg(long)]
    pub insecure_plaintext: bool,
}

impl ServiceArgs {
    /// Loads the configuration with the process environment's overrides;
    /// `--insecure-plaintext` is one more override.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an unreadable or invalid configuration.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Loaded<T>, RuntimeError> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        if self.insecure_plaintext {
            env.push(("AUTHMESH_INSECURE_PLAINTEXT".into(), "true".into()));
        }
        load_config(&self.config, env)
    }
}

/// Logs why `service` stopped, if it failed, and turns that into the exit code.
pub fn exit_code(service: &str, result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let error = crate::error::report(&*err);
            tracing::error!(service, %error, "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
