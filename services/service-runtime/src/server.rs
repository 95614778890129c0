//! What every AuthMesh server offers besides its own API: HTTP/2 limits,
//! TLS, `grpc.health.v1.Health`, reflection (v1 and v1alpha, since grpcurl
//! 1.8 speaks only v1alpha) and graceful shutdown.

use std::{any::Any, convert::Infallible, future::Future, sync::Arc};

use auth_interceptor::{AuthLayer, MethodKinds, SharedPolicy};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    body::Body,
    server::NamedService,
    transport::{Server, server::Router},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_reflection::server::{Builder, v1, v1alpha};
use tower::layer::util::{Identity, Stack};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    error::RuntimeError,
    policy::{PolicySource, check_coverage, watch_policy_file},
    runtime::RuntimeConfig,
    task::BackgroundTask,
    tls::{Transport, tls_incoming},
    verification::Verification,
};

/// Largest HTTP/2 header list a client may send. Above the 8 KiB token cap
/// on purpose: an oversized token still reaches the auth layer and gets a
/// clear UNAUTHENTICATED (`TOKEN_TOO_LARGE`) without being decoded, while
/// header floods beyond this are refused by HTTP/2 itself.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The answer to a call that panicked, given the panic's payload.
pub type PanicResponse = fn(Box<dyn Any + Send + 'static>) -> http::Response<Body>;

/// Turns a panic anywhere in a call (auth layer or handler) into INTERNAL.
pub type CatchPanic = CatchPanicLayer<PanicResponse>;

/// A server builder with AuthMesh's limits, outermost of all layers a
/// panic catcher: a call that panics gets INTERNAL and the connection and
/// server go on. TLS is not set here: it is done by [`serve_router`] with
/// certificates reloaded from disk.
pub fn server_builder() -> Server<Stack<CatchPanic, Identity>> {
    Server::builder()
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .tcp_nodelay(true)
        .layer(CatchPanicLayer::custom(panic_to_internal as PanicResponse))
}

/// The answer to a call that panicked. The panic's message is neither sent
/// nor logged here: it may quote request data, a token among them.
fn panic_to_internal(_panic: Box<dyn Any + Send + 'static>) -> http::Response<Body> {
    tracing::error!("a call panicked; answered INTERNAL");
    metrics::counter!("authmesh_panics_total").increment(1);
    tonic::Status::internal("internal error").into_http()
}

/// How long in-flight calls may take to finish once shutdown begins. A
/// stream (`WatchStock`, a health watch) can stay open for as long as its
/// token lives, so draining waits this long and then stops serving anyway.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` with `transport` until `shutdown`
/// resolves, then stops accepting and drains in-flight calls for at most
/// [`DRAIN_TIMEOUT`]. With `runtime` in `thread_per_core` mode the router is
/// served by that many current-thread runtimes, each on its own thread,
/// all accepting from `listener`; otherwise on the caller's runtime.
///
/// With `http1`, TLS also offers HTTP/1.1 in ALPN, for the plain HTTP
/// routes a router may carry ([`crate::http_endpoint::HttpRoutesLayer`];
/// the router must be built with `accept_http1(true)`).
///
/// # Errors
/// [`RuntimeError::Transport`] when serving fails, [`RuntimeError::Runtime`]
/// when the serving threads cannot be started.
pub async fn serve_router<L, ResBody>(
    router: Router<L>,
    listener: TcpListener,
    transport: &Transport,
    http1: bool,
    runtime: &RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError>
where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Error:
        Into<tonic::codegen::StdError> + Send,
    ResBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    let tls = match transport {
        Transport::Tls { config, .. } if http1 => {
            // HTTP/1.1 clients (JWKS fetchers) negotiate it; gRPC clients pick h2.
            let mut both = ServerConfig::clone(config);
            both.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(Arc::new(both))
        }
        Transport::Tls { config, .. } => Some(config.clone()),
        Transport::Plaintext => None,
    };
    let runtimes = runtime.serving_runtimes();
    if runtimes > 1 {
        return serve_per_core(router, listener, tls, runtimes, shutdown).await;
    }
    let (begun, began) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = begun.send(());
    };
    let drain_deadline = async move {
        match began.await {
            Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
            // The server stopped on its own.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serve_incoming(router, listener, tls, shutdown) => Ok(served?),
        () = drain_deadline => {
            warn_drain_timeout();
            Ok(())
        }
    }
}

fn warn_drain_timeout() {
    tracing::warn!(timeout = ?DRAIN_TIMEOUT, "calls still open after the drain timeout; stopped serving without them");
}

/// Accepts from `listener` (through TLS when `tls` is set) and serves
/// `router` until `shutdown` and the drain that follows are over.
async fn serve_incoming<L, ResBody>(
    router: Router<L>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Error:
        Into<tonic::codegen::StdError> + Send,
    ResBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    match tls {
        Some(config) => {
            router
                .serve_with_incoming_shutdown(tls_incoming(listener, config), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
        }
    }
}

/// Where the serving threads of `thread_per_core` are in their life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Serving,
    /// Stop accepting, finish the calls in flight.
    Draining,
    /// Stop now: the drain timed out, or a sibling thread failed.
    Abort,
}

/// `thread_per_core`: `runtimes` threads, each a current-thread runtime
/// serving its own clone of `router` on a clone of `listener`'s socket. The
/// kernel hands each new connection to one of them, which serves it to the end.
async fn serve_per_core<L, ResBody>(
    router: Router<L>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    runtimes: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError>
where
    L: tower::Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Error:
        Into<tonic::codegen::StdError> + Send,
    ResBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    let socket = listener.into_std().map_err(RuntimeError::Runtime)?;
    let stop = Arc::new(tokio::sync::watch::Sender::new(Stop::Serving));
    let mut finished = Vec::with_capacity(runtimes);
    let mut threads = Vec::with_capacity(runtimes);
    for index in 0..runtimes {
        let started = socket.try_clone().and_then(|socket| {
            let (router, tls, stop) = (router.clone(), tls.clone(), stop.clone());
            let (done, finished_rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name(format!("serve-core-{index}"))
                .spawn(move || {
                    let served = serve_on_own_thread(router, socket, tls, &stop);
                    if served.is_err() {
                        // One failed: stop the others, so the error surfaces.
                        stop.send_replace(Stop::Abort);
                    }
                    let _ = done.send(served);
                })
                .map(|thread| (thread, finished_rx))
        });
        match started {
            Ok((thread, finished_rx)) => {
                threads.push(thread);
                finished.push(finished_rx);
            }
            Err(err) => {
                stop.send_replace(Stop::Abort);
                return Err(RuntimeError::Runtime(err));
            }
        }
    }
    drop(socket);
    let all_finished = futures_util::future::join_all(finished);
    tokio::pin!(all_finished);
    let ended = tokio::select! {
        ended = &mut all_finished => ended,
        () = shutdown => {
            stop.send_replace(Stop::Draining);
            tokio::select! {
                ended = &mut all_finished => ended,
                () = tokio::time::sleep(DRAIN_TIMEOUT) => {
                    warn_drain_timeout();
                    stop.send_replace(Stop::Abort);
                    all_finished.await
                }
            }
        }
    };
    // A thread answers just before it ends: wait for the ends too, so a
    // stopped server has no serving thread left.
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    for result in ended {
        // A thread that vanished without an answer panicked; it was serving, so say so.
        result.unwrap_or_else(|_| {
            Err(RuntimeError::Runtime(std::io::Error::other(
                "a serving thread stopped unexpectedly",
            )))
        })?;
    }
    Ok(())
}

/// One serving thread of [`serve_per_core`]: its own runtime, until `stop`
/// says drain (finishing its calls) or abort.
fn serve_on_own_thread<L, ResBody>(
    router: Router<L>,
    socket: std::net::TcpListener,
    tls: Option<Arc<ServerConfig>>,
    stop: &tokio::sync::watch::Sender<Stop>,
) -> Result<(), RuntimeError>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<Body>>>::Error:
        Into<tonic::codegen::StdError> + Send,
    ResBody: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError::Runtime)?;
    let mut drain = stop.subscribe();
    let mut abort = stop.subscribe();
    runtime.block_on(async move {
        let listener = TcpListener::from_std(socket).map_err(RuntimeError::Runtime)?;
        let shutdown = async move {
            let _ = drain.wait_for(|stop| *stop != Stop::Serving).await;
        };
        tokio::select! {
            served = serve_incoming(router, listener, tls, shutdown) => Ok(served?),
            _ = abort.wait_for(|stop| *stop == Stop::Abort) => Ok(()),
        }
    })
}

