//! Errors of the token service, and the one place they become a `tonic::Status`.

use std::collections::HashMap;

use auth_interceptor::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a token was not issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// No usable `authorization: Basic` credentials.
    #[error("missing or malformed client credentials")]
    MalformedCredentials,
    /// Unknown client or wrong secret (indistinguishable on purpose).
    #[error("invalid client credentials")]
    BadCredentials,
    /// The certificate and the secret name different clients.
    #[error("client certificate and client credentials name different clients")]
    IdentityConflict,
    /// The client certificate names no registered workload.
    #[error("client certificate names no registered workload")]
    UnknownWorkload,
    /// The audience is not a service this issuer mints for.
    #[error("unknown audience {audience:?}; this client may request: {allowed}")]
    UnknownAudience {
        /// The requested audience, cut to a printable 64 characters (it is the caller's own input).
        audience: String,
        /// The audiences the client may request, comma-separated.
        allowed: String,
    },
    /// Tokens for the issuer itself are never minted.
    #[error("tokens for the token service itself are not issued")]
    SelfAudience,
    /// The client may not have tokens for this audience.
    #[error("client may not request tokens for audience {audience}")]
    AudienceNotAllowed {
        /// The requested audience.
        audience: String,
    },
    /// The client may not have this scope for this audience.
    #[error("client may not request scope {scope} for audience {audience}")]
    ScopeNotAllowed {
        /// The requested audience.
        audience: String,
        /// The first scope outside the client's allowlist.
        scope: String,
    },
    /// The target's policy has no rule for this caller that asks for these scopes:
    /// they would only make the token over-broad.
    #[error("audience {audience}'s policy accepts scope(s) {scopes} from no rule for this caller")]
    ScopeNotAccepted {
        /// The requested audience.
        audience: String,
        /// Space-separated scopes no rule asks for.
        scopes: String,
    },
    /// No enforced rule of the target's policy would accept this token for any method.
    #[error("audience {audience}'s policy would accept this token for no method")]
    PolicyRefused {
        /// The requested audience.
        audience: String,
    },
    /// The authenticated client may not revoke tokens.
    #[error("client may not revoke tokens")]
    RevokeNotAllowed,
    /// A revocation request that is not well formed.
    #[error("invalid revocation: {0}")]
    InvalidRevocation(&'static str),
    /// The revocation list is full.
    #[error("too many revocations in force")]
    TooManyRevocations,
    /// The revocation could not be written to disk, so it was not made.
    #[error("revocation could not be persisted; nothing was revoked")]
    RevocationNotPersisted,
    /// A scope that is empty or contains whitespace.
    #[error("invalid scope value")]
    InvalidScope,
    /// `ttl_seconds` is zero, negative or above the cap.
    #[error("ttl_seconds must be between 1 and {max}")]
    TtlOutOfRange {
        /// The cap that applies to this client.
        max: u64,
    },
    /// Too many failed attempts for this client or from this source.
    #[error("too many failed authentication attempts; try again later")]
    TooManyAttempts,
    /// Every credential-check slot stayed busy for too long.
    #[error("token service busy; try again")]
    Busy,
    /// Signing failed: a server fault, not the caller's.
    #[error("signing failed")]
    Signing,
    /// The shared store (etcd) did not take a write: nothing changed.
    #[error("the store (etcd) is unavailable, nothing was changed: {0}")]
    StoreUnavailable(String),
    /// This replica cannot know its registry and revocations are current.
    #[error(
        "this token service replica has been cut off from etcd for {seconds} s and stopped minting; another replica can serve"
    )]
    CutOff {
        /// Whole seconds since its session lapsed.
        seconds: u64,
    },
    /// A workload registration is malformed or names an unknown audience.
    #[error("invalid workload: {0}")]
    InvalidWorkload(String),
    /// A workload registration conflicts with what is registered or enforced.
    #[error("workload not registered: {0}")]
    WorkloadConflict(String),
    /// No registered workload has this id (or it is not one registered at run time).
    #[error("no workload registered at run time with id {0:?}")]
    WorkloadNotFound(String),
    /// A `ConsumeOneTime` request with a malformed `jti`.
    #[error("invalid one-time use: {0}")]
    InvalidOneTime(&'static str),
    /// The caller's certificate is not one of `admin_ids`.
    #[error(
        "only the workloads in the token service's admin_ids may administer workloads; present such a client certificate"
    )]
    NotAdmin,
    /// The replica's signing key is not yet published for long enough.
    #[error(
        "this replica's signing key is not yet published for long enough to sign (publish before sign); retry shortly"
    )]
    KeyNotYetPublished,
    /// The subject token of an exchange does not verify, is revoked, or
    /// carries no user; `cause` is the verifier's reason.
    #[error("subject token refused: {detail} ({cause})")]
    SubjectTokenRefused {
        /// The reason, as a verifier reports it (`TOKEN_EXPIRED`, ...).
        cause: &'static str,
        /// What was wrong, in words (never token text).
        detail: String,
    },
    /// No exchange rule lets this caller exchange this token for this audience.
    #[error("token exchange not allowed: {0}")]
    ExchangeNotAllowed(String),
    /// The new token's delegation chain would be longer than the rules allow.
    #[error("delegation chain of {depth} actors is longer than the {max} the exchange rules allow")]
    DelegationTooDeep {
        /// Actors the new token would carry.
        depth: usize,
        /// The most the matching rules allow.
        max: usize,
    },
    /// A malformed exchange request.
    #[error("invalid token exchange: {0}")]
    InvalidExchange(&'static str),
    /// The subject token's issuer's keys (or the revocation list) have not
    /// been loaded yet: nothing can be said of the token now.
    #[error("the subject token cannot be checked yet: {detail} ({cause}); retry shortly")]
    SubjectNotCheckable {
        /// The verifier's reason (`KEYS_UNAVAILABLE`, ...).
        cause: &'static str,
        /// What is missing, in words.
        detail: String,
    },
}

