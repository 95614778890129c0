//! `authmesh bench`: the load tool. In one run and one process tree on
//! 127.0.0.1 over TLS it measures the same inventory server without and
//! with the auth layer, on each runtime shape, with a reused token (hot)
//! and a fresh token per call (cold); the token service's IssueToken
//! against its own no-op health check; and, in process, the verifier's
//! memory across many calls and its hot path on one and two cores.
//!
//! Servers run as child processes pinned to their own cores, the client on
//! the others, so one does not steal the other's CPU and each side's CPU
//! time can be read from `/proc`. Every phase is bounded in time or count.

pub mod fixture;
pub mod load;
pub mod memory;
pub mod report;
pub mod server;

use std::{io, num::NonZeroUsize, path::PathBuf, time::Duration};

use service_runtime::{RuntimeError, RuntimeMode};

use self::{
    fixture::Fixture,
    load::{CallKind, LoadSettings, Measurement},
    report::{Report, Row},
    server::{ServerArgs, ServerProcess},
};

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Settings outside their bounds.
    #[error("{0}")]
    Usage(String),
    /// Files, processes or sockets.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A bench server did not start or failed.
    #[error("bench server: {0}")]
    Server(String),
    /// TLS, certificates or a runtime.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Keys, tokens or the verifier.
    #[error("tokens: {0}")]
    Tokens(String),
    /// The dev state of the minting bench.
    #[error(transparent)]
    State(#[from] crate::dev_state::StateError),
    /// The token service of the minting bench.
    #[error("token service: {0}")]
    TokenService(#[from] token_service::StartError),
    /// Calls failed during the measurement.
    #[error("calls failed: {0}")]
    Calls(String),
    /// A report file could not be written.
    #[error("report: {0}")]
    Report(#[from] serde_json::Error),
}

macro_rules! tokens_error {
    ($($error:ty),*) => {$(
        impl From<$error> for BenchError {
            fn from(err: $error) -> Self {
                BenchError::Tokens(err.to_string())
            }
        }
    )*};
}
tokens_error!(
    auth_interceptor::verifier::ConfigError,
    auth_interceptor::KeyError,
    auth_interceptor::AuthError,
    authmesh_signing::SigningError,
    jsonwebtoken::errors::Error
);

/// Which parts of the bench to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// No auth vs auth with a reused token, on each runtime shape.
    Runtimes,
    /// A fresh token on every call.
    Cold,
    /// IssueToken vs the token service's health check.
    Mint,
    /// No auth vs hot auth with one call in flight: the latency auth adds
    /// to a call, without queueing behind other calls.
    Latency,
    /// The verifier in process: memory over many calls, one vs two cores.
    Memory,
}

/// `authmesh bench`: measure the mesh's servers under load on 127.0.0.1.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds each measurement lasts (0.2 to 120).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds of load before each measurement, not counted (0 to 60).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Calls in flight at any time (1 to 1024).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// HTTP/2 connections the calls share (1 to 64).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Cores the server is pinned to (the client gets the rest); 0 or all
    /// cores: nothing is pinned.
    #[arg(long, default_value_t = 1)]
    pub server_cores: usize,
    /// Worker threads of the multi-thread server (as `[runtime] worker_threads`).
    #[arg(long, default_value_t = NonZeroUsize::MIN.saturating_add(1))]
    pub worker_threads: NonZeroUsize,
    /// Rounds of every measurement, interleaved; the median round is reported (1 to 10).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Parts to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub parts: Vec<Part>,
    /// Verifier calls of the memory part (1,000 to 10,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_calls: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also draw throughput and p99 of no auth, hot and cold as an SVG here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

impl BenchArgs {
    fn check(&self) -> Result<(), BenchError> {
        let out_of_bounds = |what: &str| Err(BenchError::Usage(format!("{what} out of bounds")));
        if !(0.2..=120.0).contains(&self.duration) {
            return out_of_bounds("--duration (0.2 to 120 s)");
        }
        if !(0.0..=60.0).contains(&self.warmup) {
            return out_of_bounds("--warmup (0 to 60 s)");
        }
        if !(1..=1024).contains(&self.concurrency) {
            return out_of_bounds("--concurrency (1 to 1024)");
        }
        if !(1..=64).contains(&self.connections) {
            return out_of_bounds("--connections (1 to 64)");
        }
        if self.worker_threads.get() > 64 {
            return out_of_bounds("--worker-threads (1 to 64)");
        }
        if !(1..=10).contains(&self.rounds) {
            return out_of_bounds("--rounds (1 to 10)");
        }
        if !(1_000..=10_000_000).contains(&self.memory_calls) {
            return out_of_bounds("--memory-calls (1,000 to 10,000,000)");
        }
        Ok(())
    }

    fn runs(&self, part: Part) -> bool {
        self.parts.is_empty() || self.parts.contains(&part)
    }
}

/// One server set-up measured under one kind of call (which names it and
/// says which server, with or without auth, answers it).
#[derive(Debug, Clone, Copy)]
struct Scenario {
    call: CallKind,
    mode: RuntimeMode,
    /// One call in flight on one connection, instead of the configured load.
    single: bool,
}

impl Scenario {
    fn loaded(call: CallKind, mode: RuntimeMode) -> Self {
        Self {
            call,
            mode,
            single: false,
        }
    }

    /// `[runtime] worker_threads` of its server: set for multi_thread only.
    fn worker_threads(self, args: &BenchArgs) -> Option<NonZeroUsize> {
        (self.mode == RuntimeMode::MultiThread).then_some(args.worker_threads)
    }
}

fn scenarios(args: &BenchArgs) -> Vec<Scenario> {
    use CallKind::{
        GetStockAnonymous, GetStockBearerOnly, GetStockCold, GetStockHot, Health, IssueToken,
    };
    use RuntimeMode::{CurrentThread, MultiThread, ThreadPerCore};
    let mut list = Vec::new();
    if args.runs(Part::Runtimes) {
        for mode in [CurrentThread, MultiThread, ThreadPerCore] {
            list.push(Scenario::loaded(GetStockAnonymous, mode));
            if mode == CurrentThread {
                // Splits hot auth's cost into carrying the token and checking it.
                list.push(Scenario::loaded(GetStockBearerOnly, mode));
            }
            list.push(Scenario::loaded(GetStockHot, mode));
        }
    } else if args.runs(Part::Cold) {
        // Cold is reported against no auth on the same runtime.
        list.push(Scenario::loaded(GetStockAnonymous, CurrentThread));
    }
    if args.runs(Part::Cold) {
        list.push(Scenario::loaded(GetStockCold, CurrentThread));
    }
    if args.runs(Part::Latency) {
        for call in [GetStockAnonymous, GetStockHot] {
            list.push(Scenario {
                call,
                mode: CurrentThread,
                single: true,
            });
        }
    }
    if args.runs(Part::Mint) {
        list.push(Scenario::loaded(Health, CurrentThread));
        list.push(Scenario::loaded(IssueToken, CurrentThread));
    }
    list
}

/// Runs the bench as `args` says and prints its report.
///
/// # Errors
/// [`BenchError`] when a setting is out of bounds or a measurement cannot run.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    args.check()?;
    let cores = available_cores()?;
    let (server_cores, client_cores) = split_cores(&cores, args.server_cores);
    let scenarios = scenarios(args);
    let per_measurement = args.warmup + args.duration;
    eprintln!(
        "authmesh bench: {} measurements x {} rounds, about {:.0} s; server cores {:?}, client cores {:?}",
        scenarios.len(),
        args.rounds,
        per_measurement * (scenarios.len() * args.rounds) as f64,
        server_cores,
        client_cores,
    );
    let fixture = Fixture::create(args.runs(Part::Mint))?;
    let settings = LoadSettings {
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        concurrency: args.concurrency,
        connections: args.connections,
        client_cores: client_cores.clone(),
    };
    let single = LoadSettings {
        concurrency: 1,
        connections: 1,
        ..settings.clone()
    };
    let mut rounds: Vec<Vec<Measurement>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=args.rounds {
        for (scenario, results) in scenarios.iter().zip(&mut rounds) {
            eprintln!(
                "round {round}/{}: {} on {}",
                args.rounds,
                scenario.call.name(),
                scenario.mode.name()
            );
            let server = ServerProcess::start(&ServerArgs {
                role: scenario.call.role(),
                dir: fixture.dir().to_path_buf(),
                auth: scenario.call.needs_auth(),
                mode: scenario.mode,
                threads: scenario.worker_threads(args),
                cores: server_cores.clone(),
            })?;
            let load = if scenario.single { &single } else { &settings };
            let measured = load::drive(&fixture, server.addr, server.pid(), scenario.call, load);
            server.stop()?;
            results.push(measured?);
        }
    }
    let rows = scenarios
        .iter()
        .zip(rounds)
        .map(|(scenario, results)| Row {
            name: scenario.call.name(),
            runtime: scenario.mode.name(),
            worker_threads: scenario.worker_threads(args).map(NonZeroUsize::get),
            in_flight: if scenario.single { 1 } else { args.concurrency },
            spread: report::Spread::of(&results),
            measurement: load::median(results),
        })
        .collect();
    let memory = if args.runs(Part::Memory) {
        eprintln!("verifier in process: {} calls", args.memory_calls);
        Some(memory::measure(
            args.memory_calls,
            &cores,
            &fixture.tokens(),
        )?)
    } else {
        None
    };
    let report = Report {
        settings: report::Settings::of(args, &server_cores, &client_cores),
        rows,
        memory,
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, report::chart(&report))?;
    }
    Ok(())
}

