//! [`CallContext`]: what the auth layer proved about one call, in one
//! request extension (one insert per call, not one per fact), and
//! [`CallerExt`], how handlers read it.

use crate::{peer::PeerIdentity, request_id::RequestId, verifier::VerifiedClaims};

/// What the auth layer proved about an allowed call: the token, the client
/// certificate's identity (mTLS) and the request id.
#[derive(Debug, Clone)]
pub struct CallContext {
    claims: VerifiedClaims,
    peer: Option<PeerIdentity>,
    request_id: RequestId,
}

impl CallContext {
    pub(crate) fn new(
        claims: VerifiedClaims,
        peer: Option<PeerIdentity>,
        request_id: RequestId,
    ) -> Self {
        Self {
            claims,
            peer,
            request_id,
        }
    }

    /// The claims of the verified bearer token.
    pub fn claims(&self) -> &VerifiedClaims {
        &self.claims
    }

    /// The verified client certificate's identity, on mTLS connections.
    pub fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// The call's request id.
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }
}

/// What the auth layer proved about a call, for handlers: they read it
/// here and never parse headers themselves. `None` on a public method
/// (no token is checked there) or behind no auth layer.
///
/// ```
/// # fn handler(request: tonic::Request<()>) {
/// use auth_interceptor::CallerExt;
///
/// let claims = request.verified_claims(); // the token: sub, aud, scope, jti
/// let acting = request.actor().map(|actor| &actor.sub); // who acts for the user `sub`, if anyone
/// let workload = request.peer_identity().and_then(|p| p.spiffe_id()); // the client certificate (mtls)
/// let request_id = request.request_id(); // pass it on to the calls you make
/// # let _ = (claims, acting, workload, request_id);
/// # }
/// ```
pub trait CallerExt {
    /// Everything below at once.
    fn call_context(&self) -> Option<&CallContext>;

    /// The claims of the verified bearer token.
    fn verified_claims(&self) -> Option<&VerifiedClaims> {
        self.call_context().map(CallContext::claims)
    }

    /// On a call made on a user's behalf (a token minted by token
    /// exchange): the workload acting for the user, who is then the
    /// claims' `sub`. `None` for a workload calling for itself.
    fn actor(&self) -> Option<&crate::token::Actor> {
        self.verified_claims()
            .and_then(|claims| claims.act.as_ref())
    }

    /// The verified client certificate's identity, on mTLS connections.
    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.call_context().and_then(CallContext::peer_identity)
    }

    /// The call's request id, to pass on to the calls the handler makes.
    fn request_id(&self) -> Option<&RequestId> {
        self.call_context().map(CallContext::request_id)
    }
}

impl<T> CallerExt for tonic::Request<T> {
    fn call_context(&self) -> Option<&CallContext> {
        self.extensions().get()
    }
}

impl<B> CallerExt for http::Request<B> {
    fn call_context(&self) -> Option<&CallContext> {
        self.extensions().get()
    }
}
