//! TLS on every hop, on rustls directly rather than through tonic's TLS
//! settings, so that
//! - certificate and key files are re-read when they change on disk
//!   (rotation without a restart: new handshakes use the new files),
//! - servers can ask for client certificates (optional or required) from
//!   the mesh CA, and clients can present theirs,
//! - handshakes run off the accept loop with a timeout, so one slow or
//!   hostile client cannot stall accepting others.

use std::{
    fs,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::{
    RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, server::TlsStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{config::UpstreamConfig, error::RuntimeError};

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

/// When the certificate files were last seen to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    cert: Option<SystemTime>,
    key: Option<SystemTime>,
}

impl FileStamp {
    fn read(cert: &Path, key: &Path) -> Self {
        let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        Self {
            cert: modified(cert),
            key: modified(key),
        }
    }
}

/// A certificate chain and key read from PEM files and re-read when they
/// change; what a server presents and what a client offers for mTLS.
#[derive(Debug)]
pub struct ReloadingIdentity {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: Mutex<FileStamp>,
    /// Counts reloads, so clients can move bound tokens and connections together.
    generation: tokio::sync::watch::Sender<u64>,
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, RuntimeError> {
    let tls = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        RuntimeError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls("reading certificates from", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls("parsing certificates in", cert, &e))?;
    if chain.is_empty() {
        return Err(RuntimeError::Tls(format!(
            "no certificate in {}",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| tls("reading key", key, &e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| tls("unsupported key in", key, &e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| tls("certificate and key do not match:", cert, &e))?;
    Ok(certified)
}

impl ReloadingIdentity {
    /// Loads `cert` and `key`.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] when the files are unreadable, empty or do not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, RuntimeError> {
        let stamp = FileStamp::read(cert, key);
        let current = load_certified_key(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(current),
            stamp: Mutex::new(stamp),
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
        let stamp = FileStamp::read(&self.cert, &self.key);
        let mut seen = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == stamp {
            return Ok(false);
        }
        let fresh = load_certified_key(&self.cert, &self.key)?;
        self.current.store(Arc::new(fresh));
        *seen = stamp;
        self.generation.send_modify(|generation| *generation += 1);
        tracing::info!(cert = %self.cert.display(), "reloaded certificate");
        Ok(true)
    }

    /// Checks the files every `every` in the background, for as long as the
    /// identity is in use or until the handle is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> WatchHandle {
        let identity: Weak<Self> = Arc::downgrade(self);
        WatchHandle(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(identity) = identity.upgrade() else {
                    return;
                };
                if let Err(err) = identity.reload_if_changed() {
                    tracing::warn!(error = %err, "certificate files changed but do not load; keeping the previous ones");
                }
            }
        }))
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

/// The background file check of a [`ReloadingIdentity`]; stops when dropped.
#[derive(Debug)]
pub struct WatchHandle(JoinHandle<()>);

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn root_store(ca: &Path) -> Result<Arc<RootCertStore>, RuntimeError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| RuntimeError::Tls(format!("reading CA {}: {e}", ca.display())))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| RuntimeError::Tls(format!("parsing CA {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| RuntimeError::Tls(format!("CA {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(RuntimeError::Tls(format!(
            "no CA certificate in {}",
            ca.display()
        )));
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
        watch: Arc<WatchHandle>,
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
        let files = files.ok_or_else(|| {
            RuntimeError::Tls(
                "no [tls] section; set insecure_plaintext = true to serve without TLS".into(),
            )
        })?;
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
            (_, None) => {
                return Err(RuntimeError::Tls("client_auth needs client_ca".into()));
            }
            (mode, Some(ca)) => {
                let verifier = WebPkiClientVerifier::builder(root_store(&dir.join(ca))?);
                let verifier = if mode == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| RuntimeError::Tls(format!("client verifier: {e}")))?;
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

/// TLS client settings for one upstream.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    identity: Option<Arc<ReloadingIdentity>>,
    _watch: Option<Arc<WatchHandle>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts `ca`; presents `identity` (cert, key) when given.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] for unusable files.
    pub fn new(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        reload_every: Duration,
    ) -> Result<Self, RuntimeError> {
        let builder = rustls::ClientConfig::builder().with_root_certificates(root_store(ca)?);
        let (mut config, identity, watch) = match identity {
            Some((cert, key)) => {
                let identity = ReloadingIdentity::load(cert, key)?;
                let watch = Arc::new(identity.watch(reload_every));
                (
                    builder.with_client_cert_resolver(identity.clone()),
                    Some(identity),
                    Some(watch),
                )
            }
            None => (builder.with_no_client_auth(), None, None),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            identity,
            _watch: watch,
        })
    }

    /// The rustls settings behind these connections (trust roots, and the
    /// client certificate, reloaded as it changes), for the HTTPS key sources.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.connector.config().clone()
    }

    /// Changes each time the client certificate is reloaded (never, without one).
    pub fn identity_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.identity.as_ref().map(|identity| identity.changes())
    }

    /// The client certificate currently presented, if any.
    #[must_use]
    pub fn client_leaf(&self) -> Option<CertificateDer<'static>> {
        self.identity.as_ref().and_then(|i| i.leaf())
    }

    /// A lazily connecting channel to `url` (`https://host:port`) over this TLS.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] for a URL that is not `https://host:port`.
    pub fn channel(&self, url: &str) -> Result<Channel, RuntimeError> {
        let https: Uri = url
            .parse()
            .map_err(|e| RuntimeError::Tls(format!("bad upstream URL {url}: {e}")))?;
        let authority = https
            .authority()
            .filter(|_| https.scheme_str() == Some("https"))
            .ok_or_else(|| RuntimeError::Tls(format!("upstream {url} is not https://host:port")))?;
        // The connector does TLS itself; tonic sees a plain connection and
        // sends `:scheme https` through the origin.
        let endpoint = with_keepalive(
            Endpoint::from_shared(format!("http://{authority}"))?
                .origin(https)
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true),
        );
        Ok(endpoint.connect_with_connector_lazy(RustlsConnector {
            tls: self.connector.clone(),
            _watch: self._watch.clone(),
        }))
    }
}

