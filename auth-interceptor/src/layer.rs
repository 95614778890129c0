//! [`AuthLayer`]: add authentication and per-method authorization to a tonic server.

use std::sync::Arc;

use tower::Layer;

#[cfg(feature = "mtls")]
use crate::peer::PeerCache;
use crate::{
    method_kinds::MethodKinds,
    policy::SharedPolicy,
    service::{AuthService, Shared},
    verifier::Verifier,
};

/// Verifies the bearer token of every call and applies the method policy.
///
/// ```
/// # fn example(verifier: auth_interceptor::Verifier) {
/// use auth_interceptor::{AuthLayer, MethodKinds, MethodPolicy};
///
/// let policy = MethodPolicy::new().require("/demo.echo.v1.Echo/Say", ["echo.say"]);
/// let layer = AuthLayer::new(verifier, policy)
///     // Optional: unary responses need no token-bound body.
///     .method_kinds(MethodKinds::new().single_response("/demo.echo.v1.Echo/Say"));
/// // tonic::transport::Server::builder().layer(layer).add_service(EchoServer::new(handler))
/// # let _ = layer;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AuthLayer {
    /// One `Arc` for every service the layer makes.
    shared: Arc<Shared>,
}

impl AuthLayer {
    /// A layer checking tokens with `verifier` and methods with `policy`
    /// (a [`crate::MethodPolicy`], or a [`SharedPolicy`] to replace it while serving).
    pub fn new(verifier: Verifier, policy: impl Into<SharedPolicy>) -> Self {
        Self {
            shared: Arc::new(Shared {
                verifier,
                policy: policy.into(),
                kinds: MethodKinds::new(),
                ledger: None,
                #[cfg(feature = "mtls")]
                peers: PeerCache::new(1024),
            }),
        }
    }

    /// Which methods answer with a single message (unary, client-streaming):
    /// their responses are passed through as they are. The others, and any
    /// method not in `kinds`, end with their token (expiry, revocation).
    /// [`MethodKinds::from_file_descriptor_set`] reads them from the
    /// descriptor set a tonic build writes for reflection.
    #[must_use]
    pub fn method_kinds(mut self, kinds: MethodKinds) -> Self {
        Arc::make_mut(&mut self.shared).kinds = kinds;
        self
    }

    /// One-time tokens are used once across every replica of the service:
    /// after everything else allowed a call with one, `ledger` is asked
    /// whether it is the token's first use anywhere (and the call refused
    /// when it is not, or when the ledger cannot tell). Other tokens never
    /// reach the ledger. Without one, "once" holds per verifier.
    #[must_use]
    pub fn one_time_ledger(mut self, ledger: crate::SharedLedger) -> Self {
        Arc::make_mut(&mut self.shared).ledger = Some(ledger);
        self
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::new(inner, self.shared.clone())
    }
}
