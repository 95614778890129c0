//! The laptop overlay's pods run for real on the machine's Docker engine,
//! each container as a kubelet would start it from the rendered manifest:
//! its command with `$(VAR)` expanded, its environment (pod fields from the
//! downward API), its user, groups (supplemental and fsGroup), read-only
//! root filesystem, dropped capabilities and no-new-privileges, its memory
//! and CPU limits, its volumes (the shared state volume, read-only where the
//! manifest says so; an emptyDir as tmpfs; a StatefulSet's claim as a fresh
//! volume given to its fsGroup), its init containers first, and the
//! cluster's DNS: a name per Service (`<svc>.<ns>.svc.cluster.local`) and
//! per StatefulSet pod behind its headless Service, found through the
//! search domains a pod's resolv.conf has. Every readiness probe is then
//! run as the kubelet runs it (`exec` in the container) until it succeeds,
//! and every liveness port answers.
//!
//! No Kubernetes is involved, so this proves what the pods do, not what
//! the cluster does: NetworkPolicies, PodDisruptionBudgets, scheduling and
//! the Services' load balancing are checked only by `kubernetes.rs`. What
//! it proves: the init Job creates the state without privilege, each server
//! starts once it may read its key, etcd's members find each other and
//! accept each other's certificates under their Kubernetes names, the
//! token service replicas become ready on them, and the documented
//! walkthrough (export the client kit from the client-kit pod, mint, place
//! an order with grpcurl through the forwarded ports) works; no server can
//! read the CA key or another's key; the renewal CronJob's pod changes
//! nothing that is not due, and renews a certificate that is, which its
//! server then serves (and calls with) without a restart.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpStream},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use authmesh_tests::kubernetes::{Rendered, render_all, root};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::Value;

const NAMESPACE: &str = "authmesh";
const CLUSTER_DOMAIN: &str = "cluster.local";
/// Every container, volume and network of the test is named with this: a
/// run killed before its clean-up is removed by the next one.
const PREFIX: &str = "authmesh-k8s-e2e";

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes everything of a previous or this run.
fn clean_up() {
    let names = docker(&["ps", "-aq", "--filter", &format!("name=^{PREFIX}-")]);
    let ids: Vec<String> = String::from_utf8_lossy(&names.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args);
    }
    let volumes = docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name=^{PREFIX}-"),
    ]);
    for volume in String::from_utf8_lossy(&volumes.stdout).split_whitespace() {
        docker(&["volume", "rm", "-f", volume]);
    }
    docker(&["network", "rm", &format!("{PREFIX}-net")]);
}

/// Cleans up however the test ends.
struct CleanUp;

impl Drop for CleanUp {
    fn drop(&mut self) {
        clean_up();
    }
}

/// A new volume as the kubelet makes it: for a pod with an fsGroup, its
/// root group-owned, group-writable and setgid (`2775`); an emptyDir is
/// `1777`. In memory: it lives while a container has it mounted, which is
/// the whole test. Mount it with [`mount_volume`], which copies nothing of the
/// image into it, as the kubelet copies nothing.
fn fresh_volume(name: &str, size: &str, group: u64, mode: &str) {
    docker_ok(&[
        "volume",
        "create",
        "--driver",
        "local",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        &format!("o=size={},uid=0,gid={group},mode={mode}", memory(size)),
        name,
    ]);
}

/// `--mount` of a volume at `path`.
fn mount_volume(volume: &str, path: &str, read_only: bool) -> [String; 2] {
    let ro = if read_only { ",readonly" } else { "" };
    [
        "--mount".into(),
        format!("type=volume,src={volume},dst={path},volume-nocopy{ro}"),
    ]
}

