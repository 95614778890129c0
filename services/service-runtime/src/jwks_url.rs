//! A verifier's keys from an HTTPS JWKS URL: any issuer that publishes one,
//! AuthMesh's own token service (`/.well-known/jwks.json`) included. Fetched
//! in the background with a timeout and a size cap; a failed or refused
//! fetch leaves the last good key set in force.

use auth_interceptor::{JwkSet, KeyRefreshHandle, KeyRefreshSettings, Verifier, spawn_key_source};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{error::RuntimeError, tls::ClientTls};

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Starts keeping `verifier`'s keys current from `url` (`https://...`),
/// trusting the server per `tls` (kept for as long as the refresh runs, so a
/// client certificate it presents keeps being reloaded).
///
/// # Errors
/// [`RuntimeError::Tls`] for a URL that is not `https://host[:port]/path`.
pub fn spawn_jwks_url_refresh(
    verifier: Verifier,
    url: &str,
    tls: ClientTls,
    settings: KeyRefreshSettings,
) -> Result<KeyRefreshHandle, RuntimeError> {
    let uri: Uri = url
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some())
        .ok_or_else(|| RuntimeError::Tls(format!("jwks_url {url:?} is not https://host/path")))?;
    let connector = tls.http1_connector();
    let timeout = settings.timeout;
    Ok(spawn_key_source(
        verifier,
        move || {
            let _keep_reloading = &tls;
            let (uri, connector) = (uri.clone(), connector.clone());
            async move {
                tokio::time::timeout(timeout, fetch_jwks(&uri, &connector))
                    .await
                    .map_err(|_| format!("no answer within {timeout:?}"))?
            }
        },
        settings,
    ))
}

/// One GET of a JWK Set over HTTPS (HTTP/1.1): status 200, at most
/// [`MAX_JWKS_BYTES`], valid JSON of the JWK Set shape. Keys themselves are
/// checked when the verifier installs them.
///
/// # Errors
/// A short description of what failed (connect, TLS, status, size, JSON).
pub async fn fetch_jwks(uri: &Uri, connector: &TlsConnector) -> Result<JwkSet, String> {
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|_| format!("bad host {host:?}"))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(connection);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host.as_str());
    let request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/jwk-set+json, application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if response.status() != StatusCode::OK {
        driver.abort();
        return Err(format!("HTTP status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body (at most {MAX_JWKS_BYTES} bytes): {e}"))?
        .to_bytes();
    driver.abort();
    serde_json::from_slice(&body).map_err(|e| format!("not a JWK Set: {e}"))
}
