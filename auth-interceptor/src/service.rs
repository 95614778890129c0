//! [`AuthService`]: the per-call check, before routing, on the exact `:path`.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, HeaderValue, Request, Response, header::AUTHORIZATION};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::{Instrument, instrument::Instrumented};

#[cfg(feature = "mtls")]
use crate::peer::PeerCache;
use crate::{
    error::AuthError,
    peer::{PeerError, PeerIdentity},
    policy::{MethodPolicy, SharedPolicy},
    stream_bound::TokenBoundBody,
    verifier::{VerifiedClaims, Verifier},
};

/// The metadata key of the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of one call, for logs across services: the caller's `x-request-id`
/// when it sent a sane one (1 to 128 of `A-Z a-z 0-9 - _ .`), else a fresh
/// one. Handlers find it in the request extensions, pass it on to the calls
/// they make, and it comes back to the caller in the response metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id of a call with `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let sent = headers.get(REQUEST_ID_HEADER).filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        match sent {
            // Shares the request's bytes: no copy.
            Some(id) => Self(id.clone()),
            None => Self::generate(),
        }
    }

    /// A fresh id: 16 hex digits, unique within the process (a counter)
    /// and unlikely to repeat across processes (a random start). Every
    /// call without an id makes one, so no RNG and no formatting machinery.
    fn generate() -> Self {
        static START: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let start = *START.get_or_init(rand::random::<u64>);
        // An odd multiplier is a bijection on u64: distinct counts, distinct ids.
        let id = start
            .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 16];
        for (index, digit) in text.iter_mut().enumerate() {
            *digit = HEX[((id >> (60 - 4 * index)) & 0xf) as usize];
        }
        Self(HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("0")))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets in (checked above, or hex digits).
        self.0.to_str().unwrap_or_default()
    }

    /// The id for the response metadata. Marked sensitive so HTTP/2 sends
    /// it as a never-indexed literal: each call's id is new, and indexing
    /// it would churn both ends' HPACK tables (and evict the headers that
    /// do repeat) on every call.
    fn header_value(&self) -> HeaderValue {
        let mut value = self.0.clone();
        value.set_sensitive(true);
        value
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call that may go through: who calls, and the rule that allowed it.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The verified token.
    pub claims: VerifiedClaims,
    /// The allowing rule.
    pub rule: Arc<str>,
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
    #[cfg(feature = "mtls")]
    peers: PeerCache,
}

impl<S> AuthService<S> {
    pub(crate) fn new(
        inner: S,
        verifier: Verifier,
        policy: SharedPolicy,
        #[cfg(feature = "mtls")] peers: PeerCache,
    ) -> Self {
        Self {
            inner,
            verifier,
            policy,
            #[cfg(feature = "mtls")]
            peers,
        }
    }

    /// The verified client certificate of the call's connection, if any.
    #[cfg(feature = "mtls")]
    fn peer<B>(&self, request: &Request<B>) -> Result<Option<PeerIdentity>, PeerError> {
        self.peers.identify_connection(request.extensions().get())
    }

