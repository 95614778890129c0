//! Token exchange (RFC 8693 semantics) at the token service, with user
//! tokens from an independent JWT library (PyJWT, through `idp.py`) served
//! by a local Auth0-shaped and Keycloak-shaped provider: orders acts for a
//! user at inventory, inventory acts again for orders' user (a chain), and
//! every refusal the exchange makes, each with its reason.

use std::time::Duration;

use authmesh_proto::authmesh::v1::{
    ExchangeTokenRequest, ExchangeTokenResponse, revoke_request,
    token_service_client::TokenServiceClient,
};
use authmesh_proto::demo::inventory::v1::inventory_client::InventoryClient;
use authmesh_tests::{
    TestMesh, bearer, decode_claims, decode_payload, expect_status, idp::Idp, reserve_one,
};
use tonic::{Code, Status, transport::Channel};

/// The exchange configuration appended to `token-service.toml`: inventory
/// becomes a client (by certificate) so it can act in turn; orders may act
/// for Auth0's users at inventory; inventory may act again for them at
/// orders, on a chain of two when the user's token lets it reserve, of one
/// (so never, after orders) when it lets it only read.
fn exchange_toml(idp: &Idp, mesh_issuer: &str) -> String {
    format!(
        r#"
[[clients]]
id = "inventory"
spiffe_id = "spiffe://authmesh.local/inventory"

[[exchange]]
name = "orders-for-auth0-users"
actors = ["orders"]
subject_issuers = ["{auth0}"]
audience = "inventory"
scopes = ["inventory.read", "inventory.reserve"]

[[exchange]]
name = "inventory-for-reserving-users"
actors = ["inventory"]
subject_issuers = ["{mesh_issuer}"]
subject_scopes = ["inventory.reserve"]
audience = "orders"
scopes = ["orders.write"]
max_chain_depth = 2

[[exchange]]
name = "inventory-for-reading-users"
actors = ["inventory"]
subject_issuers = ["{mesh_issuer}"]
subject_scopes = ["inventory.read"]
audience = "orders"
scopes = ["orders.write"]
"#,
        auth0 = idp.auth0(),
    )
}

fn request(subject_token: &str, audience: &str, scopes: &[&str]) -> ExchangeTokenRequest {
    ExchangeTokenRequest {
        subject_token: subject_token.to_owned(),
        subject_token_type: String::new(),
        audience: audience.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ttl_seconds: None,
    }
}

