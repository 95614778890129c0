//! Client authentication: `authorization: Basic base64(id:secret)` checked
//! against argon2id hashes. Unknown ids cost the same as wrong secrets, and
//! the comparison is argon2's constant-time one.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};

use crate::{config::ClientConfig, error::IssueError, error::StartError};

/// A client the token service knows, with what it may ask for.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// Client id; the `sub` of its tokens.
    pub id: String,
    /// Lifetime cap for this client.
    pub max_ttl_seconds: u64,
    /// Audience → allowed scopes.
    pub audiences: BTreeMap<String, BTreeSet<String>>,
    /// The workload's SPIFFE ID, when it may authenticate by certificate.
    pub spiffe_id: Option<String>,
    /// May revoke tokens.
    pub may_revoke: bool,
    /// Where it is registered.
    pub origin: ClientOrigin,
    /// None for mTLS-only clients.
    secret_hash: Option<String>,
}

/// Where a client is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOrigin {
    /// `clients` in `token-service.toml`: changed by editing the file.
    File,
    /// Registered at run time (`authmesh workload add`), in the store.
    Registered,
}

/// Every registered client, by id and by SPIFFE ID.
#[derive(Debug)]
pub struct ClientRegistry {
    clients: HashMap<String, Arc<RegisteredClient>>,
    by_spiffe_id: HashMap<String, String>,
    /// Verified against for unknown ids so they cost as much as known ones.
    decoy_hash: String,
}

impl ClientRegistry {
    /// Builds the registry, checking every hash and that ids are unique.
    ///
    /// # Errors
    /// [`StartError::Config`] naming the offending client.
    pub fn new(clients: &[ClientConfig], global_max_ttl: u64) -> Result<Self, StartError> {
        let decoy_hash = hash_secret(&generate_secret()).map_err(StartError::Config)?;
        let mut registry = Self {
            clients: HashMap::new(),
            by_spiffe_id: HashMap::new(),
            decoy_hash,
        };
        for client in clients {
            registry
                .add(client, global_max_ttl, ClientOrigin::File)
                .map_err(StartError::Config)?;
        }
        Ok(registry)
    }

    /// The same static clients plus `registered` (run-time registrations);
    /// one that conflicts with a client already in is left out and logged.
    pub fn with_registered(
        &self,
        static_clients: &[ClientConfig],
        registered: &[ClientConfig],
        global_max_ttl: u64,
    ) -> Self {
        let mut registry = Self {
            clients: HashMap::new(),
            by_spiffe_id: HashMap::new(),
            decoy_hash: self.decoy_hash.clone(),
        };
        for (client, origin) in static_clients
            .iter()
            .map(|c| (c, ClientOrigin::File))
            .chain(registered.iter().map(|c| (c, ClientOrigin::Registered)))
        {
            if let Err(detail) = registry.add(client, global_max_ttl, origin) {
                tracing::error!(%detail, "registered workload left out");
            }
        }
        registry
    }

    /// The client `id`, if registered.
    pub fn get(&self, id: &str) -> Option<&Arc<RegisteredClient>> {
        self.clients.get(id)
    }

    /// The id of the client registered for `spiffe_id`, if any.
    pub fn id_for_spiffe_id(&self, spiffe_id: &str) -> Option<&str> {
        self.by_spiffe_id.get(spiffe_id).map(String::as_str)
    }

