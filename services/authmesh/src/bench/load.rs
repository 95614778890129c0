//! The load generator: real tonic clients over TLS, a fixed number of calls
//! in flight for a fixed time after a warm-up, latencies in an HDR
//! histogram, and the server's CPU time and memory read from `/proc`.

use std::{
    net::SocketAddr,
    sync::{Barrier, OnceLock},
    time::{Duration, Instant},
};

use authmesh_proto::{
    authmesh::v1::{IssueTokenRequest, token_service_client::TokenServiceClient},
    demo::inventory::v1::{GetStockRequest, inventory_client::InventoryClient},
};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::{Request, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{
    BenchError,
    fixture::{Fixture, Tokens},
    server::{Role, SKU},
};

/// Linux reports process CPU time in ticks of `USER_HZ`, 100 per second on
/// every architecture the kernel's user ABI supports.
const TICKS_PER_SECOND: f64 = 100.0;
/// How long a call may outlive the measurement before the bench gives up on it.
const CALL_GRACE: Duration = Duration::from_secs(5);

/// The call a scenario makes, over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `GetStock` without a token (the server has no auth layer).
    GetStockAnonymous,
    /// `GetStock` with the hot token, to a server without the auth layer:
    /// what carrying the token costs (HTTP/2 never indexes `authorization`,
    /// so every call sends and decodes it), apart from checking it.
    GetStockBearerOnly,
    /// `GetStock` with the same token every time.
    GetStockHot,
    /// `GetStock` with a newly signed token every time.
    GetStockCold,
    /// `grpc.health.v1.Health/Check`, the token service's no-op call.
    Health,
    /// `IssueToken` as the `orders` workload (mTLS).
    IssueToken,
}

impl CallKind {
    /// The scenario's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::GetStockAnonymous => "no-auth",
            CallKind::GetStockBearerOnly => "no-auth+bearer",
            CallKind::GetStockHot => "auth-hot",
            CallKind::GetStockCold => "auth-cold",
            CallKind::Health => "health",
            CallKind::IssueToken => "mint",
        }
    }

    /// The server these calls go to.
    pub fn role(self) -> Role {
        match self {
            CallKind::Health | CallKind::IssueToken => Role::TokenService,
            _ => Role::Inventory,
        }
    }

    /// Whether the server has the auth layer in front.
    pub fn needs_auth(self) -> bool {
        matches!(self, CallKind::GetStockHot | CallKind::GetStockCold)
    }
}

/// How hard and how long to drive a server.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Load before the measurement.
    pub warmup: Duration,
    /// The measurement.
    pub duration: Duration,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// One client thread on each; none: one unpinned thread.
    pub client_cores: Vec<usize>,
}

/// One measurement of one server.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Calls completed (successfully) in the measured window.
    pub calls: u64,
    /// Calls that failed in it.
    pub errors: u64,
    /// The first failure, when any.
    pub first_error: Option<String>,
    /// Calls per second.
    pub rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Server CPU time per call, microseconds (all its threads).
    pub server_cpu_us_per_call: f64,
    /// Server CPU time over wall time (1.0 = one core busy).
    pub server_cores_busy: f64,
    /// Server resident memory at the end, KiB.
    pub server_rss_kib: u64,
}

/// The round with the median throughput.
pub fn median(mut rounds: Vec<Measurement>) -> Option<Measurement> {
    rounds.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let middle = rounds.len() / 2;
    rounds.into_iter().nth(middle)
}

/// What a client task, a client thread or all of them saw.
struct ThreadResult {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl ThreadResult {
    fn new() -> Result<Self, BenchError> {
        Ok(Self {
            // Nanoseconds, 1 ns to 60 s, three significant digits.
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(|e| BenchError::Calls(e.to_string()))?,
            errors: 0,
            first_error: None,
        })
    }

