//! [`ResponseFuture`]: the response of [`crate::AuthService`], the inner
//! call's or the denial, with the request id echoed and the body bound to
//! the token that opened the call.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;
use tracing::instrument::Instrumented;

use crate::{
    request_id::REQUEST_ID_NAME,
    stream_bound::TokenBoundBody,
    verifier::{VerifiedClaims, Verifier},
};

pin_project! {
    /// The response of [`AuthService`]: the inner call's, or the denial.
    pub struct ResponseFuture<F: Future> {
        #[pin]
        state: State<F>,
    }
}

/// The whole response of a call that waits for the one-time ledger first.
pub(crate) type Consuming<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    #[project = StateProj]
    enum State<F: Future> {
        Forward {
            #[pin] future: Instrumented<F>,
            started: Option<Instant>,
            request_id: Option<HeaderValue>,
            // The verifier and token the response body stays bound to.
            bound: Option<(Verifier, VerifiedClaims)>,
        },
        Deny { response: Option<Response<tonic::body::Body>> },
        Consuming { future: Consuming<F> },
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn consuming(future: Consuming<F>) -> Self {
        Self {
            state: State::Consuming { future },
        }
    }

    pub(crate) fn forward(
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

    pub(crate) fn deny(response: Response<tonic::body::Body>) -> Self {
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
                    response.headers_mut().insert(REQUEST_ID_NAME, id);
                }
                if let Some(started) = started.take()
                    && tracing::enabled!(tracing::Level::DEBUG)
                {
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
            StateProj::Consuming { future } => future.as_mut().poll(cx),
            StateProj::Deny { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}
