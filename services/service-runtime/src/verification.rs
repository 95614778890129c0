//! The verifying half of a service that accepts tokens: a [`Verifier`] kept
//! fed with keys from the token service, and the client secret a service
//! uses for its own tokens.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use auth_interceptor::{
    KeyRefreshHandle, KeyRefreshSettings, KeySource, RevocationWatchHandle, SharedClock, Verifier,
    spawn_revocation_watch,
};

use crate::{
    config::{AuthConfig, TrustedIssuerConfig, TrustedKeys, UpstreamConfig},
    error::RuntimeError,
    files::read_to_string,
    tls::RELOAD_INTERVAL,
    upstream::{ClientTls, upstream_channel, upstream_tls},
};

/// A verifier and the background tasks that keep its keys and revocations
/// current; they stop when this is dropped.
#[derive(Debug)]
pub struct Verification {
    /// Verifies tokens; clone it into the auth layer.
    pub verifier: Verifier,
    /// With `one_time_via_token_service`: the token service as the one-time ledger.
    pub ledger: Option<auth_interceptor::SharedLedger>,
    _refresh: Vec<KeyRefreshHandle>,
    _revocations: RevocationWatchHandle,
    /// Keeps the TLS settings of HTTPS key sources (a client certificate,
    /// a CA) reloading while keys are fetched.
    _jwks_tls: Vec<ClientTls>,
}

impl Verification {
    /// Starts verifying per `auth`: revocations watched over a channel to the
    /// token service at `upstream`, keys from its `GetJwks`, or from
    /// `auth.jwks_url` over HTTPS when one is set (trusting `auth.jwks_ca`, or
    /// else the upstream's TLS settings; paths relative to `dir`); and each
    /// of `auth.trusted_issuers` kept fed from its own key source.
    ///
    /// # Errors
    /// [`RuntimeError::Verifier`] for out-of-range settings,
    /// [`RuntimeError::SelfTest`] when the crypto backend fails its self-test,
    /// [`RuntimeError::Tls`] for an unusable CA, [`RuntimeError::KeySource`]
    /// for a JWKS URL that is not https or a refused HS256 secret,
    /// [`RuntimeError::Io`] for an unreadable secret file.
    pub fn start(
        auth: &AuthConfig,
        upstream: &UpstreamConfig,
        dir: &Path,
        clock: SharedClock,
    ) -> Result<Self, RuntimeError> {
        auth_interceptor::self_test()?;
        let token_service = upstream_channel(upstream, dir)?;
        let verifier = Verifier::with_clock(auth.verifier_config(), clock)?;
        let (source, jwks_tls) = match &auth.jwks_url {
            None => (KeySource::TokenService(token_service.clone()), None),
            Some(url) => {
                let tls = match &auth.jwks_ca {
                    Some(ca) => ClientTls::new(&dir.join(ca), None, RELOAD_INTERVAL)?,
                    None => upstream_tls(upstream, dir)?,
                };
                tracing::info!(%url, "verification keys from a JWKS URL");
                let source = KeySource::JwksUrl {
                    url: url.clone(),
                    tls: tls.client_config(),
                };
                (source, Some(tls))
            }
        };
        let mut refresh = vec![source.spawn(&verifier, auth.key_refresh())?];
        let mut jwks_tls: Vec<ClientTls> = jwks_tls.into_iter().collect();
        for trusted in &auth.trusted_issuers {
            let (handle, tls) = spawn_trusted_keys(&verifier, trusted, auth.key_refresh(), dir)?;
            refresh.extend(handle);
            jwks_tls.extend(tls);
        }
        let ledger = auth.one_time_via_token_service.then(|| {
            Arc::new(auth_interceptor::TokenServiceLedger::new(
                token_service.clone(),
            )) as auth_interceptor::SharedLedger
        });
        let revocations =
            spawn_revocation_watch(verifier.clone(), token_service, Default::default());
        Ok(Self {
            verifier,
            ledger,
            _refresh: refresh,
            _revocations: revocations,
            _jwks_tls: jwks_tls,
        })
    }
}

