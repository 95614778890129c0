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

use authmesh_token::{Actor, Claims};
pub use authmesh_token::{ERROR_DOMAIN, TokenError};

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
    /// The token is not the AuthMesh token profile: too large, not a
    /// compact JWS, a bad header, claims missing or of the wrong type.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No key of the issuer has the token's `kid`.
    #[error("no key with the token's kid")]
    UnknownKey,
    /// The token's `alg` is not the one algorithm bound to the key its `kid` names.
    #[error("token alg does not match the key's algorithm")]
    AlgorithmMismatch,
    /// The signature does not verify with the named key.
    #[error("signature does not verify")]
    BadSignature,
    /// `iss` is not the configured issuer.
    #[error("issuer mismatch")]
    IssuerMismatch,
    /// `iss` names no issuer this verifier trusts (it trusts several, and
    /// chooses whose keys to try by `iss`).
    #[error("issuer not trusted")]
    UntrustedIssuer,
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
    /// The shared one-time ledger (the token service) could not say whether
    /// a one-time token was used before, so it is refused.
    #[error("one-time ledger unavailable")]
    OneTimeLedgerUnavailable,
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
    /// Every [`AuthError::reason`], so decision metrics can be registered
    /// once per reason instead of looked up on each denial.
    pub const REASONS: [&'static str; 31] = [
        "TOKEN_MISSING",
        "AUTHORIZATION_MALFORMED",
        "TOKEN_TOO_LARGE",
        "TOKEN_MALFORMED",
        "TOKEN_TYPE_INVALID",
        "HEADER_MISSING",
        "HEADER_INVALID",
        "HEADER_UNSUPPORTED",
        "CLAIMS_INVALID",
        "CLAIM_MISSING",
        "CLAIM_INVALID",
        "UNKNOWN_KEY",
        "ALGORITHM_MISMATCH",
        "SIGNATURE_INVALID",
        "ISSUER_MISMATCH",
        "ISSUER_UNTRUSTED",
        "AUDIENCE_MISMATCH",
        "TOKEN_EXPIRED",
        "TOKEN_NOT_YET_VALID",
        "TOKEN_ISSUED_IN_FUTURE",
        "TOKEN_LIFETIME_TOO_LONG",
        "TOKEN_BINDING_MISMATCH",
        "TOKEN_BINDING_REQUIRED",
        "PEER_IDENTITY_INVALID",
        "KEYS_UNAVAILABLE",
        "TOKEN_REVOKED",
        "REVOCATIONS_UNAVAILABLE",
        "TOKEN_REPLAYED",
        "REPLAY_CACHE_FULL",
        "ONE_TIME_LEDGER_UNAVAILABLE",
        "POLICY_DENIED",
    ];

    /// The machine-readable reason sent in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "TOKEN_MISSING",
            AuthError::MalformedAuthorization(_) => "AUTHORIZATION_MALFORMED",
            AuthError::Token(err) => err.reason(),
            AuthError::UnknownKey => "UNKNOWN_KEY",
            AuthError::AlgorithmMismatch => "ALGORITHM_MISMATCH",
            AuthError::BadSignature => "SIGNATURE_INVALID",
            AuthError::IssuerMismatch => "ISSUER_MISMATCH",
            AuthError::UntrustedIssuer => "ISSUER_UNTRUSTED",
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
            AuthError::OneTimeLedgerUnavailable => "ONE_TIME_LEDGER_UNAVAILABLE",
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
            | AuthError::ReplayCacheFull
            | AuthError::OneTimeLedgerUnavailable => Code::Unavailable,
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
            AuthError::OneTimeLedgerUnavailable => {
                "one-time token cannot be checked now: the token service is unreachable; retry with a fresh one later".into()
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
            AuthError::Token(err) => {
                if let Some((kind, name)) = err.names() {
                    metadata.insert(kind.to_owned(), name.to_owned());
                }
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
        self.into_status_for(decision_id, None)
    }

    /// [`AuthError::into_status`] for a call whose token verified as
    /// `claims`: a token minted by token exchange also has its delegation
    /// named ([`delegation_metadata`]), so the caller sees who acted for whom.
    pub fn into_status_for(self, decision_id: Option<&str>, claims: Option<&Claims>) -> Status {
        let mut metadata = self.metadata();
        if let Some(claims) = claims {
            metadata.extend(delegation_metadata(claims));
        }
        if let Some(id) = decision_id {
            metadata.insert("decision_id".to_owned(), id.to_owned());
        }
        let details = ErrorDetails::with_error_info(self.reason(), ERROR_DOMAIN, metadata);
        Status::with_error_details(self.code(), self.caller_message(), details)
    }
}

