//! The `authmesh.v1.TokenService` gRPC service.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth_interceptor::{PeerCache, PeerIdentity, Revocation};
use authmesh_proto::authmesh::v1::{
    ConsumeOneTimeRequest, ConsumeOneTimeResponse, ExchangeTokenRequest, ExchangeTokenResponse,
    GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse, RevocationBatch,
    RevokeRequest, RevokeResponse, WatchRevocationsRequest, revoke_request,
    token_service_server::TokenService,
};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    error::IssueError,
    issuer::{Authenticated, ExchangeRequest, Issuer, MintRequest},
    revocations::{PendingRevocation, RevocationStore},
    store::EtcdStore,
};

/// Longest a request waits for a credential-check slot before RESOURCE_EXHAUSTED.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Most revocation watches served at once (they need no credentials).
const MAX_WATCHERS: usize = 1024;

/// Client certificates whose identities are remembered (registered workloads are few).
const PEER_CACHE_CAPACITY: usize = 1024;

/// Most revocation watches from one source address, so no single client
/// can take every slot and keep new verifiers from getting the list.
const MAX_WATCHERS_PER_SOURCE: usize = 64;

/// Size budget of one message of the full list, well under the 4 MiB
/// verifiers accept.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// A watcher that does not take a message within this long is dropped, so
/// a stalled client cannot hold a task (or shutdown) forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves [`Issuer`] over gRPC.
#[derive(Debug, Clone)]
pub struct TokenServiceHandler {
    issuer: Arc<Issuer>,
    revocations: Arc<RevocationStore>,
    /// argon2 costs ~19 MiB and tens of milliseconds per check: at most one
    /// check per core runs at once, so a flood of logins cannot exhaust
    /// memory or starve the executor.
    credential_slots: Arc<Semaphore>,
    /// Client certificates already parsed, by digest: a workload mints
    /// over one connection again and again.
    peers: PeerCache,
    watchers: Arc<Semaphore>,
    watchers_by_source: WatchCounts,
    /// Turns true when shutdown begins: revocation streams end then.
    stopping: watch::Receiver<bool>,
    /// With the etcd store: where revocations are written.
    store: Option<Arc<EtcdStore>>,
    /// One-time uses, when there is no etcd to keep them.
    one_time: Arc<crate::one_time::LocalUses>,
}

impl TokenServiceHandler {
    /// A handler minting with `issuer` and revoking into `revocations`;
    /// its revocation streams end once `stopping` turns true.
    pub fn new(
        issuer: Arc<Issuer>,
        revocations: Arc<RevocationStore>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            issuer,
            revocations,
            credential_slots: Arc::new(Semaphore::new(cores)),
            peers: PeerCache::new(PEER_CACHE_CAPACITY),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            watchers_by_source: Arc::default(),
            stopping,
            store: None,
            one_time: Arc::default(),
        }
    }

    /// Writes revocations to `store` (etcd) instead of the revocations file.
    #[must_use]
    pub fn with_store(mut self, store: Option<Arc<EtcdStore>>) -> Self {
        self.store = store;
        self
    }

    /// Makes `pending` in force: through etcd, or in the revocations file.
    async fn commit(&self, pending: PendingRevocation) -> Result<Revocation, Status> {
        match &self.store {
            Some(store) => Ok(store.revoke(pending).await?),
            None => {
                let revocations = self.revocations.clone();
                tokio::task::spawn_blocking(move || revocations.commit(pending))
                    .await
                    .map_err(|_| Status::internal("request failed"))?
                    .map_err(Status::from)
            }
        }
    }

    /// Authenticates the caller of `request`, then runs `then` with it. A
    /// secret is checked off the executor, one argon2 check per core at a
    /// time; a caller known by its client certificate alone costs only a
    /// lookup, so it is served inline.
    async fn authenticated<T, R, F>(&self, request: Request<T>, then: F) -> Result<R, Status>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: FnOnce(&Issuer, &Authenticated, T) -> Result<R, IssueError> + Send + 'static,
    {
        let authorization = optional_authorization(&request);
        let peer = self.peer_identity(&request);
        let source = request.remote_addr().map(|addr| addr.ip());
        let body = request.into_inner();
        let issuer = self.issuer.clone();
        let by_certificate_alone = matches!(authorization, Ok(None));
        let run = move |issuer: &Issuer| {
            let caller = issuer
                .authenticate(authorization?.as_deref(), peer?.as_ref(), source)
                .inspect_err(|err| {
                    metrics::counter!("authmesh_client_auth_failures_total", "service" => "token-service", "reason" => err.reason()).increment(1);
                    tracing::info!(reason = err.reason(), "client authentication failed");
                })?;
            tracing::debug!(client = %caller.client.id, sub = %caller.subject, by_certificate = caller.binding.is_some(), "client authenticated");
            then(issuer, &caller, body)
        };
        if by_certificate_alone {
            return run(&issuer).map_err(Status::from);
        }
        let slot = tokio::time::timeout(SLOT_WAIT, self.credential_slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| Status::from(IssueError::Busy))?;
        let outcome = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            run(&issuer)
        })
        .await
        .map_err(|_| Status::internal("request failed"))?;
        outcome.map_err(Status::from)
    }

    /// The verified client certificate of the connection, if one was sent.
    fn peer_identity<T>(&self, request: &Request<T>) -> Result<Option<PeerIdentity>, IssueError> {
        self.peers
            .identify_connection(request.extensions().get())
            .map_err(|_| IssueError::UnknownWorkload)
    }
}

