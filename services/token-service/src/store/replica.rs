//! One token-service replica's life with etcd.
//!
//! What etcd holds, under the configured prefix:
//! - `keys/<kid>`: each replica's public keys, each under a lease of its own
//!   that outlives the replica by the longest token lifetime, so a dead
//!   replica's key stays published until the last token it signed expired;
//! - `revocations/jti/<jti>`, `revocations/sub/<sub>/<cutoff>`: each under a
//!   lease that ends when its tokens have all expired;
//! - `clients/<id>` and `spiffe-ids/<spiffe-id>`: workloads registered at
//!   run time (`authmesh workload add`), both written in one transaction so
//!   neither an id nor a SPIFFE ID is ever registered twice;
//! - `one-time/<jti>`: a one-time token used once, for every replica of the
//!   services that ask, until it has expired (a lease);
//! - `replicas/<id>`: who is alive, under the replica's session lease.
//!
//! A replica reads everything once before it serves, then follows a watch,
//! so nothing on the mint path waits for etcd. Renewing the session lease
//! is how it knows it is still current ([`Freshness`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use auth_interceptor::{Revocation, SharedClock};
use serde::Serialize;
use service_runtime::task::BackgroundTask;

use super::{
    EtcdConfig, Freshness, StoreError,
    etcd::{Etcd, Event, EventType},
};
use crate::{
    config::ClientConfig,
    error::IssueError,
    keys::{KeyStore, Publication, PublishedKey},
    revocations::{PendingRevocation, RevocationStore},
};

/// The largest leeway any verifier allows past `exp`.
const MAX_LEEWAY_SECONDS: u64 = auth_interceptor::verifier::MAX_LEEWAY_SECONDS;

/// What `replicas/<id>` says.
#[derive(Debug, Serialize)]
struct ReplicaRecord<'a> {
    started_at: u64,
    keys: Vec<&'a str>,
}

/// The replica's view of etcd and its part in it.
#[derive(Debug)]
pub struct EtcdStore {
    etcd: Etcd,
    prefix: String,
    replica: String,
    session_ttl: u64,
    /// Lifetime of a key's lease: a dead replica's key outlives its tokens.
    key_lease_ttl: u64,
    clock: SharedClock,
    freshness: Arc<Freshness>,
    publication: Arc<Publication>,
    revocations: Arc<RevocationStore>,
    /// This replica's published keys: `kid` → the lease it is under.
    own_keys: Mutex<BTreeMap<String, i64>>,
    session_lease: AtomicI64,
    started_at: u64,
    /// Workloads registered at run time, as last read from etcd.
    registered: Mutex<BTreeMap<String, ClientConfig>>,
}

