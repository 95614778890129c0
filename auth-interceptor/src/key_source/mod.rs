//! Where a [`Verifier`]'s keys come from, and the background refresh that
//! keeps them current. The call path never waits on any of it: it reads
//! whatever key set was installed last.
//!
//! Every source behaves the same way:
//! - **fail-closed start**: until a first key set is installed, calls are
//!   refused with UNAVAILABLE (`KEYS_UNAVAILABLE`), never let through;
//!   [`Verifier::keys_loaded`] resolves once one is;
//! - **background refresh** every [`KeyRefreshSettings::interval`], and
//!   sooner when a call meets an unknown `kid`, but never twice within the
//!   [`KeyRefreshSettings::cooldown`], however many such calls arrive;
//! - **last known good**: a fetch that fails, or a key set that is refused,
//!   leaves the previous keys in force; retries back off.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use auth_interceptor::{KeySource, Verifier, VerifierConfig};
//!
//! let verifier = Verifier::new(VerifierConfig::new("https://issuer.example", "inventory"))?;
//! let _keys = KeySource::file("/etc/authmesh/jwks.json").spawn(&verifier, Default::default())?;
//! verifier.keys_loaded().await;
//! # Ok(())
//! # }
//! ```

use std::{
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::{
    jwk::{JwkSet, KeyError},
    verifier::Verifier,
};

#[cfg(feature = "jwks-url")]
mod https;
#[cfg(feature = "token-service")]
mod token_service;

#[cfg(feature = "jwks-url")]
pub use https::{MAX_DOCUMENT_BYTES, fetch_discovered_jwks, fetch_jwks};
#[cfg(feature = "token-service")]
pub use token_service::spawn_key_refresh;

/// How often and how patiently keys are fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefreshSettings {
    /// Routine refresh period.
    pub interval: Duration,
    /// Minimum time between two fetches, however many unknown `kid`s arrive.
    pub cooldown: Duration,
    /// Upper bound of one fetch.
    pub timeout: Duration,
    /// Longest wait between retries after failures (backoff doubles up to it).
    pub max_backoff: Duration,
}

