//! The hostile-input suite: one test per case of `SECURITY.md`, each against
//! a real mesh over TLS. Every refused call is checked for the exact status
//! and reason, that no handler ran, and that neither the answer nor
//! anything the servers logged holds the token (or the values forged into
//! it). Forged tokens are built here byte by byte: headers and claims as
//! raw JSON, signed with the issuer's real key or an attacker's.
//!
//! The unknown-`kid` storm lives in `kid_storm.rs`: it counts key fetches
//! process-wide, so it runs in a binary of its own.

mod algorithms;
mod authorization;
mod encoding;
mod identity;
mod issuer;
mod jwks;
mod metadata;
mod time;

use std::sync::{
    Arc, Mutex, OnceLock, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use authmesh_proto::demo::inventory::v1::GetStockRequest;
use authmesh_tests::{TestMesh, bearer, decode_header, get_stock, reason};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tonic::{Code, Request, Status};

/// Everything the servers of every test in this binary logged, at info and above.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        // Installed before any mesh starts, so `authmesh_tests::init` finds
        // a subscriber already there and leaves it.
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        logs
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(
        &captured_logs()
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    )
    .into_owned()
}

/// base64url without padding, as JWS segments are written.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exactly these header and payload bytes.
pub fn sign_with(key: &EncodingKey, alg: Algorithm, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{signature}")
}

/// An attacker's own Ed25519 key.
pub fn attacker_ed25519() -> (EncodingKey, rcgen::KeyPair) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keygen");
    (EncodingKey::from_ed_der(&pair.serialize_der()), pair)
}

/// A fresh mesh, the issuer's signing key and `kid`, and the checks every case shares.
pub struct Suite {
    /// The mesh under attack.
    pub mesh: TestMesh,
    /// The `kid` the issuer signs with.
    pub kid: String,
    issuer_key: EncodingKey,
    /// The issuer key's PKCS#8 PEM, to derive its public key from.
    pub issuer_pem: String,
}

impl Suite {
    /// Starts a mesh with log capture installed first.
    pub async fn start() -> Self {
        captured_logs();
        let mesh = TestMesh::start().await;
        let genuine = mesh.mint("inventory", &["inventory.read"], None).await;
        let kid = decode_header(&genuine)["kid"]
            .as_str()
            .expect("kid")
            .to_owned();
        let issuer_pem =
            std::fs::read_to_string(mesh.state.dir().join("keys/eddsa.pem")).expect("key");
        let pair = rcgen::KeyPair::from_pem(&issuer_pem).expect("issuer key");
        let issuer_key = EncodingKey::from_ed_der(&pair.serialize_der());
        Self {
            mesh,
            kid,
            issuer_key,
            issuer_pem,
        }
    }

    /// The header of a genuine token.
    pub fn header(&self) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid})
    }

    /// The claims of a genuine inventory token with the read scope, issued now.
    pub fn claims(&self) -> Value {
        static JTI: AtomicUsize = AtomicUsize::new(0);
        let now = self.mesh.now();
        json!({
            "iss": self.mesh.issuer(),
            "sub": "orders",
            "aud": "inventory",
            "exp": now + 300,
            "iat": now,
            "jti": format!("hostile-{}", JTI.fetch_add(1, Ordering::Relaxed)),
            "scope": "inventory.read",
        })
    }

    /// `header` and `claims` signed with the issuer's real key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_bytes(header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// These exact bytes signed with the issuer's real key.
    pub fn sign_bytes(&self, header: &[u8], payload: &[u8]) -> String {
        sign_with(&self.issuer_key, Algorithm::EdDSA, header, payload)
    }

    /// A genuine token with claim `name` set to `value`, or removed with `None`.
    pub fn with_claim(&self, name: &str, value: Option<Value>) -> String {
        let mut claims = self.claims();
        let fields = claims.as_object_mut().expect("claims are an object");
        match value {
            Some(value) => fields.insert(name.to_owned(), value),
            None => fields.remove(name),
        };
        self.sign(&self.header(), &claims)
    }

    /// A genuine token built here (the forger's baseline; it must pass).
    pub fn genuine(&self) -> String {
        self.sign(&self.header(), &self.claims())
    }

    /// GetStock with `token` is served.
    pub async fn accepted(&self, token: &str) {
        self.mesh
            .inventory_client()
            .get_stock(bearer(get_stock(), token))
            .await
            .expect("a genuine token is served");
    }

    /// GetStock with `authorization: Bearer <token>` is refused with `code`
    /// and `reason`, reaches no handler, and the token appears in neither
    /// the answer nor the logs.
    pub async fn refused(&self, case: &str, token: &str, code: Code, reason_: &str) -> Status {
        self.refused_request(case, bearer(get_stock(), token), code, reason_, &[token])
            .await
    }

    /// `request` to inventory's GetStock is refused with `code` and `reason`,
    /// reaches no handler, and none of `secrets` appears in the answer or
    /// the logs; the refusal itself is logged under the call's request id.
    pub async fn refused_request(
        &self,
        case: &str,
        request: Request<GetStockRequest>,
        code: Code,
        reason_: &str,
        secrets: &[&str],
    ) -> Status {
        let mut client = self.mesh.inventory_client();
        self.refused_by(
            case,
            request,
            code,
            reason_,
            secrets,
            |request| async move { client.get_stock(request).await.map(drop) },
        )
        .await
    }

    /// Like [`Suite::refused_request`] for any call to any mesh server.
    pub async fn refused_by<T, F, Fut>(
        &self,
        case: &str,
        mut request: Request<T>,
        code: Code,
        reason_: &str,
        secrets: &[&str],
        call: F,
    ) -> Status
    where
        F: FnOnce(Request<T>) -> Fut,
        Fut: Future<Output = Result<(), Status>>,
    {
        static CALL: AtomicUsize = AtomicUsize::new(0);
        let request_id = format!(
            "{}-{}",
            case.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            CALL.fetch_add(1, Ordering::Relaxed)
        );
        request.metadata_mut().insert(
            auth_interceptor::REQUEST_ID_HEADER,
            request_id.parse().expect("ascii"),
        );
        let handled = self.mesh.inventory_handler.calls();
        let status = call(request)
            .await
            .expect_err(&format!("{case}: the call must be refused"));
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert_eq!(
            reason(&status).as_deref(),
            Some(reason_),
            "{case}: {status:?}"
        );
        assert_eq!(
            self.mesh.inventory_handler.calls(),
            handled,
            "{case}: a refused call reached the handler"
        );
        let answer = format!(
            "{} {:?} {}",
            status.message(),
            status.metadata(),
            String::from_utf8_lossy(status.details())
        );
        let logged = logs();
        for secret in secrets.iter().flat_map(|s| pieces(s)) {
            assert!(
                !answer.contains(secret),
                "{case}: the answer holds {secret:?}"
            );
            assert!(!logged.contains(secret), "{case}: the logs hold {secret:?}");
        }
        let denial = format!("reason=\"{reason_}\"");
        assert!(
            logged
                .lines()
                .any(|line| line.contains(&request_id) && line.contains(&denial)),
            "{case}: the refusal is logged with its reason under request id {request_id}"
        );
        status
    }
}

/// What the refusal's ErrorInfo names under `key` (`claim` or `header`).
pub fn named(status: &Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|info| info.metadata.get(key).cloned())
}

/// A secret and, for a token, each of its segments long enough to be telling.
fn pieces(secret: &str) -> Vec<&str> {
    std::iter::once(secret)
        .chain(secret.split('.').filter(|s| s.len() >= 12))
        .filter(|s| !s.is_empty())
        .collect()
}
