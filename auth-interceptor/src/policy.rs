//! Per-method authorization: which scopes each exact gRPC path requires.
//!
//! A method without a rule is denied. Only the exact health-check paths are
//! public; reflection is public only when configured.

use std::collections::HashMap;

use crate::{error::AuthError, token::Claims};

/// The gRPC health paths, reachable without a token.
pub const HEALTH_PATHS: [&str; 2] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// The gRPC reflection paths (v1 and v1alpha), public when the policy says so.
pub const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Required scopes per exact gRPC method path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodPolicy {
    rules: HashMap<String, Vec<String>>,
    public_reflection: bool,
}

impl MethodPolicy {
    /// An empty policy: every method denied, reflection not public.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `path` (e.g. `/demo.inventory.v1.Inventory/Reserve`) to tokens
    /// holding every scope in `scopes`.
    pub fn require<I, S>(mut self, path: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .insert(path.into(), scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Makes server reflection reachable without a token (what grpcurl users expect in dev).
    pub fn public_reflection(mut self, public: bool) -> Self {
        self.public_reflection = public;
        self
    }

    /// Whether `path` skips authentication altogether.
    pub fn is_public(&self, path: &str) -> bool {
        HEALTH_PATHS.contains(&path) || (self.public_reflection && REFLECTION_PATHS.contains(&path))
    }

    /// Decides whether verified `claims` may call `path`.
    ///
    /// # Errors
    /// [`AuthError::NoRule`] when no rule covers the path,
    /// [`AuthError::MissingScopes`] naming the scopes the token lacks.
    pub fn authorize(&self, path: &str, claims: &Claims) -> Result<(), AuthError> {
        let Some(required) = self.rules.get(path) else {
            return Err(AuthError::NoRule {
                method: path.to_owned(),
            });
        };
        let missing: Vec<&str> = required
            .iter()
            .map(String::as_str)
            .filter(|scope| !claims.has_scope(scope))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(AuthError::MissingScopes {
                method: path.to_owned(),
                missing: missing.join(" "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scope: &str) -> Claims {
        Claims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 2,
            nbf: None,
            iat: 1,
            jti: "j".into(),
            scope: scope.into(),
            client_id: None,
            cnf: None,
        }
    }

    #[test]
    fn exact_scopes_only_and_default_deny() {
        let policy = MethodPolicy::new().require("/p.S/M", ["inventory.read"]);
        assert!(
            policy
                .authorize("/p.S/M", &claims("x inventory.read"))
                .is_ok()
        );
        for tricky in [
            "inventory",
            "inventory.read.all",
            "INVENTORY.READ",
            "*",
            "inventory.reads",
        ] {
            assert!(
                policy.authorize("/p.S/M", &claims(tricky)).is_err(),
                "{tricky}"
            );
        }
        assert!(matches!(
            policy.authorize("/p.S/Other", &claims("inventory.read")),
            Err(AuthError::NoRule { .. })
        ));
        assert!(matches!(
            policy.authorize("/p.S/M/", &claims("inventory.read")),
            Err(AuthError::NoRule { .. })
        ));
    }

    #[test]
    fn only_exact_health_paths_are_public() {
        let policy = MethodPolicy::new();
        assert!(policy.is_public("/grpc.health.v1.Health/Check"));
        assert!(!policy.is_public("/grpc.health.v1.Health/Check/"));
        assert!(!policy.is_public("/grpc.health.v1.Health/CheckX"));
        assert!(!policy.is_public(REFLECTION_PATHS[0]));
        assert!(
            policy
                .public_reflection(true)
                .is_public(REFLECTION_PATHS[1])
        );
    }
}
