//! The dev state behind `authmesh up`: under one directory (`.authmesh/` by
//! default) a CA and server certificates, the issuer's signing keys, client
//! secrets and one configuration file per service. Created on first start,
//! reused after; the files are exactly what each service binary reads when
//! it runs alone, so `up` and the standalone binaries share one code path.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use service_runtime::{
    AuthConfig, ClientAuth, Loaded, RuntimeError, ServerTlsFiles, Transport, TrustedIssuerConfig,
    UpstreamConfig,
    files::{read_to_string, write_private, write_public},
    load_config,
    pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert, spiffe_id},
};

/// The dev client `authmesh token mint` uses by default.
pub const DEMO_CLIENT: &str = "demo-cli";

/// The dev operator client `authmesh revoke` uses by default (mTLS only, may revoke).
pub const OPERATOR_CLIENT: &str = "operator";

/// Lifetime of the workload certificates `up` issues.
pub const WORKLOAD_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub use crate::local_idp::LocalIdpConfig;

/// Every workload of the dev mesh and the DNS names it also serves as.
pub const WORKLOADS: [(&str, &[&str]); 5] = [
    ("token-service", &["localhost", "token-service"]),
    ("orders", &["localhost", "orders"]),
    // `inventory.mesh`: the name orders uses in the compose cluster, an
    // alias on the service network only, so that cutting inventory off the
    // issuer's network never moves orders' connections.
    ("inventory", &["localhost", "inventory", "inventory.mesh"]),
    (DEMO_CLIENT, &[]),
    (OPERATOR_CLIENT, &[]),
];

/// Default ports of `authmesh up`.
pub const DEFAULT_PORTS: MeshAddrs = MeshAddrs {
    token_service: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051),
    orders: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50052),
    inventory: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053),
    idp: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50443),
};

/// The exchange rule of the dev mesh: orders may act at inventory for the
/// users of the local issuer whose tokens let them place orders.
pub const ORDERS_FOR_USERS: &str = "orders-for-users";

/// How the token service replicas are reached in the compose cluster
/// (docker-compose.yml): one name for both.
pub const COMPOSE_TOKEN_SERVICE_URL: &str = "https://token-service:50051";
/// How orders reaches inventory in the compose cluster.
pub const COMPOSE_INVENTORY_URL: &str = "https://inventory.mesh:50053";
/// The compose cluster's etcd members, by service name (docker-compose.yml).
pub const COMPOSE_ETCD_MEMBERS: [&str; 3] = ["etcd-1", "etcd-2", "etcd-3"];
/// Where each token service replica of the compose cluster keeps its own
/// signing key: a volume of its own, never the shared state.
pub const COMPOSE_KEY_DIR: &str = "/var/lib/token-service/keys";
/// The etcd cluster's workload: one certificate for its members (serving
/// clients and peers), with every member's name.
pub const ETCD_WORKLOAD: (&str, &[&str]) = ("etcd", &["localhost", "etcd-1", "etcd-2", "etcd-3"]);
/// How many members the Kubernetes StatefulSet `etcd` runs
/// (deploy/kubernetes/base/etcd.yaml): pods `etcd-0` to `etcd-2`.
pub const KUBERNETES_ETCD_MEMBERS: usize = 3;

/// A workload certificate a state issues: the workload and the DNS names
/// it serves as (none for a client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadNames {
    /// The workload, also its certificate's file name under `tls/`.
    pub workload: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

impl WorkloadNames {
    fn new(workload: &str, dns_names: &[&str]) -> Self {
        Self {
            workload: workload.to_owned(),
            dns_names: dns_names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    /// The certificates of the one-host and compose states: [`WORKLOADS`],
    /// and etcd's when the mesh runs on it.
    fn fixed(etcd: bool) -> Vec<Self> {
        WORKLOADS
            .iter()
            .chain(etcd.then_some(&ETCD_WORKLOAD))
            .map(|(workload, names)| Self::new(workload, names))
            .collect()
    }
}

/// How the generated configurations place the servers: where each listens,
/// how the others reach it, and what the demo inventory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshLayout {
    /// Listen addresses.
    pub listen: MeshAddrs,
    /// `iss` of the tokens, and the base of the discovery URLs.
    pub issuer: String,
    /// How orders and inventory reach the token service.
    pub token_service_url: String,
    /// How orders reaches inventory.
    pub inventory_url: String,
    /// Where each server serves `/metrics` (each in its own process), if anywhere.
    pub metrics_listen: Option<String>,
    /// Inventory's starting stock.
    pub stock: BTreeMap<String, u32>,
    /// The issuer's key directory, relative to the state directory.
    pub key_dir: PathBuf,
    /// The token service's revocations file, relative to the state directory.
    pub revocations_file: PathBuf,
    /// Where the token service replicas share their state: files beside
    /// the configuration, or etcd.
    pub store: token_service::StoreConfig,
    /// Whether inventory consumes one-time tokens through the token
    /// service (as it must when it runs as several replicas behind one name).
    pub one_time_via_token_service: bool,
    /// The demo's local OIDC issuer, whose users orders acts for; none in
    /// the compose cluster.
    pub idp: Option<LocalIdpConfig>,
    /// The workload certificates to issue, and the names each serves as.
    pub certificates: Vec<WorkloadNames>,
    /// The Kubernetes namespace the servers run in, for a Kubernetes layout.
    pub kubernetes: Option<KubernetesNamespace>,
}

/// Where a Kubernetes layout's servers run: their namespace, and the
/// cluster's DNS domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesNamespace {
    /// The namespace.
    pub namespace: String,
    /// The cluster's DNS domain (`cluster.local` by default).
    pub cluster_domain: String,
}

