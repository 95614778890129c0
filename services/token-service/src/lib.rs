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

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc};

use auth_interceptor::{SharedClock, SharedPolicy};
use authmesh_proto::authmesh::v1::token_service_server::TokenServiceServer;
use service_runtime::{
    BackgroundTask, Health, Loaded, Transport, http_endpoint::HttpRoutesLayer, load_policy,
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
    policy_files: Vec<(PathBuf, SharedPolicy)>,
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
        let file = config.path(file);
        let policy = load_policy(&file).map_err(|e| StartError::Policy(e.to_string()))?;
        let shared = SharedPolicy::new(policy);
        policies.insert(audience.clone(), shared.clone());
        policy_files.push((file, shared));
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
        BackgroundTask::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            // A bad ring is retried every second; say so once, not every second.
            let mut last_error = None;
            loop {
                tick.tick().await;
                match issuer.keys().reload_if_changed() {
                    Ok(true) => {
                        last_error = None;
                        tracing::info!(keys = issuer.jwks().keys.len(), "key ring reloaded")
                    }
                    Ok(false) => {}
                    Err(err) => {
                        let err = err.to_string();
                        if last_error.as_ref() != Some(&err) {
                            tracing::error!(error = %err, "key ring rejected; the current keys stay");
                            last_error = Some(err);
                        }
                    }
                }
            }
        })
    };
    // Replicas sharing the revocations file: what another one revoked reaches
    // this one's watchers within half a second.
    let revocations_watch = {
        let store = revocations.clone();
        BackgroundTask::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            let mut seen = store.file_modified();
            loop {
                tick.tick().await;
                let now = store.file_modified();
                if now == seen {
                    continue;
                }
                match store.sync_from_disk() {
                    Ok(learned) => {
                        seen = now;
                        if learned > 0 {
                            tracing::info!(learned, "revocations taken from the shared file");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "revocations file unreadable; retrying")
                    }
                }
            }
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
