//! One-time tokens used once across every replica of a service: a
//! [`OneTimeLedger`] is asked, after everything else allowed the call, whether
//! this is the token's first use anywhere. Only one-time tokens go there;
//! every other token never leaves the call path.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

/// What a ledger answers: `Ok(true)` for a first use, `Ok(false)` for a
/// token used before, an error when it cannot tell (the call is refused).
pub type LedgerFuture = Pin<Box<dyn Future<Output = Result<bool, LedgerError>> + Send>>;

/// The ledger could not say whether the token was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("one-time ledger: {0}")]
pub struct LedgerError(pub String);

/// Records first uses of one-time tokens for every replica of a service.
pub trait OneTimeLedger: fmt::Debug + Send + Sync + 'static {
    /// Records the first use of `jti`, remembered until `expires_at` (Unix seconds).
    fn consume(&self, jti: &str, expires_at: u64) -> LedgerFuture;
}

/// A ledger shared by the services that use it.
pub type SharedLedger = Arc<dyn OneTimeLedger>;

/// The token service as the ledger (`ConsumeOneTime`): one create-if-absent
/// per one-time token, in etcd when the token service runs on it.
#[cfg(feature = "token-service")]
#[derive(Debug, Clone)]
pub struct TokenServiceLedger {
    client: authmesh_proto::authmesh::v1::token_service_client::TokenServiceClient<
        tonic::transport::Channel,
    >,
}

#[cfg(feature = "token-service")]
impl TokenServiceLedger {
    /// Longest a call waits for the token service's answer before it is refused.
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

    /// The token service reached over `channel`.
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            client: authmesh_proto::authmesh::v1::token_service_client::TokenServiceClient::new(
                channel,
            ),
        }
    }
}

#[cfg(feature = "token-service")]
impl OneTimeLedger for TokenServiceLedger {
    fn consume(&self, jti: &str, expires_at: u64) -> LedgerFuture {
        let mut client = self.client.clone();
        let request = authmesh_proto::authmesh::v1::ConsumeOneTimeRequest {
            jti: jti.to_owned(),
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX),
        };
        Box::pin(async move {
            let answer = tokio::time::timeout(Self::TIMEOUT, client.consume_one_time(request))
                .await
                .map_err(|_| LedgerError("the token service did not answer in time".into()))?
                .map_err(|status| {
                    LedgerError(format!("{:?}: {}", status.code(), status.message()))
                })?;
            Ok(answer.into_inner().first_use)
        })
    }
}