impl KubernetesNamespace {
    /// Every name a pod may reach the Service `name` by (`name`,
    /// `name.ns`, `name.ns.svc`, `name.ns.svc.<domain>`), and `localhost`
    /// (probes, `kubectl port-forward`).
    fn service_names(&self, name: &str) -> Vec<String> {
        let svc = format!("{name}.{}.svc", self.namespace);
        vec![
            "localhost".into(),
            name.into(),
            format!("{name}.{}", self.namespace),
            format!("{svc}.{}", self.cluster_domain),
            svc,
        ]
    }
}

impl MeshLayout {
    /// One host: everything on `addrs`, reached through `localhost` (`authmesh up`, tests).
    pub fn local(addrs: MeshAddrs) -> Self {
        let issuer = issuer_url(addrs.token_service);
        Self {
            token_service_url: issuer.clone(),
            inventory_url: format!("https://localhost:{}", addrs.inventory.port()),
            issuer,
            listen: addrs,
            metrics_listen: None,
            stock: BTreeMap::from([("sku-1".into(), 100), ("sku-2".into(), 5)]),
            key_dir: "keys".into(),
            revocations_file: "revocations.json".into(),
            store: token_service::StoreConfig::Files,
            one_time_via_token_service: false,
            idp: Some(LocalIdpConfig {
                listen: addrs.idp.to_string(),
                issuer: format!("https://localhost:{}", addrs.idp.port()),
                key_file: "idp/rs256-key.pem".into(),
            }),
            certificates: WorkloadNames::fixed(false),
            kubernetes: None,
        }
    }

    /// The compose cluster: each server in its own container, listening on
    /// all interfaces at its default port and reached by service name. The
    /// issuer stays `https://localhost:50051`, the published port, so the
    /// discovery URLs work from the host. The token service replicas share
    /// their state through the three etcd members over mTLS, each keeping
    /// its signing key in a volume of its own; inventory's replicas consume
    /// one-time tokens through the token service. Stock is deep enough for
    /// the steady traffic of the fault drills.
    pub fn compose() -> Self {
        let any =
            |port| SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
        Self {
            listen: MeshAddrs {
                token_service: any(DEFAULT_PORTS.token_service.port()),
                orders: any(DEFAULT_PORTS.orders.port()),
                inventory: any(DEFAULT_PORTS.inventory.port()),
                idp: any(DEFAULT_PORTS.idp.port()),
            },
            issuer: issuer_url(DEFAULT_PORTS.token_service),
            token_service_url: COMPOSE_TOKEN_SERVICE_URL.into(),
            inventory_url: COMPOSE_INVENTORY_URL.into(),
            metrics_listen: Some("0.0.0.0:9464".into()),
            stock: BTreeMap::from([("sku-1".into(), 100_000_000), ("sku-2".into(), 5)]),
            key_dir: COMPOSE_KEY_DIR.into(),
            // Unused with etcd, but in a directory of its own all the same,
            // so it can be handed to the token service's user alone.
            revocations_file: "issuer/revocations.json".into(),
            store: token_service::StoreConfig::Etcd(token_service::store::EtcdConfig {
                endpoints: COMPOSE_ETCD_MEMBERS
                    .iter()
                    .map(|member| format!("https://{member}:2379"))
                    .collect(),
                prefix: "/authmesh/".into(),
                tls: Some(token_service::store::EtcdTls {
                    ca: "tls/ca.pem".into(),
                    cert: "tls/token-service.pem".into(),
                    key: "tls/token-service-key.pem".into(),
                }),
                // Each replica is named by its AUTHMESH_STORE__REPLICA_ID.
                replica_id: None,
                session_ttl_seconds: 10,
                publish_lead_seconds: 65,
            }),
            one_time_via_token_service: true,
            idp: None,
            certificates: WorkloadNames::fixed(true),
            kubernetes: None,
        }
    }

