//! The Kubernetes manifests (`deploy/kubernetes`), checked without a
//! cluster by every offline tool that is real: kubectl's kustomize renders
//! the base and each overlay (with every kubectl named in
//! `AUTHMESH_TEST_KUBECTLS`, which must all render the same objects: CI names
//! Debian's kubectl 1.20, kustomize v2, and the machine's newer one);
//! kubernetes-validate checks every object strictly against the newest
//! Kubernetes it ships; checkov finds nothing but what
//! `deploy/kubernetes/checkov-skips.toml` lists with its reason; and the
//! rendered objects are compared with `docker-compose.yml`, the cluster CI
//! runs for real: the same servers and replicas, commands, configuration
//! files and keys, settings, ports, health checks, users and network paths.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use authmesh::dev_state::{DevState, MeshLayout};
use authmesh_tests::kubernetes::{Rendered, parse_yaml, render_all, root, run};
use serde_json::Value;

/// Writes a rendered kustomization where the command-line tools can read it.
fn write_rendered(dir: &Path, rendered: &Rendered) -> PathBuf {
    let path = dir.join(format!("{}.yaml", rendered.name));
    std::fs::write(&path, &rendered.yaml).expect("write rendered manifests");
    path
}

#[test]
fn every_kustomization_renders_and_validates_against_the_newest_kubernetes() {
    let Some(rendered) = render_all() else {
        return;
    };
    let Some(validate) =
        authmesh_tests::tool("kubernetes-validate", "pip install kubernetes-validate")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for kustomization in &rendered {
        let path = write_rendered(dir.path(), kustomization);
        // No --kubernetes-version: the newest the package ships.
        let out = run(Command::new(&validate).arg("--strict").arg(&path));
        let passed: Vec<&str> = out.lines().filter(|l| l.contains(" passed ")).collect();
        assert_eq!(
            passed.len(),
            kustomization.objects.len(),
            "{}: not every object was validated:\n{out}",
            kustomization.name
        );
        eprintln!(
            "{}: {} objects valid ({})",
            kustomization.name,
            passed.len(),
            passed[0].rsplit("against ").next().unwrap_or_default()
        );
    }
}

/// One entry of `deploy/kubernetes/checkov-skips.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Skip {
    checks: Vec<String>,
    kustomizations: Vec<String>,
    resources: Vec<String>,
    reason: String,
}

impl Skip {
    fn covers(&self, kustomization: &str, check: &str, resource: &str) -> bool {
        let any = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        self.checks.iter().any(|c| c == check)
            && any(&self.kustomizations, kustomization)
            && any(&self.resources, resource)
    }
}

#[test]
fn checkov_fails_nothing_but_the_listed_skips() {
    let Some(rendered) = render_all() else {
        return;
    };
    let Some(checkov) = authmesh_tests::tool("checkov", "pip install checkov") else {
        return;
    };
    #[derive(serde::Deserialize)]
    struct Skips {
        skip: Vec<Skip>,
    }
    let skips: Skips = toml::from_str(
        &std::fs::read_to_string(root().join("deploy/kubernetes/checkov-skips.toml"))
            .expect("checkov-skips.toml"),
    )
    .expect("checkov-skips.toml parses");
    for skip in &skips.skip {
        assert!(
            skip.reason.trim().len() > 40,
            "{:?}: a skip needs its reason",
            skip.checks
        );
    }
    let mut used = vec![false; skips.skip.len()];
    let mut uncovered = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for kustomization in &rendered {
        let path = write_rendered(dir.path(), kustomization);
        // Exits 1 when a check fails: the report says which.
        let out = Command::new(&checkov)
            .args(["--framework", "kubernetes", "--skip-download", "--quiet"])
            .args(["--output", "json", "--file"])
            .arg(&path)
            .output()
            .expect("checkov runs");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "checkov's report: {e}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let report = if report.is_array() {
            report[0].clone()
        } else {
            report
        };
        let summary = &report["summary"];
        assert_eq!(
            summary["parsing_errors"], 0,
            "{}: {summary}",
            kustomization.name
        );
        assert!(
            summary["passed"].as_u64().unwrap_or_default() > 100,
            "{}: checkov checked next to nothing: {summary}",
            kustomization.name
        );
        let failed = report["results"]["failed_checks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for failure in &failed {
            let check = failure["check_id"].as_str().expect("check_id");
            // `Kind.namespace.name`
            let resource = failure["resource"].as_str().expect("resource");
            let resource = resource.replacen(".authmesh.", ".", 1);
            match skips
                .skip
                .iter()
                .position(|s| s.covers(&kustomization.name, check, &resource))
            {
                Some(i) => used[i] = true,
                None => uncovered.push(format!(
                    "{}: {check} {resource}: {}",
                    kustomization.name, failure["check_name"]
                )),
            }
        }
        eprintln!(
            "{}: checkov passed {}, failed {} (all listed in checkov-skips.toml)",
            kustomization.name,
            summary["passed"],
            failed.len()
        );
    }
    assert!(
        uncovered.is_empty(),
        "checkov failures that checkov-skips.toml does not list:\n{}",
        uncovered.join("\n")
    );
    let stale: Vec<_> = skips
        .skip
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|(skip, _)| &skip.checks)
        .collect();
    assert!(
        stale.is_empty(),
        "skips in checkov-skips.toml that no failure needs any more: {stale:?}"
    );
}

