//! [`AuthLayer`]: add authentication and per-method authorization to a tonic server.

use std::sync::Arc;

use tower::Layer;

use crate::{policy::MethodPolicy, service::AuthService, verifier::Verifier};

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
    policy: Arc<MethodPolicy>,
}

impl AuthLayer {
    /// A layer checking tokens with `verifier` and methods with `policy`.
    pub fn new(verifier: Verifier, policy: MethodPolicy) -> Self {
        Self {
            verifier,
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::new(inner, self.verifier.clone(), self.policy.clone())
    }
}
