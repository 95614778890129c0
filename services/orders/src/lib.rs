//! Orders, SERVER1 of the AuthMesh demo: `PlaceOrder` checks stock and
//! reserves it at inventory, calling with **its own** token (aud `inventory`)
//! that a [`TokenSource`] keeps fresh from the token service. The caller's
//! token is never forwarded: when the caller is a user (their token from a
//! trusted external issuer, or a mesh token carrying a user), orders
//! exchanges it at the token service for a token on that user's behalf
//! (`sub` the user, `act` orders) and calls inventory with that.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use auth_interceptor::{CallerExt, MethodPolicy, REQUEST_ID_HEADER, SharedClock};
use authmesh_client::{
    BearerInterceptor, ClientCredentials, RefreshSettings, TokenRefreshHandle, TokenRequest,
    TokenSource,
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
    AuthConfig, BackgroundTask, ClientTls, Loaded, PolicySource, RuntimeConfig, RuntimeError,
    ServerTlsFiles, Transport, UpstreamConfig, Verification, client_secret, serve_authenticated,
    upstream_channel, upstream_tls,
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
    /// Where to serve Prometheus `/metrics` (plain HTTP), e.g. `0.0.0.0:9090`; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// How the service uses the machine's cores (`[runtime]`: mode, worker_threads).
    #[serde(default, skip_serializing_if = "RuntimeConfig::is_default")]
    pub runtime: RuntimeConfig,
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

/// The policy of the orders API: what `authmesh up` writes to
/// `orders.policy.toml`, and what orders enforces without a policy file.
pub const POLICY_FILE: &str = include_str!("../orders.policy.toml");

/// [`POLICY_FILE`], parsed. It parses (a unit test says so); if it ever did
/// not, every method would be denied, never allowed.
pub fn policy() -> MethodPolicy {
    MethodPolicy::from_toml(POLICY_FILE).unwrap_or_else(|_| MethodPolicy::new())
}

type Inventory = InventoryClient<InterceptedService<Channel, BearerInterceptor>>;

/// One consistent way of calling inventory: connections that present one
/// client certificate, and a token source whose tokens are bound to that
/// same certificate. Calls always use both halves of one pair.
struct Calls {
    inventory: Inventory,
    /// The same connections, for calls carrying a user's exchanged token.
    for_users: InventoryClient<Channel>,
    tokens: TokenSource,
    _refresh: TokenRefreshHandle,
}

/// The orders handler.
#[derive(Clone)]
pub struct OrdersHandler {
    calls: Arc<ArcSwap<Calls>>,
    next_order: Arc<AtomicU64>,
    /// The mesh's issuer: a caller's token of another issuer is a user's.
    mesh_issuer: Arc<str>,
}

impl std::fmt::Debug for OrdersHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrdersHandler")
            .field("tokens", &self.calls.load().tokens)
            .finish_non_exhaustive()
    }
}

/// An upstream reached over fresh connections on demand.
#[derive(Clone)]
struct Upstream {
    urls: Vec<String>,
    tls: Option<ClientTls>,
    dir: PathBuf,
}

impl Upstream {
    fn new(
        config: &UpstreamConfig,
        dir: &Path,
        tls: Option<ClientTls>,
    ) -> Result<Self, RuntimeError> {
        let tls = match tls {
            Some(tls) => Some(tls),
            None if config.url.starts_with("https://") => Some(upstream_tls(config, dir)?),
            None => None,
        };
        Ok(Self {
            urls: config.urls(),
            tls,
            dir: dir.to_path_buf(),
        })
    }

    /// A channel with its own connections, presenting the current client certificate.
    fn channel(&self) -> Result<Channel, RuntimeError> {
        match &self.tls {
            Some(tls) => tls.failover_channel(&self.urls),
            None => upstream_channel(
                &UpstreamConfig {
                    url: self.urls.first().cloned().unwrap_or_default(),
                    ..UpstreamConfig::default()
                },
                &self.dir,
            ),
        }
    }
}

/// Builds [`Calls`] over the current client certificate.
#[derive(Clone)]
struct Outgoing {
    token_service: Upstream,
    inventory: Upstream,
    credentials: Option<ClientCredentials>,
    clock: SharedClock,
    refresh: RefreshSettings,
}

impl Outgoing {
    fn build(&self) -> Result<Calls, RuntimeError> {
        let tokens = TokenSource::with_settings(
            self.token_service.channel()?,
            self.credentials.clone(),
            TokenRequest {
                audience: "inventory".into(),
                scopes: INVENTORY_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                ttl_seconds: None,
            },
            self.refresh,
            self.clock.clone(),
        );
        let refresh = tokens.spawn_refresh();
        let channel = self.inventory.channel()?;
        let inventory = InventoryClient::with_interceptor(
            channel.clone(),
            BearerInterceptor::new(tokens.clone()),
        );
        Ok(Calls {
            inventory,
            for_users: InventoryClient::new(channel),
            tokens,
            _refresh: refresh,
        })
    }