/// The docker-compose.yml services of each component: `etcd-1` is `etcd`,
/// `token-service-2` is `token-service`, `inventory-1` is `inventory`.
fn component(service: &str) -> &str {
    match service.rsplit_once('-') {
        Some((name, n)) if n.parse::<u32>().is_ok() => name,
        _ => service,
    }
}

/// `${VAR:-default}` as compose resolves it with the variable unset.
fn compose_default(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match text.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map(|(_, default)| default.to_owned())
            .unwrap_or_default(),
        None => text,
    }
}

/// A string list (a command, an argv).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A compose service's settings: its environment, and for etcd the
/// command-line flags it takes beside it, named as etcd's environment names
/// them (`--name` is `ETCD_NAME`).
fn compose_settings(service: &Value) -> BTreeMap<String, String> {
    let mut settings: BTreeMap<String, String> = service["environment"]
        .as_object()
        .map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), compose_default(v)))
                .collect()
        })
        .unwrap_or_default();
    let command = strings(&service["command"]);
    if command.first().is_some_and(|c| c == "etcd") {
        for pair in command[1..].chunks(2) {
            let flag = pair[0].trim_start_matches("--");
            settings.insert(
                format!("ETCD_{}", flag.replace('-', "_").to_uppercase()),
                pair[1].clone(),
            );
        }
    }
    settings
}

