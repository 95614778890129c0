//! Keys over HTTPS: a JWK Set URL, or an OIDC discovery document that
//! names one. Plain HTTP/1.1 GETs with a size cap on every body; the
//! caller's TLS settings decide whom to trust.

use std::sync::Arc;

use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, de::DeserializeOwned};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::task::AbortOnDropHandle;

use super::KeySourceError;
use crate::jwk::JwkSet;

/// Largest JWK Set or discovery document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Where an OIDC issuer publishes its metadata (RFC 8414 / OIDC Discovery).
const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// GETs JSON documents from one HTTPS URL.
#[derive(Clone)]
pub(super) struct Fetcher {
    uri: Uri,
    connector: TlsConnector,
}

impl Fetcher {
    /// A fetcher for `url`, trusting servers per `tls` (ALPN set to HTTP/1.1).
    pub(super) fn new(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Self, KeySourceError> {
        Ok(Self {
            uri: https_uri(url)?,
            connector: http1_connector(tls),
        })
    }

    pub(super) async fn jwks(&self) -> Result<JwkSet, KeySourceError> {
        get_json(&self.uri, &self.connector, "JWK Set").await
    }
}

/// OIDC discovery for one issuer: the metadata document, then its `jwks_uri`.
#[derive(Clone)]
pub(super) struct Discovery {
    issuer: Arc<str>,
    document: Uri,
    connector: TlsConnector,
}

/// The members of a discovery document a verifier needs.
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl Discovery {
    pub(super) fn new(
        issuer: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, KeySourceError> {
        let document = https_uri(&format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/')))?;
        Ok(Self {
            issuer: issuer.into(),
            document,
            connector: http1_connector(&tls),
        })
    }

    pub(super) async fn jwks(&self) -> Result<JwkSet, KeySourceError> {
        let refused = |reason| KeySourceError::Discovery {
            issuer: self.issuer.to_string(),
            reason,
        };
        let metadata: DiscoveryDocument =
            get_json(&self.document, &self.connector, "discovery document").await?;
        if metadata.issuer.as_bytes() != self.issuer.as_bytes() {
            return Err(refused("it names another issuer"));
        }
        let jwks_uri =
            https_uri(&metadata.jwks_uri).map_err(|_| refused("jwks_uri is not https"))?;
        get_json(&jwks_uri, &self.connector, "JWK Set").await
    }
}

/// The JWK Set that `issuer`'s discovery document names. The document's
/// `issuer` must equal `issuer` exactly (OIDC Discovery 4.3), so a document
/// served for another issuer is never trusted, and its `jwks_uri` must be
/// https. Servers are trusted per `tls`.
///
/// # Errors
/// [`KeySourceError::Discovery`] for a mismatched issuer or a bad
/// `jwks_uri`; any error of [`fetch_jwks`] for either fetch.
pub async fn fetch_discovered_jwks(
    issuer: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<JwkSet, KeySourceError> {
    Discovery::new(issuer, tls.clone())?.jwks().await
}

/// One GET of a JWK Set over HTTPS (HTTP/1.1), trusting servers per `tls`:
/// status 200, at most [`MAX_DOCUMENT_BYTES`], JSON of the JWK Set shape.
/// Keys themselves are checked when the verifier installs them.
///
/// # Errors
/// [`KeySourceError`] naming what failed: URL, connect, TLS, HTTP, status, size, JSON.
pub async fn fetch_jwks(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<JwkSet, KeySourceError> {
    Fetcher::new(url, tls)?.jwks().await
}

fn https_uri(url: &str) -> Result<Uri, KeySourceError> {
    url.parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some())
        .ok_or_else(|| KeySourceError::NotHttps {
            url: url.to_owned(),
        })
}

fn http1_connector(tls: &Arc<rustls::ClientConfig>) -> TlsConnector {
    let mut config = rustls::ClientConfig::clone(tls);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn get_json<T: DeserializeOwned>(
    uri: &Uri,
    connector: &TlsConnector,
    what: &'static str,
) -> Result<T, KeySourceError> {
    let url = uri.to_string();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let authority = format!("{host}:{port}");
    let failed =
        |step, source: Box<dyn std::error::Error + Send + Sync>| KeySourceError::Connection {
            step,
            authority: authority.clone(),
            source,
        };
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| failed("connect", e.into()))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| failed("TLS", e.into()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| failed("TLS", e.into()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| failed("HTTP", e.into()))?;
    // Aborted on every way out, so a slow server cannot keep the connection.
    let driver = AbortOnDropHandle::new(tokio::spawn(connection));
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header(header::ACCEPT, "application/jwk-set+json, application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed("HTTP", e.into()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed("HTTP", e.into()))?;
    if response.status() != StatusCode::OK {
        return Err(KeySourceError::HttpStatus {
            url,
            status: response.status().as_u16(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                KeySourceError::TooLarge {
                    url: url.clone(),
                    max: MAX_DOCUMENT_BYTES,
                }
            } else {
                failed("HTTP", e)
            }
        })?
        .to_bytes();
    drop(driver);
    serde_json::from_slice(&body).map_err(|source| KeySourceError::NotJson { url, what, source })
}