/// The `authorization` value of a request: none, or exactly one visible-ASCII one.
fn optional_authorization<T>(request: &Request<T>) -> Result<Option<String>, IssueError> {
    let mut values = request.metadata().get_all("authorization").iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(|v| Some(v.to_owned()))
            .map_err(|_| IssueError::MalformedCredentials),
        (Some(_), Some(_)) => Err(IssueError::MalformedCredentials),
    }
}

/// Counts and logs a refused mint or exchange (never the request's token).
fn refused(caller: &Authenticated, audience: &str, err: &IssueError, what: &'static str) {
    metrics::counter!("authmesh_tokens_refused_total", "service" => "token-service", "reason" => err.reason()).increment(1);
    tracing::info!(client = %caller.client.id, aud = %audience, reason = err.reason(), detail = %err, "{what}");
}

/// Counts a minted token under `counter`. Both labels come from the
/// configuration (registered clients, allowed audiences): bounded.
fn count_minted(counter: &'static str, claims: &auth_interceptor::Claims) {
    metrics::counter!(
        counter,
        "service" => "token-service",
        "client" => claims.client_id.clone().unwrap_or_default(),
        "aud" => claims.aud.clone()
    )
    .increment(1);
}

#[tonic::async_trait]
impl TokenService for TokenServiceHandler {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let minted = self
            .authenticated(request, |issuer, caller, body| {
                let mint_request = MintRequest {
                    audience: body.audience,
                    scopes: body.scopes,
                    ttl_seconds: body.ttl_seconds,
                    one_time: body.one_time,
                };
                issuer.mint(caller, &mint_request).inspect_err(|err| {
                    refused(caller, &mint_request.audience, err, "token refused")
                })
            })
            .await?;
        let claims = &minted.claims;
        count_minted("authmesh_tokens_issued_total", claims);
        tracing::info!(sub = %claims.sub, aud = %claims.aud, jti = %claims.jti, scope = %claims.scope, exp = claims.exp, one_time = claims.one_time, "token issued");
        Ok(Response::new(IssueTokenResponse {
            token: minted.token,
            expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            scope: claims.scope.clone(),
            token_type: "Bearer".into(),
        }))
    }

    async fn exchange_token(
        &self,
        request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<ExchangeTokenResponse>, Status> {
        let minted = self
            .authenticated(request, |issuer, caller, body| {
                let exchange = ExchangeRequest {
                    subject_token: body.subject_token,
                    subject_token_type: body.subject_token_type,
                    audience: body.audience,
                    scopes: body.scopes,
                    ttl_seconds: body.ttl_seconds,
                };
                issuer.exchange_token(caller, &exchange).inspect_err(|err| {
                    refused(caller, &exchange.audience, err, "token exchange refused")
                })
            })
            .await?;
        let claims = &minted.claims;
        count_minted("authmesh_tokens_exchanged_total", claims);
        let actors: Vec<&str> = claims
            .act
            .iter()
            .flat_map(|act| act.chain().map(|actor| actor.sub.as_str()))
            .collect();
        tracing::info!(sub = %claims.sub, subject_issuer = claims.subject_issuer.as_deref().unwrap_or_default(), aud = %claims.aud, jti = %claims.jti, scope = %claims.scope, exp = claims.exp, act = ?actors, "token exchanged");
        Ok(Response::new(ExchangeTokenResponse {
            token: minted.token,
            expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            scope: claims.scope.clone(),
            token_type: "Bearer".into(),
            issued_token_type: crate::exchange::ACCESS_TOKEN_TYPE.into(),
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let store = self.revocations.clone();
        let (pending, by, reason) = self
            .authenticated(request, move |_, caller, body| {
                if !caller.client.may_revoke {
                    tracing::info!(client = %caller.client.id, "revocation refused: client may not revoke");
                    return Err(IssueError::RevokeNotAllowed);
                }
                let pending = match body.target {
                    Some(revoke_request::Target::Token(token)) => {
                        store.prepare_token(&token.jti, token.expires_at, &body.reason)
                    }
                    Some(revoke_request::Target::Subject(subject)) => {
                        store.prepare_subject(&subject.sub, subject.issued_before, &body.reason)
                    }
                    None => Err(IssueError::InvalidRevocation(
                        "name a token (jti) or a subject (sub)",
                    )),
                }?;
                Ok((pending, caller.client.id.clone(), body.reason))
            })
            .await?;
        let revocation = self.commit(pending).await?;
        let kind = match revocation.target {
            auth_interceptor::RevokedTarget::Token(_) => "jti",
            auth_interceptor::RevokedTarget::Subject { .. } => "subject",
        };
        metrics::counter!("authmesh_revocations_made_total", "service" => "token-service", "kind" => kind).increment(1);
        tracing::info!(%by, target = ?revocation.target, expires_at = revocation.expires_at, %reason, "revoked");
        Ok(Response::new(RevokeResponse {
            revocation: Some(revocation.into()),
        }))
    }

    type WatchRevocationsStream = ReceiverStream<Result<RevocationBatch, Status>>;

    async fn watch_revocations(
        &self,
        request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        // A replica cut off from etcd may be missing revocations: send the
        // verifier to another one.
        self.issuer.check_current()?;
        let busy = || Status::resource_exhausted("too many revocation watches; retry later");
        let global = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let permit = WatchPermit::acquire(
            global,
            &self.watchers_by_source,
            request.remote_addr().map(|a| a.ip()),
        )
        .ok_or_else(busy)?;
        // Subscribed before the snapshot, so nothing revoked in between is missed.
        let events = self.revocations.subscribe();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream_revocations(
            self.revocations.clone(),
            events,
            tx,
            self.stopping.clone(),
            self.issuer.store_gate().map(|gate| gate.subscribe()),
            permit,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn consume_one_time(
        &self,
        request: Request<ConsumeOneTimeRequest>,
    ) -> Result<Response<ConsumeOneTimeResponse>, Status> {
        // Cut off from etcd, a use through another replica could be missed.
        self.issuer.check_current()?;
        let ConsumeOneTimeRequest { jti, expires_at } = request.into_inner();
        let now = self.issuer.now();
        let until = crate::one_time::remember_until(&jti, expires_at, now)?;
        let first_use = match &self.store {
            Some(store) => store.consume_one_time(&jti, until).await?,
            None => self.one_time.first_use(&jti, until, now)?,
        };
        let outcome = if first_use { "first" } else { "replayed" };
        metrics::counter!("authmesh_one_time_consumed_total", "service" => "token-service", "outcome" => outcome).increment(1);
        tracing::info!(%jti, first_use, "one-time token use recorded");
        Ok(Response::new(ConsumeOneTimeResponse { first_use }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        self.issuer.check_current()?;
        // Shows how often verifiers fetch: a storm of unknown `kid`s must not multiply it.
        metrics::counter!("authmesh_jwks_served_total", "service" => "token-service").increment(1);
        Ok(Response::new(GetJwksResponse {
            keys: self
                .issuer
                .jwks()
                .keys
                .into_iter()
                .map(Into::into)
                .collect(),
        }))
    }
}

/// Open revocation watches per source address.
type WatchCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One open revocation watch: a global slot and one of its source's.
struct WatchPermit {
    _global: tokio::sync::OwnedSemaphorePermit,
    source: Option<(IpAddr, WatchCounts)>,
}

impl WatchPermit {
    fn acquire(
        global: tokio::sync::OwnedSemaphorePermit,
        by_source: &WatchCounts,
        source: Option<IpAddr>,
    ) -> Option<Self> {
        if let Some(ip) = source {
            let mut counts = by_source.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(ip).or_default();
            if *count >= MAX_WATCHERS_PER_SOURCE {
                return None;
            }
            *count += 1;
        }
        Some(Self {
            _global: global,
            source: source.map(|ip| (ip, by_source.clone())),
        })
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        if let Some((ip, by_source)) = &self.source {
            let mut counts = by_source.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

/// Sends the full list, then every new revocation, until the watcher goes
/// away, stalls, or shutdown begins. A watcher too slow to keep up with the
/// broadcast gets the full list again.
async fn stream_revocations(
    store: Arc<RevocationStore>,
    mut events: broadcast::Receiver<Arc<[Revocation]>>,
    tx: mpsc::Sender<Result<RevocationBatch, Status>>,
    mut stopping: watch::Receiver<bool>,
    current: Option<watch::Receiver<bool>>,
    _permit: WatchPermit,
) {
    // Ends the stream (UNAVAILABLE) when the replica is cut off from etcd.
    let cut_off = async move {
        match current {
            Some(mut current) => {
                let _ = current.wait_for(|fresh| !*fresh).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cut_off);
    if *stopping.borrow_and_update() || !send_snapshot(&store, &tx, &mut stopping).await {
        return;
    }
    loop {
        let batch = tokio::select! {
            event = events.recv() => match event {
                Ok(revocations) => RevocationBatch {
                    revocations: revocations.iter().cloned().map(Into::into).collect(),
                    snapshot: false,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if send_snapshot(&store, &tx, &mut stopping).await { continue } else { return }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = tx.closed() => return,
            () = &mut cut_off => {
                let _ = tx.try_send(Err(Status::unavailable(
                    "this token service replica was cut off from etcd; watch another",
                )));
                return;
            }
            // It only ever turns true (or its sender is gone): either way, stop.
            _ = stopping.changed() => return,
        };
        if !deliver(&tx, batch, &mut stopping).await {
            return;
        }
    }
}

/// Sends one message unless the watcher is gone, stalled or shutdown began.
async fn deliver(
    tx: &mpsc::Sender<Result<RevocationBatch, Status>>,
    batch: RevocationBatch,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        sent = tx.send_timeout(Ok(batch), SEND_TIMEOUT) => sent.is_ok(),
        _ = stopping.changed() => false,
    }
}

/// Sends every revocation in force, in messages of at most about
/// [`SNAPSHOT_CHUNK_BYTES`]; the last one says the list is complete.
async fn send_snapshot(
    store: &RevocationStore,
    tx: &mpsc::Sender<Result<RevocationBatch, Status>>,
    stopping: &mut watch::Receiver<bool>,
) -> bool {
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for revocation in store.snapshot() {
        // The id dominates; the rest (three varints, tags) is under 40 bytes.
        let size = match &revocation.target {
            auth_interceptor::RevokedTarget::Token(jti) => jti.len(),
            auth_interceptor::RevokedTarget::Subject { sub, .. } => sub.len(),
        } + 40;
        if bytes + size > SNAPSHOT_CHUNK_BYTES && !chunk.is_empty() {
            let batch = RevocationBatch {
                revocations: std::mem::take(&mut chunk),
                snapshot: false,
            };
            if !deliver(tx, batch, stopping).await {
                return false;
            }
            bytes = 0;
        }
        bytes += size;
        chunk.push(revocation.into());
    }
    let last = RevocationBatch {
        revocations: chunk,
        snapshot: true,
    };
    deliver(tx, last, stopping).await
}
