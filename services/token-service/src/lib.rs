//! The AuthMesh token service: authenticates callers with client
//! credentials, applies the per-client issuance allowlist, and mints
//! short-lived, audience-bound JWTs (RFC 9068 profile, EdDSA by default).
//! Public keys are served to anyone through `GetJwks`.

pub mod config;
pub mod credentials;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod limiter;
pub mod service;

use std::{future::Future, sync::Arc};

use auth_interceptor::SharedClock;
use authmesh_proto::authmesh::v1::token_service_server::TokenServiceServer;
use service_runtime::{
    Health, Loaded, Transport, reflection_v1, reflection_v1alpha, serve_router, server_builder,
};
use tokio::net::TcpListener;

pub use auth_interceptor::SigningKey;
pub use config::{ClientConfig, Config};
pub use error::{IssueError, StartError};
pub use issuer::Issuer;
pub use keys::KeyStore;
pub use limiter::AuthLimits;

/// Loads keys, checks the configuration and runs the sign/verify self-test.
///
/// # Errors
/// [`StartError`] naming what is wrong.
pub fn prepare(config: &Loaded<Config>, clock: SharedClock) -> Result<Arc<Issuer>, StartError> {
    let keys = KeyStore::load_or_create(
        &config.path(&config.config.key_dir),
        config.config.algorithm,
    )?;
    let issuer = Issuer::new(&config.config, keys, clock)?;
    issuer.self_test()?;
    Ok(Arc::new(issuer))
}

/// Serves the token service on `listener` until `shutdown` resolves, then
/// reports NOT_SERVING and drains in-flight calls.
///
/// # Errors
/// [`StartError`] when TLS or the transport fail.
pub async fn run(
    listener: TcpListener,
    config: Loaded<Config>,
    issuer: Arc<Issuer>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let transport = Transport::from_config(
        config.config.tls.as_ref(),
        config.config.insecure_plaintext,
        &config.dir,
    )?;
    let (mut health, health_service) = Health::new();
    health
        .register::<TokenServiceServer<service::TokenServiceHandler>>()
        .await;
    health.set_serving().await;
    tracing::info!(addr = ?listener.local_addr().ok(), issuer = issuer.issuer(), "token service listening");
    let (reflection_v1, reflection_v1alpha) = if config.config.public_reflection {
        (Some(reflection_v1()?), Some(reflection_v1alpha()?))
    } else {
        (None, None)
    };
    let router = server_builder()
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(TokenServiceServer::new(service::TokenServiceHandler::new(
            issuer,
        )));
    serve_router(router, listener, &transport, health.on_shutdown(shutdown)).await?;
    Ok(())
}
