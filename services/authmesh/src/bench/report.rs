//! The bench's report: a table of every measurement, the ratios the
//! performance targets are stated in, each target met or missed, and an
//! SVG chart of throughput and p99 for no auth, hot and cold.

use std::fmt::Write as _;

use serde::Serialize;

use super::{BenchArgs, load::Measurement, memory::MemoryReport};

/// Hot auth throughput over no-auth, at least.
const HOT_RATIO: f64 = 0.98;
/// Latency hot auth may add at p99, microseconds.
const HOT_ADDED_P99_US: f64 = 50.0;
/// Best runtime with auth over current-thread no-auth, at least.
const BEST_RUNTIME_RATIO: f64 = 0.9;
/// Minting over the token service's health check, at least.
const MINT_RATIO: f64 = 0.6;
/// Memory growth across the long run that still counts as flat, KiB.
const FLAT_RSS_KIB: u64 = 1024;

/// How the bench ran, and on what.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Seconds per measurement.
    pub duration: f64,
    /// Seconds of warm-up before each.
    pub warmup: f64,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Rounds; the median is reported.
    pub rounds: usize,
    /// Cores the servers were pinned to (empty: unpinned).
    pub server_cores: Vec<usize>,
    /// Cores the client was pinned to.
    pub client_cores: Vec<usize>,
    /// The machine's CPU model.
    pub cpu: String,
    /// This build's version.
    pub version: &'static str,
}

impl Settings {
    /// The settings of `args`, with the cores as split.
    pub fn of(args: &BenchArgs, server_cores: &[usize], client_cores: &[usize]) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .map(|model| model.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            duration: args.duration,
            warmup: args.warmup,
            concurrency: args.concurrency,
            connections: args.connections,
            rounds: args.rounds,
            server_cores: server_cores.to_vec(),
            client_cores: client_cores.to_vec(),
            cpu,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// One scenario's median round.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `no-auth`, `no-auth+bearer`, `auth-hot`, `auth-cold`, `health` or `mint`.
    pub name: &'static str,
    /// The server's runtime mode.
    pub runtime: &'static str,
    /// Its worker threads, for the multi-thread runtime.
    pub worker_threads: Option<usize>,
    /// Calls in flight: the configured load, or 1 for the latency part.
    pub in_flight: usize,
    /// The median round (none when no round ran).
    pub measurement: Option<Measurement>,
    /// The lowest and highest of every round, to read the median against.
    pub spread: Option<Spread>,
}

/// The lowest and highest values over a scenario's rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Calls per second.
    pub rps: (f64, f64),
    /// Server CPU time per call, microseconds.
    pub server_cpu_us_per_call: (f64, f64),
}

impl Spread {
    /// Over `rounds`; none when there are none.
    pub fn of(rounds: &[Measurement]) -> Option<Self> {
        let range = |value: fn(&Measurement) -> f64| {
            rounds.iter().map(value).fold(None, |range, v| match range {
                None => Some((v, v)),
                Some((low, high)) => Some((f64::min(low, v), f64::max(high, v))),
            })
        };
        Some(Self {
            rps: range(|m| m.rps)?,
            server_cpu_us_per_call: range(|m| m.server_cpu_us_per_call)?,
        })
    }
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ran.
    pub settings: Settings,
    /// Every load measurement.
    pub rows: Vec<Row>,
    /// The in-process part, when it ran.
    pub memory: Option<MemoryReport>,
}

/// A target and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured against what.
    pub target: String,
    /// The measured value, as a sentence fragment.
    pub measured: String,
    /// Whether the target was met.
    pub met: bool,
}

impl Report {
    /// A measurement under the configured load.
    fn find(&self, name: &str, runtime: &str) -> Option<&Measurement> {
        self.find_with(name, runtime, self.settings.concurrency)
    }

    fn find_with(&self, name: &str, runtime: &str, in_flight: usize) -> Option<&Measurement> {
        self.rows
            .iter()
            .find(|row| row.name == name && row.runtime == runtime && row.in_flight == in_flight)
            .and_then(|row| row.measurement.as_ref())
    }

