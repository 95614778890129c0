//! The `[runtime]` section: a service configured `thread_per_core` serves
//! every call from its own serving threads and stops them all on shutdown.

use std::{num::NonZeroUsize, time::Duration};

use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
use authmesh_tests::{TestMesh, bearer, expect_status, get_stock};
use inventory::InventoryHandler;
use service_runtime::{RuntimeConfig, RuntimeMode};
use tokio::net::TcpListener;

/// The names of this process's threads that serve calls per core.
fn serving_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| name.starts_with("serve-core-"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_per_core_inventory_serves_from_its_own_runtimes_and_stops_them() {
    let mesh = TestMesh::start().await;
    let mut config = mesh.state.load_inventory().expect("inventory config");
    config.config.runtime = RuntimeConfig::new(RuntimeMode::ThreadPerCore)
        .with_threads(NonZeroUsize::new(3).expect("3"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handler = InventoryHandler::new(&config.config.stock);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(inventory::run(
        listener,
        config,
        handler.clone(),
        mesh.shared_clock(),
        async {
            let _ = stopped.await;
        },
    ));
    mesh.wait_serving(addr).await;
    assert_eq!(
        serving_threads(),
        ["serve-core-0", "serve-core-1", "serve-core-2"]
    );

    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    // Each connection is served to its end by whichever runtime accepted it.
    for _ in 0..12 {
        let mut client = InventoryClient::new(mesh.channel(addr));
        let stock = client
            .get_stock(bearer(get_stock(), &token))
            .await
            .expect("allowed")
            .into_inner();
        assert_eq!(stock.available, 100);
    }
    assert_eq!(handler.calls(), 12);
    // The auth layer runs on the serving runtimes too.
    let mut client = InventoryClient::new(mesh.channel(addr));
    let refused = client.get_stock(get_stock()).await;
    expect_status(refused, tonic::Code::Unauthenticated, Some("TOKEN_MISSING"));
    assert_eq!(handler.calls(), 12);

    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("stops within the drain timeout")
        .expect("join")
        .expect("clean stop");
    assert!(serving_threads().is_empty(), "{:?}", serving_threads());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    mesh.stop().await;
}
