//! `authmesh`: run the whole mesh locally, mint and inspect tokens.

use std::{path::PathBuf, process::ExitCode};

use auth_interceptor::clock::system_clock;
use authmesh::{
    dev_state::{DEFAULT_PORTS, DEMO_CLIENT, DevState, MeshLayout, OPERATOR_CLIENT, WorkloadOwner},
    explain::{ExplainRequest, explain},
    mesh::Mesh,
    token_cli::{self, RevokeTarget, TokenServiceEndpoint},
};
use authmesh_client::ClientCredentials;
use clap::{ArgGroup, Parser, Subcommand, ValueEnum};

/// AuthMesh operator CLI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
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
    /// Run token-service (:50051), orders (:50052) and inventory (:50053) on 127.0.0.1 over TLS.
    Up {
        /// Where to serve Prometheus /metrics for the whole mesh (plain HTTP); "off" for none.
        #[arg(long, default_value = "127.0.0.1:9464")]
        metrics_listen: String,
    },
    /// Create the mesh's state in <state-dir> without starting anything
    /// (CA, workload certificates, the issuer's signing key, client secrets,
    /// service configurations), keeping what exists and renewing
    /// certificates past half their life. The compose cluster's init service.
    Init {
        /// `local`: what `up` uses (127.0.0.1, localhost). `compose`: each
        /// server on all interfaces, reached by its docker-compose.yml name.
        #[arg(long, value_enum, default_value_t = Layout::Local)]
        layout: Layout,
        /// Also copy what a client on the host needs (the CA certificate, the
        /// demo-cli and operator certificates and keys, demo-cli's secret)
        /// into this directory, laid out like a state directory and owned by
        /// the directory's owner.
        #[arg(long)]
        client_kit: Option<PathBuf>,
        /// `WORKLOAD=UID[:GID]`: the user a server runs as, given its own
        /// private files (and, for token-service, its keys and revocations)
        /// and nothing else. Repeat for each server.
        #[arg(long = "owner", value_parser = WorkloadOwner::parse)]
        owners: Vec<WorkloadOwner>,
    },
    /// Mint and inspect tokens.
    Token {
        #[command(subcommand)]
        command: Box<TokenCommand>,
    },
    /// Workload certificates from the mesh CA.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Authorization policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Revoke one token (by jti, or the token itself) or every token of a
    /// subject issued at or before a time. Verifiers refuse them within a second.
    #[command(group(ArgGroup::new("target").required(true).args(["jti", "token", "sub"])))]
    Revoke {
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
    },
    /// Show the decision a service would make on a call, without making it:
    /// the same checks as its auth layer, with its configuration and policy
    /// file, and the issuer's current keys and revocations.
    Explain {
        /// The bearer token.
        #[arg(long)]
        token: String,
        /// The service: inventory or orders.
        #[arg(long)]
        service: String,
        /// The exact gRPC path, e.g. /demo.inventory.v1.Inventory/Reserve.
        #[arg(long)]
        method: String,
        /// The client certificate the call would present (checks a bound token's binding).
        #[arg(long)]
        cert: Option<PathBuf>,
    },
    /// Check a server's gRPC health (exit 0 only when SERVING): for container
    /// health checks and scripts. `--url` names the server; the client
    /// certificate defaults to <state-dir>/tls/<client-id>.pem when it exists.
    Health {
        /// The health service name to ask about ("" for the whole server).
        #[arg(long, default_value = "")]
        service: String,
        /// Present this workload's certificate.
        #[arg(long, default_value = DEMO_CLIENT)]
        client_id: String,
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
    /// The issuer's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the argon2id hash of a client secret read from standard input,
    /// for `secret_hash` in token-service.toml.
    HashSecret,
    /// Measure the servers under load on 127.0.0.1 over TLS: no auth vs
    /// auth (hot and cold tokens) on each runtime shape, minting, and the
    /// verifier's memory. See BENCHMARKS.md.
    Bench(authmesh::bench::BenchArgs),
    /// One server of `authmesh bench`, in its own process.
    #[command(hide = true)]
    BenchServer(authmesh::bench::server::ServerArgs),
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
        algorithm: Option<auth_interceptor::SigningAlgorithm>,
        /// The token service's configuration (default: <state-dir>/token-service.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Where the servers of a generated state listen and find each other.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Layout {
    Local,
    Compose,
}

