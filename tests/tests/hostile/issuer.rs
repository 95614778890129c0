//! The issuer: credentials, allowlists and what a request may not choose.

use std::time::{Duration, Instant};

use authmesh::dev_state::DEMO_CLIENT;
use authmesh_proto::authmesh::v1::{IssueTokenRequest, IssueTokenResponse};
use authmesh_tests::{TestMesh, decode_claims, expect_status};
use service_runtime::{
    ClientTls,
    pki::{DEFAULT_TRUST_DOMAIN, DevPki, WorkloadCert},
};
use time::OffsetDateTime;
use tonic::{Code, Status};

use crate::Suite;

/// Refused with `code` and `reason`, and no token in the answer.
#[track_caller]
fn refused(result: Result<IssueTokenResponse, Status>, code: Code, reason: &str, secret: &str) {
    let status = expect_status(result, code, Some(reason));
    assert!(!status.message().contains(secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_the_caller_may_not_request_or_the_issuer_itself() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let secret = mesh.secret(DEMO_CLIENT);
    for audience in ["token-service", mesh.issuer().as_str()] {
        refused(
            mesh.mint_as(DEMO_CLIENT, &secret, audience, &[], None)
                .await,
            Code::PermissionDenied,
            "AUDIENCE_NOT_ALLOWED",
            &secret,
        );
    }
    // orders may have inventory tokens only.
    refused(
        mesh.mint_with_cert("orders", None, "orders", &[]).await,
        Code::PermissionDenied,
        "AUDIENCE_NOT_ALLOWED",
        &secret,
    );
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_escalation() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let secret = mesh.secret(DEMO_CLIENT);
    for scopes in [
        &["inventory.reserve"][..],
        &["inventory.read", "inventory.reserve"],
        &["inventory.*"],
        &["*"],
        &["Inventory.Read"],
        &["inventory.read2"],
    ] {
        refused(
            mesh.mint_as(DEMO_CLIENT, &secret, "inventory", scopes, None)
                .await,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
            &secret,
        );
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_above_the_cap_zero_or_negative() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let secret = mesh.secret(DEMO_CLIENT);
    for ttl in [3601, 86_400 * 3650, i64::MAX, 0, -1, -3600, i64::MIN] {
        refused(
            mesh.mint_as(DEMO_CLIENT, &secret, "inventory", &[], Some(ttl))
                .await,
            Code::InvalidArgument,
            "TTL_OUT_OF_RANGE",
            &secret,
        );
    }
    suite.mesh.stop().await;
}

/// `IssueTokenRequest` as an attacker would send it: the real fields, plus
/// fields the service does not define, naming claims it must not take.
#[derive(Clone, PartialEq, prost::Message)]
struct OverreachingRequest {
    #[prost(string, tag = "1")]
    audience: String,
    #[prost(string, repeated, tag = "2")]
    scopes: Vec<String>,
    #[prost(string, tag = "20")]
    sub: String,
    #[prost(string, tag = "21")]
    iss: String,
    #[prost(string, tag = "22")]
    claims_json: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_tries_to_set_sub_iss_or_extra_claims() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let mut grpc = tonic::client::Grpc::new(mesh.channel_as(mesh.addrs.token_service, None));
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(OverreachingRequest {
        audience: "inventory".into(),
        scopes: vec![],
        sub: "admin".into(),
        iss: "https://evil.example".into(),
        claims_json: r#"{"scope":"inventory.reserve","sub":"admin"}"#.into(),
    });
    let basic = authmesh_client::ClientCredentials::new(DEMO_CLIENT, mesh.secret(DEMO_CLIENT))
        .basic_authorization()
        .expect("basic");
    request.metadata_mut().insert("authorization", basic);
    for (name, value) in [("x-sub", "admin"), ("x-iss", "https://evil.example")] {
        request
            .metadata_mut()
            .insert(name, value.parse().expect("ascii"));
    }
    let codec = tonic_prost::ProstCodec::<OverreachingRequest, IssueTokenResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/authmesh.v1.TokenService/IssueToken",
    );
    let minted = grpc
        .unary(request, path, codec)
        .await
        .expect("the unknown fields are ignored")
        .into_inner();
    let claims = decode_claims(&minted.token);
    assert_eq!(claims.sub, DEMO_CLIENT, "sub is the authenticated caller");
    assert_eq!(claims.iss, mesh.issuer());
    assert_eq!(
        claims.scope, "inventory.read",
        "only what the allowlist grants"
    );
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_secrets_then_the_right_one_during_lockout() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let secret = mesh.secret(DEMO_CLIENT);
    let mut exhausted = 0;
    for attempt in 0..1000 {
        let status = mesh
            .mint_as(
                DEMO_CLIENT,
                &format!("guess-{attempt}"),
                "inventory",
                &[],
                None,
            )
            .await
            .expect_err("a wrong secret");
        match status.code() {
            Code::Unauthenticated => assert!(attempt < 10, "attempt {attempt} was checked"),
            Code::ResourceExhausted => exhausted += 1,
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(
        exhausted, 990,
        "every attempt past the threshold of 10 is refused unchecked"
    );
    // The right secret now looks exactly like a wrong one.
    let during = mesh
        .mint_as(DEMO_CLIENT, &secret, "inventory", &[], None)
        .await
        .expect_err("locked out");
    let wrong = mesh
        .mint_as(DEMO_CLIENT, "guess-again", "inventory", &[], None)
        .await
        .expect_err("locked out");
    assert_eq!(during.code(), Code::ResourceExhausted);
    assert_eq!(during.message(), wrong.message());
    assert_eq!(during.details(), wrong.details());
    // Certificates are not guessable: demo-cli's own still works, as does
    // another workload from the same address.
    mesh.mint_with_cert(DEMO_CLIENT, None, "inventory", &[])
        .await
        .expect("certificate authentication unaffected");
    mesh.mint_with_cert("orders", None, "inventory", &[])
        .await
        .expect("orders unaffected");
    mesh.clock.advance(61);
    mesh.mint_as(DEMO_CLIENT, &secret, "inventory", &[], None)
        .await
        .expect("the lockout ends");
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_across_client_ids_trips_the_per_source_limit() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    let secret = mesh.secret(DEMO_CLIENT);
    // A different id each time stays under every per-client threshold;
    // the 50 failures allowed from one address do not.
    let mut first_exhausted = None;
    for attempt in 0..60 {
        let status = mesh
            .mint_as(&format!("ghost-{attempt}"), "guess", "inventory", &[], None)
            .await
            .expect_err("unknown client");
        if status.code() == Code::ResourceExhausted && first_exhausted.is_none() {
            first_exhausted = Some(attempt);
        }
    }
    assert_eq!(
        first_exhausted,
        Some(50),
        "the source threshold is 50 failures"
    );
    expect_status(
        mesh.mint_as(DEMO_CLIENT, &secret, "inventory", &[], None)
            .await,
        Code::ResourceExhausted,
        Some("TOO_MANY_ATTEMPTS"),
    );
    suite.mesh.stop().await;
}

/// The median of how long each of `attempts` took to be refused.
async fn median_refusal(mesh: &TestMesh, clients: &[String]) -> Duration {
    let mut took = Vec::new();
    for client in clients {
        let started = Instant::now();
        let status = mesh
            .mint_as(client, "wrong-secret", "inventory", &[], None)
            .await
            .expect_err("wrong");
        took.push(started.elapsed());
        assert_eq!(status.code(), Code::Unauthenticated, "{client}: {status:?}");
    }
    took.sort();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_ids_cost_what_known_ones_cost() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    // A wrong secret for a known id runs argon2 (milliseconds); an unknown id
    // that skipped it would answer in microseconds. The decoy hash makes the
    // two alike: a ratio between runs in one process, so machine speed
    // cancels out, with a bound far from both outcomes.
    let known = vec![DEMO_CLIENT.to_owned(); 4];
    let unknown: Vec<String> = (0..4).map(|i| format!("nobody-{i}")).collect();
    let mut ratios = Vec::new();
    for _ in 0..2 {
        let k = median_refusal(mesh, &known).await;
        let u = median_refusal(mesh, &unknown).await;
        ratios.push(u.as_secs_f64() / k.as_secs_f64());
    }
    eprintln!("unknown/known refusal time: {ratios:?}");
    for ratio in ratios {
        assert!(
            (0.3..3.0).contains(&ratio),
            "an unknown id costs {ratio:.2}x a known one"
        );
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_as_another_client_from_an_unknown_ca_or_expired() {
    let suite = Suite::start().await;
    let mesh = &suite.mesh;
    // demo-cli's certificate with orders' name and secret claimed in Basic.
    let demo = mesh.secret(DEMO_CLIENT);
    expect_status(
        mesh.mint_with_cert("orders", Some((DEMO_CLIENT, &demo)), "inventory", &[])
            .await,
        Code::Unauthenticated,
        Some("IDENTITY_CONFLICT"),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mesh_ca = DevPki::ensure(&mesh.state.dir().join("tls"), &[]).expect("mesh ca");
    let foreign_ca = DevPki::ensure(&dir.path().join("foreign-ca"), &[]).expect("foreign ca");
    let (now, day) = (OffsetDateTime::now_utc(), time::Duration::days(1));
    let issue = |pki: &DevPki, sub: &str, from, to| {
        pki.issue_workload(
            &WorkloadCert {
                name: DEMO_CLIENT,
                trust_domain: DEFAULT_TRUST_DOMAIN,
                dns_names: &[],
                not_before: from,
                not_after: to,
            },
            &dir.path().join(sub),
        )
        .expect("issue")
    };
    for (case, files) in [
        (
            "unknown CA",
            issue(&foreign_ca, "foreign", now - day, now + day),
        ),
        (
            "expired",
            issue(&mesh_ca, "expired", now - 2 * day, now - day),
        ),
    ] {
        let channel = ClientTls::new(
            &mesh.ca_path(),
            Some((files.cert.as_path(), files.key.as_path())),
            Duration::from_millis(200),
        )
        .expect("client tls")
        .channel(&format!(
            "https://localhost:{}",
            mesh.addrs.token_service.port()
        ))
        .expect("channel");
        let status =
            authmesh_proto::authmesh::v1::token_service_client::TokenServiceClient::new(channel)
                .issue_token(IssueTokenRequest {
                    audience: "inventory".into(),
                    scopes: vec![],
                    ttl_seconds: None,
                    one_time: false,
                })
                .await
                .expect_err(case);
        // Refused in the TLS handshake, before any gRPC: the caller sees a
        // transport failure (TLS 1.3 may report it on the first read).
        assert!(
            matches!(
                status.code(),
                Code::Unauthenticated | Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{case}: {status:?}"
        );
    }
    suite.mesh.stop().await;
}
