//! Local external identity providers for the tests, built with an
//! independent JWT library: `idp.py` (PyJWT) makes the keys and user tokens
//! of one provider shaped like Auth0 and one like Keycloak, and of a legacy
//! HS256 issuer; their discovery documents and JWK Sets are then served
//! over HTTPS with the mesh's localhost certificate.

use std::{collections::BTreeMap, path::PathBuf, process::Command};

use service_runtime::{
    http_endpoint::{Bytes, Routes, serve_http},
    tls::tls_incoming,
};

use crate::{TestMesh, python_with_pyjwt};

/// What `idp.py` prints.
#[derive(serde::Deserialize)]
struct Output {
    issuers: BTreeMap<String, String>,
    jwks: BTreeMap<String, serde_json::Value>,
    tokens: BTreeMap<String, String>,
}

/// The providers, served until dropped.
pub struct Idp {
    issuers: BTreeMap<String, String>,
    tokens: BTreeMap<String, String>,
    /// The legacy issuer's HS256 secret, in a file.
    pub secret_file: PathBuf,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A discovery document shaped like a provider's (a verifier reads only
/// `issuer` and `jwks_uri`).
fn discovery(issuer: &str, jwks_uri: &str) -> Bytes {
    let base = issuer.trim_end_matches('/');
    Bytes::from(
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/oauth/token"),
            "jwks_uri": jwks_uri,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        })
        .to_string(),
    )
}

impl Idp {
    /// Makes keys and tokens whose users' tokens are for `audience`, and
    /// serves the providers on an ephemeral port. `None` (after printing
    /// why) without python3 and PyJWT, unless tools are required.
    pub async fn start(mesh: &TestMesh, audience: &str) -> Option<Self> {
        let python = python_with_pyjwt()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!(
            "https://localhost:{}",
            listener.local_addr().expect("addr").port()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let secret_file = dir.path().join("legacy.secret");
        let output = {
            let (base, secret_file, audience) =
                (base.clone(), secret_file.clone(), audience.to_owned());
            tokio::task::spawn_blocking(move || {
                Command::new(python)
                    .args(["-c", include_str!("idp.py"), &base])
                    .arg(&secret_file)
                    .arg(&audience)
                    .output()
                    .expect("python3 runs")
            })
            .await
            .expect("join")
        };
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let output: Output = serde_json::from_slice(&output.stdout).expect("idp.py output");
        let (auth0, keycloak) = (&output.issuers["auth0"], &output.issuers["keycloak"]);
        let pages: BTreeMap<String, Bytes> = [
            (
                "/auth0/.well-known/openid-configuration".to_owned(),
                discovery(auth0, &format!("{auth0}.well-known/jwks.json")),
            ),
            (
                "/auth0/.well-known/jwks.json".to_owned(),
                Bytes::from(output.jwks["auth0"].to_string()),
            ),
            (
                "/realms/demo/.well-known/openid-configuration".to_owned(),
                discovery(
                    keycloak,
                    &format!("{keycloak}/protocol/openid-connect/certs"),
                ),
            ),
            (
                "/realms/demo/protocol/openid-connect/certs".to_owned(),
                Bytes::from(output.jwks["keycloak"].to_string()),
            ),
        ]
        .into();
        let routes: Routes = std::sync::Arc::new(move |path: &str| {
            pages
                .get(path)
                .map(|page| ("application/json", page.clone()))
        });
        let server = tokio::spawn(serve_http(
            Box::pin(tls_incoming(listener, mesh.https_server_config())),
            routes,
            std::future::pending(),
        ));
        Some(Self {
            issuers: output.issuers,
            tokens: output.tokens,
            secret_file,
            _dir: dir,
            server,
        })
    }

    /// The Auth0-shaped issuer (with its trailing slash).
    pub fn auth0(&self) -> &str {
        &self.issuers["auth0"]
    }

    /// The Keycloak-shaped issuer (a realm URL).
    pub fn keycloak(&self) -> &str {
        &self.issuers["keycloak"]
    }

    /// The legacy HS256 issuer.
    pub fn legacy(&self) -> &str {
        &self.issuers["legacy"]
    }

    /// A token `idp.py` made, by name.
    pub fn token(&self, name: &str) -> String {
        self.tokens
            .get(name)
            .unwrap_or_else(|| panic!("idp.py made no token {name:?}"))
            .clone()
    }

    /// `[[<table>]]` blocks trusting both providers through discovery
    /// (Auth0's scopes in `permissions`, Keycloak's `jti` required), CA
    /// `ca`, for a service's (`auth.trusted_issuers`) or the token
    /// service's (`trusted_issuers`) configuration.
    pub fn trusted_issuers_toml(&self, table: &str, ca: &std::path::Path) -> String {
        format!(
            r#"
[[{table}]]
issuer = "{auth0}"
discovery = true
ca = "{ca}"
scope_claim = "permissions"

[[{table}]]
issuer = "{keycloak}"
discovery = true
ca = "{ca}"
require_jti = true
"#,
            auth0 = self.auth0(),
            keycloak = self.keycloak(),
            ca = ca.display(),
        )
    }
}
