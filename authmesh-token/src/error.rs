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
    /// The signed claims are not the token profile (wrong types, duplicates, missing fields).
    #[error("claims rejected: {0}")]
    InvalidClaims(&'static str),
}
