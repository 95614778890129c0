//! The AuthMesh token service: authenticates callers with client
//! credentials, applies the per-client issuance allowlist, and mints
//! short-lived, audience-bound JWTs (RFC 9068 profile, EdDSA by default).
//! Public keys are served to anyone through `GetJwks`.

pub mod admin;
pub mod config;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod issuer;
pub mod keys;
pub mod limiter;
pub mod one_time;
pub mod registrations;
pub mod revocations;
pub mod service;
pub mod store;

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use auth_interceptor::{SharedClock, SharedPolicy};
use authmesh_proto::authmesh::v1::{
    token_service_server::TokenServiceServer, workload_admin_server::WorkloadAdminServer,
};
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
pub use registrations::WorkloadsFile;
pub use revocations::RevocationStore;
pub use store::{EtcdStore, StoreConfig};

/// Everything the token service needs before it listens.
#[derive(Debug)]
pub struct Prepared {
    /// Mints tokens.
    pub issuer: Arc<Issuer>,
    /// Revocations in force.
    pub revocations: Arc<RevocationStore>,
    /// The audiences' policy files, watched while serving.
    policy_files: Vec<(PolicyFile, SharedPolicy)>,
    /// With `[store] kind = "etcd"`: this replica's part in it.
    pub store: Option<Arc<EtcdStore>>,
    /// Where workloads registered at run time are written.
    registrations: admin::Registrations,
}

/// Loads keys, revocations and the audiences' policies, checks the
/// configuration and runs the sign/verify self-test.
///
/// # Errors
/// [`StartError`] naming what is wrong.
pub fn prepare(config: &Loaded<Config>, clock: SharedClock) -> Result<Prepared, StartError> {
    let mut keys = KeyStore::load_or_create(
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
    let (revocations, store) = match &config.config.store {
        StoreConfig::Files => {
            let file = config.path(&config.config.revocations_file);
            (Arc::new(RevocationStore::load(&file, clock.clone())?), None)
        }
        StoreConfig::Etcd(etcd) => {
            let publication = Arc::new(keys::Publication::new(etcd.publish_lead_seconds));
            keys = keys.with_publication(publication.clone());
            let revocations = Arc::new(RevocationStore::in_memory(clock.clone()));
            let replica = etcd
                .replica_id
                .clone()
                .unwrap_or_else(|| default_replica_id(&config.config.listen));
            let store = EtcdStore::new(
                etcd,
                &config.dir,
                replica,
                config.config.max_ttl_seconds,
                clock.clone(),
                Arc::default(),
                publication,
                revocations.clone(),
            )?;
            (revocations, Some(Arc::new(store)))
        }
    };
    let exchange = exchange::Exchange::new(&config.config, &config.dir, clock.clone())?;
    let mut issuer = Issuer::new(&config.config, keys, clock, policies, revocations.clone())?;
    if let Some(exchange) = exchange {
        issuer = issuer.with_exchange(exchange);
    }
    let registrations = match &store {
        Some(store) => {
            issuer = issuer.with_store_gate(store.freshness().clone());
            admin::Registrations::Etcd(store.clone())
        }
        None => {
            let file = WorkloadsFile::new(config.path(&config.config.workloads_file));
            issuer.set_registered(&file.read().map_err(StartError::Config)?);
            admin::Registrations::File(file)
        }
    };
    issuer.self_test()?;
    Ok(Prepared {
        issuer: Arc::new(issuer),
        revocations,
        policy_files,
        store,
        registrations,
    })
}

/// A replica's name when the configuration gives none: the host's name and
/// the listen port, so replicas on one host differ too.
fn default_replica_id(listen: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "token-service".into());
    let port = listen.rsplit(':').next().unwrap_or("0");
    format!("{host}-{port}")
}

impl store::ReplicaState for Issuer {
    fn keys(&self) -> &KeyStore {
        Issuer::keys(self)
    }

