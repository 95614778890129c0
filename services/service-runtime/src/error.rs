//! Errors of the shared server plumbing.

use std::path::PathBuf;

/// What failed while setting a service up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A configuration file or override is invalid.
    #[error("invalid configuration {origin}: {detail}")]
    Config {
        /// The file or variable it came from.
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// TLS material is missing or unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// Certificate generation failed.
    #[error("pki: {0}")]
    Pki(#[from] rcgen::Error),
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Token verification settings are out of range.
    #[error("verifier: {0}")]
    Verifier(#[from] auth_interceptor::verifier::ConfigError),
    /// The crypto known-answer self-test failed at start.
    #[error(transparent)]
    SelfTest(#[from] auth_interceptor::SelfTestError),
    /// A key source could not be set up.
    #[error("key source: {0}")]
    KeySource(#[from] auth_interceptor::KeySourceError),
    /// A client secret is missing or unreadable.
    #[error("client secret: {0}")]
    Secret(String),
    /// The runtime or a serving thread could not be started.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// Server reflection could not be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

impl RuntimeError {
    /// An I/O failure while `action`ing `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
