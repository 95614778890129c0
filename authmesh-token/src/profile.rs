//! The AuthMesh token profile (RFC 9068 access tokens) and its strict parsing.
//!
//! Parsing is deliberately narrower than what jsonwebtoken accepts: the header
//! may hold only `alg`, `kid` and `typ`; duplicate keys anywhere at the top
//! level are refused; claims are typed, so a string `exp` or an array `aud`
//! never passes. The payload is parsed only after its signature verified.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, DeserializeOwned, MapAccess, Visitor},
};

use crate::error::TokenError;

/// The only `typ` an access token may carry.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The signature algorithms AuthMesh signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// Ed25519 (RFC 8037), the default.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl SigningAlgorithm {
    /// The JOSE name, as it appears in `alg`.
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
        }
    }

    /// The JOSE name parsed back; `None` for anything AuthMesh does not verify.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(SigningAlgorithm::EdDSA),
            "ES256" => Some(SigningAlgorithm::ES256),
            _ => None,
        }
    }

    /// The matching jsonwebtoken algorithm.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every algorithm a verifier may accept: AuthMesh's own two, RSA for
/// external identity providers (RS256 is the default of Auth0, Okta,
/// Keycloak and Entra ID), and HS256 for a shared-secret issuer, only
/// where one is explicitly configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum JwsAlgorithm {
    /// Ed25519.
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys of at least 2048 bits).
    RS256,
    /// RSASSA-PSS with SHA-256 (keys of at least 2048 bits).
    PS256,
    /// HMAC with SHA-256 over a shared secret of at least 32 bytes.
    HS256,
}

impl JwsAlgorithm {
    /// The JOSE name, as it appears in `alg`.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::EdDSA => "EdDSA",
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::HS256 => "HS256",
        }
    }

    /// The JOSE name parsed back; `None` for anything no verifier accepts.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            JwsAlgorithm::EdDSA,
            JwsAlgorithm::ES256,
            JwsAlgorithm::RS256,
            JwsAlgorithm::PS256,
            JwsAlgorithm::HS256,
        ]
        .into_iter()
        .find(|alg| alg.name() == name)
    }

    /// The matching jsonwebtoken algorithm.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            JwsAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            JwsAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            JwsAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            JwsAlgorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            JwsAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl From<SigningAlgorithm> for JwsAlgorithm {
    fn from(algorithm: SigningAlgorithm) -> Self {
        match algorithm {
            SigningAlgorithm::EdDSA => JwsAlgorithm::EdDSA,
            SigningAlgorithm::ES256 => JwsAlgorithm::ES256,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The JOSE header of an AuthMesh token: exactly these three members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenHeader {
    /// Signature algorithm; must equal the algorithm bound to the key `kid` names.
    pub alg: String,
    /// Key id, looked up in the issuer's key set.
    pub kid: String,
    /// Always `at+jwt`.
    pub typ: String,
}

/// The claims of an AuthMesh access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer's configured URL.
    pub iss: String,
    /// The caller's workload identity (client id or SPIFFE ID).
    pub sub: String,
    /// Exactly one target service.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not-before, Unix seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub nbf: Option<u64>,
    /// Issued-at, Unix seconds.
    pub iat: u64,
    /// Random 128-bit token id, base64url.
    pub jti: String,
    /// Granted scopes, space-separated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// The OAuth client the token was issued to.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub client_id: Option<String>,
    /// Certificate binding (RFC 8705): the token is valid only on a
    /// connection whose client certificate has this thumbprint.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub cnf: Option<Confirmation>,
    /// A one-time token: each verifier accepts its `jti` once.
    #[serde(default, skip_serializing_if = "is_false")]
    pub one_time: bool,
    /// On a token minted by token exchange (RFC 8693): the workload acting
    /// for `sub`, and whoever acted before it, innermost first in line.
    /// Only the token service writes it: an external issuer's `act` refuses
    /// its token.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub act: Option<Actor>,
    /// On a token minted by token exchange: the issuer of the user the
    /// token is for (`sub` is that issuer's subject).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub subject_issuer: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Longest delegation chain a token may carry, whatever a policy allows.
pub const MAX_ACTOR_CHAIN: usize = 8;

/// The `act` claim (RFC 8693 section 4.1): who acts, and for whom it acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The acting workload's identity (its SPIFFE ID, or its client id).
    pub sub: String,
    /// The actor before this one, when the token was exchanged again.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_non_null"
    )]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// The actors, the current one first.
    pub fn chain(&self) -> impl Iterator<Item = &Actor> {
        std::iter::successors(Some(self), |actor| actor.act.as_deref())
    }

    /// How many actors the chain holds.
    pub fn depth(&self) -> usize {
        self.chain().count()
    }
}

