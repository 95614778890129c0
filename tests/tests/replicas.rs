//! Token-service replicas on a real etcd cluster: each replica keeps its own
//! signing key and publishes only the public key; every replica serves the
//! union; a revocation through one replica is enforced by verifiers of
//! another within a second; a replica catches up before it serves, waits
//! for its key to be published before it signs, and stops minting when it
//! is cut off from etcd; a workload registered through one replica is in
//! force on all of them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use auth_interceptor::{Clock, SigningAlgorithm};
use authmesh::{
    dev_state::{DEMO_CLIENT, OPERATOR_CLIENT},
    mesh::{self, RunningServer},
};
use authmesh_client::ClientCredentials;
use authmesh_proto::authmesh::v1::{
    AddWorkloadRequest, GetJwksRequest, IssueTokenRequest, ListWorkloadsRequest,
    RemoveWorkloadRequest, RevokeRequest, ScopeList, TokenRevocation, WatchRevocationsRequest,
    Workload, revoke_request, token_service_client::TokenServiceClient,
    workload_admin_client::WorkloadAdminClient,
};
use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
use authmesh_tests::{
    ServingStatus, SigningKey, TestMesh, bearer, decode_claims, decode_header, etcd::EtcdCluster,
    get_stock, reason,
};
use service_runtime::{Loaded, UpstreamConfig};
use token_service::{StoreConfig, store::EtcdConfig};
use tokio::net::TcpListener;
use tonic::{Code, Request, transport::Channel};

/// Starts a replica of the mesh's token service on etcd with its own key
/// directory, on `listener`.
fn start_replica(
    mesh: &TestMesh,
    listener: TcpListener,
    key_dir: &str,
    mut store: EtcdConfig,
    replica: &str,
) -> RunningServer {
    let mut config = mesh
        .state
        .load_token_service()
        .expect("token service config");
    config.config.key_dir = key_dir.into();
    store.replica_id = Some(replica.into());
    config.config.store = StoreConfig::Etcd(store);
    let config = Loaded {
        config: config.config,
        dir: config.dir,
    };
    mesh::start_token_service_with(config, listener, mesh.shared_clock()).expect("replica")
}

/// Replaces the mesh's token service with a replica on etcd at the same
/// address (its key directory is the mesh's): inventory and orders then
/// fetch keys and stream revocations from it.
async fn take_over(mesh: &mut TestMesh, store: EtcdConfig, replica: &str) -> RunningServer {
    mesh.stop_token_service().await;
    let listener = TcpListener::bind(mesh.addrs.token_service)
        .await
        .expect("rebind");
    start_replica(mesh, listener, "keys", store, replica)
}

/// Three replicas: `r0` takes over the mesh's address, `r1` and `r2` (key
/// directories `keys-1`, `keys-2`) listen on ephemeral ports.
async fn three_replicas(
    mesh: &mut TestMesh,
    store: &EtcdConfig,
) -> (Vec<RunningServer>, Vec<SocketAddr>) {
    let mut replicas = vec![take_over(mesh, store.clone(), "r0").await];
    let mut addrs = vec![mesh.addrs.token_service];
    for i in 1..3 {
        let (listener, addr) = ephemeral().await;
        let key_dir = format!("keys-{i}");
        replicas.push(start_replica(
            mesh,
            listener,
            &key_dir,
            store.clone(),
            &format!("r{i}"),
        ));
        addrs.push(addr);
    }
    (replicas, addrs)
}

/// Replicas `a` and `b` (key directories `keys-a`, `keys-b`) on ephemeral
/// ports, once both are SERVING.
async fn two_replicas(
    mesh: &TestMesh,
    store: EtcdConfig,
) -> ((RunningServer, SocketAddr), (RunningServer, SocketAddr)) {
    let (a_listener, a_addr) = ephemeral().await;
    let a = start_replica(mesh, a_listener, "keys-a", store.clone(), "a");
    let (b_listener, b_addr) = ephemeral().await;
    let b = start_replica(mesh, b_listener, "keys-b", store, "b");
    mesh.wait_serving(a_addr).await;
    mesh.wait_serving(b_addr).await;
    ((a, a_addr), (b, b_addr))
}

async fn ephemeral() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn client(
    mesh: &TestMesh,
    addr: SocketAddr,
    workload: Option<&str>,
) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(mesh.channel_as(addr, workload))
}

