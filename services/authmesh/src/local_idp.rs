//! A small OIDC issuer for the demo, standing in for Auth0 or Keycloak so
//! the walkthrough can show an order a user places with their own token:
//! an RS256 key in the state directory (created on first use, 0600), a
//! discovery document and JWK Set served over HTTPS by `authmesh up`, and
//! `authmesh user-token` to sign a user's access token with it. It is no
//! identity provider: it signs for whatever user it is asked to, so it
//! runs only in the dev mesh.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use auth_interceptor::{Jwk, JwkSet, JwsAlgorithm};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rsa::{
    RsaPrivateKey,
    pkcs1::EncodeRsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding},
    traits::PublicKeyParts,
};
use serde::{Deserialize, Serialize};
use service_runtime::{
    RuntimeError,
    files::{read_to_string, write_private},
    http_endpoint::{Bytes, Routes, serve_http},
    tls::tls_incoming,
};
use tokio::net::TcpListener;

/// Where the issuer publishes its metadata.
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where it publishes its keys.
const JWKS_PATH: &str = "/jwks.json";
/// Size of its RSA key: what Auth0, Okta, Keycloak and Entra ID use.
const KEY_BITS: usize = 2048;

/// `idp.toml` in the state directory: where the demo's issuer listens and
/// what it calls itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocalIdpConfig {
    /// Listen address, e.g. `127.0.0.1:50443`.
    pub listen: String,
    /// Its `iss`: `https://localhost:<port>`.
    pub issuer: String,
    /// Its RS256 private key (PKCS#8 PEM), relative to the state directory.
    pub key_file: PathBuf,
}

/// Why the demo's issuer could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalIdpError {
    /// Reading or writing its files.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Its key could not be made or read.
    #[error("the local issuer's key {}: {detail}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A user token could not be signed.
    #[error("signing a user token: {0}")]
    Signing(String),
}

/// The demo's issuer, loaded.
pub struct LocalIdp {
    issuer: String,
    jwk: Jwk,
    key: jsonwebtoken::EncodingKey,
}

impl std::fmt::Debug for LocalIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdp")
            .field("issuer", &self.issuer)
            .field("kid", &self.jwk.kid)
            .finish_non_exhaustive()
    }
}

/// What a user token says: who, for which service, which scopes, how long.
#[derive(Debug, Clone)]
pub struct UserTokenRequest<'a> {
    /// The user (`sub`).
    pub user: &'a str,
    /// The service the token is for (`aud`).
    pub audience: &'a str,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// Lifetime in seconds.
    pub ttl_seconds: u64,
}

impl LocalIdp {
    /// The issuer of `config` (paths relative to `state_dir`), creating its
    /// key on first use.
    ///
    /// # Errors
    /// [`LocalIdpError`] when the key cannot be created or read.
    pub fn load_or_create(
        state_dir: &Path,
        config: &LocalIdpConfig,
    ) -> Result<Self, LocalIdpError> {
        let path = state_dir.join(&config.key_file);
        let key_error = |detail: String| LocalIdpError::Key {
            path: path.clone(),
            detail,
        };
        if !path.exists() {
            let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)
                .map_err(|e| key_error(e.to_string()))?;
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| key_error(e.to_string()))?;
            write_private(&path, pem.as_bytes())?;
        }
        let pem = read_to_string(&path)?;
        let private = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|e| key_error(e.to_string()))?;
        let jwk = Jwk::rsa(
            &private.n().to_bytes_be(),
            &private.e().to_bytes_be(),
            JwsAlgorithm::RS256,
        );
        // jsonwebtoken's RSA signer reads PKCS#1 DER.
        let der = private
            .to_pkcs1_der()
            .map_err(|e| key_error(e.to_string()))?;
        let key = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
        Ok(Self {
            issuer: config.issuer.clone(),
            jwk,
            key,
        })
    }

    /// Its `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Its public keys.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Its OIDC discovery document.
    pub fn discovery_document(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", self.issuer),
            "authorization_endpoint": format!("{}/authorize", self.issuer),
            "token_endpoint": format!("{}/oauth/token", self.issuer),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    /// A user's access token shaped like an external provider's: RS256,
    /// `typ` `JWT`, `aud` a list, scopes in `scope`, a `jti`.
    ///
    /// # Errors
    /// [`LocalIdpError::Signing`] when signing fails.
    pub fn user_token(
        &self,
        request: &UserTokenRequest<'_>,
        now: u64,
    ) -> Result<String, LocalIdpError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.jwk.kid.clone());
        header.typ = Some("JWT".into());
        let claims = serde_json::json!({
            "iss": self.issuer,
            "sub": request.user,
            "aud": [request.audience],
            "iat": now,
            "exp": now + request.ttl_seconds,
            "scope": request.scopes.join(" "),
            "jti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| LocalIdpError::Signing(e.to_string()))
    }

    /// Serves the discovery document and the JWK Set over TLS (`tls`) on
    /// `listener` until `shutdown` resolves.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) {
        let discovery = Bytes::from(self.discovery_document().to_string());
        let jwks = Bytes::from(serde_json::to_vec(&self.jwks()).unwrap_or_default());
        let routes: Routes = Arc::new(move |path: &str| match path {
            DISCOVERY_PATH => Some(("application/json", discovery.clone())),
            JWKS_PATH => Some(("application/json", jwks.clone())),
            _ => None,
        });
        serve_http(Box::pin(tls_incoming(listener, tls)), routes, shutdown).await;
    }
}