/// The `cnf` claim of a certificate-bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// `x5t#S256`: base64url SHA-256 of the client certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

impl Claims {
    /// The granted scopes, one by one.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// Whether the token grants `scope` (exact match). Policy checks run
    /// this on every call: a byte split, no `str` pattern machinery.
    pub fn has_scope(&self, scope: &str) -> bool {
        // Most tokens carry the one scope their audience needs.
        if self.scope == scope {
            return !scope.is_empty();
        }
        !scope.is_empty()
            && self
                .scope
                .as_bytes()
                .split(|&b| b == b' ')
                .any(|granted| granted == scope.as_bytes())
    }
}

/// An optional member that, when present, must not be `null`.
fn some_non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The three segments of a compact JWS, borrowed from the token.
#[derive(Debug, Clone, Copy)]
pub struct TokenParts<'a> {
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// base64url header.
    pub header: &'a str,
    /// base64url payload.
    pub payload: &'a str,
    /// base64url signature.
    pub signature: &'a str,
}

/// Splits a compact JWS into its three segments; anything else (JWE, JSON
/// serialization, missing or extra segments) is malformed.
///
/// # Errors
/// [`TokenError::TooLarge`] above [`MAX_TOKEN_BYTES`], [`TokenError::Malformed`] otherwise.
pub fn split_token(token: &str) -> Result<TokenParts<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge {
            max: MAX_TOKEN_BYTES,
        });
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(TokenError::Malformed("expected three segments"));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenError::Malformed("empty segment"));
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(TokenParts {
        signing_input,
        header,
        payload,
        signature,
    })
}

/// The JOSE header members other than `alg`, `kid` and `typ` that a refusal
/// may name. Any other name is attacker-chosen text and is reported as
/// `unknown`, so nothing from the token is ever echoed back.
const KNOWN_HEADERS: [&str; 12] = [
    "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "zip", "enc", "cty", "epk",
];

/// Decodes and strictly parses the header segment: exactly `alg`, `kid` and
/// `typ`, each a string, no member twice.
///
/// # Errors
/// [`TokenError::Malformed`] for bad base64, bad JSON or a repeated member;
/// [`TokenError::UnsupportedHeader`] for any other member (never followed);
/// [`TokenError::MissingHeader`] or [`TokenError::InvalidHeader`] naming
/// the member; [`TokenError::WrongType`] when `typ` is not `at+jwt`.
pub fn parse_header(segment: &str) -> Result<TokenHeader, TokenError> {
    let mut object = header_object(segment)?;
    if let Some(extra) = object
        .keys()
        .find(|name| !matches!(name.as_str(), "alg" | "kid" | "typ"))
    {
        let named = KNOWN_HEADERS
            .iter()
            .find(|known| **known == extra.as_str())
            .copied()
            .unwrap_or("unknown");
        return Err(TokenError::UnsupportedHeader(named));
    }
    let mut member = |name: &'static str| match object.remove(name) {
        None => Err(TokenError::MissingHeader(name)),
        Some(serde_json::Value::String(value)) => Ok(value),
        Some(_) => Err(TokenError::InvalidHeader(name)),
    };
    let header = TokenHeader {
        alg: member("alg")?,
        kid: member("kid")?,
        typ: member("typ")?,
    };
    if header.typ != ACCESS_TOKEN_TYPE {
        return Err(TokenError::WrongType);
    }
    Ok(header)
}

/// The header of a token from an external issuer: `alg` and `typ` as
/// strings, `kid` when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalHeader {
    /// Signature algorithm.
    pub alg: String,
    /// Key id; absent in some shared-secret (HS256) tokens.
    pub kid: Option<String>,
    /// Token type, checked against the issuer's accepted types.
    pub typ: String,
}

/// Header members that change how a token must be read or where its key
/// comes from. A verifier that does not act on them must not accept them:
/// it never fetches `jku`/`x5u`, never trusts an embedded `jwk`/`x5c`, and
/// understands no `crit` extension, unencoded payload or nested token.
const REFUSED_EXTERNAL_HEADERS: [&str; 10] = [
    "jku", "jwk", "x5u", "x5c", "crit", "b64", "zip", "enc", "cty", "epk",
];

