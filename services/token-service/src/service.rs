//! The `authmesh.v1.TokenService` gRPC service.

use std::{sync::Arc, time::Duration};

use auth_interceptor::PeerIdentity;
use authmesh_proto::authmesh::v1::{
    GetJwksRequest, GetJwksResponse, IssueTokenRequest, IssueTokenResponse,
    token_service_server::TokenService,
};
use tokio::sync::Semaphore;
use tonic::{
    Request, Response, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use crate::{
    error::IssueError,
    issuer::{Issuer, MintRequest},
};

/// Longest a request waits for a credential-check slot before RESOURCE_EXHAUSTED.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Serves [`Issuer`] over gRPC.
#[derive(Debug, Clone)]
pub struct TokenServiceHandler {
    issuer: Arc<Issuer>,
    /// argon2 costs ~19 MiB and tens of milliseconds per check: at most one
    /// check per core runs at once, so a flood of logins cannot exhaust
    /// memory or starve the executor.
    credential_slots: Arc<Semaphore>,
}

impl TokenServiceHandler {
    /// A handler minting with `issuer`.
    pub fn new(issuer: Arc<Issuer>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            issuer,
            credential_slots: Arc::new(Semaphore::new(cores)),
        }
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

/// The verified client certificate of the connection, if one was sent.
fn peer_identity<T>(request: &Request<T>) -> Result<Option<PeerIdentity>, IssueError> {
    request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .map(PeerIdentity::from_connect_info)
        .transpose()
        .map(Option::flatten)
        .map_err(|_| IssueError::UnknownWorkload)
}

#[tonic::async_trait]
impl TokenService for TokenServiceHandler {
    async fn issue_token(
        &self,
        request: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        let authorization = optional_authorization(&request);
        let peer = peer_identity(&request);
        let source = request.remote_addr().map(|addr| addr.ip());
        let body = request.into_inner();
        let mint_request = MintRequest {
            audience: body.audience,
            scopes: body.scopes,
            ttl_seconds: body.ttl_seconds,
        };
        let issuer = self.issuer.clone();
        let slot = tokio::time::timeout(SLOT_WAIT, self.credential_slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| Status::from(IssueError::Busy))?;
        // argon2 takes tens of milliseconds of CPU: keep it off the executor threads.
        let outcome = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let caller = issuer.authenticate(authorization?.as_deref(), peer?.as_ref(), source)?;
            let client_id = caller.client.id.clone();
            tracing::debug!(client = %client_id, sub = %caller.subject, by_certificate = caller.binding.is_some(), "client authenticated");
            issuer
                .mint(&caller, &mint_request)
                .map_err(|err| (Some(client_id), mint_request.audience.clone(), err))
                .map_err(|(client, audience, err)| {
                    tracing::info!(client = client.as_deref().unwrap_or(""), aud = %audience, reason = err.reason(), detail = %err, "token refused");
                    err
                })
        })
        .await
        .map_err(|_| Status::internal("token minting failed"))?;
        let minted = outcome.map_err(|err: IssueError| {
            if matches!(
                err,
                IssueError::BadCredentials | IssueError::MalformedCredentials
            ) {
                tracing::info!(reason = err.reason(), "client authentication failed");
            }
            Status::from(err)
        })?;
        let claims = &minted.claims;
        tracing::info!(sub = %claims.sub, aud = %claims.aud, jti = %claims.jti, scope = %claims.scope, exp = claims.exp, "token issued");
        Ok(Response::new(IssueTokenResponse {
            token: minted.token,
            expires_at: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            scope: claims.scope.clone(),
            token_type: "Bearer".into(),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse {
            keys: self
                .issuer
                .jwks()
                .keys
                .iter()
                .cloned()
                .map(Into::into)
                .collect(),
        }))
    }
}
