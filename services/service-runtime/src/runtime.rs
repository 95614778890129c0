//! The `[runtime]` section every service shares: how its calls use the
//! machine's cores.
//!
//! - `multi_thread` (the default): one work-stealing tokio runtime with
//!   `worker_threads` workers (default: one per core). Best when calls do
//!   uneven work and the machine has cores to spare.
//! - `current_thread`: the whole service on one thread. No cross-thread
//!   wake-ups or work stealing, so on one core it serves the most calls; use
//!   it when the service is given one core (a container with `cpus: 1`).
//! - `thread_per_core`: `worker_threads` current-thread runtimes (default:
//!   one per core), each accepting connections from the same listener and
//!   serving them to the end on its own thread; background work (key refresh,
//!   revocation watch, policy reload, `/metrics`) stays on a separate
//!   control thread. Best for many connections of small calls on several cores.
//!
//! ```toml
//! [runtime]
//! mode = "thread_per_core"
//! worker_threads = 4
//! ```

use std::{future::Future, num::NonZeroUsize, process::ExitCode};

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// How a service schedules its work; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum RuntimeMode {
    /// One work-stealing runtime with `worker_threads` workers.
    #[default]
    MultiThread,
    /// Everything on one thread.
    CurrentThread,
    /// `worker_threads` single-threaded runtimes sharing the listener.
    ThreadPerCore,
}

impl RuntimeMode {
    /// The name a configuration (and a command line) uses for it.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeMode::MultiThread => "multi_thread",
            RuntimeMode::CurrentThread => "current_thread",
            RuntimeMode::ThreadPerCore => "thread_per_core",
        }
    }
}

/// The `[runtime]` section of a service's configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The runtime shape.
    #[serde(default)]
    pub mode: RuntimeMode,
    /// Workers (`multi_thread`) or serving runtimes (`thread_per_core`);
    /// ignored by `current_thread`. Default: the cores this process may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<NonZeroUsize>,
}

impl RuntimeConfig {
    /// The given shape with the default thread count.
    pub fn new(mode: RuntimeMode) -> Self {
        Self {
            mode,
            worker_threads: None,
        }
    }

    /// The same shape with `threads` workers or serving runtimes.
    pub fn with_threads(mut self, threads: NonZeroUsize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// Whether nothing was configured (so the section is left out when saved).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Workers or serving runtimes: the configured count, else the cores
    /// this process may run on (its CPU affinity and cgroup quota included).
    pub fn threads(&self) -> usize {
        self.worker_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// How many runtimes accept and serve connections: `threads()` for
    /// `thread_per_core`, else the one runtime the service runs on.
    pub fn serving_runtimes(&self) -> usize {
        match self.mode {
            RuntimeMode::ThreadPerCore => self.threads(),
            RuntimeMode::MultiThread | RuntimeMode::CurrentThread => 1,
        }
    }

    /// The runtime `main` runs the service on. For `thread_per_core` it is
    /// the control thread; the serving runtimes are started by
    /// [`crate::serve_router`].
    ///
    /// # Errors
    /// [`RuntimeError::Runtime`] when the OS refuses threads or timers.
    pub fn build(&self) -> Result<tokio::runtime::Runtime, RuntimeError> {
        let mut builder = match self.mode {
            RuntimeMode::MultiThread => {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(self.threads());
                builder
            }
            RuntimeMode::CurrentThread | RuntimeMode::ThreadPerCore => {
                tokio::runtime::Builder::new_current_thread()
            }
        };
        builder.enable_all().build().map_err(RuntimeError::Runtime)
    }

    /// Runs `service` (a binary's whole life) on the runtime this section
    /// describes and turns its end into the exit code.
    pub fn block_on<F>(&self, name: &str, service: F) -> ExitCode
    where
        F: Future<Output = Result<(), Box<dyn std::error::Error>>>,
    {
        let result = self
            .build()
            .map_err(Box::<dyn std::error::Error>::from)
            .and_then(|runtime| {
                tracing::info!(service = name, mode = ?self.mode, threads = self.threads(), "runtime");
                runtime.block_on(service)
            });
        crate::exit_code(name, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(default)]
        runtime: RuntimeConfig,
    }

    fn parse(text: &str) -> Result<RuntimeConfig, toml::de::Error> {
        toml::from_str::<Section>(text).map(|s| s.runtime)
    }

    #[test]
    fn the_section_is_optional_and_checked() {
        assert_eq!(parse("").expect("empty"), RuntimeConfig::default());
        let per_core =
            parse("[runtime]\nmode = \"thread_per_core\"\nworker_threads = 3").expect("per core");
        assert_eq!(per_core.mode, RuntimeMode::ThreadPerCore);
        assert_eq!(per_core.serving_runtimes(), 3);
        let one = parse("[runtime]\nmode = \"current_thread\"\nworker_threads = 8").expect("one");
        assert_eq!(one.serving_runtimes(), 1);
        assert!(parse("[runtime]\nworker_threads = 0").is_err());
        assert!(parse("[runtime]\nmode = \"fast\"").is_err());
        assert!(parse("[runtime]\nthreads = 2").is_err());
    }

    #[test]
    fn config_command_line_and_name_agree() {
        use clap::ValueEnum;
        for mode in RuntimeMode::value_variants() {
            let text = format!("[runtime]\nmode = \"{}\"", mode.name());
            assert_eq!(parse(&text).expect("config").mode, *mode);
            assert_eq!(RuntimeMode::from_str(mode.name(), false), Ok(*mode));
        }
    }

    #[test]
    fn every_shape_builds_a_runtime_that_runs() {
        for mode in [
            RuntimeMode::MultiThread,
            RuntimeMode::CurrentThread,
            RuntimeMode::ThreadPerCore,
        ] {
            let config = RuntimeConfig::new(mode).with_threads(NonZeroUsize::MIN);
            let runtime = config.build().expect("runtime");
            assert_eq!(runtime.block_on(async { 7 }), 7);
        }
    }
}
