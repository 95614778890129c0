//! The servers `authmesh bench` measures, each in a child process of its
//! own (`authmesh bench-server`, hidden) so that it can be pinned to its
//! cores and its CPU time and memory read from `/proc`.
//!
//! - `inventory`: the demo inventory API served by the same stack as every
//!   AuthMesh service (`server_builder`, TLS, `serve_router` with the
//!   configured runtime), with or without [`AuthLayer`] and inventory's own
//!   policy in front. Its handler answers `GetStock` from memory and does
//!   not look at the caller, so the only difference between the two is auth.
//! - `token-service`: the real token service from a dev state, for minting.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use auth_interceptor::{
    AuthLayer, JwkSet, MethodKinds, Verifier, VerifierConfig, clock::system_clock,
};
use authmesh_proto::demo::inventory::v1::{
    GetStockRequest, GetStockResponse, ReserveRequest, ReserveResponse,
    inventory_server::{Inventory, InventoryServer},
};
use service_runtime::{RuntimeConfig, RuntimeMode, ServerTlsFiles, Transport};
use tonic::{Request, Response, Status};

use super::BenchError;
use crate::dev_state::DevState;

/// The audience the bench inventory verifies.
pub const AUDIENCE: &str = "inventory";
/// The issuer of the bench tokens.
pub const ISSUER: &str = "https://bench.authmesh.local";
/// The SKU every `GetStock` asks for, and its level.
pub const SKU: (&str, u32) = ("sku-1", 100);

/// Which server a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The demo inventory API.
    Inventory,
    /// The token service of a dev state.
    TokenService,
}

/// `authmesh bench-server`: one server for `authmesh bench`. It prints
/// `READY <port>` once listening and serves until its stdin closes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// What to serve.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The bench's working directory (certificates, keys, dev state).
    #[arg(long)]
    pub dir: PathBuf,
    /// Put the auth layer (verification and inventory's policy) in front.
    #[arg(long)]
    pub auth: bool,
    /// The runtime shape, as in a service's `[runtime] mode`.
    #[arg(long, value_enum)]
    pub mode: RuntimeMode,
    /// `[runtime] worker_threads`.
    #[arg(long)]
    pub threads: Option<NonZeroUsize>,
    /// Pin the server to these cores (comma-separated); none: unpinned.
    #[arg(long, value_delimiter = ',')]
    pub cores: Vec<usize>,
}

/// Where the bench inventory's TLS files and trusted keys are in `dir`.
pub struct InventoryFiles {
    /// Server certificate and key.
    pub tls: ServerTlsFiles,
    /// The JWKS the verifier trusts.
    pub jwks: PathBuf,
}

impl InventoryFiles {
    /// The layout [`super::fixture::Fixture`] writes.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            tls: ServerTlsFiles {
                cert: dir.join("inventory.pem"),
                key: dir.join("inventory-key.pem"),
                client_ca: None,
                client_auth: Default::default(),
            },
            jwks: dir.join("jwks.json"),
        }
    }
}

/// The inventory handler of the bench: `GetStock` from a fixed map.
#[derive(Debug, Clone)]
struct BenchInventory {
    stock: Arc<HashMap<String, u32>>,
}

#[tonic::async_trait]
impl Inventory for BenchInventory {
    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let sku = request.into_inner().sku;
        let available = *self
            .stock
            .get(&sku)
            .ok_or_else(|| Status::not_found("unknown sku"))?;
        Ok(Response::new(GetStockResponse { sku, available }))
    }

    async fn reserve(
        &self,
        _request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        Err(Status::unimplemented(
            "the bench inventory serves GetStock only",
        ))
    }

    type WatchStockStream = inventory::StockUpdates;

    async fn watch_stock(
        &self,
        _request: Request<GetStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Err(Status::unimplemented(
            "the bench inventory serves GetStock only",
        ))
    }
}

/// Runs a bench server until stdin closes; the child's whole life.
///
/// # Errors
/// [`BenchError`] when the server cannot start or fails.
pub fn serve(args: &ServerArgs) -> Result<(), BenchError> {
    if !args.cores.is_empty() {
        // Before any thread exists: every thread started later inherits it.
        super::pin_current_thread(&args.cores)?;
    }
    let mut runtime = RuntimeConfig::new(args.mode);
    runtime.worker_threads = args.threads;
    runtime.build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::Io)?;
        let addr = listener.local_addr().map_err(BenchError::Io)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // stdin closing (the bench is done, or gone) is the stop signal.
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = stop.send(());
        });
        let shutdown = async {
            let _ = stopped.await;
        };
        match args.role {
            Role::Inventory => serve_inventory(args, &runtime, listener, addr, shutdown).await,
            Role::TokenService => {
                serve_token_service(args, &runtime, listener, addr, shutdown).await
            }
        }
    })
}