fn reflection_builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(authmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // google.rpc.ErrorInfo, so grpcurl can print the reason of a denial.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// `grpc.reflection.v1` over every AuthMesh proto and the health service.
///
/// # Errors
/// [`RuntimeError::Reflection`] if the embedded descriptor sets are corrupt.
pub fn reflection_v1() -> Result<v1::ServerReflectionServer<impl v1::ServerReflection>, RuntimeError>
{
    Ok(reflection_builder().build_v1()?)
}

/// `grpc.reflection.v1alpha`, for grpcurl 1.8 and other older clients.
///
/// # Errors
/// [`RuntimeError::Reflection`] if the embedded descriptor sets are corrupt.
pub fn reflection_v1alpha()
-> Result<v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>, RuntimeError> {
    Ok(reflection_builder().build_v1alpha()?)
}

/// The health state of one server: NOT_SERVING until it is ready (for a
/// verifying service: until its first key set is loaded), SERVING while it
/// runs, NOT_SERVING again once shutdown begins so load balancers stop
/// sending before it drains.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    /// A reporter and the health service to add to the server.
    pub fn new() -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        (
            Self {
                reporter,
                services: Vec::new(),
            },
            service,
        )
    }

    /// Registers `S`, NOT_SERVING until [`Health::set_serving`].
    pub async fn register<S: NamedService>(&mut self) {
        self.reporter.set_not_serving::<S>().await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.services.push(S::NAME);
    }

    /// Marks every registered service, and the server as a whole, SERVING.
    pub async fn set_serving(&self) {
        self.set_all(ServingStatus::Serving).await;
    }

    /// Marks every registered service, and the server as a whole, NOT_SERVING
    /// (a replica that can no longer serve what it cannot know is current).
    pub async fn set_not_serving(&self) {
        self.set_all(ServingStatus::NotServing).await;
    }

    /// Marks everything SERVING once `ready` resolves, in the background.
    /// The task stops when the returned handle is dropped.
    pub fn serving_when(&self, ready: impl Future<Output = ()> + Send + 'static) -> BackgroundTask {
        let health = self.clone();
        BackgroundTask::spawn(async move {
            ready.await;
            health.set_serving().await;
        })
    }

    async fn set_all(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for name in &self.services {
            self.reporter.set_service_status(*name, status).await;
        }
    }

    /// A future that resolves when `shutdown` does, after marking every
    /// service NOT_SERVING; pass it to `serve_with_incoming_shutdown` so the
    /// server stops accepting and drains in-flight calls.
    pub async fn on_shutdown(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.set_all(ServingStatus::NotServing).await;
        tracing::info!("shutting down: health NOT_SERVING, draining in-flight calls");
    }
}