/// Decodes the header of a token from an external identity provider,
/// which may carry informational members (`x5t`, `nonce`, ...): those are
/// ignored, while the members of [`REFUSED_EXTERNAL_HEADERS`] refuse it.
/// `typ` must be one of `types`.
///
/// # Errors
/// As [`parse_header`], with [`TokenError::WrongType`] for a `typ` not in `types`.
pub fn parse_external_header(
    segment: &str,
    types: &[String],
) -> Result<ExternalHeader, TokenError> {
    let mut object = header_object(segment)?;
    if let Some(refused) = REFUSED_EXTERNAL_HEADERS
        .iter()
        .find(|name| object.contains_key(**name))
    {
        return Err(TokenError::UnsupportedHeader(refused));
    }
    let mut member = |name: &'static str| match object.remove(name) {
        None => Ok(None),
        Some(serde_json::Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(TokenError::InvalidHeader(name)),
    };
    let header = ExternalHeader {
        alg: member("alg")?.ok_or(TokenError::MissingHeader("alg"))?,
        kid: member("kid")?,
        typ: member("typ")?.ok_or(TokenError::MissingHeader("typ"))?,
    };
    if !types.contains(&header.typ) {
        return Err(TokenError::WrongType);
    }
    Ok(header)
}

/// Where an external issuer puts the scopes it grants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ScopeClaim {
    /// `scope`: one space-separated string (RFC 9068; Auth0, Keycloak).
    #[default]
    Scope,
    /// `scp`: an array of strings (Okta), or a space-separated string (Entra ID).
    Scp,
    /// `permissions`: an array of strings (Auth0 RBAC).
    Permissions,
}

impl ScopeClaim {
    fn name(self) -> &'static str {
        match self {
            ScopeClaim::Scope => "scope",
            ScopeClaim::Scp => "scp",
            ScopeClaim::Permissions => "permissions",
        }
    }
}

/// The claims of a token from an external issuer, read into the AuthMesh
/// [`Claims`] shape so policies and handlers see one form, plus what that
/// shape has no room for: `aud` as given (a string or an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalClaims {
    /// The claims; `aud` is empty until the verifier matches its audience
    /// among [`ExternalClaims::audiences`], `jti` empty when absent, scopes
    /// read from the configured claim.
    pub claims: Claims,
    /// Every audience the token names.
    pub audiences: Vec<String>,
}

/// An `aud` claim: one string or an array of strings (RFC 7519).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Scopes as a space-separated string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeValue {
    Spaced(String),
    List(Vec<String>),
}

/// Decodes and parses the payload of a token from an external issuer.
/// Call only after the signature verified. `iss`, `sub`, `aud`, `exp` and
/// `iat` are required (`iat` bounds the lifetime); `jti` is read when
/// present; the token's own `one_time` and `subject_issuer` are ignored
/// (only the mesh's tokens may carry them); an `act` claim, or a scope
/// containing a space (which would become two scopes), refuses the token.
///
/// # Errors
/// As [`parse_claims`].
pub fn parse_external_claims(
    segment: &str,
    scope_claim: ScopeClaim,
) -> Result<ExternalClaims, TokenError> {
    let mut object = payload_object(segment)?;
    let scope_name = scope_claim.name();
    let scope = Claim {
        name: scope_name,
        value: object.remove(scope_name),
    }
    .optional::<ScopeValue>()?;
    let scope = match scope {
        None => String::new(),
        Some(ScopeValue::Spaced(scope)) => scope,
        Some(ScopeValue::List(scopes)) => {
            if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                return Err(TokenError::InvalidClaim(scope_name));
            }
            scopes.join(" ")
        }
    };
    // Delegation is the token service's to record: an external issuer's
    // `act` would let whoever controls that issuer forge a chain.
    if object.contains_key("act") {
        return Err(TokenError::InvalidClaim("act"));
    }
    let mut claim = |name: &'static str| Claim {
        name,
        value: object.remove(name),
    };
    let audiences = match claim("aud").required::<Audience>()? {
        Audience::One(aud) => vec![aud],
        Audience::Many(auds) => auds,
    };
    Ok(ExternalClaims {
        claims: Claims {
            iss: claim("iss").required()?,
            sub: claim("sub").required()?,
            aud: String::new(),
            exp: claim("exp").required()?,
            nbf: claim("nbf").optional()?,
            iat: claim("iat").required()?,
            jti: claim("jti").optional()?.unwrap_or_default(),
            scope,
            client_id: match claim("client_id").optional()? {
                Some(id) => Some(id),
                None => claim("azp").optional()?,
            },
            cnf: claim("cnf").optional()?,
            one_time: false,
            act: None,
            subject_issuer: None,
        },
        audiences,
    })
}