    /// The targets this run can speak to, each met or missed.
    pub fn checks(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        for runtime in ["current_thread", "multi_thread", "thread_per_core"] {
            let (Some(plain), Some(hot)) = (
                self.find("no-auth", runtime),
                self.find("auth-hot", runtime),
            ) else {
                continue;
            };
            let ratio = hot.rps / plain.rps;
            checks.push(Check {
                target: format!("{runtime}: hot auth throughput >= {HOT_RATIO} x no-auth"),
                measured: format!(
                    "{ratio:.3} x (server CPU per call {:.1} us vs {:.1} us)",
                    hot.server_cpu_us_per_call, plain.server_cpu_us_per_call
                ),
                met: ratio >= HOT_RATIO,
            });
            let added = hot.p99_us - plain.p99_us;
            checks.push(Check {
                target: format!(
                    "{runtime}: hot auth adds <= {HOT_ADDED_P99_US} us at p99 under load ({} in flight)",
                    self.settings.concurrency
                ),
                measured: format!("{added:+.1} us ({:.1} vs {:.1})", hot.p99_us, plain.p99_us),
                met: added <= HOT_ADDED_P99_US,
            });
        }
        if let (Some(plain), Some(hot)) = (
            self.find_with("no-auth", "current_thread", 1),
            self.find_with("auth-hot", "current_thread", 1),
        ) {
            let added = hot.p99_us - plain.p99_us;
            checks.push(Check {
                target: format!(
                    "current_thread: hot auth adds <= {HOT_ADDED_P99_US} us at p99 per call (1 in flight)"
                ),
                measured: format!("{added:+.1} us ({:.1} vs {:.1})", hot.p99_us, plain.p99_us),
                met: added <= HOT_ADDED_P99_US,
            });
        }
        if let Some(plain) = self.find("no-auth", "current_thread") {
            let best = self
                .rows
                .iter()
                .filter(|row| row.name == "auth-hot")
                .filter_map(|row| row.measurement.as_ref().map(|m| (row.runtime, m.rps)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((runtime, rps)) = best {
                let ratio = rps / plain.rps;
                checks.push(Check {
                    target: format!(
                        "best runtime with auth >= {BEST_RUNTIME_RATIO} x current-thread no-auth"
                    ),
                    measured: format!("{ratio:.3} x ({runtime})"),
                    met: ratio >= BEST_RUNTIME_RATIO,
                });
            }
        }
        if let (Some(health), Some(mint)) = (
            self.find("health", "current_thread"),
            self.find("mint", "current_thread"),
        ) {
            let ratio = mint.rps / health.rps;
            checks.push(Check {
                target: format!("minting >= {MINT_RATIO} x the token service's no-op call"),
                measured: format!("{ratio:.3} x"),
                met: ratio >= MINT_RATIO,
            });
        }
        if let Some(memory) = &self.memory {
            let growth = memory
                .rss_after_calls_kib
                .saturating_sub(memory.rss_after_fill_kib);
            checks.push(Check {
                target: format!(
                    "verifier memory bounded by the cache ({} tokens) and flat across {} calls",
                    memory.cache_capacity, memory.calls
                ),
                measured: format!(
                    "{} cached after {} distinct; RSS {} -> {} -> {} KiB ({growth} KiB over the run)",
                    memory.cached_tokens,
                    memory.distinct_tokens,
                    memory.rss_before_kib,
                    memory.rss_after_fill_kib,
                    memory.rss_after_calls_kib
                ),
                met: memory.cached_tokens <= memory.cache_capacity && growth <= FLAT_RSS_KIB,
            });
        }
        checks
    }

    /// The report as text: a table, then the targets.
    pub fn render(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "authmesh bench {} on {} | {} s after {} s warm-up, {} in flight on {} connections, median of {} rounds | server cores {:?}, client cores {:?}\n\n",
            s.version,
            s.cpu,
            s.duration,
            s.warmup,
            s.concurrency,
            s.connections,
            s.rounds,
            s.server_cores,
            s.client_cores
        );
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11} {:>6} {:>9} {:>7}",
            "scenario",
            "runtime",
            "flight",
            "rps",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "cpu us/call",
            "busy",
            "rss KiB",
            "errors"
        );
        for row in &self.rows {
            let runtime = match row.worker_threads {
                Some(threads) => format!("{} ({threads})", row.runtime),
                None => row.runtime.to_owned(),
            };
            match &row.measurement {
                Some(m) => {
                    let _ = writeln!(
                        out,
                        "{:<10} {:<18} {:>6} {:>9.0} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>6.2} {:>9} {:>7}",
                        row.name,
                        runtime,
                        row.in_flight,
                        m.rps,
                        m.p50_us,
                        m.p99_us,
                        m.p999_us,
                        m.server_cpu_us_per_call,
                        m.server_cores_busy,
                        m.server_rss_kib,
                        m.errors
                    );
                    if let Some(error) = &m.first_error {
                        let _ = writeln!(out, "    first error: {error}");
                    }
                }
                None => {
                    let _ = writeln!(out, "{:<10} {runtime:<18} (no measurement)", row.name);
                }
            }
        }
        if self.settings.rounds > 1 {
            let _ = writeln!(
                out,
                "\nspread over the {} rounds (lowest-highest):",
                self.settings.rounds
            );
            for row in &self.rows {
                if let Some(spread) = &row.spread {
                    let _ = writeln!(
                        out,
                        "{:<14} {:<18} {:>3}: rps {:.0}-{:.0}, cpu us/call {:.1}-{:.1}",
                        row.name,
                        row.runtime,
                        row.in_flight,
                        spread.rps.0,
                        spread.rps.1,
                        spread.server_cpu_us_per_call.0,
                        spread.server_cpu_us_per_call.1
                    );
                }
            }
        }
        if let (Some(plain), Some(cold)) = (
            self.find("no-auth", "current_thread"),
            self.find("auth-cold", "current_thread"),
        ) {
            let _ = writeln!(
                out,
                "\ncold (a new token every call): {:.3} x no-auth throughput, +{:.1} us server CPU per call",
                cold.rps / plain.rps,
                cold.server_cpu_us_per_call - plain.server_cpu_us_per_call
            );
        }
        if let (Some(plain), Some(carried), Some(hot)) = (
            self.find("no-auth", "current_thread"),
            self.find("no-auth+bearer", "current_thread"),
            self.find("auth-hot", "current_thread"),
        ) {
            let _ = writeln!(
                out,
                "\nhot auth's server CPU per call on current_thread: +{:.1} us carrying the token (no layer), +{:.1} us checking it (the layer)",
                carried.server_cpu_us_per_call - plain.server_cpu_us_per_call,
                hot.server_cpu_us_per_call - carried.server_cpu_us_per_call
            );
        }
        if let Some(memory) = &self.memory {
            let _ = writeln!(
                out,
                "\nverifier in process: hot verify, 1000 tokens in turn, {:.0}/s on one core, {:.0}/s on two ({:.2} x); one caller per core {:.0}/s on one, {:.0}/s on two ({:.2} x)",
                memory.hot_per_second_one_core,
                memory.hot_per_second_two_cores,
                memory.scaling(),
                memory.one_caller_per_second_one_core,
                memory.one_caller_per_second_two_cores,
                memory.one_caller_scaling()
            );
        }
        let _ = writeln!(out, "\ntargets:");
        for check in self.checks() {
            let verdict = if check.met { "met   " } else { "MISSED" };
            let _ = writeln!(out, "  [{verdict}] {}: {}", check.target, check.measured);
        }
        out
    }
}