/// Dials TCP, then TLS with SNI and verification for the URI's host.
#[derive(Clone)]
struct RustlsConnector {
    tls: TlsConnector,
    /// Keeps the client certificate's file watch alive as long as the channel.
    _watch: Option<Arc<WatchHandle>>,
}

impl tower::Service<Uri> for RustlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| invalid("upstream URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)
                .map_err(|_| invalid("upstream host is not a valid server name"))?;
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

/// The TLS settings of an `https` upstream (its CA, and the client
/// certificate to present if configured).
///
/// # Errors
/// [`RuntimeError::Tls`] without a CA, with half an identity, or with unusable files.
pub fn upstream_tls(upstream: &UpstreamConfig, dir: &Path) -> Result<ClientTls, RuntimeError> {
    let ca = upstream.ca.as_ref().ok_or_else(|| {
        RuntimeError::Tls(format!(
            "upstream {} is https but no `ca` is configured",
            upstream.url
        ))
    })?;
    let identity = match (&upstream.cert, &upstream.key) {
        (Some(cert), Some(key)) => Some((dir.join(cert), dir.join(key))),
        (None, None) => None,
        _ => {
            return Err(RuntimeError::Tls(format!(
                "upstream {}: set both cert and key, or neither",
                upstream.url
            )));
        }
    };
    ClientTls::new(
        &dir.join(ca),
        identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        RELOAD_INTERVAL,
    )
}

/// A lazily connecting channel to `upstream`: the service starts even while
/// the upstream is down, and calls fail with UNAVAILABLE until it is back.
///
/// # Errors
/// [`RuntimeError::Tls`] for an `https` URL without a CA or with unusable
/// files; [`RuntimeError::Transport`] for a bad URL.
pub fn upstream_channel(upstream: &UpstreamConfig, dir: &Path) -> Result<Channel, RuntimeError> {
    if upstream.url.starts_with("https://") {
        return upstream_tls(upstream, dir)?.channel(&upstream.url);
    }
    tracing::warn!(url = %upstream.url, "calling upstream WITHOUT TLS");
    Ok(with_keepalive(
        Endpoint::from_shared(upstream.url.clone())?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true),
    )
    .connect_lazy())
}

/// HTTP/2 pings, even on an idle connection: a long-lived stream (the
/// revocation watch) notices a peer that vanished without closing the
/// connection within 15 s, and reconnects.
fn with_keepalive(endpoint: Endpoint) -> Endpoint {
    endpoint
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
}
