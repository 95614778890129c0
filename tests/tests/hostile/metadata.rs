//! gRPC metadata: where and how the token is carried.

use std::task::{Context, Poll};

use authmesh_proto::demo::inventory::v1::{GetStockRequest, inventory_client::InventoryClient};
use authmesh_tests::{bearer, get_stock};
use tonic::{
    Code, Request,
    body::Body,
    codegen::{
        Service,
        http::{self, HeaderName, HeaderValue},
    },
    transport::Channel,
};

use crate::Suite;

/// A channel that adds raw header entries to every request, bytes that
/// tonic's metadata types would refuse to build.
#[derive(Clone)]
struct RawHeaders {
    inner: Channel,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Service<http::Request<Body>> for RawHeaders {
    type Response = <Channel as Service<http::Request<Body>>>::Response;
    type Error = <Channel as Service<http::Request<Body>>>::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        self.inner.call(request)
    }
}

/// Sends GetStock through [`RawHeaders`] carrying `values` as `authorization`
/// entries, in order, and checks the refusal.
async fn refused_raw(suite: &Suite, case: &str, values: &[&[u8]], reason: &str, secret: &str) {
    let headers = values
        .iter()
        .map(|v| {
            (
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("a header value"),
            )
        })
        .collect();
    let channel = suite.mesh.channel(suite.mesh.addrs.inventory);
    let mut client = InventoryClient::new(RawHeaders {
        inner: channel,
        headers,
    });
    suite
        .refused_by(
            case,
            Request::new(get_stock()),
            Code::Unauthenticated,
            reason,
            &[secret],
            |request| async move { client.get_stock(request).await.map(drop) },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_authorization_is_unauthenticated_never_internal() {
    let suite = Suite::start().await;
    suite
        .refused_request(
            "no authorization",
            Request::new(get_stock()),
            Code::Unauthenticated,
            "TOKEN_MISSING",
            &[],
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_a_bare_token_an_empty_bearer_or_two_tokens() {
    let suite = Suite::start().await;
    let token = suite.genuine();
    let values = [
        (
            "Basic",
            format!("Basic {}", crate::b64(format!("orders:{token}"))),
        ),
        ("bare token", token.clone()),
        ("Bearer alone", "Bearer".to_owned()),
        ("Bearer and a space", "Bearer ".to_owned()),
        ("lower-case scheme", format!("bearer {token}")),
        ("two spaces", format!("Bearer  {token}")),
        ("tab", format!("Bearer\t{token}")),
        ("two tokens", format!("Bearer {token} {token}")),
        (
            "two tokens, comma",
            format!("Bearer {token}, Bearer {token}"),
        ),
        ("trailing space", format!("Bearer {token} ")),
    ];
    for (case, value) in values {
        refused_raw(
            &suite,
            case,
            &[value.as_bytes()],
            "AUTHORIZATION_MALFORMED",
            &token,
        )
        .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_entries_in_either_order() {
    let suite = Suite::start().await;
    let token = suite.genuine();
    suite.accepted(&token).await;
    let good = format!("Bearer {token}");
    for (case, values) in [
        (
            "good then bad",
            [good.as_bytes(), b"Bearer x.y.z".as_slice()],
        ),
        (
            "bad then good",
            [b"Bearer x.y.z".as_slice(), good.as_bytes()],
        ),
        ("good twice", [good.as_bytes(), good.as_bytes()]),
    ] {
        refused_raw(&suite, case, &values, "AUTHORIZATION_MALFORMED", &token).await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_anywhere_but_authorization() {
    let suite = Suite::start().await;
    let token = suite.genuine();
    let elsewhere = [
        ("authorization-bin", "authorization-bin"),
        ("x-authorization", "x-authorization"),
        ("token", "token"),
        ("cookie", "cookie"),
        ("proxy-authorization", "proxy-authorization"),
    ];
    for (case, name) in elsewhere {
        let mut request = Request::new(get_stock());
        if let Some(binary) = name.strip_suffix("-bin") {
            let key = format!("{binary}-bin")
                .parse::<tonic::metadata::BinaryMetadataKey>()
                .expect("key");
            request.metadata_mut().insert_bin(
                key,
                tonic::metadata::BinaryMetadataValue::from_bytes(
                    format!("Bearer {token}").as_bytes(),
                ),
            );
        } else {
            request.metadata_mut().insert(
                name.parse::<tonic::metadata::AsciiMetadataKey>()
                    .expect("key"),
                format!("Bearer {token}").parse().expect("ascii"),
            );
        }
        suite
            .refused_request(
                case,
                request,
                Code::Unauthenticated,
                "TOKEN_MISSING",
                &[&token],
            )
            .await;
    }
    // In the request body, where the handler would be the first to see it.
    let in_body = Request::new(GetStockRequest { sku: token.clone() });
    suite
        .refused_request(
            "in the body",
            in_body,
            Code::Unauthenticated,
            "TOKEN_MISSING",
            &[&token],
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_bytes_in_the_value() {
    let suite = Suite::start().await;
    let token = suite.genuine();
    let (head, tail) = token.split_at(20);
    for (case, value) in [
        (
            "latin-1 byte",
            [
                b"Bearer ".as_slice(),
                head.as_bytes(),
                b"\xe9",
                tail.as_bytes(),
            ]
            .concat(),
        ),
        (
            "utf-8 sequence",
            [
                b"Bearer ".as_slice(),
                head.as_bytes(),
                "é".as_bytes(),
                tail.as_bytes(),
            ]
            .concat(),
        ),
        (
            "trailing 0xff",
            [b"Bearer ".as_slice(), token.as_bytes(), b"\xff"].concat(),
        ),
    ] {
        refused_raw(&suite, case, &[&value], "AUTHORIZATION_MALFORMED", &token).await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_is_refused_and_the_connection_survives() {
    let suite = Suite::start().await;
    let token = suite.genuine();
    // One connection for all three calls.
    let channel = suite.mesh.channel(suite.mesh.addrs.inventory);
    let mut client = InventoryClient::new(channel);
    client
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("before");
    let handled = suite.mesh.inventory_handler.calls();
    let mut huge = bearer(get_stock(), &token);
    for i in 0..40 {
        huge.metadata_mut().insert(
            format!("x-padding-{i}")
                .parse::<tonic::metadata::AsciiMetadataKey>()
                .expect("key"),
            "p".repeat(2048).parse().expect("ascii"),
        );
    }
    let (mut first, mut second) = (client.clone(), client.clone());
    let (refused, beside) = tokio::join!(
        first.get_stock(huge),
        second.get_stock(bearer(get_stock(), &token)),
    );
    let status = refused.expect_err("80 KiB of headers exceed the 64 KiB list limit");
    assert_ne!(status.code(), Code::Ok);
    beside.expect("a stream beside it on the same connection");
    client
        .get_stock(bearer(get_stock(), &token))
        .await
        .expect("the connection still serves");
    assert_eq!(
        suite.mesh.inventory_handler.calls(),
        handled + 2,
        "the oversized call reached no handler"
    );
    suite.mesh.stop().await;
}