/// Colours of the chart's series: no auth, hot, cold.
const SERIES: [(&str, &str); 3] = [
    ("no-auth", "#7f8c8d"),
    ("auth-hot", "#2e86de"),
    ("auth-cold", "#e67e22"),
];

/// An SVG bar chart: throughput and p99 of no auth, hot and cold on each
/// runtime. Hand-drawn: two panels of bars need no plotting library.
pub fn chart(report: &Report) -> String {
    let runtimes: Vec<&str> = ["current_thread", "multi_thread", "thread_per_core"]
        .into_iter()
        .filter(|runtime| {
            report
                .rows
                .iter()
                .any(|row| row.runtime == *runtime && row.name == "no-auth")
        })
        .collect();
    let (width, panel_height, top) = (760.0, 260.0, 60.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">authmesh bench: inventory GetStock over TLS, server pinned to cores {:?}</text>
"#,
        top + 2.0 * panel_height + 40.0,
        width / 2.0,
        report.settings.server_cores,
    );
    for (y, (label, metric)) in [
        (
            "calls per second",
            (|m: &Measurement| m.rps) as fn(&Measurement) -> f64,
        ),
        ("p99 latency (us)", |m: &Measurement| m.p99_us),
    ]
    .into_iter()
    .enumerate()
    .map(|(index, panel)| (top + index as f64 * panel_height, panel))
    {
        let values: Vec<Option<f64>> = runtimes
            .iter()
            .flat_map(|runtime| {
                SERIES
                    .iter()
                    .map(move |(name, _)| report.find(name, runtime).map(metric))
            })
            .collect();
        let max = values
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max)
            .max(1.0);
        let (left, plot_width, plot_height) = (70.0, width - 90.0, panel_height - 70.0);
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="{}" font-size="13">{label}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            y + 10.0,
            y + 20.0 + plot_height,
            left + plot_width,
            y + 20.0 + plot_height
        );
        let group_width = plot_width / runtimes.len().max(1) as f64;
        let bar_width = group_width / 4.0;
        for (group, runtime) in runtimes.iter().enumerate() {
            let group_x = left + group as f64 * group_width;
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">{runtime}</text>"#,
                group_x + group_width / 2.0,
                y + plot_height + 36.0
            );
            for (series, (name, colour)) in SERIES.iter().enumerate() {
                let Some(value) = report.find(name, runtime).map(metric) else {
                    continue;
                };
                // Headroom above the tallest bar for its label.
                let height = value / max * plot_height * 0.88;
                let x = group_x + bar_width * (0.5 + series as f64);
                let bar_top = y + 20.0 + plot_height - height;
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{bar_top:.1}" width="{:.1}" height="{height:.1}" fill="{colour}"><title>{name} {runtime}: {value:.1}</title></rect>
<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{value:.0}</text>"#,
                    bar_width * 0.9,
                    x + bar_width * 0.45,
                    bar_top - 3.0
                );
            }
        }
    }
    for (index, (name, colour)) in SERIES.iter().enumerate() {
        let x = 90.0 + index as f64 * 130.0;
        let y = top + 2.0 * panel_height + 10.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{name}</text>"#,
            x + 18.0,
            y + 11.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rps: f64, p99_us: f64) -> Option<Measurement> {
        Some(Measurement {
            calls: 1000,
            errors: 0,
            first_error: None,
            rps,
            p50_us: p99_us / 2.0,
            p99_us,
            p999_us: p99_us * 2.0,
            server_cpu_us_per_call: 1e6 / rps,
            server_cores_busy: 1.0,
            server_rss_kib: 10_000,
        })
    }

    fn report(rows: &[(&'static str, &'static str, f64, f64)]) -> Report {
        Report {
            settings: Settings {
                duration: 1.0,
                warmup: 0.0,
                concurrency: 1,
                connections: 1,
                rounds: 1,
                server_cores: vec![0],
                client_cores: vec![1],
                cpu: "test".into(),
                version: "0",
            },
            rows: rows
                .iter()
                .map(|&(name, runtime, rps, p99)| Row {
                    name,
                    runtime,
                    worker_threads: None,
                    in_flight: 1,
                    measurement: measured(rps, p99),
                    spread: None,
                })
                .collect(),
            memory: None,
        }
    }

    fn verdicts(report: &Report) -> Vec<(String, bool)> {
        report
            .checks()
            .into_iter()
            .map(|check| (check.target, check.met))
            .collect()
    }

    #[test]
    fn spread_is_the_lowest_and_highest_round() {
        let rounds: Vec<Measurement> = [2000.0, 1000.0, 4000.0]
            .into_iter()
            .filter_map(|rps| measured(rps, 100.0))
            .collect();
        let spread = Spread::of(&rounds).expect("rounds");
        assert_eq!(spread.rps, (1000.0, 4000.0));
        assert_eq!(spread.server_cpu_us_per_call, (250.0, 1000.0));
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn targets_are_judged_from_the_ratios() {
        let report = report(&[
            ("no-auth", "current_thread", 1000.0, 100.0),
            ("auth-hot", "current_thread", 990.0, 140.0),
            ("no-auth", "thread_per_core", 1000.0, 100.0),
            ("auth-hot", "thread_per_core", 900.0, 200.0),
            ("health", "current_thread", 1000.0, 100.0),
            ("mint", "current_thread", 500.0, 300.0),
        ]);
        let verdicts = verdicts(&report);
        let met = |prefix: &str| {
            verdicts
                .iter()
                .find(|(target, _)| target.starts_with(prefix))
                .map(|(_, met)| *met)
        };
        assert_eq!(met("current_thread: hot auth throughput"), Some(true));
        assert_eq!(met("current_thread: hot auth adds"), Some(true));
        assert_eq!(
            met("current_thread: hot auth adds <= 50 us at p99 per call"),
            Some(true)
        );
        assert_eq!(met("thread_per_core: hot auth throughput"), Some(false));
        assert_eq!(met("thread_per_core: hot auth adds"), Some(false));
        // The best runtime with auth is current_thread at 0.99.
        assert_eq!(met("best runtime"), Some(true));
        assert_eq!(met("minting"), Some(false));
        // multi_thread was not measured: no verdict either way.
        assert_eq!(met("multi_thread"), None);
    }

    #[test]
    fn the_chart_draws_a_bar_per_measured_series() {
        let report = report(&[
            ("no-auth", "current_thread", 1000.0, 100.0),
            ("auth-hot", "current_thread", 990.0, 140.0),
            ("auth-cold", "current_thread", 200.0, 900.0),
        ]);
        let svg = chart(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three series in two panels, plus the three legend swatches.
        assert_eq!(svg.matches("<rect x=").count(), 3 * 2 + 3);
        assert!(svg.contains("auth-cold current_thread: 900.0"));
    }
}
