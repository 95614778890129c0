//! The verifying half of a service that accepts tokens: a [`Verifier`] kept
//! fed with keys from the token service, and the client secret a service
//! uses for its own tokens.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use auth_interceptor::{
    KeyRefreshHandle, KeySource, RevocationWatchHandle, SharedClock, Verifier,
    spawn_revocation_watch,
};

use crate::{
    config::{AuthConfig, UpstreamConfig},
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
    _refresh: KeyRefreshHandle,
    _revocations: RevocationWatchHandle,
    /// Keeps the JWKS URL's client certificate reloading while keys are fetched.
    _jwks_tls: Option<ClientTls>,
}

impl Verification {
    /// Starts verifying per `auth`: revocations watched over a channel to the
    /// token service at `upstream`, keys from its `GetJwks`, or from
    /// `auth.jwks_url` over HTTPS when one is set (trusting `auth.jwks_ca`, or
    /// else the upstream's TLS settings; paths relative to `dir`).
    ///
    /// # Errors
    /// [`RuntimeError::Verifier`] for out-of-range settings,
    /// [`RuntimeError::SelfTest`] when the crypto backend fails its self-test,
    /// [`RuntimeError::Tls`] for an unusable CA, [`RuntimeError::KeySource`]
    /// for a JWKS URL that is not https.
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
        let refresh = source.spawn(&verifier, auth.key_refresh())?;
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
