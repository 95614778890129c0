//! `authmesh explain`: the decision a service would make on a call, made
//! offline with the service's own configuration, policy file, the issuer's
//! current keys and revocations, and the very function the auth layer runs.

use std::{path::Path, time::Duration};

use auth_interceptor::{
    AuthError, Decision, Denial, PeerIdentity, Revocation, VerifiedClaims, Verifier, decide,
};
use authmesh_proto::authmesh::v1::{
    WatchRevocationsRequest, token_service_client::TokenServiceClient,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use service_runtime::{AuthConfig, UpstreamConfig, upstream_channel};
use tonic::transport::Channel;

use crate::{
    dev_state::DevState,
    token_cli::{TokenCliError, fetch_keys},
};

/// Longest wait for the token service's revocation list.
const REVOCATIONS_TIMEOUT: Duration = Duration::from_secs(5);

/// A call to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest<'a> {
    /// The bearer token.
    pub token: &'a str,
    /// `inventory` or `orders`: the service whose configuration decides.
    pub service: &'a str,
    /// The exact gRPC path.
    pub method: &'a str,
    /// The client certificate the call would come with (PEM), for bound tokens.
    pub cert: Option<&'a Path>,
}

/// The service's settings, as its binary loads them from the dev state.
struct ServiceView {
    dir: std::path::PathBuf,
    auth: AuthConfig,
    token_service: UpstreamConfig,
    built_in: auth_interceptor::MethodPolicy,
}

fn service_view(state: &DevState, service: &str) -> Result<ServiceView, TokenCliError> {
    match service {
        "inventory" => {
            let loaded = state.load_inventory()?;
            Ok(ServiceView {
                dir: loaded.dir,
                auth: loaded.config.auth,
                token_service: loaded.config.token_service,
                built_in: inventory::policy(),
            })
        }
        "orders" => {
            let loaded = state.load_orders()?;
            Ok(ServiceView {
                dir: loaded.dir,
                auth: loaded.config.auth,
                token_service: loaded.config.token_service,
                built_in: orders::policy(),
            })
        }
        other => Err(TokenCliError::Usage(format!(
            "unknown service {other:?}: expected inventory or orders"
        ))),
    }
}

/// The full revocation list, as a verifier receives it first on its watch.
async fn fetch_revocations(channel: Channel) -> Result<Vec<Revocation>, TokenCliError> {
    let mut client = TokenServiceClient::new(channel)
        .max_decoding_message_size(auth_interceptor::revocation_watch::MAX_BATCH_BYTES);
    let mut stream = client
        .watch_revocations(WatchRevocationsRequest {})
        .await?
        .into_inner();
    let mut all = Vec::new();
    let read = async {
        while let Some(batch) = stream.message().await? {
            all.extend(
                batch
                    .revocations
                    .into_iter()
                    .filter_map(|r| Revocation::try_from(r).ok()),
            );
            if batch.snapshot {
                return Ok(());
            }
        }
        Err(TokenCliError::Usage(
            "the token service ended the revocation list early".into(),
        ))
    };
    tokio::time::timeout(REVOCATIONS_TIMEOUT, read)
        .await
        .map_err(|_| TokenCliError::Usage("no revocation list within 5 s".into()))??;
    Ok(all)
}

/// Decides `request` as the service would, without making the call (and
/// without using up a one-time token). The result is printable JSON.
///
/// # Errors
/// [`TokenCliError`] when the service's configuration, the token service or
/// the certificate file cannot be read; a denial is a result, not an error.
pub async fn explain(
    state: &DevState,
    request: &ExplainRequest<'_>,
) -> Result<Value, TokenCliError> {
    let view = service_view(state, request.service)?;
    let policy = view.auth.policy(&view.dir, view.built_in)?.policy;
    if policy.is_public(request.method) {
        return Ok(json!({
            "decision": "allow",
            "method": request.method,
            "public": true,
            "detail": "public method: no token is checked",
        }));
    }
    let channel = upstream_channel(&view.token_service, &view.dir)?;
    let verifier = Verifier::new(auth_interceptor::VerifierConfig {
        record_metrics: false,
        ..view.auth.verifier_config()
    })
    .map_err(|e| TokenCliError::Usage(e.to_string()))?;
    verifier
        .install_keys(&fetch_keys(channel.clone()).await?)
        .map_err(|e| TokenCliError::Usage(format!("the issuer's keys were refused: {e}")))?;
    verifier.apply_revocations(&fetch_revocations(channel).await?);
    let peer = request
        .cert
        .map(|path| {
            let der = CertificateDer::from_pem_file(path)
                .map_err(|e| TokenCliError::Usage(format!("{}: {e}", path.display())))?;
            PeerIdentity::from_certificate(&der)
                .map_err(|e| TokenCliError::Usage(format!("{}: {e}", path.display())))
        })
        .transpose()?;
    let decided = decide(
        &verifier,
        &policy,
        request.method,
        request.token,
        peer.as_ref(),
    );
    let mut notes = Vec::new();
    let decided = match decided {
        // Without the caller's certificate the binding cannot be checked:
        // say so, and decide the rest.
        Err(Denial {
            error: AuthError::BindingMismatch,
            claims: Some(claims),
        }) if peer.is_none() => {
            notes.push(format!(
                "token is bound to the client certificate with x5t#S256 {}; binding not checked (pass --cert)",
                claims.cnf.as_ref().map_or("", |c| c.x5t_s256.as_str())
            ));
            policy
                .authorize(request.method, &claims)
                .map(|allowed| Decision {
                    claims: claims.clone(),
                    rule: allowed.rule,
                })
                .map_err(|error| Denial {
                    error,
                    claims: Some(claims),
                })
        }
        other => other,
    };
    let mut report = match decided {
        Ok(decision) => {
            if decision.claims.one_time {
                notes.push(
                    "one-time token: the service accepts it on one call only (explain did not use it up)"
                        .into(),
                );
            }
            json!({
                "decision": "allow",
                "method": request.method,
                "rule": &*decision.rule,
                "caller": caller(&decision.claims),
            })
        }
        Err(Denial { error, claims }) => {
            let status = error.clone().into_status(None);
            json!({
                "decision": "deny",
                "method": request.method,
                "code": format!("{:?}", error.code()),
                "reason": error.reason(),
                "message": status.message(),
                "metadata": error.metadata(),
                "detail": error.to_string(),
                "caller": claims.as_ref().map(caller),
            })
        }
    };
    if !notes.is_empty() {
        report["notes"] = json!(notes);
    }
    Ok(report)
}

fn caller(claims: &VerifiedClaims) -> Value {
    json!({
        "sub": claims.sub,
        "aud": claims.aud,
        "jti": claims.jti,
        "scope": claims.scope,
        "exp": claims.exp,
    })
}