fn announce(addr: SocketAddr) -> Result<(), BenchError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "READY {}", addr.port()).map_err(BenchError::Io)?;
    stdout.flush().map_err(BenchError::Io)
}

async fn serve_inventory(
    args: &ServerArgs,
    runtime: &RuntimeConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BenchError> {
    let files = InventoryFiles::in_dir(&args.dir);
    let transport = Transport::tls(&files.tls, &args.dir, Duration::from_secs(3600))?;
    let handler = BenchInventory {
        stock: Arc::new(HashMap::from([(SKU.0.to_owned(), SKU.1)])),
    };
    let service = InventoryServer::new(handler);
    let auth = if args.auth {
        let verifier = Verifier::new(VerifierConfig::new(ISSUER, AUDIENCE))?;
        let jwks: JwkSet =
            serde_json::from_str(&service_runtime::files::read_to_string(&files.jwks)?)?;
        verifier.install_keys(&jwks)?;
        // Told which methods are unary, as `serve_authenticated` tells it in
        // every AuthMesh service: their responses are not token-bound.
        let kinds = MethodKinds::from_file_descriptor_set(authmesh_proto::FILE_DESCRIPTOR_SET)
            .map_err(|err| BenchError::Server(format!("method kinds: {err}")))?;
        Some(AuthLayer::new(verifier, inventory::policy()).method_kinds(kinds))
    } else {
        None
    };
    announce(addr)?;
    // Two router types, so two calls: the baseline is the stock stack, not
    // one wrapped in an `Either`.
    let mut builder = service_runtime::server_builder();
    let served = match auth {
        None => {
            let router = builder.add_service(service);
            service_runtime::serve_router(router, listener, &transport, false, runtime, shutdown)
                .await
        }
        Some(auth) => {
            let router = builder.layer(auth).add_service(service);
            service_runtime::serve_router(router, listener, &transport, false, runtime, shutdown)
                .await
        }
    };
    Ok(served?)
}

async fn serve_token_service(
    args: &ServerArgs,
    runtime: &RuntimeConfig,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BenchError> {
    let state = DevState::open(&args.dir.join("mesh"));
    let mut config = state.load_token_service()?;
    config.config.runtime = *runtime;
    let prepared = token_service::prepare(&config, system_clock())?;
    announce(addr)?;
    Ok(token_service::run(listener, config, prepared, shutdown).await?)
}

/// A bench server child process, stopped when dropped.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `authmesh bench-server` with `args` and waits for `READY`.
    ///
    /// # Errors
    /// [`BenchError::Server`] when it does not come up.
    pub fn start(args: &ServerArgs) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(BenchError::Io)?;
        let mut command = Command::new(exe);
        command
            .arg("bench-server")
            .arg("--role")
            .arg(match args.role {
                Role::Inventory => "inventory",
                Role::TokenService => "token-service",
            })
            .arg("--dir")
            .arg(&args.dir)
            .arg("--mode")
            .arg(args.mode.name())
            // Only warnings: per-call logs would be measured too.
            .env("AUTHMESH_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if args.auth {
            command.arg("--auth");
        }
        if let Some(threads) = args.threads {
            command.arg("--threads").arg(threads.to_string());
        }
        if !args.cores.is_empty() {
            let cores: Vec<String> = args.cores.iter().map(usize::to_string).collect();
            command.arg("--cores").arg(cores.join(","));
        }
        let mut child = command.spawn().map_err(BenchError::Io)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut process = Self {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let port = stdout
            .ok_or_else(|| BenchError::Server("no stdout".into()))
            .and_then(read_ready)?;
        process.addr.set_port(port);
        Ok(process)
    }

    /// Its process id, for `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it and waits for it to exit.
    ///
    /// # Errors
    /// [`BenchError::Server`] when it exits with a failure.
    pub fn stop(mut self) -> Result<(), BenchError> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(BenchError::Io)?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::Server(format!(
                "bench server exited with {status}"
            )))
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            // Dropped without stop(): an error path; do not leave it running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_ready(stdout: ChildStdout) -> Result<u16, BenchError> {
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(BenchError::Io)?;
    line.trim()
        .strip_prefix("READY ")
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| {
            BenchError::Server("bench server did not start (see its errors above)".into())
        })
}
