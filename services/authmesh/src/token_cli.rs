//! `authmesh token mint`, `authmesh token inspect` and `authmesh revoke`.

use std::path::{Path, PathBuf};

use auth_interceptor::{
    AuthError, Jwk, JwkSet, Revocation, Verifier, VerifierConfig,
    token::{parse_claims, split_token},
};
use authmesh_client::ClientCredentials;
use authmesh_proto::authmesh::v1::{
    GetJwksRequest, IssueTokenRequest, IssueTokenResponse, RevokeRequest, RevokeResponse,
    SubjectRevocation, TokenRevocation, WatchRevocationsRequest, revoke_request,
    token_service_client::TokenServiceClient,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use service_runtime::{RuntimeError, TlsError, UpstreamConfig, upstream_channel};
use tonic::transport::Channel;

use crate::dev_state::DevState;

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenCliError {
    /// The token service refused or could not be reached.
    #[error("token service answered {:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// Files, TLS or the channel.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The input is not a JWT.
    #[error("not a JWT: {0}")]
    NotAToken(String),
    /// The command cannot run as asked.
    #[error("{0}")]
    Usage(String),
}

/// Where the token service is and how to trust it.
#[derive(Debug, Clone)]
pub struct TokenServiceEndpoint {
    /// `https://localhost:50051`.
    pub url: String,
    /// CA that signed its certificate.
    pub ca: PathBuf,
    /// Client certificate and key to present (mTLS), if any.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TokenServiceEndpoint {
    /// A channel to the endpoint with its TLS settings.
    ///
    /// # Errors
    /// [`RuntimeError`] for unusable TLS files or URL.
    pub fn channel(&self) -> Result<Channel, RuntimeError> {
        // A plain-HTTP URL would only ever fail as "Cancelled": say why instead.
        if !self.url.starts_with("https://") {
            return Err(TlsError::PlainHttp(self.url.clone()).into());
        }
        upstream_channel(&self.upstream(), Path::new("."))
    }

    /// The endpoint as a service's `[token_service]` section would name it.
    pub fn upstream(&self) -> UpstreamConfig {
        UpstreamConfig {
            url: self.url.clone(),
            ca: Some(self.ca.clone()),
            cert: self.identity.as_ref().map(|(cert, _)| cert.clone()),
            key: self.identity.as_ref().map(|(_, key)| key.clone()),
            failover_urls: Vec::new(),
        }
    }
}

/// Asks the token service for a token as `credentials` (and as the client
/// certificate of `endpoint`, when it has one: the token is then bound to it).
///
/// # Errors
/// [`TokenCliError::Status`] with the token service's answer.
pub async fn mint(
    endpoint: &TokenServiceEndpoint,
    credentials: Option<&ClientCredentials>,
    audience: &str,
    scopes: Vec<String>,
    ttl_seconds: Option<i64>,
    one_time: bool,
) -> Result<IssueTokenResponse, TokenCliError> {
    let mut client = TokenServiceClient::new(endpoint.channel()?);
    let request = with_credentials(
        IssueTokenRequest {
            audience: audience.to_owned(),
            scopes,
            ttl_seconds,
            one_time,
        },
        credentials,
    )?;
    Ok(client.issue_token(request).await?.into_inner())
}

fn with_credentials<T>(
    message: T,
    credentials: Option<&ClientCredentials>,
) -> Result<tonic::Request<T>, TokenCliError> {
    let mut request = tonic::Request::new(message);
    if let Some(credentials) = credentials {
        request
            .metadata_mut()
            .insert("authorization", credentials.basic_authorization()?);
    }
    Ok(request)
}

/// What `authmesh revoke` revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One token by `jti`, with its `exp` when known.
    Token {
        /// The token id.
        jti: String,
        /// Its expiry, Unix seconds.
        expires_at: Option<i64>,
    },
    /// Every token of `sub` issued at or before a time (default now).
    Subject {
        /// The subject.
        sub: String,
        /// Unix seconds.
        issued_before: Option<i64>,
    },
}

impl RevokeTarget {
    /// The `jti` and `exp` of `token`, read without verifying it (the token
    /// service only needs to know which token, and how long to remember it).
    ///
    /// # Errors
    /// [`TokenCliError::NotAToken`] when they cannot be read.
    pub fn from_token(token: &str) -> Result<Self, TokenCliError> {
        let parts = split_token(token).map_err(|e| TokenCliError::NotAToken(e.to_string()))?;
        let claims = decode_segment(parts.payload, "payload")?;
        let jti = claims["jti"]
            .as_str()
            .ok_or_else(|| TokenCliError::NotAToken("no string jti".into()))?;
        Ok(Self::Token {
            jti: jti.to_owned(),
            expires_at: claims["exp"].as_i64(),
        })
    }
}

