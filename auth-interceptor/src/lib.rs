//! Authentication and authorization for every gRPC call of an AuthMesh service.
//!
//! Server side: a [`Verifier`] holds one issuer's public keys (refreshed in the
//! background by [`spawn_key_refresh`]) and an [`AuthLayer`] checks each call's
//! bearer token and the [`MethodPolicy`] before the router sees it, then puts
//! the [`VerifiedClaims`] into the request extensions:
//!
//! ```ignore
//! let verifier = Verifier::new(VerifierConfig::new("https://issuer", "inventory"))?;
//! let _keys = spawn_key_refresh(verifier.clone(), token_service_channel, Default::default());
//! let policy = MethodPolicy::new().require("/demo.inventory.v1.Inventory/GetStock", ["inventory.read"]);
//! Server::builder().layer(AuthLayer::new(verifier, policy)).add_service(svc);
//! // in a handler:
//! let caller = request.extensions().get::<VerifiedClaims>().map(|c| c.sub.clone());
//! ```
//!
//! Client side: a [`TokenSource`] keeps a token for one audience ready and a
//! [`BearerInterceptor`] attaches it to outgoing calls.

pub mod clock;
pub mod error;
pub mod jwk;
pub mod key_refresh;
pub mod layer;
mod observe;
pub mod peer;
pub mod policy;
mod replay;
pub mod revocation;
pub mod revocation_watch;
pub mod service;
pub mod signing;
pub mod stream_bound;
pub mod token;
pub mod token_source;
pub mod verifier;

pub use clock::{Clock, OffsetClock, SharedClock, SystemClock};
pub use error::{AuthError, ERROR_DOMAIN, TokenSourceError};
pub use jwk::{Jwk, JwkSet, KeyError};
pub use key_refresh::{KeyRefreshHandle, KeyRefreshSettings, spawn_key_refresh, spawn_key_source};
pub use layer::AuthLayer;
pub use peer::{CallerExt, PeerCache, PeerError, PeerIdentity};
pub use policy::{MethodPolicy, PolicyError, SharedPolicy};
pub use revocation::{Revocation, RevokedTarget};
pub use revocation_watch::{
    RevocationWatchHandle, RevocationWatchSettings, spawn_revocation_watch,
};
pub use service::{AuthService, Decision, Denial, REQUEST_ID_HEADER, RequestId, decide};
pub use signing::{SigningError, SigningKey, self_test};
pub use stream_bound::TokenBoundBody;
pub use token::{Claims, Confirmation, SigningAlgorithm, TokenHeader};
pub use token_source::{
    BearerInterceptor, ClientCredentials, RefreshSettings, TokenRefreshHandle, TokenRequest,
    TokenSource,
};
pub use verifier::{VerifiedClaims, Verifier, VerifierConfig};
