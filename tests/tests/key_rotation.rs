//! Key rotation under traffic: the next key is published first, signs after
//! the overlap, and the old key stays published until its tokens expired;
//! not one call fails on the way.

use std::time::Duration;

use auth_interceptor::SigningAlgorithm;
use authmesh_proto::authmesh::v1::{GetJwksRequest, IssueTokenRequest};
use authmesh_tests::{TestMesh, bearer, decode_header, get_stock};

/// Sets inventory's key refresh interval (60 s by default) so the test's
/// overlap can be short; the overlap must always exceed it.
fn refresh_inventory_keys_every_second(mesh: &TestMesh) {
    let path = mesh.state.inventory_config();
    let text = std::fs::read_to_string(&path).expect("inventory.toml");
    let text = text.replace("key_refresh_seconds = 60", "key_refresh_seconds = 1");
    assert!(text.contains("key_refresh_seconds = 1"), "{text}");
    std::fs::write(&path, text).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_under_traffic_fails_no_call() {
    let mut mesh = TestMesh::start().await;
    refresh_inventory_keys_every_second(&mesh);
    mesh.restart_inventory().await;

    // Traffic: a fresh token per call (mTLS, no secret hashing), then GetStock.
    let (mut tokens, mut inventory) = (mesh.token_client_as("demo-cli"), mesh.inventory_client());
    let traffic = tokio::spawn(async move {
        let mut kids = Vec::new();
        let mut failures = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Bounded: until the new key has carried 20 calls, at most 20 s.
        while tokio::time::Instant::now() < deadline
            && kids
                .iter()
                .rev()
                .take_while(|k| Some(*k) != kids.first())
                .count()
                < 20
        {
            let minted = tokens
                .issue_token(IssueTokenRequest {
                    audience: "inventory".into(),
                    scopes: vec!["inventory.read".into()],
                    ttl_seconds: Some(60),
                    one_time: false,
                })
                .await;
            let token = match minted {
                Ok(minted) => minted.into_inner().token,
                Err(status) => {
                    failures.push(format!("mint: {status:?}"));
                    continue;
                }
            };
            kids.push(
                decode_header(&token)["kid"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            );
            if let Err(status) = inventory.get_stock(bearer(get_stock(), &token)).await {
                failures.push(format!("call: {status:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (kids, failures)
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let key_dir = mesh.state.dir().join("keys");
    let rotation = token_service::keys::rotate(
        &key_dir,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::EdDSA,
        4,
        3600,
        mesh.now(),
    )
    .expect("rotate");
    let (kids, failures) = traffic.await.expect("traffic");
    assert!(
        failures.is_empty(),
        "failed calls during rotation: {failures:?}"
    );
    let old = kids.first().cloned().expect("calls made");
    assert_ne!(old, rotation.next_kid);
    assert_eq!(
        kids.last(),
        Some(&rotation.next_kid),
        "the new key signs in the end"
    );
    assert_eq!(
        rotation.retiring,
        vec![(old.clone(), rotation.signs_from + 3600 + 60)]
    );

    let published = || {
        let mut client = mesh.token_client();
        async move {
            let keys = client
                .get_jwks(GetJwksRequest {})
                .await
                .expect("jwks")
                .into_inner()
                .keys;
            keys.into_iter().map(|k| k.kid).collect::<Vec<_>>()
        }
    };
    let during = published().await;
    assert!(
        during.contains(&old) && during.contains(&rotation.next_kid),
        "{during:?}"
    );
    // Once every token of the old key has expired, it is no longer published.
    mesh.clock.advance(4 + 3600 + 61);
    assert_eq!(published().await, vec![rotation.next_kid.clone()]);
    mesh.stop().await;
}