/// The `iss` a token claims, read before anything is verified, only to
/// choose whose keys to try: nothing else of the payload is trusted here.
///
/// # Errors
/// [`TokenError::InvalidClaims`] for a payload that is not one JSON object
/// with unique members, [`TokenError::MissingClaim`] or
/// [`TokenError::InvalidClaim`] for `iss`.
pub fn peek_issuer(segment: &str) -> Result<String, TokenError> {
    let mut object = payload_object(segment)?;
    Claim {
        name: "iss",
        value: object.remove("iss"),
    }
    .required()
}

/// Decodes and strictly parses the payload segment. Call only after the
/// signature verified.
///
/// # Errors
/// [`TokenError::InvalidClaims`] for bad base64, JSON that is not an object
/// or repeats a member; [`TokenError::MissingClaim`] for a required claim
/// that is absent and [`TokenError::InvalidClaim`] for a claim of the wrong
/// type (a string `exp`, an array `aud`, a `null`), each naming the claim.
pub fn parse_claims(segment: &str) -> Result<Claims, TokenError> {
    claims_from_object(payload_object(segment)?)
}

/// Takes each claim of the profile out of `object` by name, so a refusal
/// names the claim; members the profile does not know are ignored.
fn claims_from_object(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> Result<Claims, TokenError> {
    let mut claim = |name: &'static str| Claim {
        name,
        value: object.remove(name),
    };
    Ok(Claims {
        iss: claim("iss").required()?,
        sub: claim("sub").required()?,
        aud: claim("aud").required()?,
        exp: claim("exp").required()?,
        nbf: claim("nbf").optional()?,
        iat: claim("iat").required()?,
        jti: claim("jti").required()?,
        scope: claim("scope").optional()?.unwrap_or_default(),
        client_id: claim("client_id").optional()?,
        cnf: claim("cnf").optional()?,
        one_time: claim("one_time").optional()?.unwrap_or(false),
        act: match claim("act").optional::<Actor>()? {
            Some(actor)
                if actor.depth() > MAX_ACTOR_CHAIN || actor.chain().any(|a| a.sub.is_empty()) =>
            {
                return Err(TokenError::InvalidClaim("act"));
            }
            act => act,
        },
        subject_issuer: claim("subject_issuer").optional()?,
    })
}

/// One claim taken out of the payload, with its name for the refusal.
struct Claim {
    name: &'static str,
    value: Option<serde_json::Value>,
}

impl Claim {
    /// The claim's value when present; present means of the right type
    /// (an explicit `null` is a wrong type, not an absent claim).
    fn optional<T: DeserializeOwned>(self) -> Result<Option<T>, TokenError> {
        let name = self.name;
        self.value
            .map(|value| serde_json::from_value(value).map_err(|_| TokenError::InvalidClaim(name)))
            .transpose()
    }

    fn required<T: DeserializeOwned>(self) -> Result<T, TokenError> {
        let name = self.name;
        self.optional()?.ok_or(TokenError::MissingClaim(name))
    }
}

/// The header segment as a JSON object with unique members.
fn header_object(segment: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    parse_object(&bytes).ok_or(TokenError::Malformed(
        "header is not a JSON object with unique members",
    ))
}

/// The payload segment as a JSON object with unique members.
fn payload_object(segment: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::InvalidClaims("payload is not base64url"))?;
    parse_object(&bytes).ok_or(TokenError::InvalidClaims(
        "payload is not a JSON object with unique members",
    ))
}

/// A JSON object with no top-level member twice (which serde alone only
/// catches for the fields a struct knows about).
fn parse_object(bytes: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice::<UniqueKeyObject>(bytes)
        .ok()
        .map(|object| object.0)
}

/// A JSON object whose top-level keys are all distinct.
struct UniqueKeyObject(serde_json::Map<String, serde_json::Value>);

impl<'de> Deserialize<'de> for UniqueKeyObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = UniqueKeyObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with unique keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if object.insert(key, value).is_some() {
                        return Err(de::Error::custom("duplicate member"));
                    }
                }
                Ok(UniqueKeyObject(object))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests;
