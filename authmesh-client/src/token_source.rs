//! The client side: get tokens from the token service with the service's own
//! credentials, keep one ready in memory, and attach it to outgoing calls.
//!
//! A background task refreshes the token ahead of expiry (one fetch at a
//! time, with backoff while the token service fails) and keeps serving the
//! cached token while it is still valid, so an issuer outage is invisible
//! until the cached token actually expires.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use authmesh_proto::authmesh::v1::{
    ExchangeTokenRequest, IssueTokenRequest, token_service_client::TokenServiceClient,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::Interceptor,
    transport::Channel,
};

use authmesh_token::{SharedClock, system_clock};

use crate::error::TokenSourceError;

/// A client id and its secret, sent as HTTP Basic credentials.
#[derive(Clone)]
pub struct ClientCredentials {
    client_id: String,
    secret: String,
}

impl ClientCredentials {
    /// Credentials for `client_id`.
    pub fn new(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: secret.into(),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The `authorization` value: `Basic base64(id:secret)`.
    ///
    /// # Errors
    /// When the credentials contain bytes that cannot travel in metadata.
    pub fn basic_authorization(&self) -> Result<AsciiMetadataValue, Status> {
        let encoded = STANDARD.encode(format!("{}:{}", self.client_id, self.secret));
        MetadataValue::try_from(format!("Basic {encoded}"))
            .map_err(|_| Status::invalid_argument("credentials cannot be sent as metadata"))
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What to ask the token service for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The target service.
    pub audience: String,
    /// Scopes; empty asks for everything the client may have for the audience.
    pub scopes: Vec<String>,
    /// Lifetime; `None` takes the issuer's default.
    pub ttl_seconds: Option<i64>,
}

/// A token held in memory, with its expiry.
#[derive(Clone)]
struct CachedToken {
    header: AsciiMetadataValue,
    expires_at: u64,
    issued_at: u64,
}

/// Settings of the background refresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshSettings {
    /// Refresh once this fraction of the lifetime has passed (0.0 to 1.0).
    pub refresh_at_fraction: f64,
    /// Shortest wait after a failed fetch.
    pub min_backoff: Duration,
    /// Longest wait after repeated failed fetches.
    pub max_backoff: Duration,
    /// Upper bound of one `IssueToken` call.
    pub timeout: Duration,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            refresh_at_fraction: 0.8,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

struct Inner {
    client: TokenServiceClient<Channel>,
    /// `None`: the channel's client certificate is the only credential (mTLS).
    credentials: Option<ClientCredentials>,
    request: TokenRequest,
    settings: RefreshSettings,
    clock: SharedClock,
    current: ArcSwapOption<CachedToken>,
    last_error: ArcSwapOption<TokenSourceError>,
    wake: Notify,
    fetched: Notify,
}

/// Keeps a valid token for one audience ready in memory. Cheap to clone.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field(
                "client_id",
                &self
                    .inner
                    .credentials
                    .as_ref()
                    .map(ClientCredentials::client_id),
            )
            .field("request", &self.inner.request)
            .finish_non_exhaustive()
    }
}

/// The background refresh task; stops when dropped.
#[derive(Debug)]
pub struct TokenRefreshHandle {
    _task: AbortOnDropHandle<()>,
}

impl TokenSource {
    /// A token source talking to the token service on `channel`, sending
    /// `credentials` as `Basic`; with `None` the channel's client certificate
    /// (mTLS) is what authenticates, and tokens come back bound to it.
    pub fn new(
        channel: Channel,
        credentials: Option<ClientCredentials>,
        request: TokenRequest,
    ) -> Self {
        Self::with_settings(
            channel,
            credentials,
            request,
            RefreshSettings::default(),
            system_clock(),
        )
    }

