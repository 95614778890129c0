//! Server plumbing every AuthMesh service shares: configuration files with
//! `AUTHMESH_*` overrides, TLS on listeners and channels, the dev PKI,
//! health and reflection, graceful shutdown and tracing setup.
//!
//! Each service is a library with a `run(listener, config, shutdown)`
//! function built from these pieces; its `main` only parses the command line.

pub mod binary;
pub mod config;
pub mod error;
pub mod file_watch;
pub mod files;
pub mod http_endpoint;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod task;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod verification;

pub use binary::{ServiceArgs, exit_code};
pub use config::{
    AuthConfig, Loaded, TrustedIssuerConfig, TrustedKeys, UpstreamConfig, load_config,
};
pub use error::{ConfigProblem, RuntimeError, TlsError};
pub use policy::{
    PolicyFile, PolicySource, check_coverage, load_policy, service_methods, watch_policy_file,
};
pub use runtime::{RuntimeConfig, RuntimeMode};
pub use server::{
    Health, reflection_v1, reflection_v1alpha, serve_authenticated, serve_router, server_builder,
};
pub use task::BackgroundTask;
pub use tls::{ClientAuth, ReloadingIdentity, ServerTlsFiles, Transport, install_crypto_provider};
pub use upstream::{ClientTls, upstream_channel, upstream_tls};
pub use verification::{Verification, client_secret, spawn_trusted_keys};
