//! A tonic service that verifies AuthMesh tokens with a static JWK Set: the
//! issuer's public keys in a file, and nothing else. No call to the issuer,
//! ever. Run it with `JWKS_FILE=jwks.json ISSUER=https://issuer.example
//! cargo run -p authmesh-examples --bin static_jwks`.

use auth_interceptor::{AuthLayer, CallerExt, KeySource, MethodPolicy, Verifier, VerifierConfig};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

mod echo {
    tonic::include_proto!("demo.echo.v1");
}
use echo::{
    SayReply, SayRequest,
    echo_server::{Echo, EchoServer},
};

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn say(&self, request: Request<SayRequest>) -> Result<Response<SayReply>, Status> {
        // Only calls whose token verified and whose scopes the policy
        // allows get here; the layer put the verified claims in.
        let caller = request.verified_claims().map(|c| c.sub.clone());
        let text = format!(
            "{} says {}",
            caller.unwrap_or_default(),
            request.get_ref().text
        );
        Ok(Response::new(SayReply { text }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or(default.to_owned());
    // A broken crypto backend stops the service here, not on every call.
    auth_interceptor::self_test()?;

    // Tokens must name this issuer (`iss`) and this service (`aud`).
    let config = VerifierConfig::new(env("ISSUER", "https://127.0.0.1:50051"), "echo");
    let verifier = Verifier::new(config)?;
    // The issuer's public keys; the file is re-read every minute, so a
    // rotated key set is picked up without a restart.
    let _keys =
        KeySource::file(env("JWKS_FILE", "jwks.json")).spawn(&verifier, Default::default())?;

    // Each method needs a rule; a method without one is denied.
    let policy = MethodPolicy::new().require("/demo.echo.v1.Echo/Say", ["echo.say"]);

    let listener = tokio::net::TcpListener::bind(env("LISTEN", "127.0.0.1:50060")).await?;
    println!("listening on {}", listener.local_addr()?);
    Server::builder()
        .layer(AuthLayer::new(verifier, policy))
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
