//! [`AuthService`]: the per-call check, before routing, on the exact `:path`.
//! The check itself is [`crate::call_path`]; this records its outcome (logs,
//! metrics) and answers the denial or forwards the call.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower::Service;
use tracing::Instrument;

#[cfg(feature = "mtls")]
use crate::peer::PeerCache;
use crate::{
    call_context::CallContext,
    call_path::{self, Admitted, Denial},
    error::{ActorChain, AuthError},
    future::ResponseFuture,
    method_kinds::MethodKinds,
    observe::VerifierMetrics,
    peer::{PeerError, PeerIdentity},
    policy::{DryRunOutcome, SharedPolicy},
    request_id::{REQUEST_ID_NAME, RequestId},
    verifier::{VerifiedClaims, Verifier},
};

/// The middleware [`crate::AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    /// Behind one `Arc`: tonic clones the service stack for every request,
    /// and each shared count is a write other cores serving calls make too.
    shared: Arc<Shared>,
}

/// What an [`crate::AuthLayer`] and every service it makes check calls with.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    pub(crate) policy: SharedPolicy,
    pub(crate) kinds: MethodKinds,
    /// Where one-time tokens are used up for every replica, if anywhere.
    pub(crate) ledger: Option<crate::SharedLedger>,
    #[cfg(feature = "mtls")]
    pub(crate) peers: PeerCache,
}

impl<S> AuthService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The verified client certificate of the call's connection, if any.
    #[cfg(feature = "mtls")]
    fn peer<B>(&self, request: &Request<B>) -> Result<Option<PeerIdentity>, PeerError> {
        self.shared
            .peers
            .identify_connection(request.extensions().get())
    }

    /// Without `mtls` no connection has a certificate identity.
    #[cfg(not(feature = "mtls"))]
    fn peer<B>(&self, _request: &Request<B>) -> Result<Option<PeerIdentity>, PeerError> {
        Ok(None)
    }
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Only the decision log and the completion event use the time: read
        // the clock only when they are on.
        let started = tracing::enabled!(tracing::Level::INFO).then(Instant::now);
        // The inner service was made ready by poll_ready; keep that one and
        // leave a fresh clone behind for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        let Shared {
            verifier,
            policy,
            kinds,
            ..
        } = &*self.shared;
        let policy = policy.load();
        if policy.is_public(path) {
            let span = tracing::debug_span!("rpc", method = %path);
            let future = span.in_scope(|| inner.call(request));
            return ResponseFuture::forward(future.instrument(span), None, None, None);
        }
        let request_id = RequestId::from_headers(request.headers());
        let metrics = verifier.metrics();
        let admitted = call_path::admit(
            verifier,
            &policy,
            path,
            request.headers(),
            self.peer(&request),
        );
        let Admitted { decision, peer } = match admitted {
            Ok(admitted) => admitted,
            Err(denial) => {
                if let Some(claims) = &denial.claims {
                    dry_run_seen(metrics, path, claims, &denial.dry_run);
                }
                metrics.denied(denial.error.reason());
                return deny(path, denial, &request_id, started);
            }
        };
        dry_run_seen(metrics, path, &decision.claims, &decision.dry_run);
        let claims = decision.claims;
        // A one-time token with a shared ledger: asked last, off this thread.
        let ledger = match &self.shared.ledger {
            Some(ledger) if claims.one_time => Some((
                ledger.consume(&claims.jti, claims.exp),
                claims.clone(),
                path.to_owned(),
                verifier.clone(),
                request_id.clone(),
            )),
            _ => {
                metrics.allowed();
                None
            }
        };
        // One span per call: whatever the handler logs carries the caller.
        // Its fields are only formatted when INFO is on.
        let span = tracing::info_span!("rpc", method = %path, caller = %claims.sub, aud = %claims.aud, jti = %claims.jti, act = %ActorChain(claims.act.as_ref()), request_id = %request_id);
        // Only a streamed response can outlive its token: bind just those.
        let bound = (!kinds.is_single_response(path)).then(|| (verifier.clone(), claims.clone()));
        let echo = Some(request_id.header_value());
        request
            .extensions_mut()
            .insert(CallContext::new(claims, peer, request_id));
        let Some((consume, claims, path, verifier, request_id)) = ledger else {
            let future = span.in_scope(|| inner.call(request));
            return ResponseFuture::forward(future.instrument(span), started, echo, bound);
        };
        ResponseFuture::consuming(Box::pin(async move {
            let error = match consume.await {
                Ok(true) => {
                    verifier.metrics().allowed();
                    let future = span.in_scope(|| inner.call(request));
                    return ResponseFuture::forward(future.instrument(span), started, echo, bound)
                        .await;
                }
                Ok(false) => AuthError::Replayed,
                Err(err) => {
                    tracing::warn!(error = %err, "one-time ledger unreachable; one-time token refused");
                    AuthError::OneTimeLedgerUnavailable
                }
            };
            verifier.metrics().denied(error.reason());
            let denial = Denial {
                error,
                claims: Some(claims),
                dry_run: Vec::new(),
            };
            deny::<S::Future>(&path, denial, &request_id, started).await
        }))
    }
}

/// Logs and counts what the policy's dry-run rules would have decided.
fn dry_run_seen(
    metrics: &VerifierMetrics,
    path: &str,
    claims: &VerifiedClaims,
    outcomes: &[DryRunOutcome],
) {
    for outcome in outcomes {
        tracing::info!(rpc = %path, caller = %claims.sub, rule = %outcome.rule, decision = outcome.would.as_str(), "dry-run rule");
        metrics.dry_run(outcome);
    }
}

/// Logs a denial (never the token: only its `sub`, `aud` and `jti` once verified)
/// and answers it without reaching the inner service.
fn deny<F: std::future::Future>(
    path: &str,
    denial: Denial,
    request_id: &RequestId,
    started: Option<Instant>,
) -> ResponseFuture<F> {
    let Denial { error, claims, .. } = denial;
    let latency_us = started.map(|started| started.elapsed().as_micros() as u64);
    // Ties the caller's error to this log line without revealing anything.
    let decision_id = crate::error::new_decision_id();
    let claims = claims.as_ref();
    let caller = claims.map(|c| c.sub.as_str()).unwrap_or("");
    let aud = claims.map(|c| c.aud.as_str()).unwrap_or("");
    let jti = claims.map(|c| c.jti.as_str()).unwrap_or("");
    if error.code() == tonic::Code::Unavailable {
        tracing::warn!(rpc = %path, decision = "deny", reason = error.reason(), detail = %error, %decision_id, %request_id, latency_us, "request refused: the verifier cannot decide now");
    } else {
        let act = ActorChain(claims.and_then(|c| c.act.as_ref()));
        tracing::info!(rpc = %path, caller, aud, jti, %act, decision = "deny", reason = error.reason(), detail = %error, %decision_id, %request_id, latency_us, "request denied");
    }
    let claims: Option<&crate::token::Claims> = claims.map(|c| &**c);
    let mut response = error
        .into_status_for(Some(&decision_id), claims)
        .into_http();
    response
        .headers_mut()
        .insert(REQUEST_ID_NAME, request_id.header_value());
    ResponseFuture::deny(response)
}
