//! `authmesh user-token`: a user's access token from the demo's local OIDC
//! issuer, as a user signing in at Auth0 or Keycloak would get one.

use std::{path::Path, process::ExitCode};

use auth_interceptor::{Clock, SystemClock};

use super::CliError;
use crate::{
    dev_state::DevState,
    local_idp::{LocalIdp, UserTokenRequest},
};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// The user (`sub`).
    #[arg(long, default_value = "alice")]
    user: String,
    /// The service the token is for: orders, which acts for the user.
    #[arg(long = "aud", default_value = "orders")]
    audience: String,
    /// A scope to grant; repeat for several (default: orders.write).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 600)]
    ttl: u64,
}

pub(super) fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let state = DevState::open(state_dir);
    let config = state.load_idp()?.ok_or_else(|| {
        format!(
            "{} has no local issuer (idp.toml): run `authmesh up` (or `init`) with a fresh state directory",
            state_dir.display()
        )
    })?;
    let idp = LocalIdp::load_or_create(state.dir(), &config.config)?;
    let scopes = if args.scopes.is_empty() {
        vec![orders::SCOPE_WRITE.to_owned()]
    } else {
        args.scopes
    };
    let token = idp.user_token(
        &UserTokenRequest {
            user: &args.user,
            audience: &args.audience,
            scopes: &scopes,
            ttl_seconds: args.ttl.clamp(1, 24 * 3600),
        },
        SystemClock.now(),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
