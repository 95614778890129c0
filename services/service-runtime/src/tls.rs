//! TLS on every hop, on rustls directly rather than through tonic's TLS
//! settings, so that
//! - certificate and key files are re-read when they change on disk
//!   (rotation without a restart: new handshakes use the new files),
//! - servers can ask for client certificates (optional or required) from
//!   the mesh CA, and clients can present theirs,
//! - handshakes run off the accept loop with a timeout, so one slow or
//!   hostile client cannot stall accepting others.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    pki_types::{
        CertificateDer, PrivateKeyDer,
        pem::{Error as PemError, PemObject},
    },
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{
    error::{RuntimeError, TlsError},
    file_watch::{WatchedFiles, poll},
    task::BackgroundTask,
};

/// How often certificate files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs ring as the process-wide rustls crypto provider. Call first thing
/// in every binary (and test): rustls refuses to pick one when two are linked.
pub fn install_crypto_provider() {
    // An Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a server asks its clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// A certificate from `client_ca` is verified if sent; callers without one still connect.
    Optional,
    /// The handshake fails without a valid certificate from `client_ca`.
    Required,
}

/// A server's TLS files (`[tls]` in a service's config).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// CA (PEM) that client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are asked for.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// A certificate chain and key read from PEM files and re-read when they
/// change; what a server presents and what a client offers for mTLS.
#[derive(Debug)]
pub struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    files: WatchedFiles,
    /// Counts reloads, so clients can move bound tokens and connections together.
    generation: tokio::sync::watch::Sender<u64>,
}

/// A PEM problem with `path`, for `map_err`.
fn pem(what: &'static str, path: &Path) -> impl FnOnce(PemError) -> TlsError + use<> {
    let path = path.to_path_buf();
    move |source| TlsError::Pem { what, path, source }
}

/// rustls refusing what `path` holds, for `map_err`.
fn refused(what: &'static str, path: &Path) -> impl FnOnce(rustls::Error) -> TlsError + use<> {
    let path = path.to_path_buf();
    move |source| TlsError::Refused { what, path, source }
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem("reading certificates from", cert))?
        .collect::<Result<_, _>>()
        .map_err(pem("parsing certificates in", cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(pem("reading key", key))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(refused("unsupported key in", key))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(refused("certificate and key do not match:", cert))?;
    Ok(certified)
}

impl ReloadingIdentity {
    /// Loads `cert` and `key`.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when the files are unreadable, empty or do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, RuntimeError> {
        let files = WatchedFiles::new(vec![cert.to_path_buf(), key.to_path_buf()]);
        let current = load_certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(current),
            files,
            generation: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// The leaf certificate currently presented.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }

    /// Changes each time a new certificate is loaded.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-reads the files if either changed since the last load. A pair that
    /// fails to load (half-written, mismatched) keeps the previous identity
    /// in use and is tried again on the next check.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when the changed files do not load.
    pub fn reload_if_changed(&self) -> Result<bool, RuntimeError> {
        let reloaded = self.files.reload_if_changed(|| {
            let fresh = load_certified_key(&self.cert, &self.key)?;
            self.current.store(Arc::new(fresh));
            self.generation.send_modify(|generation| *generation += 1);
            Ok::<_, TlsError>(())
        })?;
        if reloaded.is_some() {
            tracing::info!(cert = %self.cert.display(), "reloaded certificate");
        }
        Ok(reloaded.is_some())
    }

    /// Checks the files every `every` in the background, for as long as the
    /// identity is in use or until the handle is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> BackgroundTask {
        // Weak: the watch alone does not keep an identity nobody uses.
        let identity: Weak<Self> = Arc::downgrade(self);
        poll("certificate", every, move || {
            identity
                .upgrade()
                .map_or(Ok(false), |identity| identity.reload_if_changed())
                .map(drop)
        })
    }
}

impl ResolvesServerCert for ReloadingIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

pub(crate) fn root_store(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(pem("reading CA", ca))? {
        roots
            .add(cert.map_err(pem("parsing CA", ca))?)
            .map_err(refused("CA", ca))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(ca.to_path_buf()));
    }
    Ok(Arc::new(roots))
}

/// How a listener is secured.
#[derive(Debug, Clone)]
pub enum Transport {
    /// TLS with certificates reloaded from disk.
    Tls {
        /// The rustls configuration every handshake uses.
        config: Arc<ServerConfig>,
        /// The server's own identity (for tests and diagnostics).
        identity: Arc<ReloadingIdentity>,
        /// Keeps the file watch alive as long as the transport.
        watch: Arc<BackgroundTask>,
    },
    /// No TLS: only behind an explicit `insecure_plaintext` switch.
    Plaintext,
}

impl Transport {
    /// TLS from `files` (resolved against `dir`), or plaintext when explicitly asked for.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when neither is configured or the files are unusable.
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
        let files = files.ok_or(TlsError::NotConfigured)?;
        Self::tls(files, dir, RELOAD_INTERVAL)
    }

    /// TLS from `files`, checking them for changes every `reload_every`.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when the files are unusable.
    pub fn tls(
        files: &ServerTlsFiles,
        dir: &Path,
        reload_every: Duration,
    ) -> Result<Self, RuntimeError> {
        let identity = ReloadingIdentity::load(&dir.join(&files.cert), &dir.join(&files.key))?;
        let builder = ServerConfig::builder();
        let builder = match (files.client_auth, &files.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err(TlsError::ClientAuthNeedsCa.into()),
            (mode, Some(ca)) => {
                let verifier = WebPkiClientVerifier::builder(root_store(&dir.join(ca))?);
                let verifier = if mode == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier.build().map_err(TlsError::from)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(identity.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        let watch = Arc::new(identity.watch(reload_every));
        Ok(Transport::Tls {
            config: Arc::new(config),
            identity,
            watch,
        })
    }
}

/// Accepted TLS connections of `listener`. Handshakes run concurrently
/// (one slow client never stalls the others) and each has a timeout; a
/// failed handshake (no or a bad client certificate, a port scan) is logged
/// and dropped, so it never reaches gRPC. The listener lives inside the
/// stream: when the server stops and drops it, the port is free at once.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl futures_util::Stream<Item = Result<TlsStream<TcpStream>, io::Error>> {
    use futures_util::{StreamExt, future::BoxFuture, stream::FuturesUnordered};

    struct Incoming {
        listener: TcpListener,
        acceptor: TlsAcceptor,
        handshakes: FuturesUnordered<BoxFuture<'static, Option<TlsStream<TcpStream>>>>,
    }

    let incoming = Incoming {
        listener,
        acceptor: TlsAcceptor::from(config),
        handshakes: FuturesUnordered::new(),
    };
    futures_util::stream::unfold(incoming, |mut incoming| async move {
        loop {
            tokio::select! {
                accepted = incoming.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let acceptor = incoming.acceptor.clone();
                        incoming.handshakes.push(Box::pin(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(stream)) => Some(stream),
                                Ok(Err(err)) => {
                                    tracing::info!(%peer, error = %err, "TLS handshake refused");
                                    None
                                }
                                Err(_) => {
                                    tracing::info!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        }));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = incoming.handshakes.next(), if !incoming.handshakes.is_empty() => {
                    if let Some(stream) = done {
                        return Some((Ok(stream), incoming));
                    }
                }
            }
        }
    })
}