/// A token for inventory from the replica at `addr`, as `demo-cli`.
async fn mint_at(mesh: &TestMesh, addr: SocketAddr) -> Result<String, tonic::Status> {
    let mut request = Request::new(IssueTokenRequest {
        audience: "inventory".into(),
        scopes: vec!["inventory.read".into()],
        ttl_seconds: Some(300),
        one_time: false,
    });
    let basic = ClientCredentials::new(DEMO_CLIENT, mesh.secret(DEMO_CLIENT))
        .basic_authorization()
        .expect("basic");
    request.metadata_mut().insert("authorization", basic);
    client(mesh, addr, None)
        .issue_token(request)
        .await
        .map(|r| r.into_inner().token)
}

async fn revoke_at(mesh: &TestMesh, addr: SocketAddr, jti: &str) -> Result<(), tonic::Status> {
    client(mesh, addr, Some(OPERATOR_CLIENT))
        .revoke(RevokeRequest {
            target: Some(revoke_request::Target::Token(TokenRevocation {
                jti: jti.into(),
                expires_at: None,
            })),
            reason: "replica test".into(),
        })
        .await
        .map(drop)
}

async fn kids_at(mesh: &TestMesh, addr: SocketAddr) -> Vec<String> {
    let mut kids: Vec<String> = client(mesh, addr, None)
        .get_jwks(GetJwksRequest {})
        .await
        .expect("jwks")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    kids.sort();
    kids
}