/// Keeps one trusted issuer's keys current in `verifier` from its key
/// source (paths relative to `dir`); an HS256 secret is installed once and
/// warned about. Returns the refresh task and the TLS settings it fetches
/// with, both to be kept while keys are wanted.
///
/// # Errors
/// [`RuntimeError::Verifier`] for an issuer the verifier does not trust or
/// a key source that is not exactly one, [`RuntimeError::Tls`] for an
/// unusable CA, [`RuntimeError::Io`] for an unreadable secret file,
/// [`RuntimeError::KeySource`] for a refused secret or a URL that is not https.
pub fn spawn_trusted_keys(
    verifier: &Verifier,
    trusted: &TrustedIssuerConfig,
    settings: KeyRefreshSettings,
    dir: &Path,
) -> Result<(Option<KeyRefreshHandle>, Option<ClientTls>), RuntimeError> {
    let refuse = |reason| auth_interceptor::verifier::ConfigError::TrustedIssuer {
        issuer: trusted.issuer.clone(),
        reason,
    };
    let handle = verifier
        .for_issuer(&trusted.issuer)
        .ok_or_else(|| refuse("not trusted by the verifier"))?;
    let https_tls = || -> Result<ClientTls, RuntimeError> {
        let ca = trusted
            .ca
            .as_ref()
            .ok_or_else(|| refuse("discovery and jwks_url need `ca` (a PEM bundle)"))?;
        ClientTls::new(&dir.join(ca), None, RELOAD_INTERVAL)
    };
    let (source, tls) = match trusted.keys()? {
        TrustedKeys::Discovery => {
            let tls = https_tls()?;
            let source = KeySource::OidcDiscovery {
                tls: tls.client_config(),
            };
            (source, Some(tls))
        }
        TrustedKeys::JwksUrl(url) => {
            let tls = https_tls()?;
            let source = KeySource::JwksUrl {
                url: url.to_owned(),
                tls: tls.client_config(),
            };
            (source, Some(tls))
        }
        TrustedKeys::JwksFile(file) => (KeySource::file(dir.join(file)), None),
        TrustedKeys::SharedSecret(file) => {
            let path = dir.join(file);
            let secret = std::fs::read(&path).map_err(|e| RuntimeError::io("reading", &path, e))?;
            // A trailing newline from an editor is not part of the secret.
            handle
                .install_shared_secret(secret.trim_ascii())
                .map_err(|e| RuntimeError::KeySource(e.into()))?;
            tracing::warn!(issuer = %trusted.issuer, "trusting HS256 tokens signed with a shared secret: anyone holding it can mint this issuer's tokens; meant for migrations only");
            return Ok((None, None));
        }
    };
    tracing::info!(issuer = %trusted.issuer, "trusting an external issuer");
    Ok((Some(source.spawn(&handle, settings)?), tls))
}

/// A client secret from `AUTHMESH_CLIENT_SECRET`, or else from `file`
/// (resolved against `dir`); `None` when neither is set (the client then
/// authenticates with its certificate alone). Secrets never come from the TOML itself.
///
/// # Errors
/// [`RuntimeError::Io`] when the file is unreadable, [`RuntimeError::SecretEmpty`] when it is empty.
pub fn client_secret(file: Option<&PathBuf>, dir: &Path) -> Result<Option<String>, RuntimeError> {
    if let Ok(secret) = std::env::var("AUTHMESH_CLIENT_SECRET")
        && !secret.trim().is_empty()
    {
        return Ok(Some(secret.trim().to_owned()));
    }
    let Some(file) = file else {
        return Ok(None);
    };
    let secret = read_to_string(&dir.join(file))?.trim().to_owned();
    if secret.is_empty() {
        return Err(RuntimeError::SecretEmpty { file: file.clone() });
    }
    Ok(Some(secret))
}
