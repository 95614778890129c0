use super::*;

fn claims(sub: &str, scope: &str) -> Claims {
    Claims {
        iss: "i".into(),
        sub: sub.into(),
        aud: "inventory".into(),
        exp: 2,
        nbf: None,
        iat: 1,
        jti: "j".into(),
        scope: scope.into(),
        client_id: Some("orders".into()),
        cnf: None,
        one_time: false,
        act: None,
        subject_issuer: None,
    }
}

const RESERVE: &str = "/demo.inventory.v1.Inventory/Reserve";
const GET: &str = "/demo.inventory.v1.Inventory/GetStock";
const ORDERS: &str = "spiffe://authmesh.local/orders";

#[test]
fn exact_scopes_only_and_default_deny() {
    let policy = MethodPolicy::new().require("/p.S/M", ["inventory.read"]);
    assert!(
        policy
            .authorize("/p.S/M", &claims("s", "x inventory.read"))
            .is_ok()
    );
    for tricky in [
        "inventory",
        "inventory.read.all",
        "INVENTORY.READ",
        "*",
        "inventory.reads",
    ] {
        assert!(
            policy.authorize("/p.S/M", &claims("s", tricky)).is_err(),
            "{tricky}"
        );
    }
    assert!(matches!(
        policy.authorize("/p.S/Other", &claims("s", "inventory.read")),
        Err(AuthError::NoRule { .. })
    ));
    assert!(matches!(
        policy.authorize("/p.S/M/", &claims("s", "inventory.read")),
        Err(AuthError::NoRule { .. })
    ));
}