fn parse_algorithm(name: &str) -> Result<auth_interceptor::SigningAlgorithm, String> {
    auth_interceptor::SigningAlgorithm::from_name(name)
        .ok_or_else(|| format!("{name:?}: expected EdDSA or ES256"))
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file offline: it parses, and every method of the
    /// service is covered by a rule or public (the check a strict server runs at start).
    Check {
        /// The policy file.
        file: PathBuf,
        /// The gRPC service it protects, e.g. demo.inventory.v1.Inventory.
        #[arg(long)]
        service: String,
    },
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
        #[arg(long, default_value = service_runtime::pki::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
        /// Directory for <name>.pem and <name>-key.pem (default: <state-dir>/tls).
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
    /// Show a token's header and claims and whether it verifies against the issuer's keys.
    Inspect {
        /// The token.
        token: String,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

#[derive(Debug, clap::Args)]
struct EndpointArgs {
    /// Token service URL.
    #[arg(long, default_value = "https://localhost:50051")]
    url: String,
    /// CA certificate of the token service (default: <state-dir>/tls/ca.pem).
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
    fn endpoint(self, state: &DevState, client_id: &str) -> TokenServiceEndpoint {
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

fn main() -> ExitCode {
    service_runtime::install_crypto_provider();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Up { .. } | Command::BenchServer(_)) {
        service_runtime::telemetry::init_tracing();
    }
    // The bench builds its own runtimes (pinned, and of the shape measured).
    let outcome: Result<(), Box<dyn std::error::Error>> = match &cli.command {
        Command::Bench(args) => authmesh::bench::run(args).map_err(Into::into),
        Command::BenchServer(args) => authmesh::bench::server::serve(args).map_err(Into::into),
        _ => tokio::runtime::Runtime::new()
            .map_err(Into::into)
            .and_then(|runtime| runtime.block_on(run(cli))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Up { metrics_listen } => {
            let metrics = (metrics_listen != "off").then_some(metrics_listen.as_str());
            up(&cli.state_dir, metrics).await
        }
        Command::Init {
            layout,
            client_kit,
            owners,
        } => {
            let layout = match layout {
                Layout::Local => MeshLayout::local(DEFAULT_PORTS),
                Layout::Compose => MeshLayout::compose(),
            };
            let state = DevState::ensure_layout(&cli.state_dir, &layout)?;
            state.hand_over(&owners)?;
            println!("state ready in {}", state.dir().display());
            if let Some(kit) = client_kit {
                state.export_client_kit(&kit)?;
                println!("client kit in {} (use it as --state-dir)", kit.display());
            }
            Ok(())
        }
        Command::Revoke {
            jti,
            expires_at,
            token,
            sub,
            issued_before,
            reason,
            client_id,
            secret_file,
            endpoint,
        } => {
            let target = match (jti, token, sub) {
                (Some(jti), _, _) => RevokeTarget::Token { jti, expires_at },
                (_, Some(token), _) => RevokeTarget::from_token(token.trim())?,
                (_, _, Some(sub)) => RevokeTarget::Subject { sub, issued_before },
                _ => return Err("name --jti, --token or --sub".into()),
            };
            let state = DevState::open(&cli.state_dir);
            let credentials = client_credentials(&state, &client_id, secret_file)?;
            let endpoint = endpoint.endpoint(&state, &client_id);
            let revoked =
                token_cli::revoke(&endpoint, credentials.as_ref(), target, &reason).await?;
            let revocation = revoked
                .revocation
                .and_then(|r| auth_interceptor::Revocation::try_from(r).ok())
                .ok_or("the token service answered without the revocation")?;
            let target = match revocation.target {
                auth_interceptor::RevokedTarget::Token(jti) => serde_json::json!({"jti": jti}),
                auth_interceptor::RevokedTarget::Subject { sub, issued_before } => {
                    serde_json::json!({"sub": sub, "issued_before": issued_before})
                }
            };
            let report = serde_json::json!({
                "revoked": target,
                "revoked_at": revocation.revoked_at,
                "enforced_until": revocation.expires_at,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Explain {
            token,
            service,
            method,
            cert,
        } => {
            let state = DevState::open(&cli.state_dir);
            let request = ExplainRequest {
                token: token.trim(),
                service: &service,
                method: &method,
                cert: cert.as_deref(),
            };
            let report = explain(&state, &request).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Health {
            service,
            client_id,
            timeout,
            endpoint,
        } => {
            let state = DevState::open(&cli.state_dir);
            let endpoint = endpoint.endpoint(&state, &client_id);
            let status = token_cli::health(
                &endpoint,
                &service,
                std::time::Duration::from_secs(timeout.max(1)),
            )
            .await?;
            println!("{status}");
            if status == "SERVING" {
                Ok(())
            } else {
                Err(format!("{} is {status}", endpoint.url).into())
            }
        }
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    overlap_seconds,
                    algorithm,
                    config,
                },
        } => {
            let path =
                config.unwrap_or_else(|| DevState::open(&cli.state_dir).token_service_config());
            let loaded: service_runtime::Loaded<token_service::Config> =
                service_runtime::load_config(&path, std::iter::empty())?;
            let settings = &loaded.config;
            let now = auth_interceptor::Clock::now(&auth_interceptor::SystemClock);
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
            Ok(())
        }
        // main() runs these before any runtime exists: they build their own.
        Command::Bench(_) | Command::BenchServer(_) => {
            Err("bench commands run outside the async runtime".into())
        }
        Command::HashSecret => {
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret)?;
            println!(
                "{}",
                token_service::credentials::hash_secret(secret.trim())?
            );
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Check { file, service },
        } => {
            let policy = service_runtime::load_policy(&file)?;
            let methods = service_runtime::service_methods(&service);
            if methods.is_empty() {
                return Err(format!("unknown service {service}").into());
            }
            service_runtime::check_coverage(&policy, &service, true)?;
            println!(
                "{}: {} methods of {service} covered",
                file.display(),
                methods.len()
            );
            Ok(())
        }
        Command::Certs {
            command:
                CertsCommand::Issue {
                    name,
                    dns_names,
                    trust_domain,
                    ttl_hours,
                    out,
                },
        } => {
            let tls_dir = cli.state_dir.join("tls");
            let pki = service_runtime::pki::DevPki::ensure(&tls_dir, &[])?;
            let dns: Vec<&str> = dns_names.iter().map(String::as_str).collect();
            let lifetime = std::time::Duration::from_secs(ttl_hours.max(1) * 3600);
            let spec =
                service_runtime::pki::WorkloadCert::new(&name, &trust_domain, &dns, lifetime);
            let files = pki.issue_workload(&spec, &out.unwrap_or(tls_dir))?;
            println!("{}", service_runtime::pki::spiffe_id(&trust_domain, &name));
            println!("cert: {}", files.cert.display());
            println!("key:  {}", files.key.display());
            println!("ca:   {}", pki.ca_cert().display());
            Ok(())
        }
        Command::Token { command } => {
            let state = DevState::open(&cli.state_dir);
            match *command {
                TokenCommand::Mint {
                    aud,
                    scopes,
                    ttl,
                    one_time,
                    client_id,
                    secret_file,
                    endpoint,
                } => {
                    let credentials = client_credentials(&state, &client_id, secret_file)?;
                    let endpoint = endpoint.endpoint(&state, &client_id);
                    let minted = token_cli::mint(
                        &endpoint,
                        credentials.as_ref(),
                        &aud,
                        scopes,
                        ttl,
                        one_time,
                    )
                    .await?;
                    println!("{}", minted.token);
                    Ok(())
                }
                TokenCommand::Inspect { token, endpoint } => {
                    let report =
                        token_cli::inspect(&endpoint.endpoint(&state, DEMO_CLIENT), token.trim())
                            .await?;
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(())
                }
            }
        }
    }
}

/// The client's secret from `secret_file`, or from the state's default file
/// if it exists; none when the client authenticates by certificate alone.
fn client_credentials(
    state: &DevState,
    client_id: &str,
    secret_file: Option<PathBuf>,
) -> Result<Option<ClientCredentials>, Box<dyn std::error::Error>> {
    let default_file = state.secret_file(client_id);
    let secret_file = secret_file.unwrap_or_else(|| default_file.clone());
    match service_runtime::files::read_to_string(&secret_file) {
        Ok(secret) => Ok(Some(ClientCredentials::new(client_id, secret.trim()))),
        Err(_) if secret_file == default_file => Ok(None),
        Err(err) => Err(err.into()),
    }
}

async fn up(
    state_dir: &std::path::Path,
    metrics_listen: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let state = DevState::ensure(state_dir, DEFAULT_PORTS)?;
    let metrics = service_runtime::metrics::start(metrics_listen).await?;
    let mesh = Mesh::start(&state, system_clock()).await?;
    // 24 h workload certificates are renewed at half-life while the mesh
    // runs; servers and clients pick the new files up without a restart.
    let renewer = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                match state.renew_due_certificates() {
                    Ok(0) => {}
                    Ok(renewed) => tracing::info!(renewed, "renewed workload certificates"),
                    Err(err) => {
                        tracing::error!(error = %err, "renewing workload certificates failed")
                    }
                }
            }
        })
    };
    print_walkthrough(state_dir, &mesh, metrics.as_ref().map(|m| m.addr));
    tokio::select! {
        () = service_runtime::shutdown::signal() => {
            tracing::info!("stopping the mesh");
        }
        () = wait_for_failure(&mesh) => {
            tracing::error!("a server stopped unexpectedly; stopping the mesh");
        }
    }
    renewer.abort();
    mesh.stop().await?;
    Ok(())
}

async fn wait_for_failure(mesh: &Mesh) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if mesh.token_service.is_finished()
            || mesh.orders.is_finished()
            || mesh.inventory.is_finished()
        {
            return;
        }
    }
}