    fn set_registered(&self, registered: &[ClientConfig]) {
        Issuer::set_registered(self, registered);
    }
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
        store,
        registrations,
    } = prepared;
    tokio::pin!(shutdown);
    // A replica on etcd reads everything before it serves anything.
    let revision = match &store {
        None => None,
        Some(store) => {
            let mut backoff = Duration::from_millis(250);
            loop {
                let attempt = tokio::select! {
                    caught_up = store.catch_up(issuer.as_ref()) => caught_up,
                    () = &mut shutdown => return Ok(()),
                };
                match attempt {
                    Ok(revision) => break Some(revision),
                    Err(err) => {
                        tracing::warn!(replica = store.replica(), error = %err, "cannot catch up with etcd yet; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    };
    if let Some(exchange) = issuer.exchange() {
        exchange.start_key_refresh(Default::default())?;
    }
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
    let revocations_watch = store.is_none().then(|| {
        let store = revocations.clone();
        let file = WatchedFiles::new(vec![store.file().to_path_buf()]);
        poll("revocations file", Duration::from_millis(500), move || {
            if let Some(learned @ 1..) = file.reload_if_changed(|| store.sync_from_disk())? {
                tracing::info!(learned, "revocations taken from the shared file");
            }
            Ok::<_, String>(())
        })
    });
    // Replicas sharing the workloads file: what another one registered is
    // in force here within half a second.
    let workloads_watch = match &registrations {
        admin::Registrations::File(file) => {
            let issuer = issuer.clone();
            let watched = WatchedFiles::new(vec![file.path().to_path_buf()]);
            let file = file.clone();
            Some(poll(
                "workloads file",
                Duration::from_millis(500),
                move || {
                    if watched
                        .reload_if_changed(|| file.read().map(|w| issuer.set_registered(&w)))?
                        .is_some()
                    {
                        tracing::info!("registered workloads reloaded");
                    }
                    Ok::<_, String>(())
                },
            ))
        }
        admin::Registrations::Etcd(_) => None,
    };
    let store_tasks = match (&store, revision) {
        (Some(store), Some(revision)) => store.spawn(issuer.clone(), revision),
        _ => Vec::new(),
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
    let _readiness = match &store {
        None => {
            health.set_serving().await;
            None
        }
        Some(_) => Some(follow_readiness(
            health.clone(),
            issuer.clone(),
            stopping.clone(),
        )),
    };
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
        .add_service(WorkloadAdminServer::new(admin::WorkloadAdminHandler::new(
            issuer.clone(),
            &config.config.admin_ids,
            registrations,
        )))
        .add_service(TokenServiceServer::new(
            service::TokenServiceHandler::new(issuer, revocations, stopping)
                .with_store(store.clone()),
        ));
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
    drop(store_tasks);
    drop(workloads_watch);
    if let Some(store) = store {
        store.close().await;
    }
    Ok(())
}

/// SERVING exactly while the replica is current with etcd and has a key
/// published long enough to sign; says why whenever that changes.
fn follow_readiness(
    health: Health,
    issuer: Arc<Issuer>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> service_runtime::task::BackgroundTask {
    service_runtime::task::BackgroundTask::spawn(async move {
        let mut serving = false;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopping.changed() => return,
            }
            if *stopping.borrow() {
                return;
            }
            let current = issuer.check_current();
            if let Some(gate) = issuer.store_gate() {
                gate.publish();
            }
            let signing = issuer.keys().signing().is_some();
            let ready = current.is_ok() && signing;
            if ready == serving {
                continue;
            }
            serving = ready;
            if ready {
                tracing::info!("current with etcd and able to sign: SERVING");
                health.set_serving().await;
            } else {
                let why = match current {
                    Err(err) => err.to_string(),
                    Ok(()) => IssueError::KeyNotYetPublished.to_string(),
                };
                tracing::warn!(reason = %why, "NOT_SERVING");
                health.set_not_serving().await;
            }
        }
    })
}