/// A container's settings: its environment, without the `POD_*` helpers
/// that other variables are built from; a variable taken from the pod's
/// fields reads `fieldRef:<path>`.
fn kubernetes_settings(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .filter(|var| !var["name"].as_str().unwrap_or_default().starts_with("POD_"))
                .map(|var| {
                    let value = match var["value"].as_str() {
                        Some(value) => value.to_owned(),
                        None => format!(
                            "fieldRef:{}",
                            var["valueFrom"]["fieldRef"]["fieldPath"]
                                .as_str()
                                .unwrap_or_default()
                        ),
                    };
                    (var["name"].as_str().unwrap_or_default().to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Settings whose value names a member or replica, or how members find
/// each other: one value per container in compose, built from the pod's
/// name in Kubernetes.
const PER_REPLICA_SETTINGS: [&str; 5] = [
    "ETCD_NAME",
    "ETCD_ADVERTISE_CLIENT_URLS",
    "ETCD_INITIAL_ADVERTISE_PEER_URLS",
    "ETCD_INITIAL_CLUSTER",
    "AUTHMESH_STORE__REPLICA_ID",
];

/// The pod template of a workload object (Deployment, StatefulSet, Job,
/// CronJob).
fn pod_spec(object: &Value) -> &Value {
    if object["kind"] == "CronJob" {
        &object["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &object["spec"]["template"]["spec"]
    }
}

fn pod_labels(object: &Value) -> &Value {
    if object["kind"] == "CronJob" {
        &object["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    } else {
        &object["spec"]["template"]["metadata"]["labels"]
    }
}

/// The main container of a workload object.
fn main_container(object: &Value) -> &Value {
    let containers = pod_spec(object)["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

/// Every configuration file a state generates, with its TOML key paths
/// (tables of arrays merged), and the values by path.
fn state_files(dir: &Path) -> BTreeMap<String, BTreeMap<String, toml::Value>> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    walk(&format!("{prefix}.{key}"), value, out);
                }
            }
            toml::Value::Array(items)
                if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
            {
                for item in items {
                    walk(&format!("{prefix}[]"), item, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut files = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(current) = dirs.pop() {
        for entry in std::fs::read_dir(&current).expect("state dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .expect("inside")
                .display()
                .to_string();
            let mut keys = BTreeMap::new();
            if relative.ends_with(".toml") {
                let value: toml::Value =
                    toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
                walk("", &value, &mut keys);
            }
            files.insert(relative, keys);
        }
    }
    files
}

/// The host and port of an `https://host:port` URL.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (host, port) = rest.rsplit_once(':').expect("a port");
    (host.to_owned(), port.parse().expect("a port number"))
}

/// Whether a label selector (`matchLabels`, `matchExpressions` with `In`)
/// selects a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let matches_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| &labels[k] == v));
    let matches_expressions = selector["matchExpressions"]
        .as_array()
        .is_none_or(|expressions| {
            expressions.iter().all(|e| {
                assert_eq!(e["operator"], "In", "only In expressions are modelled");
                e["values"].as_array().is_some_and(|values| {
                    values.contains(&labels[e["key"].as_str().unwrap_or_default()])
                })
            })
        });
    matches_labels && matches_expressions
}

/// Who may open a connection to whom, on which port: every component of
/// the mesh, and `outside` for whatever is not one of its pods (the host
/// in compose; other namespaces, other pods and Prometheus in Kubernetes).
type Paths = BTreeSet<(String, String, u16)>;

const OUTSIDE: &str = "outside";

/// The NetworkPolicies' verdict for every pair of components and each port
/// the target listens on (ingress and egress both have to allow it).
fn kubernetes_paths(
    rendered: &Rendered,
    pods: &BTreeMap<String, Value>,
    ports: &BTreeMap<String, BTreeSet<u16>>,
) -> Paths {
    let policies: Vec<&Value> = rendered.all("NetworkPolicy").collect();
    // Whether a peer list (`from` / `to`) admits `peer`; an absent list
    // admits everyone. A namespaceSelector or ipBlock is someone outside.
    let admits = |peers: &Value, peer: &str| -> bool {
        let Some(peers) = peers.as_array() else {
            return true;
        };
        peers.iter().any(|p| {
            if p.get("namespaceSelector").is_some() || p.get("ipBlock").is_some() {
                return peer == OUTSIDE;
            }
            peer != OUTSIDE && selects(&p["podSelector"], &pods[peer])
        })
    };
    let port_allowed = |rule_ports: &Value, port: u16| -> bool {
        rule_ports.as_array().is_none_or(|ports| {
            ports
                .iter()
                .any(|p| p["port"] == port && p["protocol"].as_str().unwrap_or("TCP") == "TCP")
        })
    };
    // `direction` is "ingress" (rules admit `other` as `from`) or "egress".
    let allowed = |component: &str, direction: &str, other: &str, port: u16| -> bool {
        if component == OUTSIDE {
            return true;
        }
        let policy_type = if direction == "ingress" {
            "Ingress"
        } else {
            "Egress"
        };
        let peers_key = if direction == "ingress" { "from" } else { "to" };
        let applying: Vec<&&Value> = policies
            .iter()
            .filter(|p| selects(&p["spec"]["podSelector"], &pods[component]))
            .filter(|p| {
                p["spec"]["policyTypes"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == policy_type))
            })
            .collect();
        applying.is_empty()
            || applying.iter().any(|p| {
                p["spec"][direction].as_array().is_some_and(|rules| {
                    rules
                        .iter()
                        .any(|r| admits(&r[peers_key], other) && port_allowed(&r["ports"], port))
                })
            })
    };
    let mut paths = Paths::new();
    let everyone: Vec<&str> = pods
        .keys()
        .map(String::as_str)
        .chain(std::iter::once(OUTSIDE))
        .collect();
    for from in &everyone {
        for (to, to_ports) in ports {
            for &port in to_ports {
                if allowed(to, "ingress", from, port) && allowed(from, "egress", to, port) {
                    paths.insert(((*from).to_owned(), to.clone(), port));
                }
            }
        }
    }
    paths
}

#[test]
fn manifests_match_the_compose_cluster() {
    let Some(rendered) = render_all() else {
        return;
    };
    let compose_file = std::fs::read_to_string(root().join("docker-compose.yml")).expect("compose");
    let compose = parse_yaml(&compose_file).remove(0);
    let services = compose["services"].as_object().expect("services");

    // What init writes, for both: the same files, the same keys.
    let dir = tempfile::tempdir().expect("tempdir");
    let compose_state =
        DevState::ensure_layout(&dir.path().join("compose"), &MeshLayout::compose())
            .expect("compose state");
    let kubernetes_layout =
        MeshLayout::kubernetes("authmesh", "cluster.local").expect("kubernetes layout");
    let kubernetes_state =
        DevState::ensure_layout(&dir.path().join("kubernetes"), &kubernetes_layout)
            .expect("kubernetes state");
    let compose_files = state_files(compose_state.dir());
    let kubernetes_files = state_files(kubernetes_state.dir());
    assert_eq!(
        compose_files.keys().collect::<Vec<_>>(),
        kubernetes_files.keys().collect::<Vec<_>>(),
        "init writes other files"
    );
    // Where the servers are and how they find each other: the only values
    // that differ.
    let placement: BTreeSet<&str> = [
        "token-service.toml:.issuer",
        "token-service.toml:.store.endpoints",
        "orders.toml:.auth.issuer",
        "orders.toml:.token_service.url",
        "orders.toml:.inventory.url",
        "inventory.toml:.auth.issuer",
        "inventory.toml:.token_service.url",
        // Not placement: each state's own secret, hashed.
        "token-service.toml:.clients[].secret_hash",
    ]
    .into();
    for (file, keys) in &compose_files {
        let theirs = &kubernetes_files[file];
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{file}: other keys"
        );
        for (key, value) in keys {
            if theirs[key] != *value {
                let at = format!("{file}:{key}");
                assert!(
                    placement.contains(at.as_str()),
                    "{at}: {value} in compose, {} in Kubernetes",
                    theirs[key]
                );
            }
        }
    }
    let kubernetes_config =
        |file: &str, key: &str| -> toml::Value { kubernetes_files[file][key].clone() };

    for kustomization in &rendered {
        let at = &kustomization.name;
        // Each compose component's workload object.
        let workloads: BTreeMap<&str, &Value> = [
            ("etcd", kustomization.object("StatefulSet", "etcd")),
            (
                "token-service",
                kustomization.object("Deployment", "token-service"),
            ),
            ("orders", kustomization.object("Deployment", "orders")),
            ("inventory", kustomization.object("Deployment", "inventory")),
            ("init", kustomization.object("Job", "init")),
        ]
        .into();
        let mut replicas: BTreeMap<&str, u64> = BTreeMap::new();
        for name in services.keys() {
            *replicas.entry(component(name)).or_default() += 1;
        }
        assert_eq!(
            replicas.keys().collect::<Vec<_>>(),
            workloads.keys().collect::<Vec<_>>(),
            "{at}: other servers"
        );

        // The renewal CronJob runs exactly the init Job's pod.
        let renew = kustomization.object("CronJob", "renew-certificates");
        assert_eq!(
            pod_spec(renew),
            pod_spec(workloads["init"]),
            "{at}: renewal != init"
        );

        // The client-kit pod has no compose counterpart (compose writes the
        // kit on the host) and must have no network path either.
        let mut pods: BTreeMap<String, Value> = BTreeMap::from([(
            "client-kit".to_owned(),
            pod_labels(kustomization.object("Deployment", "client-kit")).clone(),
        )]);
        let mut ports: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for (&name, &object) in &workloads {
            let service = &services[services
                .keys()
                .find(|s| component(s) == name)
                .expect("a compose service")];
            let container = main_container(object);
            let spec = pod_spec(object);
            pods.insert(name.to_owned(), pod_labels(object).clone());
            if name != "init" {
                assert_eq!(
                    object["spec"]["replicas"], replicas[name],
                    "{at}: {name} replicas"
                );
            }

            // The same program, with the same settings.
            let compose_command = strings(&service["command"]);
            let command = strings(&container["command"]);
            assert_eq!(command[0], compose_command[0], "{at}: {name}'s program");
            if name != "etcd" && name != "init" {
                assert_eq!(command, compose_command, "{at}: {name}'s command");
            }
            let compose_settings = compose_settings(service);
            let settings = kubernetes_settings(container);
            assert_eq!(
                compose_settings.keys().collect::<Vec<_>>(),
                settings.keys().collect::<Vec<_>>(),
                "{at}: {name}'s settings"
            );
            for (key, value) in &compose_settings {
                if !PER_REPLICA_SETTINGS.contains(&key.as_str()) {
                    assert_eq!(&settings[key], value, "{at}: {name}'s {key}");
                }
            }
            if name == "token-service" {
                assert_eq!(
                    settings["AUTHMESH_STORE__REPLICA_ID"], "fieldRef:metadata.name",
                    "{at}: each pod a replica of its own"
                );
            }
            if name == "etcd" {
                // The members the token service is configured with.
                let toml::Value::Array(endpoints) =
                    kubernetes_config("token-service.toml", ".store.endpoints")
                else {
                    panic!("etcd endpoints");
                };
                let peers: Vec<String> = endpoints
                    .iter()
                    .map(|e| {
                        let (host, _) = host_port(e.as_str().expect("a URL"));
                        let member = host.split('.').next().expect("a member").to_owned();
                        format!(
                            "{member}=https://{}:2380",
                            host.replace(".authmesh.", ".$(POD_NAMESPACE).")
                        )
                    })
                    .collect();
                assert_eq!(settings["ETCD_INITIAL_CLUSTER"], peers.join(","), "{at}");
                assert_eq!(
                    settings["ETCD_ADVERTISE_CLIENT_URLS"],
                    "https://$(POD_NAME).etcd.$(POD_NAMESPACE).svc:2379",
                    "{at}"
                );
                assert_eq!(
                    object["spec"]["serviceName"], "etcd",
                    "{at}: members named through the headless Service"
                );
            }

            // The same user, on a read-only root filesystem without capabilities.
            let user = format!(
                "{}:{}",
                spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
            );
            if name != "init" {
                assert_eq!(service["user"], user.as_str(), "{at}: {name}'s user");
                assert!(
                    spec["securityContext"].get("fsGroup").is_none() || name == "etcd",
                    "{at}: {name} would give the state volume to its group"
                );
            }
            assert_eq!(service["read_only"], true);
            for c in spec["containers"]
                .as_array()
                .into_iter()
                .chain(spec["initContainers"].as_array())
                .flatten()
            {
                let security = &c["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{at}: {name}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{at}: {name}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
                assert!(c["resources"]["requests"].is_object(), "{at}: {name}");
                assert!(c["resources"]["limits"].is_object(), "{at}: {name}");
            }
            assert_eq!(
                spec["securityContext"]["runAsNonRoot"], true,
                "{at}: {name}"
            );

            // The same volumes, at the same places: the state read-only to
            // every server, what a server writes on a volume of its own.
            let mounts: BTreeMap<String, bool> = container["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .map(|m| {
                    (
                        m["mountPath"].as_str().expect("path").to_owned(),
                        m["readOnly"] == true,
                    )
                })
                .collect();
            let compose_mounts: BTreeMap<String, bool> = service["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|v| v.starts_with("state:") || !v.contains("${"))
                .map(|v| {
                    let mut parts = v.split(':').skip(1);
                    let path = parts.next().expect("a path").to_owned();
                    (path, parts.next() == Some("ro"))
                })
                .filter(|(path, _)| path != "/kit")
                .collect();
            assert_eq!(mounts, compose_mounts, "{at}: {name}'s volumes");

            if name == "init" {
                // The init hands each server its key by the server's group,
                // where compose hands it to its user.
                let owners: BTreeMap<String, String> = compose_command
                    .windows(2)
                    .filter(|w| w[0] == "--owner")
                    .map(|w| {
                        let (workload, ids) = w[1].split_once('=').expect("WORKLOAD=UID");
                        (
                            workload.to_owned(),
                            ids.split(':').next().expect("uid").to_owned(),
                        )
                    })
                    .collect();
                let readers: BTreeMap<String, String> = command
                    .windows(2)
                    .filter(|w| w[0] == "--reader")
                    .map(|w| {
                        let (workload, gid) = w[1].split_once('=').expect("WORKLOAD=GID");
                        (workload.to_owned(), gid.to_owned())
                    })
                    .collect();
                for (workload, uid) in &owners {
                    assert_eq!(readers.get(workload), Some(uid), "{at}: {workload}'s key");
                    let server = workloads[workload.as_str()];
                    assert_eq!(
                        pod_spec(server)["securityContext"]["runAsGroup"].to_string(),
                        *uid,
                        "{at}: {workload} runs with the group its key is handed to"
                    );
                }
                let groups = &spec["securityContext"]["supplementalGroups"];
                for gid in readers.values() {
                    assert!(
                        groups
                            .as_array()
                            .is_some_and(|g| g.iter().any(|x| x.as_u64() == gid.parse().ok())),
                        "{at}: init cannot hand files to group {gid}"
                    );
                }
                assert_eq!(service["network_mode"], "none");
                continue;
            }

            // The same health check.
            let mut health = strings(&service["healthcheck"]["test"]);
            assert_eq!(health.remove(0), "CMD");
            assert_eq!(
                strings(&container["readinessProbe"]["exec"]["command"]),
                health,
                "{at}: {name}'s health check"
            );
            assert!(container["livenessProbe"].is_object(), "{at}: {name}");

            // The same ports: what compose publishes (or etcd listens on).
            let container_ports: BTreeSet<u16> = container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| p["containerPort"].as_u64().expect("port") as u16)
                .collect();
            let mut compose_ports: BTreeSet<u16> = service["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let p = p.as_str().expect("host:port:port");
                    p.rsplit(':').next().expect("port").parse().expect("number")
                })
                .collect();
            for key in ["ETCD_LISTEN_CLIENT_URLS", "ETCD_LISTEN_PEER_URLS"] {
                if let Some(url) = compose_settings.get(key) {
                    compose_ports.insert(host_port(url).1);
                }
            }
            assert_eq!(container_ports, compose_ports, "{at}: {name}'s ports");
            ports.insert(name.to_owned(), container_ports);
        }

        // The configurations' ports are the containers' and Services'.
        let port_of = |file: &str, key: &str| -> u16 {
            let toml::Value::String(listen) = kubernetes_config(file, key) else {
                panic!("{file} {key}");
            };
            listen
                .rsplit(':')
                .next()
                .expect("port")
                .parse()
                .expect("port")
        };
        for (name, file) in [
            ("token-service", "token-service.toml"),
            ("orders", "orders.toml"),
            ("inventory", "inventory.toml"),
        ] {
            let listening: BTreeSet<u16> =
                [port_of(file, ".listen"), port_of(file, ".metrics_listen")].into();
            assert_eq!(ports[name], listening, "{at}: {name} listens elsewhere");
        }

        // Each URL in the configurations names a Service of this namespace
        // whose port reaches its pods' port of the same number.
        let service_for = |host: &str, port: u16| -> String {
            let name = if let Some(member) = host.strip_suffix(".etcd.authmesh.svc") {
                assert!(member.starts_with("etcd-"), "{host}");
                "etcd"
            } else {
                host.strip_suffix(".authmesh.svc")
                    .unwrap_or_else(|| panic!("{host}: not a Service of the namespace"))
            };
            let service = kustomization.object("Service", name);
            let selected: Vec<&String> = pods
                .iter()
                .filter(|(_, labels)| {
                    selects(&service["spec"]["selector"].clone().into_selector(), labels)
                })
                .map(|(component, _)| component)
                .collect();
            assert_eq!(
                selected.len(),
                1,
                "{at}: Service {name} selects {selected:?}"
            );
            let entry = service["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["port"] == port)
                .unwrap_or_else(|| panic!("{at}: Service {name} has no port {port}"));
            let target = &entry["targetPort"];
            let container = main_container(workloads[selected[0].as_str()]);
            let target_port = container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["name"] == *target || p["containerPort"] == *target)
                .expect("target port")["containerPort"]
                .clone();
            assert_eq!(target_port, port, "{at}: Service {name}:{port}");
            selected[0].clone()
        };
        let url = |file: &str, key: &str| -> String {
            match kubernetes_config(file, key) {
                toml::Value::String(url) => url,
                other => panic!("{file} {key}: {other}"),
            }
        };
        // Every connection the mesh opens, from its configurations.
        let mut needed = Paths::new();
        for (from, file, key) in [
            ("orders", "orders.toml", ".token_service.url"),
            ("orders", "orders.toml", ".inventory.url"),
            ("inventory", "inventory.toml", ".token_service.url"),
        ] {
            let (host, port) = host_port(&url(file, key));
            needed.insert((from.to_owned(), service_for(&host, port), port));
        }
        if let toml::Value::Array(endpoints) =
            kubernetes_config("token-service.toml", ".store.endpoints")
        {
            for endpoint in endpoints {
                let (host, port) = host_port(endpoint.as_str().expect("a URL"));
                needed.insert(("token-service".into(), service_for(&host, port), port));
            }
        }
        for port in [2379, 2380] {
            needed.insert(("etcd".into(), "etcd".into(), port));
        }
        // What compose publishes on the host is reachable from outside.
        for (name, service) in services {
            for published in service["ports"].as_array().into_iter().flatten() {
                let port = published
                    .as_str()
                    .and_then(|p| p.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("a port");
                needed.insert((OUTSIDE.into(), component(name).to_owned(), port));
            }
        }

        // Compose: two components reach each other on any port the target
        // listens on when they share a network; the host reaches what is
        // published.
        let networks = |name: &str| -> BTreeSet<String> {
            services
                .iter()
                .filter(|(s, _)| component(s) == name)
                .flat_map(|(_, service)| match &service["networks"] {
                    Value::Array(names) => names
                        .iter()
                        .map(|n| n.as_str().expect("network").to_owned())
                        .collect::<Vec<_>>(),
                    Value::Object(names) => names.keys().cloned().collect(),
                    _ => Vec::new(),
                })
                .collect()
        };
        let mut compose_paths = Paths::new();
        for from in pods.keys() {
            for (to, to_ports) in &ports {
                if !networks(from).is_disjoint(&networks(to)) {
                    for &port in to_ports {
                        compose_paths.insert((from.clone(), to.clone(), port));
                    }
                }
            }
        }
        compose_paths.extend(
            needed
                .iter()
                .filter(|(from, _, _)| from == OUTSIDE)
                .cloned(),
        );

        let allowed = kubernetes_paths(kustomization, &pods, &ports);
        let missing: Vec<_> = needed.difference(&allowed).collect();
        assert!(
            missing.is_empty(),
            "{at}: NetworkPolicies refuse {missing:?}"
        );
        let missing: Vec<_> = needed.difference(&compose_paths).collect();
        assert!(
            missing.is_empty(),
            "{at}: compose networks refuse {missing:?}"
        );
        let extra: Vec<_> = allowed.difference(&compose_paths).collect();
        assert!(
            extra.is_empty(),
            "{at}: NetworkPolicies allow what compose does not: {extra:?}"
        );
        // Nothing reaches etcd but its members and the token service, and
        // the init has no network at all.
        for (from, to, _) in &allowed {
            if to == "etcd" {
                assert!(
                    from == "etcd" || from == "token-service",
                    "{at}: {from} -> etcd"
                );
            }
            for isolated in ["init", "client-kit"] {
                assert!(
                    from != isolated && to != isolated,
                    "{at}: {isolated} on the network"
                );
            }
        }
        eprintln!(
            "{at}: {} network paths allowed, all within compose's {}; the {} the mesh uses among them",
            allowed.len(),
            compose_paths.len(),
            needed.len()
        );
    }
}

/// A Service's `selector` is a plain label map: as a label selector.
trait IntoSelector {
    fn into_selector(self) -> Value;
}

impl IntoSelector for Value {
    fn into_selector(self) -> Value {
        serde_json::json!({ "matchLabels": self })
    }
}