    /// A Kubernetes namespace (deploy/kubernetes): the compose cluster's
    /// servers and settings, reached through their Services'
    /// `<name>.<namespace>.svc` names; the etcd members are the pods of
    /// the `etcd` StatefulSet behind its headless Service. The issuer is
    /// the token service's in-cluster URL. Each server's certificate names
    /// its Service by every form a pod may use (`name`, `name.ns`,
    /// `name.ns.svc`, `name.ns.svc.<cluster_domain>`) and `localhost` (for
    /// probes and `kubectl port-forward`).
    ///
    /// # Errors
    /// [`StateError::Layout`] when `namespace` or `cluster_domain` is not a
    /// DNS name Kubernetes accepts.
    pub fn kubernetes(namespace: &str, cluster_domain: &str) -> Result<Self, StateError> {
        if !is_dns_label(namespace) {
            return Err(StateError::Layout(format!(
                "namespace {namespace:?}: expected a DNS label (lowercase letters, digits and '-', at most 63)"
            )));
        }
        if cluster_domain.is_empty() || !cluster_domain.split('.').all(is_dns_label) {
            return Err(StateError::Layout(format!(
                "cluster domain {cluster_domain:?}: expected a DNS name such as cluster.local"
            )));
        }
        let placement = KubernetesNamespace {
            namespace: namespace.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
        };
        let service_url = |name: &str, port: u16| format!("https://{name}.{namespace}.svc:{port}");
        // A member is reached through the headless Service: `etcd-<i>.etcd`.
        let pods: Vec<String> = (0..KUBERNETES_ETCD_MEMBERS)
            .map(|i| format!("etcd-{i}.etcd"))
            .collect();
        let mut certificates: Vec<WorkloadNames> = WORKLOADS
            .iter()
            .map(|&(workload, names)| WorkloadNames {
                workload: workload.to_owned(),
                dns_names: if names.is_empty() {
                    Vec::new()
                } else {
                    placement.service_names(workload)
                },
            })
            .collect();
        certificates.push(WorkloadNames {
            workload: ETCD_WORKLOAD.0.to_owned(),
            dns_names: std::iter::once("localhost".to_owned())
                .chain(pods.iter().flat_map(|pod| {
                    [
                        pod.clone(),
                        format!("{pod}.{namespace}.svc"),
                        format!("{pod}.{namespace}.svc.{cluster_domain}"),
                    ]
                }))
                .collect(),
        });
        let compose = Self::compose();
        let token_service_url = service_url("token-service", DEFAULT_PORTS.token_service.port());
        let store = match compose.store {
            token_service::StoreConfig::Etcd(etcd) => {
                token_service::StoreConfig::Etcd(token_service::store::EtcdConfig {
                    endpoints: pods
                        .iter()
                        .map(|pod| format!("https://{pod}.{namespace}.svc:2379"))
                        .collect(),
                    ..etcd
                })
            }
            files => files,
        };
        Ok(Self {
            issuer: token_service_url.clone(),
            token_service_url,
            inventory_url: service_url("inventory", DEFAULT_PORTS.inventory.port()),
            store,
            certificates,
            kubernetes: Some(placement),
            ..compose
        })
    }

    /// Adds a workload of the user's own: its certificate is issued and
    /// renewed with the mesh's, serving as its Service's names in a
    /// Kubernetes layout (as `localhost` and its name otherwise).
    ///
    /// # Errors
    /// [`StateError::Layout`] when `name` is not a DNS label or is taken.
    pub fn add_workload(&mut self, name: &str) -> Result<(), StateError> {
        if !is_dns_label(name) {
            return Err(StateError::Layout(format!(
                "workload {name:?}: expected a DNS label (lowercase letters, digits and '-', at most 63)"
            )));
        }
        if self.certificates.iter().any(|c| c.workload == name) || name == CLIENT_KIT {
            return Err(StateError::Layout(format!(
                "workload {name:?} is one of the mesh's own"
            )));
        }
        let dns_names = match &self.kubernetes {
            Some(placement) => placement.service_names(name),
            None => vec!["localhost".into(), name.into()],
        };
        self.certificates.push(WorkloadNames {
            workload: name.to_owned(),
            dns_names,
        });
        Ok(())
    }

    /// Whether this layout issues a certificate for `workload`.
    pub fn has_workload(&self, workload: &str) -> bool {
        self.certificates.iter().any(|c| c.workload == workload)
    }

    fn uses_etcd(&self) -> bool {
        !self.store.is_files()
    }
}

/// Where each server of the mesh listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshAddrs {
    /// Token service.
    pub token_service: SocketAddr,
    /// Orders (SERVER1).
    pub orders: SocketAddr,
    /// Inventory (SERVER2).
    pub inventory: SocketAddr,
    /// The demo's local OIDC issuer (HTTPS).
    pub idp: SocketAddr,
}

