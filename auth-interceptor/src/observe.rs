//! The verifier's metrics, recorded through the `metrics` facade (a no-op
//! until the process installs a recorder, e.g. service-runtime's Prometheus
//! one). Handles are registered once per verifier, so the per-call path
//! only bumps atomics: no label allocation, no lookup. Without the
//! `metrics` feature every handle is a no-op that compiles away.

use std::time::Duration;

use crate::policy::DryRunOutcome;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::VerifierMetrics;
#[cfg(feature = "metrics")]
pub(crate) use recording::VerifierMetrics;

#[cfg(feature = "metrics")]
mod recording {
    use super::{DryRunOutcome, Duration};
    use crate::error::AuthError;
    use metrics::{Counter, Gauge, Histogram, SharedString, counter, gauge, histogram};

    /// Deny counters by reason.
    type DenyCounters = std::collections::HashMap<&'static str, Counter, ahash::RandomState>;

    /// Per-verifier metric handles, labelled `service` = the verifier's audience.
    #[derive(Debug)]
    pub(crate) struct VerifierMetrics {
        service: SharedString,
        cache_hits: Counter,
        cache_misses: Counter,
        verify_hit_seconds: Histogram,
        verify_miss_seconds: Histogram,
        allowed: Counter,
        denied: DenyCounters,
        key_refresh_failures: Counter,
        keys_loaded_at: Gauge,
        keys: Gauge,
        revocations_applied: Counter,
        revocations: Gauge,
    }

    impl VerifierMetrics {
        pub(crate) fn new(service: &str) -> Self {
            let service = SharedString::from(service.to_owned());
            let s = || service.clone();
            Self {
                cache_hits: counter!("authmesh_token_cache_total", "service" => s(), "result" => "hit"),
                cache_misses: counter!("authmesh_token_cache_total", "service" => s(), "result" => "miss"),
                verify_hit_seconds: histogram!("authmesh_verification_seconds", "service" => s(), "cache" => "hit"),
                verify_miss_seconds: histogram!("authmesh_verification_seconds", "service" => s(), "cache" => "miss"),
                allowed: counter!("authmesh_decisions_total", "service" => s(), "decision" => "allow", "reason" => "OK"),
                denied: AuthError::REASONS
                    .into_iter()
                    .map(|reason| (reason, counter!("authmesh_decisions_total", "service" => s(), "decision" => "deny", "reason" => reason)))
                    .collect(),
                key_refresh_failures: counter!("authmesh_key_refresh_failures_total", "service" => s()),
                keys_loaded_at: gauge!("authmesh_keys_loaded_timestamp_seconds", "service" => s()),
                keys: gauge!("authmesh_keys", "service" => s()),
                revocations_applied: counter!("authmesh_revocations_applied_total", "service" => s()),
                revocations: gauge!("authmesh_revocations", "service" => s()),
                service,
            }
        }

        /// Handles that record nothing.
        pub(crate) fn disabled() -> Self {
            Self {
                service: SharedString::const_str(""),
                cache_hits: Counter::noop(),
                cache_misses: Counter::noop(),
                verify_hit_seconds: Histogram::noop(),
                verify_miss_seconds: Histogram::noop(),
                allowed: Counter::noop(),
                denied: DenyCounters::default(),
                key_refresh_failures: Counter::noop(),
                keys_loaded_at: Gauge::noop(),
                keys: Gauge::noop(),
                revocations_applied: Counter::noop(),
                revocations: Gauge::noop(),
            }
        }

        /// One verification: from the cache or not, and how long it took.
        /// Whether these handles record anything (disabled ones have no service).
        pub(crate) fn is_recording(&self) -> bool {
            !self.service.is_empty()
        }

        pub(crate) fn verified(&self, cache_hit: bool, took: Duration) {
            if cache_hit {
                self.cache_hits.increment(1);
                self.verify_hit_seconds.record(took.as_secs_f64());
            } else {
                self.cache_misses.increment(1);
                self.verify_miss_seconds.record(took.as_secs_f64());
            }
        }

        /// A call let through.
        pub(crate) fn allowed(&self) {
            self.allowed.increment(1);
        }

        /// A call refused, by reason (a small fixed set, registered up front).
        pub(crate) fn denied(&self, reason: &'static str) {
            if let Some(counter) = self.denied.get(reason) {
                counter.increment(1);
            } else if !self.service.is_empty() {
                // A reason missing from AuthError::REASONS (a unit test
                // guards the list) is still counted, just looked up each time.
                counter!("authmesh_decisions_total", "service" => self.service.clone(), "decision" => "deny", "reason" => reason)
                    .increment(1);
            }
        }

        /// What a dry-run rule would have decided on a call. Labelled by
        /// rule, not by method: a wildcard rule would otherwise let callers
        /// mint label values with made-up method names.
        pub(crate) fn dry_run(&self, outcome: &DryRunOutcome) {
            // Only disabled handles have no service (an audience is never empty).
            if self.service.is_empty() {
                return;
            }
            counter!(
                "authmesh_policy_dry_run_total",
                "rule" => outcome.rule.to_string(),
                "outcome" => outcome.would.as_str()
            )
            .increment(1);
        }

        /// A key set was installed at `now` (Unix seconds).
        pub(crate) fn keys_installed(&self, count: usize, now: u64) {
            self.keys.set(count as f64);
            self.keys_loaded_at.set(now as f64);
        }

        /// A key fetch failed or its result was refused.
        pub(crate) fn key_refresh_failed(&self) {
            self.key_refresh_failures.increment(1);
        }

        /// `added` new revocations; `total` now held.
        pub(crate) fn revocations(&self, added: usize, total: usize) {
            self.revocations_applied.increment(added as u64);
            self.revocations.set(total as f64);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::{DryRunOutcome, Duration};

    /// Records nothing: the crate was built without `metrics`.
    #[derive(Debug)]
    pub(crate) struct VerifierMetrics;

    impl VerifierMetrics {
        pub(crate) fn new(_service: &str) -> Self {
            Self
        }
        pub(crate) fn disabled() -> Self {
            Self
        }
        pub(crate) fn is_recording(&self) -> bool {
            false
        }
        pub(crate) fn verified(&self, _cache_hit: bool, _took: Duration) {}
        pub(crate) fn allowed(&self) {}
        pub(crate) fn denied(&self, _reason: &'static str) {}
        pub(crate) fn dry_run(&self, _outcome: &DryRunOutcome) {}
        pub(crate) fn keys_installed(&self, _count: usize, _now: u64) {}
        pub(crate) fn key_refresh_failed(&self) {}
        pub(crate) fn revocations(&self, _added: usize, _total: usize) {}
    }
}
