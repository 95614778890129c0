use std::{sync::Arc, time::Duration};

use authmesh_signing::SigningKey;

use super::*;
use crate::{error::AuthError, token::SigningAlgorithm, verifier::VerifierConfig};

fn verifier() -> Verifier {
    Verifier::new(VerifierConfig {
        record_metrics: false,
        ..VerifierConfig::new("https://issuer.test", "inventory")
    })
    .expect("verifier")
}

fn key_set() -> (String, JwkSet) {
    let (key, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("key");
    (
        key.kid().to_owned(),
        JwkSet {
            keys: vec![key.jwk().clone()],
        },
    )
}

/// A well-formed token under a key nobody trusts yet.
fn some_token() -> String {
    let (key, _pem) = SigningKey::generate(SigningAlgorithm::EdDSA).expect("key");
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    key.sign(&crate::token::Claims {
        iss: "https://issuer.test".into(),
        sub: "orders".into(),
        aud: "inventory".into(),
        exp: now + 60,
        nbf: None,
        iat: now,
        jti: "j".into(),
        scope: String::new(),
        client_id: None,
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    })
    .expect("sign")
}

fn fast() -> KeyRefreshSettings {
    KeyRefreshSettings {
        interval: Duration::from_millis(20),
        cooldown: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        max_backoff: Duration::from_millis(40),
    }
}

/// Polls `done` for up to ten seconds: the refresh runs on real time here.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen");
}

#[tokio::test]
async fn a_static_set_is_installed_at_once_and_a_bad_one_is_refused() {
    let verifier = verifier();
    assert!(matches!(
        KeySource::static_json("{\"keys\": 42}"),
        Err(KeySourceError::Refused(KeyError::NotAJwkSet(_)))
    ));
    assert!(matches!(
        KeySource::static_json("{\"keys\": []}")
            .expect("parses")
            .spawn(&verifier, fast()),
        Err(KeySourceError::Refused(KeyError::Empty))
    ));
    assert!(verifier.key_ids().is_empty());
    let (kid, set) = key_set();
    let json = serde_json::to_string(&set).expect("json");
    let _keys = KeySource::static_json(&json)
        .expect("parses")
        .spawn(&verifier, fast())
        .expect("installed");
    assert_eq!(verifier.key_ids(), vec![kid]);
    verifier.keys_loaded().await;
}

#[tokio::test]
async fn a_key_file_starts_closed_follows_rotation_and_keeps_the_last_good_set() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jwks.json");
    let verifier = verifier();
    let _keys = KeySource::file(&path)
        .spawn(&verifier, fast())
        .expect("spawned");
    // No file yet: nothing is trusted, and calls fail closed.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        verifier.verify(&some_token()),
        Err(AuthError::KeysUnavailable)
    );

    let (first, set) = key_set();
    std::fs::write(&path, serde_json::to_vec(&set).expect("json")).expect("write");
    eventually("first key set loaded", || {
        verifier.key_ids() == [first.clone()]
    })
    .await;

    // Garbage and a refused key set leave the last good keys in force.
    std::fs::write(&path, b"{\"keys\": 42}").expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(verifier.key_ids(), vec![first.clone()]);
    std::fs::write(
        &path,
        br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"a"}]}"#,
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(verifier.key_ids(), vec![first]);

    let (rotated, set) = key_set();
    std::fs::write(&path, serde_json::to_vec(&set).expect("json")).expect("write");
    eventually("rotated key set loaded", || {
        verifier.key_ids() == [rotated.clone()]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_source_that_never_answers_times_out_and_is_retried() {
    let verifier = verifier();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let _keys = spawn_key_source(
        verifier.clone(),
        move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<Result<JwkSet, KeySourceError>>()
        },
        fast(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Each attempt is cut at the timeout (1 s), then retried after a backoff.
    let attempts = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!((4..=5).contains(&attempts), "{attempts} attempts");
    assert_eq!(
        verifier.verify(&some_token()),
        Err(AuthError::KeysUnavailable)
    );
}

#[test]
fn errors_render_their_whole_cause() {
    let err = KeySourceError::Read {
        path: "/no/such/jwks.json".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
    };
    assert_eq!(
        ErrorChain(&err).to_string(),
        "cannot read key file /no/such/jwks.json: not found"
    );
}
