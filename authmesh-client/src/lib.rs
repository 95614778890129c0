//! The client side of AuthMesh: a [`TokenSource`] gets tokens from the
//! token service with the service's own credentials (a client secret, or
//! its mTLS certificate alone), keeps one ready in memory and refreshes it
//! ahead of expiry; a [`BearerInterceptor`] attaches it to outgoing calls.
//!
//! ```no_run
//! # async fn example(token_service_channel: tonic::transport::Channel, inventory_channel: tonic::transport::Channel) -> Result<(), Box<dyn std::error::Error>> {
//! # use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
//! use authmesh_client::{BearerInterceptor, ClientCredentials, TokenRequest, TokenSource};
//!
//! let secret = std::fs::read_to_string("billing.secret")?;
//! let tokens = TokenSource::new(
//!     token_service_channel, // with your workload certificate, if any
//!     Some(ClientCredentials::new("billing", secret.trim())), // None: the certificate alone authenticates
//!     TokenRequest {
//!         audience: "inventory".into(),
//!         scopes: vec!["inventory.read".into()],
//!         ttl_seconds: None,
//!     },
//! );
//! let _refresh = tokens.spawn_refresh(); // refreshes at 80% of the lifetime, backs off while the issuer is down
//! tokens.ready(std::time::Duration::from_secs(5)).await?; // optional: wait for the first token
//! let mut inventory = InventoryClient::with_interceptor(inventory_channel, BearerInterceptor::new(tokens));
//! # let _ = &mut inventory;
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
