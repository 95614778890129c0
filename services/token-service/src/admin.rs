//! `authmesh.v1.WorkloadAdmin`: workloads registered at run time. Only a
//! caller whose client certificate carries one of `admin_ids` gets in (as
//! SPIRE's `admin_ids`); a change is checked against the issuer's
//! audiences and their policies, written to the store, and in force on
//! every replica within a second.

use std::{collections::HashSet, sync::Arc};

use auth_interceptor::PeerCache;
use authmesh_proto::authmesh::v1::{
    AddWorkloadRequest, AddWorkloadResponse, ListWorkloadsRequest, ListWorkloadsResponse,
    RemoveWorkloadRequest, RemoveWorkloadResponse, workload_admin_server::WorkloadAdmin,
};
use tonic::{Request, Response, Status};

use crate::{
    config::ClientConfig,
    credentials::ClientOrigin,
    error::IssueError,
    issuer::Issuer,
    registrations::{self, WorkloadsFile},
    store::EtcdStore,
};

/// Where registrations are written.
#[derive(Debug, Clone)]
pub enum Registrations {
    /// `workloads.json` (the files store).
    File(WorkloadsFile),
    /// etcd.
    Etcd(Arc<EtcdStore>),
}

/// Serves [`WorkloadAdmin`].
#[derive(Debug, Clone)]
pub struct WorkloadAdminHandler {
    issuer: Arc<Issuer>,
    admin_ids: Arc<HashSet<String>>,
    registrations: Registrations,
    peers: PeerCache,
}

impl WorkloadAdminHandler {
    /// Administers `issuer`'s workloads for the SPIFFE IDs in `admin_ids`.
    pub fn new(issuer: Arc<Issuer>, admin_ids: &[String], registrations: Registrations) -> Self {
        Self {
            issuer,
            admin_ids: Arc::new(admin_ids.iter().cloned().collect()),
            registrations,
            peers: PeerCache::new(16),
        }
    }

    /// The admin's SPIFFE ID, from the connection's verified client certificate.
    fn authorize<T>(&self, request: &Request<T>) -> Result<String, IssueError> {
        let admin = self
            .peers
            .identify_connection(request.extensions().get())
            .ok()
            .flatten()
            .and_then(|peer| peer.spiffe_id().map(str::to_owned))
            .filter(|id| self.admin_ids.contains(id));
        admin.ok_or_else(|| {
            tracing::info!("workload administration refused: caller is not in admin_ids");
            IssueError::NotAdmin
        })
    }

    async fn add(&self, workload: ClientConfig) -> Result<(), IssueError> {
        self.issuer.check_registration(&workload)?;
        match &self.registrations {
            Registrations::Etcd(store) => store.register(workload, self.issuer.as_ref()).await,
            Registrations::File(file) => {
                self.update_file(file, move |workloads| {
                    if workloads.iter().any(|w| {
                        w.id == workload.id
                            || (w.spiffe_id.is_some() && w.spiffe_id == workload.spiffe_id)
                    }) {
                        return Err(IssueError::WorkloadConflict(
                            "its id or SPIFFE ID was registered meanwhile by another replica"
                                .into(),
                        ));
                    }
                    workloads.push(workload);
                    Ok(())
                })
                .await
            }
        }
    }

    async fn remove(&self, id: String) -> Result<(), IssueError> {
        if self
            .issuer
            .registry()
            .get(&id)
            .is_some_and(|c| c.origin == ClientOrigin::File)
        {
            return Err(IssueError::WorkloadConflict(format!(
                "{id:?} is defined in token-service.toml; remove it there"
            )));
        }
        match &self.registrations {
            Registrations::Etcd(store) => store.unregister(&id, self.issuer.as_ref()).await,
            Registrations::File(file) => {
                self.update_file(file, move |workloads| {
                    let before = workloads.len();
                    workloads.retain(|w| w.id != id);
                    if workloads.len() == before {
                        return Err(IssueError::WorkloadNotFound(id));
                    }
                    Ok(())
                })
                .await
            }
        }
    }

    /// Applies `change` to the workloads file (off the executor: it locks
    /// and writes a file) and puts the result in force here at once.
    async fn update_file(
        &self,
        file: &WorkloadsFile,
        change: impl FnOnce(&mut Vec<ClientConfig>) -> Result<(), IssueError> + Send + 'static,
    ) -> Result<(), IssueError> {
        let file = file.clone();
        let issuer = self.issuer.clone();
        tokio::task::spawn_blocking(move || {
            issuer.set_registered(&file.update(change)?);
            Ok(())
        })
        .await
        .unwrap_or(Err(IssueError::Busy))
    }
}

#[tonic::async_trait]
impl WorkloadAdmin for WorkloadAdminHandler {
    async fn add_workload(
        &self,
        request: Request<AddWorkloadRequest>,
    ) -> Result<Response<AddWorkloadResponse>, Status> {
        let admin = self.authorize(&request)?;
        let workload = request
            .into_inner()
            .workload
            .ok_or_else(|| IssueError::InvalidWorkload("no workload in the request".into()))?;
        let workload = registrations::from_wire(workload)?;
        let id = workload.id.clone();
        self.add(workload).await.inspect_err(|err| {
            tracing::info!(%admin, workload = %id, reason = err.reason(), detail = %err, "workload not registered");
        })?;
        tracing::info!(%admin, workload = %id, "workload registered");
        let registered = self
            .issuer
            .registry()
            .get(&id)
            .map(|c| registrations::to_wire(c));
        Ok(Response::new(AddWorkloadResponse {
            workload: registered,
        }))
    }

    async fn list_workloads(
        &self,
        request: Request<ListWorkloadsRequest>,
    ) -> Result<Response<ListWorkloadsResponse>, Status> {
        self.authorize(&request)?;
        let registry = self.issuer.registry();
        let mut workloads: Vec<_> = registry.all().map(|c| registrations::to_wire(c)).collect();
        workloads.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(ListWorkloadsResponse { workloads }))
    }

    async fn remove_workload(
        &self,
        request: Request<RemoveWorkloadRequest>,
    ) -> Result<Response<RemoveWorkloadResponse>, Status> {
        let admin = self.authorize(&request)?;
        let id = request.into_inner().id;
        self.remove(id.clone()).await.inspect_err(|err| {
            tracing::info!(%admin, workload = %id, reason = err.reason(), "workload not removed");
        })?;
        tracing::info!(%admin, workload = %id, "workload removed");
        Ok(Response::new(RemoveWorkloadResponse {}))
    }
}