/// The `google.rpc.ErrorInfo` metadata naming a token's delegation: `act`,
/// its actor chain (the acting workload first, comma-separated), and
/// `subject_issuer`, the user's issuer; nothing for a token without an actor.
pub fn delegation_metadata(claims: &Claims) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    if let Some(act) = &claims.act {
        metadata.insert("act".to_owned(), ActorChain(Some(act)).to_string());
        if let Some(issuer) = &claims.subject_issuer {
            metadata.insert("subject_issuer".to_owned(), issuer.clone());
        }
    }
    metadata
}

/// A token's actor chain, the acting workload first, comma-separated (empty
/// without an actor): for logs and denials, formatted without allocating.
#[derive(Debug, Clone, Copy)]
pub struct ActorChain<'a>(pub Option<&'a Actor>);

impl std::fmt::Display for ActorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, actor) in self.0.into_iter().flat_map(Actor::chain).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&actor.sub)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// One of each variant (and of each token-profile refusal): a variant
    /// added without its reason in [`AuthError::REASONS`] fails here.
    fn one_of_each() -> Vec<AuthError> {
        let token = [
            TokenError::TooLarge { max: 1 },
            TokenError::Malformed("x"),
            TokenError::WrongType,
            TokenError::MissingHeader("kid"),
            TokenError::InvalidHeader("kid"),
            TokenError::UnsupportedHeader("crit"),
            TokenError::InvalidClaims("x"),
            TokenError::MissingClaim("jti"),
            TokenError::InvalidClaim("jti"),
        ];
        let method = || "/p.S/M".to_owned();
        let mut all: Vec<AuthError> = token.into_iter().map(AuthError::Token).collect();
        all.extend([
            AuthError::MissingToken,
            AuthError::MalformedAuthorization("x"),
            AuthError::UnknownKey,
            AuthError::AlgorithmMismatch,
            AuthError::BadSignature,
            AuthError::IssuerMismatch,
            AuthError::UntrustedIssuer,
            AuthError::AudienceMismatch,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::IssuedInFuture,
            AuthError::LifetimeTooLong,
            AuthError::BindingMismatch,
            AuthError::BindingRequired,
            AuthError::PeerIdentity(crate::peer::PeerError::Unparsable),
            AuthError::KeysUnavailable,
            AuthError::RevocationsUnavailable,
            AuthError::Revoked,
            AuthError::Replayed,
            AuthError::ReplayCacheFull,
            AuthError::OneTimeLedgerUnavailable,
            AuthError::MissingScopes {
                method: method(),
                missing: "a".into(),
                rule: "r".into(),
            },
            AuthError::RuleDenied {
                method: method(),
                rule: "r".into(),
            },
            AuthError::NoRule { method: method() },
        ]);
        all
    }

    #[test]
    fn reasons_lists_every_reason_once() {
        let listed: BTreeSet<&str> = AuthError::REASONS.into_iter().collect();
        assert_eq!(listed.len(), AuthError::REASONS.len(), "no reason twice");
        let produced: BTreeSet<&str> = one_of_each().iter().map(AuthError::reason).collect();
        assert_eq!(produced, listed);
    }
}
