//! [`AuthLayer`]: add authentication and per-method authorization to a tonic server.

use tower::Layer;

#[cfg(feature = "mtls")]
use crate::peer::PeerCache;
use crate::{policy::SharedPolicy, service::AuthService, verifier::Verifier};

/// Verifies the bearer token of every call and applies the method policy.
///
/// ```ignore
/// Server::builder()
///     .layer(AuthLayer::new(verifier, policy))
///     .add_service(MyServer::new(handler))
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Verifier,
    policy: SharedPolicy,
    #[cfg(feature = "mtls")]
    peers: PeerCache,
}

impl AuthLayer {
    /// A layer checking tokens with `verifier` and methods with `policy`
    /// (a [`crate::MethodPolicy`], or a [`SharedPolicy`] to replace it while serving).
    pub fn new(verifier: Verifier, policy: impl Into<SharedPolicy>) -> Self {
        Self {
            verifier,
            policy: policy.into(),
            #[cfg(feature = "mtls")]
            peers: PeerCache::new(1024),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::new(
            inner,
            self.verifier.clone(),
            self.policy.clone(),
            #[cfg(feature = "mtls")]
            self.peers.clone(),
        )
    }
}