    /// After each reload of the client certificate, moves outgoing calls to
    /// fresh connections and a token bound to the new certificate, together,
    /// once that token is at hand; calls in flight finish on the old pair.
    async fn follow_certificate(self, calls: Arc<ArcSwap<Calls>>) {
        let Some(mut changes) = self
            .token_service
            .tls
            .as_ref()
            .and_then(ClientTls::identity_changes)
        else {
            return;
        };
        while changes.changed().await.is_ok() {
            let next = match self.build() {
                Ok(next) => next,
                Err(err) => {
                    tracing::error!(error = %err, "cannot reconnect with the renewed client certificate");
                    continue;
                }
            };
            match next.tokens.ready(Duration::from_secs(10)).await {
                Ok(()) => {
                    calls.store(Arc::new(next));
                    tracing::info!("outgoing calls moved to the renewed client certificate");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "no token for the renewed certificate yet; keeping the previous one")
                }
            }
        }
    }
}

/// Inventory's answer, as orders' caller should see it: UNAVAILABLE stays
/// UNAVAILABLE (retry later), an auth failure at inventory is orders' own
/// fault (INTERNAL) unless orders acted `for_user`, when inventory's policy
/// refusing that user passes through, and business errors pass through.
///
/// A call cut off by its connection (inventory killed mid-call) comes out
/// of tonic as UNKNOWN or INTERNAL carrying the transport error as its
/// source, unlike a status inventory sent; for orders' caller that is
/// inventory being unavailable, not a fault of either service.
fn from_inventory(status: Status, for_user: bool) -> Status {
    let message = format!("inventory: {}", status.message());
    match status.code() {
        Code::PermissionDenied if for_user => Status::with_details(
            Code::PermissionDenied,
            message,
            status.details().to_vec().into(),
        ),
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(code = ?status.code(), message = %status.message(), "inventory refused orders' own token");
            Status::internal("inventory refused orders' credentials")
        }
        Code::Unknown | Code::Internal if std::error::Error::source(&status).is_some() => {
            Status::unavailable(message)
        }
        // Inventory's (or the token source's) ErrorInfo goes on with it.
        code => Status::with_details(code, message, status.details().to_vec().into()),
    }
}

#[tonic::async_trait]
impl Orders for OrdersHandler {
    async fn place_order(
        &self,
        request: Request<PlaceOrderRequest>,
    ) -> Result<Response<PlaceOrderResponse>, Status> {
        let claims = request
            .verified_claims()
            .ok_or_else(|| Status::internal("request reached the handler unauthenticated"))?;
        let caller = claims.sub.clone();
        // A user's token (an external issuer's, or the mesh's carrying a
        // user): orders acts for that user at inventory.
        let user_token = if claims.iss != *self.mesh_issuer || claims.act.is_some() {
            let token = auth_interceptor::bearer_token(request.metadata().as_ref())
                .map_err(|_| Status::internal("the verified token is no longer in the request"))?;
            Some(token.to_owned())
        } else {
            None
        };
        // The caller's request id goes on to inventory, so both logs tell one story.
        let request_id = request.request_id().and_then(|id| {
            id.as_str()
                .parse::<tonic::metadata::AsciiMetadataValue>()
                .ok()
        });
        let PlaceOrderRequest { sku, quantity } = request.into_inner();
        if sku.is_empty() || quantity == 0 {
            return Err(Status::invalid_argument(
                "sku and a positive quantity are required",
            ));
        }
        // One pair for the whole order: connections and token match.
        let calls = self.calls.load_full();
        let for_user = match &user_token {
            Some(token) => Some(calls.tokens.exchange(token).await.map_err(Status::from)?),
            None => None,
        };
        let get_stock = onward(GetStockRequest { sku: sku.clone() }, request_id.as_ref());
        let stock = match &for_user {
            None => calls.inventory.clone().get_stock(get_stock).await,
            Some(bearer) => {
                let request = with_bearer(get_stock, bearer);
                calls.for_users.clone().get_stock(request).await
            }
        }
        .map_err(|status| from_inventory(status, for_user.is_some()))?
        .into_inner();
        if stock.available < quantity {
            return Err(Status::failed_precondition(format!(
                "only {} of {sku:?} in stock",
                stock.available
            )));
        }
        let reserve = onward(
            ReserveRequest {
                sku: sku.clone(),
                quantity,
            },
            request_id.as_ref(),
        );
        let reservation = match &for_user {
            None => calls.inventory.clone().reserve(reserve).await,
            Some(bearer) => {
                let request = with_bearer(reserve, bearer);
                calls.for_users.clone().reserve(request).await
            }
        }
        .map_err(|status| from_inventory(status, for_user.is_some()))?
        .into_inner();
        let order_id = format!("ord-{}", self.next_order.fetch_add(1, Ordering::Relaxed));
        tracing::info!(order = %order_id, sku = %sku, quantity, caller = %caller, for_user = for_user.is_some(), reservation = %reservation.reservation_id, "order placed");
        Ok(Response::new(PlaceOrderResponse {
            order_id,
            reservation_id: reservation.reservation_id,
            remaining: reservation.remaining,
            placed_by: caller,
            reserved_by: reservation.reserved_by,
            reserved_through: reservation.acting_workload,
        }))
    }
}

