//! Keys from the AuthMesh token service's `GetJwks`.

use authmesh_proto::authmesh::v1::{GetJwksRequest, token_service_client::TokenServiceClient};
use tonic::transport::Channel;

use super::{KeyRefreshHandle, KeyRefreshSettings, KeySourceError, spawn_key_source};
use crate::{
    jwk::{Jwk, JwkSet},
    verifier::Verifier,
};

/// Largest `GetJwks` response accepted.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Starts fetching keys for `verifier` from the token service on `channel`:
/// at once, then every `interval`, sooner (after the cooldown) when a call
/// met an unknown `kid`, and with backoff while the token service fails.
pub fn spawn_key_refresh(
    verifier: Verifier,
    channel: Channel,
    settings: KeyRefreshSettings,
) -> KeyRefreshHandle {
    let client = TokenServiceClient::new(channel).max_decoding_message_size(MAX_JWKS_BYTES);
    spawn_key_source(
        verifier,
        move || {
            let mut client = client.clone();
            async move { fetch(&mut client).await }
        },
        settings,
    )
}

async fn fetch(client: &mut TokenServiceClient<Channel>) -> Result<JwkSet, KeySourceError> {
    let response = client.get_jwks(GetJwksRequest {}).await.map_err(|status| {
        KeySourceError::TokenService {
            code: status.code(),
            message: status.message().to_owned(),
        }
    })?;
    Ok(JwkSet {
        keys: response
            .into_inner()
            .keys
            .into_iter()
            .map(Jwk::from)
            .collect(),
    })
}
