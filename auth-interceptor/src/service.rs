//! [`AuthService`]: the per-call check, before routing, on the exact `:path`.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, Request, Response, header::AUTHORIZATION};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::{Instrument, instrument::Instrumented};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::{
    error::AuthError,
    peer::{PeerCache, PeerIdentity},
    policy::{MethodPolicy, SharedPolicy},
    verifier::{VerifiedClaims, Verifier},
};

/// A call that may go through: who calls, and the rule that allowed it.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The verified token.
    pub claims: VerifiedClaims,
    /// The allowing rule.
    pub rule: String,
}

/// A call that may not, with the caller when its token verified.
#[derive(Debug, Clone)]
pub struct Denial {
    /// Why.
    pub error: AuthError,
    /// The token's claims, if it verified (a policy denial or a replay).
    pub claims: Option<VerifiedClaims>,
}

impl From<AuthError> for Denial {
    fn from(error: AuthError) -> Self {
        Self {
            error,
            claims: None,
        }
    }
}

/// The whole check of one call to `path` with `token` over a connection
/// whose client certificate is `peer`: verification, revocation,
/// certificate binding and policy. It changes nothing, so `authmesh explain`
/// runs the very same decision without making the call; the one side effect
/// of a real call, using up a one-time token, is left to the caller.
///
/// # Errors
/// A [`Denial`] naming the first check that failed.
pub fn decide(
    verifier: &Verifier,
    policy: &MethodPolicy,
    path: &str,
    token: &str,
    peer: Option<&PeerIdentity>,
) -> Result<Decision, Denial> {
    let claims = verifier.verify(token)?;
    let refused = |error| Denial {
        error,
        claims: Some(claims.clone()),
    };
    verifier.check_binding(&claims, peer).map_err(refused)?;
    let allowed = policy.authorize(path, &claims).map_err(refused)?;
    Ok(Decision {
        claims,
        rule: allowed.rule,
    })
}

/// The middleware [`crate::AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Verifier,
    policy: SharedPolicy,
    peers: PeerCache,
}

impl<S> AuthService<S> {
    pub(crate) fn new(
        inner: S,
        verifier: Verifier,
        policy: SharedPolicy,
        peers: PeerCache,
    ) -> Self {
        Self {
            inner,
            verifier,
            policy,
            peers,
        }
    }
}

/// Extracts the token from exactly one `authorization: Bearer <token>` entry.
///
/// # Errors
/// [`AuthError::MissingToken`] with no entry; [`AuthError::MalformedAuthorization`]
/// for several entries, another scheme, non-visible-ASCII bytes or a bad shape.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedAuthorization("more than one entry"));
    }
    let value = value
        .to_str()
        .map_err(|_| AuthError::MalformedAuthorization("not visible ASCII"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or(AuthError::MalformedAuthorization("scheme is not Bearer"))?;
    if token.is_empty() || token.bytes().any(|b| !is_token_byte(b)) {
        return Err(AuthError::MalformedAuthorization("bad token characters"));
    }
    Ok(token)
}

/// base64url alphabet plus the JWS separator.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // The inner service was made ready by poll_ready; keep that one and
        // leave a fresh clone behind for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path();
        let policy = self.policy.current();
        if policy.is_public(path) {
            let span = tracing::debug_span!("rpc", method = %path);
            let future = span.in_scope(|| inner.call(request));
            return ResponseFuture::forward(future.instrument(span), None);
        }
        let peer = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|info| self.peers.identify(info))
            .transpose()
            .map(Option::flatten);
        let decided = peer
            .map_err(AuthError::from)
            .map_err(Denial::from)
            .and_then(|peer| {
                let token = bearer_token(request.headers())?;
                let decision = decide(&self.verifier, &policy, path, token, peer.as_ref())?;
                if let Err(error) = self.verifier.consume_one_time(&decision.claims) {
                    return Err(Denial {
                        error,
                        claims: Some(decision.claims),
                    });
                }
                Ok((decision.claims, peer))
            });
        let (claims, peer) = match decided {
            Ok(decided) => decided,
            Err(denial) => return deny(path, denial.error, denial.claims.as_ref(), started),
        };
        // One span per call: whatever the handler logs carries the caller.
        let span = tracing::info_span!("rpc", method = %path, caller = %claims.sub, aud = %claims.aud, jti = %claims.jti);
        request.extensions_mut().insert(claims);
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        let future = span.in_scope(|| inner.call(request));
        ResponseFuture::forward(future.instrument(span), Some(started))
    }
}

/// Logs a denial (never the token: only its `sub`, `aud` and `jti` once verified)
/// and answers it without reaching the inner service.
fn deny<F>(
    path: &str,
    err: AuthError,
    claims: Option<&VerifiedClaims>,
    started: Instant,
) -> ResponseFuture<F> {
    let latency_us = started.elapsed().as_micros() as u64;
    // Ties the caller's error to this log line without revealing anything.
    let decision_id = format!("{:016x}", rand::random::<u64>());
    let caller = claims.map(|c| c.sub.as_str()).unwrap_or("");
    let aud = claims.map(|c| c.aud.as_str()).unwrap_or("");
    let jti = claims.map(|c| c.jti.as_str()).unwrap_or("");
    if err.code() == tonic::Code::Unavailable {
        tracing::warn!(rpc = %path, decision = "deny", reason = err.reason(), detail = %err, %decision_id, latency_us, "request refused: the verifier cannot decide now");
    } else {
        tracing::info!(rpc = %path, caller, aud, jti, decision = "deny", reason = err.reason(), detail = %err, %decision_id, latency_us, "request denied");
    }
    ResponseFuture::deny(err.into_status(Some(&decision_id)).into_http())
}

pin_project! {
    /// The response of [`AuthService`]: the inner call's, or the denial.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Forward { #[pin] future: Instrumented<F>, started: Option<Instant> },
        Deny { response: Option<Response<tonic::body::Body>> },
    }
}

impl<F> ResponseFuture<F> {
    fn forward(future: Instrumented<F>, started: Option<Instant>) -> Self {
        Self {
            state: State::Forward { future, started },
        }
    }

    fn deny(response: Response<tonic::body::Body>) -> Self {
        Self {
            state: State::Deny {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<tonic::body::Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Forward {
                mut future,
                started,
            } => {
                let output = std::task::ready!(future.as_mut().poll(cx));
                if let Some(started) = started.take() {
                    let grpc_status = output.as_ref().ok().and_then(|r| {
                        r.headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    });
                    // Inside the call's span, so method and caller are on the event.
                    let _entered = future.span().enter();
                    tracing::debug!(
                        decision = "allow",
                        grpc_status = grpc_status.as_deref().unwrap_or("0"),
                        latency_us = started.elapsed().as_micros() as u64,
                        "call completed"
                    );
                }
                Poll::Ready(output)
            }
            StateProj::Deny { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).expect("header"));
        }
        map
    }

    #[test]
    fn bearer_grammar_is_strict() {
        assert_eq!(bearer_token(&headers(&[b"Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::MissingToken));
        for bad in [
            &b"Basic b3JkZXJzOnNlY3JldA=="[..],
            b"a.b.c",
            b"Bearer ",
            b"Bearer  a.b.c",
            b"bearer a.b.c",
            b"Bearer a.b.c a.b.c",
            b"Bearer a.b.c\xff",
        ] {
            assert!(
                matches!(
                    bearer_token(&headers(&[bad])),
                    Err(AuthError::MalformedAuthorization(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            bearer_token(&headers(&[b"Bearer a.b.c", b"Bearer d.e.f"])),
            Err(AuthError::MalformedAuthorization(_))
        ));
    }
}