    /// Every client, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<RegisteredClient>> {
        self.clients.values()
    }

    /// Checks `client` and adds it; a description of what is wrong otherwise.
    fn add(
        &mut self,
        client: &ClientConfig,
        global_max_ttl: u64,
        origin: ClientOrigin,
    ) -> Result<(), String> {
        let invalid = |detail: &str| format!("client {}: {detail}", client.id);
        if let Some(secret_hash) = &client.secret_hash {
            check_secret_hash(secret_hash).map_err(|detail| invalid(&detail))?;
        }
        if client.secret_hash.is_none() && client.spiffe_id.is_none() {
            return Err(invalid("needs a secret_hash, a spiffe_id, or both"));
        }
        if let Some(id) = &client.spiffe_id {
            if !id.starts_with("spiffe://") {
                return Err(invalid("spiffe_id must start with spiffe://"));
            }
            if self.by_spiffe_id.contains_key(id) {
                return Err(invalid("spiffe_id is registered twice"));
            }
        }
        let malformed = |s: &String| s.is_empty() || s.contains(char::is_whitespace);
        let bad_entry = client
            .audiences
            .iter()
            .any(|(aud, scopes)| malformed(aud) || scopes.iter().any(malformed));
        if bad_entry {
            return Err(invalid(
                "audiences and scopes must be non-empty and contain no whitespace",
            ));
        }
        if self.clients.contains_key(&client.id) {
            return Err(format!("client {} is registered twice", client.id));
        }
        let entry = RegisteredClient {
            id: client.id.clone(),
            max_ttl_seconds: client
                .max_ttl_seconds
                .unwrap_or(global_max_ttl)
                .min(global_max_ttl),
            audiences: client
                .audiences
                .iter()
                .map(|(aud, scopes)| (aud.clone(), scopes.iter().cloned().collect()))
                .collect(),
            spiffe_id: client.spiffe_id.clone(),
            may_revoke: client.may_revoke,
            origin,
            secret_hash: client.secret_hash.clone(),
        };
        if let Some(id) = &client.spiffe_id {
            self.by_spiffe_id.insert(id.clone(), client.id.clone());
        }
        self.clients.insert(client.id.clone(), Arc::new(entry));
        Ok(())
    }

    /// Checks an `authorization` value and returns the client it proves.
    /// CPU-heavy (argon2): call it off the async executor.
    ///
    /// # Errors
    /// [`IssueError::MalformedCredentials`] or [`IssueError::BadCredentials`].
    pub fn authenticate(&self, authorization: &str) -> Result<&Arc<RegisteredClient>, IssueError> {
        let (id, secret) = parse_basic(authorization)?;
        let client = self.clients.get(&id);
        let hash = client
            .and_then(|c| c.secret_hash.as_deref())
            .unwrap_or(self.decoy_hash.as_str());
        let verified = PasswordHash::new(hash).ok().is_some_and(|hash| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok()
        });
        match client {
            Some(client) if verified && client.secret_hash.is_some() => Ok(client),
            _ => Err(IssueError::BadCredentials),
        }
    }

    /// The client registered for a certificate's SPIFFE ID.
    ///
    /// # Errors
    /// [`IssueError::UnknownWorkload`] when none is.
    pub fn by_spiffe_id(&self, spiffe_id: &str) -> Result<&Arc<RegisteredClient>, IssueError> {
        self.by_spiffe_id
            .get(spiffe_id)
            .and_then(|id| self.clients.get(id))
            .ok_or(IssueError::UnknownWorkload)
    }
}

/// Checks that `hash` is an argon2id PHC string (what `hash_secret` writes).
///
/// # Errors
/// What is wrong with it.
pub fn check_secret_hash(hash: &str) -> Result<(), String> {
    let hash = PasswordHash::new(hash).map_err(|e| format!("secret_hash: {e}"))?;
    if hash.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err("secret_hash must be argon2id".into());
    }
    Ok(())
}

/// Parses `Basic base64(id:secret)`.
///
/// # Errors
/// [`IssueError::MalformedCredentials`] for any other shape.
pub fn parse_basic(value: &str) -> Result<(String, String), IssueError> {
    let encoded = value
        .strip_prefix("Basic ")
        .ok_or(IssueError::MalformedCredentials)?;
    let decoded = STANDARD
        .decode(encoded)
        .map_err(|_| IssueError::MalformedCredentials)?;
    let text = String::from_utf8(decoded).map_err(|_| IssueError::MalformedCredentials)?;
    let (id, secret) = text
        .split_once(':')
        .ok_or(IssueError::MalformedCredentials)?;
    if id.is_empty() || secret.is_empty() {
        return Err(IssueError::MalformedCredentials);
    }
    Ok((id.to_owned(), secret.to_owned()))
}

/// A fresh client secret: 256 random bits, base64url.
pub fn generate_secret() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The argon2id PHC hash of `secret`, for the `secret_hash` of a client.
///
/// # Errors
/// A message when hashing fails.
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing secret: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(secret: &str) -> ClientRegistry {
        let client = ClientConfig {
            id: "orders".into(),
            secret_hash: Some(hash_secret(secret).expect("hash")),
            spiffe_id: None,
            max_ttl_seconds: None,
            may_revoke: false,
            audiences: BTreeMap::from([("inventory".into(), vec!["inventory.read".into()])]),
        };
        ClientRegistry::new(&[client], 3600).expect("registry")
    }

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn scopes_with_whitespace_are_refused_at_start() {
        let client = ClientConfig {
            id: "orders".into(),
            secret_hash: Some(hash_secret("s").expect("hash")),
            spiffe_id: None,
            max_ttl_seconds: None,
            may_revoke: false,
            audiences: BTreeMap::from([(
                "inventory".into(),
                vec!["inventory.read inventory.reserve".into()],
            )]),
        };
        assert!(ClientRegistry::new(&[client], 3600).is_err());
    }

    #[test]
    fn right_secret_authenticates_and_everything_else_does_not() {
        let registry = registry("s3cret");
        assert_eq!(
            registry
                .authenticate(&basic("orders", "s3cret"))
                .map(|c| c.id.clone()),
            Ok("orders".into())
        );
        assert_eq!(
            registry.authenticate(&basic("orders", "wrong")).map(|_| ()),
            Err(IssueError::BadCredentials)
        );
        assert_eq!(
            registry
                .authenticate(&basic("nobody", "s3cret"))
                .map(|_| ()),
            Err(IssueError::BadCredentials)
        );
        for bad in [
            "Bearer x",
            "Basic !!!",
            "Basic b3JkZXJz",
            "basic b3JkZXJzOnMzY3JldA==",
        ] {
            assert_eq!(
                registry.authenticate(bad).map(|_| ()),
                Err(IssueError::MalformedCredentials),
                "{bad}"
            );
        }
    }
}
