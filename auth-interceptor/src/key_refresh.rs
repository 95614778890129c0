//! Keeps a [`Verifier`]'s keys fresh from the token service's `GetJwks`, in
//! the background. The call path never waits on it: it reads whatever key
//! set was installed last, and a fetch that fails leaves that set in force.

use std::time::Duration;

use authmesh_proto::authmesh::v1::{GetJwksRequest, token_service_client::TokenServiceClient};
use tokio::{task::JoinHandle, time::Instant};
use tonic::transport::Channel;

use crate::{
    jwk::{Jwk, JwkSet},
    verifier::Verifier,
};

/// Largest `GetJwks` response accepted.
const MAX_JWKS_BYTES: usize = 64 * 1024;

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

/// The running refresh task; stops when dropped.
#[derive(Debug)]
pub struct KeyRefreshHandle(JoinHandle<()>);

impl Drop for KeyRefreshHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts fetching keys for `verifier` from the token service on `channel`:
/// at once, then every `interval`, sooner (after the cooldown) when a call
/// met an unknown `kid`, and with backoff while the token service fails.
pub fn spawn_key_refresh(
    verifier: Verifier,
    channel: Channel,
    settings: KeyRefreshSettings,
) -> KeyRefreshHandle {
    let client = TokenServiceClient::new(channel).max_decoding_message_size(MAX_JWKS_BYTES);
    let timeout = settings.timeout;
    spawn_key_source(
        verifier,
        move || {
            let mut client = client.clone();
            async move { fetch(&mut client, timeout).await }
        },
        settings,
    )
}

/// Starts keeping `verifier`'s keys current from any source: `fetch` is
/// called at once, then on the same schedule as [`spawn_key_refresh`]
/// (interval, unknown-`kid` wake-ups after the cooldown, backoff on failure).
/// It must bound its own time (`settings.timeout`).
pub fn spawn_key_source<F, Fut>(
    verifier: Verifier,
    fetch: F,
    settings: KeyRefreshSettings,
) -> KeyRefreshHandle
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<JwkSet, String>> + Send + 'static,
{
    KeyRefreshHandle(tokio::spawn(refresh_loop(verifier, fetch, settings)))
}

async fn refresh_loop<F, Fut>(verifier: Verifier, mut fetch: F, settings: KeyRefreshSettings)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<JwkSet, String>>,
{
    let min_backoff = Duration::from_millis(250);
    let mut backoff = min_backoff;
    loop {
        let fetched_at = Instant::now();
        let wait = match fetch().await {
            Ok(set) => match verifier.install_keys(&set) {
                Ok(()) => {
                    backoff = min_backoff;
                    settings.interval
                }
                Err(err) => {
                    verifier.metrics().key_refresh_failed();
                    tracing::error!(error = %err, "token service published a key set that was refused; keeping the previous keys");
                    next_backoff(&mut backoff, settings.max_backoff)
                }
            },
            Err(err) => {
                verifier.metrics().key_refresh_failed();
                tracing::warn!(error = %err, keys = verifier.key_ids().len(), "key fetch failed; keeping the last good keys");
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

async fn fetch(
    client: &mut TokenServiceClient<Channel>,
    timeout: Duration,
) -> Result<JwkSet, String> {
    let call = client.get_jwks(GetJwksRequest {});
    let response = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(JwkSet {
        keys: response
            .into_inner()
            .keys
            .into_iter()
            .map(Jwk::from)
            .collect(),
    })
}
