//! Encoding: the compact serialization itself is hostile.

use serde_json::json;
use tonic::Code;

use crate::{Suite, b64};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_truncated_altered_or_empty() {
    let suite = Suite::start().await;
    let genuine = suite.genuine();
    suite.accepted(&genuine).await;
    let (input, signature) = genuine.rsplit_once('.').expect("three segments");
    let mut altered = signature.as_bytes().to_vec();
    altered[10] = if altered[10] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).expect("ascii");
    // A valid signature for other bytes, and the right length of zeros.
    let zeros = b64([0u8; 64]);
    for (case, sig) in [
        ("truncated", &signature[..signature.len() - 4]),
        ("one byte short", &signature[..signature.len() - 2]),
        ("altered", altered.as_str()),
        ("zeros", zeros.as_str()),
    ] {
        suite
            .refused(
                case,
                &format!("{input}.{sig}"),
                Code::Unauthenticated,
                "SIGNATURE_INVALID",
            )
            .await;
    }
    suite
        .refused(
            "empty",
            &format!("{input}."),
            Code::Unauthenticated,
            "SIGNATURE_INVALID",
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_changed_with_the_old_signature_kept() {
    let suite = Suite::start().await;
    let header = suite.header();
    let claims = suite.claims();
    let genuine = suite.sign(&header, &claims);
    let (_, signature) = genuine.rsplit_once('.').expect("signature");
    let mut changed = claims.clone();
    changed["sub"] = json!("mallory-escalated-subject");
    changed["scope"] = json!("inventory.read inventory.reserve mallory-admin-scope");
    let forged = format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(changed.to_string())
    );
    let request = authmesh_tests::bearer(authmesh_tests::get_stock(), &forged);
    suite
        .refused_request(
            "claims changed",
            request,
            Code::Unauthenticated,
            "SIGNATURE_INVALID",
            &[&forged, "mallory-escalated-subject", "mallory-admin-scope"],
        )
        .await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_four_or_five_segments_and_a_jwe() {
    let suite = Suite::start().await;
    let genuine = suite.genuine();
    let parts: Vec<&str> = genuine.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    // A JWE compact serialization: five segments, header naming `enc`.
    let jwe_header = b64(json!({"alg": "dir", "enc": "A256GCM", "kid": suite.kid}).to_string());
    for (case, token) in [
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{h}.{p}.{s}.{s}")),
        ("five segments", format!("{h}.{p}.{s}.{s}.{s}")),
        (
            "jwe",
            format!("{jwe_header}..{}.{p}.{}", b64([7u8; 12]), b64([9u8; 16])),
        ),
        ("empty segments", "..".to_owned()),
    ] {
        suite
            .refused(case, &token, Code::Unauthenticated, "TOKEN_MALFORMED")
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_are_not_one_json_object() {
    let suite = Suite::start().await;
    let header = suite.header().to_string();
    let claims = suite.claims().to_string();
    // As deep as fits under the 8 KiB cap, so the parser meets it.
    let deep = format!("{}1{}", "[".repeat(2_500), "]".repeat(2_500));
    let deep_object = format!(
        "{},\"x\":{}1{}}}",
        claims.trim_end_matches('}'),
        "{\"a\":".repeat(800),
        "}".repeat(800)
    );
    let mut invalid_utf8 = claims.clone().into_bytes();
    invalid_utf8.splice(1..1, [0xff, 0xfe]);
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("string", b"\"x\"".to_vec()),
        ("number", b"42".to_vec()),
        ("trailing bytes", format!("{claims} trailing").into_bytes()),
        ("two objects", format!("{claims}{claims}").into_bytes()),
        ("invalid utf-8", invalid_utf8),
        ("nested arrays", deep.into_bytes()),
        ("nested objects", deep_object.into_bytes()),
    ];
    for (case, payload) in payloads {
        let token = suite.sign_bytes(header.as_bytes(), &payload);
        suite
            .refused(case, &token, Code::Unauthenticated, "CLAIMS_INVALID")
            .await;
    }
    // The same checks guard the header.
    for (case, bad_header) in [
        ("header array", "[]".to_owned()),
        ("header trailing bytes", format!("{header} x")),
        (
            "header nested",
            format!("{}1{}", "[".repeat(2_500), "]".repeat(2_500)),
        ),
    ] {
        let token = suite.sign_bytes(bad_header.as_bytes(), claims.as_bytes());
        suite
            .refused(case, &token, Code::Unauthenticated, "TOKEN_MALFORMED")
            .await;
    }
    let token = suite.sign_bytes(header.as_bytes(), b"");
    suite
        .refused(
            "empty payload",
            &token,
            Code::Unauthenticated,
            "TOKEN_MALFORMED",
        )
        .await;
    // 10,000 levels do not fit under the cap: refused before any parsing.
    let deepest = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let token = suite.sign_bytes(header.as_bytes(), deepest.as_bytes());
    suite
        .refused(
            "10,000 levels",
            &token,
            Code::Unauthenticated,
            "TOKEN_TOO_LARGE",
        )
        .await;
    suite.accepted(&suite.genuine()).await;
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_in_the_header_or_the_payload() {
    let suite = Suite::start().await;
    let header = suite.header().to_string();
    let claims = suite.claims().to_string();
    let kid = &suite.kid;
    // The second `alg`/`kid` would win in a last-wins parser.
    let twice_alg = format!(r#"{{"alg":"EdDSA","alg":"none","typ":"at+jwt","kid":"{kid}"}}"#);
    let twice_kid = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","kid":"other"}}"#);
    for (case, bad_header) in [("duplicate alg", twice_alg), ("duplicate kid", twice_kid)] {
        let token = suite.sign_bytes(bad_header.as_bytes(), claims.as_bytes());
        suite
            .refused(case, &token, Code::Unauthenticated, "TOKEN_MALFORMED")
            .await;
    }
    let body = claims.trim_end_matches('}');
    for (case, payload) in [
        ("duplicate aud", format!(r#"{body},"aud":"orders"}}"#)),
        ("duplicate sub", format!(r#"{body},"sub":"admin"}}"#)),
        (
            "duplicate scope",
            format!(r#"{body},"scope":"inventory.reserve"}}"#),
        ),
    ] {
        let token = suite.sign_bytes(header.as_bytes(), payload.as_bytes());
        suite
            .refused(case, &token, Code::Unauthenticated, "CLAIMS_INVALID")
            .await;
    }
    suite.mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_kib_token_is_refused_without_decoding() {
    let suite = Suite::start().await;
    // Genuinely signed, so only the size can refuse it.
    let mut claims = suite.claims();
    // 45 KiB of claims is 60 KiB of base64: under the 64 KiB HTTP/2 header
    // list limit, so it is the verifier's cap that refuses it.
    claims["pad"] = json!("p".repeat(45 * 1024));
    let token = suite.sign(&suite.header(), &claims);
    assert!(
        (60 * 1024..63 * 1024).contains(&token.len()),
        "{}",
        token.len()
    );
    suite
        .refused("60 KiB", &token, Code::Unauthenticated, "TOKEN_TOO_LARGE")
        .await;
    suite.mesh.stop().await;
}
