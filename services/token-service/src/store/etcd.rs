//! The few etcd v3 calls the replicated store makes (range, put, delete,
//! create-if-absent, leases, watch), each with a deadline. Like etcd's own
//! client it talks to one member at a time and moves to the next when a
//! call cannot reach it. (A load-balanced tonic channel would not do: a
//! dead member's endpoint fails at once, looks least loaded, and keeps
//! being picked.)

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{
    Code, Request, Status, Streaming,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::{EtcdConfig, StoreError};

/// etcd's generated v3 API (client side only).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used
)]
pub mod pb {
    /// Keys and events.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// Users and roles (referenced by rpc.proto).
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// The KV, Watch and Lease services.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::{
    etcdserverpb::{
        Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
        PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
        WatchResponse, compare, kv_client::KvClient, lease_client::LeaseClient, request_op,
        watch_client::WatchClient, watch_request,
    },
    mvccpb::KeyValue,
};

pub use pb::mvccpb::{Event, event::EventType};

/// Longest a call may take in all: without quorum, etcd holds writes and
/// linearizable reads until they time out, and the store must say so soon;
/// long enough for the members to elect a new leader (1–2 s by default).
const CALL_DEADLINE: Duration = Duration::from_secs(8);

/// Longest one attempt may take before the call moves to the next member: a
/// write proposed while the members elect a leader is dropped, and etcd
/// only says so after its own request timeout (7 s by default).
const ATTEMPT_DEADLINE: Duration = Duration::from_millis(1500);

/// A connection to an etcd cluster.
#[derive(Debug, Clone)]
pub struct Etcd {
    /// One lazily connected channel per member.
    members: Arc<[Channel]>,
    /// The member calls go to until one fails to reach it.
    current: Arc<AtomicUsize>,
}

