//! The AuthMesh token service: authenticates callers with client
//! credentials, applies the per-client issuance allowlist, and mints
//! short-lived, audience-bound JWTs (RFC 9068 profile, EdDSA by default).
//! Public keys are served to anyone through `GetJwks`.

pub mod config;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod issuer;
pub mod keys;
pub mod limiter;
pub mod revocations;
pub mod service;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use auth_interceptor::{SharedClock, SharedPolicy};
use authmesh_proto::authmesh::v1::token_service_server::TokenServiceServer;
use service_runtime::{
    Health, Loaded, PolicyFile, PolicySource, Transport,
    file_watch::{WatchedFiles, poll},
    http_endpoint::HttpRoutesLayer,
    reflection_v1, reflection_v1alpha, serve_router, server_builder, watch_policy_file,
};
use tokio::net::TcpListener;

pub use authmesh_signing::SigningKey;
pub use config::{ClientConfig, Config};
pub use error::{IssueError, StartError};
pub use issuer::Issuer;
pub use keys::KeyStore;
pub use limiter::AuthLimits;
pub use revocations::RevocationStore;

/// Everything the token service needs before it listens.
#[derive(Debug)]
pub struct Prepared {
    /// Mints tokens.
    pub issuer: Arc<Issuer>,
    /// Revocations in force.
    pub revocations: Arc<RevocationStore>,
    /// The audiences' policy files, watched while serving.
    policy_files: Vec<(PolicyFile, SharedPolicy)>,
}

/// Loads keys, revocations and the audiences' policies, checks the
/// configuration and runs the sign/verify self-test.
///
/// # Errors
/// [`StartError`] naming what is wrong.
pub fn prepare(config: &Loaded<Config>, clock: SharedClock) -> Result<Prepared, StartError> {
    let keys = KeyStore::load_or_create(
        &config.path(&config.config.key_dir),
        config.config.algorithm,
        clock.clone(),
    )?;
    let mut policies = HashMap::new();
    let mut policy_files = Vec::new();
    for (audience, file) in &config.config.audience_policies {
        let source = PolicySource::from_file(config.path(file), false).map_err(|source| {
            StartError::Policy {
                audience: audience.clone(),
                source: Box::new(source),
            }
        })?;
        let shared = SharedPolicy::new(source.policy);
        policies.insert(audience.clone(), shared.clone());
        policy_files.extend(source.file.map(|file| (file, shared)));
    }
    let revocations = Arc::new(RevocationStore::load(
        &config.path(&config.config.revocations_file),
        clock.clone(),
    )?);
    let issuer = Issuer::new(&config.config, keys, clock, policies, revocations.clone())?;
    issuer.self_test()?;
    Ok(Prepared {
        issuer: Arc::new(issuer),
        revocations,
        policy_files,
    })
}

/// Serves the token service on `listener` until `shutdown` resolves, then
/// reports NOT_SERVING and drains in-flight calls.
///
/// # Errors
/// [`StartError`] when TLS or the transport fail.
pub async fn run(
    listener: TcpListener,
    config: Loaded<Config>,
    prepared: Prepared,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let Prepared {
        issuer,
        revocations,
        policy_files,
    } = prepared;
    // `authmesh keys rotate` rewrites the ring on disk; pick it up within a second.
    let keys_watch = {
        let issuer = issuer.clone();
        poll("key ring", Duration::from_secs(1), move || {
            if issuer.keys().reload_if_changed()? {
                tracing::info!(keys = issuer.jwks().keys.len(), "key ring reloaded");
            }
            Ok::<_, StartError>(())
        })
    };
    // Replicas sharing the revocations file: what another one revoked reaches
    // this one's watchers within half a second.
    let revocations_watch = {
        let store = revocations.clone();
        let file = WatchedFiles::new(vec![store.file().to_path_buf()]);
        poll("revocations file", Duration::from_millis(500), move || {
            if let Some(learned @ 1..) = file.reload_if_changed(|| store.sync_from_disk())? {
                tracing::info!(learned, "revocations taken from the shared file");
            }
            Ok::<_, String>(())
        })
    };
    let _policy_watches: Vec<_> = policy_files
        .into_iter()
        .map(|(file, shared)| watch_policy_file(file, shared, |_| Ok(())))
        .collect();
    // Revocation streams never end by themselves: they are told to when
    // shutdown begins, so the server can drain.
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        stopping_tx.send_replace(true);
    };
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
    // Discovery on the gRPC port: HTTP/1.1 or h2 GETs, answered before gRPC routing.
    let router = server_builder()
        .accept_http1(true)
        .layer(HttpRoutesLayer::new(discovery::routes(issuer.clone())))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(TokenServiceServer::new(service::TokenServiceHandler::new(
            issuer,
            revocations,
            stopping,
        )));
    serve_router(
        router,
        listener,
        &transport,
        true,
        &config.config.runtime,
        health.on_shutdown(shutdown),
    )
    .await?;
    drop(keys_watch);
    drop(revocations_watch);
    Ok(())
}
