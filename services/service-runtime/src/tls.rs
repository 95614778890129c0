//! TLS on every hop: the server side of a listener and the client side of a channel.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::{config::UpstreamConfig, error::RuntimeError, files::read_to_string};

/// Installs ring as the process-wide rustls crypto provider. Call first thing
/// in every binary (and test): rustls refuses to pick one when two are linked.
pub fn install_crypto_provider() {
    // An Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// How a listener is secured.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with this identity.
    Tls(ServerTlsConfig),
    /// No TLS: only behind an explicit `insecure_plaintext` switch.
    Plaintext,
}

impl Transport {
    /// TLS from `files` (resolved against `dir`), or plaintext when explicitly asked for.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when neither is configured or the files are unreadable.
    pub fn from_config(
        files: Option<&ServerTlsFiles>,
        insecure_plaintext: bool,
        dir: &Path,
    ) -> Result<Self, RuntimeError> {
        if insecure_plaintext {
            tracing::warn!(
                "serving WITHOUT TLS (insecure_plaintext): tokens and secrets cross the network in clear"
            );
            return Ok(Transport::Plaintext);
        }
        let files = files.ok_or_else(|| {
            RuntimeError::Tls(
                "no [tls] section; set insecure_plaintext = true to serve without TLS".into(),
            )
        })?;
        let cert = read_to_string(&dir.join(&files.cert))?;
        let key = read_to_string(&dir.join(&files.key))?;
        Ok(Transport::Tls(
            ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
        ))
    }
}

/// A lazily connecting channel to `upstream`: the service starts even while
/// the upstream is down, and calls fail with UNAVAILABLE until it is back.
///
/// # Errors
/// [`RuntimeError::Tls`] for an `https` URL without a CA, or an unreadable CA;
/// [`RuntimeError::Transport`] for a bad URL.
pub fn upstream_channel(
    upstream: &UpstreamConfig,
    dir: &Path,
) -> Result<tonic::transport::Channel, RuntimeError> {
    let endpoint = Endpoint::from_shared(upstream.url.clone())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true);
    let endpoint = if upstream.url.starts_with("https://") {
        let ca = upstream.ca.as_ref().ok_or_else(|| {
            RuntimeError::Tls(format!(
                "upstream {} is https but no `ca` is configured",
                upstream.url
            ))
        })?;
        let ca = read_to_string(&dir.join(ca))?;
        endpoint.tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?
    } else {
        tracing::warn!(url = %upstream.url, "calling upstream WITHOUT TLS");
        endpoint
    };
    Ok(endpoint.connect_lazy())
}
