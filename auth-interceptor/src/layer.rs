//! [`AuthLayer`]: add authentication and per-method authorization to a tonic server.

use tower::Layer;

#[cfg(feature = "mtls")]
use crate::peer::PeerCache;
use crate::{policy::SharedPolicy, service::AuthService, verifier::Verifier};

/// Verifies the bearer token of every call and applies the method policy.
///
/// ```
/// # fn example(verifier: auth_interceptor::Verifier) {
/// use auth_interceptor::{AuthLayer, MethodPolicy};
///
/// let policy = MethodPolicy::new().require("/demo.echo.v1.Echo/Say", ["echo.say"]);
/// let layer = AuthLayer::new(verifier, policy);
/// // tonic::transport::Server::builder().layer(layer).add_service(EchoServer::new(handler))
/// # let _ = layer;
/// # }
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