    /// Without `mtls` no connection has a certificate identity.
    #[cfg(not(feature = "mtls"))]
    fn peer<B>(&self, _request: &Request<B>) -> Result<Option<PeerIdentity>, PeerError> {
        Ok(None)
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
    let token = value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .ok_or(AuthError::MalformedAuthorization("scheme is not Bearer"))?;
    let valid = |chunk: &[u8]| chunk.iter().fold(true, |ok, &b| ok & is_token_byte(b));
    if token.is_empty() || !token.chunks(32).all(valid) {
        return Err(AuthError::MalformedAuthorization("bad token characters"));
    }
    // All ASCII by now, so this cannot fail; no unchecked conversion needed.
    std::str::from_utf8(token)
        .map_err(|_| AuthError::MalformedAuthorization("bad token characters"))
}

/// base64url alphabet plus the JWS separator. Branch-free, so the check
/// of a 32-byte chunk compiles to a few vector instructions: every call
/// checks a few hundred bytes.
#[inline]
fn is_token_byte(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10)
        | ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b == b'-')
        | (b == b'_')
        | (b == b'.')
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
        let policy = self.policy.load();
        let request_id = RequestId::from_headers(request.headers());
        if policy.is_public(path) {
            let span = tracing::debug_span!("rpc", method = %path);
            let future = span.in_scope(|| inner.call(request));
            return ResponseFuture::forward(future.instrument(span), None, None, None);
        }
        let decided = self
            .peer(&request)
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
            Err(denial) => {
                self.verifier.metrics().denied(denial.error.reason());
                return deny(
                    path,
                    denial.error,
                    denial.claims.as_ref(),
                    &request_id,
                    started,
                );
            }
        };
        self.verifier.metrics().allowed();
        // One span per call: whatever the handler logs carries the caller.
        let span = tracing::info_span!("rpc", method = %path, caller = %claims.sub, aud = %claims.aud, jti = %claims.jti, request_id = %request_id);
        let bound = (self.verifier.clone(), claims.clone());
        request.extensions_mut().insert(claims);
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        let echo = Some(request_id.header_value());
        request.extensions_mut().insert(request_id);
        let future = span.in_scope(|| inner.call(request));
        ResponseFuture::forward(future.instrument(span), Some(started), echo, Some(bound))
    }
}

/// Logs a denial (never the token: only its `sub`, `aud` and `jti` once verified)
/// and answers it without reaching the inner service.
fn deny<F>(
    path: &str,
    err: AuthError,
    claims: Option<&VerifiedClaims>,
    request_id: &RequestId,
    started: Instant,
) -> ResponseFuture<F> {
    let latency_us = started.elapsed().as_micros() as u64;
    // Ties the caller's error to this log line without revealing anything.
    let decision_id = crate::error::new_decision_id();
    let caller = claims.map(|c| c.sub.as_str()).unwrap_or("");
    let aud = claims.map(|c| c.aud.as_str()).unwrap_or("");
    let jti = claims.map(|c| c.jti.as_str()).unwrap_or("");
    if err.code() == tonic::Code::Unavailable {
        tracing::warn!(rpc = %path, decision = "deny", reason = err.reason(), detail = %err, %decision_id, %request_id, latency_us, "request refused: the verifier cannot decide now");
    } else {
        tracing::info!(rpc = %path, caller, aud, jti, decision = "deny", reason = err.reason(), detail = %err, %decision_id, %request_id, latency_us, "request denied");
    }
    let mut response = err.into_status(Some(&decision_id)).into_http();
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, request_id.header_value());
    ResponseFuture::deny(response)
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
        Forward {
            #[pin] future: Instrumented<F>,
            started: Option<Instant>,
            request_id: Option<HeaderValue>,
            // The verifier and token the response body stays bound to.
            bound: Option<(Verifier, VerifiedClaims)>,
        },
        Deny { response: Option<Response<tonic::body::Body>> },
    }
}

impl<F> ResponseFuture<F> {
    fn forward(
        future: Instrumented<F>,
        started: Option<Instant>,
        request_id: Option<HeaderValue>,
        bound: Option<(Verifier, VerifiedClaims)>,
    ) -> Self {
        Self {
            state: State::Forward {
                future,
                started,
                request_id,
                bound,
            },
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
                request_id,
                bound,
            } => {
                let mut output = std::task::ready!(future.as_mut().poll(cx));
                if let Some((verifier, claims)) = bound.take() {
                    output = output.map(|response| {
                        response.map(|body| {
                            tonic::body::Body::new(TokenBoundBody::new(body, verifier, claims))
                        })
                    });
                }
                if let (Ok(response), Some(id)) = (output.as_mut(), request_id.take()) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, id);
                }
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

    #[test]
    fn token_bytes_are_exactly_base64url_and_dot() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            assert_eq!(is_token_byte(b), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                RequestId::from_headers(&HeaderMap::new())
                    .as_str()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
