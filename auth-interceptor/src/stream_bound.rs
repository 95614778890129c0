//! [`TokenBoundBody`]: a response may not outlive the token that opened the
//! call by more than the verifier's leeway.
//!
//! A server stream can run for hours on a token that lives minutes. The body
//! of every authenticated response is wrapped: before each message after
//! the first, and every [`RECHECK_INTERVAL`] while the handler has nothing
//! to send, the token is checked again (expiry with leeway, revocation). A
//! token that no longer holds ends the response with UNAUTHENTICATED in the
//! trailers and drops the handler's stream. The first message is never
//! checked, so a unary answer the handler already computed (its side effects
//! done) is never replaced by an error.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::{error::AuthError, verifier::VerifiedClaims, verifier::Verifier};

/// How often an idle response re-checks its token. Token times have
/// one-second resolution, so a stream ends at most this long after the
/// token's `exp` plus the leeway (and this long after a revocation arrives).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A response body that ends with UNAUTHENTICATED once the token that
/// opened the call expires (beyond the leeway) or is revoked.
pub struct TokenBoundBody {
    /// `None` once the token stopped holding: the handler's stream is dropped.
    inner: Option<tonic::body::Body>,
    verifier: Verifier,
    claims: VerifiedClaims,
    /// The first message went out; later ones are checked.
    delivered: bool,
    /// Armed the first time the handler has nothing ready to send.
    recheck: Option<Pin<Box<Sleep>>>,
}

impl TokenBoundBody {
    /// Wraps `inner`, the response to a call `claims` was verified for.
    pub fn new(inner: tonic::body::Body, verifier: Verifier, claims: VerifiedClaims) -> Self {
        Self {
            inner: Some(inner),
            verifier,
            claims,
            delivered: false,
            recheck: None,
        }
    }

    /// Drops the handler's stream and answers `error` in the trailers.
    fn cut(&mut self, error: AuthError) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.inner = None;
        let decision_id = crate::error::new_decision_id();
        tracing::info!(
            caller = %self.claims.sub,
            aud = %self.claims.aud,
            jti = %self.claims.jti,
            reason = error.reason(),
            %decision_id,
            "response ended: the token that opened the call no longer holds"
        );
        let mut trailers = HeaderMap::new();
        if let Err(status) = error
            .into_status(Some(&decision_id))
            .add_header(&mut trailers)
        {
            // Every AuthError message is a fixed ASCII string, so this is
            // unreachable; a bare status still ends the call correctly.
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    /// Polls the recheck timer while the handler has nothing to send.
    fn poll_recheck(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let timer = self
            .recheck
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(RECHECK_INTERVAL)));
        while timer.as_mut().poll(cx).is_ready() {
            if let Err(error) = self.verifier.still_valid(&self.claims) {
                return self.cut(error);
            }
            timer.as_mut().reset(Instant::now() + RECHECK_INTERVAL);
        }
        Poll::Pending
    }
}

impl Body for TokenBoundBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() => {
                if this.delivered
                    && let Err(error) = this.verifier.still_valid(&this.claims)
                {
                    return this.cut(error);
                }
                this.delivered = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => this.poll_recheck(cx),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Arc};

    use super::*;
    use crate::{
        clock::{Clock, OffsetClock},
        token::Claims,
        verifier::VerifierConfig,
    };

    /// Sends `frames`, then waits forever (an idle stream).
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.0.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => Poll::Pending,
            }
        }
    }

    fn data(s: &'static str) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(s.as_bytes()))
    }

    /// A body bound to a token living 10 s, and the clock to move.
    fn bound(frames: Vec<Frame<Bytes>>) -> (TokenBoundBody, OffsetClock) {
        let clock = OffsetClock::new();
        let verifier = Verifier::with_clock(
            VerifierConfig::new("https://issuer", "inventory"),
            Arc::new(clock.clone()),
        )
        .expect("verifier");
        let now = clock.now();
        let claims = VerifiedClaims::assume_verified(Claims {
            iss: "https://issuer".into(),
            sub: "orders".into(),
            aud: "inventory".into(),
            exp: now + 10,
            nbf: None,
            iat: now,
            jti: "j1".into(),
            scope: String::new(),
            client_id: None,
            cnf: None,
            one_time: false,
            act: None,
            subject_issuer: None,
        });
        let inner = tonic::body::Body::new(Frames(frames.into()));
        (TokenBoundBody::new(inner, verifier, claims), clock)
    }

    async fn frame(body: &mut TokenBoundBody) -> Frame<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .expect("a frame")
            .expect("not an error")
    }

    fn status(trailers: &Frame<Bytes>) -> Option<&str> {
        trailers
            .trailers_ref()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_message_is_never_replaced_and_later_ones_are_checked() {
        let (mut body, clock) = bound(vec![data("answer"), data("second")]);
        // Expired beyond the 30 s leeway while the handler worked.
        clock.advance(10 + 31);
        assert!(frame(&mut body).await.is_data(), "the answer goes out");
        let cut = frame(&mut body).await;
        assert_eq!(status(&cut), Some("16"), "UNAUTHENTICATED");
        assert!(
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .is_none(),
            "nothing after the trailers"
        );
        assert!(body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_is_cut_within_one_recheck_of_expiry() {
        let (mut body, clock) = bound(vec![data("now")]);
        assert!(frame(&mut body).await.is_data());
        clock.advance(10 + 30);
        let waiting = tokio::time::timeout(RECHECK_INTERVAL * 3, frame(&mut body)).await;
        assert!(waiting.is_err(), "still valid at exp + leeway: no cut");
        clock.advance(1);
        let cut = tokio::time::timeout(RECHECK_INTERVAL * 2, frame(&mut body))
            .await
            .expect("cut within a recheck");
        assert_eq!(status(&cut), Some("16"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_valid_token_passes_every_frame_and_the_handler_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("ascii"));
        let (mut body, _clock) = bound(vec![data("a"), data("b"), Frame::trailers(trailers)]);
        assert!(frame(&mut body).await.is_data());
        assert!(frame(&mut body).await.is_data());
        assert_eq!(status(&frame(&mut body).await), Some("0"));
    }
}