    /// A token source with explicit refresh settings and clock.
    pub fn with_settings(
        channel: Channel,
        credentials: Option<ClientCredentials>,
        request: TokenRequest,
        settings: RefreshSettings,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: TokenServiceClient::new(channel),
                credentials,
                request,
                settings,
                clock,
                current: ArcSwapOption::empty(),
                last_error: ArcSwapOption::empty(),
                wake: Notify::new(),
                fetched: Notify::new(),
            }),
        }
    }

    /// The audience tokens are fetched for.
    pub fn audience(&self) -> &str {
        &self.inner.request.audience
    }

    /// Starts the background refresh. Keep the handle alive as long as the source is used.
    pub fn spawn_refresh(&self) -> TokenRefreshHandle {
        let source = self.clone();
        TokenRefreshHandle {
            _task: AbortOnDropHandle::new(tokio::spawn(async move { source.refresh_loop().await })),
        }
    }

    /// The cached token's `authorization` value, if it has not expired.
    ///
    /// # Errors
    /// [`TokenSourceError`] explaining why no valid token is at hand; the
    /// background refresh is woken to try again.
    pub fn current(&self) -> Result<AsciiMetadataValue, TokenSourceError> {
        let now = self.inner.clock.now();
        let cached = self.inner.current.load();
        if let Some(token) = cached.as_ref()
            && token.expires_at > now
        {
            return Ok(token.header.clone());
        }
        // Wakes the refresh task; it decides whether that may shorten its wait.
        self.inner.wake.notify_one();
        if let Some(err) = self.inner.last_error.load().as_deref() {
            return Err(err.clone());
        }
        let detail = if cached.is_some() {
            "cached token expired; refreshing"
        } else {
            "no token fetched yet"
        };
        Err(TokenSourceError::Unavailable {
            audience: self.inner.request.audience.clone(),
            detail: detail.into(),
        })
    }

    /// Waits until a valid token is at hand, at most `timeout` (needs
    /// [`TokenSource::spawn_refresh`] running).
    ///
    /// # Errors
    /// Why no token is at hand when the time is up.
    pub async fn ready(&self, timeout: std::time::Duration) -> Result<(), TokenSourceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let fetched = self.inner.fetched.notified();
            if self.has_valid_token() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, fetched).await.is_err() {
                return self.current().map(|_| ());
            }
        }
    }

    fn has_valid_token(&self) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .current
            .load()
            .as_ref()
            .is_some_and(|token| token.expires_at > now)
    }

    async fn refresh_loop(&self) {
        let settings = self.inner.settings;
        let mut backoff = settings.min_backoff;
        loop {
            let outcome = self.fetch().await.and_then(|token| {
                if token.expires_at > self.inner.clock.now() {
                    Ok(token)
                } else {
                    Err(TokenSourceError::Unavailable {
                        audience: self.inner.request.audience.clone(),
                        detail: "the token service issued an already expired token (clock skew?)"
                            .into(),
                    })
                }
            });
            let deadline = match outcome {
                Ok(token) => {
                    backoff = settings.min_backoff;
                    let lifetime = token.expires_at.saturating_sub(token.issued_at);
                    let refresh_in = (lifetime as f64 * settings.refresh_at_fraction) as u64;
                    self.inner.current.store(Some(Arc::new(token)));
                    self.inner.last_error.store(None);
                    self.inner.fetched.notify_waiters();
                    tokio::time::Instant::now() + Duration::from_secs(refresh_in.max(1))
                }
                Err(err) => {
                    tracing::warn!(audience = %self.inner.request.audience, error = %err, "token refresh failed; keeping the cached token while it is valid");
                    self.inner.last_error.store(Some(Arc::new(err)));
                    let wait = backoff;
                    backoff = (backoff * 2).min(settings.max_backoff);
                    tokio::time::Instant::now() + wait
                }
            };
            // A caller left without a valid token may cut a success-paced wait
            // short; it never shortens a backoff, and a stale wake-up while
            // the token is still good is ignored.
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = self.inner.wake.notified() => {
                        if self.inner.last_error.load().is_none() && !self.has_valid_token() {
                            tokio::time::sleep(settings.min_backoff).await;
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn fetch(&self) -> Result<CachedToken, TokenSourceError> {
        let request = self.with_credentials(IssueTokenRequest {
            audience: self.inner.request.audience.clone(),
            scopes: self.inner.request.scopes.clone(),
            ttl_seconds: self.inner.request.ttl_seconds,
            // A token source reuses its token on many calls.
            one_time: false,
        })?;
        let issued_at = self.inner.clock.now();
        let mut client = self.inner.client.clone();
        let response = self
            .answer(client.issue_token(request), "IssueToken")
            .await?;
        let header = self.bearer(&response.token)?;
        tracing::debug!(audience = %self.inner.request.audience, expires_at = response.expires_at, "token refreshed");
        Ok(CachedToken {
            header,
            expires_at: u64::try_from(response.expires_at).unwrap_or(0),
            issued_at,
        })
    }

    /// A token for this source's audience and scopes on behalf of the user
    /// whose token `subject_token` is (token exchange at the token service,
    /// with this source's credentials): `sub` is that user, `act` this
    /// workload. Made on each call, never cached: it is one user's.
    ///
    /// # Errors
    /// [`TokenSourceError::Unavailable`] while the token service cannot be
    /// reached, [`TokenSourceError::Refused`] when it refuses the exchange
    /// (the message says why: the user's token, or the exchange rules).
    pub async fn exchange(
        &self,
        subject_token: &str,
    ) -> Result<AsciiMetadataValue, TokenSourceError> {
        let request = self.with_credentials(ExchangeTokenRequest {
            subject_token: subject_token.to_owned(),
            subject_token_type: String::new(),
            audience: self.inner.request.audience.clone(),
            scopes: self.inner.request.scopes.clone(),
            ttl_seconds: None,
        })?;
        let mut client = self.inner.client.clone();
        let response = self
            .answer(client.exchange_token(request), "ExchangeToken")
            .await?;
        tracing::debug!(audience = %self.inner.request.audience, expires_at = response.expires_at, "token exchanged for a user");
        self.bearer(&response.token)
    }

    /// `body` as a request to the token service, with this source's
    /// credentials and timeout.
    fn with_credentials<T>(&self, body: T) -> Result<Request<T>, TokenSourceError> {
        let mut request = Request::new(body);
        if let Some(credentials) = &self.inner.credentials {
            let basic = credentials
                .basic_authorization()
                .map_err(|status| refused(&self.inner.request.audience, &status))?;
            request.metadata_mut().insert("authorization", basic);
        }
        request.set_timeout(self.inner.settings.timeout);
        Ok(request)
    }

    /// The token service's answer to `call` (named `what`), within the
    /// timeout: transient failures are [`TokenSourceError::Unavailable`],
    /// the rest [`TokenSourceError::Refused`].
    async fn answer<R>(
        &self,
        call: impl Future<Output = Result<tonic::Response<R>, Status>>,
        what: &str,
    ) -> Result<R, TokenSourceError> {
        let audience = &self.inner.request.audience;
        match tokio::time::timeout(self.inner.settings.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) if is_transient(status.code()) => Err(TokenSourceError::Unavailable {
                audience: audience.clone(),
                detail: format!("{:?}: {}", status.code(), status.message()),
            }),
            Ok(Err(status)) => Err(refused(audience, &status)),
            Err(_) => Err(TokenSourceError::Unavailable {
                audience: audience.clone(),
                detail: format!("{what} timed out"),
            }),
        }
    }

    /// `Bearer <token>` as metadata.
    fn bearer(&self, token: &str) -> Result<AsciiMetadataValue, TokenSourceError> {
        MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            TokenSourceError::Unavailable {
                audience: self.inner.request.audience.clone(),
                detail: "token service returned a token that cannot be sent as metadata".into(),
            }
        })
    }
}

fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    )
}

fn refused(audience: &str, status: &Status) -> TokenSourceError {
    TokenSourceError::Refused {
        audience: audience.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// Attaches the [`TokenSource`]'s current token to every outgoing call as
/// `authorization: Bearer <token>`; fails the call with UNAVAILABLE when no
/// valid token is at hand.
#[derive(Debug, Clone)]
pub struct BearerInterceptor {
    source: TokenSource,
}

impl BearerInterceptor {
    /// An interceptor reading tokens from `source`.
    pub fn new(source: TokenSource) -> Self {
        Self { source }
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = self.source.current().map_err(Status::from)?;
        request.metadata_mut().insert("authorization", header);
        Ok(request)
    }
}