/// Why the dev state could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Files, PKI or configuration.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A generated configuration could not be written.
    #[error("writing configuration: {0}")]
    Serialize(#[from] toml::ser::Error),
    /// Hashing a client secret failed.
    #[error("{0}")]
    Secret(String),
    /// The state cannot be arranged as asked.
    #[error("{0}")]
    Layout(String),
    /// The issuer's signing key could not be created or loaded.
    #[error(transparent)]
    Keys(#[from] token_service::StartError),
}

/// The dev state directory and the configurations in it.
#[derive(Debug, Clone)]
pub struct DevState {
    dir: PathBuf,
}

impl DevState {
    /// Creates whatever is missing under `dir` for a mesh listening on
    /// `addrs`, and keeps what exists (keys, secrets, edited configs).
    ///
    /// # Errors
    /// [`StateError`] when files cannot be created.
    pub fn ensure(dir: &Path, addrs: MeshAddrs) -> Result<Self, StateError> {
        Self::ensure_layout(dir, &MeshLayout::local(addrs))
    }

    /// Creates whatever is missing under `dir` for `layout`, keeping what
    /// exists, including the issuer's signing key: token service replicas
    /// sharing the directory then never race to create it.
    ///
    /// # Errors
    /// [`StateError`] when files cannot be created.
    pub fn ensure_layout(dir: &Path, layout: &MeshLayout) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Io {
            action: "creating",
            path: dir.to_path_buf(),
            source: e,
        })?;
        let dir = std::fs::canonicalize(dir).map_err(|e| RuntimeError::Io {
            action: "resolving",
            path: dir.to_path_buf(),
            source: e,
        })?;
        // A state that already has its CA is not new: a file missing from it
        // was deleted, and regenerating it must not go unnoticed.
        let existing = dir.join("tls").join("ca.pem").exists();
        let state = Self { dir };
        state.renew_due(&layout.certificates)?;
        let demo_secret = state.ensure_secret(DEMO_CLIENT)?;
        let issuer = &layout.issuer;
        // Every hop is mutual TLS: each service presents its own workload certificate.
        let upstream = |url: String, workload: &str| UpstreamConfig {
            url,
            ca: Some("tls/ca.pem".into()),
            cert: Some(format!("tls/{workload}.pem").into()),
            key: Some(format!("tls/{workload}-key.pem").into()),
            failover_urls: Vec::new(),
        };
        // Orders and the token service trust the local issuer's users.
        let user_issuers: Vec<TrustedIssuerConfig> = layout
            .idp
            .iter()
            .map(|idp| TrustedIssuerConfig::discovery(&idp.issuer, "tls/ca.pem"))
            .collect();
        let tls = |name: &str, client_auth: ClientAuth| ServerTlsFiles {
            cert: format!("tls/{name}.pem").into(),
            key: format!("tls/{name}-key.pem").into(),
            client_ca: Some("tls/ca.pem".into()),
            client_auth,
        };
        write_if_missing(&state.token_service_config(), existing, || {
            let hash = |secret: &str| {
                token_service::credentials::hash_secret(secret).map_err(StateError::Secret)
            };
            let config = token_service::Config {
                listen: layout.listen.token_service.to_string(),
                issuer: issuer.clone(),
                insecure_plaintext: false,
                metrics_listen: layout.metrics_listen.clone(),
                runtime: Default::default(),
                // Optional: workloads authenticate by certificate, grpcurl users may use a secret.
                tls: Some(tls("token-service", ClientAuth::Optional)),
                key_dir: layout.key_dir.clone(),
                algorithm: auth_interceptor::SigningAlgorithm::EdDSA,
                default_ttl_seconds: 300,
                max_ttl_seconds: 3600,
                audiences: vec!["orders".into(), "inventory".into()],
                public_reflection: true,
                auth_limits: token_service::AuthLimits::default(),
                clients: vec![
                    // mTLS-only: a spiffe_id and no secret.
                    token_service::ClientConfig {
                        id: "orders".into(),
                        secret_hash: None,
                        spiffe_id: Some(spiffe_id(DEFAULT_TRUST_DOMAIN, "orders")),
                        max_ttl_seconds: None,
                        audiences: BTreeMap::from([(
                            "inventory".into(),
                            orders::INVENTORY_SCOPES
                                .iter()
                                .map(|s| (*s).to_owned())
                                .collect(),
                        )]),
                        may_revoke: false,
                    },
                    token_service::ClientConfig {
                        id: DEMO_CLIENT.into(),
                        secret_hash: Some(hash(&demo_secret)?),
                        spiffe_id: Some(spiffe_id(DEFAULT_TRUST_DOMAIN, DEMO_CLIENT)),
                        max_ttl_seconds: None,
                        audiences: BTreeMap::from([
                            ("orders".into(), vec![orders::SCOPE_WRITE.into()]),
                            ("inventory".into(), vec![inventory::SCOPE_READ.into()]),
                        ]),
                        may_revoke: false,
                    },
                    // The operator revokes tokens and mints none.
                    token_service::ClientConfig {
                        id: OPERATOR_CLIENT.into(),
                        secret_hash: None,
                        spiffe_id: Some(spiffe_id(DEFAULT_TRUST_DOMAIN, OPERATOR_CLIENT)),
                        max_ttl_seconds: None,
                        audiences: BTreeMap::new(),
                        may_revoke: true,
                    },
                ],
                revocations_file: layout.revocations_file.clone(),
                // The same files the services enforce: no token is minted
                // that their policies would refuse everywhere.
                audience_policies: BTreeMap::from([
                    ("inventory".into(), "inventory.policy.toml".into()),
                    ("orders".into(), "orders.policy.toml".into()),
                ]),
                require_audience_policies: true,
                store: layout.store.clone(),
                // The operator registers workloads at run time (`authmesh workload`).
                admin_ids: vec![spiffe_id(DEFAULT_TRUST_DOMAIN, OPERATOR_CLIENT)],
                // Beside the revocations: where the token service may write.
                workloads_file: layout.revocations_file.with_file_name("workloads.json"),
                trusted_issuers: user_issuers.clone(),
                exchange: layout
                    .idp
                    .iter()
                    .map(|idp| token_service::config::ExchangeRule {
                        name: ORDERS_FOR_USERS.into(),
                        actors: vec!["orders".into()],
                        subject_issuers: vec![idp.issuer.clone()],
                        subject_scopes: vec![orders::SCOPE_WRITE.into()],
                        audience: "inventory".into(),
                        scopes: orders::INVENTORY_SCOPES
                            .iter()
                            .map(|s| (*s).to_owned())
                            .collect(),
                        max_chain_depth: 1,
                    })
                    .collect(),
            };
            Ok(toml::to_string(&config)?)
        })?;
        write_if_missing(&state.dir.join("inventory.policy.toml"), existing, || {
            Ok(inventory::POLICY_FILE.to_owned())
        })?;
        write_if_missing(&state.dir.join("orders.policy.toml"), existing, || {
            Ok(orders::POLICY_FILE.to_owned())
        })?;
        // Only in a new state: an older one's configurations do not trust
        // the local issuer, so serving it there would only confuse.
        if let Some(idp) = layout.idp.as_ref().filter(|_| !existing) {
            write_if_missing(&state.idp_config(), existing, || Ok(toml::to_string(idp)?))?;
        }
        write_if_missing(&state.inventory_config(), existing, || {
            let config = inventory::Config {
                listen: layout.listen.inventory.to_string(),
                insecure_plaintext: false,
                metrics_listen: layout.metrics_listen.clone(),
                runtime: Default::default(),
                tls: Some(tls("inventory", ClientAuth::Required)),
                token_service: upstream(layout.token_service_url.clone(), "inventory"),
                auth: AuthConfig {
                    policy_file: Some("inventory.policy.toml".into()),
                    one_time_via_token_service: layout.one_time_via_token_service,
                    ..AuthConfig::new(issuer, "inventory")
                },
                stock: layout.stock.clone(),
            };
            Ok(toml::to_string(&config)?)
        })?;
        write_if_missing(&state.orders_config(), existing, || {
            let config = orders::Config {
                listen: layout.listen.orders.to_string(),
                insecure_plaintext: false,
                metrics_listen: layout.metrics_listen.clone(),
                runtime: Default::default(),
                tls: Some(tls("orders", ClientAuth::Required)),
                token_service: upstream(layout.token_service_url.clone(), "orders"),
                auth: AuthConfig {
                    policy_file: Some("orders.policy.toml".into()),
                    trusted_issuers: user_issuers.clone(),
                    ..AuthConfig::new(issuer, "orders")
                },
                inventory: upstream(layout.inventory_url.clone(), "orders"),
                client: orders::ClientConfig {
                    id: "orders".into(),
                    secret_file: None,
                },
            };
            Ok(toml::to_string(&config)?)
        })?;
        // With files, the key the token service would create on first
        // start, created here so that replicas starting together share one.
        // On etcd each replica creates its own, on its own disk.
        if !layout.uses_etcd() {
            let token_service = state.load_token_service()?;
            token_service::KeyStore::load_or_create(
                &token_service.path(&token_service.config.key_dir),
                token_service.config.algorithm,
                auth_interceptor::clock::system_clock(),
            )?;
        }
        Ok(state)
    }

    /// Issues the workload certificates that are missing or past half their
    /// lifetime (etcd's too, where the state has one); servers and clients
    /// watching the files pick them up without a restart. Returns how many
    /// were issued.
    ///
    /// # Errors
    /// [`RuntimeError`] when the CA or the files are unusable.
    pub fn renew_due_certificates(&self) -> Result<usize, RuntimeError> {
        let etcd = self.workload_files(ETCD_WORKLOAD.0).0.exists();
        self.renew_due(&WorkloadNames::fixed(etcd))
    }

    fn renew_due(&self, certificates: &[WorkloadNames]) -> Result<usize, RuntimeError> {
        let pki = DevPki::ensure(&self.dir.join("tls"), &[])?;
        let mut issued = 0;
        for WorkloadNames {
            workload: name,
            dns_names,
        } in certificates
        {
            let cert = self.dir.join("tls").join(format!("{name}.pem"));
            let age = std::fs::metadata(&cert)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| SystemTime::now().duration_since(modified).ok());
            if age.is_some_and(|age| age < WORKLOAD_CERT_LIFETIME / 2) {
                continue;
            }
            let dns_names: Vec<&str> = dns_names.iter().map(String::as_str).collect();
            let spec = WorkloadCert::new(
                name,
                DEFAULT_TRUST_DOMAIN,
                &dns_names,
                WORKLOAD_CERT_LIFETIME,
            );
            pki.issue_workload(&spec, &self.dir.join("tls"))?;
            issued += 1;
        }
        Ok(issued)
    }

    /// A workload's certificate and key.
    pub fn workload_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let tls = self.dir.join("tls");
        (
            tls.join(format!("{name}.pem")),
            tls.join(format!("{name}-key.pem")),
        )
    }

    /// Gives each server's private files to the user it runs as, and
    /// nothing else: `tls/<workload>-key.pem` to each workload (`etcd`
    /// included), and to a token service on files also its key directory
    /// and the directory of its revocations file, which it writes (on etcd
    /// it writes nothing here: its key is on a volume of its own). The CA key, the demo clients' keys
    /// and secrets and every public file keep their owner (root, in the
    /// compose cluster), so no server can read another's key, mint with
    /// the issuer's key or issue certificates.
    ///
    /// Handed over by group ([`WorkloadOwner::parse_reader`], what an
    /// unprivileged init does in Kubernetes), a key keeps its owner and
    /// becomes readable by that group alone (0640).
    ///
    /// Nothing is followed through symbolic links: files are changed with
    /// `lchown`, and the key directory is listed one level deep.
    ///
    /// # Errors
    /// [`StateError`] naming the path that could not be changed, or a
    /// layout whose revocations file is not in a directory of its own (or
    /// a token service on files handed over by group).
    pub fn hand_over(&self, owners: &[WorkloadOwner]) -> Result<(), StateError> {
        for owner in owners {
            if owner.workload == CLIENT_KIT {
                for file in client_kit_files().private {
                    owner.apply(&self.dir.join(file))?;
                }
                continue;
            }
            let (_, key) = self.workload_files(&owner.workload);
            owner.apply(&key)?;
            if owner.workload != "token-service" {
                continue;
            }
            let config = self.load_token_service()?;
            if !config.config.store.is_files() {
                continue;
            }
            if owner.uid.is_none() {
                return Err(StateError::Layout(
                    "a token service on files writes its keys and revocations in the state: hand them over with --owner, not by group".into(),
                ));
            }
            let key_dir = config.path(&config.config.key_dir);
            let revocations = config.path(&config.config.revocations_file);
            let writable = revocations
                .parent()
                .filter(|dir| *dir != self.dir && dir.starts_with(&self.dir))
                .ok_or_else(|| {
                    StateError::Layout(format!(
                        "{}: the revocations file must be in a directory of its own under the state directory to be handed over",
                        revocations.display()
                    ))
                })?;
            owner.apply(writable)?;
            owner.apply(&key_dir)?;
            let entries = std::fs::read_dir(&key_dir)
                .map_err(|e| RuntimeError::io("listing", &key_dir, e))?;
            for entry in entries {
                let path = entry
                    .map_err(|e| RuntimeError::io("listing", &key_dir, e))?
                    .path();
                if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                    owner.apply(&path)?;
                }
            }
            if revocations.exists() {
                owner.apply(&revocations)?;
            }
        }
        Ok(())
    }

    /// Copies what a client on the host needs into `kit`, laid out like a
    /// state directory (so `--state-dir <kit>` works for minting, revoking
    /// and health checks): the CA certificate, the demo-cli and operator
    /// certificates and keys, and demo-cli's secret. Never the CA key, the
    /// issuer's keys or any server key. The files are given to the owner of
    /// `kit`, the user who created it on the host.
    ///
    /// # Errors
    /// [`RuntimeError::Io`] when a file cannot be read or written.
    pub fn export_client_kit(&self, kit: &Path) -> Result<(), RuntimeError> {
        let ClientKitFiles { public, private } = client_kit_files();
        for (files, write) in [
            (
                &public,
                write_public as fn(&Path, &[u8]) -> Result<(), RuntimeError>,
            ),
            (&private, write_private),
        ] {
            for file in files {
                let from = self.dir.join(file);
                let contents =
                    std::fs::read(&from).map_err(|e| RuntimeError::io("reading", &from, e))?;
                write(&kit.join(file), &contents)?;
            }
        }
        // Only what was written here changes owner: `kit` may be any directory.
        let owner = std::fs::metadata(kit).map_err(|e| RuntimeError::io("reading", kit, e))?;
        let owner = WorkloadOwner {
            workload: String::new(),
            uid: Some(owner.uid()),
            gid: owner.gid(),
        };
        for path in ["tls", "clients"]
            .iter()
            .map(PathBuf::from)
            .chain(public)
            .chain(private)
        {
            owner.apply(&kit.join(path))?;
        }
        Ok(())
    }

    /// An existing state directory, without creating anything.
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn ensure_secret(&self, client: &str) -> Result<String, StateError> {
        let path = self.secret_file(client);
        if path.exists() {
            return Ok(read_to_string(&path)?.trim().to_owned());
        }
        let secret = token_service::credentials::generate_secret();
        write_private(&path, secret.as_bytes())?;
        Ok(secret)
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The dev CA certificate every client trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("tls/ca.pem")
    }

    /// A client's secret file.
    pub fn secret_file(&self, client: &str) -> PathBuf {
        self.dir.join("clients").join(format!("{client}.secret"))
    }

    /// `token-service.toml`.
    pub fn token_service_config(&self) -> PathBuf {
        self.dir.join("token-service.toml")
    }

    /// `orders.toml`.
    pub fn orders_config(&self) -> PathBuf {
        self.dir.join("orders.toml")
    }

    /// `inventory.toml`.
    pub fn inventory_config(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    /// `idp.toml`: the demo's local OIDC issuer.
    pub fn idp_config(&self) -> PathBuf {
        self.dir.join("idp.toml")
    }

    /// The local OIDC issuer's configuration, when this state has one (the
    /// compose cluster's does not).
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an invalid file.
    pub fn load_idp(&self) -> Result<Option<Loaded<LocalIdpConfig>>, RuntimeError> {
        let path = self.idp_config();
        if !path.exists() {
            return Ok(None);
        }
        load_config(&path, std::iter::empty()).map(Some)
    }

    /// TLS settings for a plain HTTPS server (HTTP/1.1 in ALPN) presenting
    /// `workload`'s certificate, and the transport that keeps reloading it
    /// (keep it while serving).
    ///
    /// # Errors
    /// [`RuntimeError`] when the certificate or key is unusable.
    pub fn https_server_config(
        &self,
        workload: &str,
    ) -> Result<(Arc<rustls::ServerConfig>, Transport), RuntimeError> {
        let (cert, key) = self.workload_files(workload);
        let files = ServerTlsFiles {
            cert: cert.clone(),
            key,
            client_ca: None,
            client_auth: ClientAuth::None,
        };
        let transport = Transport::from_config(Some(&files), false, &self.dir)?;
        let Transport::Tls { config, .. } = &transport else {
            return Err(RuntimeError::io(
                "serving HTTPS with",
                cert,
                std::io::Error::other("no TLS configuration"),
            ));
        };
        let mut http1 = rustls::ServerConfig::clone(config);
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((Arc::new(http1), transport))
    }

    /// The token service configuration, as its binary would load it (no env overrides).
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an invalid file.
    pub fn load_token_service(&self) -> Result<Loaded<token_service::Config>, RuntimeError> {
        load_config(&self.token_service_config(), std::iter::empty())
    }

    /// The orders configuration.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an invalid file.
    pub fn load_orders(&self) -> Result<Loaded<orders::Config>, RuntimeError> {
        load_config(&self.orders_config(), std::iter::empty())
    }

    /// The inventory configuration.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for an invalid file.
    pub fn load_inventory(&self) -> Result<Loaded<inventory::Config>, RuntimeError> {
        load_config(&self.inventory_config(), std::iter::empty())
    }
}