    fn merge(&mut self, other: ThreadResult) -> Result<(), BenchError> {
        self.histogram
            .add(&other.histogram)
            .map_err(|e| BenchError::Calls(e.to_string()))?;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        Ok(())
    }
}

/// Drives the server at `addr` (process `pid`) with `kind` calls.
///
/// # Errors
/// [`BenchError`] when the client cannot be set up, or every call failed.
pub fn drive(
    fixture: &Fixture,
    addr: SocketAddr,
    pid: u32,
    kind: CallKind,
    settings: &LoadSettings,
) -> Result<Measurement, BenchError> {
    let url = format!("https://localhost:{}", addr.port());
    let thread_cores: Vec<Option<usize>> = if settings.client_cores.is_empty() {
        vec![None]
    } else {
        settings.client_cores.iter().copied().map(Some).collect()
    };
    let threads = thread_cores.len();
    // Every thread connects first; the clock starts when all have.
    let ready = Barrier::new(threads + 1);
    let epoch = OnceLock::new();
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = thread_cores
            .iter()
            .enumerate()
            .map(|(index, core)| {
                let connections = share(settings.connections, threads, index).max(1);
                let tasks = share(settings.concurrency, threads, index);
                let (ready, epoch, url) = (&ready, &epoch, url.as_str());
                scope.spawn(move || {
                    client_thread(
                        fixture,
                        url,
                        *core,
                        connections,
                        tasks,
                        kind,
                        settings,
                        ready,
                        epoch,
                    )
                })
            })
            .collect();
        let window = measure_window(pid, settings, &ready, &epoch);
        let results: Vec<Result<ThreadResult, BenchError>> = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| Err(BenchError::Calls("a client thread panicked".into())))
            })
            .collect();
        (window, results)
    });
    let (window, results) = results;
    let window = window?;
    let mut total = ThreadResult::new()?;
    for result in results {
        total.merge(result?)?;
    }
    let ThreadResult {
        histogram,
        errors,
        first_error,
    } = total;
    let calls = histogram.len();
    if calls == 0 {
        return Err(BenchError::Calls(
            first_error.unwrap_or_else(|| "no call completed".into()),
        ));
    }
    let seconds = settings.duration.as_secs_f64();
    let percentile = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
    Ok(Measurement {
        calls,
        errors,
        first_error,
        rps: calls as f64 / seconds,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        p999_us: percentile(0.999),
        server_cpu_us_per_call: window.cpu_seconds * 1e6 / calls as f64,
        server_cores_busy: window.cpu_seconds / seconds,
        server_rss_kib: window.rss_kib,
    })
}

/// The `index`th of `parts` shares of `total`, the remainder to the first ones.
fn share(total: usize, parts: usize, index: usize) -> usize {
    total / parts + usize::from(index < total % parts)
}

/// What the server used in the measured window.
struct Window {
    cpu_seconds: f64,
    rss_kib: u64,
}

/// Waits for the clients, starts the clock, and reads the server's CPU time
/// at the start and end of the measured window.
fn measure_window(
    pid: u32,
    settings: &LoadSettings,
    ready: &Barrier,
    epoch: &OnceLock<Instant>,
) -> Result<Window, BenchError> {
    let start = Instant::now() + Duration::from_millis(10);
    let _ = epoch.set(start);
    ready.wait();
    let measure_from = start + settings.warmup;
    let measure_to = measure_from + settings.duration;
    std::thread::sleep(measure_from.saturating_duration_since(Instant::now()));
    let before = cpu_ticks(pid)?;
    std::thread::sleep(measure_to.saturating_duration_since(Instant::now()));
    let after = cpu_ticks(pid)?;
    Ok(Window {
        cpu_seconds: after.saturating_sub(before) as f64 / TICKS_PER_SECOND,
        rss_kib: rss_kib(pid)?,
    })
}