/// Where a key of the store belongs.
enum Entry<'k> {
    Key(&'k str),
    Revocation,
    Client(&'k str),
    Other,
}

impl EtcdStore {
    /// A replica named `replica` of a token service whose tokens live at
    /// most `max_ttl` seconds; nothing is read or written yet.
    ///
    /// # Errors
    /// [`StoreError::Config`] for unusable settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &EtcdConfig,
        dir: &Path,
        replica: String,
        max_ttl: u64,
        clock: SharedClock,
        freshness: Arc<Freshness>,
        publication: Arc<Publication>,
        revocations: Arc<RevocationStore>,
    ) -> Result<Self, StoreError> {
        if !config.prefix.starts_with('/') || !config.prefix.ends_with('/') {
            return Err(StoreError::Config(
                "store.prefix must start and end with '/'".into(),
            ));
        }
        if !(2..=300).contains(&config.session_ttl_seconds) {
            return Err(StoreError::Config(
                "store.session_ttl_seconds must be between 2 and 300".into(),
            ));
        }
        let started_at = clock.now();
        Ok(Self {
            etcd: Etcd::connect(config, dir)?,
            prefix: config.prefix.clone(),
            replica,
            session_ttl: config.session_ttl_seconds,
            key_lease_ttl: max_ttl + MAX_LEEWAY_SECONDS + config.session_ttl_seconds,
            clock,
            freshness,
            publication,
            revocations,
            own_keys: Mutex::default(),
            session_lease: AtomicI64::new(0),
            started_at,
            registered: Mutex::default(),
        })
    }

    /// This replica's name in etcd.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica can know its state is current.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.freshness
    }

    /// Reads every key and revocation, publishes this replica's keys and
    /// opens its session: after this the replica is current. Returns the
    /// revision to watch from.
    ///
    /// # Errors
    /// [`StoreError`] when etcd cannot be read or written.
    pub async fn catch_up(&self, state: &dyn ReplicaState) -> Result<i64, StoreError> {
        let revision = self.read_all(state).await?;
        self.publish_keys(state.keys()).await?;
        self.open_session().await?;
        tracing::info!(
            replica = %self.replica,
            revision,
            keys = self.publication.jwks().keys.len(),
            revocations = self.revocations.len(),
            workloads = self.registered().len(),
            "caught up with etcd"
        );
        Ok(revision)
    }

    /// Replaces the known keys and workloads with etcd's and learns every revocation.
    async fn read_all(&self, state: &dyn ReplicaState) -> Result<i64, StoreError> {
        let (kvs, revision) = self.etcd.range_prefix(&self.prefix).await?;
        let mut published = BTreeMap::new();
        let mut registered = BTreeMap::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key);
            match self.classify(&key) {
                Entry::Key(kid) => {
                    if let Some(record) = parse_key(&key, kid, &kv.value) {
                        published.insert(kid.to_owned(), record);
                    }
                }
                Entry::Revocation => self.learn_revocation(&key, &kv.value),
                Entry::Client(id) => {
                    if let Some(client) = parse_client(&key, id, &kv.value) {
                        registered.insert(id.to_owned(), client);
                    }
                }
                Entry::Other => {}
            }
        }
        self.publication.replace(published);
        *self.registered() = registered;
        self.install_registered(state);
        Ok(revision)
    }

    fn classify<'k>(&self, key: &'k str) -> Entry<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Entry::Other;
        };
        if let Some(kid) = rest.strip_prefix("keys/") {
            Entry::Key(kid)
        } else if rest.starts_with("revocations/") {
            Entry::Revocation
        } else if let Some(id) = rest.strip_prefix("clients/") {
            Entry::Client(id)
        } else {
            Entry::Other
        }
    }

    fn learn_revocation(&self, key: &str, value: &[u8]) {
        match PendingRevocation::from_json(value) {
            Ok(pending) => {
                if let Err(err) = self.revocations.learn(pending) {
                    tracing::error!(key, error = %err, "revocation from etcd not taken in");
                }
            }
            Err(detail) => {
                tracing::error!(key, %detail, "unusable revocation in etcd ignored");
            }
        }
    }

    /// Publishes every key of this replica's ring not yet published, and
    /// withdraws those the ring has retired.
    async fn publish_keys(&self, keys: &KeyStore) -> Result<(), StoreError> {
        let local = keys.local_published();
        let wanted: BTreeSet<&str> = local.iter().map(|k| k.kid()).collect();
        let published: BTreeSet<String> = self.own_keys().keys().cloned().collect();
        for key in &local {
            if published.contains(key.kid()) {
                continue;
            }
            let now = self.clock.now();
            // A restart keeps the time its key was first published: verifiers
            // have had it since then.
            let published_at = self
                .publication
                .get(key.kid())
                .filter(|p| p.jwk == *key.jwk())
                .map_or(now, |p| p.published_at.min(now));
            let record = PublishedKey {
                jwk: key.jwk().clone(),
                replica: self.replica.clone(),
                published_at,
            };
            let value = serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt {
                key: key.kid().to_owned(),
                detail: e.to_string(),
            })?;
            let lease = self.etcd.grant(self.key_lease_ttl).await?;
            self.etcd
                .put(&self.key_path(key.kid()), value, lease)
                .await?;
            self.own_keys().insert(key.kid().to_owned(), lease);
            self.publication.upsert(record);
            tracing::info!(replica = %self.replica, kid = key.kid(), published_at, "signing key published");
        }
        for kid in published
            .iter()
            .filter(|kid| !wanted.contains(kid.as_str()))
        {
            let lease = self.own_keys().get(kid).copied();
            if let Some(lease) = lease {
                self.etcd.revoke(lease).await?;
            }
            self.own_keys().remove(kid);
            self.publication.remove(kid);
            tracing::info!(replica = %self.replica, kid, "retired signing key withdrawn");
        }
        Ok(())
    }

    /// A new session lease, and this replica's record under it.
    async fn open_session(&self) -> Result<(), StoreError> {
        let lease = self.etcd.grant(self.session_ttl).await?;
        let own = self.own_keys().keys().cloned().collect::<Vec<_>>();
        let record = ReplicaRecord {
            started_at: self.started_at,
            keys: own.iter().map(String::as_str).collect(),
        };
        let value = serde_json::to_vec(&record).unwrap_or_default();
        let path = format!("{}replicas/{}", self.prefix, self.replica);
        self.etcd.put(&path, value, lease).await?;
        self.session_lease.store(lease, Ordering::Release);
        self.freshness
            .confirm(Duration::from_secs(self.session_ttl));
        tracing::debug!(replica = %self.replica, "etcd session opened");
        Ok(())
    }

    /// Renews the session and every key lease, republishing what expired
    /// and following the ring (rotation, retirement).
    async fn renew(&self, keys: &KeyStore) -> Result<(), StoreError> {
        let session = self.session_lease.load(Ordering::Acquire);
        match self.etcd.keep_alive(session).await {
            Ok(_) => self
                .freshness
                .confirm(Duration::from_secs(self.session_ttl)),
            Err(StoreError::NotFound) => {
                tracing::warn!(replica = %self.replica, "etcd session had expired; opening a new one");
                self.open_session().await?;
            }
            Err(err) => return Err(err),
        }
        let leases: Vec<(String, i64)> = self
            .own_keys()
            .iter()
            .map(|(kid, lease)| (kid.clone(), *lease))
            .collect();
        for (kid, lease) in leases {
            if let Err(StoreError::NotFound) = self.etcd.keep_alive(lease).await {
                tracing::warn!(replica = %self.replica, kid, "key lease had expired; publishing again");
                self.own_keys().remove(&kid);
            }
        }
        self.publish_keys(keys).await
    }

    /// Writes `pending` to etcd, under a lease that ends when its tokens
    /// have expired; every replica (this one included) then learns it.
    ///
    /// # Errors
    /// [`IssueError::StoreUnavailable`] when etcd did not take it: nothing was revoked.
    pub async fn revoke(&self, pending: PendingRevocation) -> Result<Revocation, IssueError> {
        let now = self.clock.now();
        let ttl = pending
            .revocation()
            .expires_at
            .saturating_add(MAX_LEEWAY_SECONDS)
            .saturating_sub(now)
            .max(1);
        let unavailable = |err: StoreError| {
            tracing::error!(error = %err, "revocation not written to etcd; nothing was revoked");
            IssueError::StoreUnavailable(err.to_string())
        };
        let lease = self.etcd.grant(ttl).await.map_err(unavailable)?;
        let path = format!("{}revocations/{}", self.prefix, pending.store_key());
        self.etcd
            .put(&path, pending.to_json(), lease)
            .await
            .map_err(unavailable)?;
        let revocation = pending.revocation().clone();
        self.revocations.learn(pending)?;
        Ok(revocation)
    }

    /// Follows etcd from `revision` and keeps the session alive, until the
    /// returned tasks are dropped.
    pub fn spawn(
        self: &Arc<Self>,
        state: Arc<dyn ReplicaState>,
        revision: i64,
    ) -> Vec<BackgroundTask> {
        let watcher = {
            let store = self.clone();
            let state = state.clone();
            BackgroundTask::spawn(async move { store.follow(state.as_ref(), revision).await })
        };
        let session = {
            let store = self.clone();
            BackgroundTask::spawn(async move {
                let period = Duration::from_millis(store.session_ttl * 1000 / 3);
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    match store.renew(state.keys()).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(replica = %store.replica, "etcd session renewed again");
                        }
                        Ok(()) => {}
                        Err(err) => {
                            failing = true;
                            tracing::warn!(replica = %store.replica, error = %err, stale_for = ?store.freshness.stale_for(), "etcd session not renewed");
                        }
                    }
                    store.freshness.publish();
                }
            })
        };
        vec![watcher, session]
    }

    /// Applies the watch's events; reconnects from the last revision seen,
    /// and reads everything again when that history was compacted.
    async fn follow(&self, state: &dyn ReplicaState, mut revision: i64) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let outcome = match self.etcd.watch(&self.prefix, revision + 1).await {
                Ok(mut watch) => loop {
                    match watch.next().await {
                        Ok(events) => {
                            backoff = Duration::from_millis(200);
                            for event in events {
                                revision = revision.max(self.apply(state, &event));
                            }
                        }
                        Err(err) => break err,
                    }
                },
                Err(err) => err,
            };
            if outcome == StoreError::Compacted {
                tracing::warn!(replica = %self.replica, "etcd history compacted; reading everything again");
                match self.read_all(state).await {
                    Ok(now) => revision = now,
                    Err(err) => tracing::warn!(error = %err, "etcd not readable"),
                }
            } else {
                tracing::warn!(replica = %self.replica, error = %outcome, "etcd watch interrupted; resuming");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Takes in one event; returns its revision.
    fn apply(&self, state: &dyn ReplicaState, event: &Event) -> i64 {
        let Some(kv) = &event.kv else { return 0 };
        let key = String::from_utf8_lossy(&kv.key);
        let put = event.r#type == EventType::Put as i32;
        match (self.classify(&key), put) {
            (Entry::Key(kid), true) => {
                if let Some(record) = parse_key(&key, kid, &kv.value) {
                    tracing::info!(kid, replica = %record.replica, "signing key published by a replica");
                    self.publication.upsert(record);
                }
            }
            (Entry::Key(kid), false) => {
                tracing::info!(kid, "signing key withdrawn");
                self.publication.remove(kid);
            }
            (Entry::Revocation, true) => self.learn_revocation(&key, &kv.value),
            (Entry::Client(id), true) => {
                if let Some(client) = parse_client(&key, id, &kv.value) {
                    tracing::info!(workload = id, "workload registered");
                    self.registered().insert(id.to_owned(), client);
                    self.install_registered(state);
                }
            }
            (Entry::Client(id), false) => {
                tracing::info!(workload = id, "workload removed");
                self.registered().remove(id);
                self.install_registered(state);
            }
            // A revocation's lease ended: its tokens have all expired.
            (Entry::Revocation | Entry::Other, _) => {}
        }
        kv.mod_revision
    }

    /// Ends the session (the replica's record goes at once); its keys stay
    /// published under their own leases until their tokens have expired.
    pub async fn close(&self) {
        let lease = self.session_lease.swap(0, Ordering::AcqRel);
        if lease != 0
            && let Err(err) = self.etcd.revoke(lease).await
        {
            tracing::warn!(error = %err, "etcd session not closed; it expires by itself");
        }
    }

    /// Registers `workload` (already checked by the issuer) on every
    /// replica: its id and SPIFFE ID are created together or not at all.
    ///
    /// # Errors
    /// [`IssueError::WorkloadConflict`] when either was taken meanwhile
    /// (through another replica), [`IssueError::StoreUnavailable`] when etcd
    /// did not take it; nothing is written then.
    pub async fn register(
        &self,
        workload: ClientConfig,
        state: &dyn ReplicaState,
    ) -> Result<(), IssueError> {
        let value = serde_json::to_vec(&workload)
            .map_err(|e| IssueError::StoreUnavailable(e.to_string()))?;
        let mut entries = vec![(self.client_path(&workload.id), value)];
        if let Some(spiffe_id) = &workload.spiffe_id {
            entries.push((
                self.spiffe_path(spiffe_id),
                workload.id.clone().into_bytes(),
            ));
        }
        let created = self
            .etcd
            .create_all(entries, 0)
            .await
            .map_err(|e| IssueError::StoreUnavailable(e.to_string()))?;
        if !created {
            return Err(IssueError::WorkloadConflict(
                "its id or SPIFFE ID was registered meanwhile through another replica".into(),
            ));
        }
        self.registered().insert(workload.id.clone(), workload);
        self.install_registered(state);
        Ok(())
    }

    /// Removes the run-time registration `id` on every replica.
    ///
    /// # Errors
    /// [`IssueError::WorkloadNotFound`] when no such registration is known,
    /// [`IssueError::StoreUnavailable`] when etcd did not take it.
    pub async fn unregister(&self, id: &str, state: &dyn ReplicaState) -> Result<(), IssueError> {
        let spiffe_id = self
            .registered()
            .get(id)
            .map(|w| w.spiffe_id.clone())
            .ok_or_else(|| IssueError::WorkloadNotFound(id.to_owned()))?;
        let mut keys = vec![self.client_path(id)];
        keys.extend(spiffe_id.map(|s| self.spiffe_path(&s)));
        self.etcd
            .delete_all(&keys)
            .await
            .map_err(|e| IssueError::StoreUnavailable(e.to_string()))?;
        self.registered().remove(id);
        self.install_registered(state);
        Ok(())
    }

    /// Records the first use of the one-time token `jti` for every replica:
    /// one create-if-absent, under a lease that ends after `until`.
    ///
    /// # Errors
    /// [`IssueError::StoreUnavailable`] when etcd cannot tell (the verifier
    /// then refuses the token).
    pub async fn consume_one_time(&self, jti: &str, until: u64) -> Result<bool, IssueError> {
        let unavailable = |err: StoreError| IssueError::StoreUnavailable(err.to_string());
        let ttl = until.saturating_sub(self.clock.now()).max(1);
        let lease = self.etcd.grant(ttl).await.map_err(unavailable)?;
        let path = format!("{}one-time/{jti}", self.prefix);
        self.etcd
            .create(&path, Vec::new(), lease)
            .await
            .map_err(unavailable)
    }

    fn install_registered(&self, state: &dyn ReplicaState) {
        // Installed under the lock: two changes applied at once (the watch,
        // an admin call) cannot install an older list over a newer one.
        let registered = self.registered();
        let list: Vec<ClientConfig> = registered.values().cloned().collect();
        state.set_registered(&list);
        drop(registered);
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ClientConfig>> {
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client_path(&self, id: &str) -> String {
        format!("{}clients/{id}", self.prefix)
    }

    fn spiffe_path(&self, spiffe_id: &str) -> String {
        format!("{}spiffe-ids/{spiffe_id}", self.prefix)
    }

    fn own_keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.own_keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key_path(&self, kid: &str) -> String {
        format!("{}keys/{kid}", self.prefix)
    }
}

/// What the store keeps current in the replica (the issuer).
pub trait ReplicaState: Send + Sync + 'static {
    /// The key ring it publishes from.
    fn keys(&self) -> &KeyStore;
    /// Takes the workloads registered at run time, all of them.
    fn set_registered(&self, registered: &[ClientConfig]);
}

fn parse_client(key: &str, id: &str, value: &[u8]) -> Option<ClientConfig> {
    match serde_json::from_slice::<ClientConfig>(value) {
        Ok(client) if client.id == id => Some(client),
        Ok(_) => {
            tracing::error!(
                key,
                "registered workload whose id differs from its name ignored"
            );
            None
        }
        Err(err) => {
            tracing::error!(key, error = %err, "unusable registered workload in etcd ignored");
            None
        }
    }
}

fn parse_key(key: &str, kid: &str, value: &[u8]) -> Option<PublishedKey> {
    let record = serde_json::from_slice::<PublishedKey>(value)
        .map_err(|e| e.to_string())
        .and_then(|record| {
            if record.jwk.kid != kid {
                return Err("the key's kid differs from its name".into());
            }
            record
                .jwk
                .to_verification_key()
                .map_err(|e| e.to_string())?;
            Ok(record)
        });
    match record {
        Ok(record) => Some(record),
        Err(detail) => {
            tracing::error!(key, %detail, "unusable public key in etcd ignored");
            None
        }
    }
}
