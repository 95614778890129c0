//! The AuthMesh token profile, shared by the issuer and every verifier:
//! the claims of an access token and their strict parsing ([`profile`]),
//! the public keys that verify them and the checks each key passes before
//! it is trusted ([`jwk`]), and the clock both sides read ([`clock`]).
//!
//! Nothing here signs: the issuer's half lives in `authmesh-signing`, so a
//! service that only verifies never links it.

pub mod clock;
pub mod error;
pub mod jwk;
pub mod profile;

pub use clock::{Clock, OffsetClock, SharedClock, SystemClock, system_clock};
pub use error::{ERROR_DOMAIN, TokenError};
pub use jwk::{
    Jwk, JwkSet, KeyError, MAX_KEYS, MESH_ALGORITHMS, MIN_HMAC_SECRET_BYTES, MIN_RSA_BITS,
    VerificationKey,
};
pub use profile::{
    ACCESS_TOKEN_TYPE, Actor, Claims, Confirmation, ExternalClaims, ExternalHeader, JwsAlgorithm,
    MAX_ACTOR_CHAIN, MAX_TOKEN_BYTES, ScopeClaim, SigningAlgorithm, TokenHeader, TokenParts,
    parse_claims, parse_external_claims, parse_external_header, parse_header, peek_issuer,
    split_token,
};
