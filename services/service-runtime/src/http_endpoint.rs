//! Plain HTTP for what HTTP clients scrape or fetch, GET only, fixed routes:
//! - [`serve_http`]: a small HTTP/1.1 endpoint on its own port (Prometheus
//!   `/metrics`), with a bounded header read time; anything else is 404 or 405;
//! - [`HttpRoutesLayer`]: the same routes answered on a gRPC server's own
//!   port (the token service's `/.well-known/*`), before gRPC routing.

use std::{
    convert::Infallible,
    future::Future,
    io,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{
    Stream, StreamExt,
    future::{Either, Ready, ready},
};
use http::{Method, Request, Response, StatusCode, header::CONTENT_TYPE};
use http_body_util::Full;
pub use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a route answers: content type and body.
pub type Page = (&'static str, Bytes);

/// Answers a path (`/metrics`), or `None` for 404. Called per request.
pub type Routes = Arc<dyn Fn(&str) -> Option<Page> + Send + Sync>;

/// A client that sends no complete request head within this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 256;

/// Serves `routes` on every connection `incoming` yields (plain TCP, or TLS
/// streams) until `shutdown` resolves; connections in progress finish.
pub async fn serve_http<S, IO>(incoming: S, routes: Routes, shutdown: impl Future<Output = ()>)
where
    S: Stream<Item = Result<IO, io::Error>> + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut incoming = incoming;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let connection = tokio::select! {
            () = &mut shutdown => return,
            next = incoming.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(err)) => {
                    // e.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "http endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => return,
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("http endpoint: too many connections; closing a new one");
            continue;
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = answer(&routes, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(connection), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "http endpoint: connection ended with an error");
            }
        });
    }
}

fn answer(routes: &Routes, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (method, routes(path)) {
        (&Method::GET, Some((content_type, body))) => (StatusCode::OK, content_type, body),
        (_, Some(_)) => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            Bytes::from_static(b"GET only\n"),
        ),
        (_, None) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"not found\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// Answers GET requests for `routes` on a gRPC server's port; every other
/// request goes on to gRPC. Add it with `Server::builder().layer(..)`.
#[derive(Clone)]
pub struct HttpRoutesLayer(Routes);

impl HttpRoutesLayer {
    /// A layer answering `routes`.
    pub fn new(routes: Routes) -> Self {
        Self(routes)
    }
}

impl std::fmt::Debug for HttpRoutesLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpRoutesLayer")
    }
}

impl<S> tower::Layer<S> for HttpRoutesLayer {
    type Service = HttpRoutes<S>;

    fn layer(&self, inner: S) -> HttpRoutes<S> {
        HttpRoutes {
            inner,
            routes: self.0.clone(),
        }
    }
}

/// The service [`HttpRoutesLayer`] makes.
#[derive(Clone)]
pub struct HttpRoutes<S> {
    inner: S,
    routes: Routes,
}

impl<S> std::fmt::Debug for HttpRoutes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpRoutes")
    }
}

impl<S, B> tower::Service<Request<B>> for HttpRoutes<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // gRPC is always POST: a GET for a known path is ours.
        if request.method() == Method::GET && (self.routes)(request.uri().path()).is_some() {
            let response = answer(&self.routes, request.method(), request.uri().path());
            return Either::Left(ready(Ok(response.map(tonic::body::Body::new))));
        }
        Either::Right(self.inner.call(request))
    }
}