async fn exchange(
    client: &TokenServiceClient<Channel>,
    request: ExchangeTokenRequest,
) -> Result<ExchangeTokenResponse, Status> {
    client
        .clone()
        .exchange_token(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Asserts a refusal with `code` and `reason`, whose message names `cause`.
#[track_caller]
fn refused(result: Result<ExchangeTokenResponse, Status>, code: Code, reason: &str, cause: &str) {
    let status = expect_status(result, code, Some(reason));
    assert!(
        status.message().contains(cause),
        "{reason}: expected {cause:?} in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_act_for_users_within_the_exchange_rules() {
    let mut mesh = TestMesh::start().await;
    // The users' tokens are for orders, the workload that exchanges them.
    let Some(idp) = Idp::start(&mesh, "orders").await else {
        return;
    };
    let config = mesh.state.token_service_config();
    let mut text = std::fs::read_to_string(&config).expect("token-service.toml");
    text.push_str(&idp.trusted_issuers_toml("trusted_issuers", &mesh.ca_path()));
    text.push_str(&exchange_toml(&idp, &mesh.issuer()));
    std::fs::write(&config, text).expect("write token-service.toml");
    mesh.restart_token_service().await;
    let orders = mesh.token_client_as("orders");
    let user_token = idp.token("auth0_rs256");
    let user_exp = decode_payload(&user_token)["exp"].as_u64().expect("exp");

    // Orders acts for the user at inventory. The providers' keys arrive in
    // the background: until then the exchange is refused, never granted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let exchanged = loop {
        match exchange(
            &orders,
            request(&user_token, "inventory", &["inventory.reserve"]),
        )
        .await
        {
            Ok(exchanged) => break exchanged,
            Err(status) if status.message().contains("KEYS_UNAVAILABLE") => {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("exchange refused: {status:?}"),
        }
    };
    assert_eq!(
        exchanged.issued_token_type,
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(exchanged.scope, "inventory.reserve");
    let claims = decode_claims(&exchanged.token);
    assert_eq!(claims.iss, mesh.issuer());
    assert_eq!(claims.sub, "auth0|alice", "the user, not the workload");
    assert_eq!(claims.aud, "inventory");
    assert_eq!(claims.subject_issuer.as_deref(), Some(idp.auth0()));
    assert_eq!(claims.client_id.as_deref(), Some("orders"));
    let act = claims.act.clone().expect("act");
    assert_eq!(act.sub, TestMesh::spiffe_id("orders"));
    assert!(act.act.is_none());
    assert!(claims.exp <= user_exp, "never outlives the user's token");
    assert_eq!(
        claims.cnf.map(|cnf| cnf.x5t_s256),
        Some(mesh.thumbprint("orders")),
        "bound to the actor's certificate"
    );
    // Inventory accepts it from orders (its certificate) for the user.
    let mut inventory = InventoryClient::new(mesh.channel_as(mesh.addrs.inventory, Some("orders")));
    inventory
        .reserve(bearer(reserve_one(), &exchanged.token))
        .await
        .expect("inventory accepts orders acting for the user");

    // Inventory's policy lets users reserve only through orders: a token
    // for the user that may only read is refused, the denial naming who
    // acted for whom.
    let read_only = exchange(
        &orders,
        request(&user_token, "inventory", &["inventory.read"]),
    )
    .await
    .expect("a read-only exchange");
    let denied = expect_status(
        inventory
            .reserve(bearer(reserve_one(), &read_only.token))
            .await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    let info = tonic_types::StatusExt::get_details_error_info(&denied).expect("ErrorInfo");
    assert_eq!(info.metadata["rule"], "users-reserve-through-orders");
    assert_eq!(info.metadata["act"], TestMesh::spiffe_id("orders"));
    assert_eq!(info.metadata["subject_issuer"], idp.auth0());
    // `authmesh explain` shows the same chain, offline.
    let orders_cert = mesh.state.workload_files("orders").0;
    let explained = authmesh::explain::explain(
        &mesh.state,
        &authmesh::explain::ExplainRequest {
            token: &read_only.token,
            service: "inventory",
            method: "/demo.inventory.v1.Inventory/Reserve",
            cert: Some(&orders_cert),
        },
    )
    .await
    .expect("explain");
    assert_eq!(explained["decision"], "deny", "{explained}");
    assert_eq!(explained["metadata"]["act"], info.metadata["act"].as_str());
    assert_eq!(explained["caller"]["sub"], "auth0|alice");
    assert_eq!(
        explained["caller"]["act"],
        serde_json::json!([TestMesh::spiffe_id("orders")])
    );

    // Inventory acts again, at orders, for the same user: a chain of two.
    let inventory_ts = mesh.token_client_as("inventory");
    let chained = exchange(&inventory_ts, request(&exchanged.token, "orders", &[]))
        .await
        .expect("a chain of two is allowed for reserving users");
    let chained_claims = decode_claims(&chained.token);
    assert_eq!(chained_claims.sub, "auth0|alice");
    assert_eq!(chained_claims.subject_issuer.as_deref(), Some(idp.auth0()));
    let chain: Vec<String> = chained_claims
        .act
        .as_ref()
        .expect("act")
        .chain()
        .map(|actor| actor.sub.clone())
        .collect();
    assert_eq!(
        chain,
        [
            TestMesh::spiffe_id("inventory"),
            TestMesh::spiffe_id("orders")
        ]
    );
    assert_eq!(chained.scope, "orders.write");

    // A user token that expires before the default lifetime caps the new one.
    let short = idp.token("auth0_short_lived");
    let short_exp = decode_payload(&short)["exp"].as_u64().expect("exp");
    let capped = exchange(&orders, request(&short, "inventory", &[]))
        .await
        .expect("exchange of a short-lived user token");
    assert_eq!(decode_claims(&capped.token).exp, short_exp);

    // Refusals, each with its reason; none issues anything.
    let read_only = exchange(
        &orders,
        request(&user_token, "inventory", &["inventory.read"]),
    )
    .await
    .expect("a read-only exchange");
    for (result, code, reason, cause) in [
        // A chain deeper than the matching rule allows.
        (
            exchange(&inventory_ts, request(&read_only.token, "orders", &[])).await,
            Code::PermissionDenied,
            "DELEGATION_TOO_DEEP",
            "2 actors",
        ),
        // The exchanged token used to climb: more scopes than the rule allows...
        (
            exchange(
                &inventory_ts,
                request(&exchanged.token, "orders", &["orders.admin"]),
            )
            .await,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
            "orders.admin",
        ),
        // ...or a token for the actor itself.
        (
            exchange(&inventory_ts, request(&exchanged.token, "inventory", &[])).await,
            Code::PermissionDenied,
            "EXCHANGE_NOT_ALLOWED",
            "for itself",
        ),
        // Scopes outside the rules.
        (
            exchange(
                &orders,
                request(&user_token, "inventory", &["inventory.admin"]),
            )
            .await,
            Code::PermissionDenied,
            "SCOPE_NOT_ALLOWED",
            "inventory.admin",
        ),
        // An issuer no rule of orders names (Keycloak is trusted, not allowed).
        (
            exchange(
                &orders,
                request(&idp.token("keycloak_es256"), "inventory", &[]),
            )
            .await,
            Code::PermissionDenied,
            "EXCHANGE_NOT_ALLOWED",
            "no exchange rule",
        ),
        // A workload that may not exchange at all.
        (
            exchange(
                &mesh.token_client_as("demo-cli"),
                request(&user_token, "inventory", &[]),
            )
            .await,
            Code::PermissionDenied,
            "EXCHANGE_NOT_ALLOWED",
            "may not exchange",
        ),
        // Subject tokens: expired, untrusted issuer, for another audience,
        // a forged `act`, a mesh token carrying no user, an exchanged token
        // presented by a workload it is not for.
        (
            exchange(&orders, request(&idp.token("expired"), "inventory", &[])).await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "TOKEN_EXPIRED",
        ),
        (
            exchange(
                &orders,
                request(&idp.token("untrusted_issuer"), "inventory", &[]),
            )
            .await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "ISSUER_UNTRUSTED",
        ),
        (
            exchange(
                &orders,
                request(&idp.token("wrong_audience"), "inventory", &[]),
            )
            .await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "AUDIENCE_MISMATCH",
        ),
        (
            exchange(&orders, request(&idp.token("forged_act"), "inventory", &[])).await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "claim act",
        ),
        (
            exchange(
                &orders,
                request(
                    &mesh.mint("orders", &["orders.write"], None).await,
                    "inventory",
                    &[],
                ),
            )
            .await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "SUBJECT_NOT_A_USER",
        ),
        (
            exchange(&orders, request(&exchanged.token, "inventory", &[])).await,
            Code::InvalidArgument,
            "SUBJECT_TOKEN_INVALID",
            "AUDIENCE_MISMATCH",
        ),
        (
            exchange(
                &orders,
                ExchangeTokenRequest {
                    subject_token_type: "urn:ietf:params:oauth:token-type:saml2".into(),
                    ..request(&user_token, "inventory", &[])
                },
            )
            .await,
            Code::InvalidArgument,
            "EXCHANGE_INVALID",
            "subject_token_type",
        ),
    ] {
        refused(result, code, reason, cause);
    }

    // A revoked user: every token of theirs issued so far is refused as a
    // subject token, and the tokens exchanged for them stop verifying.
    mesh.revoke(revoke_request::Target::Subject(
        authmesh_proto::authmesh::v1::SubjectRevocation {
            sub: "auth0|alice".into(),
            issued_before: None,
        },
    ))
    .await
    .expect("revoked");
    refused(
        exchange(&orders, request(&user_token, "inventory", &[])).await,
        Code::InvalidArgument,
        "SUBJECT_TOKEN_INVALID",
        "TOKEN_REVOKED",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match inventory
            .reserve(bearer(reserve_one(), &exchanged.token))
            .await
        {
            Err(status) if authmesh_tests::reason(&status).as_deref() == Some("TOKEN_REVOKED") => {
                break;
            }
            outcome => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the user's exchanged token still works: {outcome:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    mesh.stop().await;
}

/// The demo's flow end to end: a user places an order with their own
/// token; orders exchanges it and reserves at inventory on their behalf;
/// inventory records the user and orders as the actor, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_places_an_order_on_a_users_behalf() {
    let mut mesh = TestMesh::start().await;
    let Some(idp) = Idp::start(&mesh, "orders").await else {
        return;
    };
    let ca = mesh.ca_path();
    let append = |path: std::path::PathBuf, text: String| {
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(&text);
        std::fs::write(&path, config).expect("write config");
    };
    append(
        mesh.state.token_service_config(),
        format!(
            "{}\n[[exchange]]\nname = \"orders-for-auth0-users\"\nactors = [\"orders\"]\n\
             subject_issuers = [\"{}\"]\nsubject_scopes = [\"orders.write\"]\n\
             audience = \"inventory\"\nscopes = [\"inventory.read\", \"inventory.reserve\"]\n",
            idp.trusted_issuers_toml("trusted_issuers", &ca),
            idp.auth0(),
        ),
    );
    append(
        mesh.state.orders_config(),
        idp.trusted_issuers_toml("auth.trusted_issuers", &ca),
    );
    mesh.restart_token_service().await;
    mesh.restart_orders().await;

    let place = |token: String| {
        let mesh = &mesh;
        async move { mesh.place_order(&token, 2).await }
    };
    // Both orders' and the token service's keys of the provider arrive in
    // the background: until then the order is refused, never placed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let placed = loop {
        match place(idp.token("auth0_orders_writer")).await {
            Ok(placed) => break placed,
            Err(status)
                if status.message().contains("KEYS_UNAVAILABLE")
                    || status.code() == Code::Unavailable =>
            {
                assert!(tokio::time::Instant::now() < deadline, "{status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("order refused: {status:?}"),
        }
    };
    assert_eq!(placed.placed_by, "auth0|alice");
    assert_eq!(placed.reserved_by, "auth0|alice", "inventory saw the user");
    assert_eq!(placed.reserved_through, TestMesh::spiffe_id("orders"));
    let reservation = mesh
        .inventory_handler
        .reservations()
        .into_iter()
        .find(|r| r.id == placed.reservation_id)
        .expect("recorded");
    assert_eq!(reservation.caller, "auth0|alice");
    assert_eq!(
        reservation.actor.as_deref(),
        Some(TestMesh::spiffe_id("orders").as_str())
    );
    assert_eq!(
        reservation.peer.as_deref(),
        Some(TestMesh::spiffe_id("orders").as_str())
    );

    // A workload's own order still goes out with orders' own token.
    let own = place(mesh.mint("orders", &["orders.write"], None).await)
        .await
        .expect("a workload's order");
    assert_eq!(own.reserved_by, TestMesh::spiffe_id("orders"));
    assert!(own.reserved_through.is_empty());

    // A user who may only read is refused by orders' own policy; a user
    // orders accepts but no exchange rule serves (Keycloak's) gets the
    // exchange's refusal; neither reserves anything.
    let before = mesh.inventory_handler.reservations().len();
    expect_status(
        place(idp.token("auth0_rs256")).await,
        Code::PermissionDenied,
        Some("POLICY_DENIED"),
    );
    let refused = expect_status(
        place(idp.token("keycloak_orders_writer")).await,
        Code::PermissionDenied,
        Some("TOKEN_SOURCE_REFUSED"),
    );
    assert!(
        refused.message().contains("no exchange rule"),
        "{refused:?}"
    );
    assert_eq!(mesh.inventory_handler.reservations().len(), before);
    mesh.stop().await;
}
