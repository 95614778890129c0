//! A panic in a call becomes INTERNAL for that call alone: the connection,
//! the other calls on it and the server go on. Served the way every
//! AuthMesh service is (`serve_authenticated`: TLS, auth layer, policy),
//! with an inventory whose GetStock panics.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use authmesh_proto::demo::inventory::v1::{
    GetStockRequest, GetStockResponse, ReserveRequest, ReserveResponse,
    inventory_client::InventoryClient,
    inventory_server::{Inventory, InventoryServer},
};
use authmesh_tests::{TestMesh, bearer, get_stock};
use service_runtime::{Transport, Verification, serve_authenticated};
use tonic::{Code, Request, Response, Status};

/// GetStock of the SKU `boom` panics mid-call, after authorization; any
/// other SKU is answered.
#[derive(Clone, Default)]
struct PanickingInventory {
    answered: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl Inventory for PanickingInventory {
    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        tokio::task::yield_now().await;
        let sku = &request.get_ref().sku;
        assert_ne!(sku, "boom", "handler bug while serving {sku}");
        self.answered.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(GetStockResponse {
            sku: sku.clone(),
            available: 1,
        }))
    }

    async fn reserve(
        &self,
        _request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type WatchStockStream = inventory::StockUpdates;

    async fn watch_stock(
        &self,
        _request: Request<GetStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_is_internal_and_the_server_keeps_serving() {
    let mesh = TestMesh::start().await;
    let config = mesh.state.load_inventory().expect("inventory config");
    let settings = &config.config;
    let transport =
        Transport::from_config(settings.tls.as_ref(), false, &config.dir).expect("transport");
    let verification = Verification::start(
        &settings.auth,
        &settings.token_service,
        &config.dir,
        mesh.shared_clock(),
    )
    .expect("verification");
    let policy = service_runtime::PolicySource::from_config(
        &settings.auth,
        &config.dir,
        inventory::policy(),
    )
    .expect("policy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handler = PanickingInventory::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let handler = handler.clone();
        async move {
            serve_authenticated(
                listener,
                &transport,
                verification,
                policy,
                InventoryServer::new(handler),
                &Default::default(),
                async {
                    let _ = stopped.await;
                },
            )
            .await
        }
    });
    mesh.wait_serving(addr).await;

    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let boom = || bearer(GetStockRequest { sku: "boom".into() }, &token);
    // One channel, one HTTP/2 connection, for every call below.
    let mut client = InventoryClient::new(mesh.channel(addr));
    for _ in 0..3 {
        let status = client
            .get_stock(boom())
            .await
            .expect_err("the handler panicked");
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(status.message(), "internal error");
        assert!(!format!("{status:?}").contains(&token));
        // The same connection still serves the next call.
        client
            .get_stock(bearer(get_stock(), &token))
            .await
            .expect("the server keeps serving after a panic");
    }
    assert_eq!(handler.answered.load(Ordering::Relaxed), 3);
    // A panic never bypasses authentication: no token is still refused.
    let anonymous = client.get_stock(get_stock()).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("the server stopped cleanly");
    mesh.stop().await;
}
