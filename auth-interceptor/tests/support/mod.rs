//! What the layer's benchmark and its allocation guard share: calling a
//! tower service without an executor, requests and answers shaped as
//! tonic's.

#![allow(clippy::unwrap_used)] // test support: a panic is the failure

use futures_util::FutureExt;
use tower::{Service, ServiceExt};

/// One call to a service whose readiness and answer never wait (no executor needed).
pub fn call_now<S>(service: &mut S, request: http::Request<tonic::body::Body>) -> S::Response
where
    S: Service<http::Request<tonic::body::Body>>,
    S::Error: std::fmt::Debug,
{
    service
        .ready()
        .now_or_never()
        .unwrap()
        .unwrap()
        .call(request)
        .now_or_never()
        .unwrap()
        .unwrap()
}

/// A handler's answer as tonic makes one: the content type in the headers,
/// one message in the body.
pub fn tonic_answer() -> http::Response<tonic::body::Body> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"\0\0\0\0\0"),
        )))
        .unwrap()
}

/// What tonic's transport puts in every request's extensions before the
/// layers run (its connection info), so the extension map exists already,
/// as it does in a real server: creating it is not the layer's cost.
#[derive(Clone)]
pub struct ConnectInfo;

/// A request to `method` with `authorization: {bearer}` (and `x-request-id`
/// when given), as tonic's transport hands it to the layers.
pub fn tonic_request(
    method: &str,
    bearer: &str,
    request_id: Option<&str>,
) -> http::Request<tonic::body::Body> {
    let mut builder = http::Request::builder()
        .uri(method)
        .header("authorization", decoded_value(bearer))
        .extension(ConnectInfo);
    if let Some(id) = request_id {
        builder = builder.header("x-request-id", decoded_value(id));
    }
    builder.body(tonic::body::Body::empty()).unwrap()
}

/// A header value as h2's HPACK decoder hands it over: a slice of the
/// decoder's shared buffer, so cloning it only counts a reference (a value
/// made from a `&str` owns a fresh vector, and its first clone allocates).
fn decoded_value(text: &str) -> http::HeaderValue {
    let mut buffer = bytes::BytesMut::with_capacity(text.len() * 2);
    buffer.extend_from_slice(text.as_bytes());
    http::HeaderValue::from_maybe_shared(buffer.split().freeze()).unwrap()
}
