//! `authorization` metadata through the server's whole check: the bearer
//! grammar, then verification. The first byte picks how the rest is read:
//! - even: the raw header value, as a client could send it;
//! - odd: `header JSON \0 payload JSON`, signed with the key the verifier
//!   trusts (`@kid` in the header becomes its `kid`), so the fuzzer reaches
//!   every claim check behind the signature.
//!
//! Nothing may panic, and whatever verifies must meet the token profile.

#![no_main]

use auth_interceptor::bearer::bearer_token;
use authmesh_fuzz::{AUDIENCE, ISSUER, KID_PLACEHOLDER, NOW, fixture};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use libfuzzer_sys::fuzz_target;

fn replace_kid(header: &[u8], kid: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + kid.len());
    let mut rest = header;
    while let Some(at) = rest
        .windows(KID_PLACEHOLDER.len())
        .position(|w| w == KID_PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(kid.as_bytes());
        rest = &rest[at + KID_PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let value = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Some(split) = rest.iter().position(|&b| b == 0) else {
            return;
        };
        let header = replace_kid(&rest[..split], fixture.key.kid());
        let Ok(token) = fixture.key.sign_raw(&header, &rest[split + 1..]) else {
            return;
        };
        format!("Bearer {token}").into_bytes()
    };
    // Bytes HTTP/2 itself would refuse never reach the server.
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let Ok(token) = bearer_token(&headers) else {
        return;
    };
    if let Ok(claims) = fixture.verifier.verify(token) {
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert!(!claims.sub.is_empty() && !claims.jti.is_empty());
        assert!(claims.iat <= NOW + 30 && NOW <= claims.exp + 30);
        assert!(claims.exp >= claims.iat && claims.exp - claims.iat <= 3600);
    }
});