/// The cores this process may run on.
fn available_cores() -> Result<Vec<usize>, BenchError> {
    let cores = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map_err(|e| BenchError::Io(e.into()))?;
    let cores: Vec<usize> = (0..nix::sched::CpuSet::count())
        .filter(|&core| cores.is_set(core).unwrap_or(false))
        .collect();
    if cores.is_empty() {
        return Err(BenchError::Usage("no usable cores".into()));
    }
    Ok(cores)
}

/// The first `server` cores for the server, the rest for the client; with
/// too few cores to split, neither side is pinned.
fn split_cores(cores: &[usize], server: usize) -> (Vec<usize>, Vec<usize>) {
    if server == 0 || server >= cores.len() {
        return (Vec::new(), Vec::new());
    }
    let (server_side, client_side) = cores.split_at(server);
    (server_side.to_vec(), client_side.to_vec())
}

/// Pins the calling thread (and every thread it starts afterwards) to `cores`.
///
/// # Errors
/// [`BenchError::Io`] when the kernel refuses.
pub fn pin_current_thread(cores: &[usize]) -> Result<(), BenchError> {
    let mut set = nix::sched::CpuSet::new();
    for &core in cores {
        set.set(core).map_err(|e| BenchError::Io(e.into()))?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| BenchError::Io(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gets_the_first_cores_and_the_client_the_rest() {
        assert_eq!(split_cores(&[0, 1], 1), (vec![0], vec![1]));
        assert_eq!(split_cores(&[2, 3, 5, 7], 2), (vec![2, 3], vec![5, 7]));
        // Nothing to split: nobody is pinned.
        assert_eq!(split_cores(&[0], 1), (vec![], vec![]));
        assert_eq!(split_cores(&[0, 1], 0), (vec![], vec![]));
    }

    #[test]
    fn settings_out_of_bounds_are_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
                .map(|cli| cli.bench)
        };
        assert!(parse(&[]).is_ok_and(|args| args.check().is_ok()));
        for bad in [
            &["--duration", "0"][..],
            &["--duration", "1000"],
            &["--warmup", "-1"],
            &["--concurrency", "0"],
            &["--connections", "65"],
            &["--rounds", "11"],
            &["--memory-calls", "10"],
        ] {
            let refused = parse(bad).map_or(true, |args| args.check().is_err());
            assert!(refused, "{bad:?} accepted");
        }
    }

    #[test]
    fn the_default_run_measures_every_part() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = Cli::parse_from(["bench"]).bench;
        let names: Vec<(&str, &str)> = scenarios(&args)
            .iter()
            .map(|s| (s.call.name(), s.mode.name()))
            .collect();
        for expected in [
            ("no-auth", "current_thread"),
            ("auth-hot", "current_thread"),
            ("no-auth", "multi_thread"),
            ("auth-hot", "multi_thread"),
            ("no-auth", "thread_per_core"),
            ("auth-hot", "thread_per_core"),
            ("auth-cold", "current_thread"),
            ("health", "current_thread"),
            ("mint", "current_thread"),
        ] {
            assert!(names.contains(&expected), "{expected:?} missing");
        }
        let single: Vec<&str> = scenarios(&args)
            .iter()
            .filter(|s| s.single)
            .map(|s| s.call.name())
            .collect();
        assert_eq!(single, ["no-auth", "auth-hot"]);
    }
}
