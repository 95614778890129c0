//! What every bench server and client shares: a temporary directory with a
//! CA, the bench inventory's certificate, a signing key and its JWKS, and
//! for minting a dev state with the token service and the `orders`
//! workload. Removed when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use auth_interceptor::{Claims, JwkSet, SigningAlgorithm};
use authmesh_signing::SigningKey;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use service_runtime::{
    ClientTls,
    pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert},
};
use tonic::metadata::AsciiMetadataValue;

use super::{
    BenchError,
    server::{AUDIENCE, ISSUER},
};
use crate::dev_state::{DevState, MeshAddrs, MeshLayout};

/// How long the bench's TLS files are checked for changes: never, in effect.
const NO_RELOAD: Duration = Duration::from_secs(3600);
/// Lifetime of bench tokens: longer than any bench, within the verifier's cap.
const TOKEN_LIFETIME: u64 = 3000;

/// The bench's keys, certificates and tokens.
pub struct Fixture {
    dir: tempfile::TempDir,
    tokens: Tokens,
    inventory_ca: PathBuf,
    /// CA, certificate and key of the `orders` workload.
    mint: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Fixture {
    /// Creates everything in a fresh temporary directory; with `mint`, also
    /// the dev state the token service runs from.
    ///
    /// # Errors
    /// [`BenchError`] when files cannot be written or keys generated.
    pub fn create(mint: bool) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("authmesh-bench-")
            .tempdir()?;
        let pki = DevPki::ensure(&dir.path().join("ca"), &[])?;
        pki.issue_workload(
            &WorkloadCert::new("inventory", DEFAULT_TRUST_DOMAIN, &["localhost"], NO_RELOAD),
            dir.path(),
        )?;
        let (key, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA)?;
        let jwks = JwkSet {
            keys: vec![key.jwk().clone()],
        };
        std::fs::write(dir.path().join("jwks.json"), serde_json::to_vec(&jwks)?)?;
        let mint = if mint {
            // The token service picks its own port; these only fill the configs.
            let unused = SocketAddr::from(([127, 0, 0, 1], 0));
            // No local issuer: the bench measures minting alone.
            let layout = MeshLayout {
                idp: None,
                ..MeshLayout::local(MeshAddrs {
                    token_service: unused,
                    orders: unused,
                    inventory: unused,
                    idp: unused,
                })
            };
            let state = DevState::ensure_layout(&dir.path().join("mesh"), &layout)?;
            let (cert, key) = state.workload_files("orders");
            Some((state.ca_cert(), cert, key))
        } else {
            None
        };
        let hot = bearer(&signed(&key)?)?;
        let key = Arc::new(key);
        Ok(Self {
            dir,
            tokens: Tokens { key, hot },
            inventory_ca: pki.ca_cert(),
            mint,
        })
    }

    /// The directory bench servers read.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tokens clients send.
    pub fn tokens(&self) -> Tokens {
        self.tokens.clone()
    }

    /// Client TLS for the bench inventory (`mint`: false), or mTLS as the
    /// `orders` workload for the token service. Call it inside the runtime
    /// the client runs on: it watches its files from there.
    ///
    /// # Errors
    /// [`BenchError`] for unusable files, or `mint` without the mint part.
    pub fn client_tls(&self, mint: bool) -> Result<ClientTls, BenchError> {
        if !mint {
            return Ok(ClientTls::new(&self.inventory_ca, None, NO_RELOAD)?);
        }
        let (ca, cert, key) = self
            .mint
            .as_ref()
            .ok_or_else(|| BenchError::Usage("the mint part was not set up".into()))?;
        Ok(ClientTls::new(ca, Some((cert, key)), NO_RELOAD)?)
    }
}

/// The bench's signing key and the token hot calls reuse. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    key: Arc<SigningKey>,
    hot: AsciiMetadataValue,
}

impl Tokens {
    /// The `authorization` value every hot call sends.
    pub fn hot(&self) -> &AsciiMetadataValue {
        &self.hot
    }

    /// A newly signed token (random `jti`) as an `authorization` value.
    ///
    /// # Errors
    /// [`BenchError::Tokens`] when signing fails.
    pub fn fresh(&self) -> Result<AsciiMetadataValue, BenchError> {
        bearer(&signed(&self.key)?)
    }

    /// A newly signed token, without the `Bearer` prefix.
    ///
    /// # Errors
    /// [`BenchError::Tokens`] when signing fails.
    pub fn fresh_jwt(&self) -> Result<String, BenchError> {
        signed(&self.key)
    }

    /// The signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }
}

/// A new token (random `jti`) signed by `key`.
fn signed(key: &SigningKey) -> Result<String, BenchError> {
    Ok(key.sign(&claims(&random_jti()))?)
}

/// `token` as an `authorization` value.
fn bearer(token: &str) -> Result<AsciiMetadataValue, BenchError> {
    AsciiMetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| BenchError::Tokens("token is not ASCII".into()))
}

/// Claims the bench inventory accepts for `GetStock`, with this `jti`.
pub fn claims(jti: &str) -> Claims {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    Claims {
        iss: ISSUER.into(),
        sub: "bench-client".into(),
        aud: AUDIENCE.into(),
        exp: now + TOKEN_LIFETIME,
        nbf: None,
        iat: now,
        jti: jti.into(),
        scope: inventory::SCOPE_READ.into(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    }
}

/// A random 128-bit token id, base64url.
pub fn random_jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}
