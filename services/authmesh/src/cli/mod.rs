//! The `authmesh` command line: one module per subcommand, each with its
//! arguments and what it does. `main` parses, sets up tracing and a runtime,
//! and calls [`Cli::run`].

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

mod certs;
mod client_kit;
mod endpoint;
mod explain;
mod hash_secret;
mod health;
mod idle;
mod init;
mod keys;
mod policy;
mod revoke;
mod token;
mod up;
mod user_token;
mod wait_for;
mod workload;

/// What a command failed with; printed with its whole cause by `main`.
pub type CliError = Box<dyn std::error::Error>;

/// AuthMesh operator CLI.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Dev state directory (CA, keys, client secrets, service configs).
    #[arg(
        long,
        global = true,
        env = "AUTHMESH_STATE_DIR",
        default_value = ".authmesh"
    )]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run token-service (:50051), orders (:50052) and inventory (:50053) on
    /// 127.0.0.1 over TLS, and the demo's local OIDC issuer (:50443).
    Up(up::Args),
    /// Create the mesh's state in <state-dir> without starting anything
    /// (CA, workload certificates, the issuer's signing key, client secrets,
    /// service configurations), keeping what exists and renewing
    /// certificates past half their life. The compose cluster's init service
    /// and the Kubernetes init Job and renewal CronJob.
    Init(init::Args),
    /// Carry the client kit (CA certificate, demo-cli and operator
    /// credentials) out of a cluster as JSON on a pipe: `export` in the
    /// Kubernetes client-kit pod, `import` on your machine.
    ClientKit(client_kit::Args),
    /// Do nothing until stopped (SIGTERM, Ctrl-C): the main process of the
    /// Kubernetes client-kit pod, which exists for `kubectl exec`.
    Idle,
    /// Wait until every file exists and is readable (exit 1 on timeout): a
    /// Kubernetes init container's way to start a server only once its
    /// state is ready.
    WaitFor(wait_for::Args),
    /// Mint and inspect tokens.
    Token(token::Args),
    /// Print a user's access token from the demo's local OIDC issuer (RS256,
    /// for orders by default): place an order on that user's behalf with it.
    UserToken(user_token::Args),
    /// Workload certificates from the mesh CA.
    Certs(certs::Args),
    /// Authorization policy files.
    Policy(policy::Args),
    /// Revoke one token (by jti, or the token itself) or every token of a
    /// subject issued at or before a time. Verifiers refuse them within a second.
    Revoke(revoke::Args),
    /// Show the decision a service would make on a call, without making it:
    /// the same checks as its auth layer, with its configuration and policy
    /// file, and the issuer's current keys and revocations (read from the
    /// state directory when the token service is down). Exits 0 when the
    /// call would be allowed, 1 when denied, 2 when it cannot tell.
    Explain(explain::Args),
    /// Check a server's gRPC health (exit 0 only when SERVING): for container
    /// health checks and scripts. `--url` names the server; the client
    /// certificate defaults to <state-dir>/tls/<client-id>.pem when it exists.
    Health(health::Args),
    /// The issuer's signing keys.
    Keys(keys::Args),
    /// Register, list and remove workloads at run time (as an admin workload,
    /// the operator by default); every token-service replica applies a
    /// change within a second, without a restart.
    Workload(workload::Args),
    /// Print the argon2id hash of a client secret read from standard input,
    /// for `secret_hash` in token-service.toml.
    HashSecret,
    /// Measure the servers under load on 127.0.0.1 over TLS: no auth vs
    /// auth (hot and cold tokens) on each runtime shape, minting, and the
    /// verifier's memory. See BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
    /// One server of `authmesh bench`, in its own process.
    #[command(hide = true)]
    BenchServer(crate::bench::server::ServerArgs),
}

impl Cli {
    /// Whether the command serves (and so logs through tracing).
    pub fn serves(&self) -> bool {
        matches!(self.command, Command::Up(_) | Command::BenchServer(_))
    }

    /// Whether the command answers a question (`explain`, `token inspect`):
    /// its failures exit 2, since 1 means "no".
    pub fn answers(&self) -> bool {
        matches!(self.command, Command::Explain(_) | Command::Token(_))
    }

    /// Runs the command. The benchmarks build their own runtimes (pinned,
    /// and of the shape measured), so they run here before any exists; every
    /// other command runs on a runtime made for it.
    ///
    /// # Errors
    /// What the command failed with.
    pub fn run(self) -> Result<ExitCode, CliError> {
        match &self.command {
            Command::Bench(args) => crate::bench::run(args)?,
            Command::BenchServer(args) => crate::bench::server::serve(args)?,
            _ => return tokio::runtime::Runtime::new()?.block_on(self.run_async()),
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn run_async(self) -> Result<ExitCode, CliError> {
        let state_dir = self.state_dir;
        match self.command {
            Command::Up(args) => up::run(&state_dir, args).await,
            Command::Init(args) => init::run(&state_dir, args),
            Command::WaitFor(args) => wait_for::run(args).await,
            Command::ClientKit(args) => client_kit::run(&state_dir, args),
            Command::Idle => idle::run().await,
            Command::Token(args) => token::run(&state_dir, args).await,
            Command::UserToken(args) => user_token::run(&state_dir, args),
            Command::Certs(args) => certs::run(&state_dir, args),
            Command::Policy(args) => policy::run(args),
            Command::Revoke(args) => revoke::run(&state_dir, args).await,
            Command::Explain(args) => explain::run(&state_dir, args).await,
            Command::Health(args) => health::run(&state_dir, args).await,
            Command::Keys(args) => keys::run(&state_dir, args),
            Command::Workload(args) => workload::run(&state_dir, args).await,
            Command::HashSecret => hash_secret::run(),
            Command::Bench(_) | Command::BenchServer(_) => unreachable_bench(),
        }
    }
}

/// `run` handles the benchmarks before a runtime exists.
fn unreachable_bench() -> Result<ExitCode, CliError> {
    Err("the bench commands run outside the async runtime".into())
}
