//! The library examples run as a user runs them: each binary as a child
//! process on an ephemeral 127.0.0.1 port, called by a real tonic client
//! with real tokens.

use std::{process::Stdio, time::Duration};

use auth_interceptor::{Claims, JwkSet, SigningAlgorithm};
use authmesh_proto::authmesh::v1::{TokenRevocation, revoke_request};
use authmesh_signing::SigningKey;
use authmesh_tests::{TestMesh, decode_claims, reason};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::{
    Code, Request, Status,
    codegen::http::uri::PathAndQuery,
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// The echo messages, by hand: the examples' generated code lives in their binaries.
#[derive(Clone, PartialEq, prost::Message)]
struct SayRequest {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SayReply {
    #[prost(string, tag = "1")]
    text: String,
}

async fn say(channel: &Channel, token: Option<&str>) -> Result<String, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(SayRequest { text: "hi".into() });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    let reply: tonic::Response<SayReply> = grpc
        .unary(
            request,
            PathAndQuery::from_static("/demo.echo.v1.Echo/Say"),
            tonic_prost::ProstCodec::default(),
        )
        .await?;
    Ok(reply.into_inner().text)
}

/// Starts an example binary and returns it with the address it printed.
async fn start(binary: &str, env: &[(&str, String)]) -> (Child, String) {
    let mut child = Command::new(binary)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("example starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the example prints its address")
    .expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

/// Retries `call` while the service is still loading keys (UNAVAILABLE).
async fn once_ready<F, Fut>(mut call: F) -> Result<String, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, Status>>,
{
    for _ in 0..200 {
        match call().await {
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    call().await
}

fn claims(scope: &str) -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    Claims {
        iss: "https://issuer.example".into(),
        sub: "spiffe://authmesh.local/orders".into(),
        aud: "echo".into(),
        exp: now + 300,
        nbf: None,
        iat: now,
        jti: format!("example-{scope}"),
        scope: scope.into(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    }
}

#[tokio::test]
async fn the_static_jwks_example_verifies_with_a_key_file() {
    let (key, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let jwks = dir.path().join("jwks.json");
    let set = JwkSet {
        keys: vec![key.jwk().clone()],
    };
    std::fs::write(&jwks, serde_json::to_vec(&set).expect("json")).expect("write");
    let (_child, addr) = start(
        env!("CARGO_BIN_EXE_static_jwks"),
        &[
            ("ISSUER", "https://issuer.example".into()),
            ("JWKS_FILE", jwks.display().to_string()),
        ],
    )
    .await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();

    let good = key.sign(&claims("echo.say")).expect("sign");
    let answer = once_ready(|| say(&channel, Some(&good))).await;
    assert_eq!(
        answer.map_err(|status| status.code()),
        Ok("spiffe://authmesh.local/orders says hi".to_owned())
    );

    let no_token = say(&channel, None).await.expect_err("refused");
    assert_eq!(no_token.code(), Code::Unauthenticated);
    assert_eq!(reason(&no_token).as_deref(), Some("TOKEN_MISSING"));

    let wrong_scope = key.sign(&claims("echo.read")).expect("sign");
    let denied = say(&channel, Some(&wrong_scope))
        .await
        .expect_err("refused");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let (stranger, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("key");
    let forged = stranger.sign(&claims("echo.say")).expect("sign");
    let unknown = say(&channel, Some(&forged)).await.expect_err("refused");
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_example_takes_keys_and_revocations_from_the_mesh() {
    let mesh = TestMesh::start().await;
    let (cert, key) = mesh.state.workload_files("inventory");
    let (_child, addr) = start(
        env!("CARGO_BIN_EXE_token_service"),
        &[
            ("TOKEN_SERVICE", mesh.issuer()),
            ("CA_FILE", mesh.ca_path().display().to_string()),
            ("AUDIENCE", "inventory".into()),
            ("SCOPE", "inventory.read".into()),
            ("TLS_CERT", cert.display().to_string()),
            ("TLS_KEY", key.display().to_string()),
        ],
    )
    .await;
    let port = addr.rsplit(':').next().expect("port");
    let ca = Certificate::from_pem(std::fs::read(mesh.ca_path()).expect("ca"));
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))
        .expect("tls")
        .connect_lazy();

    let token = mesh.mint("inventory", &["inventory.read"], None).await;
    let answer = once_ready(|| say(&channel, Some(&token))).await;
    assert_eq!(
        answer.map_err(|status| status.code()),
        Ok(format!("{} says hi", decode_claims(&token).sub))
    );

    // A revocation reaches the example over its stream, without a restart.
    let claims = decode_claims(&token);
    mesh.revoke(revoke_request::Target::Token(TokenRevocation {
        jti: claims.jti,
        expires_at: i64::try_from(claims.exp).ok(),
    }))
    .await
    .expect("revoke");
    let mut refused = None;
    for _ in 0..200 {
        match say(&channel, Some(&token)).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("the revoked token is refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused).as_deref(), Some("TOKEN_REVOKED"));
    mesh.stop().await;
}
