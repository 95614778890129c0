//! The whole mesh in one process, built from each service's own `run`
//! function: what `authmesh up` runs, and what the end-to-end tests start
//! piece by piece on ephemeral ports.

use std::net::SocketAddr;

use auth_interceptor::SharedClock;
use authmesh_client::RefreshSettings;
use inventory::InventoryHandler;
use service_runtime::Loaded;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::dev_state::DevState;

/// Why a server of the mesh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The token service could not start.
    #[error("token service: {0}")]
    TokenService(#[from] token_service::StartError),
    /// Configuration, TLS or transport of a service.
    #[error(transparent)]
    Runtime(#[from] service_runtime::RuntimeError),
    /// A server stopped with an error, or its task died.
    #[error("{service}: {detail}")]
    Server {
        /// Which server.
        service: &'static str,
        /// What happened.
        detail: String,
    },
    /// The demo's local OIDC issuer could not start.
    #[error("local issuer: {0}")]
    LocalIdp(#[from] crate::local_idp::LocalIdpError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source} (is another `authmesh up` running?)")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One server running in this process.
#[derive(Debug)]
pub struct RunningServer {
    name: &'static str,
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), MeshError>>,
}

impl RunningServer {
    fn spawn<F>(
        name: &'static str,
        addr: SocketAddr,
        serve: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = Result<(), MeshError>> + Send + 'static,
    {
        let (shutdown, signal) = oneshot::channel();
        Self {
            name,
            addr,
            shutdown,
            task: tokio::spawn(serve(signal)),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it has stopped on its own (a failure).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Gracefully stops it: NOT_SERVING, stop accepting, drain in-flight calls.
    ///
    /// # Errors
    /// [`MeshError::Server`] if it had failed.
    pub async fn stop(self) -> Result<(), MeshError> {
        let Self {
            name,
            shutdown,
            task,
            ..
        } = self;
        let _ = shutdown.send(());
        join(name, task).await
    }

    /// Kills it: no drain, no goodbye; its connections close under their
    /// calls, as when its process dies (fault drills).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Waits for it to stop on its own.
    ///
    /// # Errors
    /// [`MeshError`] with the reason it stopped.
    pub async fn join(self) -> Result<(), MeshError> {
        join(self.name, self.task).await
    }
}

async fn join(
    service: &'static str,
    task: JoinHandle<Result<(), MeshError>>,
) -> Result<(), MeshError> {
    match task.await {
        Ok(result) => result,
        Err(err) => Err(MeshError::Server {
            service,
            detail: err.to_string(),
        }),
    }
}

fn local_addr(listener: &TcpListener, service: &'static str) -> Result<SocketAddr, MeshError> {
    listener.local_addr().map_err(|e| MeshError::Server {
        service,
        detail: e.to_string(),
    })
}

async fn signal(rx: oneshot::Receiver<()>) {
    // A dropped sender also means stop.
    let _ = rx.await;
}

/// Starts the token service from the dev state on `listener`.
///
/// # Errors
/// [`MeshError`] when its configuration or keys are unusable.
pub fn start_token_service(
    state: &DevState,
    listener: TcpListener,
    clock: SharedClock,
) -> Result<RunningServer, MeshError> {
    start_token_service_with(state.load_token_service()?, listener, clock)
}

/// Starts the token service from `config` on `listener` (replicas whose
/// configurations differ, e.g. each with its own key directory).
///
/// # Errors
/// [`MeshError`] when its configuration or keys are unusable.
pub fn start_token_service_with(
    config: Loaded<token_service::Config>,
    listener: TcpListener,
    clock: SharedClock,
) -> Result<RunningServer, MeshError> {
    let prepared = token_service::prepare(&config, clock)?;
    let addr = local_addr(&listener, "token-service")?;
    Ok(RunningServer::spawn(
        "token-service",
        addr,
        move |rx| async move {
            token_service::run(listener, config, prepared, signal(rx)).await?;
            Ok(())
        },
    ))
}

/// Starts inventory from the dev state on `listener`; the handler gives
/// access to its reservations.
///
/// # Errors
/// [`MeshError`] when its configuration is unusable.
pub fn start_inventory(
    state: &DevState,
    listener: TcpListener,
    clock: SharedClock,
) -> Result<(RunningServer, InventoryHandler), MeshError> {
    start_inventory_with(state.load_inventory()?, listener, clock)
}

/// Starts inventory from `config` on `listener` (replicas with settings of their own).
///
/// # Errors
/// [`MeshError`] when its configuration is unusable.
pub fn start_inventory_with(
    config: Loaded<inventory::Config>,
    listener: TcpListener,
    clock: SharedClock,
) -> Result<(RunningServer, InventoryHandler), MeshError> {
    let handler = InventoryHandler::new(&config.config.stock);
    let addr = local_addr(&listener, "inventory")?;
    let served = handler.clone();
    let server = RunningServer::spawn("inventory", addr, move |rx| async move {
        inventory::run(listener, config, served, clock, signal(rx)).await?;
        Ok(())
    });
    Ok((server, handler))
}

/// Starts orders from the dev state on `listener`.
///
/// # Errors
/// [`MeshError`] when its configuration or secret is unusable.
pub fn start_orders(
    state: &DevState,
    listener: TcpListener,
    clock: SharedClock,
    token_refresh: RefreshSettings,
) -> Result<RunningServer, MeshError> {
    let config = state.load_orders()?;
    let addr = local_addr(&listener, "orders")?;
    Ok(RunningServer::spawn("orders", addr, move |rx| async move {
        orders::run(listener, config, clock, token_refresh, signal(rx)).await?;
        Ok(())
    }))
}

/// Starts the demo's local OIDC issuer from the dev state on `listener`
/// (its key is created on first use), presenting the token service's
/// `localhost` certificate.
///
/// # Errors
/// [`MeshError`] when its key or the certificate is unusable.
pub fn start_local_idp(
    state: &DevState,
    config: &Loaded<crate::local_idp::LocalIdpConfig>,
    listener: TcpListener,
) -> Result<RunningServer, MeshError> {
    let idp = std::sync::Arc::new(crate::local_idp::LocalIdp::load_or_create(
        state.dir(),
        &config.config,
    )?);
    let (tls, transport) = state.https_server_config("token-service")?;
    let addr = local_addr(&listener, "local issuer")?;
    Ok(RunningServer::spawn(
        "local issuer",
        addr,
        move |rx| async move {
            // Keeps the certificate reloading while it serves.
            let _transport = transport;
            idp.serve(listener, tls, signal(rx)).await;
            Ok(())
        },
    ))
}

/// Binds `addr`, with an error that says what to do when it is taken.
///
/// # Errors
/// [`MeshError::Bind`].
pub async fn bind(addr: &str) -> Result<TcpListener, MeshError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MeshError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// The three servers of the mesh.
#[derive(Debug)]
pub struct Mesh {
    /// The issuer.
    pub token_service: RunningServer,
    /// SERVER1.
    pub orders: RunningServer,
    /// SERVER2.
    pub inventory: RunningServer,
    /// Inventory's state.
    pub inventory_handler: InventoryHandler,
    /// The demo's local OIDC issuer, when the state has one.
    pub idp: Option<RunningServer>,
}

impl Mesh {
    /// Starts all three servers (and the local OIDC issuer, when the state
    /// has one) from the dev state on the addresses its configuration files name.
    ///
    /// # Errors
    /// [`MeshError`] when an address is taken or a configuration is unusable.
    pub async fn start(state: &DevState, clock: SharedClock) -> Result<Self, MeshError> {
        let token_listener = bind(&state.load_token_service()?.config.listen).await?;
        let inventory_listener = bind(&state.load_inventory()?.config.listen).await?;
        let orders_listener = bind(&state.load_orders()?.config.listen).await?;
        let token_service = start_token_service(state, token_listener, clock.clone())?;
        let (inventory, inventory_handler) =
            start_inventory(state, inventory_listener, clock.clone())?;
        let orders = start_orders(state, orders_listener, clock, RefreshSettings::default())?;
        let idp = match state.load_idp()? {
            Some(config) => {
                let listener = bind(&config.config.listen).await?;
                Some(start_local_idp(state, &config, listener)?)
            }
            None => None,
        };
        Ok(Self {
            token_service,
            orders,
            inventory,
            inventory_handler,
            idp,
        })
    }

    /// Stops the servers, callers first so nothing is cut mid-call.
    ///
    /// # Errors
    /// The first server failure met.
    pub async fn stop(self) -> Result<(), MeshError> {
        let orders = self.orders.stop().await;
        let inventory = self.inventory.stop().await;
        let token_service = self.token_service.stop().await;
        let idp = match self.idp {
            Some(idp) => idp.stop().await,
            None => Ok(()),
        };
        orders.and(inventory).and(token_service).and(idp)
    }
}