/// The last lines a container wrote, both streams.
fn logs(container: &str) -> String {
    let out = docker(&["logs", "--tail", "30", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `128Mi` (a memory limit, a volume's size) as Docker's `128m`.
fn memory(quantity: &str) -> String {
    for (suffix, unit) in [("Gi", "g"), ("Mi", "m"), ("Ki", "k")] {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return format!("{n}{unit}");
        }
    }
    quantity.to_owned()
}

/// `500m` or `1` CPU as Docker's `--cpus`.
fn cpus(quantity: &str) -> String {
    match quantity.strip_suffix('m') {
        Some(milli) => format!("{}", milli.parse::<f64>().expect("millicores") / 1000.0),
        None => quantity.to_owned(),
    }
}

/// Kubernetes' `$(VAR)` expansion: references to variables defined before
/// are replaced, others left as they are.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    out
}

/// One pod of a workload object, started as its kubelet would.
struct Pod<'a> {
    name: String,
    object: &'a Value,
    /// DNS names that reach this pod.
    aliases: Vec<String>,
    /// Container ports published on 127.0.0.1 (like `kubectl port-forward`).
    forward: Vec<u16>,
}

impl Pod<'_> {
    fn spec(&self) -> &Value {
        if self.object["kind"] == "CronJob" {
            &self.object["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        } else {
            &self.object["spec"]["template"]["spec"]
        }
    }

    fn container_name(&self, container: &Value) -> String {
        format!(
            "{PREFIX}-{}-{}",
            self.name,
            container["name"].as_str().expect("name")
        )
    }

    /// `docker run` for one of this pod's containers.
    fn run_args(&self, container: &Value, detach: bool) -> Vec<String> {
        let spec = self.spec();
        let mut args: Vec<String> = vec!["run".into()];
        if detach {
            args.push("-d".into());
        }
        args.extend(["--name".into(), self.container_name(container)]);
        args.extend(["--hostname".into(), self.name.clone()]);
        args.extend(["--network".into(), format!("{PREFIX}-net")]);
        for alias in &self.aliases {
            args.extend(["--network-alias".into(), alias.clone()]);
        }
        // A pod's resolv.conf in the namespace.
        for search in [
            format!("{NAMESPACE}.svc.{CLUSTER_DOMAIN}"),
            format!("svc.{CLUSTER_DOMAIN}"),
            CLUSTER_DOMAIN.to_owned(),
        ] {
            args.extend(["--dns-search".into(), search]);
        }
        args.extend(["--dns-option".into(), "ndots:5".into()]);

        let pod_security = &spec["securityContext"];
        let uid = pod_security["runAsUser"].as_u64().expect("runAsUser");
        let gid = pod_security["runAsGroup"].as_u64().expect("runAsGroup");
        args.extend(["--user".into(), format!("{uid}:{gid}")]);
        let groups = pod_security["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod_security.get("fsGroup"));
        for group in groups {
            args.extend(["--group-add".into(), group.to_string()]);
        }
        let security = &container["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{}", self.name);
        assert_ne!(uid, 0, "{}: runs as root", self.name);
        if security["readOnlyRootFilesystem"] == true {
            args.push("--read-only".into());
        }
        if security["capabilities"]["drop"] == serde_json::json!(["ALL"]) {
            args.extend(["--cap-drop".into(), "ALL".into()]);
        }
        if security["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        let limits = &container["resources"]["limits"];
        args.extend([
            "--memory".into(),
            memory(limits["memory"].as_str().expect("memory limit")),
        ]);
        args.extend([
            "--cpus".into(),
            cpus(limits["cpu"].as_str().expect("cpu limit")),
        ]);

        // Volumes, by what backs them.
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = &mount["name"];
            let path = mount["mountPath"].as_str().expect("mountPath");
            let volume = volumes.iter().find(|v| &v["name"] == name);
            match volume {
                Some(v) if v.get("persistentVolumeClaim").is_some() => {
                    assert_eq!(v["persistentVolumeClaim"]["claimName"], "authmesh-state");
                    let read_only =
                        mount["readOnly"] == true || v["persistentVolumeClaim"]["readOnly"] == true;
                    args.extend(mount_volume(&format!("{PREFIX}-state"), path, read_only));
                }
                Some(v) if v.get("emptyDir").is_some() => {
                    let volume = format!("{PREFIX}-{}-{}", self.name, name.as_str().expect("name"));
                    let size = v["emptyDir"]["sizeLimit"]
                        .as_str()
                        .expect("an emptyDir sizeLimit");
                    fresh_volume(&volume, size, 0, "1777");
                    args.extend(mount_volume(&volume, path, false));
                }
                // A StatefulSet's claim: a fresh volume of the pod's own,
                // given to its fsGroup as the kubelet does.
                None => {
                    let fs_group = pod_security["fsGroup"].as_u64().expect("fsGroup");
                    let volume = format!(
                        "{PREFIX}-{}-{}",
                        self.name,
                        name.as_str().expect("volume name")
                    );
                    let claim = self.object["spec"]["volumeClaimTemplates"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|c| &c["metadata"]["name"] == name)
                        .unwrap_or_else(|| panic!("{}: no volume {name}", self.name));
                    let size = claim["spec"]["resources"]["requests"]["storage"]
                        .as_str()
                        .expect("the claim's size");
                    fresh_volume(&volume, size, fs_group, "2775");
                    args.extend(mount_volume(&volume, path, false));
                }
                Some(other) => panic!("{}: a volume this test cannot back: {other}", self.name),
            }
        }

        let mut env: Vec<(String, String)> = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().expect("env name").to_owned();
            let value = match var["value"].as_str() {
                Some(value) => expand(value, &env),
                None => match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => self.name.clone(),
                    Some("metadata.namespace") => NAMESPACE.to_owned(),
                    other => panic!("{}: env {name} from {other:?}", self.name),
                },
            };
            args.extend(["-e".into(), format!("{name}={value}")]);
            env.push((name, value));
        }
        for port in &self.forward {
            args.extend(["-p".into(), format!("127.0.0.1::{port}")]);
        }
        args.push(container["image"].as_str().expect("image").to_owned());
        for part in container["command"]
            .as_array()
            .into_iter()
            .chain(container["args"].as_array())
            .flatten()
        {
            args.push(expand(part.as_str().expect("argument"), &env));
        }
        args
    }

    /// Runs the init containers to completion, then starts the main one.
    fn start(&self) -> String {
        for init in self.spec()["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            self.run_to_completion(init);
        }
        let containers = self.spec()["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1);
        let args = self.run_args(&containers[0], true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        self.container_name(&containers[0])
    }

    /// Runs a container until it exits, which must be with 0 and within
    /// two minutes (a `wait-for` that would wait its whole ten minutes
    /// fails the test sooner).
    fn run_to_completion(&self, container: &Value) {
        let args = self.run_args(container, true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = docker_ok(&args);
        let deadline = Instant::now() + Duration::from_secs(120);
        while docker_ok(&["inspect", "-f", "{{.State.Running}}", &id]) == "true" {
            assert!(
                Instant::now() < deadline,
                "{}'s {} still running:\n{}",
                self.name,
                container["name"],
                logs(&id)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let exit = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]);
        assert_eq!(
            exit,
            "0",
            "{}'s {} failed:\n{}",
            self.name,
            container["name"],
            logs(&id)
        );
        docker_ok(&["rm", &id]);
    }

    fn main_container(&self) -> &Value {
        &self.spec()["containers"][0]
    }
}

/// The pods of a workload object: `<name>-<i>` for each replica.
fn pods<'a>(rendered: &'a Rendered, kind: &str, name: &str) -> Vec<Pod<'a>> {
    let object = rendered.object(kind, name);
    let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
    let labels = &object["spec"]["template"]["metadata"]["labels"];
    (0..replicas)
        .map(|i| {
            let pod = if kind == "Job" {
                name.to_owned()
            } else {
                format!("{name}-{i}")
            };
            let mut aliases = Vec::new();
            for service in rendered.all("Service") {
                let selector = service["spec"]["selector"].as_object().expect("selector");
                if selector.iter().all(|(k, v)| &labels[k] == v) {
                    let svc = service["metadata"]["name"].as_str().expect("name");
                    aliases.push(format!("{svc}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"));
                    if object["spec"]["serviceName"] == svc {
                        aliases.push(format!("{pod}.{svc}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"));
                    }
                }
            }
            Pod {
                name: pod,
                object,
                aliases,
                forward: Vec::new(),
            }
        })
        .collect()
}

fn host_port(container: &str, port: u16) -> u16 {
    let mapped = docker_ok(&["port", container, &port.to_string()]);
    let first = mapped.lines().next().expect("a published port");
    first
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("a port number")
}

#[test]
fn laptop_overlay_pods_run_and_place_an_order() {
    let Some(_) = authmesh_tests::tool("docker", "install Docker Engine") else {
        return;
    };
    let Some(grpcurl_bin) = authmesh_tests::grpcurl() else {
        return;
    };
    let Some(rendered) = render_all() else {
        return;
    };
    service_runtime::install_crypto_provider();
    let laptop = rendered
        .iter()
        .find(|r| r.name == "laptop")
        .expect("the laptop overlay");

    // The documented image build (a static release build, FROM scratch).
    let build = Command::new(root().join("compose/build-images.sh"))
        .stdout(Stdio::null())
        .output()
        .expect("build-images.sh runs");
    assert!(
        build.status.success(),
        "compose/build-images.sh failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    clean_up();
    let _clean_up = CleanUp;
    docker_ok(&["network", "create", &format!("{PREFIX}-net")]);
    // The init Job's fsGroup.
    let state_size = laptop.object("PersistentVolumeClaim", "authmesh-state")["spec"]["resources"]
        ["requests"]["storage"]
        .as_str()
        .expect("the state claim's size");
    fresh_volume(&format!("{PREFIX}-state"), state_size, 10000, "2775");

    // The client-kit pod first: it mounts the state from the start (and
    // so keeps the tmpfs volume mounted between the other containers).
    let client_kit = pods(laptop, "Deployment", "client-kit");
    assert_eq!(
        client_kit.len(),
        1,
        "the laptop overlay runs the client-kit pod"
    );
    let kit_container = client_kit[0].start();
    // The Job, before the servers (whose init containers would otherwise
    // wait for it: `kubernetes_commands` tests that waiting).
    let init = pods(laptop, "Job", "init");
    init[0].run_to_completion(init[0].main_container());

    let mut servers = Vec::new();
    for (kind, name) in [
        ("StatefulSet", "etcd"),
        ("Deployment", "token-service"),
        ("Deployment", "orders"),
        ("Deployment", "inventory"),
    ] {
        for mut pod in pods(laptop, kind, name) {
            if pod.name.ends_with("-0") {
                // What `kubectl port-forward svc/<name>` reaches.
                pod.forward = match name {
                    "token-service" => vec![50051],
                    "orders" => vec![50052],
                    "inventory" => vec![50053],
                    _ => Vec::new(),
                };
            }
            servers.push(pod);
        }
    }
    // Each server's init container checks that it may read its key.
    let mut containers = BTreeMap::new();
    for pod in &servers {
        containers.insert(pod.name.clone(), pod.start());
    }

    // Readiness, as the kubelet probes it.
    let deadline = Instant::now() + Duration::from_secs(240);
    for pod in &servers {
        let container = &containers[&pod.name];
        let probe = pod.main_container()["readinessProbe"]["exec"]["command"]
            .as_array()
            .expect("an exec readiness probe");
        let mut args = vec!["exec", container.as_str()];
        args.extend(probe.iter().map(|p| p.as_str().expect("argument")));
        loop {
            if docker(&args).status.success() {
                break;
            }
            let running = docker_ok(&["inspect", "-f", "{{.State.Running}}", container]);
            assert!(
                running == "true" && Instant::now() < deadline,
                "{} never became ready (running: {running}):\n{}",
                pod.name,
                logs(container)
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        // Liveness: its tcpSocket port accepts connections.
        let liveness = &pod.main_container()["livenessProbe"]["tcpSocket"]["port"];
        let port = pod.main_container()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == *liveness || p["containerPort"] == *liveness)
            .expect("the liveness port")["containerPort"]
            .as_u64()
            .expect("a port") as u16;
        let ip = docker_ok(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{PREFIX}-net\").IPAddress}}}}"),
            container,
        ]);
        let addr = SocketAddr::new(ip.parse().expect("an IP"), port);
        TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{}: liveness port {addr}: {e}", pod.name));
        eprintln!("{} ready", pod.name);
    }

    // No server can read the CA key or another server's key; each reads its own.
    for (pod, own, others) in [
        ("orders-0", "orders", ["token-service", "inventory"]),
        ("token-service-1", "token-service", ["orders", "etcd"]),
        ("inventory-1", "inventory", ["demo-cli", "token-service"]),
    ] {
        let readable = |file: &str| {
            docker(&[
                "exec",
                &containers[pod],
                "authmesh",
                "wait-for",
                "--timeout",
                "1",
                file,
            ])
            .status
            .success()
        };
        assert!(readable(&format!("/state/tls/{own}-key.pem")), "{pod}");
        assert!(!readable("/state/tls/ca-key.pem"), "{pod} reads the CA key");
        for other in others {
            assert!(
                !readable(&format!("/state/tls/{other}-key.pem")),
                "{pod} reads {other}'s key"
            );
        }
    }

    // The walkthrough: the kit out of the client-kit pod, through a pipe.
    let bundle = docker_ok(&[
        "exec",
        &kit_container,
        "authmesh",
        "--state-dir",
        "/state",
        "client-kit",
        "export",
    ]);
    let bundle: Value = serde_json::from_str(&bundle).expect("the kit as JSON");
    let kit = tempfile::tempdir().expect("kit");
    let files = bundle["files"].as_object().expect("files");
    let expected = authmesh::dev_state::client_kit_files();
    assert_eq!(files.len(), expected.public.len() + expected.private.len());
    for file in expected.public.iter().chain(&expected.private) {
        let contents = files[&file.display().to_string()]
            .as_str()
            .expect("contents");
        let path = kit.path().join(file);
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }
    let token_port = host_port(&containers["token-service-0"], 50051);
    let orders_port = host_port(&containers["orders-0"], 50052);
    let inventory_port = host_port(&containers["inventory-0"], 50053);

    let secret = files["clients/demo-cli.secret"].as_str().expect("secret");
    let basic = format!(
        "authorization: Basic {}",
        STANDARD.encode(format!("demo-cli:{}", secret.trim()))
    );
    let minted = authmesh_tests::grpcurl_with_kit(
        &grpcurl_bin,
        kit.path(),
        token_port,
        &[
            "-H",
            &basic,
            "-d",
            r#"{"audience":"orders","scopes":["orders.write"]}"#,
            "authmesh.v1.TokenService/IssueToken",
        ],
    );
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted: Value = serde_json::from_slice(&minted.stdout).expect("json");
    let token = minted["token"].as_str().expect("token");
    let claims = authmesh_tests::decode_payload(token);
    assert_eq!(
        claims["iss"],
        format!("https://token-service.{NAMESPACE}.svc:50051")
    );
    let bearer = format!("authorization: Bearer {token}");
    // Orders may have started before the token service was ready and be
    // waiting out its retry back-off (at most 10 s) for its own token, as
    // in a cluster; Docker's names, unlike a Service, also lead to a pod
    // that is not ready yet.
    let place_order = || {
        authmesh_tests::grpcurl_with_kit(
            &grpcurl_bin,
            kit.path(),
            orders_port,
            &[
                "-H",
                &bearer,
                "-d",
                r#"{"sku":"sku-1","quantity":2}"#,
                "demo.orders.v1.Orders/PlaceOrder",
            ],
        )
    };
    let started = Instant::now();
    let order = loop {
        let order = place_order();
        let stderr = String::from_utf8_lossy(&order.stderr);
        if order.status.success()
            || !stderr.contains("Unavailable")
            || started.elapsed() > Duration::from_secs(30)
        {
            break order;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let stdout = String::from_utf8_lossy(&order.stdout);
    assert!(
        order.status.success(),
        "{}",
        String::from_utf8_lossy(&order.stderr)
    );
    eprintln!(
        "first order placed {} ms after every pod was ready",
        started.elapsed().as_millis()
    );
    assert!(stdout.contains("reservationId"), "{stdout}");
    // Audience-bound: orders' token is refused at inventory.
    let refused = authmesh_tests::grpcurl_with_kit(
        &grpcurl_bin,
        kit.path(),
        inventory_port,
        &[
            "-H",
            &bearer,
            "-d",
            r#"{"sku":"sku-1"}"#,
            "demo.inventory.v1.Inventory/GetStock",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // One key per token service pod, each published through etcd.
    let jwks = authmesh_tests::grpcurl_with_kit(
        &grpcurl_bin,
        kit.path(),
        token_port,
        &["authmesh.v1.TokenService/GetJwks"],
    );
    let jwks: Value = serde_json::from_slice(&jwks.stdout).expect("json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(3), "{jwks}");

    // The renewal CronJob's pod on the live state. Nothing is due at first:
    // it changes nothing. Then orders' certificate is made 13 hours old
    // (past half its 24): the next run renews it, hands the new key to
    // orders' group, and orders serves the new certificate, and calls
    // inventory with it, without a restart.
    let renew = Pod {
        name: "renew-certificates".into(),
        object: laptop.object("CronJob", "renew-certificates"),
        aliases: Vec::new(),
        forward: Vec::new(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let orders_url = format!("https://localhost:{orders_port}");
    let served = || {
        runtime.block_on(authmesh_tests::presented_leaf(
            &kit.path().join("tls/ca.pem"),
            &orders_url,
        ))
    };
    let before = served();
    renew.run_to_completion(renew.main_container());
    assert_eq!(served(), before, "renewed a certificate that was not due");

    age_certificate("orders", Duration::from_secs(13 * 3600));
    renew.run_to_completion(renew.main_container());
    let started = Instant::now();
    while served() == before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "orders still serves its old certificate:\n{}",
            logs(&containers["orders-0"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "orders serves its renewed certificate {} ms after the renewal",
        started.elapsed().as_millis()
    );
    let state = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.RestartCount}} {{.State.StartedAt}}",
        &containers["orders-0"],
    ]);
    assert!(state.starts_with("true 0 "), "orders restarted: {state}");
    // Its token for inventory is bound to the old certificate: orders
    // moves both together.
    let again = place_order();
    assert!(
        again.status.success(),
        "{}\norders:\n{}\ninventory:\n{}{}",
        String::from_utf8_lossy(&again.stderr),
        logs(&containers["orders-0"]),
        logs(&containers["inventory-0"]),
        logs(&containers["inventory-1"])
    );
}

/// Makes a workload's certificate in the state volume `age` old, as time
/// would: copied out, its modification time set back, copied in again
/// through a container of the init's user that mounts the volume.
fn age_certificate(workload: &str, age: Duration) {
    let helper = format!("{PREFIX}-aging");
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &helper,
        "--user",
        "10000:10000",
        "--network",
        "none",
        "--mount",
        &format!("type=volume,src={PREFIX}-state,dst=/state,volume-nocopy"),
        "authmesh:local",
        "authmesh",
        "idle",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let inside = format!("{helper}:/state/tls/{workload}.pem");
    let outside = dir.path().join(format!("{workload}.pem"));
    docker_ok(&["cp", &inside, &outside.display().to_string()]);
    let file = std::fs::File::options()
        .write(true)
        .open(&outside)
        .expect("the copy");
    file.set_modified(std::time::SystemTime::now() - age)
        .expect("set its modification time");
    drop(file);
    docker_ok(&["cp", &outside.display().to_string(), &inside]);
    docker_ok(&["rm", "-f", &helper]);
}