/// Calls inventory with `token` until it is refused (or `limit` passes); how long that took.
async fn refused_within(mesh: &TestMesh, token: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Err(status) = mesh
            .inventory_client()
            .get_stock(bearer(get_stock(), token))
            .await
        {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            assert_eq!(
                reason(&status).as_deref(),
                Some("TOKEN_REVOKED"),
                "{status:?}"
            );
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Reads a revocation watch from `addr` until its snapshot is complete; the jtis in it.
async fn snapshot_at(mesh: &TestMesh, addr: SocketAddr) -> Vec<String> {
    let mut stream = client(mesh, addr, None)
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .expect("watch")
        .into_inner();
    let mut jtis = Vec::new();
    while let Some(batch) = stream.message().await.expect("batch") {
        jtis.extend(batch.revocations.iter().filter_map(|r| match &r.target {
            Some(authmesh_proto::authmesh::v1::revocation::Target::Jti(jti)) => Some(jti.clone()),
            _ => None,
        }));
        if batch.snapshot {
            break;
        }
    }
    jtis
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_public_keys_and_revocations_through_etcd_over_mtls() {
    let mut mesh = TestMesh::start().await;
    let Some(mut etcd) = EtcdCluster::start(3, Some(&mesh.state.dir().join("tls"))).await else {
        return;
    };
    let store = etcd.store_config("/mesh-a/");
    // Replica B takes the mesh's token-service address: inventory fetches
    // keys and streams revocations from it. Replica A is elsewhere.
    let b_addr = mesh.addrs.token_service;
    let b = take_over(&mut mesh, store.clone(), "b").await;
    let (a_listener, a_addr) = ephemeral().await;
    let a = start_replica(&mesh, a_listener, "keys-a", store.clone(), "a");
    mesh.wait_serving(b_addr).await;
    mesh.wait_serving(a_addr).await;

    // Each replica signs with its own key; both serve the union.
    let from_a = mint_at(&mesh, a_addr).await.expect("mint at A");
    let from_b = mint_at(&mesh, b_addr).await.expect("mint at B");
    let kid_a = decode_header(&from_a)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    let kid_b = decode_header(&from_b)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    assert_ne!(kid_a, kid_b, "replicas never share a signing key");
    let mut both = vec![kid_a.clone(), kid_b.clone()];
    both.sort();
    let start = Instant::now();
    while kids_at(&mesh, b_addr).await != both || kids_at(&mesh, a_addr).await != both {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replicas never agreed on the key set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Inventory knew only B's key; it fetches A's from B (its unknown-kid
    // refetch is rate limited: that is why keys are published before they sign).
    for token in [&from_a, &from_b] {
        let start = Instant::now();
        while let Err(status) = mesh
            .inventory_client()
            .get_stock(bearer(get_stock(), token))
            .await
        {
            assert_eq!(
                reason(&status).as_deref(),
                Some("UNKNOWN_KEY"),
                "{status:?}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "a token of either replica verifies"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // One etcd member dies: writes still go through the other two.
    etcd.kill(0);
    // A first revocation through A shows inventory's stream (from B) is live.
    revoke_at(&mesh, a_addr, &decode_claims(&from_b).jti)
        .await
        .expect("revoke through A with a member down");
    refused_within(&mesh, &from_b, Duration::from_secs(20))
        .await
        .expect("inventory learns a revocation made through the other replica");
    // The measured one: through A, enforced by a verifier streaming from B.
    revoke_at(&mesh, a_addr, &decode_claims(&from_a).jti)
        .await
        .expect("revoke through A");
    let took = refused_within(&mesh, &from_a, Duration::from_secs(5))
        .await
        .expect("revocation enforced");
    eprintln!("revocation through replica A enforced by a verifier of replica B in {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    etcd.restart(0);

    // A replica that was down catches up before it serves: A misses a
    // revocation made through B, and has it in its first snapshot.
    a.stop().await.expect("A stops");
    let missed = mint_at(&mesh, b_addr).await.expect("mint at B");
    let missed_jti = decode_claims(&missed).jti;
    revoke_at(&mesh, b_addr, &missed_jti)
        .await
        .expect("revoke through B");
    // A is gone, and its key stays published while its tokens may live.
    assert_eq!(
        kids_at(&mesh, b_addr).await,
        both,
        "a stopped replica's key stays published"
    );
    let (a_listener, a_addr) = ephemeral().await;
    let a = start_replica(&mesh, a_listener, "keys-a", store, "a");
    mesh.wait_serving(a_addr).await;
    assert!(snapshot_at(&mesh, a_addr).await.contains(&missed_jti));
    let again = mint_at(&mesh, a_addr).await.expect("mint at restarted A");
    assert_eq!(
        decode_header(&again)["kid"],
        kid_a.as_str(),
        "A keeps its key across restarts"
    );
    a.stop().await.expect("A stops");
    b.stop().await.expect("B stops");
}

/// The `kid` of the EdDSA key in the state's `dir`.
fn kid_in(mesh: &TestMesh, dir: &str) -> String {
    let pem = std::fs::read_to_string(mesh.state.dir().join(dir).join("eddsa.pem")).expect("key");
    SigningKey::from_pkcs8_pem(&pem)
        .expect("key")
        .kid()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_published_before_it_signs_and_withdrawn_after_its_tokens_expire() {
    let mesh = TestMesh::start().await;
    let Some(etcd) = EtcdCluster::start(1, None).await else {
        return;
    };
    let mut store = etcd.store_config("/mesh-b/");
    store.publish_lead_seconds = 90;
    let (listener, addr) = ephemeral().await;
    let replica = start_replica(&mesh, listener, "keys-new", store, "new");
    let kid = kid_in(&mesh, "keys-new");

    // Published at once, but not signing: NOT_SERVING and mints refused.
    let start = Instant::now();
    while client(&mesh, addr, None)
        .get_jwks(GetJwksRequest {})
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replica never served its key set"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kids_at(&mesh, addr).await, vec![kid.clone()]);
    mesh.wait_health(addr, ServingStatus::NotServing).await;
    let refused = mint_at(&mesh, addr).await.expect_err("no key may sign yet");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("KEY_NOT_YET_PUBLISHED"));

    // Once published for the lead (longer than verifiers' refresh), it signs.
    mesh.clock.advance(91);
    mesh.wait_serving(addr).await;
    let token = mint_at(&mesh, addr).await.expect("mint after the lead");
    assert_eq!(decode_header(&token)["kid"], kid.as_str());

    // A rotation: the next key is published first, signs after the overlap
    // and the lead, and the old one is withdrawn once its tokens expired.
    let now = mesh.clock.now();
    let rotation = token_service::keys::rotate(
        &mesh.state.dir().join("keys-new"),
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::EdDSA,
        100,
        3600,
        now,
    )
    .expect("rotate");
    let start = Instant::now();
    while !kids_at(&mesh, addr).await.contains(&rotation.next_kid) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "next key never published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_old = mint_at(&mesh, addr).await.expect("mint during the overlap");
    assert_eq!(decode_header(&still_old)["kid"], kid.as_str());
    mesh.clock.advance(100);
    let rotated = mint_at(&mesh, addr).await.expect("mint after the overlap");
    assert_eq!(decode_header(&rotated)["kid"], rotation.next_kid.as_str());
    assert!(
        kids_at(&mesh, addr).await.contains(&kid),
        "old key published while its tokens live"
    );
    let (_, retire_at) = rotation.retiring[0];
    mesh.clock
        .advance(i64::try_from(retire_at - mesh.clock.now()).expect("seconds") + 1);
    let start = Instant::now();
    while kids_at(&mesh, addr).await != vec![rotation.next_kid.clone()] {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "retired key never withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replica.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_stops_minting_keeps_verification_and_catches_up() {
    let mut mesh = TestMesh::start().await;
    let Some(mut etcd) = EtcdCluster::start(1, None).await else {
        return;
    };
    let mut store = etcd.store_config("/mesh-c/");
    store.session_ttl_seconds = 3;
    let addr = mesh.addrs.token_service;
    let replica = take_over(&mut mesh, store, "only").await;
    mesh.wait_serving(addr).await;
    let token = mint_at(&mesh, addr).await.expect("mint");
    let start = Instant::now();
    while let Err(status) = mesh
        .inventory_client()
        .get_stock(bearer(get_stock(), &token))
        .await
    {
        assert!(start.elapsed() < Duration::from_secs(20), "{status:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // etcd is gone (no quorum at all): once the session lapses the replica
    // says so, refuses what it cannot know is current, and changes nothing.
    etcd.kill(0);
    let cut = Instant::now();
    mesh.wait_health(addr, ServingStatus::NotServing).await;
    eprintln!(
        "replica NOT_SERVING {:?} after etcd was lost",
        cut.elapsed()
    );
    let refused = mint_at(&mesh, addr).await.expect_err("cut off");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(reason(&refused).as_deref(), Some("REPLICA_CUT_OFF"));
    assert!(
        refused.message().contains("cut off from etcd"),
        "{refused:?}"
    );
    let jwks = client(&mesh, addr, None).get_jwks(GetJwksRequest {}).await;
    assert_eq!(
        jwks.map(drop).expect_err("cut off").code(),
        Code::Unavailable
    );
    let jti = decode_claims(&token).jti;
    let not_revoked = revoke_at(&mesh, addr, &jti)
        .await
        .expect_err("nothing written");
    assert_eq!(not_revoked.code(), Code::Unavailable, "{not_revoked:?}");
    assert_eq!(reason(&not_revoked).as_deref(), Some("STORE_UNAVAILABLE"));
    // Verification never needed etcd or the token service.
    let mut failed = 0;
    for _ in 0..50 {
        failed += usize::from(
            mesh.inventory_client()
                .get_stock(bearer(get_stock(), &token))
                .await
                .is_err(),
        );
    }
    assert_eq!(failed, 0, "verified calls failed while etcd was down");

    // etcd is back: the replica serves again and what it writes is enforced.
    etcd.restart(0);
    let back = Instant::now();
    mesh.wait_serving(addr).await;
    eprintln!(
        "replica SERVING again {:?} after etcd returned",
        back.elapsed()
    );
    mint_at(&mesh, addr).await.expect("mint after recovery");
    revoke_at(&mesh, addr, &jti)
        .await
        .expect("revoke after recovery");
    refused_within(&mesh, &token, Duration::from_secs(20))
        .await
        .expect("revocation enforced after recovery");
    replica.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_registered_through_one_replica_is_in_force_on_every_replica() {
    let mesh = TestMesh::start().await;
    let Some(etcd) = EtcdCluster::start(1, None).await else {
        return;
    };
    let store = etcd.store_config("/mesh-d/");
    let ((a, a_addr), (b, b_addr)) = two_replicas(&mesh, store).await;
    let admin = |addr| WorkloadAdminClient::new(mesh.channel_as(addr, Some(OPERATOR_CLIENT)));
    let secret = token_service::credentials::generate_secret();
    let billing = |id: &str, audience: &str, scope: &str| Workload {
        id: id.into(),
        spiffe_id: format!("spiffe://authmesh.local/{id}"),
        secret_hash: token_service::credentials::hash_secret(&secret).expect("hash"),
        audiences: [(
            audience.to_owned(),
            ScopeList {
                scopes: vec![scope.into()],
            },
        )]
        .into(),
        ..Workload::default()
    };
    let mint_as_billing = |addr| {
        let secret = secret.clone();
        let mesh = &mesh;
        async move {
            let mut request = Request::new(IssueTokenRequest {
                audience: "inventory".into(),
                scopes: Vec::new(),
                ttl_seconds: None,
                one_time: false,
            });
            let basic = ClientCredentials::new("billing", secret)
                .basic_authorization()
                .expect("basic");
            request.metadata_mut().insert("authorization", basic);
            client(mesh, addr, None).issue_token(request).await
        }
    };
    assert_eq!(
        mint_as_billing(b_addr).await.expect_err("not yet").code(),
        Code::Unauthenticated
    );

    // Registered through A, it mints at B within a second.
    admin(a_addr)
        .add_workload(AddWorkloadRequest {
            workload: Some(billing("billing", "inventory", "inventory.read")),
        })
        .await
        .expect("registered");
    let start = Instant::now();
    while mint_as_billing(b_addr).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "never in force at B"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    eprintln!("workload registered through A minted at B after {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");

    // Bad registrations are refused with the reason and change nothing.
    let listed = |addr| async move {
        let mut ids: Vec<String> = admin(addr)
            .list_workloads(ListWorkloadsRequest {})
            .await
            .expect("list")
            .into_inner()
            .workloads
            .into_iter()
            .map(|w| format!("{}:{}", w.id, w.origin))
            .collect();
        ids.sort();
        ids
    };
    let before = listed(b_addr).await;
    assert!(
        before.contains(&"billing:registered".to_owned()),
        "{before:?}"
    );
    for (workload, code, why) in [
        (
            billing("billing", "inventory", "inventory.read"),
            Code::FailedPrecondition,
            "already registered",
        ),
        (
            billing("ledger", "payments", "pay"),
            Code::InvalidArgument,
            "unknown audience",
        ),
        (
            billing("ledger", "inventory", "inventory.delete"),
            Code::FailedPrecondition,
            "from no rule",
        ),
        (
            Workload {
                spiffe_id: "spiffe://authmesh.local/billing".into(),
                ..billing("ledger", "inventory", "inventory.read")
            },
            Code::FailedPrecondition,
            "already registered",
        ),
    ] {
        let refused = admin(b_addr)
            .add_workload(AddWorkloadRequest {
                workload: Some(workload),
            })
            .await
            .expect_err(why);
        assert_eq!(refused.code(), code, "{refused:?}");
        assert!(refused.message().contains(why), "{refused:?}");
    }
    let not_admin = WorkloadAdminClient::new(mesh.channel_as(a_addr, Some(DEMO_CLIENT)))
        .list_workloads(ListWorkloadsRequest {})
        .await
        .expect_err("not an admin");
    assert_eq!(not_admin.code(), Code::PermissionDenied);
    assert_eq!(listed(a_addr).await, before);
    assert_eq!(listed(b_addr).await, before);

    // Removed through B, it mints no more at A.
    admin(b_addr)
        .remove_workload(RemoveWorkloadRequest {
            id: "billing".into(),
        })
        .await
        .expect("removed");
    let start = Instant::now();
    while mint_as_billing(a_addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "still in force at A"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.stop().await.expect("A stops");
    b.stop().await.expect("B stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_fail_over_to_another_replica_when_one_is_lost() {
    let mesh = TestMesh::start().await;
    let Some(etcd) = EtcdCluster::start(1, None).await else {
        return;
    };
    let store = etcd.store_config("/mesh-e/");
    let ((a, a_addr), (b, b_addr)) = two_replicas(&mesh, store).await;
    // What a service's [token_service] section says: A, then B.
    let (cert, key) = mesh.state.workload_files(DEMO_CLIENT);
    let upstream = UpstreamConfig {
        url: format!("https://localhost:{}", a_addr.port()),
        failover_urls: vec![format!("https://localhost:{}", b_addr.port())],
        ca: Some(mesh.ca_path()),
        cert: Some(cert),
        key: Some(key),
    };
    let channel =
        service_runtime::upstream_channel(&upstream, std::path::Path::new("/")).expect("channel");
    let mut tokens = TokenServiceClient::new(channel);
    let mint = IssueTokenRequest {
        audience: "inventory".into(),
        scopes: vec!["inventory.read".into()],
        ttl_seconds: None,
        one_time: false,
    };
    let first = tokens
        .issue_token(mint.clone())
        .await
        .expect("mint")
        .into_inner();
    assert_eq!(
        decode_header(&first.token)["kid"],
        kid_in(&mesh, "keys-a").as_str(),
        "A answers while it is up"
    );

    // A is lost: the calls in flight on its connection fail once, the next
    // connection goes to B, and keys, tokens and revocations keep coming.
    a.stop().await.expect("A stops");
    let (mut made, mut failed) = (0, 0);
    let mut kid = String::new();
    for _ in 0..20 {
        made += 1;
        match tokens.issue_token(mint.clone()).await {
            Ok(minted) => {
                kid = decode_header(&minted.into_inner().token)["kid"]
                    .as_str()
                    .expect("kid")
                    .to_owned();
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                failed += 1;
            }
        }
    }
    eprintln!("after losing replica A: {made} mints, {failed} failed");
    assert!(
        failed <= 1,
        "{failed} of {made} mints failed after the failover"
    );
    assert_eq!(kid, kid_in(&mesh, "keys-b"), "B answers");
    assert!(tokens.get_jwks(GetJwksRequest {}).await.is_ok());
    let mut watch = tokens
        .watch_revocations(WatchRevocationsRequest {})
        .await
        .expect("watch from B")
        .into_inner();
    assert!(watch.message().await.expect("snapshot").is_some());
    b.stop().await.expect("B stops");
}

/// A mint by certificate (no argon2) at `tokens`, then a verified call with the token.
async fn mint_and_call(
    mesh: &TestMesh,
    tokens: &mut TokenServiceClient<Channel>,
) -> (Result<(), tonic::Status>, Result<(), tonic::Status>) {
    let minted = tokens
        .issue_token(IssueTokenRequest {
            audience: "inventory".into(),
            scopes: vec!["inventory.read".into()],
            ttl_seconds: None,
            one_time: false,
        })
        .await;
    let token = match minted {
        Ok(minted) => minted.into_inner().token,
        Err(status) => return (Err(status), Ok(())),
    };
    let called = mesh
        .inventory_client()
        .get_stock(bearer(get_stock(), &token))
        .await
        .map(drop);
    (Ok(()), called)
}

/// Steady load: `rounds` mints, each followed by a verified call, every
/// 20 ms, round robin over `clients`; (made, mints failed, calls failed).
async fn load(
    mesh: &TestMesh,
    clients: &mut [TokenServiceClient<Channel>],
    rounds: usize,
) -> (usize, usize, usize) {
    let (mut made, mut mints_failed, mut calls_failed) = (0, 0, 0);
    for round in 0..rounds {
        let count = clients.len();
        let (minted, called) = mint_and_call(mesh, &mut clients[round % count]).await;
        made += 1;
        mints_failed += usize::from(minted.is_err());
        calls_failed += usize::from(minted.is_ok() && called.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (made, mints_failed, calls_failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_etcd_member_and_replica_lost_under_steady_load() {
    let mut mesh = TestMesh::start().await;
    let Some(mut etcd) = EtcdCluster::start(3, Some(&mesh.state.dir().join("tls"))).await else {
        return;
    };
    let store = etcd.store_config("/drill/");
    // Three replicas; inventory streams from the first (the mesh's address).
    let (mut replicas, addrs) = three_replicas(&mut mesh, &store).await;
    for addr in &addrs {
        mesh.wait_serving(*addr).await;
    }
    // Orders-style clients: each starts at one replica and fails over to the others.
    let (cert, key) = mesh.state.workload_files(DEMO_CLIENT);
    let mut clients: Vec<TokenServiceClient<Channel>> = (0..3)
        .map(|i| {
            let urls: Vec<String> = (0..3)
                .map(|k| format!("https://localhost:{}", addrs[(i + k) % 3].port()))
                .collect();
            let upstream = UpstreamConfig {
                url: urls[0].clone(),
                failover_urls: urls[1..].to_vec(),
                ca: Some(mesh.ca_path()),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            };
            TokenServiceClient::new(
                service_runtime::upstream_channel(&upstream, std::path::Path::new("/"))
                    .expect("channel"),
            )
        })
        .collect();
    // Warm-up (not counted): inventory learns every replica's key.
    for client in &mut clients {
        let start = Instant::now();
        while mint_and_call(&mesh, client).await.1.is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "warm-up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 1. One etcd member killed, then restarted, under load.
    let (a, b, c) = load(&mesh, &mut clients, 25).await;
    etcd.kill(0);
    let killed = Instant::now();
    let (d, e, f) = load(&mesh, &mut clients, 75).await;
    etcd.restart(0);
    let (g, h, i) = load(&mesh, &mut clients, 50).await;
    let (made, mints_failed, calls_failed) = (a + d + g, b + e + h, c + f + i);
    eprintln!(
        "drill etcd member lost: {made} mints and calls, {mints_failed} mints failed, {calls_failed} calls failed; member down {:?}",
        killed.elapsed()
    );
    assert_eq!((mints_failed, calls_failed), (0, 0));
    // Writes go through again once it is back (and went through without it).
    etcd.wait_writable().await;
    let token = mint_at(&mesh, addrs[1]).await.expect("mint");
    revoke_at(&mesh, addrs[2], &decode_claims(&token).jti)
        .await
        .expect("revoke after the drill");

    // 2. One replica killed under load (its task aborted: connections
    // drop, nothing drains): verified calls never fail; its
    // clients' mints move to another replica.
    replicas.remove(2).kill().await;
    let (made, mints_failed, calls_failed) = load(&mesh, &mut clients, 60).await;
    eprintln!(
        "drill replica lost: {made} mints and calls, {mints_failed} mints failed, {calls_failed} calls failed"
    );
    assert_eq!(calls_failed, 0, "verified calls failed");
    assert!(
        mints_failed <= 1,
        "mints did not fail over: {mints_failed} failed"
    );
    let after = clients[2]
        .issue_token(IssueTokenRequest {
            audience: "inventory".into(),
            scopes: Vec::new(),
            ttl_seconds: None,
            one_time: false,
        })
        .await
        .expect("mint after the loss")
        .into_inner()
        .token;
    assert_ne!(
        decode_header(&after)["kid"],
        kid_in(&mesh, "keys-2").as_str(),
        "the lost replica still answered"
    );
    for replica in replicas {
        replica.stop().await.expect("stops");
    }
}

/// Two inventory replicas that use one-time tokens up through the token
/// service at the mesh's address; `presentations` concurrent calls with one
/// one-time token, split between them; how many were accepted.
async fn one_time_across_two_inventories(mesh: &TestMesh, presentations: usize) -> usize {
    let mut config = mesh.state.load_inventory().expect("inventory config");
    config.config.auth.one_time_via_token_service = true;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (listener, addr) = ephemeral().await;
        let config = Loaded {
            config: config.config.clone(),
            dir: config.dir.clone(),
        };
        let (server, _) = mesh::start_inventory_with(config, listener, mesh.shared_clock())
            .expect("inventory replica");
        mesh.wait_serving(addr).await;
        replicas.push((server, InventoryClient::new(mesh.channel(addr))));
    }
    // Normal tokens never leave the call path, on either replica.
    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    for (_, client) in &mut replicas {
        for _ in 0..5 {
            client
                .get_stock(bearer(get_stock(), &token))
                .await
                .expect("a normal token is reused freely");
        }
    }
    let one_time = mesh
        .mint_one_time("inventory", &["inventory.read"], 60)
        .await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..presentations {
        let mut client = replicas[i % 2].1.clone();
        let token = one_time.clone();
        calls.spawn(async move { client.get_stock(bearer(get_stock(), &token)).await });
    }
    let mut accepted = 0;
    while let Some(outcome) = calls.join_next().await {
        match outcome.expect("call task") {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert_eq!(
                    reason(&status).as_deref(),
                    Some("TOKEN_REPLAYED"),
                    "{status:?}"
                );
            }
        }
    }
    for (server, _) in replicas {
        server.stop().await.expect("inventory stops");
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_token_is_accepted_once_by_two_inventory_replicas_through_etcd() {
    let mut mesh = TestMesh::start().await;
    let Some(etcd) = EtcdCluster::start(1, None).await else {
        return;
    };
    let store = etcd.store_config("/mesh-f/");
    let addr = mesh.addrs.token_service;
    let replica = take_over(&mut mesh, store, "one").await;
    mesh.wait_serving(addr).await;
    let accepted = one_time_across_two_inventories(&mesh, 10).await;
    assert_eq!(
        accepted, 1,
        "a one-time token was accepted {accepted} times"
    );
    // One create-if-absent in etcd per one-time token, none for the others.
    let (used, _) = etcd
        .client()
        .range_prefix("/mesh-f/one-time/")
        .await
        .expect("read");
    assert_eq!(used.len(), 1);
    replica.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_token_is_accepted_once_by_two_inventory_replicas_through_one_token_service() {
    let mesh = TestMesh::start().await;
    let accepted = one_time_across_two_inventories(&mesh, 10).await;
    assert_eq!(
        accepted, 1,
        "a one-time token was accepted {accepted} times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_keys_rotated_on_every_replica_then_quorum_lost_under_steady_load() {
    let mut mesh = TestMesh::start().await;
    let Some(mut etcd) = EtcdCluster::start(3, None).await else {
        return;
    };
    let mut store = etcd.store_config("/drill-2/");
    // Longer than the verifier's key refresh below (1 s): publish before sign.
    store.publish_lead_seconds = 3;
    store.session_ttl_seconds = 3;
    let (replicas, addrs) = three_replicas(&mut mesh, &store).await;
    // The first keys wait out the lead too.
    mesh.clock.advance(4);
    for addr in &addrs {
        mesh.wait_serving(*addr).await;
    }
    // An inventory that refreshes its keys every second, from r0.
    let mut config = mesh.state.load_inventory().expect("inventory config");
    config.config.auth.key_refresh_seconds = 1;
    let (listener, inventory_addr) = ephemeral().await;
    let (inventory, _) =
        mesh::start_inventory_with(config, listener, mesh.shared_clock()).expect("inventory");
    mesh.wait_serving(inventory_addr).await;
    let mut inventory_client = InventoryClient::new(mesh.channel(inventory_addr));
    let mut tokens: Vec<TokenServiceClient<Channel>> = addrs
        .iter()
        .map(|addr| client(&mesh, *addr, Some(DEMO_CLIENT)))
        .collect();
    let request = IssueTokenRequest {
        audience: "inventory".into(),
        scopes: vec!["inventory.read".into()],
        ttl_seconds: None,
        one_time: false,
    };

    // 1. Every replica rotates its key under load: each next key is
    // published, fetched by the verifier, and only then signs.
    let rotated_kids: Vec<String> = (0..3)
        .map(|i| {
            let dir = if i == 0 {
                "keys".to_owned()
            } else {
                format!("keys-{i}")
            };
            token_service::keys::rotate(
                &mesh.state.dir().join(dir),
                SigningAlgorithm::EdDSA,
                SigningAlgorithm::EdDSA,
                1,
                3600,
                mesh.clock.now(),
            )
            .expect("rotate")
            .next_kid
        })
        .collect();
    let (mut made, mut mints_failed, mut calls_failed) = (0, 0, 0);
    let mut signed_by = std::collections::BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        let i = made % 3;
        made += 1;
        match tokens[i].issue_token(request.clone()).await {
            Ok(minted) => {
                let token = minted.into_inner().token;
                signed_by.insert(
                    decode_header(&token)["kid"]
                        .as_str()
                        .expect("kid")
                        .to_owned(),
                );
                let called = inventory_client
                    .get_stock(bearer(get_stock(), &token))
                    .await;
                calls_failed += usize::from(called.is_err());
            }
            Err(_) => mints_failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "drill rotation on every replica: {made} mints, {mints_failed} failed, {calls_failed} verified calls failed; kids seen {}",
        signed_by.len()
    );
    assert_eq!((mints_failed, calls_failed), (0, 0));
    for kid in &rotated_kids {
        assert!(
            signed_by.contains(kid),
            "replica's next key never signed: {kid}"
        );
    }

    // 2. Quorum lost: verified calls keep working; minting stops with
    // UNAVAILABLE once sessions lapse; a revocation writes nothing.
    let held = tokens[0]
        .issue_token(request.clone())
        .await
        .expect("mint")
        .into_inner()
        .token;
    etcd.kill(1);
    etcd.kill(2);
    let lost = Instant::now();
    let (mut calls, mut calls_failed, mut refused) = (0, 0, 0);
    while lost.elapsed() < Duration::from_secs(6) {
        calls += 1;
        calls_failed += usize::from(
            inventory_client
                .get_stock(bearer(get_stock(), &held))
                .await
                .is_err(),
        );
        if let Err(status) = tokens[calls % 3].issue_token(request.clone()).await {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jti = decode_claims(&held).jti;
    let not_revoked = revoke_at(&mesh, addrs[1], &jti)
        .await
        .expect_err("no quorum");
    assert_eq!(not_revoked.code(), Code::Unavailable, "{not_revoked:?}");
    eprintln!(
        "drill quorum lost: {calls} verified calls, {calls_failed} failed; {refused} mints refused UNAVAILABLE"
    );
    assert_eq!(calls_failed, 0, "verified calls failed without quorum");
    assert!(
        refused > 0,
        "minting went on without knowing its state was current"
    );
    assert!(
        inventory_client
            .get_stock(bearer(get_stock(), &held))
            .await
            .is_ok(),
        "nothing was half-revoked"
    );

    // 3. Quorum back: every replica serves again and the revocation goes through.
    etcd.restart(1);
    etcd.restart(2);
    let back = Instant::now();
    for addr in &addrs {
        mesh.wait_serving(*addr).await;
    }
    eprintln!(
        "drill quorum back: every replica SERVING {:?} after the members returned",
        back.elapsed()
    );
    revoke_at(&mesh, addrs[2], &jti)
        .await
        .expect("revoke after recovery");
    let start = Instant::now();
    while inventory_client
        .get_stock(bearer(get_stock(), &held))
        .await
        .is_ok()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "revocation not enforced after recovery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inventory.stop().await.expect("inventory stops");
    for replica in replicas {
        replica.stop().await.expect("stops");
    }
}
