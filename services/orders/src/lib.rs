//! Orders, SERVER1 of the AuthMesh demo: `PlaceOrder` checks stock and
//! reserves it at inventory, calling with **its own** token (aud `inventory`)
//! that a [`TokenSource`] keeps fresh from the token service. The caller's
//! token is never forwarded.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use auth_interceptor::{
    BearerInterceptor, ClientCredentials, MethodPolicy, RefreshSettings, SharedClock, TokenRequest,
    TokenSource, VerifiedClaims,
};
use authmesh_proto::demo::{
    inventory::v1::{GetStockRequest, ReserveRequest, inventory_client::InventoryClient},
    orders::v1::{
        PlaceOrderRequest, PlaceOrderResponse,
        orders_server::{Orders, OrdersServer},
    },
};
use serde::{Deserialize, Serialize};
use service_runtime::{
    AuthConfig, Loaded, RuntimeError, ServerTlsFiles, Transport, UpstreamConfig, Verification,
    client_secret, serve_authenticated, upstream_channel,
};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status, service::interceptor::InterceptedService, transport::Channel,
};

/// Scope needed by `PlaceOrder`.
pub const SCOPE_WRITE: &str = "orders.write";

/// The scopes orders asks for at inventory.
pub const INVENTORY_SCOPES: [&str; 2] = ["inventory.read", "inventory.reserve"];

/// `orders.toml`.
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
    /// The token service: keys to verify callers, and tokens for calling inventory.
    pub token_service: UpstreamConfig,
    /// What callers' tokens must satisfy.
    pub auth: AuthConfig,
    /// Where inventory is.
    pub inventory: UpstreamConfig,
    /// Orders' own client credentials at the token service.
    pub client: ClientConfig,
}

/// Orders' identity at the token service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Client id.
    pub id: String,
    /// File holding the secret (or set `AUTHMESH_CLIENT_SECRET`); leave both
    /// unset to authenticate with the client certificate of `token_service` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:50052".into()
}

/// The method policy of the orders API.
pub fn policy(public_reflection: bool) -> MethodPolicy {
    MethodPolicy::new()
        .require("/demo.orders.v1.Orders/PlaceOrder", [SCOPE_WRITE])
        .public_reflection(public_reflection)
}

type Inventory = InventoryClient<InterceptedService<Channel, BearerInterceptor>>;

/// The orders handler.
#[derive(Debug, Clone)]
pub struct OrdersHandler {
    inventory: Inventory,
    next_order: Arc<AtomicU64>,
}

impl OrdersHandler {
    /// A handler calling inventory on `channel` with tokens from `tokens`.
    pub fn new(channel: Channel, tokens: TokenSource) -> Self {
        Self {
            inventory: InventoryClient::with_interceptor(channel, BearerInterceptor::new(tokens)),
            next_order: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// Inventory's answer, as orders' caller should see it: UNAVAILABLE stays
/// UNAVAILABLE (retry later), an auth failure at inventory is orders' own
/// fault (INTERNAL), business errors pass through.
fn from_inventory(status: Status) -> Status {
    let message = format!("inventory: {}", status.message());
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(code = ?status.code(), message = %status.message(), "inventory refused orders' own token");
            Status::internal("inventory refused orders' credentials")
        }
        code => Status::new(code, message),
    }
}

#[tonic::async_trait]
impl Orders for OrdersHandler {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let caller = request
            .extensions()
            .get::<VerifiedClaims>()
            .map(|c| c.sub.clone())
            .ok_or_else(|| Status::internal("request reached the handler unauthenticated"))?;
        let PlaceOrderRequest { sku, quantity } = request.into_inner();
        if sku.is_empty() || quantity == 0 {
            return Err(Status::invalid_argument(
                "sku and a positive quantity are required",
            ));
        }
        let mut inventory = self.inventory.clone();
        let stock = inventory
            .get_stock(GetStockRequest { sku: sku.clone() })
            .await
            .map_err(from_inventory)?
            .into_inner();
        if stock.available < quantity {
            return Err(Status::failed_precondition(format!(
                "only {} of {sku:?} in stock",
                stock.available
            )));
        }
        let reservation = inventory
            .reserve(ReserveRequest {
                sku: sku.clone(),
                quantity,
            })
            .await
            .map_err(from_inventory)?
            .into_inner();
        let order_id = format!("ord-{}", self.next_order.fetch_add(1, Ordering::Relaxed));
        tracing::info!(order = %order_id, sku = %sku, quantity, caller = %caller, reservation = %reservation.reservation_id, "order placed");
        Ok(Response::new(PlaceOrderResponse {
            order_id,
            reservation_id: reservation.reservation_id,
            remaining: reservation.remaining,
            placed_by: caller,
            reserved_by: reservation.reserved_by,
        }))
    }
}

/// Serves orders on `listener` until `shutdown` resolves.
///
/// # Errors
/// [`RuntimeError`] when TLS, secrets, the verifier settings or the transport fail.
pub async fn run(
    listener: TcpListener,
    config: Loaded<Config>,
    clock: SharedClock,
    token_refresh: RefreshSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let settings = &config.config;
    let transport = Transport::from_config(
        settings.tls.as_ref(),
        settings.insecure_plaintext,
        &config.dir,
    )?;
    let token_service = upstream_channel(&settings.token_service, &config.dir)?;
    let verification = Verification::start(&settings.auth, token_service.clone(), clock.clone())?;
    let secret = client_secret(settings.client.secret_file.as_ref(), &config.dir)?;
    let tokens = TokenSource::with_settings(
        token_service,
        secret.map(|secret| ClientCredentials::new(&settings.client.id, secret)),
        TokenRequest {
            audience: "inventory".into(),
            scopes: INVENTORY_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            ttl_seconds: None,
        },
        token_refresh,
        clock,
    );
    let _token_refresh = tokens.spawn_refresh();
    let handler = OrdersHandler::new(
        upstream_channel(&settings.inventory, &config.dir)?,
        tokens.clone(),
    );
    let policy = policy(settings.auth.public_reflection);
    let service = OrdersServer::new(handler);
    serve_authenticated(
        listener,
        &transport,
        verification,
        policy,
        service,
        shutdown,
    )
    .await
}
