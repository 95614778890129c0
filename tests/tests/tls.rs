//! TLS on every hop: client certificates at the handshake, and certificate
//! rotation on disk while traffic flows.

use std::{path::Path, time::Duration};

use service_runtime::{
    ClientAuth, ClientTls, Health, ServerTlsFiles, Transport,
    pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert},
    serve_router, server_builder,
};
use time::OffsetDateTime;
use tokio::{net::TcpListener, sync::oneshot};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

struct Server {
    url: String,
    transport: Transport,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A health-only server with `files`, checking them for changes every 100 ms.
async fn serve(files: &ServerTlsFiles) -> Server {
    authmesh_tests::init();
    let transport = Transport::tls(files, Path::new("/"), Duration::from_millis(100)).expect("tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let (mut health, service) = Health::new();
    health.register::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
    health.set_serving().await;
    let (stop, signal) = oneshot::channel::<()>();
    let router = server_builder().add_service(service);
    let served = transport.clone();
    tokio::spawn(async move {
        let _ = serve_router(
            router,
            listener,
            &served,
            false,
            &Default::default(),
            async {
                let _ = signal.await;
            },
        )
        .await;
    });
    Server {
        url,
        transport,
        stop: Some(stop),
    }
}

async fn check(tls: &ClientTls, url: &str) -> Result<(), tonic::Status> {
    let mut client = HealthClient::new(tls.channel(url).expect("channel"));
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

fn client(ca: &Path, files: Option<&ServerTlsFiles>) -> ClientTls {
    ClientTls::new(
        ca,
        files.map(|f| (f.cert.as_path(), f.key.as_path())),
        Duration::from_millis(100),
    )
    .expect("client tls")
}

fn workload(
    pki: &DevPki,
    dir: &Path,
    name: &str,
    dns: &[&str],
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> ServerTlsFiles {
    let spec = WorkloadCert {
        name,
        trust_domain: DEFAULT_TRUST_DOMAIN,
        dns_names: dns,
        not_before: from,
        not_after: to,
    };
    pki.issue_workload(&spec, dir).expect("issue")
}

/// A mesh CA, a foreign CA, and a server whose certificate comes from the
/// mesh CA and that asks for client certificates per `mode`.
struct Fixture {
    dir: tempfile::TempDir,
    pki: DevPki,
    other_ca: DevPki,
    server: Server,
}

async fn fixture(mode: ClientAuth) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = DevPki::ensure(&dir.path().join("tls"), &[]).expect("pki");
    let other_ca = DevPki::ensure(&dir.path().join("other"), &[]).expect("other pki");
    let (now, day) = (OffsetDateTime::now_utc(), time::Duration::days(1));
    let mut server_files = workload(
        &pki,
        dir.path(),
        "inventory",
        &["localhost"],
        now - day,
        now + day,
    );
    server_files.client_auth = mode;
    let server = serve(&server_files).await;
    Fixture {
        dir,
        pki,
        other_ca,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_refuse_everything_but_the_mesh_ca() {
    let Fixture {
        dir,
        pki,
        other_ca,
        server,
    } = fixture(ClientAuth::Required).await;
    let (now, day) = (OffsetDateTime::now_utc(), time::Duration::days(1));
    let ca = pki.ca_cert();

    let good = workload(&pki, dir.path(), "orders", &[], now - day, now + day);
    check(&client(&ca, Some(&good)), &server.url)
        .await
        .expect("mesh client certificate");

    let foreign = workload(
        &other_ca,
        &dir.path().join("foreign"),
        "orders",
        &[],
        now - day,
        now + day,
    );
    let expired = workload(
        &pki,
        &dir.path().join("expired"),
        "orders",
        &[],
        now - 2 * day,
        now - day,
    );
    let early = workload(
        &pki,
        &dir.path().join("early"),
        "orders",
        &[],
        now + day,
        now + 2 * day,
    );
    for (what, files) in [
        ("no certificate", None),
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
        ("not yet valid", Some(&early)),
    ] {
        let status = check(&client(&ca, files), &server.url)
            .await
            .expect_err(what);
        // TLS 1.3 clients finish their side before the server checks the
        // certificate, so a refusal can also surface as a cancelled call.
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unauthenticated
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
            "{what}: {status:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificates_still_verify_what_is_sent() {
    let Fixture {
        dir,
        pki,
        other_ca,
        server,
    } = fixture(ClientAuth::Optional).await;
    let (now, day) = (OffsetDateTime::now_utc(), time::Duration::days(1));
    check(&client(&pki.ca_cert(), None), &server.url)
        .await
        .expect("no certificate is fine");
    let foreign = workload(
        &other_ca,
        &dir.path().join("foreign"),
        "orders",
        &[],
        now - day,
        now + day,
    );
    check(&client(&pki.ca_cert(), Some(&foreign)), &server.url)
        .await
        .expect_err("a certificate from another CA is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_disk_without_a_failed_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = DevPki::ensure(&dir.path().join("tls"), &[]).expect("pki");
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let mut server_files = workload(
        &pki,
        dir.path(),
        "inventory",
        &["localhost"],
        now - day,
        now + day,
    );
    server_files.client_auth = ClientAuth::Required;
    let server = serve(&server_files).await;
    let client_files = workload(
        &pki,
        &dir.path().join("client"),
        "orders",
        &[],
        now - day,
        now + day,
    );
    let tls = client(&pki.ca_cert(), Some(&client_files));
    let Transport::Tls { identity, .. } = &server.transport else {
        panic!("tls")
    };

    let old_server_leaf = identity.leaf().expect("leaf");
    let old_client_leaf = tls.client_leaf().expect("client leaf");
    assert_eq!(
        authmesh_tests::presented_leaf(&pki.ca_cert(), &server.url).await,
        old_server_leaf.to_vec()
    );

    // Steady traffic on one long-lived channel and on fresh ones, while both sides rotate.
    let (stop, mut stopped) = oneshot::channel::<()>();
    let traffic = {
        let (tls, url) = (tls.clone(), server.url.clone());
        tokio::spawn(async move {
            let mut long_lived = HealthClient::new(tls.channel(&url).expect("channel"));
            let (mut calls, mut failures) = (0u32, Vec::new());
            for i in 0..5_000u32 {
                if stopped.try_recv().is_ok() {
                    break;
                }
                let result = if i % 10 == 0 {
                    check(&tls, &url).await
                } else {
                    long_lived
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(|_| ())
                };
                calls += 1;
                if let Err(status) = result {
                    failures.push(status);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (calls, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    workload(
        &pki,
        dir.path(),
        "inventory",
        &["localhost"],
        now - day,
        now + 2 * day,
    );
    workload(
        &pki,
        &dir.path().join("client"),
        "orders",
        &[],
        now - day,
        now + 2 * day,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while identity.leaf().as_ref() == Some(&old_server_leaf)
        || tls.client_leaf().as_ref() == Some(&old_client_leaf)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_server_leaf = identity.leaf().expect("leaf");
    assert_ne!(new_server_leaf, old_server_leaf);
    assert_eq!(
        authmesh_tests::presented_leaf(&pki.ca_cert(), &server.url).await,
        new_server_leaf.to_vec(),
        "new connections use the new certificate"
    );
    check(&tls, &server.url)
        .await
        .expect("new client certificate accepted");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    let (calls, failures) = traffic.await.expect("traffic");
    assert!(calls > 10, "traffic ran: {calls}");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        failures.first()
    );
}

/// After a renewal, every new connection presents the renewed client
/// certificate. A resumed TLS session would carry the certificate of the
/// session it resumes to the server, which would then bind tokens to (or
/// check them against) a certificate the client no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_present_the_renewed_client_certificate() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    authmesh_tests::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = DevPki::ensure(&dir.path().join("tls"), &[]).expect("pki");
    let (now, day) = (OffsetDateTime::now_utc(), time::Duration::days(1));
    let server_files = workload(
        &pki,
        dir.path(),
        "inventory",
        &["localhost"],
        now - day,
        now + day,
    );
    let client_dir = dir.path().join("client");
    std::fs::create_dir(&client_dir).expect("client dir");
    let issue_client = || workload(&pki, &client_dir, "orders", &[], now - day, now + day);
    let client_files = issue_client();
    let leaf = |path: &Path| {
        CertificateDer::from_pem_file(path)
            .expect("certificate")
            .to_vec()
    };

    // A plain TLS server with rustls' defaults (session resumption on)
    // that remembers the client certificate each connection presented.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.ca_cert()).expect("CA"))
        .expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("verifier");
    let chain = CertificateDer::pem_file_iter(&server_files.cert)
        .expect("chain")
        .collect::<Result<Vec<_>, _>>()
        .expect("pem");
    let key = PrivateKeyDer::from_pem_file(&server_files.key).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let recorded = seen.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let presented = tls
                .get_ref()
                .1
                .peer_certificates()
                .expect("a client certificate")[0]
                .to_vec();
            recorded.lock().expect("lock").push(presented);
            // The client reads this, and the session tickets before it.
            let _ = tls.write_all(b"x").await;
            let _ = tls.shutdown().await;
        }
    });

    let client = client(&pki.ca_cert(), Some(&client_files));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(client.client_config())
            .connect(name, tcp)
            .await
            .expect("handshake");
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.expect("the server's byte");
    };
    connect().await;
    connect().await;
    let old = leaf(&client_files.cert);

    let mut changes = client.identity_changes().expect("a client identity");
    let renewed = issue_client();
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("the renewal is picked up")
        .expect("identity watch");
    let new = leaf(&renewed.cert);
    assert_ne!(old, new);
    connect().await;
    connect().await;
    server.abort();

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    assert!(seen[..2].iter().all(|c| *c == old), "before the renewal");
    assert!(
        seen[2..].iter().all(|c| *c == new),
        "a new connection presented the old certificate"
    );
}