/// Revokes `target` at the token service, as `credentials` and/or the
/// client certificate of `endpoint` (a client with `may_revoke`).
///
/// # Errors
/// [`TokenCliError::Status`] with the token service's answer.
pub async fn revoke(
    endpoint: &TokenServiceEndpoint,
    credentials: Option<&ClientCredentials>,
    target: RevokeTarget,
    reason: &str,
) -> Result<RevokeResponse, TokenCliError> {
    let target = match target {
        RevokeTarget::Token { jti, expires_at } => {
            revoke_request::Target::Token(TokenRevocation { jti, expires_at })
        }
        RevokeTarget::Subject { sub, issued_before } => {
            revoke_request::Target::Subject(SubjectRevocation { sub, issued_before })
        }
    };
    let mut client = TokenServiceClient::new(endpoint.channel()?);
    let request = with_credentials(
        RevokeRequest {
            target: Some(target),
            reason: reason.to_owned(),
        },
        credentials,
    )?;
    Ok(client.revoke(request).await?.into_inner())
}

fn decode_segment(segment: &str, what: &str) -> Result<serde_json::Value, TokenCliError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenCliError::NotAToken(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| TokenCliError::NotAToken(format!("{what} is not JSON")))
}

/// The header and claims of `token` (decoded for display, not trusted) and
/// whether it verifies against the keys the token service publishes now,
/// for the issuer and audience it names.
///
/// # Errors
/// [`TokenCliError::NotAToken`] when it cannot even be decoded.
pub async fn inspect(
    endpoint: &TokenServiceEndpoint,
    state: &DevState,
    token: &str,
) -> Result<serde_json::Value, TokenCliError> {
    let parts = split_token(token).map_err(|e| TokenCliError::NotAToken(e.to_string()))?;
    let header = decode_segment(parts.header, "header")?;
    let claims = decode_segment(parts.payload, "payload")?;
    let verification = match (claims["iss"].as_str(), claims["aud"].as_str()) {
        (Some(iss), Some(aud)) => verify_now(endpoint, state, token, iss, aud).await,
        // No issuer or audience to verify for: say which claim is wrong, as a verifier would.
        _ => {
            let err = match parse_claims(parts.payload) {
                Err(err) => AuthError::from(err),
                Ok(_) => AuthError::from(auth_interceptor::TokenError::InvalidClaims(
                    "iss and aud must be strings",
                )),
            };
            serde_json::json!({"verified": false, "reason": err.reason(), "detail": err.to_string()})
        }
    };
    Ok(serde_json::json!({"header": header, "claims": claims, "verification": verification}))
}

/// Whether `token` verifies now, as a verifier for its own `iss` and `aud`
/// would decide: the issuer's keys and the revocations in force.
async fn verify_now(
    endpoint: &TokenServiceEndpoint,
    state: &DevState,
    token: &str,
    iss: &str,
    aud: &str,
) -> serde_json::Value {
    if let Err(err) = endpoint.channel() {
        return serde_json::json!({"verified": null, "detail": format!("not checked: {err}")});
    }
    let view = match IssuerView::load(&endpoint.upstream(), Path::new("."), state).await {
        Ok(view) => view,
        Err(err) => {
            return serde_json::json!({"verified": null, "detail": format!("not checked: {err}")});
        }
    };
    let outcome = Verifier::new(VerifierConfig {
        record_metrics: false,
        ..VerifierConfig::new(iss, aud)
    })
    .map_err(|e| e.to_string())
    .and_then(|verifier| {
        verifier
            .install_keys(&view.keys)
            .map(|()| verifier)
            .map_err(|e| e.to_string())
    });
    match outcome {
        Err(detail) => serde_json::json!({"verified": false, "detail": detail}),
        Ok(verifier) => {
            verifier.apply_revocations(&view.revocations);
            match verifier.verify(token) {
                Ok(_) => serde_json::json!({"verified": true, "keys_from": view.source}),
                Err(err) => {
                    serde_json::json!({"verified": false, "reason": err.reason(), "detail": err.to_string(), "keys_from": view.source})
                }
            }
        }
    }
}

