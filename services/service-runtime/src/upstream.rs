//! Channels to other servers (the token service, SERVER2 from SERVER1):
//! TLS with the upstream's CA and, for mTLS, a client certificate reloaded
//! as it changes on disk, connected lazily and kept alive with HTTP/2 pings.
//! Every outgoing channel of every service is made here.

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    config::UpstreamConfig,
    error::{RuntimeError, TlsError},
    task::BackgroundTask,
    tls::{RELOAD_INTERVAL, ReloadingIdentity, root_store},
};

/// TLS client settings for one upstream.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    identity: Option<Arc<ReloadingIdentity>>,
    _watch: Option<Arc<BackgroundTask>>,
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
        if identity.is_some() {
            // A resumed session carries the client certificate of the
            // session it resumes: after a renewal, a new connection would
            // show the server the old certificate, and a token bound to
            // the new one would be refused. Connections are long-lived, so
            // a full handshake each time costs next to nothing.
            config.resumption = rustls::client::Resumption::disabled();
        }
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
        self.failover_channel(&[url.to_owned()])
    }

    /// A lazily connecting channel to the first of `urls` that can be
    /// reached: each new connection starts with the replica that last
    /// answered and moves on to the next when it cannot connect.
    ///
    /// # Errors
    /// [`RuntimeError::Tls`] for a URL that is not `https://host:port`, or none.
    pub fn failover_channel(&self, urls: &[String]) -> Result<Channel, RuntimeError> {
        let mut origin = None;
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            let https: Uri = url.parse().map_err(|source| TlsError::BadUrl {
                url: url.clone(),
                source,
            })?;
            let (Some(host), Some(authority)) = (https.host(), https.authority()) else {
                return Err(TlsError::NotHttps(url.clone()).into());
            };
            if https.scheme_str() != Some("https") {
                return Err(TlsError::NotHttps(url.clone()).into());
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            targets.push((host.to_owned(), https.port_u16().unwrap_or(443)));
            let authority = authority.to_string();
            origin.get_or_insert((authority, https));
        }
        let (authority, https) = origin.ok_or_else(|| TlsError::NotHttps(String::new()))?;
        // The connector does TLS itself; tonic sees a plain connection and
        // sends `:scheme https` through the origin (the first URL's).
        let endpoint = with_keepalive(
            Endpoint::from_shared(format!("http://{authority}"))?
                .origin(https)
                .connect_timeout(TARGET_CONNECT_TIMEOUT * u32::try_from(targets.len()).unwrap_or(1))
                .tcp_nodelay(true),
        );
        Ok(endpoint.connect_with_connector_lazy(RustlsConnector {
            tls: self.connector.clone(),
            targets: targets.into(),
            preferred: Arc::default(),
            _watch: self._watch.clone(),
        }))
    }
}

/// Dials TCP to one of its targets, then TLS with SNI and verification
/// for that target's host.
#[derive(Clone)]
struct RustlsConnector {
    tls: TlsConnector,
    /// Every replica of the upstream, `(host, port)`.
    targets: Arc<[(String, u16)]>,
    /// The target that last connected: tried first.
    preferred: Arc<AtomicUsize>,
    /// Keeps the client certificate's file watch alive as long as the channel.
    _watch: Option<Arc<BackgroundTask>>,
}

/// Longest one replica may take to accept a connection before the next is tried.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl tower::Service<Uri> for RustlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let targets = self.targets.clone();
        let preferred = self.preferred.clone();
        Box::pin(async move {
            let start = preferred.load(Ordering::Relaxed);
            let mut last = io::Error::new(io::ErrorKind::NotConnected, "no upstream address");
            for step in 0..targets.len() {
                let index = (start + step) % targets.len();
                let (host, port) = &targets[index];
                match tokio::time::timeout(TARGET_CONNECT_TIMEOUT, connect(&tls, host, *port)).await
                {
                    Ok(Ok(stream)) => {
                        if index != start {
                            tracing::info!(upstream = %host, port, "failed over to another replica");
                        }
                        preferred.store(index, Ordering::Relaxed);
                        return Ok(TokioIo::new(stream));
                    }
                    Ok(Err(err)) => last = err,
                    Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                }
                if targets.len() > 1 {
                    tracing::warn!(upstream = %host, port, error = %last, "replica unreachable; trying the next");
                }
            }
            Err(last)
        })
    }
}

/// TCP (to each address `host` resolves to, in turn), then TLS verified for `host`.
async fn connect(
    tls: &TlsConnector,
    host: &str,
    port: u16,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "upstream host is not a valid server name",
        )
    })?;
    tls.connect(name, tcp).await
}

/// The TLS settings of an `https` upstream (its CA, and the client
/// certificate to present if configured).
///
/// # Errors
/// [`RuntimeError::Tls`] without a CA, with half an identity, or with unusable files.
pub fn upstream_tls(upstream: &UpstreamConfig, dir: &Path) -> Result<ClientTls, RuntimeError> {
    let ca = upstream
        .ca
        .as_ref()
        .ok_or_else(|| TlsError::NoCa(upstream.url.clone()))?;
    let identity = match (&upstream.cert, &upstream.key) {
        (Some(cert), Some(key)) => Some((dir.join(cert), dir.join(key))),
        (None, None) => None,
        _ => return Err(TlsError::HalfIdentity(upstream.url.clone()).into()),
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
        return upstream_tls(upstream, dir)?.failover_channel(&upstream.urls());
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