/// `request` carrying a user's exchanged token.
fn with_bearer<T>(
    mut request: Request<T>,
    bearer: &tonic::metadata::AsciiMetadataValue,
) -> Request<T> {
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

/// A call to inventory carrying the incoming call's request id.
fn onward<T>(message: T, request_id: Option<&tonic::metadata::AsciiMetadataValue>) -> Request<T> {
    let mut outgoing = Request::new(message);
    if let Some(id) = request_id {
        outgoing
            .metadata_mut()
            .insert(REQUEST_ID_HEADER, id.clone());
    }
    outgoing
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
    let verification = Verification::start(
        &settings.auth,
        &settings.token_service,
        &config.dir,
        clock.clone(),
    )?;
    let secret = client_secret(settings.client.secret_file.as_ref(), &config.dir)?;
    let token_upstream = Upstream::new(&settings.token_service, &config.dir, None)?;
    // One client identity for both upstreams, so a renewed certificate moves
    // tokens and connections together.
    let same_identity = (
        &settings.inventory.ca,
        &settings.inventory.cert,
        &settings.inventory.key,
    ) == (
        &settings.token_service.ca,
        &settings.token_service.cert,
        &settings.token_service.key,
    );
    let shared_tls = token_upstream.tls.clone().filter(|_| same_identity);
    if !same_identity {
        tracing::warn!(
            "inventory and token_service upstreams use different TLS settings; bound tokens will not follow certificate renewal"
        );
    }
    let outgoing = Outgoing {
        inventory: Upstream::new(&settings.inventory, &config.dir, shared_tls)?,
        token_service: token_upstream,
        credentials: secret.map(|secret| ClientCredentials::new(&settings.client.id, secret)),
        clock,
        refresh: token_refresh,
    };
    let calls = Arc::new(ArcSwap::from_pointee(outgoing.build()?));
    let follower = BackgroundTask::spawn(outgoing.follow_certificate(calls.clone()));
    let handler = OrdersHandler {
        calls,
        next_order: Arc::new(AtomicU64::new(1)),
        mesh_issuer: settings.auth.issuer.as_str().into(),
    };
    let policy = PolicySource::from_config(&settings.auth, &config.dir, policy())?;
    let service = OrdersServer::new(handler);
    serve_authenticated(
        listener,
        &transport,
        verification,
        policy,
        service,
        &settings.runtime,
        shutdown,
    )
    .await?;
    drop(follower);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn the_policy_file_parses_and_covers_every_method() {
        assert!(MethodPolicy::from_toml(POLICY_FILE).is_ok());
        service_runtime::check_coverage(&policy(), "demo.orders.v1.Orders", true)
            .expect("every orders method has a rule");
    }

    #[test]
    fn a_cut_connection_is_unavailable_but_statuses_inventory_sent_pass_through() {
        let mut cut = Status::unknown("connection reset");
        cut.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(from_inventory(cut, false).code(), Code::Unavailable);
        let mut reset = Status::internal("h2 protocol error");
        reset.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert_eq!(from_inventory(reset, false).code(), Code::Unavailable);

        assert_eq!(
            from_inventory(Status::unknown("sent"), false).code(),
            Code::Unknown
        );
        assert_eq!(
            from_inventory(Status::failed_precondition("only 1 left"), false).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            from_inventory(Status::unavailable("down"), false).code(),
            Code::Unavailable
        );
        assert_eq!(
            from_inventory(Status::permission_denied("scope"), false).code(),
            Code::Internal
        );
        // Acting for a user, inventory's refusal of that user is theirs to see.
        assert_eq!(
            from_inventory(Status::permission_denied("scope"), true).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            from_inventory(Status::unauthenticated("key"), true).code(),
            Code::Internal
        );
    }
}