impl IssueError {
    /// The machine-readable reason sent in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            IssueError::MalformedCredentials => "CREDENTIALS_MALFORMED",
            IssueError::BadCredentials => "CREDENTIALS_INVALID",
            IssueError::IdentityConflict => "IDENTITY_CONFLICT",
            IssueError::UnknownWorkload => "UNKNOWN_WORKLOAD",
            IssueError::UnknownAudience { .. } => "AUDIENCE_UNKNOWN",
            IssueError::SelfAudience | IssueError::AudienceNotAllowed { .. } => {
                "AUDIENCE_NOT_ALLOWED"
            }
            IssueError::ScopeNotAllowed { .. } => "SCOPE_NOT_ALLOWED",
            IssueError::ScopeNotAccepted { .. } => "SCOPE_NOT_ACCEPTED",
            IssueError::PolicyRefused { .. } => "POLICY_DENIED",
            IssueError::RevokeNotAllowed => "REVOKE_NOT_ALLOWED",
            IssueError::InvalidRevocation(_) => "REVOCATION_INVALID",
            IssueError::TooManyRevocations => "TOO_MANY_REVOCATIONS",
            IssueError::RevocationNotPersisted => "REVOCATION_NOT_PERSISTED",
            IssueError::InvalidScope => "SCOPE_INVALID",
            IssueError::TtlOutOfRange { .. } => "TTL_OUT_OF_RANGE",
            IssueError::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            IssueError::Busy => "ISSUER_BUSY",
            IssueError::Signing => "SIGNING_FAILED",
            IssueError::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            IssueError::CutOff { .. } => "REPLICA_CUT_OFF",
            IssueError::KeyNotYetPublished => "KEY_NOT_YET_PUBLISHED",
            IssueError::InvalidWorkload(_) => "WORKLOAD_INVALID",
            IssueError::WorkloadConflict(_) => "WORKLOAD_CONFLICT",
            IssueError::WorkloadNotFound(_) => "WORKLOAD_NOT_FOUND",
            IssueError::NotAdmin => "NOT_ADMIN",
            IssueError::InvalidOneTime(_) => "ONE_TIME_INVALID",
            IssueError::SubjectTokenRefused { .. } => "SUBJECT_TOKEN_INVALID",
            IssueError::ExchangeNotAllowed(_) => "EXCHANGE_NOT_ALLOWED",
            IssueError::DelegationTooDeep { .. } => "DELEGATION_TOO_DEEP",
            IssueError::InvalidExchange(_) => "EXCHANGE_INVALID",
            IssueError::SubjectNotCheckable { .. } => "SUBJECT_TOKEN_UNCHECKABLE",
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            IssueError::MalformedCredentials
            | IssueError::BadCredentials
            | IssueError::IdentityConflict
            | IssueError::UnknownWorkload => Code::Unauthenticated,
            IssueError::SelfAudience
            | IssueError::AudienceNotAllowed { .. }
            | IssueError::ScopeNotAllowed { .. }
            | IssueError::ScopeNotAccepted { .. }
            | IssueError::PolicyRefused { .. }
            | IssueError::RevokeNotAllowed => Code::PermissionDenied,
            IssueError::UnknownAudience { .. }
            | IssueError::InvalidScope
            | IssueError::InvalidRevocation(_)
            | IssueError::TtlOutOfRange { .. } => Code::InvalidArgument,
            IssueError::TooManyAttempts | IssueError::Busy | IssueError::TooManyRevocations => {
                Code::ResourceExhausted
            }
            IssueError::Signing | IssueError::RevocationNotPersisted => Code::Internal,
            IssueError::InvalidWorkload(_) | IssueError::InvalidOneTime(_) => Code::InvalidArgument,
            IssueError::WorkloadConflict(_) => Code::FailedPrecondition,
            IssueError::WorkloadNotFound(_) => Code::NotFound,
            IssueError::NotAdmin
            | IssueError::ExchangeNotAllowed(_)
            | IssueError::DelegationTooDeep { .. } => Code::PermissionDenied,
            IssueError::SubjectTokenRefused { .. } | IssueError::InvalidExchange(_) => {
                Code::InvalidArgument
            }
            IssueError::StoreUnavailable(_)
            | IssueError::SubjectNotCheckable { .. }
            | IssueError::CutOff { .. }
            | IssueError::KeyNotYetPublished => Code::Unavailable,
        }
    }
}