/// The files of the client kit, relative to a state directory.
pub struct ClientKitFiles {
    /// The CA certificate, the demo-cli and operator certificates.
    pub public: Vec<PathBuf>,
    /// The demo-cli and operator keys, demo-cli's secret.
    pub private: Vec<PathBuf>,
}

/// What a client outside the mesh needs to mint, revoke and check health
/// as the demo client or the operator, and nothing else.
pub fn client_kit_files() -> ClientKitFiles {
    let mut public = vec![PathBuf::from("tls/ca.pem")];
    let mut private = vec![PathBuf::from(format!("clients/{DEMO_CLIENT}.secret"))];
    for client in [DEMO_CLIENT, OPERATOR_CLIENT] {
        public.push(format!("tls/{client}.pem").into());
        private.push(format!("tls/{client}-key.pem").into());
    }
    ClientKitFiles { public, private }
}

/// Writes what `contents` builds to `path` unless the file exists, so
/// state a user edited (or a secret already issued) is never overwritten.
/// Writes `path` unless it exists; in an `existing` state, says so on
/// standard error, since the file was deleted and now has the defaults.
fn write_if_missing(
    path: &Path,
    existing: bool,
    contents: impl FnOnce() -> Result<String, StateError>,
) -> Result<(), StateError> {
    if !path.exists() {
        write_public(path, contents()?.as_bytes())?;
        if existing {
            eprintln!(
                "warning: {} was missing; wrote it again with the defaults",
                path.display()
            );
        }
    }
    Ok(())
}

