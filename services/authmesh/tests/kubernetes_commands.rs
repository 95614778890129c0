//! The commands the Kubernetes manifests (deploy/kubernetes) run, with the
//! real binary: `init --layout kubernetes` with `--reader` (the init Job and
//! the renewal CronJob), `wait-for` (every server's init container), `idle`
//! (the client-kit pod) and `client-kit export | import` (how an operator
//! gets the kit out of the cluster).
#![allow(clippy::expect_used)] // helpers of a test: a failed step should fail the test

mod common;

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use authmesh::dev_state::DevState;
use rustls::{
    client::danger::ServerCertVerifier,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

use common::{BIN, authmesh};

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refusal: a failed exit whose message gives `reason`.
fn assert_refused(out: &Output, reason: &str) {
    assert!(!out.status.success(), "accepted; wanted: {reason}");
    assert!(stderr(out).contains(reason), "{}", stderr(out));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The group of the user running the test: handing files to it needs no
/// privilege, as the init Job's supplemental groups need none.
fn own_gid(dir: &Path) -> u32 {
    std::fs::metadata(dir).expect("metadata").gid()
}

/// Whether `workload`'s certificate, checked against the state's CA as a
/// TLS client checks it, is valid for `name`.
fn valid_for(state: &Path, workload: &str, name: &str) -> bool {
    service_runtime::install_crypto_provider();
    let ca = CertificateDer::from_pem_file(state.join("tls/ca.pem")).expect("CA");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
        .build()
        .expect("verifier");
    let cert = CertificateDer::from_pem_file(state.join(format!("tls/{workload}.pem")))
        .expect("certificate");
    verifier
        .verify_server_cert(
            &cert,
            &[],
            &ServerName::try_from(name.to_owned()).expect("a DNS name"),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

/// `authmesh init --layout kubernetes --namespace payments`, as the init
/// Job runs it: configurations that reach every server through its
/// Service in that namespace and the etcd members through the headless
/// Service, certificates valid for every name a pod may use, each server's
/// key handed to its group (0640) and the CA key to nobody; a second run
/// (the renewal CronJob) changes nothing; bad namespaces and readers are
/// refused with the reason.
#[test]
fn init_prepares_a_kubernetes_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let gid = own_gid(dir.path()).to_string();
    let readers: Vec<String> = ["token-service", "orders", "inventory", "etcd", "client-kit"]
        .iter()
        .map(|workload| format!("{workload}={gid}"))
        .collect();
    let init = |extra: &[&str]| {
        let mut args = vec!["init", "--layout", "kubernetes", "--namespace", "payments"];
        for reader in &readers {
            args.extend(["--reader", reader]);
        }
        args.extend(extra);
        authmesh(&state, &args)
    };
    assert_ok(&init(&[]));

    let loaded = DevState::open(&state);
    let token_service = loaded.load_token_service().expect("token-service.toml");
    assert_eq!(token_service.config.listen, "0.0.0.0:50051");
    assert_eq!(
        token_service.config.issuer,
        "https://token-service.payments.svc:50051"
    );
    let token_service::StoreConfig::Etcd(etcd) = &token_service.config.store else {
        panic!("Kubernetes runs on etcd");
    };
    assert_eq!(
        etcd.endpoints,
        [
            "https://etcd-0.etcd.payments.svc:2379",
            "https://etcd-1.etcd.payments.svc:2379",
            "https://etcd-2.etcd.payments.svc:2379",
        ]
    );
    assert_eq!(
        token_service.config.key_dir,
        Path::new("/var/lib/token-service/keys"),
        "each pod's key on a volume of its own"
    );
    let orders = loaded.load_orders().expect("orders.toml");
    assert_eq!(
        orders.config.token_service.url,
        "https://token-service.payments.svc:50051"
    );
    assert_eq!(
        orders.config.inventory.url,
        "https://inventory.payments.svc:50053"
    );
    assert_eq!(orders.config.auth.issuer, token_service.config.issuer);
    let inventory = loaded.load_inventory().expect("inventory.toml");
    assert!(inventory.config.auth.one_time_via_token_service);
    assert!(
        !state.join("idp.toml").exists(),
        "no demo issuer in a cluster"
    );

    for (workload, name) in [
        ("token-service", "token-service.payments.svc"),
        ("token-service", "token-service.payments.svc.cluster.local"),
        ("token-service", "token-service"),
        ("token-service", "localhost"),
        ("orders", "orders.payments"),
        ("inventory", "inventory.payments.svc"),
        ("etcd", "etcd-0.etcd.payments.svc"),
        ("etcd", "etcd-2.etcd"),
        ("etcd", "etcd-1.etcd.payments.svc.cluster.local"),
    ] {
        assert!(valid_for(&state, workload, name), "{workload}: {name}");
    }
    for (workload, name) in [
        ("orders", "token-service.payments.svc"),
        ("token-service", "token-service.other.svc"),
        ("etcd", "etcd-3.etcd.payments.svc"),
        ("inventory", "inventory.mesh"),
    ] {
        assert!(!valid_for(&state, workload, name), "{workload}: {name}");
    }

    // Handed over by group: readable by it alone; what nobody is given
    // stays the init's own.
    for private in [
        "tls/token-service-key.pem",
        "tls/orders-key.pem",
        "tls/inventory-key.pem",
        "tls/etcd-key.pem",
        "tls/operator-key.pem",
        "tls/demo-cli-key.pem",
        "clients/demo-cli.secret",
    ] {
        assert_eq!(mode(&state.join(private)), 0o640, "{private}");
    }
    assert_eq!(mode(&state.join("tls/ca-key.pem")), 0o600);

    // A service of one's own: a certificate for its Service, renewed with
    // the mesh's, its key handed to its group.
    let billing = format!("billing={gid}");
    assert_ok(&init(&["--workload", "billing", "--reader", &billing]));
    assert!(valid_for(&state, "billing", "billing.payments.svc"));
    assert!(!valid_for(&state, "billing", "orders.payments.svc"));
    assert_eq!(mode(&state.join("tls/billing-key.pem")), 0o640);

    let etcd_cert = std::fs::read(state.join("tls/etcd.pem")).expect("etcd.pem");
    let secret = std::fs::read(state.join("clients/demo-cli.secret")).expect("secret");
    assert_ok(&init(&[]));
    assert_eq!(
        std::fs::read(state.join("tls/etcd.pem")).expect("etcd.pem"),
        etcd_cert
    );
    assert_eq!(
        std::fs::read(state.join("clients/demo-cli.secret")).expect("secret"),
        secret
    );

    let missing = authmesh(&state, &["init", "--layout", "kubernetes"]);
    assert_refused(&missing, "--namespace");
    for bad in ["Payments", "-payments", "pay.ments", &"a".repeat(64)] {
        let refused = authmesh(
            &dir.path().join("bad"),
            &[
                "init",
                "--layout",
                "kubernetes",
                &format!("--namespace={bad}"),
            ],
        );
        assert_refused(&refused, "DNS label");
        assert!(
            !dir.path().join("bad").join("tls").exists(),
            "partial state"
        );
    }
    let refused = authmesh(
        &dir.path().join("bad"),
        &[
            "init",
            "--layout",
            "kubernetes",
            "--namespace",
            "payments",
            "--cluster-domain",
            "cluster..local",
        ],
    );
    assert_refused(&refused, "cluster domain");
    let refused = authmesh(
        &dir.path().join("bad"),
        &["init", "--layout", "compose", "--namespace", "payments"],
    );
    assert_refused(&refused, "--layout kubernetes");
    for bad in ["orders", "orders=x", "Billing=1000", "orders=1:2"] {
        let refused = authmesh(&state, &["init", "--reader", bad]);
        assert_refused(&refused, "WORKLOAD=GID");
    }
    let refused = authmesh(&state, &["init", "--reader", "billing=1000"]);
    assert_refused(&refused, "--workload billing");
    for (bad, reason) in [("orders", "the mesh's own"), ("Billing", "DNS label")] {
        let refused = init(&["--workload", bad]);
        assert_refused(&refused, reason);
    }
    // A token service on files writes into the state: not by group.
    let refused = authmesh(
        &dir.path().join("local"),
        &["init", "--reader", &format!("token-service={gid}")],
    );
    assert_refused(&refused, "--owner");
}

/// `authmesh wait-for`: returns once every file is readable, fails after
/// its timeout naming what is still missing.
#[test]
fn wait_for_returns_once_the_files_are_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, key) = (dir.path().join("orders.toml"), dir.path().join("key.pem"));
    std::fs::write(&config, "listen = \"0.0.0.0:50052\"").expect("write");

    let refused = Command::new(BIN)
        .args(["wait-for", "--timeout", "1"])
        .args([&config, &key])
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("key.pem") && !message.contains("orders.toml"),
        "{message}"
    );

    let waiting = Command::new(BIN)
        .args(["wait-for", "--timeout", "30"])
        .args([&config, &key])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&key, "a key").expect("write");
    let done = waiting.wait_with_output().expect("waits");
    assert_ok(&done);
    assert!(String::from_utf8_lossy(&done.stdout).contains("ready: 2 file(s)"));
}

