//! JWKS: a key source that fails or lies never costs the keys already
//! trusted, and a verifier that never had good keys fails closed.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use auth_interceptor::key_source::MAX_DOCUMENT_BYTES as MAX_JWKS_BYTES;
use auth_interceptor::{Jwk, JwkSet, SigningAlgorithm};
use authmesh_proto::authmesh::v1::GetJwksRequest;
use authmesh_signing::SigningKey;
use authmesh_tests::{TestMesh, bearer, expect_status, get_stock};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
};
use tonic::Code;

use crate::{Suite, b64};

/// What the fake key source does with one request.
#[derive(Clone)]
enum Answer {
    /// Answers at once.
    Now(u16, Vec<u8>),
    /// Answers after this long (beyond the fetch timeout: a hanging source).
    After(Duration, u16, Vec<u8>),
    /// Holds the request until the test releases it, then answers.
    Held(u16, Vec<u8>),
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Answer>,
    /// Answer once the queue is empty.
    fallback: Option<Answer>,
    /// Requests waiting in [`Answer::Held`].
    holding: usize,
}

/// An HTTPS key source on 127.0.0.1 whose answers the test scripts.
#[derive(Clone)]
struct KeySource {
    script: Arc<Mutex<Script>>,
    release: Arc<Notify>,
    held: Arc<Notify>,
    /// Requests answered so far.
    served: Arc<AtomicUsize>,
    url: String,
}

impl KeySource {
    async fn start(mesh: &TestMesh, fallback: Answer) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.https_server_config());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "https://localhost:{}/jwks.json",
            listener.local_addr().expect("addr").port()
        );
        let source = Self {
            script: Arc::new(Mutex::new(Script {
                fallback: Some(fallback),
                ..Script::default()
            })),
            release: Arc::new(Notify::new()),
            held: Arc::new(Notify::new()),
            served: Arc::new(AtomicUsize::new(0)),
            url,
        };
        let server = source.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, server) = (acceptor.clone(), server.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        server.answer(tls).await;
                    }
                });
            }
        });
        source
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn answer(&self, mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let answer = {
            let mut script = self.script();
            let next = script.queue.pop_front().or_else(|| script.fallback.clone());
            if matches!(next, Some(Answer::Held(..))) {
                script.holding += 1;
            }
            next
        };
        let (status, body) = match answer {
            Some(Answer::Now(status, body)) => (status, body),
            Some(Answer::After(delay, status, body)) => {
                tokio::time::sleep(delay).await;
                (status, body)
            }
            Some(Answer::Held(status, body)) => {
                self.held.notify_one();
                self.release.notified().await;
                self.script().holding -= 1;
                (status, body)
            }
            None => return,
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        let _ = tls.write_all(head.as_bytes()).await;
        let _ = tls.write_all(&body).await;
        let _ = tls.shutdown().await;
        self.served.fetch_add(1, Ordering::SeqCst);
    }
}

/// The issuer's real key set, as JSON.
async fn issuer_jwks(mesh: &TestMesh) -> Value {
    let keys = mesh
        .token_client()
        .get_jwks(GetJwksRequest {})
        .await
        .expect("GetJwks")
        .into_inner()
        .keys;
    serde_json::to_value(JwkSet {
        keys: keys.into_iter().map(Jwk::from).collect(),
    })
    .expect("json")
}

