//! The client side of AuthMesh: a [`TokenSource`] gets tokens from the
//! token service with the service's own credentials (a client secret, or
//! its mTLS certificate alone), keeps one ready in memory and refreshes it
//! ahead of expiry; a [`BearerInterceptor`] attaches it to outgoing calls.
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! use authmesh_client::{BearerInterceptor, ClientCredentials, TokenRequest, TokenSource};
//!
//! let source = TokenSource::new(
//!     channel.clone(), // to the token service
//!     Some(ClientCredentials::new("orders", std::env::var("CLIENT_SECRET")?)),
//!     TokenRequest { audience: "inventory".into(), scopes: vec![], ttl_seconds: None },
//! );
//! let _refresh = source.spawn_refresh(); // keeps the token fresh until dropped
//! source.ready(std::time::Duration::from_secs(5)).await?;
//! let interceptor = BearerInterceptor::new(source);
//! // SomeClient::with_interceptor(inventory_channel, interceptor)
//! # let _ = interceptor;
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod token_source;

pub use error::TokenSourceError;
pub use token_source::{
    BearerInterceptor, ClientCredentials, RefreshSettings, TokenRefreshHandle, TokenRequest,
    TokenSource,
};