fn print_walkthrough(
    state_dir: &std::path::Path,
    mesh: &Mesh,
    metrics: Option<std::net::SocketAddr>,
) {
    let tls = state_dir.join("tls");
    let mtls = format!(
        "-cacert {ca} -cert {cert} -key {key}",
        ca = tls.join("ca.pem").display(),
        cert = tls.join("demo-cli.pem").display(),
        key = tls.join("demo-cli-key.pem").display()
    );
    let (ts, orders, inventory) = (
        mesh.token_service.addr().port(),
        mesh.orders.addr().port(),
        mesh.inventory.addr().port(),
    );
    println!(
        r#"
AuthMesh is up (state in {state}; every hop is mutual TLS):
  token-service  https://localhost:{ts}
  orders         https://localhost:{orders}   (SERVER1)
  inventory      https://localhost:{inventory}   (SERVER2)

Try it (in another terminal, from this directory). grpcurl presents the
demo-cli workload certificate (spiffe://authmesh.local/demo-cli):
  M="{mtls}"
  grpcurl $M localhost:{inventory} list
  grpcurl $M localhost:{inventory} grpc.health.v1.Health/Check
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud orders)
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":2}}' localhost:{orders} demo.orders.v1.Orders/PlaceOrder
  grpcurl $M -d '{{"sku":"sku-1"}}' localhost:{inventory} demo.inventory.v1.Inventory/GetStock          # UNAUTHENTICATED
  TOKEN=$(cargo run -q --release --bin authmesh -- token mint --aud inventory)
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1","quantity":1}}' localhost:{inventory} demo.inventory.v1.Inventory/Reserve   # PERMISSION_DENIED
  cargo run -q --release --bin authmesh -- explain --token "$TOKEN" --service inventory --method /demo.inventory.v1.Inventory/Reserve
  cargo run -q --release --bin authmesh -- revoke --token "$TOKEN"
  grpcurl $M -H "authorization: Bearer $TOKEN" -d '{{"sku":"sku-1"}}' localhost:{inventory} demo.inventory.v1.Inventory/GetStock          # UNAUTHENTICATED: TOKEN_REVOKED

Ctrl-C stops the mesh."#,
        state = state_dir.display()
    );
    if let Some(addr) = metrics {
        println!("Metrics of all three servers: curl http://{addr}/metrics");
    }
}
