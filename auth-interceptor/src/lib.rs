//! Authentication and authorization for every gRPC call of a tonic server.
//!
//! A [`Verifier`] holds the public keys of the mesh's issuer (and of any
//! external issuer it also trusts, see [`IssuerProfile`]), kept current in
//! the background from a [`KeySource`] (a static JWK Set, a file, the
//! AuthMesh token service, an HTTPS JWKS URL or OIDC discovery). An [`AuthLayer`]
//! checks each call's bearer token and the [`MethodPolicy`] before the
//! router sees it, then puts the [`VerifiedClaims`] into the request
//! extensions, where handlers read them through [`CallerExt`]:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use auth_interceptor::{AuthLayer, CallerExt, KeySource, MethodPolicy, Verifier, VerifierConfig};
//!
//! let verifier = Verifier::new(VerifierConfig::new("https://issuer.example", "inventory"))?;
//! let _keys = KeySource::file("jwks.json").spawn(&verifier, Default::default())?;
//! let policy = MethodPolicy::new().require("/demo.inventory.v1.Inventory/GetStock", ["inventory.read"]);
//! let layer = AuthLayer::new(verifier, policy);
//! // tonic::transport::Server::builder().layer(layer).add_service(...)
//! // and in a handler: request.verified_claims().map(|claims| &claims.sub)
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! Nothing here signs tokens (that is `authmesh-signing`, for the issuer)
//! or fetches them for outgoing calls (that is `authmesh-client`).
//!
//! # Features
//! All off by default, so a service that only verifies builds only what it uses:
//! - `token-service`: keys from the token service's `GetJwks` and
//!   revocations streamed from it (brings the AuthMesh protos);
//! - `jwks-url`: keys from an HTTPS JWKS URL or OIDC discovery;
//! - `mtls`: the client certificate's identity and certificate-bound tokens;
//! - `metrics`: decision, cache and key metrics through the `metrics` facade;
//! - `toml`: method policies from TOML;
//! - `mint-analysis`: what the issuer asks of a policy before it mints.

pub mod bearer;
pub mod call_context;
pub mod call_path;
pub mod error;
pub mod future;
pub mod key_source;
mod known_answer;
pub mod layer;
pub mod method_kinds;
mod observe;
pub mod one_time_ledger;
pub mod peer;
pub mod policy;
mod replay;
pub mod request_id;
pub mod revocation;
#[cfg(feature = "token-service")]
pub mod revocation_watch;
pub mod service;
pub mod stream_bound;
pub mod verifier;

/// The token profile this crate verifies, re-exported so a verifier needs no
/// second dependency: claims, JWKs and the clock.
pub use authmesh_token::{self as token_profile, clock, jwk, profile as token};

pub use authmesh_token::{
    Claims, Clock, Confirmation, Jwk, JwkSet, JwsAlgorithm, KeyError, OffsetClock, ScopeClaim,
    SharedClock, SigningAlgorithm, SystemClock, TokenHeader,
};
pub use bearer::bearer_token;
pub use call_context::{CallContext, CallerExt};
pub use call_path::{Decision, Denial, decide};
pub use error::{AuthError, ERROR_DOMAIN, TokenError};
pub use future::ResponseFuture;
#[cfg(feature = "token-service")]
pub use key_source::spawn_key_refresh;
pub use key_source::{
    KeyRefreshHandle, KeyRefreshSettings, KeySource, KeySourceError, spawn_key_source,
};
pub use known_answer::{SelfTestError, self_test};
pub use layer::AuthLayer;
pub use method_kinds::MethodKinds;
#[cfg(feature = "token-service")]
pub use one_time_ledger::TokenServiceLedger;
pub use one_time_ledger::{LedgerError, LedgerFuture, OneTimeLedger, SharedLedger};
#[cfg(feature = "mtls")]
pub use peer::PeerCache;
pub use peer::{PeerError, PeerIdentity};
pub use policy::{
    DryRunEffect, DryRunOutcome, Evaluation, MethodPolicy, PolicyError, SharedPolicy,
};
pub use request_id::{REQUEST_ID_HEADER, RequestId};
pub use revocation::{Revocation, RevokedTarget};
#[cfg(feature = "token-service")]
pub use revocation_watch::{
    RevocationWatchHandle, RevocationWatchSettings, spawn_revocation_watch,
};
pub use service::AuthService;
pub use stream_bound::TokenBoundBody;
pub use verifier::{IssuerProfile, VerifiedClaims, Verifier, VerifierConfig};