impl From<IssueError> for Status {
    fn from(err: IssueError) -> Status {
        let details = ErrorDetails::with_error_info(err.reason(), ERROR_DOMAIN, HashMap::new());
        Status::with_error_details(err.code(), err.to_string(), details)
    }
}

/// Why the token service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Shared plumbing (files, TLS, transport).
    #[error(transparent)]
    Runtime(#[from] service_runtime::RuntimeError),
    /// The configuration is inconsistent.
    #[error("invalid token service configuration: {0}")]
    Config(String),
    /// The signing key is unusable.
    #[error("signing key: {0}")]
    Key(String),
    /// A key file that does not hold a key the issuer can sign with.
    #[error("signing key {file}: {source}")]
    KeyFile {
        /// The file, inside the key directory.
        file: String,
        /// Why it is unusable.
        #[source]
        source: authmesh_signing::SigningError,
    },
    /// A new signing key could not be generated.
    #[error("generating a signing key: {0}")]
    KeyGeneration(#[source] authmesh_signing::SigningError),
    /// `keyring.json` does not parse (or could not be written out).
    #[error("key ring {}: {source}", path.display())]
    Ring {
        /// The ring file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The revocation file is unreadable or malformed.
    #[error("revocations: {0}")]
    Revocations(String),
    /// An audience's policy file is missing or invalid.
    #[error("the policy of audience {audience:?}: {source}")]
    Policy {
        /// The audience whose `audience_policies` entry failed.
        audience: String,
        /// What is wrong with the file.
        #[source]
        source: Box<service_runtime::RuntimeError>,
    },
    /// The shared store is misconfigured or unreachable.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The sign-then-verify self-test failed.
    #[error("self-test failed: {0}")]
    SelfTest(#[source] authmesh_signing::SigningError),
}
