//! Standards-based key discovery over HTTPS, on the token service's own
//! port: `{issuer}/.well-known/openid-configuration` and the JWK Set at
//! `{issuer}/.well-known/jwks.json`. Envoy's `jwt_authn`, Istio or any JWT
//! library can then verify AuthMesh tokens knowing only the issuer URL.

use std::sync::Arc;

use service_runtime::http_endpoint::{Bytes, Routes};

use crate::issuer::Issuer;

/// The OpenID Connect discovery document's path.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The JWK Set's path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The HTTP routes: the discovery document (fixed) and the JWK Set (read on
/// each request, so it follows key changes).
pub fn routes(issuer: Arc<Issuer>) -> Routes {
    let document = serde_json::json!({
        "issuer": issuer.issuer(),
        "jwks_uri": format!("{}{JWKS_PATH}", issuer.issuer().trim_end_matches('/')),
        // Every algorithm AuthMesh signs with; each key names its own `alg`.
        "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "grant_types_supported": ["client_credentials"],
        "authmesh_token_service": "authmesh.v1.TokenService",
    });
    let document = Bytes::from(document.to_string());
    Arc::new(move |path: &str| match path {
        DISCOVERY_PATH => Some(("application/json", document.clone())),
        JWKS_PATH => serde_json::to_vec(&issuer.jwks())
            .ok()
            .map(|jwks| ("application/jwk-set+json", Bytes::from(jwks))),
        _ => None,
    })
}
