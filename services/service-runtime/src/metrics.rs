//! Prometheus metrics: one recorder per process (the `metrics` facade the
//! libraries record into), rendered at `GET /metrics` on a plain HTTP port.
//! Every AuthMesh metric carries a `service` label, so one process running
//! the whole mesh (`authmesh up`) still tells its servers apart.

use std::{future::Future, sync::OnceLock};

use hyper::body::Bytes;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::{
    error::RuntimeError,
    http_endpoint::{Routes, serve_http},
    task::BackgroundTask,
};

/// Histogram buckets (seconds) for per-call latencies: a cache hit is
/// microseconds, a signature check tens of microseconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_002, 0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
    0.025, 0.1,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls reuse
/// it). `None` only when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS);
            match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => Some(handle),
                Err(err) => {
                    tracing::error!(error = %err, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics of this process in the Prometheus text format.
pub fn render() -> String {
    install()
        .map(|handle| {
            handle.run_upkeep();
            handle.render()
        })
        .unwrap_or_default()
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    install();
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics at http://<addr>/metrics");
    let routes: Routes = std::sync::Arc::new(|path: &str| {
        (path == "/metrics").then(|| {
            (
                "text/plain; version=0.0.4",
                Bytes::from(render().into_bytes()),
            )
        })
    });
    serve_http(TcpListenerStream::new(listener), routes, shutdown).await;
}

/// A running `/metrics` endpoint; it stops when dropped.
#[derive(Debug)]
pub struct MetricsEndpoint {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    _task: BackgroundTask,
}

/// Serves `/metrics` on `listen` (e.g. `0.0.0.0:9090`) in the background,
/// when an address is configured.
///
/// # Errors
/// [`RuntimeError::Io`] when the address cannot be bound.
pub async fn start(listen: Option<&str>) -> Result<Option<MetricsEndpoint>, RuntimeError> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    // Now, not in the task: handles registered before the recorder exists never record.
    install();
    let bind_error = |e| RuntimeError::io("binding the metrics port", listen, e);
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok(Some(MetricsEndpoint {
        addr,
        _task: BackgroundTask::spawn(serve_metrics(listener, std::future::pending())),
    }))
}