/// Points inventory at `url` for its keys, refreshed every `refresh` seconds.
fn point_inventory_at(mesh: &TestMesh, url: &str, refresh: u64) {
    let path = mesh.state.inventory_config();
    let text = std::fs::read_to_string(&path).expect("inventory.toml");
    let text: String = text
        .lines()
        .filter(|line| !line.starts_with("key_refresh_seconds") && !line.starts_with("jwks_url"))
        .map(|line| match line {
            "[auth]" => {
                format!("[auth]\njwks_url = \"{url}\"\nkey_refresh_seconds = {refresh}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert!(
        text.contains("jwks_url"),
        "inventory.toml has an [auth] table"
    );
    std::fs::write(&path, text).expect("write inventory.toml");
}

/// Documents the verifier must refuse, each with the issuer's real key in it
/// where it can be.
fn hostile_documents(good: &Value) -> Vec<(&'static str, u16, Vec<u8>)> {
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        edit(&mut doc);
        doc.to_string().into_bytes()
    };
    let real = good["keys"][0].clone();
    vec![
        ("garbage", 200, b"{\"keys\": 42}".to_vec()),
        ("not JSON", 200, b"<html>oops</html>".to_vec()),
        ("status 500", 500, good.to_string().into_bytes()),
        ("an empty set", 200, br#"{"keys": []}"#.to_vec()),
        ("a huge body", 200, vec![b' '; MAX_JWKS_BYTES + 1]),
        (
            "use: enc",
            200,
            with(&|d| d["keys"][0]["use"] = json!("enc")),
        ),
        (
            "an oct key",
            200,
            with(&|d| {
                d["keys"]
                    .as_array_mut()
                    .expect("keys")
                    .push(json!({"kty": "oct", "kid": "hmac", "k": b64(b"secret")}))
            }),
        ),
        (
            "a weak RSA key",
            200,
            with(&|d| {
                d["keys"].as_array_mut().expect("keys").push(json!({
                    "kty": "RSA", "kid": "rsa-1024", "alg": "RS256", "use": "sig",
                    "n": b64([0xc5u8; 128]), "e": "AQAB",
                }))
            }),
        ),
        (
            "private parameters",
            200,
            with(&|d| d["keys"][0]["d"] = json!(b64([1u8; 32]))),
        ),
        (
            "a duplicate kid",
            200,
            with(&|d| d["keys"].as_array_mut().expect("keys").push(real.clone())),
        ),
        (
            "too many keys",
            200,
            with(&|d| {
                let keys = d["keys"].as_array_mut().expect("keys");
                for i in 0..40 {
                    let mut copy = real.clone();
                    copy["kid"] = json!(format!("copy-{i}"));
                    keys.push(copy);
                }
            }),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_lying_source_leaves_the_last_good_keys_in_use() {
    let mut suite = Suite::start().await;
    let good = issuer_jwks(&suite.mesh).await;
    let good_bytes = good.to_string().into_bytes();
    let source = KeySource::start(&suite.mesh, Answer::Now(200, good_bytes.clone())).await;
    point_inventory_at(&suite.mesh, &source.url, 1);
    suite.mesh.restart_inventory().await;
    suite.accepted(&suite.genuine()).await;

    let mut documents = hostile_documents(&good);
    documents.push(("a hanging source", 0, Vec::new()));
    for (case, status, body) in documents {
        let bad = if status == 0 {
            Answer::After(Duration::from_secs(8), 200, good_bytes.clone())
        } else {
            Answer::Now(status, body)
        };
        source
            .script()
            .queue
            .extend([bad, Answer::Held(200, good_bytes.clone())]);
        // The fetch after the bad one arrives only once the bad one was
        // dealt with; it waits there while a never-seen token is checked.
        tokio::time::timeout(Duration::from_secs(30), source.held.notified())
            .await
            .unwrap_or_else(|_| panic!("{case}: no fetch after the bad one"));
        suite.accepted(&suite.genuine()).await;
        source.release.notify_one();
        while source.script().holding > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("{case}: refused, last good keys kept");
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_good_keys_ever_calls_fail_closed() {
    let mut suite = Suite::start().await;
    let good = issuer_jwks(&suite.mesh).await;
    let token = suite.genuine();
    for (case, status, body) in hostile_documents(&good) {
        let source = KeySource::start(&suite.mesh, Answer::Now(status, body)).await;
        let original =
            std::fs::read_to_string(suite.mesh.state.inventory_config()).expect("config");
        point_inventory_at(&suite.mesh, &source.url, 1);
        let server = suite.mesh.replace_inventory().await;
        std::fs::write(suite.mesh.state.inventory_config(), original).expect("restore config");
        let status = expect_status(
            suite
                .mesh
                .inventory_client()
                .get_stock(bearer(get_stock(), &token))
                .await,
            Code::Unavailable,
            Some("KEYS_UNAVAILABLE"),
        );
        assert!(!status.message().contains(&token), "{case}");
        assert_eq!(suite.mesh.inventory_handler.calls(), 0, "{case}");
        server.stop().await.expect("stop");
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_token_with_a_new_kid_verifies_after_one_refresh() {
    let mut suite = Suite::start().await;
    let mut keys = issuer_jwks(&suite.mesh).await;
    let source =
        KeySource::start(&suite.mesh, Answer::Now(200, keys.to_string().into_bytes())).await;
    // No routine refresh during the test: only the unknown kid asks for one.
    point_inventory_at(&suite.mesh, &source.url, 3600);
    suite.mesh.restart_inventory().await;
    suite.accepted(&suite.genuine()).await;

    // The issuer rotates: a new key is published, and a token signed with it
    // arrives before any verifier has fetched it.
    let (next, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("keygen");
    keys["keys"]
        .as_array_mut()
        .expect("keys")
        .push(serde_json::to_value(next.jwk()).expect("jwk"));
    source.script().fallback = Some(Answer::Now(200, keys.to_string().into_bytes()));
    let claims = suite
        .mesh
        .claims("inventory", "inventory.read", suite.mesh.now(), 300);
    let rotated = next.sign(&claims).expect("sign");
    let fetched_before = source.served.load(Ordering::SeqCst);
    let mut inventory = suite.mesh.inventory_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match inventory.get_stock(bearer(get_stock(), &rotated)).await {
            Ok(_) => break,
            Err(status) => {
                // Refused at once while the refresh runs, never made to wait.
                assert_eq!(
                    authmesh_tests::reason(&status).as_deref(),
                    Some("UNKNOWN_KEY")
                );
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the new kid never verified"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        source.served.load(Ordering::SeqCst) - fetched_before,
        1,
        "one refresh brought the new key"
    );
    suite.mesh.stop().await;
}