impl Etcd {
    /// A lazily connecting client for `config`'s endpoints (files relative to `dir`).
    ///
    /// # Errors
    /// [`StoreError::Config`] for a bad endpoint or unreadable TLS files.
    pub fn connect(config: &EtcdConfig, dir: &Path) -> Result<Self, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Config("store.endpoints is empty".into()));
        }
        let tls = match &config.tls {
            None => None,
            Some(files) => {
                let read = |path: &Path| {
                    let path = dir.join(path);
                    std::fs::read(&path)
                        .map_err(|e| StoreError::Config(format!("reading {}: {e}", path.display())))
                };
                Some(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
                        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?)),
                )
            }
        };
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for url in &config.endpoints {
            let https = url.starts_with("https://");
            if https != tls.is_some() {
                return Err(StoreError::Config(format!(
                    "endpoint {url}: use https:// with [store.tls] and http:// without"
                )));
            }
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| StoreError::Config(format!("endpoint {url}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| StoreError::Config(format!("endpoint {url}: {e}")))?;
            }
            endpoints.push(endpoint);
        }
        Ok(Self {
            members: endpoints
                .into_iter()
                .map(|endpoint| endpoint.connect_lazy())
                .collect(),
            current: Arc::default(),
        })
    }

    /// Every key under `prefix` and the store's revision they were read at.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no member answers in time.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), StoreError> {
        let request = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            ..RangeRequest::default()
        };
        let response = self
            .call(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).range(request).await }
            })
            .await?;
        let revision = response.header.map_or(0, |h| h.revision);
        Ok((response.kvs, revision))
    }

    /// Writes `key` (attached to `lease`, 0 for none).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the write is not known to be committed.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), StoreError> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..PutRequest::default()
        };
        self.call(|channel| {
            let request = request.clone();
            async move { KvClient::new(channel).put(request).await }
        })
        .await?;
        Ok(())
    }

    /// Writes `key` only if it does not exist, in one transaction; whether it was written.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the outcome is not known.
    pub async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<bool, StoreError> {
        self.create_all(vec![(key.to_owned(), value)], lease).await
    }

    /// Writes every key only if none of them exists, in one transaction;
    /// whether they were written.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the outcome is not known.
    pub async fn create_all(
        &self,
        entries: Vec<(String, Vec<u8>)>,
        lease: i64,
    ) -> Result<bool, StoreError> {
        let request = TxnRequest {
            compare: entries
                .iter()
                .map(|(key, _)| Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    ..Compare::default()
                })
                .collect(),
            success: entries
                .into_iter()
                .map(|(key, value)| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: key.into_bytes(),
                        value,
                        lease,
                        ..PutRequest::default()
                    })),
                })
                .collect(),
            failure: Vec::new(),
        };
        let response = self
            .call(|channel| {
                let request = request.clone();
                async move { KvClient::new(channel).txn(request).await }
            })
            .await?;
        Ok(response.succeeded)
    }

    /// Deletes every key in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the delete is not known to be committed.
    pub async fn delete_all(&self, keys: &[String]) -> Result<(), StoreError> {
        let request = TxnRequest {
            compare: Vec::new(),
            success: keys
                .iter()
                .map(|key| RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: key.as_bytes().to_vec(),
                            ..DeleteRangeRequest::default()
                        },
                    )),
                })
                .collect(),
            failure: Vec::new(),
        };
        self.call(|channel| {
            let request = request.clone();
            async move { KvClient::new(channel).txn(request).await }
        })
        .await?;
        Ok(())
    }

    /// A new lease of `ttl` seconds.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no leader grants it in time.
    pub async fn grant(&self, ttl: u64) -> Result<i64, StoreError> {
        let request = LeaseGrantRequest {
            ttl: i64::try_from(ttl).unwrap_or(i64::MAX),
            id: 0,
        };
        let response = self
            .call(|channel| async move { LeaseClient::new(channel).lease_grant(request).await })
            .await?;
        if response.error.is_empty() {
            Ok(response.id)
        } else {
            Err(StoreError::Unavailable(response.error))
        }
    }

    /// Ends `lease` now: every key attached to it is deleted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it is not known to be revoked.
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let request = LeaseRevokeRequest { id: lease };
        match self
            .call(|channel| async move { LeaseClient::new(channel).lease_revoke(request).await })
            .await
        {
            // Already expired: what revoking it would have done is done.
            Err(StoreError::NotFound) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Renews `lease` once; its remaining lifetime in seconds.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the lease has expired,
    /// [`StoreError::Unavailable`] when no leader renews it in time.
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, StoreError> {
        let renew = async {
            let requests = tokio_stream::iter([LeaseKeepAliveRequest { id: lease }]);
            let mut responses = LeaseClient::new(self.channel())
                .lease_keep_alive(requests)
                .await?
                .into_inner();
            responses
                .message()
                .await?
                .ok_or_else(|| Status::unavailable("keep-alive stream ended"))
        };
        let response = tokio::time::timeout(CALL_DEADLINE, renew)
            .await
            .map_err(|_| self.next_member("lease keep-alive timed out".into()))?
            .map_err(|status| self.failed(status))?;
        if response.ttl <= 0 {
            return Err(StoreError::NotFound);
        }
        Ok(response.ttl)
    }

    /// Watches every key under `prefix` from `start_revision` on. The member
    /// must have a leader: a member cut off from the others ends the watch
    /// rather than go quiet.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the watch cannot be created,
    /// [`StoreError::Compacted`] when `start_revision` is no longer kept.
    pub async fn watch(&self, prefix: &str, start_revision: i64) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: prefix_end(prefix.as_bytes()),
                    start_revision,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        tx.try_send(create)
            .map_err(|_| StoreError::Unavailable("watch request not queued".into()))?;
        let mut request = Request::new(ReceiverStream::new(rx));
        // etcd's "require leader" metadata (clientv3.WithRequireLeader).
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let open = async {
            let mut responses = WatchClient::new(self.channel())
                .watch(request)
                .await?
                .into_inner();
            let first = responses
                .message()
                .await?
                .ok_or_else(|| Status::unavailable("watch stream ended"))?;
            Ok::<_, Status>((responses, first))
        };
        let (responses, first) = tokio::time::timeout(CALL_DEADLINE, open)
            .await
            .map_err(|_| self.next_member("creating the watch timed out".into()))?
            .map_err(|status| self.failed(status))?;
        check_watch(&first)?;
        Ok(Watch {
            _requests: tx,
            responses,
            pending: first.events,
        })
    }
}

