//! Inventory, SERVER2 of the AuthMesh demo: stock levels and reservations,
//! every call verified by the auth layer. Handlers read the caller from the
//! verified claims in the request extensions, never from headers.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use auth_interceptor::{CallerExt, MethodPolicy, SharedClock, VerifiedClaims};
use authmesh_proto::demo::inventory::v1::{
    GetStockRequest, GetStockResponse, ReserveRequest, ReserveResponse,
    inventory_server::{Inventory, InventoryServer},
};
use serde::{Deserialize, Serialize};
use service_runtime::{
    AuthConfig, Loaded, PolicySource, RuntimeConfig, RuntimeError, ServerTlsFiles, Transport,
    UpstreamConfig, Verification, serve_authenticated,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::{Stream, StreamExt, wrappers::WatchStream};
use tonic::{Request, Response, Status};

/// Scope needed by `GetStock`.
pub const SCOPE_READ: &str = "inventory.read";
/// Scope needed by `Reserve`.
pub const SCOPE_RESERVE: &str = "inventory.reserve";

/// `inventory.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve without TLS (logged as a warning).
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Server certificate and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsFiles>,
    /// Where to serve Prometheus `/metrics` (plain HTTP), e.g. `0.0.0.0:9090`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// How the service uses the machine's cores (`[runtime]`: mode, worker_threads).
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_default")]
    pub runtime: RuntimeConfig,
    /// Where the verification keys come from.
    pub token_service: UpstreamConfig,
    /// What tokens must satisfy.
    pub auth: AuthConfig,
    /// Initial stock by SKU.
    #[serde(default = "default_stock")]
    pub stock: BTreeMap<String, u32>,
}

fn default_listen() -> String {
    "127.0.0.1:50053".into()
}

fn default_stock() -> BTreeMap<String, u32> {
    BTreeMap::from([("sku-1".into(), 100), ("sku-2".into(), 5)])
}

/// The policy of the inventory API: what `authmesh up` writes to
/// `inventory.policy.toml`, and what inventory enforces without a policy file.
pub const POLICY_FILE: &str = include_str!("../inventory.policy.toml");

/// [`POLICY_FILE`], parsed. It parses (a unit test says so); if it ever did
/// not, every method would be denied, never allowed.
pub fn policy() -> MethodPolicy {
    MethodPolicy::from_toml(POLICY_FILE).unwrap_or_else(|_| MethodPolicy::new())
}

/// A recorded reservation, with the verified identity that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Reservation id.
    pub id: String,
    /// What was reserved.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The token's `sub`: on a call made on a user's behalf, the user.
    pub caller: String,
    /// The workload acting for `caller` (the token's `act`), if any.
    pub actor: Option<String>,
    /// The token's `aud`.
    pub audience: String,
    /// The token's `jti`.
    pub jti: String,
    /// The SPIFFE ID of the caller's client certificate (mTLS), if any.
    pub peer: Option<String>,
    /// The certificate thumbprint the caller's token was bound to (`cnf`), if any.
    pub token_binding: Option<String>,
    /// The call's request id (the caller's `x-request-id`, or one the auth layer made up).
    pub request_id: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    stock: HashMap<String, u32>,
    reservations: Vec<Reservation>,
}

/// The inventory handler and its in-memory state. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct InventoryHandler {
    state: Arc<Mutex<State>>,
    /// Bumped on every stock change; `WatchStock` streams follow it.
    changes: Arc<watch::Sender<u64>>,
    /// Calls that reached a handler method.
    calls: Arc<AtomicU64>,
}

/// The stream `WatchStock` answers with.
pub type StockUpdates = Pin<Box<dyn Stream<Item = Result<GetStockResponse, Status>> + Send>>;

impl InventoryHandler {
    /// An inventory holding `stock`.
    pub fn new(stock: &BTreeMap<String, u32>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                stock: stock.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                reservations: Vec::new(),
            })),
            changes: Arc::new(watch::Sender::new(0)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many calls reached a handler method: the auth layer refuses
    /// before routing, so a refused call never counts.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts the call and returns its verified caller.
    fn accept<T>(&self, request: &Request<T>) -> Result<VerifiedClaims, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // The auth layer always inserts claims before a handler runs; their
        // absence means the server was assembled without it.
        request
            .verified_claims()
            .cloned()
            .ok_or_else(|| Status::internal("request reached the handler unauthenticated"))
    }

    /// The stock of `sku`.
    fn level(&self, sku: &str) -> Result<u32, Status> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .stock
            .get(sku)
            .copied()
            .ok_or_else(|| Status::not_found(format!("unknown sku {sku:?}")))
    }

    /// Every reservation so far, oldest first.
    pub fn reservations(&self) -> Vec<Reservation> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reservations
            .clone()
    }
}