/// Whether `workload` runs a server of the mesh (or is [`CLIENT_KIT`]).
pub fn is_mesh_server(workload: &str) -> bool {
    SERVERS.contains(&workload)
}

/// The workloads that run a server: the first three of [`WORKLOADS`] (the
/// rest are clients) and etcd; and [`CLIENT_KIT`], the pod that hands the
/// client kit to operators.
const SERVERS: [&str; 5] = [
    WORKLOADS[0].0,
    WORKLOADS[1].0,
    WORKLOADS[2].0,
    ETCD_WORKLOAD.0,
    CLIENT_KIT,
];

/// What [`DevState::hand_over`] calls the holder of the client kit's
/// private files (the Kubernetes `client-kit` pod).
pub const CLIENT_KIT: &str = "client-kit";

/// The user a workload's server runs as, for [`DevState::hand_over`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadOwner {
    /// `token-service`, `orders`, `inventory`, `etcd` or [`CLIENT_KIT`];
    /// handed over by group, also a workload of the user's own
    /// ([`MeshLayout::add_workload`]).
    pub workload: String,
    /// User id; `None` keeps the owner and hands the files over by group
    /// alone (readable, never writable, by it), which needs no privilege
    /// when the group is one of the caller's.
    pub uid: Option<u32>,
    /// Group id.
    pub gid: u32,
}