/// An open watch: events in revision order.
#[derive(Debug)]
pub struct Watch {
    /// Held so the request stream, and with it the watch, stays open.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    pending: Vec<Event>,
}

impl Watch {
    /// The next batch of events (one revision's, or several).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the stream breaks or the member loses
    /// its leader, [`StoreError::Compacted`] when history was compacted.
    pub async fn next(&mut self) -> Result<Vec<Event>, StoreError> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        loop {
            let response = self
                .responses
                .next()
                .await
                .ok_or_else(|| StoreError::Unavailable("watch stream ended".into()))??;
            check_watch(&response)?;
            if !response.events.is_empty() {
                return Ok(response.events);
            }
        }
    }
}

fn check_watch(response: &WatchResponse) -> Result<(), StoreError> {
    if response.compact_revision > 0 {
        return Err(StoreError::Compacted);
    }
    if response.canceled {
        return Err(StoreError::Unavailable(format!(
            "watch canceled: {}",
            response.cancel_reason
        )));
    }
    Ok(())
}

/// The end of the range of keys starting with `prefix` (etcd's `WithPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

impl Etcd {
    fn channel(&self) -> Channel {
        let members = &self.members;
        members[self.current.load(Ordering::Relaxed) % members.len()].clone()
    }

    /// Moves on to the next member; `detail` as an error to return.
    fn next_member(&self, detail: String) -> StoreError {
        self.current.fetch_add(1, Ordering::Relaxed);
        StoreError::Unavailable(detail)
    }

    /// A failed stream call: the next one goes to another member when this
    /// one could not be reached.
    fn failed(&self, status: Status) -> StoreError {
        if status.code() == Code::Unavailable || status.code() == Code::Unknown {
            self.current.fetch_add(1, Ordering::Relaxed);
        }
        StoreError::from(status)
    }

    /// Makes one unary call, again on another member while the failure says
    /// the call never reached a working one (a member just killed, a member
    /// without a leader), within [`CALL_DEADLINE`] in all. Every call made
    /// is safe to repeat: a put writes the same value, a repeated grant
    /// leaves a spare lease to expire, and a repeated create-if-absent can
    /// only answer "exists" (it fails closed).
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let attempts = async {
            let mut tried = 0;
            loop {
                match tokio::time::timeout(ATTEMPT_DEADLINE, call(self.channel())).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Err(_) => {
                        tracing::debug!("etcd call timed out; trying the next member");
                        self.next_member(String::new());
                        tried += 1;
                    }
                    Ok(Err(status)) if status.code() == Code::Unavailable => {
                        tracing::debug!(error = %status.message(), "etcd call failed; trying the next member");
                        self.next_member(String::new());
                        tried += 1;
                        if tried % self.members.len() == 0 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Ok(Err(status)) => return Err(StoreError::from(status)),
                }
            }
        };
        tokio::time::timeout(CALL_DEADLINE, attempts)
            .await
            .map_err(|_| {
                StoreError::Unavailable("etcd did not answer in time (no quorum?)".into())
            })?
    }
}

impl From<Status> for StoreError {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::NotFound => StoreError::NotFound,
            _ => StoreError::Unavailable(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_every_key_it_starts() {
        assert_eq!(prefix_end(b"/authmesh/"), b"/authmesh0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
