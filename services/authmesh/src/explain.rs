//! `authmesh explain`: the decision a service would make on a call, made
//! offline with the service's own configuration, policy file, the issuer's
//! current keys and revocations, and the very function the auth layer runs.

use std::path::Path;

use auth_interceptor::{
    AuthError, Denial, DryRunOutcome, PeerIdentity, VerifiedClaims, Verifier, call_path, decide,
    error::delegation_metadata,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use service_runtime::{AuthConfig, UpstreamConfig};

use crate::{
    dev_state::DevState,
    token_cli::{IssuerView, TokenCliError},
};

/// A call to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest<'a> {
    /// The bearer token.
    pub token: &'a str,
    /// The service whose configuration decides: `inventory` or `orders`,
    /// or its gRPC name (`demo.inventory.v1.Inventory`).
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

/// The demo service a name means: its short name (`inventory`) or its gRPC
/// service name (`demo.inventory.v1.Inventory`), so `explain` and `policy
/// check` take the same spelling.
pub fn demo_service(name: &str) -> Option<(&'static str, &'static str)> {
    const SERVICES: [(&str, &str); 2] = [
        ("inventory", "demo.inventory.v1.Inventory"),
        ("orders", "demo.orders.v1.Orders"),
    ];
    SERVICES
        .into_iter()
        .find(|(short, grpc)| name == *short || name == *grpc)
}

fn service_view(state: &DevState, service: &str) -> Result<ServiceView, TokenCliError> {
    let short = demo_service(service).map_or(service, |(short, _)| short);
    match short {
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
            "unknown service {other:?}: expected inventory or orders (or demo.inventory.v1.Inventory, demo.orders.v1.Orders)"
        ))),
    }
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
    let policy = service_runtime::PolicySource::from_config(&view.auth, &view.dir, view.built_in)
        .map_err(|err| {
            TokenCliError::Usage(format!(
                "{err}; a running {} keeps deciding with the last policy that loaded, which explain cannot see: fix the file first",
                request.service
            ))
        })?
        .policy;
    if policy.is_public(request.method) {
        return Ok(json!({
            "decision": "allow",
            "method": request.method,
            "public": true,
            "detail": "public method: no token is checked",
        }));
    }
    let issuer = IssuerView::load(&view.token_service, &view.dir, state).await?;
    let verifier = Verifier::new(auth_interceptor::VerifierConfig {
        record_metrics: false,
        ..view.auth.verifier_config()
    })
    .map_err(|e| TokenCliError::Usage(e.to_string()))?;
    verifier
        .install_keys(&issuer.keys)
        .map_err(|e| TokenCliError::Usage(format!("the issuer's keys were refused: {e}")))?;
    verifier.apply_revocations(&issuer.revocations);
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
            ..
        }) if peer.is_none() => {
            notes.push(format!(
                "token is bound to the client certificate with x5t#S256 {}; binding not checked (pass --cert)",
                claims.cnf.as_ref().map_or("", |c| c.x5t_s256.as_str())
            ));
            call_path::authorize(&policy, request.method, claims)
        }
        other => other,
    };
    let dry_run = match &decided {
        Ok(decision) => dry_run_report(&decision.dry_run),
        Err(denial) => dry_run_report(&denial.dry_run),
    };
    let mut report = match decided {
        Ok(decision) => {
            // The replay cache lives in each running service: whether this
            // one has seen the token already, only it knows.
            let decision_name = if decision.claims.one_time {
                notes.push(
                    "one-time token: allowed only if the service has not accepted it yet; that lives in the running service, so explain cannot tell (and did not use it up)"
                        .into(),
                );
                "allow_if_unused"
            } else {
                "allow"
            };
            json!({
                "decision": decision_name,
                "method": request.method,
                "rule": decision.rule,
                "caller": caller(&decision.claims),
            })
        }
        Err(Denial { error, claims, .. }) => {
            let verified: Option<&auth_interceptor::Claims> = claims.as_deref();
            let status = error.clone().into_status_for(None, verified);
            let mut metadata = error.metadata();
            metadata.extend(verified.map(delegation_metadata).unwrap_or_default());
            json!({
                "decision": "deny",
                "method": request.method,
                "code": format!("{:?}", error.code()),
                "reason": error.reason(),
                "message": status.message(),
                "metadata": metadata,
                "detail": error.to_string(),
                "caller": claims.as_ref().map(caller),
            })
        }
    };
    if !dry_run.is_empty() {
        report["dry_run"] = json!(dry_run);
    }
    report["keys_from"] = json!(issuer.source);
    if !notes.is_empty() {
        report["notes"] = json!(notes);
    }
    Ok(report)
}

/// What the dry-run rules would have decided, as the layer logs it.
fn dry_run_report(outcomes: &[DryRunOutcome]) -> Vec<Value> {
    outcomes
        .iter()
        .map(|outcome| json!({ "rule": &*outcome.rule, "decision": outcome.would.as_str() }))
        .collect()
}

fn caller(claims: &VerifiedClaims) -> Value {
    let mut caller = json!({
        "sub": claims.sub,
        "aud": claims.aud,
        "jti": claims.jti,
        "scope": claims.scope,
        "exp": claims.exp,
    });
    // A workload acting for a user: who acts (first), and for whom it acted before.
    if let Some(act) = &claims.act {
        caller["act"] = json!(act.chain().map(|a| a.sub.as_str()).collect::<Vec<_>>());
        caller["subject_issuer"] = json!(claims.subject_issuer);
    }
    caller
}