#[tonic::async_trait]
impl Inventory for InventoryHandler {
    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        self.accept(&request)?;
        let sku = request.into_inner().sku;
        let available = self.level(&sku)?;
        Ok(Response::new(GetStockResponse { sku, available }))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let claims = self.accept(&request)?;
        let peer = request
            .peer_identity()
            .and_then(|peer| peer.spiffe_id())
            .map(str::to_owned);
        let request_id = request.request_id().map(|id| id.as_str().to_owned());
        let ReserveRequest { sku, quantity } = request.into_inner();
        if quantity == 0 {
            return Err(Status::invalid_argument("quantity must be at least 1"));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let available = state
            .stock
            .get_mut(&sku)
            .ok_or_else(|| Status::not_found(format!("unknown sku {sku:?}")))?;
        if *available < quantity {
            return Err(Status::failed_precondition(format!(
                "only {available} of {sku:?} in stock"
            )));
        }
        *available -= quantity;
        let remaining = *available;
        let reservation = Reservation {
            id: format!("res-{}", state.reservations.len() + 1),
            sku: sku.clone(),
            quantity,
            caller: claims.sub.clone(),
            actor: claims.act.as_ref().map(|act| act.sub.clone()),
            audience: claims.aud.clone(),
            jti: claims.jti.clone(),
            peer,
            token_binding: claims.cnf.as_ref().map(|cnf| cnf.x5t_s256.clone()),
            request_id,
        };
        tracing::info!(reservation = %reservation.id, sku = %sku, quantity, caller = %claims.sub, actor = reservation.actor.as_deref().unwrap_or_default(), "stock reserved");
        let id = reservation.id.clone();
        state.reservations.push(reservation);
        drop(state);
        self.changes.send_modify(|version| *version += 1);
        Ok(Response::new(ReserveResponse {
            reservation_id: id,
            sku,
            quantity,
            remaining,
            reserved_by: claims.sub.clone(),
            acting_workload: claims
                .act
                .as_ref()
                .map(|act| act.sub.clone())
                .unwrap_or_default(),
        }))
    }

    type WatchStockStream = StockUpdates;

    async fn watch_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        self.accept(&request)?;
        let sku = request.into_inner().sku;
        self.level(&sku)?;
        let handler = self.clone();
        let mut last = None;
        // The current level at once, then each change of this SKU's level.
        let updates = WatchStream::new(self.changes.subscribe()).filter_map(move |_| match handler
            .level(&sku)
        {
            Ok(available) if last == Some(available) => None,
            Ok(available) => {
                last = Some(available);
                Some(Ok(GetStockResponse {
                    sku: sku.clone(),
                    available,
                }))
            }
            Err(status) => Some(Err(status)),
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// Serves inventory on `listener` until `shutdown` resolves, verifying every
/// call with keys fetched in the background from the token service.
///
/// # Errors
/// [`RuntimeError`] when TLS, the verifier settings or the transport fail.
pub async fn run(
    listener: TcpListener,
    config: Loaded<Config>,
    handler: InventoryHandler,
    clock: SharedClock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let settings = &config.config;
    let transport = Transport::from_config(
        settings.tls.as_ref(),
        settings.insecure_plaintext,
        &config.dir,
    )?;
    let verification =
        Verification::start(&settings.auth, &settings.token_service, &config.dir, clock)?;
    let policy = PolicySource::from_config(&settings.auth, &config.dir, policy())?;
    let service = InventoryServer::new(handler);
    serve_authenticated(
        listener,
        &transport,
        verification,
        policy,
        service,
        &settings.runtime,
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_file_parses_and_covers_every_method() {
        assert!(MethodPolicy::from_toml(POLICY_FILE).is_ok());
        service_runtime::check_coverage(&policy(), "demo.inventory.v1.Inventory", true)
            .expect("every inventory method has a rule");
    }
}
