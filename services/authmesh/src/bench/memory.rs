//! The verifier in process, with no network in the way: its memory stays
//! within the cache's cap and flat across many calls, and its hot path
//! scales from one core to two (no lock every call contends on).

use std::time::Instant;

use auth_interceptor::{JwkSet, Verifier, VerifierConfig};
use serde::Serialize;

use super::{
    BenchError,
    fixture::Tokens,
    load::rss_kib,
    server::{AUDIENCE, ISSUER},
};

/// Distinct tokens kept hot during the long run: well within the cache.
const HOT_SET: usize = 1_000;

/// What the in-process part measured.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// The verifier's cache capacity (tokens).
    pub cache_capacity: usize,
    /// Distinct tokens verified to fill it: twice its capacity.
    pub distinct_tokens: usize,
    /// Tokens cached afterwards (at most the capacity).
    pub cached_tokens: usize,
    /// Verifications of the long run.
    pub calls: u64,
    /// Resident memory before any token, KiB.
    pub rss_before_kib: u64,
    /// After the fill, KiB.
    pub rss_after_fill_kib: u64,
    /// After the long run, KiB.
    pub rss_after_calls_kib: u64,
    /// Hot verifications per second on one core, 1,000 tokens in turn
    /// (each a hit in the shared cache).
    pub hot_per_second_one_core: f64,
    /// The same on two cores together (one thread each).
    pub hot_per_second_two_cores: f64,
    /// Hot verifications per second on one core, one caller's token again
    /// and again (a hit in the thread's own memo).
    pub one_caller_per_second_one_core: f64,
    /// The same on two cores together, each with its own caller's token.
    pub one_caller_per_second_two_cores: f64,
}

impl MemoryReport {
    /// Two cores' throughput over one core's, 1,000 tokens in turn: 2.0
    /// when nothing is shared.
    pub fn scaling(&self) -> f64 {
        self.hot_per_second_two_cores / self.hot_per_second_one_core
    }

    /// The same with one caller per core.
    pub fn one_caller_scaling(&self) -> f64 {
        self.one_caller_per_second_two_cores / self.one_caller_per_second_one_core
    }
}

/// Fills a verifier's cache past its capacity, then verifies `calls` times
/// from a hot set, reading the process's resident memory in between; then
/// times the hot path on one core and on two (`cores`' first two).
///
/// # Errors
/// [`BenchError::Tokens`] when a token is refused.
pub fn measure(calls: u64, cores: &[usize], tokens: &Tokens) -> Result<MemoryReport, BenchError> {
    let config = VerifierConfig::new(ISSUER, AUDIENCE);
    let capacity = config.cache_capacity;
    let verifier = Verifier::new(config)?;
    verifier.install_keys(&JwkSet {
        keys: vec![tokens.key().jwk().clone()],
    })?;
    let distinct = capacity * 2;
    let minted: Vec<String> = (0..distinct)
        .map(|_| tokens.fresh_jwt())
        .collect::<Result<_, _>>()?;
    let pid = std::process::id();
    let rss_before_kib = rss_kib(pid)?;
    for token in &minted {
        verifier.verify(token)?;
    }
    let rss_after_fill_kib = rss_kib(pid)?;
    let hot = &minted[distinct - HOT_SET..];
    for token in hot {
        verifier.verify(token)?;
    }
    let one_core = hot_run(&verifier, hot, calls)?;
    let rss_after_calls_kib = rss_kib(pid)?;
    let two_cores = two_core_run(&verifier, cores, calls, |_| hot)?;
    // One caller per core: each thread verifies its own token again and again.
    let callers: Vec<String> = (0..2)
        .map(|_| tokens.fresh_jwt())
        .collect::<Result<_, _>>()?;
    let one_caller_one_core = hot_run(&verifier, &callers[..1], calls)?;
    let one_caller_two_cores =
        two_core_run(&verifier, cores, calls, |thread| &callers[thread..=thread])?;
    Ok(MemoryReport {
        cache_capacity: capacity,
        distinct_tokens: distinct,
        cached_tokens: verifier.cached_tokens(),
        calls,
        rss_before_kib,
        rss_after_fill_kib,
        rss_after_calls_kib,
        hot_per_second_one_core: one_core,
        hot_per_second_two_cores: two_cores,
        one_caller_per_second_one_core: one_caller_one_core,
        one_caller_per_second_two_cores: one_caller_two_cores,
    })
}

/// `calls` verifications split over two threads pinned to `cores`' first
/// two, thread `i` cycling through `tokens(i)`; calls per second (NaN with
/// fewer than two cores).
fn two_core_run<'t>(
    verifier: &Verifier,
    cores: &[usize],
    calls: u64,
    tokens: impl Fn(usize) -> &'t [String] + Sync,
) -> Result<f64, BenchError> {
    let [first, second, ..] = cores else {
        return Ok(f64::NAN);
    };
    let half = calls / 2;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let runs: Vec<_> = [*first, *second]
            .into_iter()
            .enumerate()
            .map(|(thread, core)| {
                let tokens = &tokens;
                scope.spawn(move || {
                    super::pin_current_thread(&[core])?;
                    hot_run(verifier, tokens(thread), half)
                })
            })
            .collect();
        runs.into_iter().try_for_each(|run| {
            run.join().unwrap_or_else(|_| {
                Err(BenchError::Tokens("a verifying thread panicked".into()))
            })?;
            Ok::<_, BenchError>(())
        })
    })?;
    Ok((2 * half) as f64 / started.elapsed().as_secs_f64())
}

/// `calls` verifications cycling through `tokens` (all cached); calls per second.
fn hot_run(verifier: &Verifier, tokens: &[String], calls: u64) -> Result<f64, BenchError> {
    let started = Instant::now();
    for token in tokens.iter().cycle().take(calls as usize) {
        verifier.verify(token)?;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}