/// Longest wait for the token service's revocation list.
const REVOCATIONS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The full revocation list, as a verifier receives it first on its watch.
///
/// # Errors
/// [`TokenCliError`] when the stream cannot be opened or read in time.
pub async fn fetch_revocations(channel: Channel) -> Result<Vec<Revocation>, TokenCliError> {
    let mut client = TokenServiceClient::new(channel)
        .max_decoding_message_size(auth_interceptor::revocation_watch::MAX_BATCH_BYTES);
    let mut stream = client
        .watch_revocations(WatchRevocationsRequest {})
        .await?
        .into_inner();
    let mut all = Vec::new();
    let read = async {
        while let Some(batch) = stream.message().await? {
            all.extend(
                batch
                    .revocations
                    .into_iter()
                    .filter_map(|r| Revocation::try_from(r).ok()),
            );
            if batch.snapshot {
                return Ok(());
            }
        }
        Err(TokenCliError::Usage(
            "the token service ended the revocation list early".into(),
        ))
    };
    tokio::time::timeout(REVOCATIONS_TIMEOUT, read)
        .await
        .map_err(|_| TokenCliError::Usage("no revocation list within 5 s".into()))??;
    Ok(all)
}

/// What a verifier knows of the issuer: its published keys and the
/// revocations in force.
#[derive(Debug, Clone)]
pub struct IssuerView {
    /// The keys verifiers trust now.
    pub keys: JwkSet,
    /// The revocations in force.
    pub revocations: Vec<Revocation>,
    /// Where they came from, for the report.
    pub source: String,
}

impl IssuerView {
    /// Asks the token service at `upstream` (paths relative to `dir`); when
    /// it cannot be reached, reads the same keys and revocations from the
    /// state directory (the token service's key directory and revocations
    /// file), so the answer works offline too.
    ///
    /// # Errors
    /// [`TokenCliError`] when neither the token service nor the state can tell.
    pub async fn load(
        upstream: &UpstreamConfig,
        dir: &Path,
        state: &DevState,
    ) -> Result<Self, TokenCliError> {
        let online = async {
            let channel = upstream_channel(upstream, dir)?;
            let keys = fetch_keys(channel.clone()).await?;
            let revocations = fetch_revocations(channel).await?;
            Ok::<_, TokenCliError>((keys, revocations))
        };
        match online.await {
            Ok((keys, revocations)) => Ok(Self {
                keys,
                revocations,
                source: upstream.url.clone(),
            }),
            Err(online_error) => Self::from_state(state).map_err(|offline_error| {
                TokenCliError::Usage(format!(
                    "cannot tell which keys and revocations are in force: the token service at {} answered {online_error}, and the state directory {}: {offline_error}",
                    upstream.url,
                    state.dir().display()
                ))
            }),
        }
    }

    /// The keys and revocations the token service of `state` publishes,
    /// read from its files without starting it (and without creating anything).
    fn from_state(state: &DevState) -> Result<Self, TokenCliError> {
        let loaded = state.load_token_service()?;
        let key_dir = loaded.path(&loaded.config.key_dir);
        if !key_dir.is_dir() {
            return Err(TokenCliError::Usage(format!(
                "no key directory {}",
                key_dir.display()
            )));
        }
        let clock = auth_interceptor::clock::system_clock();
        let failed = |e: token_service::error::StartError| TokenCliError::Usage(e.to_string());
        let keys = token_service::keys::KeyStore::load(&key_dir, clock.clone())
            .map_err(failed)?
            .published();
        let revocations = token_service::revocations::RevocationStore::load(
            &loaded.path(&loaded.config.revocations_file),
            clock,
        )
        .map_err(failed)?
        .snapshot();
        Ok(Self {
            keys,
            revocations,
            source: format!(
                "{} (offline: the token service was not reachable)",
                state.dir().display()
            ),
        })
    }
}

/// The keys the token service publishes now.
///
/// # Errors
/// [`TokenCliError::Status`] when it cannot be asked.
pub async fn fetch_keys(channel: Channel) -> Result<JwkSet, TokenCliError> {
    let mut client = TokenServiceClient::new(channel);
    let response = client.get_jwks(GetJwksRequest {}).await?.into_inner();
    Ok(JwkSet {
        keys: response.keys.into_iter().map(Jwk::from).collect(),
    })
}

/// `grpc.health.v1.Health/Check` for `service` ("" for the whole server) at
/// the endpoint, within `timeout`; the serving status's name.
///
/// # Errors
/// [`TokenCliError`] when the server cannot be reached in time or answers an error.
pub async fn health(
    endpoint: &TokenServiceEndpoint,
    service: &str,
    timeout: std::time::Duration,
) -> Result<String, TokenCliError> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::new(endpoint.channel()?);
    let check = client.check(HealthCheckRequest {
        service: service.to_owned(),
    });
    let response = tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| TokenCliError::Usage(format!("no answer within {timeout:?}")))??;
    let status = tonic_health::pb::health_check_response::ServingStatus::try_from(
        response.into_inner().status,
    )
    .map_or("UNKNOWN", |s| s.as_str_name());
    Ok(status.to_owned())
}
