//! Everything that can go wrong while authenticating or authorizing a call,
//! and the one place where those errors become a `tonic::Status`.
//!
//! Callers get a short fixed message and a machine-readable reason in
//! `google.rpc.ErrorInfo` (domain `authmesh`); details that would help an
//! attacker (expected audience, issuer, claim values) stay in the logs, and
//! the token itself appears nowhere.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use authmesh_token::ERROR_DOMAIN;

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The call carried no `authorization` metadata.
    #[error("missing bearer token")]
    MissingToken,
    /// The `authorization` metadata was present but not exactly one `Bearer <token>`.
    #[error("malformed authorization metadata: {0}")]
    MalformedAuthorization(&'static str),
    /// The token is longer than the cap, so it was not decoded at all.
    #[error("token larger than {max} bytes")]
    TokenTooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// The token is not a well-formed compact JWS with an acceptable header.
    #[error("malformed token: {0}")]
    MalformedToken(&'static str),
    /// The header `typ` is not `at+jwt`: not an access token.
    #[error("token type is not at+jwt")]
    WrongTokenType,
    /// No key of the issuer has the token's `kid`.
    #[error("no key with the token's kid")]
    UnknownKey,
    /// The token's `alg` is not the one algorithm bound to the key its `kid` names.
    #[error("token alg does not match the key's algorithm")]
    AlgorithmMismatch,
    /// The signature does not verify with the named key.
    #[error("signature does not verify")]
    BadSignature,
    /// The header lacks `alg`, `kid` or `typ` (named).
    #[error("header member {0} is missing")]
    MissingHeader(&'static str),
    /// `alg`, `kid` or `typ` (named) is not a string.
    #[error("header member {0} is not a string")]
    InvalidHeader(&'static str),
    /// A header member beyond `alg`, `kid` and `typ` (named when registered,
    /// else `unknown`): never followed.
    #[error("header member {0} is not accepted")]
    UnsupportedHeader(&'static str),
    /// The signed payload is not one JSON object with unique members.
    #[error("claims rejected: {0}")]
    InvalidClaims(&'static str),
    /// A required claim (named) is absent.
    #[error("claim {0} is missing")]
    MissingClaim(&'static str),
    /// A claim (named) has the wrong type or an unusable value.
    #[error("claim {0} is not valid")]
    InvalidClaim(&'static str),
    /// `iss` is not the configured issuer.
    #[error("issuer mismatch")]
    IssuerMismatch,
    /// `aud` is not this service.
    #[error("audience mismatch")]
    AudienceMismatch,
    /// `exp` is in the past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds the maximum token lifetime.
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// The token is bound to a client certificate other than this connection's.
    #[error("token is bound to another client certificate")]
    BindingMismatch,
    /// The verifier requires certificate-bound tokens and this one is not bound.
    #[error("token is not bound to a client certificate")]
    BindingRequired,
    /// The client certificate yields no usable identity.
    #[error("client certificate identity unusable: {0}")]
    PeerIdentity(#[from] crate::peer::PeerError),
    /// No verification keys are loaded yet (startup, or the issuer was never reachable).
    #[error("no verification keys loaded for the issuer")]
    KeysUnavailable,
    /// The revocation list has not been received yet, so no token can be trusted.
    #[error("revocation list not loaded yet")]
    RevocationsUnavailable,
    /// A revocation covers the token (its `jti`, or its `sub` before a cutoff).
    #[error("token revoked")]
    Revoked,
    /// A one-time token presented a second time.
    #[error("one-time token already used")]
    Replayed,
    /// The replay cache is full of live one-time tokens, so this one cannot be remembered.
    #[error("replay cache full")]
    ReplayCacheFull,
    /// The caller is authenticated but lacks scopes the method's rule requires.
    #[error("method {method} requires scope(s) {missing}")]
    MissingScopes {
        /// The exact gRPC path.
        method: String,
        /// Space-separated scopes the token lacks.
        missing: String,
        /// The rule that would allow the call with those scopes.
        rule: String,
    },
    /// A deny rule matched the caller.
    #[error("rule {rule} denies method {method}")]
    RuleDenied {
        /// The exact gRPC path.
        method: String,
        /// The denying rule.
        rule: String,
    },
    /// No rule covers the method, so it is denied by default.
    #[error("no rule allows method {method}")]
    NoRule {
        /// The exact gRPC path.
        method: String,
    },
}

impl AuthError {
    /// The machine-readable reason sent in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "TOKEN_MISSING",
            AuthError::MalformedAuthorization(_) => "AUTHORIZATION_MALFORMED",
            AuthError::TokenTooLarge { .. } => "TOKEN_TOO_LARGE",
            AuthError::MalformedToken(_) => "TOKEN_MALFORMED",
            AuthError::WrongTokenType => "TOKEN_TYPE_INVALID",
            AuthError::UnknownKey => "UNKNOWN_KEY",
            AuthError::AlgorithmMismatch => "ALGORITHM_MISMATCH",
            AuthError::BadSignature => "SIGNATURE_INVALID",
            AuthError::MissingHeader(_) => "HEADER_MISSING",
            AuthError::InvalidHeader(_) => "HEADER_INVALID",
            AuthError::UnsupportedHeader(_) => "HEADER_UNSUPPORTED",
            AuthError::InvalidClaims(_) => "CLAIMS_INVALID",
            AuthError::MissingClaim(_) => "CLAIM_MISSING",
            AuthError::InvalidClaim(_) => "CLAIM_INVALID",
            AuthError::IssuerMismatch => "ISSUER_MISMATCH",
            AuthError::AudienceMismatch => "AUDIENCE_MISMATCH",
            AuthError::Expired => "TOKEN_EXPIRED",
            AuthError::NotYetValid => "TOKEN_NOT_YET_VALID",
            AuthError::IssuedInFuture => "TOKEN_ISSUED_IN_FUTURE",
            AuthError::LifetimeTooLong => "TOKEN_LIFETIME_TOO_LONG",
            AuthError::BindingMismatch => "TOKEN_BINDING_MISMATCH",
            AuthError::BindingRequired => "TOKEN_BINDING_REQUIRED",
            AuthError::PeerIdentity(_) => "PEER_IDENTITY_INVALID",
            AuthError::KeysUnavailable => "KEYS_UNAVAILABLE",
            AuthError::Revoked => "TOKEN_REVOKED",
            AuthError::RevocationsUnavailable => "REVOCATIONS_UNAVAILABLE",
            AuthError::Replayed => "TOKEN_REPLAYED",
            AuthError::ReplayCacheFull => "REPLAY_CACHE_FULL",
            AuthError::MissingScopes { .. }
            | AuthError::RuleDenied { .. }
            | AuthError::NoRule { .. } => "POLICY_DENIED",
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            AuthError::KeysUnavailable
            | AuthError::RevocationsUnavailable
            | AuthError::ReplayCacheFull => Code::Unavailable,
            AuthError::MissingScopes { .. }
            | AuthError::RuleDenied { .. }
            | AuthError::NoRule { .. } => Code::PermissionDenied,
            _ => Code::Unauthenticated,
        }
    }

    /// The short message a caller sees. Fixed per reason (details are static
    /// strings), so nothing from the token or the verifier's configuration
    /// leaks through it; policy denials
    /// name the method and what was missing, which the caller needs to fix its request.
    fn caller_message(&self) -> String {
        match self {
            AuthError::MissingScopes { .. }
            | AuthError::RuleDenied { .. }
            | AuthError::NoRule { .. } => self.to_string(),
            AuthError::MissingToken => "missing bearer token".into(),
            AuthError::MalformedAuthorization(_) => {
                "authorization metadata must be exactly one `Bearer <token>`".into()
            }
            AuthError::KeysUnavailable => {
                "verification keys not loaded yet; the token service has not been reached".into()
            }
            AuthError::RevocationsUnavailable => {
                "revocation list not loaded yet; the token service has not been reached".into()
            }
            AuthError::ReplayCacheFull => {
                "one-time token cannot be accepted now; retry with a fresh one later".into()
            }
            _ => format!("invalid token: {self}"),
        }
    }
}

impl AuthError {
    /// The `google.rpc.ErrorInfo` metadata of this error besides the
    /// decision id: for policy denials the method and the rule; for a
    /// refused claim or header member, its name (a fixed name, never text
    /// from the token); for malformed `authorization` metadata, what is wrong.
    pub fn metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        match self {
            AuthError::MissingClaim(name) | AuthError::InvalidClaim(name) => {
                metadata.insert("claim".to_owned(), (*name).to_owned());
            }
            AuthError::MissingHeader(name)
            | AuthError::InvalidHeader(name)
            | AuthError::UnsupportedHeader(name) => {
                metadata.insert("header".to_owned(), (*name).to_owned());
            }
            AuthError::MalformedAuthorization(problem) => {
                metadata.insert("metadata".to_owned(), "authorization".to_owned());
                metadata.insert("problem".to_owned(), (*problem).to_owned());
            }
            AuthError::MissingScopes { method, rule, .. }
            | AuthError::RuleDenied { method, rule } => {
                metadata.insert("method".to_owned(), method.clone());
                metadata.insert("rule".to_owned(), rule.clone());
            }
            AuthError::NoRule { method } => {
                metadata.insert("method".to_owned(), method.clone());
            }
            _ => {}
        }
        metadata
    }

    /// The status a caller gets: the short message and `google.rpc.ErrorInfo`
    /// (reason; for policy denials the method and rule; and the decision id
    /// that also appears in the server's log line).
    pub fn into_status(self, decision_id: Option<&str>) -> Status {
        let mut metadata = self.metadata();
        if let Some(id) = decision_id {
            metadata.insert("decision_id".to_owned(), id.to_owned());
        }
        let details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(self.code(), self.caller_message(), details)
    }
}

impl From<authmesh_token::TokenError> for AuthError {
    fn from(err: authmesh_token::TokenError) -> Self {
        use authmesh_token::TokenError;
        match err {
            TokenError::TooLarge { max } => AuthError::TokenTooLarge { max },
            TokenError::Malformed(detail) => AuthError::MalformedToken(detail),
            TokenError::WrongType => AuthError::WrongTokenType,
            TokenError::InvalidClaims(detail) => AuthError::InvalidClaims(detail),
            TokenError::MissingHeader(name) => AuthError::MissingHeader(name),
            TokenError::InvalidHeader(name) => AuthError::InvalidHeader(name),
            TokenError::UnsupportedHeader(name) => AuthError::UnsupportedHeader(name),
            TokenError::MissingClaim(name) => AuthError::MissingClaim(name),
            TokenError::InvalidClaim(name) => AuthError::InvalidClaim(name),
            // A new profile error the verifier does not know yet is still a refusal.
            _ => AuthError::MalformedToken("not the token profile"),
        }
    }
}

/// A fresh decision id: ties the caller's error to the server's log line
/// without revealing anything.
pub(crate) fn new_decision_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Status {
        err.into_status(None)
    }
}
