//! The bearer token of a call: exactly one `authorization: Bearer <token>`.

use http::{HeaderMap, header::AUTHORIZATION};

use crate::error::AuthError;

/// Extracts the token from exactly one `authorization: Bearer <token>` entry.
///
/// # Errors
/// [`AuthError::MissingToken`] with no entry; [`AuthError::MalformedAuthorization`]
/// for several entries, another scheme, non-visible-ASCII bytes or a bad shape.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    presented_token(headers).and_then(checked_token)
}

/// The bytes after `Bearer ` in exactly one `authorization` entry, not yet
/// checked for their characters: the call path checks them only for a
/// token it has not verified before ([`checked_token`]), since the exact
/// bytes of one it has were checked then.
///
/// # Errors
/// As [`bearer_token`], but for the characters.
pub(crate) fn presented_token(headers: &HeaderMap) -> Result<&[u8], AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedAuthorization("more than one entry"));
    }
    value
        .as_bytes()
        .strip_prefix(b"Bearer ")
        .ok_or(AuthError::MalformedAuthorization("scheme is not Bearer"))
}

/// `token` as text, when it is non-empty and made of base64url and dots only.
///
/// # Errors
/// [`AuthError::MalformedAuthorization`] otherwise.
pub(crate) fn checked_token(token: &[u8]) -> Result<&str, AuthError> {
    let valid = |chunk: &[u8]| chunk.iter().fold(true, |ok, &b| ok & is_token_byte(b));
    if token.is_empty() || !token.chunks(32).all(valid) {
        return Err(AuthError::MalformedAuthorization("bad token characters"));
    }
    // All ASCII by now, so this cannot fail; no unchecked conversion needed.
    std::str::from_utf8(token)
        .map_err(|_| AuthError::MalformedAuthorization("bad token characters"))
}

/// base64url alphabet plus the JWS separator. Branch-free, so the check
/// of a 32-byte chunk compiles to a few vector instructions: every call
/// checks a few hundred bytes.
#[inline]
fn is_token_byte(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10)
        | ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b == b'-')
        | (b == b'_')
        | (b == b'.')
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_bytes(v).expect("header"));
        }
        map
    }

    #[test]
    fn bearer_grammar_is_strict() {
        assert_eq!(bearer_token(&headers(&[b"Bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::MissingToken));
        for bad in [
            &b"Basic b3JkZXJzOnNlY3JldA=="[..],
            b"a.b.c",
            b"Bearer ",
            b"Bearer  a.b.c",
            b"bearer a.b.c",
            b"Bearer a.b.c a.b.c",
            b"Bearer a.b.c\xff",
        ] {
            assert!(
                matches!(
                    bearer_token(&headers(&[bad])),
                    Err(AuthError::MalformedAuthorization(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            bearer_token(&headers(&[b"Bearer a.b.c", b"Bearer d.e.f"])),
            Err(AuthError::MalformedAuthorization(_))
        ));
    }

    #[test]
    fn token_bytes_are_exactly_base64url_and_dot() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            assert_eq!(is_token_byte(b), expected, "byte {b:#04x}");
        }
    }
}
