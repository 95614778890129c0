//! The compose cluster end to end, on the machine's real Docker engine:
//! builds the images with the documented command (`compose/build-images.sh`),
//! starts `docker-compose.yml` (three etcd members, three token service
//! replicas, orders, two inventory replicas) under a project of its own,
//! runs the grpcurl walkthrough against the published ports, then each
//! fault drill under steady orders -> inventory traffic, asserting the
//! stated outcome and no unexpected failure. Containers, networks and volumes are removed even
//! when a step fails.
//!
//! Skipped, with the reason printed, only where no Docker engine or Compose
//! answers; with `AUTHMESH_TEST_REQUIRE_TOOLS=1` (CI) it never skips.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use authmesh::token_cli::{self, TokenServiceEndpoint};
use authmesh_client::ClientCredentials;
use authmesh_proto::authmesh::v1::{
    AddWorkloadRequest, RemoveWorkloadRequest, ScopeList, Workload,
    workload_admin_client::WorkloadAdminClient,
};
use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
use authmesh_proto::demo::orders::v1::{PlaceOrderRequest, orders_client::OrdersClient};
use base64::{Engine, engine::general_purpose::STANDARD};
use service_runtime::UpstreamConfig;
use tonic::{Code, transport::Channel};

/// Lifetime of orders' own tokens in the drills: short, so "until they
/// expire" fits in a test; orders refreshes at 80% of it.
const ORDERS_TOKEN_TTL: u64 = 30;
/// How often verifiers refresh keys in the drills (15 s by default).
const KEY_REFRESH_SECONDS: u64 = 2;
/// How long a replica's new key is published before it signs (20 s by
/// default): longer than [`KEY_REFRESH_SECONDS`].
const PUBLISH_LEAD_SECONDS: u64 = 4;
/// Where each token service replica is published on the host.
const TOKEN_SERVICE_URLS: [&str; 3] = [
    "https://localhost:50051",
    "https://localhost:50054",
    "https://localhost:50056",
];
const TOKEN_SERVICES: [&str; 3] = ["token-service-1", "token-service-2", "token-service-3"];
const INVENTORIES: [&str; 2] = ["inventory-1", "inventory-2"];
const ETCD_MEMBERS: [&str; 3] = ["etcd-1", "etcd-2", "etcd-3"];
/// Pause between two calls of the steady traffic (about 20 calls a second).
const CALL_INTERVAL: Duration = Duration::from_millis(50);
/// The most one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on any traffic run, whatever a drill does.
const MAX_TRAFFIC: Duration = Duration::from_secs(180);

/// The `docker compose` (v2 plugin) or `docker-compose` (v1) command line.
fn compose_tool() -> Option<Vec<String>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !works("docker", &["info", "--format", "{{.ServerVersion}}"]) {
        return skip("no Docker engine answers `docker info`");
    }
    if works("docker", &["compose", "version"]) {
        return Some(vec!["docker".into(), "compose".into()]);
    }
    if works("docker-compose", &["version"]) {
        return Some(vec!["docker-compose".into()]);
    }
    skip("neither `docker compose` nor `docker-compose` is installed")
}

