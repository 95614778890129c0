//! Why a client could not attach a token to an outgoing call, and the
//! status its call fails with then.

use std::collections::HashMap;

use authmesh_token::ERROR_DOMAIN;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Why a client could not attach a token to an outgoing call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenSourceError {
    /// No token is cached and the token service could not be reached.
    #[error("no valid token for audience {audience}: token service unreachable ({detail})")]
    Unavailable {
        /// The audience the token is for.
        audience: String,
        /// What went wrong talking to the token service.
        detail: String,
    },
    /// The token service answered and refused to mint.
    #[error("token service refused a token for audience {audience}: {code:?}: {message}")]
    Refused {
        /// The audience the token is for.
        audience: String,
        /// The status code the token service returned.
        code: Code,
        /// Its message.
        message: String,
    },
}

impl From<TokenSourceError> for Status {
    /// UNAVAILABLE while the token service cannot be reached (retrying may
    /// help); PERMISSION_DENIED when it refused to mint, a configuration error
    /// that retries would only hide.
    fn from(err: TokenSourceError) -> Status {
        let (code, reason) = match &err {
            TokenSourceError::Unavailable { .. } => (Code::Unavailable, "TOKEN_SOURCE_UNAVAILABLE"),
            TokenSourceError::Refused { .. } => (Code::PermissionDenied, "TOKEN_SOURCE_REFUSED"),
        };
        let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new());
        Status::with_error_details(code, err.to_string(), details)
    }
}
