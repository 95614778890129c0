//! Why a token does not even parse as the AuthMesh token profile.

/// The `google.rpc.ErrorInfo` domain of every AuthMesh denial and refusal.
pub const ERROR_DOMAIN: &str = "authmesh";

/// A token that is not a well-formed AuthMesh access token. The verifier
/// maps each variant to its denial reason; none carries token bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than the cap, so it was not decoded at all.
    #[error("token larger than {max} bytes")]
    TooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// Not a compact JWS with an acceptable header.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header `typ` is not `at+jwt`: not an access token.
    #[error("token type is not at+jwt")]
    WrongType,
    /// The header lacks `alg`, `kid` or `typ` (named).
    #[error("header member {0} is missing")]
    MissingHeader(&'static str),
    /// `alg`, `kid` or `typ` (named) is not a string.
    #[error("header member {0} is not a string")]
    InvalidHeader(&'static str),
    /// A header member other than `alg`, `kid` and `typ`: named when it is
    /// a registered one (`jku`, `jwk`, `x5u`, `crit`, ...), else `unknown`.
    #[error("header member {0} is not accepted")]
    UnsupportedHeader(&'static str),
    /// The payload is not one JSON object with unique members.
    #[error("claims rejected: {0}")]
    InvalidClaims(&'static str),
    /// A required claim (named) is absent.
    #[error("claim {0} is missing")]
    MissingClaim(&'static str),
    /// A claim (named) has the wrong type or an unusable value.
    #[error("claim {0} is not valid")]
    InvalidClaim(&'static str),
}

impl TokenError {
    /// The machine-readable reason a verifier reports in `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge { .. } => "TOKEN_TOO_LARGE",
            TokenError::Malformed(_) => "TOKEN_MALFORMED",
            TokenError::WrongType => "TOKEN_TYPE_INVALID",
            TokenError::MissingHeader(_) => "HEADER_MISSING",
            TokenError::InvalidHeader(_) => "HEADER_INVALID",
            TokenError::UnsupportedHeader(_) => "HEADER_UNSUPPORTED",
            TokenError::InvalidClaims(_) => "CLAIMS_INVALID",
            TokenError::MissingClaim(_) => "CLAIM_MISSING",
            TokenError::InvalidClaim(_) => "CLAIM_INVALID",
        }
    }

    /// What the refusal names, for `ErrorInfo` metadata: `("claim", name)`
    /// or `("header", name)`. Names are fixed strings, never token text.
    pub fn names(&self) -> Option<(&'static str, &'static str)> {
        match self {
            TokenError::MissingClaim(name) | TokenError::InvalidClaim(name) => {
                Some(("claim", name))
            }
            TokenError::MissingHeader(name)
            | TokenError::InvalidHeader(name)
            | TokenError::UnsupportedHeader(name) => Some(("header", name)),
            _ => None,
        }
    }
}