fn skip<T>(reason: &str) -> Option<T> {
    let required = std::env::var("AUTHMESH_TEST_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    assert!(!required, "{reason}, and AUTHMESH_TEST_REQUIRE_TOOLS=1");
    eprintln!("SKIPPED: {reason}");
    None
}

/// Output of a finished command.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Output {
    fn from(output: std::process::Output) -> Self {
        Self {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

fn run(command: &mut Command) -> Output {
    command.output().expect("command starts").into()
}

/// [`run`] off the async workers, which keep the traffic going meanwhile.
async fn run_blocking(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || run(&mut command))
        .await
        .expect("join")
}

/// One compose project: every command names it, and dropping it removes
/// its containers, networks and volumes.
struct Cluster {
    tool: Vec<String>,
    project: String,
    root: PathBuf,
    kit: tempfile::TempDir,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.tool[0]);
        command
            .args(&self.tool[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--file")
            .arg(self.root.join("docker-compose.yml"))
            .args(args)
            .current_dir(&self.root)
            .env("AUTHMESH_COMPOSE_CLIENT_KIT", self.kit.path())
            .env(
                "AUTHMESH_COMPOSE_TOKEN_TTL_SECONDS",
                ORDERS_TOKEN_TTL.to_string(),
            )
            .env(
                "AUTHMESH_COMPOSE_KEY_REFRESH_SECONDS",
                KEY_REFRESH_SECONDS.to_string(),
            )
            .env(
                "AUTHMESH_COMPOSE_PUBLISH_LEAD_SECONDS",
                PUBLISH_LEAD_SECONDS.to_string(),
            );
        command
    }

    /// `authmesh --state-dir /state ARGS` inside `service`'s container, as its user.
    fn authmesh_in(&self, service: &str, args: &[&str]) -> Command {
        let mut exec = vec!["exec", "-T", service, "authmesh", "--state-dir", "/state"];
        exec.extend_from_slice(args);
        self.command(&exec)
    }

    /// Runs a compose command that must succeed.
    async fn compose(&self, args: &[&str]) -> String {
        let what = args.join(" ");
        let out = run_blocking(self.command(args)).await;
        assert!(out.success, "compose {what} failed:\n{}", out.stderr);
        out.stdout
    }

    /// The container id of `service`.
    async fn container(&self, service: &str) -> String {
        let id = self.compose(&["ps", "-q", service]).await;
        let id = id.trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// `docker inspect --format` of a service's container.
    async fn inspect(&self, service: &str, format: &str) -> String {
        let id = self.container(service).await;
        let mut inspect = Command::new("docker");
        inspect.args(["inspect", "--format", format, &id]);
        let out = run_blocking(inspect).await;
        assert!(out.success, "docker inspect {service}: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    /// Waits until the health check of each of `services` passes.
    async fn wait_healthy(&self, services: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        for service in services {
            loop {
                let health = self.inspect(service, "{{.State.Health.Status}}").await;
                if health == "healthy" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{service} is still {health:?} after 120 s"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// Runs `docker` itself (network changes) and requires success.
    async fn docker(&self, args: &[&str]) {
        let mut docker = Command::new("docker");
        docker.args(args);
        let out = run_blocking(docker).await;
        assert!(out.success, "docker failed:\n{}", out.stderr);
    }

    /// The full name of one of the compose file's networks.
    fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    fn kit(&self, file: &str) -> PathBuf {
        self.kit.path().join(file)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = run(&mut self.command(&["logs", "--no-color", "--tail", "60"]));
            eprintln!(
                "--- cluster logs (last lines per service) ---\n{}",
                logs.stdout
            );
        }
        let down =
            run(&mut self.command(&["down", "--volumes", "--remove-orphans", "--timeout", "5"]));
        if !down.success {
            eprintln!("compose down failed: {}", down.stderr);
        }
    }
}

/// The outcome of one call of the steady traffic.
#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    code: Code,
}

/// Steady PlaceOrder traffic through orders (and so orders -> inventory),
/// one call every [`CALL_INTERVAL`], until finished or [`MAX_TRAFFIC`].
struct Traffic {
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(orders: &OrdersClient<Channel>, token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let bearer: tonic::metadata::AsciiMetadataValue =
            format!("Bearer {token}").parse().expect("metadata");
        let task = tokio::spawn({
            let (stop, calls, orders) = (stop.clone(), calls.clone(), orders.clone());
            async move {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_TRAFFIC {
                    let code = place_order(&orders, &bearer).await;
                    calls.lock().expect("log").push(Call {
                        at: Instant::now(),
                        code,
                    });
                    tokio::time::sleep(CALL_INTERVAL).await;
                }
            }
        });
        Self { stop, calls, task }
    }

    /// Waits until the calls made so far satisfy `done`, at most `within`.
    async fn wait_until(&self, what: &str, within: Duration, done: impl Fn(&[Call]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if done(&self.calls.lock().expect("log")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` calls have succeeded, whatever the machine's speed.
    async fn wait_for_successes(&self, n: usize) {
        self.wait_until("steady traffic", Duration::from_secs(60), |calls| {
            calls.iter().filter(|c| c.code == Code::Ok).count() >= n
        })
        .await;
    }

    /// Stops the traffic and returns every call's outcome.
    async fn finish(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("traffic task");
        std::mem::take(&mut *self.calls.lock().expect("log"))
    }
}

/// One PlaceOrder of one unit, bounded by [`CALL_TIMEOUT`].
async fn place_order(
    orders: &OrdersClient<Channel>,
    bearer: &tonic::metadata::AsciiMetadataValue,
) -> Code {
    let mut request = tonic::Request::new(PlaceOrderRequest {
        sku: "sku-1".into(),
        quantity: 1,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request.set_timeout(CALL_TIMEOUT);
    let mut client = orders.clone();
    match tokio::time::timeout(CALL_TIMEOUT, client.place_order(request)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => Code::DeadlineExceeded,
    }
}

fn failures(calls: &[Call]) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.code != Code::Ok)
        .copied()
        .collect()
}

fn codes(calls: &[Call]) -> Vec<Code> {
    calls.iter().map(|c| c.code).collect()
}

fn assert_no_failures(drill: &str, calls: &[Call]) {
    eprintln!("{drill}: {} calls", calls.len());
    let failed = failures(calls);
    assert!(
        failed.is_empty(),
        "{drill}: {} of {} calls failed: {:?}",
        failed.len(),
        calls.len(),
        codes(&failed)
    );
    assert!(calls.len() > 20, "{drill}: only {} calls made", calls.len());
}

/// Every failure among `calls` is UNAVAILABLE (try again later), never an
/// auth failure or an internal error.
fn assert_only_unavailable(drill: &str, calls: &[Call]) {
    let unexpected: Vec<Code> = codes(&failures(calls))
        .into_iter()
        .filter(|code| *code != Code::Unavailable)
        .collect();
    assert!(
        unexpected.is_empty(),
        "{drill}: failures other than UNAVAILABLE: {unexpected:?}"
    );
}

/// How long after `since` the first call succeeded; every call from that
/// one on succeeded too.
fn assert_recovered(drill: &str, calls: &[Call], since: Instant) -> Duration {
    let recovered = calls
        .iter()
        .position(|c| c.at > since && c.code == Code::Ok)
        .unwrap_or_else(|| panic!("{drill}: no success after the restart"));
    let after = failures(&calls[recovered..]);
    assert!(
        after.is_empty(),
        "{drill}: calls failed after recovery: {:?}",
        codes(&after)
    );
    calls[recovered].at - since
}

/// Starts `services` again and waits until they are healthy and a call has
/// succeeded since, then a little longer; returns when they were healthy,
/// and every call of the traffic.
async fn start_and_recover(
    cluster: &Cluster,
    traffic: Traffic,
    services: &[&str],
) -> (Instant, Vec<Call>) {
    let mut start = vec!["start"];
    start.extend_from_slice(services);
    cluster.compose(&start).await;
    cluster.wait_healthy(services).await;
    let healthy = Instant::now();
    traffic
        .wait_until(
            "orders succeeding again",
            Duration::from_secs(30),
            |calls| calls.iter().any(|c| c.at > healthy && c.code == Code::Ok),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    (healthy, traffic.finish().await)
}

/// grpcurl against a published port, with the client kit's CA and demo-cli certificate.
fn grpcurl(bin: &Path, cluster: &Cluster, port: u16, args: &[&str]) -> Output {
    authmesh_tests::grpcurl_with_kit(bin, cluster.kit.path(), port, args).into()
}

/// Where the traffic and the walkthrough reach the cluster from the host.
struct Host {
    endpoint: TokenServiceEndpoint,
    credentials: ClientCredentials,
    orders: OrdersClient<Channel>,
}

/// A channel from the host to a published port, as `client` of the kit.
fn channel_as(cluster: &Cluster, url: &str, client: &str) -> Channel {
    service_runtime::upstream_channel(
        &UpstreamConfig {
            url: url.into(),
            ca: Some(cluster.kit("tls/ca.pem")),
            cert: Some(cluster.kit(&format!("tls/{client}.pem"))),
            key: Some(cluster.kit(&format!("tls/{client}-key.pem"))),
            failover_urls: Vec::new(),
        },
        cluster.kit.path(),
    )
    .expect("channel")
}

impl Host {
    fn new(cluster: &Cluster) -> Self {
        let identity = (
            cluster.kit("tls/demo-cli.pem"),
            cluster.kit("tls/demo-cli-key.pem"),
        );
        let secret = std::fs::read_to_string(cluster.kit("clients/demo-cli.secret"))
            .expect("the client kit holds demo-cli's secret");
        let orders = channel_as(cluster, "https://localhost:50052", "demo-cli");
        Self {
            endpoint: TokenServiceEndpoint {
                url: "https://localhost:50051".into(),
                ca: cluster.kit("tls/ca.pem"),
                identity: Some(identity),
            },
            credentials: ClientCredentials::new("demo-cli", secret.trim()),
            orders: OrdersClient::new(orders),
        }
    }

    /// A token for orders from the token service replica published on `url`.
    async fn mint(&self, url: &str, ttl: i64) -> String {
        self.mint_with_ttl(url, ttl)
            .await
            .expect("mint a token for orders")
    }

    /// Minting at `url`, which may fail.
    async fn try_mint(&self, url: &str) -> Result<String, token_cli::TokenCliError> {
        self.mint_with_ttl(url, 60).await
    }

    async fn mint_with_ttl(&self, url: &str, ttl: i64) -> Result<String, token_cli::TokenCliError> {
        let endpoint = TokenServiceEndpoint {
            url: url.into(),
            ..self.endpoint.clone()
        };
        token_cli::mint(
            &endpoint,
            Some(&self.credentials),
            "orders",
            vec!["orders.write".into()],
            Some(ttl),
            false,
        )
        .await
        .map(|minted| minted.token)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_serves_and_survives_faults() {
    let Some(tool) = compose_tool() else {
        return;
    };
    let Some(grpcurl_bin) = authmesh_tests::grpcurl() else {
        return;
    };
    authmesh_tests::init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();

    // The documented command: static binaries, FROM scratch image.
    let build = {
        let script = root.join("compose/build-images.sh");
        run_blocking(Command::new(script)).await
    };
    assert!(
        build.success,
        "compose/build-images.sh failed:\n{}",
        build.stderr
    );

    let cluster = Cluster {
        tool,
        // One fixed name: a run killed before its clean-up (which would
        // still hold the fixed host ports) is removed by the next one.
        project: "authmesh-e2e".into(),
        root,
        kit: tempfile::tempdir().expect("kit dir"),
    };
    cluster
        .compose(&["down", "--volumes", "--remove-orphans", "--timeout", "5"])
        .await;
    cluster.compose(&["up", "-d"]).await;
    let every_server: Vec<&str> = ETCD_MEMBERS
        .iter()
        .chain(&TOKEN_SERVICES)
        .chain(&["orders"])
        .chain(&INVENTORIES)
        .copied()
        .collect();
    cluster.wait_healthy(&every_server).await;

    walkthrough(&grpcurl_bin, &cluster);
    servers_cannot_read_each_others_keys(&cluster).await;
    let host = Host::new(&cluster);
    registration_and_one_time_across_replicas(&cluster, &host).await;
    // The caller's own token outlives every drill; orders' tokens (30 s) do not.
    let token = host.mint(TOKEN_SERVICE_URLS[0], 3600).await;

    rotation_under_traffic(&cluster, &host, &token).await;
    one_replica_down(&cluster, &host, &token).await;
    etcd_member_killed(&cluster, &host, &token).await;
    inventory_cut_off_from_issuer(&cluster, &host, &token).await;
    one_inventory_killed(&cluster, &host, &token).await;
    inventory_killed(&cluster, &host, &token).await;
    all_replicas_down(&cluster, &host, &token).await;
}

/// The README's grpcurl walkthrough against the published ports.
fn walkthrough(bin: &Path, cluster: &Cluster) {
    let list = grpcurl(bin, cluster, 50053, &["list"]);
    assert!(list.success, "{}", list.stderr);
    assert!(
        list.stdout.contains("demo.inventory.v1.Inventory"),
        "{}",
        list.stdout
    );

    let health = grpcurl(bin, cluster, 50052, &["grpc.health.v1.Health/Check"]);
    assert!(health.success, "{}", health.stderr);
    let health: serde_json::Value = serde_json::from_str(&health.stdout).expect("json");
    assert_eq!(health["status"], "SERVING");

    let secret = std::fs::read_to_string(cluster.kit("clients/demo-cli.secret")).expect("secret");
    let basic = format!(
        "authorization: Basic {}",
        STANDARD.encode(format!("demo-cli:{}", secret.trim()))
    );
    let minted = grpcurl(
        bin,
        cluster,
        50051,
        &[
            "-H",
            &basic,
            "-d",
            r#"{"audience":"orders","scopes":["orders.write"]}"#,
            "authmesh.v1.TokenService/IssueToken",
        ],
    );
    assert!(minted.success, "{}", minted.stderr);
    let minted: serde_json::Value = serde_json::from_str(&minted.stdout).expect("json");
    let token = minted["token"].as_str().expect("token");
    let bearer = format!("authorization: Bearer {token}");

    let order = grpcurl(
        bin,
        cluster,
        50052,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"sku":"sku-1","quantity":2}"#,
            "demo.orders.v1.Orders/PlaceOrder",
        ],
    );
    assert!(order.success, "{}", order.stderr);
    assert!(order.stdout.contains("reservationId"), "{}", order.stdout);

    // No token, and a token for orders (audience-bound): both refused at inventory.
    for headers in [vec![], vec!["-H", bearer.as_str()]] {
        let args = [
            headers,
            vec![
                "-d",
                r#"{"sku":"sku-1"}"#,
                "demo.inventory.v1.Inventory/GetStock",
            ],
        ]
        .concat();
        let refused = grpcurl(bin, cluster, 50053, &args);
        assert!(!refused.success);
        assert!(
            refused.stderr.contains("Unauthenticated"),
            "{}",
            refused.stderr
        );
    }

    // Every replica serves the same key set: the union of the three
    // replicas' own keys, published through etcd.
    let jwks = |port| {
        let out = grpcurl(bin, cluster, port, &["authmesh.v1.TokenService/GetJwks"]);
        assert!(out.success, "{}", out.stderr);
        let jwks: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
        let mut keys: Vec<String> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|key| key.to_string())
            .collect();
        keys.sort();
        keys
    };
    let first = jwks(50051);
    assert_eq!(first.len(), 3, "one key per replica: {first:?}");
    assert_eq!(jwks(50054), first);
    assert_eq!(jwks(50056), first);
}

/// A workload registered through one replica mints at another within a
/// second and, removed through a third, mints nowhere; a one-time token
/// presented to both inventory replicas at once is accepted exactly once.
async fn registration_and_one_time_across_replicas(cluster: &Cluster, host: &Host) {
    let admin = |url: &str| WorkloadAdminClient::new(channel_as(cluster, url, "operator"));
    let secret = token_service::credentials::generate_secret();
    let billing = ClientCredentials::new("billing", secret.clone());
    let mint_as_billing = |url: &str| {
        let endpoint = TokenServiceEndpoint {
            url: url.into(),
            identity: None,
            ..host.endpoint.clone()
        };
        let billing = &billing;
        async move {
            token_cli::mint(
                &endpoint,
                Some(billing),
                "inventory",
                vec!["inventory.read".into()],
                Some(60),
                false,
            )
            .await
        }
    };
    admin(TOKEN_SERVICE_URLS[0])
        .add_workload(AddWorkloadRequest {
            workload: Some(Workload {
                id: "billing".into(),
                spiffe_id: "spiffe://authmesh.local/billing".into(),
                secret_hash: token_service::credentials::hash_secret(&secret).expect("hash"),
                audiences: [(
                    "inventory".to_owned(),
                    ScopeList {
                        scopes: vec!["inventory.read".into()],
                    },
                )]
                .into(),
                ..Workload::default()
            }),
        })
        .await
        .expect("registered through replica 1");
    let registered = Instant::now();
    while mint_as_billing(TOKEN_SERVICE_URLS[2]).await.is_err() {
        assert!(
            registered.elapsed() < Duration::from_secs(5),
            "never in force at replica 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = registered.elapsed();
    eprintln!("workload registered through replica 1 minted at replica 3 after {took:?}");
    assert!(took <= Duration::from_secs(1), "took {took:?}");
    admin(TOKEN_SERVICE_URLS[1])
        .remove_workload(RemoveWorkloadRequest {
            id: "billing".into(),
        })
        .await
        .expect("removed through replica 2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for url in TOKEN_SERVICE_URLS {
        assert!(
            mint_as_billing(url).await.is_err(),
            "{url} mints for a removed workload"
        );
    }

    // One one-time token, presented to both inventory replicas at once.
    let one_time = token_cli::mint(
        &host.endpoint,
        Some(&host.credentials),
        "inventory",
        vec!["inventory.read".into()],
        Some(60),
        true,
    )
    .await
    .expect("one-time token")
    .token;
    let bearer: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {one_time}").parse().expect("metadata");
    let present = |url: &'static str| {
        let mut inventory = InventoryClient::new(channel_as(cluster, url, "demo-cli"));
        let bearer = bearer.clone();
        async move {
            let mut request = tonic::Request::new(authmesh_tests::get_stock());
            request.metadata_mut().insert("authorization", bearer);
            inventory.get_stock(request).await.map(|_| ())
        }
    };
    let mut presentations = tokio::task::JoinSet::new();
    for url in ["https://localhost:50053", "https://localhost:50055"]
        .into_iter()
        .cycle()
        .take(6)
    {
        presentations.spawn(present(url));
    }
    let outcomes = presentations.join_all().await;
    let accepted = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let refused: Vec<Code> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().err().map(tonic::Status::code))
        .collect();
    assert_eq!(
        accepted, 1,
        "one-time token accepted {accepted} times: {refused:?}"
    );
    assert!(
        refused.iter().all(|code| *code == Code::Unauthenticated),
        "{refused:?}"
    );
}

/// Orders and inventory run as users that cannot read the CA key (so
/// cannot issue certificates), the token service's key or etcd's; the
/// token service's signing keys are not in the shared state at all.
async fn servers_cannot_read_each_others_keys(cluster: &Cluster) {
    for service in ["orders", "inventory-1"] {
        let issue =
            run_blocking(cluster.authmesh_in(service, &["certs", "issue", "--name", "intruder"]))
                .await;
        assert!(!issue.success, "{service} issued a certificate");
        assert!(
            issue.stderr.contains("ca-key.pem") && issue.stderr.contains("ermission denied"),
            "{service}: {}",
            issue.stderr
        );
        for key in ["token-service-key.pem", "etcd-key.pem"] {
            // The image has no `cat`: `policy check` reads the file it is given.
            let path = format!("/state/tls/{key}");
            let mut read_key = cluster.authmesh_in(
                service,
                &[
                    "policy",
                    "check",
                    &path,
                    "--service",
                    "demo.inventory.v1.Inventory",
                ],
            );
            read_key.env_remove("RUST_LOG");
            let read_key = run_blocking(read_key).await;
            assert!(
                read_key.stderr.contains("ermission denied"),
                "{service} read {key}: {}",
                read_key.stderr
            );
        }
    }
    // Each replica's signing key is on its own volume, never in the state.
    let listing = run_blocking(cluster.authmesh_in(
        "token-service-1",
        &["policy", "check", "/state/issuer/keys", "--service", "x"],
    ))
    .await;
    assert!(
        listing.stderr.contains("o such file"),
        "a signing key directory in the shared state: {}",
        listing.stderr
    );
}

/// `authmesh keys rotate` in each replica's own key directory, under
/// traffic: each replica publishes its next key through etcd, signs with
/// it after the overlap, and no call fails.
async fn rotation_under_traffic(cluster: &Cluster, host: &Host, token: &str) {
    let traffic = Traffic::start(&host.orders, token);
    let overlap = KEY_REFRESH_SECONDS * 3;
    let mut next_kids = Vec::new();
    for replica in TOKEN_SERVICES {
        let report = run_blocking(cluster.authmesh_in(
            replica,
            &["keys", "rotate", "--overlap-seconds", &overlap.to_string()],
        ))
        .await;
        assert!(
            report.success,
            "keys rotate in {replica}: {}",
            report.stderr
        );
        let report: serde_json::Value =
            serde_json::from_str(&report.stdout).expect("rotation report");
        next_kids.push(report["next_kid"].as_str().expect("next_kid").to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(overlap + PUBLISH_LEAD_SECONDS + 15);
    for (url, next_kid) in TOKEN_SERVICE_URLS.iter().zip(&next_kids) {
        // Each replica switches once the overlap is over (it polls the ring every second).
        let minted = loop {
            let minted = host.mint(url, 60).await;
            if authmesh_tests::decode_header(&minted)["kid"] == next_kid.as_str() {
                break minted;
            }
            assert!(
                Instant::now() < deadline,
                "{url} still signs with the old key {overlap} s after the rotation"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // Orders verifies a token signed by the new key.
        let bearer = format!("Bearer {minted}").parse().expect("metadata");
        assert_eq!(place_order(&host.orders, &bearer).await, Code::Ok);
    }
    // Long enough for orders to mint its next token for inventory with the new key.
    tokio::time::sleep(Duration::from_secs(ORDERS_TOKEN_TTL)).await;
    assert_no_failures("rotation", &traffic.finish().await);
}

/// One replica stopped for longer than orders' token lifetime, then
/// started again: orders mints from another, verifiers follow it, and no
/// call fails.
async fn one_replica_down(cluster: &Cluster, host: &Host, token: &str) {
    let traffic = Traffic::start(&host.orders, token);
    cluster.compose(&["stop", "token-service-1"]).await;
    tokio::time::sleep(Duration::from_secs(ORDERS_TOKEN_TTL + 5)).await;
    // The other replicas still mint for clients.
    for url in &TOKEN_SERVICE_URLS[1..] {
        host.mint(url, 60).await;
    }
    cluster.compose(&["start", "token-service-1"]).await;
    cluster.wait_healthy(&["token-service-1"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_no_failures("one replica down", &traffic.finish().await);
}

/// One etcd member killed and started again under steady traffic and
/// steady minting at every replica: the replicas' etcd client moves to
/// another member, the member rejoins with its data, and no call and no
/// mint fails.
async fn etcd_member_killed(cluster: &Cluster, host: &Host, token: &str) {
    let traffic = Traffic::start(&host.orders, token);
    traffic.wait_for_successes(10).await;
    let done = AtomicBool::new(false);
    let minting = async {
        let (mut made, mut failed) = (0usize, Vec::new());
        while !done.load(Ordering::Relaxed) {
            let url = TOKEN_SERVICE_URLS[made % TOKEN_SERVICE_URLS.len()];
            made += 1;
            if let Err(err) = host.try_mint(url).await {
                failed.push(format!("{url}: {err}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (made, failed)
    };
    let drill = async {
        cluster.compose(&["kill", "etcd-2"]).await;
        // Longer than a replica's etcd session (10 s): the replicas renew
        // through the members left, or they would stop serving.
        tokio::time::sleep(Duration::from_secs(12)).await;
        cluster.compose(&["start", "etcd-2"]).await;
        cluster.wait_healthy(&ETCD_MEMBERS).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        done.store(true, Ordering::Relaxed);
    };
    let ((made, failed), ()) = tokio::join!(minting, drill);
    let calls = traffic.finish().await;
    eprintln!(
        "etcd member killed: {made} mints, {} failed; {} calls, {} failed",
        failed.len(),
        calls.len(),
        failures(&calls).len()
    );
    assert!(failed.is_empty(), "mints failed: {failed:?}");
    assert!(made > 20, "only {made} mints made");
    assert_no_failures("etcd member killed", &calls);
}

/// Inventory disconnected from the issuer's network for longer than
/// orders' token lifetime: it verifies orders' next token with its cached keys.
async fn inventory_cut_off_from_issuer(cluster: &Cluster, host: &Host, token: &str) {
    let mut inventories = Vec::new();
    for service in INVENTORIES {
        inventories.push(cluster.container(service).await);
    }
    let issuer = cluster.network("issuer");
    // Inventory asking the token service for its health, from inside.
    let probe = || {
        cluster.authmesh_in(
            "inventory-1",
            &[
                "health",
                "--url",
                "https://token-service:50051",
                "--client-id",
                "inventory",
                "--timeout",
                "2",
            ],
        )
    };
    // The probe works while connected, so its failure below means the cut.
    let reachable = run_blocking(probe()).await;
    assert!(reachable.success, "{}", reachable.stderr);
    let traffic = Traffic::start(&host.orders, token);
    for inventory in &inventories {
        cluster
            .docker(&["network", "disconnect", &issuer, inventory])
            .await;
    }
    // Really cut off: the token service cannot be reached from inventory.
    let probe = run_blocking(probe()).await;
    assert!(!probe.success, "inventory still reaches the token service");
    tokio::time::sleep(Duration::from_secs(ORDERS_TOKEN_TTL + 5)).await;
    for inventory in &inventories {
        cluster
            .docker(&["network", "connect", &issuer, inventory])
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_no_failures("inventory cut off from the issuer", &traffic.finish().await);
}

/// One inventory replica killed and started again: orders' calls go on
/// through the other replica behind `inventory.mesh` (a call in flight
/// on the killed replica's connection may fail with UNAVAILABLE, nothing
/// else).
async fn one_inventory_killed(cluster: &Cluster, host: &Host, token: &str) {
    let traffic = Traffic::start(&host.orders, token);
    traffic.wait_for_successes(10).await;
    let killed = Instant::now();
    cluster.compose(&["kill", INVENTORIES[0]]).await;
    traffic
        .wait_until(
            "calls succeeding through the other replica",
            Duration::from_secs(20),
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.at > killed && c.code == Code::Ok)
                    .count()
                    >= 20
            },
        )
        .await;
    let (_, calls) = start_and_recover(cluster, traffic, &INVENTORIES[..1]).await;
    assert_only_unavailable("one inventory replica killed", &calls);
    eprintln!(
        "one inventory replica killed: {} calls, {} failed",
        calls.len(),
        failures(&calls).len()
    );
}

/// Both inventory replicas killed and started again: orders' calls fail
/// with UNAVAILABLE while they are down and succeed again after, with
/// orders never restarted.
async fn inventory_killed(cluster: &Cluster, host: &Host, token: &str) {
    let orders_started = cluster.inspect("orders", "{{.State.StartedAt}}").await;
    let traffic = Traffic::start(&host.orders, token);
    traffic.wait_for_successes(25).await;
    // Calls are logged when they end: one ending after this may have met
    // the kill, whenever `kill` itself returns.
    let killed = Instant::now();
    cluster
        .compose(&["kill", INVENTORIES[0], INVENTORIES[1]])
        .await;
    traffic
        .wait_until(
            "orders failing while inventory is down",
            Duration::from_secs(20),
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.at > killed && c.code != Code::Ok)
                    .count()
                    >= 5
            },
        )
        .await;
    let (started, calls) = start_and_recover(cluster, traffic, &INVENTORIES).await;

    let before: Vec<Call> = calls.iter().filter(|c| c.at < killed).copied().collect();
    assert_no_failures("before the kill", &before);
    let down: Vec<Call> = calls
        .iter()
        .filter(|c| c.at > killed && c.at < started)
        .copied()
        .collect();
    assert_only_unavailable("inventory killed", &down);
    let recovery = assert_recovered("inventory killed", &calls, started);
    eprintln!(
        "inventory killed: {} calls failed while it was down; first success {recovery:?} after it was healthy again",
        failures(&down).len(),
    );
    assert_eq!(
        cluster.inspect("orders", "{{.State.StartedAt}}").await,
        orders_started,
        "orders was restarted"
    );
}

/// Every token service replica stopped: calls go on with orders' cached
/// token and the verifiers' cached keys until that token expires, then
/// fail with UNAVAILABLE; with the replicas back, calls recover without
/// restarting orders or inventory.
async fn all_replicas_down(cluster: &Cluster, host: &Host, token: &str) {
    let started_at = |service: &'static str| cluster.inspect(service, "{{.State.StartedAt}}");
    let (orders_started, inventory_started) =
        (started_at("orders").await, started_at(INVENTORIES[0]).await);
    let traffic = Traffic::start(&host.orders, token);
    traffic.wait_for_successes(25).await;
    let stopped = Instant::now();
    let mut stop = vec!["stop"];
    stop.extend_from_slice(&TOKEN_SERVICES);
    cluster.compose(&stop).await;
    let gone = Instant::now();
    // Really gone: no replica mints.
    for url in TOKEN_SERVICE_URLS {
        assert!(host.try_mint(url).await.is_err(), "{url} still mints");
    }
    // Orders refreshes its token at 80% of its life, so the one it holds is
    // good for at least another 20% of it (6 s), less up to a second of
    // rounding `exp` to whole seconds; the check keeps one more in hand.
    let cached_for = Duration::from_secs(ORDERS_TOKEN_TTL / 5 - 2);
    traffic
        .wait_until(
            "UNAVAILABLE once orders' token expired",
            Duration::from_secs(ORDERS_TOKEN_TTL + 15),
            |calls| {
                calls
                    .iter()
                    .filter(|c| c.at > stopped && c.code == Code::Unavailable)
                    .count()
                    >= 5
            },
        )
        .await;
    let (restarted, calls) = start_and_recover(cluster, traffic, &TOKEN_SERVICES).await;

    let cached: Vec<Call> = calls
        .iter()
        .filter(|c| c.at < stopped + cached_for)
        .copied()
        .collect();
    assert_no_failures("on the cached token", &cached);
    // Some of those calls ran with every replica gone (unless stopping
    // took so long that the window closed, which fails here, loudly).
    assert!(
        cached.iter().filter(|c| c.at > gone).count() >= 5,
        "too few calls on the cached token with every replica gone (stopping took {:?})",
        gone - stopped
    );
    assert_only_unavailable("all replicas down", &calls);
    let recovery = assert_recovered("all replicas down", &calls, restarted);
    let first_failure = calls
        .iter()
        .find(|c| c.code != Code::Ok)
        .map(|c| c.at - stopped);
    eprintln!(
        "all replicas down: first UNAVAILABLE {first_failure:?} after the stop (cached token), {} calls failed, first success {recovery:?} after the replicas were healthy",
        failures(&calls).len(),
    );
    assert_eq!(
        started_at("orders").await,
        orders_started,
        "orders was restarted"
    );
    assert_eq!(
        started_at(INVENTORIES[0]).await,
        inventory_started,
        "inventory was restarted"
    );
}
