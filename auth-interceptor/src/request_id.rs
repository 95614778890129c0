//! [`RequestId`]: the id of one call, for logs across services.

use std::cell::Cell;

use http::{HeaderMap, HeaderValue};

/// The metadata key of the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The same as a header name built at compile time: inserting a `&str`
/// name that is not a standard header copies it on every insert.
pub(crate) const REQUEST_ID_NAME: http::HeaderName =
    http::HeaderName::from_static(REQUEST_ID_HEADER);

/// The id of one call, for logs across services: the caller's `x-request-id`
/// when it sent a sane one (1 to 128 of `A-Z a-z 0-9 - _ .`), else a fresh
/// one. Handlers find it in the request extensions, pass it on to the calls
/// they make, and it comes back to the caller in the response metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Id);

/// Where the id came from. A generated one stays inline: making it costs no
/// allocation, only echoing it does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Id {
    /// The caller's header value, shared with the request.
    Sent(HeaderValue),
    /// 16 hex digits.
    Generated([u8; 16]),
}

impl RequestId {
    /// The id of a call with `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        // By the prebuilt name: a `&str` name would be parsed on every call.
        let sent = headers.get(&REQUEST_ID_NAME).filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .as_bytes()
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
        match sent {
            // Shares the request's bytes: no copy.
            Some(id) => Self(Id::Sent(id.clone())),
            None => Self::generate(),
        }
    }

    /// A fresh id: 16 hex digits, unique within the thread (a counter) and
    /// unlikely to repeat across threads and processes (a random start per
    /// thread). Every call without an id makes one, so no RNG, no
    /// formatting machinery, and no counter that every core writes.
    fn generate() -> Self {
        thread_local! {
            static NEXT: Cell<Option<u64>> = const { Cell::new(None) };
        }
        let count = NEXT
            .try_with(|next| {
                let count = next.get().unwrap_or_else(rand::random::<u64>);
                next.set(Some(count.wrapping_add(1)));
                count
            })
            // During thread teardown: a random id.
            .unwrap_or_else(|_| rand::random::<u64>());
        // An odd multiplier is a bijection on u64: distinct counts, distinct ids.
        let id = count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut text = [0u8; 16];
        for (pair, byte) in text.chunks_exact_mut(2).zip(id.to_be_bytes()) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
        Self(Id::Generated(text))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets in (checked above, or hex digits).
        match &self.0 {
            Id::Sent(value) => value.to_str().unwrap_or_default(),
            Id::Generated(text) => std::str::from_utf8(text).unwrap_or_default(),
        }
    }

    /// The id for the response metadata. Marked sensitive so HTTP/2 sends
    /// it as a never-indexed literal: each call's id is new, and indexing
    /// it would churn both ends' HPACK tables (and evict the headers that
    /// do repeat) on every call.
    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut value = match &self.0 {
            Id::Sent(value) => value.clone(),
            Id::Generated(text) => {
                HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("0"))
            }
        };
        value.set_sensitive(true);
        value
    }
}

/// Each byte's two lowercase hex digits, built at compile time.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
        byte += 1;
    }
    pairs
};

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_hex() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                RequestId::from_headers(&HeaderMap::new())
                    .as_str()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn echoed_ids_are_the_ids() {
        let echoed: Vec<(RequestId, HeaderValue)> = (0..200)
            .map(|_| {
                let id = RequestId::from_headers(&HeaderMap::new());
                let value = id.header_value();
                (id, value)
            })
            .collect();
        for (id, value) in &echoed {
            assert_eq!(value.as_bytes(), id.as_str().as_bytes());
            assert!(value.is_sensitive());
        }
    }
}
