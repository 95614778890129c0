//! `authmesh revoke`: one token, or every token of a subject.

use std::{path::Path, path::PathBuf, process::ExitCode};

use auth_interceptor::{Revocation, RevokedTarget};
use clap::ArgGroup;

use super::{
    CliError,
    endpoint::{EndpointArgs, client_credentials},
};
use crate::{
    dev_state::{DevState, OPERATOR_CLIENT},
    token_cli::{self, RevokeTarget},
};

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["jti", "token", "sub"])))]
pub(super) struct Args {
    /// The jti of the token to revoke.
    #[arg(long)]
    jti: Option<String>,
    /// Its exp (Unix seconds), so the revocation is forgotten once it expired.
    #[arg(long, requires = "jti")]
    expires_at: Option<i64>,
    /// The token to revoke (its jti and exp are read from it; it is not sent).
    #[arg(long)]
    token: Option<String>,
    /// Revoke every token of this sub (client id or SPIFFE ID)...
    #[arg(long)]
    sub: Option<String>,
    /// ...issued at or before this time (Unix seconds; default now).
    #[arg(long, requires = "sub")]
    issued_before: Option<i64>,
    /// Why (kept with the revocation and logged).
    #[arg(long, default_value = "")]
    reason: String,
    /// Client to revoke as (a client with `may_revoke`).
    #[arg(long, default_value = OPERATOR_CLIENT)]
    client_id: String,
    /// File holding the client's secret (default: <state-dir>/clients/<client-id>.secret, if any).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    endpoint: EndpointArgs,
}

pub(super) async fn run(state_dir: &Path, args: Args) -> Result<ExitCode, CliError> {
    let target = match (args.jti, args.token, args.sub) {
        (Some(jti), _, _) => RevokeTarget::Token {
            jti,
            expires_at: args.expires_at,
        },
        (_, Some(token), _) => RevokeTarget::from_token(token.trim())?,
        (_, _, Some(sub)) => RevokeTarget::Subject {
            sub,
            issued_before: args.issued_before,
        },
        _ => return Err("name --jti, --token or --sub".into()),
    };
    let state = DevState::open(state_dir);
    let endpoint = args.endpoint.endpoint(&state, &args.client_id);
    let credentials = client_credentials(&state, &args.client_id, args.secret_file, &endpoint)?;
    let revoked = token_cli::revoke(&endpoint, credentials.as_ref(), target, &args.reason).await?;
    let revocation = revoked
        .revocation
        .and_then(|r| Revocation::try_from(r).ok())
        .ok_or("the token service answered without the revocation")?;
    let target = match revocation.target {
        RevokedTarget::Token(jti) => serde_json::json!({"jti": jti}),
        RevokedTarget::Subject { sub, issued_before } => {
            serde_json::json!({"sub": sub, "issued_before": issued_before})
        }
    };
    let report = serde_json::json!({
        "revoked": target,
        "revoked_at": revocation.revoked_at,
        "enforced_until": revocation.expires_at,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