impl Default for KeyRefreshSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            cooldown: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Why keys could not be fetched. The previous keys stay in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeySourceError {
    /// The source did not answer within [`KeyRefreshSettings::timeout`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A key file could not be read.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key set, or a key in it, was refused (or is not JSON of that shape).
    #[error("key set refused")]
    Refused(#[from] KeyError),
    /// The token service answered `GetJwks` with an error.
    #[error("token service answered GetJwks with {code:?}: {message}")]
    TokenService {
        /// The status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// A URL that is not `https://host[:port]/path`.
    #[error("{url:?} is not an https:// URL with a host")]
    NotHttps {
        /// The URL as given.
        url: String,
    },
    /// Connecting, the TLS handshake or the HTTP exchange failed.
    #[error("{step} with {authority} failed")]
    Connection {
        /// What was being done: `connect`, `TLS` or `HTTP`.
        step: &'static str,
        /// `host:port`.
        authority: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with another status than 200.
    #[error("{url} answered HTTP status {status}")]
    HttpStatus {
        /// The URL fetched.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than the cap, so it was not read.
    #[error("{url}: body larger than the cap (at most {max} bytes)")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The cap in bytes.
        max: usize,
    },
    /// The body is not JSON of the expected shape.
    #[error("{url}: not a {what}")]
    NotJson {
        /// The URL fetched.
        url: String,
        /// What was expected (`JWK Set`, `discovery document`).
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The discovery document names another issuer, or a `jwks_uri` that is not https.
    #[error("discovery document of {issuer} refused: {reason}")]
    Discovery {
        /// The issuer whose document it is.
        issuer: String,
        /// What was wrong.
        reason: &'static str,
    },
}

/// Renders an error with its whole source chain, for logs.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Where a verifier's keys come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum KeySource {
    /// A fixed JWK Set, installed once (nothing to refresh).
    Static(JwkSet),
    /// A JWK Set document in a file, read at start and re-read on every
    /// refresh, so a rotated file is picked up without a restart.
    File(PathBuf),
    /// The AuthMesh token service's `GetJwks`, on a channel to it.
    #[cfg(feature = "token-service")]
    TokenService(tonic::transport::Channel),
    /// A JWK Set at an HTTPS URL (the token service's
    /// `/.well-known/jwks.json`, or any issuer's), over TLS per `tls`.
    #[cfg(feature = "jwks-url")]
    JwksUrl {
        /// `https://host[:port]/path`.
        url: String,
        /// Whom to trust (and which client certificate to present).
        tls: std::sync::Arc<rustls::ClientConfig>,
    },
    /// OIDC discovery: `{issuer}/.well-known/openid-configuration`, whose
    /// `issuer` must equal the verifier's issuer byte for byte, then its
    /// `jwks_uri` (https only). Both fetched on every refresh.
    #[cfg(feature = "jwks-url")]
    OidcDiscovery {
        /// Whom to trust (and which client certificate to present).
        tls: std::sync::Arc<rustls::ClientConfig>,
    },
}

impl KeySource {
    /// A fixed key set from a JWK Set document (`{"keys": [...]}`).
    ///
    /// # Errors
    /// [`KeySourceError::Refused`] when the text is not a JWK Set.
    pub fn static_json(document: &str) -> Result<Self, KeySourceError> {
        Ok(Self::Static(JwkSet::from_json(document.as_bytes())?))
    }

    /// A key set read from `path`, and re-read on every refresh.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// Starts keeping `verifier`'s keys current from this source. A static
    /// set is installed now; every other source is fetched at once in the
    /// background, then per `settings`.
    ///
    /// # Errors
    /// For a static set, [`KeySourceError::Refused`] when the verifier
    /// refuses it; for a URL, [`KeySourceError::NotHttps`].
    pub fn spawn(
        self,
        verifier: &Verifier,
        settings: KeyRefreshSettings,
    ) -> Result<KeyRefreshHandle, KeySourceError> {
        let verifier = verifier.clone();
        match self {
            KeySource::Static(set) => {
                verifier.install_keys(&set)?;
                Ok(KeyRefreshHandle { _task: None })
            }
            KeySource::File(path) => Ok(spawn_key_source(
                verifier,
                move || read_jwks_file(path.clone()),
                settings,
            )),
            #[cfg(feature = "token-service")]
            KeySource::TokenService(channel) => Ok(spawn_key_refresh(verifier, channel, settings)),
            #[cfg(feature = "jwks-url")]
            KeySource::JwksUrl { url, tls } => {
                let fetcher = https::Fetcher::new(&url, &tls)?;
                Ok(spawn_key_source(
                    verifier,
                    move || {
                        let fetcher = fetcher.clone();
                        async move { fetcher.jwks().await }
                    },
                    settings,
                ))
            }
            #[cfg(feature = "jwks-url")]
            KeySource::OidcDiscovery { tls } => {
                let issuer = verifier.issuer().to_owned();
                let discovery = https::Discovery::new(&issuer, tls)?;
                Ok(spawn_key_source(
                    verifier,
                    move || {
                        let discovery = discovery.clone();
                        async move { discovery.jwks().await }
                    },
                    settings,
                ))
            }
        }
    }
}

/// Reads and parses a JWK Set file.
async fn read_jwks_file(path: PathBuf) -> Result<JwkSet, KeySourceError> {
    let bytes = read_bounded(&path).await?;
    Ok(JwkSet::from_json(&bytes)?)
}

/// A key file larger than a JWKS document may be is refused unread.
async fn read_bounded(path: &Path) -> Result<Vec<u8>, KeySourceError> {
    const MAX_FILE_BYTES: u64 = 64 * 1024;
    let read = |source| KeySourceError::Read {
        path: path.to_owned(),
        source,
    };
    let size = tokio::fs::metadata(path).await.map_err(read)?.len();
    if size > MAX_FILE_BYTES {
        return Err(read(std::io::Error::other(format!(
            "{size} bytes, more than a key set may have ({MAX_FILE_BYTES})"
        ))));
    }
    tokio::fs::read(path).await.map_err(read)
}

/// The running refresh task (none for a static key set); stops when dropped.
#[derive(Debug)]
pub struct KeyRefreshHandle {
    _task: Option<AbortOnDropHandle<()>>,
}

/// Starts keeping `verifier`'s keys current from any source: `fetch` is
/// called at once, then on the schedule of `settings` (interval,
/// unknown-`kid` wake-ups after the cooldown, backoff on failure). Each
/// call is bounded by `settings.timeout`.
pub fn spawn_key_source<F, Fut>(
    verifier: Verifier,
    fetch: F,
    settings: KeyRefreshSettings,
) -> KeyRefreshHandle
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<JwkSet, KeySourceError>> + Send + 'static,
{
    KeyRefreshHandle {
        _task: Some(AbortOnDropHandle::new(tokio::spawn(refresh_loop(
            verifier, fetch, settings,
        )))),
    }
}

async fn refresh_loop<F, Fut>(verifier: Verifier, mut fetch: F, settings: KeyRefreshSettings)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<JwkSet, KeySourceError>>,
{
    let min_backoff = Duration::from_millis(250);
    let mut backoff = min_backoff;
    loop {
        let fetched_at = Instant::now();
        let fetched = tokio::time::timeout(settings.timeout, fetch())
            .await
            .unwrap_or(Err(KeySourceError::Timeout(settings.timeout)));
        let wait = match fetched {
            Ok(set) => match verifier.install_keys(&set) {
                Ok(()) => {
                    backoff = min_backoff;
                    settings.interval
                }
                Err(err) => {
                    verifier.metrics().key_refresh_failed();
                    tracing::error!(issuer = verifier.issuer(), error = %err, "the key source published a key set that was refused; keeping the previous keys");
                    next_backoff(&mut backoff, settings.max_backoff)
                }
            },
            Err(err) => {
                verifier.metrics().key_refresh_failed();
                tracing::warn!(issuer = verifier.issuer(), error = %ErrorChain(&err), keys = verifier.key_ids().len(), "key fetch failed; keeping the last good keys");
                next_backoff(&mut backoff, settings.max_backoff)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = verifier.refresh_requested() => {
                tokio::time::sleep_until(fetched_at + settings.cooldown).await;
            }
        }
    }
}

fn next_backoff(backoff: &mut Duration, max: Duration) -> Duration {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(max);
    wait
}

#[cfg(test)]
mod tests;