/// Serves `service` on `listener` behind the [`AuthLayer`], with health
/// (SERVING once the first key set and revocation list are loaded) and reflection, until
/// `shutdown` resolves; then reports NOT_SERVING and drains in-flight calls.
/// This is the whole server of a service that accepts AuthMesh tokens.
///
/// # Errors
/// [`RuntimeError`] when TLS, reflection or the transport fail.
pub async fn serve_authenticated<S>(
    listener: TcpListener,
    transport: &Transport,
    verification: Verification,
    policy: PolicySource,
    service: S,
    runtime: &RuntimeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    check_coverage(&policy.policy, S::NAME, policy.strict)?;
    let shared = SharedPolicy::new(policy.policy);
    let strict = policy.strict;
    let _policy_watch = policy.file.map(|file| {
        watch_policy_file(file, shared.clone(), move |policy| {
            check_coverage(policy, S::NAME, strict)
        })
    });
    let (mut health, health_service) = Health::new();
    health.register::<S>().await;
    let verifier = verification.verifier.clone();
    // Ready once keys and the full revocation list are in: serving before
    // the list arrived would let revoked tokens through.
    let _readiness = health.serving_when(async move {
        verifier.keys_loaded().await;
        verifier.revocations_synced().await;
    });
    tracing::info!(service = S::NAME, addr = ?listener.local_addr().ok(), "listening");
    let mut layer = AuthLayer::new(verification.verifier.clone(), shared).method_kinds(
        // Unary answers need no token-bound body; streams keep it.
        MethodKinds::from_file_descriptor_set(authmesh_proto::FILE_DESCRIPTOR_SET)?,
    );
    if let Some(ledger) = &verification.ledger {
        layer = layer.one_time_ledger(ledger.clone());
    }
    let router = server_builder()
        .layer(layer)
        .add_service(health_service)
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?)
        .add_service(service);
    serve_router(
        router,
        listener,
        transport,
        false,
        runtime,
        health.on_shutdown(shutdown),
    )
    .await
}
