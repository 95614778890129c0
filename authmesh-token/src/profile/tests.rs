use super::*;

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn split_refuses_wrong_segment_counts_and_oversize() {
    assert!(split_token("a.b.c").is_ok());
    for bad in ["a.b", "a.b.c.d", "a.b.c.d.e", "", "..", ".b.c"] {
        assert!(
            matches!(split_token(bad), Err(TokenError::Malformed(_))),
            "{bad}"
        );
    }
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(
        split_token(&huge),
        Err(TokenError::TooLarge { .. })
    ));
}

#[test]
fn header_allows_only_alg_kid_typ() {
    let ok = b64(r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt"}"#);
    assert_eq!(parse_header(&ok).map(|h| h.kid), Ok("k".to_owned()));
    for (bad, expected) in [
        (
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","jku":"https://evil"}"#,
            TokenError::UnsupportedHeader("jku"),
        ),
        (
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","crit":["exp"]}"#,
            TokenError::UnsupportedHeader("crit"),
        ),
        (
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","evil-secret-name":1}"#,
            TokenError::UnsupportedHeader("unknown"),
        ),
        (
            r#"{"alg":"EdDSA","alg":"none","kid":"k","typ":"at+jwt"}"#,
            TokenError::Malformed("header is not a JSON object with unique members"),
        ),
        (
            r#"{"alg":null,"kid":"k","typ":"at+jwt"}"#,
            TokenError::InvalidHeader("alg"),
        ),
        (
            r#"{"kid":"k","typ":"at+jwt"}"#,
            TokenError::MissingHeader("alg"),
        ),
        (
            r#"{"alg":"EdDSA","kid":7,"typ":"at+jwt"}"#,
            TokenError::InvalidHeader("kid"),
        ),
        (
            r#"{"alg":"EdDSA","kid":"k"}"#,
            TokenError::MissingHeader("typ"),
        ),
        (
            r#"[]"#,
            TokenError::Malformed("header is not a JSON object with unique members"),
        ),
    ] {
        assert_eq!(parse_header(&b64(bad)), Err(expected), "{bad}");
    }
    for bad_typ in [
        r#"{"alg":"EdDSA","kid":"k","typ":"JWT"}"#,
        r#"{"alg":"EdDSA","kid":"k","typ":"AT+JWT"}"#,
    ] {
        assert_eq!(parse_header(&b64(bad_typ)), Err(TokenError::WrongType));
    }
}

#[test]
fn claims_are_typed_and_unique() {
    let ok = r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1,"jti":"j","scope":"x y"}"#;
    let claims = parse_claims(&b64(ok)).map_err(|e| e.to_string());
    assert_eq!(claims.as_ref().map(|c| c.has_scope("y")), Ok(true));
    for bad in [
        r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":"10","iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":10.5,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":-1,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":1e30,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":10,"nbf":null,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1,"jti":"j","x":1,"x":2}"#,
        r#"{"iss":"i","sub":"s","sub":"t","aud":"a","exp":10,"iat":1,"jti":"j"}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1}"#,
        r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1,"jti":"j"} x"#,
        "[]",
        "null",
        "\"x\"",
    ] {
        assert!(parse_claims(&b64(bad)).is_err(), "{bad}");
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse_claims(&b64(&deep)).is_err());
    assert!(parse_claims(&URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x7b])).is_err());
}