#[test]
fn only_listed_health_and_reflection_paths_are_public() {
    let policy = MethodPolicy::new();
    assert!(policy.is_public("/grpc.health.v1.Health/Check"));
    assert!(!policy.is_public("/grpc.health.v1.Health/Check/"));
    assert!(!policy.is_public("/grpc.health.v1.Health/CheckX"));
    assert!(!policy.is_public(REFLECTION_PATHS[0]));
    assert!(
        policy
            .public_reflection(true)
            .is_public(REFLECTION_PATHS[1])
    );
    let refused = MethodPolicy::from_toml(r#"public = ["/demo.inventory.v1.Inventory/GetStock"]"#);
    assert!(refused.is_err(), "business methods cannot be made public");
}

const FILE: &str = r#"
public = ["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]

[[rule]]
name = "no-demo-writes"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
callers = ["spiffe://authmesh.local/demo-cli"]

[[rule]]
name = "mesh-reserve"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
callers = ["spiffe://authmesh.local/*"]
scopes = ["inventory.reserve"]

[[rule]]
name = "read-anything"
methods = ["/demo.inventory.v1.Inventory/*"]
scopes = ["inventory.read"]
claims = { client_id = "reporting" }
"#;

#[test]
fn a_policy_file_matches_services_callers_scopes_and_claims() {
    let policy = MethodPolicy::from_toml(FILE).expect("policy");
    assert!(policy.is_public(REFLECTION_PATHS[1]));
    let allowed = policy.authorize(RESERVE, &claims(ORDERS, "inventory.reserve"));
    assert_eq!(
        allowed.map(|a| a.rule.to_string()),
        Ok("mesh-reserve".to_owned())
    );
    // Prefix callers match a trust domain, not a string prefix of another one.
    assert!(
        policy
            .authorize(
                RESERVE,
                &claims("spiffe://authmesh.local.evil/x", "inventory.reserve")
            )
            .is_err()
    );
    // Service wildcard plus a claim condition.
    let mut reporting = claims("anyone", "inventory.read");
    reporting.client_id = Some("reporting".into());
    assert_eq!(
        policy
            .authorize(GET, &reporting)
            .map(|a| a.rule.to_string()),
        Ok("read-anything".to_owned())
    );
    let mut other_client = claims("anyone", "inventory.read");
    other_client.client_id = Some("demo-cli".into());
    assert!(matches!(
        policy.authorize(GET, &other_client),
        Err(AuthError::NoRule { .. })
    ));
    // Missing scopes name the rule that would have allowed the call.
    assert_eq!(
        policy.authorize(RESERVE, &claims(ORDERS, "inventory.read")),
        Err(AuthError::MissingScopes {
            method: RESERVE.into(),
            missing: "inventory.reserve".into(),
            rule: "mesh-reserve".into()
        })
    );
}

#[test]
fn deny_rules_override_allow_rules() {
    let policy = MethodPolicy::from_toml(FILE).expect("policy");
    let demo = "spiffe://authmesh.local/demo-cli";
    assert_eq!(
        policy.authorize(RESERVE, &claims(demo, "inventory.reserve")),
        Err(AuthError::RuleDenied {
            method: RESERVE.into(),
            rule: "no-demo-writes".into()
        })
    );
}

#[test]
fn dry_run_rules_are_evaluated_but_never_decide() {
    let policy = MethodPolicy::from_toml(
        r#"
[[rule]]
name = "planned-deny"
effect = "deny"
dry_run = true
methods = ["/demo.inventory.v1.Inventory/GetStock"]

[[rule]]
name = "read"
methods = ["/demo.inventory.v1.Inventory/GetStock"]
scopes = ["inventory.read"]

[[rule]]
name = "planned-allow"
dry_run = true
methods = ["/demo.inventory.v1.Inventory/Reserve"]
"#,
    )
    .expect("policy");
    assert_eq!(
        policy
            .authorize(GET, &claims(ORDERS, "inventory.read"))
            .map(|a| a.rule.to_string()),
        Ok("read".to_owned()),
        "a dry-run deny does not block"
    );
    assert!(
        matches!(
            policy.authorize(RESERVE, &claims(ORDERS, "")),
            Err(AuthError::NoRule { .. })
        ),
        "a dry-run allow does not allow"
    );
    assert_eq!(
        policy.uncovered([GET, RESERVE]),
        vec![RESERVE],
        "dry-run rules cover nothing"
    );
    let seen = |path, scope| {
        let evaluation = policy.evaluate(path, &claims(ORDERS, scope));
        let outcomes: Vec<(String, &str)> = evaluation
            .dry_run
            .iter()
            .map(|o| (o.rule.to_string(), o.would.as_str()))
            .collect();
        (evaluation.result.is_ok(), outcomes)
    };
    assert_eq!(
        seen(GET, "inventory.read"),
        (true, vec![("planned-deny".to_owned(), "would-deny")]),
        "the dry-run deny is returned beside the real allow"
    );
    assert_eq!(
        seen(RESERVE, ""),
        (false, vec![("planned-allow".to_owned(), "would-allow")]),
        "the dry-run allow is returned beside the real denial"
    );
    assert!(
        policy
            .evaluate("/demo.orders.v1.Orders/PlaceOrder", &claims(ORDERS, ""))
            .dry_run
            .is_empty(),
        "no dry-run rule covers the method: nothing returned"
    );
}

#[test]
fn coverage_lists_methods_no_rule_mentions() {
    let policy = MethodPolicy::from_toml(FILE).expect("policy");
    let methods = [
        GET,
        RESERVE,
        "/demo.orders.v1.Orders/PlaceOrder",
        HEALTH_PATHS[0],
    ];
    assert_eq!(
        policy.uncovered(methods),
        vec!["/demo.orders.v1.Orders/PlaceOrder"]
    );
}

#[test]
fn malformed_rules_are_refused_whole() {
    for bad in [
        "[[rule]]\nname = \"x\"\nmethods = []",
        "[[rule]]\nname = \"x\"\nmethods = [\"demo.Inventory/Get\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/demo.Inventory/Get*\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/*/Get\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\ncallers = [\"spiffe://x*\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\nscopes = [\"a b\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\nclaims = { scope = \"x\" }",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\n[[rule]]\nname = \"x\"\nmethods = [\"/a.B/D\"]",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\neffect = \"maybe\"",
        "[[rule]]\nname = \"x\"\nmethods = [\"/a.B/C\"]\nunknown = 1",
        "not toml",
    ] {
        assert!(MethodPolicy::from_toml(bad).is_err(), "{bad}");
    }
}

#[cfg(feature = "mint-analysis")]
const MINT_POLICY: &str = r#"
[[rule]]
name = "read"
methods = ["/demo.inventory.v1.Inventory/GetStock"]
callers = ["spiffe://authmesh.local/*"]
scopes = ["inventory.read"]

[[rule]]
name = "reserve"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
callers = ["spiffe://authmesh.local/orders"]
scopes = ["inventory.reserve"]

[[rule]]
name = "audit-trial"
dry_run = true
methods = ["/demo.inventory.v1.Inventory/*"]
callers = ["spiffe://authmesh.local/audit"]
scopes = ["inventory.audit"]

[[rule]]
name = "no-cli-reserve"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/*"]
callers = ["spiffe://authmesh.local/demo-cli"]
scopes = ["inventory.reserve"]
"#;

#[cfg(feature = "mint-analysis")]
#[test]
fn minting_admits_only_tokens_some_rule_accepts() {
    let policy = MethodPolicy::from_toml(MINT_POLICY).expect("policy");
    assert_eq!(
        policy.admits(&claims(ORDERS, "inventory.read inventory.reserve")),
        Ok("read".to_owned())
    );
    assert_eq!(
        policy.admits(&claims(ORDERS, "inventory.reserve")),
        Ok("reserve".to_owned())
    );
    // A scope no rule for this caller asks for is over-broad.
    assert_eq!(
        policy.admits(&claims(ORDERS, "inventory.read inventory.admin")),
        Err(MintRefusal::UnusedScopes(vec!["inventory.admin".into()]))
    );
    assert_eq!(
        policy.admits(&claims(
            "spiffe://authmesh.local/demo-cli",
            "inventory.reserve"
        )),
        Err(MintRefusal::UnusedScopes(vec!["inventory.reserve".into()]))
    );
    // No scope at all: no rule is satisfied.
    assert_eq!(policy.admits(&claims(ORDERS, "")), Err(MintRefusal::NoRule));
    // Outside the trust domain: nothing applies.
    assert_eq!(
        policy.admits(&claims("spiffe://elsewhere/orders", "inventory.read")),
        Err(MintRefusal::UnusedScopes(vec!["inventory.read".into()]))
    );
    // A dry-run rule makes its scope worth asking for, but accepts nothing by itself.
    assert_eq!(
        policy.admits(&claims("spiffe://authmesh.local/audit", "inventory.audit")),
        Err(MintRefusal::NoRule)
    );
}

#[cfg(feature = "mint-analysis")]
#[test]
fn minting_refuses_tokens_a_deny_rule_takes_everything_from() {
    let policy = MethodPolicy::from_toml(
        r#"
[[rule]]
name = "all"
methods = ["/demo.inventory.v1.Inventory/*"]
scopes = ["inventory.write"]

[[rule]]
name = "blocked"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/*"]
callers = ["spiffe://authmesh.local/demo-cli"]

[[rule]]
name = "reserve-only-blocked"
effect = "deny"
methods = ["/demo.inventory.v1.Inventory/Reserve"]
callers = ["spiffe://authmesh.local/partial"]
"#,
    )
    .expect("policy");
    assert_eq!(
        policy.admits(&claims(
            "spiffe://authmesh.local/demo-cli",
            "inventory.write"
        )),
        Err(MintRefusal::NoRule)
    );
    // A deny of one method leaves the rest of the service.
    assert_eq!(
        policy.admits(&claims(
            "spiffe://authmesh.local/partial",
            "inventory.write"
        )),
        Ok("all".to_owned())
    );
    assert_eq!(
        policy
            .scopes_used_for(&claims("anyone", ""))
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["inventory.write"]
    );
}

#[test]
fn the_rule_index_finds_exactly_the_rules_a_full_scan_finds_in_order() {
    let policy = MethodPolicy::from_toml(
        r#"
        [[rule]]
        name = "whole-inventory"
        methods = ["/demo.inventory.v1.Inventory/*"]
        scopes = ["a"]
        [[rule]]
        name = "no-reserve"
        effect = "deny"
        methods = ["/demo.inventory.v1.Inventory/Reserve", "/demo.orders.v1.Orders/*"]
        [[rule]]
        name = "twice"
        methods = ["/demo.inventory.v1.Inventory/GetStock", "/demo.inventory.v1.Inventory/GetStock", "/demo.inventory.v1.Inventory/*"]
        [[rule]]
        name = "orders"
        methods = ["/demo.orders.v1.Orders/Place"]
        "#,
    )
    .expect("policy");
    for path in [
        GET,
        RESERVE,
        "/demo.inventory.v1.Inventory/WatchStock",
        "/demo.orders.v1.Orders/Place",
        "/demo.orders.v1.Orders/Other",
        "/demo.inventory.v1.Inventory/",
        "/demo.inventory.v1.Inventory",
        "/demo.inventory.v1.Inventory/GetStock/",
        "demo.inventory.v1.Inventory/GetStock",
        "/",
        "",
        "/é/",
    ] {
        let indexed: Vec<&str> = policy
            .index
            .covering(path)
            .rules(&policy.rules)
            .map(|r| &*r.name)
            .collect();
        let scanned: Vec<&str> = policy
            .rules
            .iter()
            .filter(|r| r.covers(path))
            .map(|r| &*r.name)
            .collect();
        assert_eq!(indexed, scanned, "{path}");
    }
    // A rule added in code is indexed too.
    let policy = policy.require("/p.S/M", ["x"]);
    assert!(policy.authorize("/p.S/M", &claims("s", "x")).is_ok());
}

/// A token of `actors` (outermost first) acting for user `sub` of `issuer`.
fn delegated(sub: &str, issuer: &str, actors: &[&str], scope: &str) -> Claims {
    let act = actors.iter().rev().fold(None, |inner, actor| {
        Some(Actor {
            sub: (*actor).to_owned(),
            act: inner.map(Box::new),
        })
    });
    Claims {
        act,
        subject_issuer: Some(issuer.to_owned()),
        ..claims(sub, scope)
    }
}

#[cfg(feature = "toml")]
#[test]
fn delegation_conditions_decide_who_may_act_for_whom() {
    let policy = MethodPolicy::from_toml(&format!(
        r#"
[[rule]]
name = "workloads-reserve"
methods = ["{RESERVE}"]
actor = "forbidden"
scopes = ["inventory.reserve"]

[[rule]]
name = "users-reserve-through-orders"
methods = ["{RESERVE}"]
actors = ["{ORDERS}"]
subject_issuers = ["https://idp/"]
max_chain_depth = 1
scopes = ["inventory.reserve"]

[[rule]]
name = "users-read-through-anyone"
methods = ["{GET}"]
actor = "required"
max_chain_depth = 2
scopes = ["inventory.read"]
"#
    ))
    .expect("policy");
    let allowed = |path: &str, claims: &Claims| {
        policy
            .authorize(path, claims)
            .map(|allowed| allowed.rule.to_owned())
            .map_err(|e| e.reason())
    };
    // A workload for itself; a user through orders, of the right issuer, directly.
    assert_eq!(
        allowed(RESERVE, &claims(ORDERS, "inventory.reserve")),
        Ok("workloads-reserve".into())
    );
    assert_eq!(
        allowed(
            RESERVE,
            &delegated("alice", "https://idp/", &[ORDERS], "inventory.reserve")
        ),
        Ok("users-reserve-through-orders".into())
    );
    // Through another workload, of another issuer, or one hop too many: no rule.
    for refused in [
        delegated(
            "alice",
            "https://idp/",
            &["spiffe://authmesh.local/billing"],
            "inventory.reserve",
        ),
        delegated("alice", "https://other/", &[ORDERS], "inventory.reserve"),
        delegated(
            "alice",
            "https://idp/",
            &[ORDERS, "spiffe://authmesh.local/web"],
            "inventory.reserve",
        ),
    ] {
        assert_eq!(
            allowed(RESERVE, &refused),
            Err("POLICY_DENIED"),
            "{refused:?}"
        );
    }
    // An actor required: a workload's own token is not enough; two hops are.
    assert_eq!(
        allowed(GET, &claims(ORDERS, "inventory.read")),
        Err("POLICY_DENIED")
    );
    assert_eq!(
        allowed(
            GET,
            &delegated("alice", "https://idp/", &["a", "b"], "inventory.read")
        ),
        Ok("users-read-through-anyone".into())
    );
    for bad in [
        "actor = \"forbidden\"\nactors = [\"x\"]",
        "actor = \"forbidden\"\nmax_chain_depth = 1",
        "max_chain_depth = 0",
        "actor = \"sometimes\"",
        "subject_issuers = [\"\"]",
    ] {
        let text = format!("[[rule]]\nname = \"r\"\nmethods = [\"{RESERVE}\"]\n{bad}\n");
        assert!(MethodPolicy::from_toml(&text).is_err(), "{bad}");
    }
}
