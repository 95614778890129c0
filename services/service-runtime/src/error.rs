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
    #[error("invalid configuration {origin}: {problem}")]
    Config {
        /// The file or variable it came from.
        origin: String,
        /// What is wrong.
        #[source]
        problem: ConfigProblem,
    },
    /// TLS material is missing or unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
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
    /// A client secret file is empty.
    #[error("client secret: {} is empty", file.display())]
    SecretEmpty {
        /// The file.
        file: PathBuf,
    },
    /// The runtime or a serving thread could not be started.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// An embedded descriptor set does not decode.
    #[error("descriptor set: {0}")]
    Descriptors(#[from] prost::DecodeError),
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

/// What is wrong with a configuration file, an override or a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// Not TOML, an unknown key or a bad value.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// An `AUTHMESH_*` override names a key under something that is not a table.
    #[error("`{0}` is not a table")]
    NotATable(String),
    /// An `AUTHMESH_*` variable with nothing after the prefix.
    #[error("empty key")]
    EmptyKey,
    /// A policy file that does not parse or is inconsistent.
    #[error(transparent)]
    Policy(#[from] auth_interceptor::PolicyError),
    /// Strict policy, and some methods no rule covers.
    #[error("strict policy: no rule covers {} (add rules, or set auth.strict_policy = false)", methods.join(", "))]
    Uncovered {
        /// The uncovered methods, as exact paths.
        methods: Vec<String>,
    },
    /// The dev CA's key file is not a key it can sign with. rcgen's own
    /// error is left out: it would print the file's bytes.
    #[error("not a PEM private key the dev CA can sign with (PKCS#8, ECDSA P-256)")]
    CaKey,
    /// A workload name or trust domain outside the allowed characters.
    #[error("name and trust domain: 1-63 of [a-z0-9._-], not starting with '.'")]
    WorkloadName,
}

/// What is wrong with TLS material or an upstream's TLS settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{what} {}: {source}", path.display())]
    Pem {
        /// What was being read ("certificates", "key", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file with no certificate in it.
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    /// rustls refused a key, a key pair or a CA certificate.
    #[error("{what} {}: {source}", path.display())]
    Refused {
        /// What was refused ("unsupported key in", "certificate and key do not match:", "CA").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// No `[tls]` section and no explicit plaintext.
    #[error("no [tls] section; set insecure_plaintext = true to serve without TLS")]
    NotConfigured,
    /// `client_auth` without the CA to check client certificates against.
    #[error("client_auth needs client_ca")]
    ClientAuthNeedsCa,
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// An upstream URL that does not parse.
    #[error("bad upstream URL {url}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        source: http::uri::InvalidUri,
    },
    /// An upstream that is not `https://host:port`.
    #[error("upstream {0} is not https://host:port")]
    NotHttps(String),
    /// A plain-HTTP URL for a server that only speaks TLS.
    #[error("{0:?}: every AuthMesh server speaks TLS; use https://host:port")]
    PlainHttp(String),
    /// An `https` upstream without a CA to trust.
    #[error("upstream {0} is https but no `ca` is configured")]
    NoCa(String),
    /// An upstream with a client certificate and no key, or the reverse.
    #[error("upstream {0}: set both cert and key, or neither")]
    HalfIdentity(String),
}

/// `error` and every cause under it, each said once
/// ("reading x.pem: permission denied", not just "reading x.pem"): many
/// errors already print their cause.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_says_each_cause_once() {
        let io = RuntimeError::io(
            "reading",
            "x.pem",
            std::io::Error::other("permission denied"),
        );
        assert_eq!(report(&io), "reading x.pem: permission denied");
        let nested = RuntimeError::Config {
            origin: "policy".into(),
            problem: ConfigProblem::Uncovered {
                methods: vec!["/a.B/C".into()],
            },
        };
        assert_eq!(
            report(&nested),
            "invalid configuration policy: strict policy: no rule covers /a.B/C (add rules, or set auth.strict_policy = false)"
        );
        assert!(
            std::error::Error::source(&nested).is_some(),
            "the cause is kept, not flattened"
        );
    }
}