#[test]
fn a_refused_claim_is_named() {
    for (bad, expected) in [
        (
            r#"{"iss":"i","sub":"s","aud":["a"],"exp":10,"iat":1,"jti":"j"}"#,
            TokenError::InvalidClaim("aud"),
        ),
        (
            r#"{"iss":"i","sub":"s","aud":"a","exp":"10","iat":1,"jti":"j"}"#,
            TokenError::InvalidClaim("exp"),
        ),
        (
            r#"{"iss":"i","sub":"s","aud":"a","exp":10,"nbf":null,"iat":1,"jti":"j"}"#,
            TokenError::InvalidClaim("nbf"),
        ),
        (
            r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1}"#,
            TokenError::MissingClaim("jti"),
        ),
        (
            r#"{"sub":"s","aud":"a","exp":10,"iat":1,"jti":"j"}"#,
            TokenError::MissingClaim("iss"),
        ),
        (
            r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1.5,"jti":"j"}"#,
            TokenError::InvalidClaim("iat"),
        ),
        (
            r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1,"jti":"j","cnf":{"x5t#S256":"t","jwk":{}}}"#,
            TokenError::InvalidClaim("cnf"),
        ),
        (
            r#"{"iss":"i","sub":"s","sub":"t","aud":"a","exp":10,"iat":1,"jti":"j"}"#,
            TokenError::InvalidClaims("payload is not a JSON object with unique members"),
        ),
    ] {
        assert_eq!(parse_claims(&b64(bad)), Err(expected), "{bad}");
    }
    let all = r#"{"iss":"i","sub":"s","aud":"a","exp":10,"nbf":1,"iat":1,"jti":"j","scope":"x","client_id":"c","cnf":{"x5t#S256":"t"},"one_time":true,"other":[1]}"#;
    let claims = parse_claims(&b64(all)).expect("every claim of the profile");
    assert_eq!(
        (claims.nbf, claims.client_id.as_deref(), claims.one_time),
        (Some(1), Some("c"), true)
    );
    assert_eq!(claims.cnf.map(|c| c.x5t_s256), Some("t".to_owned()));
}

#[test]
fn scopes_match_whole_words_only() {
    let claims = parse_claims(&b64(
        r#"{"iss":"i","sub":"s","aud":"a","exp":10,"iat":1,"jti":"j","scope":"inventory.read  orders.write"}"#,
    ))
    .expect("claims");
    for granted in ["inventory.read", "orders.write"] {
        assert!(claims.has_scope(granted), "{granted}");
    }
    for not_granted in [
        "",
        "inventory",
        "inventory.rea",
        "inventory.read ",
        "Inventory.read",
        "orders.write inventory.read",
        "*",
    ] {
        assert!(!claims.has_scope(not_granted), "{not_granted:?}");
    }
    assert_eq!(
        claims.scopes().collect::<Vec<_>>(),
        ["inventory.read", "orders.write"]
    );
}

#[test]
fn external_claims_read_scopes_where_each_provider_puts_them() {
    let payload = |scopes: &str| {
        b64(&format!(
            r#"{{"iss":"https://idp/","sub":"u","aud":["a","b"],"exp":20,"iat":10{scopes}}}"#
        ))
    };
    let scopes = |claim, scopes: &str| {
        parse_external_claims(&payload(scopes), claim).map(|external| external.claims.scope)
    };
    // Okta: an array in `scp`; Entra ID: a space-separated string in `scp`.
    assert_eq!(
        scopes(ScopeClaim::Scp, r#","scp":["a.read","b"]"#),
        Ok("a.read b".into())
    );
    assert_eq!(
        scopes(ScopeClaim::Scp, r#","scp":"a.read b""#),
        Ok("a.read b".into())
    );
    // Auth0: `scope` for OAuth scopes, `permissions` for RBAC; only the configured one counts.
    assert_eq!(
        scopes(
            ScopeClaim::Permissions,
            r#","scope":"openid","permissions":["p"]"#
        ),
        Ok("p".into())
    );
    assert_eq!(
        scopes(ScopeClaim::Scope, r#","permissions":["p"]"#),
        Ok(String::new())
    );
    assert_eq!(
        scopes(ScopeClaim::Scp, r#","scp":[1]"#),
        Err(TokenError::InvalidClaim("scp"))
    );
    let external = parse_external_claims(&payload(""), ScopeClaim::Scope).expect("claims");
    assert_eq!(external.audiences, ["a", "b"]);
    assert_eq!(peek_issuer(&payload("")), Ok("https://idp/".into()));
    assert_eq!(
        peek_issuer(&b64(r#"{"iss":"a","iss":"b"}"#)),
        Err(TokenError::InvalidClaims(
            "payload is not a JSON object with unique members"
        ))
    );
}
