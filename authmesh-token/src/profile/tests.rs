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
    for bad in [
        r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","jku":"https://evil"}"#,
        r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt","crit":["exp"]}"#,
        r#"{"alg":"EdDSA","alg":"none","kid":"k","typ":"at+jwt"}"#,
        r#"{"alg":null,"kid":"k","typ":"at+jwt"}"#,
        r#"{"kid":"k","typ":"at+jwt"}"#,
        r#"[]"#,
    ] {
        assert!(
            matches!(parse_header(&b64(bad)), Err(TokenError::Malformed(_))),
            "{bad}"
        );
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