#[allow(clippy::too_many_arguments)] // One thread's whole brief; a struct would only rename it.
fn client_thread(
    fixture: &Fixture,
    url: &str,
    core: Option<usize>,
    connections: usize,
    tasks: usize,
    kind: CallKind,
    settings: &LoadSettings,
    ready: &Barrier,
    epoch: &OnceLock<Instant>,
) -> Result<ThreadResult, BenchError> {
    if let Some(core) = core {
        super::pin_current_thread(&[core])?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tokens = fixture.tokens();
    runtime.block_on(async {
        let setup = fixture
            .client_tls(kind.role() == Role::TokenService)
            .and_then(|tls| {
                (0..connections)
                    .map(|_| tls.channel(url).map_err(BenchError::from))
                    .collect::<Result<Vec<Channel>, _>>()
            });
        let channels = match setup {
            Ok(channels) => channels,
            Err(err) => {
                ready.wait();
                return Err(err);
            }
        };
        // Connect (and handshake) before the clock starts.
        let mut connect_error = None;
        for channel in &channels {
            if let Err(status) = call(&tokens, &mut Client::new(kind, channel.clone()), kind).await
            {
                connect_error.get_or_insert(status);
            }
        }
        ready.wait();
        if let Some(status) = connect_error {
            return Err(BenchError::Calls(describe(&status)));
        }
        let start = *epoch
            .get()
            .ok_or_else(|| BenchError::Calls("no start time".into()))?;
        let measure_from = start + settings.warmup;
        let end = measure_from + settings.duration;
        let mut set = tokio::task::JoinSet::new();
        for task in 0..tasks {
            let mut client = Client::new(kind, channels[task % channels.len()].clone());
            let tokens = tokens.clone();
            let mut result = ThreadResult::new()?;
            set.spawn(async move {
                tokio::time::sleep_until(start.into()).await;
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    let outcome = call(&tokens, &mut client, kind).await;
                    if began < measure_from {
                        continue;
                    }
                    match outcome {
                        Ok(()) => result
                            .histogram
                            .saturating_record(began.elapsed().as_nanos() as u64),
                        Err(status) => {
                            result.errors += 1;
                            result.first_error.get_or_insert_with(|| describe(&status));
                        }
                    }
                }
                result
            });
        }
        let mut total = ThreadResult::new()?;
        let deadline = tokio::time::Instant::from_std(end + CALL_GRACE);
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(Ok(result))) => total.merge(result)?,
                Ok(Some(Err(_))) => return Err(BenchError::Calls("a client task failed".into())),
                Ok(None) => break,
                Err(_) => {
                    return Err(BenchError::Calls(
                        "calls still pending after the measurement".into(),
                    ));
                }
            }
        }
        Ok(total)
    })
}

/// A client of the service `kind` calls.
enum Client {
    Inventory(InventoryClient<Channel>),
    Health(HealthClient<Channel>),
    Tokens(TokenServiceClient<Channel>),
}

impl Client {
    fn new(kind: CallKind, channel: Channel) -> Self {
        match kind {
            CallKind::Health => Client::Health(HealthClient::new(channel)),
            CallKind::IssueToken => Client::Tokens(TokenServiceClient::new(channel)),
            _ => Client::Inventory(InventoryClient::new(channel)),
        }
    }
}

/// One call of `kind`; the answer is checked, not just awaited.
async fn call(tokens: &Tokens, client: &mut Client, kind: CallKind) -> Result<(), Status> {
    match client {
        Client::Inventory(client) => {
            let mut request = Request::new(GetStockRequest { sku: SKU.0.into() });
            let token = match kind {
                CallKind::GetStockHot | CallKind::GetStockBearerOnly => Some(tokens.hot().clone()),
                CallKind::GetStockCold => Some(
                    tokens
                        .fresh()
                        .map_err(|e| Status::internal(e.to_string()))?,
                ),
                _ => None,
            };
            if let Some(token) = token {
                request.metadata_mut().insert("authorization", token);
            }
            let answer = client.get_stock(request).await?.into_inner();
            if answer.available != SKU.1 {
                return Err(Status::data_loss("wrong stock level"));
            }
        }
        Client::Health(client) => {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await?;
        }
        Client::Tokens(client) => {
            let answer = client
                .issue_token(IssueTokenRequest {
                    audience: super::server::AUDIENCE.into(),
                    scopes: vec![inventory::SCOPE_READ.into()],
                    ttl_seconds: None,
                    one_time: false,
                })
                .await?
                .into_inner();
            if answer.token.is_empty() {
                return Err(Status::data_loss("empty token"));
            }
        }
    }
    Ok(())
}

/// A failure as the report shows it: code and message (never a token:
/// servers do not echo them).
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// User plus system CPU ticks of every thread of process `pid`.
fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15; `state` (field 3) comes first here.
    let field = |index: usize| -> Result<u64, BenchError> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| BenchError::Server(format!("unreadable /proc/{pid}/stat")))
    };
    Ok(field(11)? + field(12)?)
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Server(format!("no VmRSS in /proc/{pid}/status")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_shared_out_whole() {
        assert_eq!(
            (0..3).map(|i| share(32, 3, i)).collect::<Vec<_>>(),
            [11, 11, 10]
        );
        assert_eq!((0..4).map(|i| share(2, 4, i)).sum::<usize>(), 2);
    }

    #[test]
    fn this_process_reads_its_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_ok_and(|kib| kib > 0));
        assert!(cpu_ticks(pid).is_ok());
    }
}