/// `authmesh idle` runs until SIGTERM, then exits cleanly.
#[test]
fn idle_runs_until_terminated() {
    let mut idle = Command::new(BIN).arg("idle").spawn().expect("spawns");
    std::thread::sleep(Duration::from_millis(500));
    assert!(idle.try_wait().expect("status").is_none(), "idle exited");
    let kill = Command::new("kill")
        .args(["-TERM", &idle.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let started = Instant::now();
    loop {
        if let Some(status) = idle.try_wait().expect("status") {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "idle ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_with_input(state: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    child.wait_with_output().expect("waits")
}

/// Every file under `dir`, relative, with its contents and mode.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    common::files_under(dir)
        .into_iter()
        .map(|file| {
            let path = dir.join(&file);
            (file, std::fs::read(&path).expect("read"), mode(&path))
        })
        .collect()
}

/// `client-kit export | client-kit import`: the same kit as `init
/// --client-kit` writes, carried through a pipe; an import of anything but
/// a whole kit writes nothing.
#[test]
fn client_kit_travels_through_a_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (state, kit, copied) = (
        dir.path().join("state"),
        dir.path().join("kit"),
        dir.path().join("copied"),
    );
    std::fs::create_dir(&kit).expect("kit");
    assert_ok(&authmesh(
        &state,
        &[
            "init",
            "--layout",
            "kubernetes",
            "--namespace",
            "authmesh",
            "--client-kit",
            kit.to_str().expect("utf-8"),
        ],
    ));
    let exported = authmesh(&state, &["client-kit", "export"]);
    assert_ok(&exported);
    let bundle = String::from_utf8(exported.stdout).expect("utf-8");
    assert!(!bundle.contains("ca-key"), "the CA key left the cluster");
    let imported = run_with_input(&copied, &["client-kit", "import"], bundle.as_bytes());
    assert_ok(&imported);
    assert_eq!(tree(&copied), tree(&kit), "not the kit init writes");

    let elsewhere = dir.path().join("elsewhere");
    let mut extra: serde_json::Value = serde_json::from_str(&bundle).expect("json");
    extra["files"]["../../escape.pem"] = "x".into();
    let mut missing: serde_json::Value = serde_json::from_str(&bundle).expect("json");
    missing["files"]
        .as_object_mut()
        .expect("files")
        .remove("tls/operator-key.pem");
    for (input, reason) in [
        (extra.to_string(), "not a file of the client kit"),
        (missing.to_string(), "the kit has no tls/operator-key.pem"),
        ("{\"files\": 3}".to_owned(), "not a client kit"),
        ("-----BEGIN PRIVATE KEY-----".to_owned(), "not a client kit"),
    ] {
        let refused = run_with_input(&elsewhere, &["client-kit", "import"], input.as_bytes());
        assert_refused(&refused, reason);
        assert!(
            !stderr(&refused).contains("BEGIN"),
            "key material in the message"
        );
        assert!(!elsewhere.exists(), "a refused kit wrote files");
    }
}
