//! A tonic service in an AuthMesh mesh: keys from the token service's
//! `GetJwks` (refreshed in the background, never on the call path) and
//! revocations streamed from it, served over TLS. Needs the
//! `token-service` feature of `auth-interceptor`.
//!
//! ```text
//! TOKEN_SERVICE=https://localhost:50051 CA_FILE=.authmesh/ca.pem \
//! TLS_CERT=cert.pem TLS_KEY=key.pem cargo run -p authmesh-examples --bin token_service
//! ```

use auth_interceptor::{
    AuthLayer, CallerExt, KeySource, MethodPolicy, Verifier, VerifierConfig, spawn_revocation_watch,
};
use tonic::{
    Request, Response, Status,
    transport::{
        Certificate, Channel, ClientTlsConfig, Identity, Server, ServerTlsConfig,
        server::TcpIncoming,
    },
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
    auth_interceptor::self_test()?;
    let token_service = env("TOKEN_SERVICE", "https://localhost:50051");

    // One TLS channel to the token service, trusting the mesh CA.
    let ca = Certificate::from_pem(std::fs::read(env("CA_FILE", ".authmesh/ca.pem"))?);
    let channel = Channel::from_shared(token_service.clone())?
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))?
        .connect_lazy();

    // AuthMesh's `iss` is the token service's URL; `aud` is this service.
    let audience = env("AUDIENCE", "echo");
    let verifier = Verifier::new(VerifierConfig::new(token_service, audience))?;
    // Calls fail closed (UNAVAILABLE) until the first key set and the full
    // revocation list have arrived.
    let _keys = KeySource::TokenService(channel.clone()).spawn(&verifier, Default::default())?;
    let _revocations = spawn_revocation_watch(verifier.clone(), channel, Default::default());

    let scope = env("SCOPE", "echo.say");
    let policy = MethodPolicy::new().require("/demo.echo.v1.Echo/Say", [scope]);

    let identity = Identity::from_pem(
        std::fs::read(env("TLS_CERT", "cert.pem"))?,
        std::fs::read(env("TLS_KEY", "key.pem"))?,
    );
    let listener = tokio::net::TcpListener::bind(env("LISTEN", "127.0.0.1:50061")).await?;
    println!("listening on {}", listener.local_addr()?);
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .layer(AuthLayer::new(verifier, policy))
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
