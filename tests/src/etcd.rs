//! Real etcd clusters for the replica tests: `etcd` processes (Debian's
//! `etcd-server`) on ephemeral 127.0.0.1 ports with data in a temporary
//! directory, optionally serving clients over mTLS with certificates from
//! the mesh CA. Members can be killed and restarted; all are killed on drop.

use std::{
    net::TcpListener as StdListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use service_runtime::pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert};
use token_service::store::{EtcdConfig, EtcdTls, etcd::Etcd};

/// Client-side mTLS files for a cluster started with TLS.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    /// The mesh CA.
    pub ca: PathBuf,
    /// A client certificate the members accept.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// What clients present, when the cluster serves TLS.
    pub client: Option<ClientFiles>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster takes writes. With
    /// `pki_dir` (a mesh CA directory) clients must use mTLS. `None` (after
    /// printing why) when the etcd binary is missing and tools are not required.
    pub async fn start(size: usize, pki_dir: Option<&Path>) -> Option<Self> {
        let binary = crate::tool("etcd", "apt-get install etcd-server")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let (tls, client) = match pki_dir {
            None => (None, None),
            Some(pki_dir) => {
                let pki = DevPki::ensure(pki_dir, &[]).expect("mesh CA");
                let out = dir.path().join("tls");
                std::fs::create_dir_all(&out).expect("tls dir");
                let lifetime = Duration::from_secs(24 * 3600);
                let server = pki
                    .issue_workload(
                        &WorkloadCert::new("etcd", DEFAULT_TRUST_DOMAIN, &["localhost"], lifetime),
                        &out,
                    )
                    .expect("etcd server certificate");
                let client = pki
                    .issue_workload(
                        &WorkloadCert::new("etcd-client", DEFAULT_TRUST_DOMAIN, &[], lifetime),
                        &out,
                    )
                    .expect("etcd client certificate");
                (
                    Some((server.cert, server.key, pki.ca_cert())),
                    Some(ClientFiles {
                        ca: pki.ca_cert(),
                        cert: client.cert,
                        key: client.key,
                    }),
                )
            }
        };
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            binary,
            dir,
            members,
            initial_cluster,
            tls,
            client,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_writable().await;
        Some(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn spawn(&mut self, i: usize) {
        let scheme = self.scheme();
        let member = &self.members[i];
        let client_url = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", member.name)))
            .expect("log file");
        let mut command = Command::new(&self.binary);
        command
            .arg(format!("--name={}", member.name))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(&member.name).display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=authmesh-test")
            .arg("--heartbeat-interval=100")
            .arg("--election-timeout=1000")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some((cert, key, ca)) = &self.tls {
            command
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()))
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command.spawn().expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = self.scheme();
        self.members
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A `[store]` for a replica of this cluster (`prefix` keeps tests
    /// apart): keys sign as soon as they are published (tests that exercise
    /// the lead set one), sessions last 6 s.
    pub fn store_config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints(),
            prefix: prefix.to_owned(),
            tls: self.client.as_ref().map(|c| EtcdTls {
                ca: c.ca.clone(),
                cert: c.cert.clone(),
                key: c.key.clone(),
            }),
            replica_id: None,
            session_ttl_seconds: 6,
            publish_lead_seconds: 0,
        }
    }

    /// A client of the whole cluster, as a replica would connect.
    pub fn client(&self) -> Etcd {
        Etcd::connect(&self.store_config("/"), Path::new("/")).expect("etcd client")
    }

    /// Kills member `i` (SIGKILL: no goodbye to the others).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Waits until a write through the cluster commits (quorum and a leader).
    pub async fn wait_writable(&self) {
        let client = self.client();
        let start = Instant::now();
        loop {
            match client.put("/health-probe", b"ok".to_vec(), 0).await {
                Ok(()) => return,
                Err(err) if start.elapsed() > Duration::from_secs(30) => {
                    panic!(
                        "etcd did not become writable: {err}; logs in {}",
                        self.dir.path().display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