impl WorkloadOwner {
    /// Parses `WORKLOAD=UID[:GID]` (the group defaults to the user id).
    ///
    /// # Errors
    /// What is wrong with `spec`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{spec:?}: expected WORKLOAD=UID[:GID], WORKLOAD one of {}",
                SERVERS.join(", ")
            )
        };
        let (workload, ids) = Self::split(spec).ok_or_else(usage)?;
        let (uid, gid) = ids.split_once(':').unwrap_or((ids, ids));
        match (uid.parse(), gid.parse()) {
            (Ok(uid), Ok(gid)) => Ok(Self {
                workload: workload.to_owned(),
                uid: Some(uid),
                gid,
            }),
            _ => Err(usage()),
        }
    }

    /// Parses `WORKLOAD=GID`: the workload's server runs with that group
    /// among its groups, and reads its private files through it. WORKLOAD
    /// is a server of the mesh, or one of the user's own (`init --workload`).
    ///
    /// # Errors
    /// What is wrong with `spec`.
    pub fn parse_reader(spec: &str) -> Result<Self, String> {
        let usage = || {
            format!(
                "{spec:?}: expected WORKLOAD=GID, WORKLOAD one of {} or a workload of your own",
                SERVERS.join(", ")
            )
        };
        let (workload, gid) = spec
            .split_once('=')
            .filter(|(workload, _)| is_dns_label(workload))
            .ok_or_else(usage)?;
        let gid = gid.parse().map_err(|_| usage())?;
        Ok(Self {
            workload: workload.to_owned(),
            uid: None,
            gid,
        })
    }

    fn split(spec: &str) -> Option<(&str, &str)> {
        spec.split_once('=')
            .filter(|(workload, _)| SERVERS.contains(workload))
    }

    /// Changes the owner of `path` itself (a symbolic link is not followed);
    /// handed over by group, a file becomes readable by the group alone.
    fn apply(&self, path: &Path) -> Result<(), RuntimeError> {
        let failed = |e| RuntimeError::io("changing the owner of", path, e);
        std::os::unix::fs::lchown(path, self.uid, Some(self.gid)).map_err(failed)?;
        if self.uid.is_none() && std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640))
                .map_err(failed)?;
        }
        Ok(())
    }
}

/// A DNS label as Kubernetes names namespaces (RFC 1123).
fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// The issuer URL (`iss`) for a token service on `addr`.
pub fn issuer_url(addr: SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}
