//! `authmesh hash-secret`: the argon2id hash of a client secret.

use std::process::ExitCode;

use super::CliError;

pub(super) fn run() -> Result<ExitCode, CliError> {
    let mut secret = String::new();
    std::io::stdin().read_line(&mut secret)?;
    let secret = secret.trim();
    if secret.is_empty() {
        return Err("no secret on standard input: an empty secret would let anyone in".into());
    }
    println!("{}", token_service::credentials::hash_secret(secret)?);
    Ok(ExitCode::SUCCESS)
}
