//! Policies chosen per route, and two IdPs in one filter, against the simulated host:
//! route metadata, then `route_policies`, then the default; an unknown policy fails closed;
//! each issuer's documents are fetched once per process; tokens, caches and sessions stay
//! with their policy. One policy that accepts several issuers (`issuers_allowed`) and extra
//! key sets (`extra_jwks_uris`): each token is checked with its own issuer's keys only.

use std::sync::Arc;

use base64::Engine;
use jwt_simple::prelude::{RS256KeyPair, RSAKeyPairLike};

use crate::core::config::Plan;
use crate::core::idp::Purpose;
use crate::core::route::tests::metadata;
use crate::core::testing::{Headers, Outcome, SimHost};

const T0: u64 = 1_800_000_000_000;
const A: &str = "idp-a.example.com";
const B: &str = "idp-b.example.com";

const PLAN: &str = "issuer: https://idp-a.example.com
idp_cluster: idp-a
client_id: gateway
client_secret: s3cret
auth_methods: [bearer]
policies:
  api: {scopes_required: ['orders:read']}
  partner: {issuer: 'https://idp-b.example.com', idp_cluster: idp-b, tls_client_auth_cluster: idp-b-mtls, client_id: gw-b, client_auth: tls_client_auth, auth_methods: [password, bearer]}
route_policies: {orders-route: api}
";

fn doc(host: &str) -> String {
    format!(r#"{{"issuer":"https://{host}","token_endpoint":"https://{host}/token","jwks_uri":"https://{host}/jwks"}}"#)
}

fn key(kid: &str) -> (RS256KeyPair, String) {
    let kp = RS256KeyPair::generate(2048).unwrap().with_key_id(kid);
    let c = kp.public_key().to_components();
    let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    (kp, serde_json::json!({"keys": [{"kty": "RSA", "kid": kid, "n": b(&c.n), "e": b(&c.e)}]}).to_string())
}

fn token(kp: &RS256KeyPair, iss: &str, scope: &str) -> String {
    let mut c =
        jwt_simple::prelude::Claims::with_custom_claims(serde_json::json!({"scope": scope}), jwt_simple::prelude::Duration::from_secs(300));
    c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(T0 / 1000));
    c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(T0 / 1000 + 300));
    c.invalid_before = None;
    c.issuer = Some(iss.into());
    kp.sign(c).unwrap()
}

struct Two {
    sim: SimHost,
    a: RS256KeyPair,
    b: RS256KeyPair,
}

fn two_idps(workers: usize) -> Two {
    let plan = Arc::new(Plan::parse(PLAN.as_bytes()).unwrap());
    let mut sim = SimHost::new(&plan, workers, true, T0);
    let (a, jwks_a) = key("a1");
    let (b, jwks_b) = key("b1");
    for (host, jwks) in [(A, jwks_a), (B, jwks_b)] {
        sim.idp.answer_at(host, Purpose::Discovery, 200, doc(host));
        sim.idp.answer_at(host, Purpose::Jwks, 200, jwks);
    }
    sim.idp.answer_at(B, Purpose::Token, 200, r#"{"access_token":"AT-B","token_type":"Bearer","expires_in":300}"#);
    Two { sim, a, b }
}

fn bearer(t: &str) -> Headers {
    Headers::default().with("authorization", &format!("Bearer {t}"))
}

fn on_route(mut h: Headers, policy: Option<&str>, name: Option<&str>) -> Headers {
    h.route_metadata = policy.map(|p| metadata("envoy-oidc", "policy", p));
    h.route_name = name.map(str::to_string);
    h
}

fn status(sim: &SimHost, id: usize) -> u16 {
    match sim.outcome(id) {
        Outcome::Forwarded(_) => 200,
        Outcome::Answered(r) => r.status,
        Outcome::Waiting => 0,
        Outcome::LetThrough => 999,
    }
}

#[test]
fn the_route_chooses_the_policy_and_its_idp() {
    let Two { mut sim, a, b } = two_idps(2);
    sim.run_for(2_000);
    let ok_a = token(&a, "https://idp-a.example.com", "orders:read");
    let no_scope = token(&a, "https://idp-a.example.com", "profile");
    let of_b = token(&b, "https://idp-b.example.com", "orders:read");
    // metadata names `api`: A's keys and the scope rule
    let id = sim.request(0, &on_route(bearer(&ok_a), Some("api"), None));
    assert_eq!(status(&sim, id), 200);
    let id = sim.request(0, &on_route(bearer(&no_scope), Some("api"), None));
    assert_eq!(status(&sim, id), 403);
    let id = sim.request(1, &on_route(bearer(&of_b), Some("api"), None));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 401, "a token of IdP B on a policy of IdP A");
    // route_policies by name when the metadata names nothing
    let id = sim.request(1, &on_route(bearer(&no_scope), None, Some("orders-route")));
    assert_eq!(status(&sim, id), 403);
    // the default policy elsewhere (no scope rule)
    let id = sim.request(1, &on_route(bearer(&no_scope), None, Some("other-route")));
    assert_eq!(status(&sim, id), 200);
    // `partner`: IdP B's keys, and the password grant at B through B's mTLS cluster
    let id = sim.request(0, &on_route(bearer(&of_b), Some("partner"), None));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    let id = sim.request(0, &on_route(Headers::default().with("authorization", "Basic am9objpkb2U="), Some("partner"), None));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    assert_eq!(sim.idp.hits_at(B, Purpose::Token), 1);
    // each issuer's documents once for the whole process (two workers)
    for host in [A, B] {
        assert_eq!(sim.idp.hits_at(host, Purpose::Discovery), 1, "{host}");
    }
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_route_naming_an_unknown_policy_fails_closed() {
    let Two { mut sim, a, .. } = two_idps(1);
    sim.run_for(1_000);
    let id = sim.request(0, &on_route(bearer(&token(&a, "https://idp-a.example.com", "orders:read")), Some("apj"), None));
    assert_eq!(status(&sim, id), 500);
    assert!(sim.logged("names policy `apj`"), "{:?}", sim.log);
    let names = sim.worker(0).metric_names();
    assert!(names.iter().any(|n| n.name == "oidc.policy.unknown"));
    assert!(names.iter().any(|n| n.name == "oidc.policy.partner.requests.password.allowed"));
}

/// One policy of IdP A that also accepts IdP B's tokens (B reached through A's cluster, as
/// realms of one Keycloak are) and trusts an extra key set for A.
const MULTI: &str = "issuer: https://idp-a.example.com
idp_cluster: idp-a
client_id: gateway
auth_methods: [bearer]
issuers_allowed: ['https://idp-b.example.com']
extra_jwks_uris: ['https://keys.example.com/extra.json']
";
const C: &str = "idp-c.example.com";
const KEYS: &str = "keys.example.com";

struct Multi {
    sim: SimHost,
    a: RS256KeyPair,
    b: RS256KeyPair,
    c: RS256KeyPair,
    x: RS256KeyPair,
}

fn multi(workers: usize) -> Multi {
    let plan = Arc::new(Plan::parse(MULTI.as_bytes()).unwrap());
    let mut sim = SimHost::new(&plan, workers, true, T0);
    let ((a, jwks_a), (b, jwks_b), (c, jwks_c), (x, jwks_x)) = (key("a1"), key("b1"), key("c1"), key("x1"));
    for (host, jwks) in [(A, jwks_a), (B, jwks_b), (C, jwks_c)] {
        sim.idp.answer_at(host, Purpose::Discovery, 200, doc(host));
        sim.idp.answer_at(host, Purpose::Jwks, 200, jwks);
    }
    sim.idp.answer_at(KEYS, Purpose::Jwks, 200, jwks_x);
    Multi { sim, a, b, c, x }
}

fn asked(sim: &SimHost, host: &str) -> (usize, usize) {
    (sim.idp.hits_at(host, Purpose::Discovery), sim.idp.hits_at(host, Purpose::Jwks))
}

#[test]
fn tokens_of_an_allowed_issuer_are_verified_with_that_issuers_keys_only() {
    let Multi { mut sim, a, b, .. } = multi(2);
    let (iss_a, iss_b) = ("https://idp-a.example.com", "https://idp-b.example.com");
    // before any tick: the request fetches B's discovery, then B's key set, itself
    let id = sim.request(0, &bearer(&token(&b, iss_b, "x")));
    assert_eq!(status(&sim, id), 0);
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    assert_eq!((asked(&sim, B), asked(&sim, A).1), ((1, 1), 0), "B's documents only");
    sim.run_for(3_000);
    for w in [0, 1] {
        for t in [token(&b, iss_b, "x"), token(&a, iss_a, "y")] {
            let id = sim.request(w, &bearer(&t));
            sim.run_for(100);
            assert_eq!(status(&sim, id), 200, "worker {w}");
        }
    }
    // each issuer's documents once for the process, through A's cluster for both
    assert_eq!((asked(&sim, A), asked(&sim, B)), ((1, 1), (1, 1)));
    assert!(sim.clusters.iter().all(|c| c == "idp-a"), "{:?}", sim.clusters);
    // a token that claims B but is signed with A's key (under its kid, or under B's) is
    // never checked with A's keys; the unknown kid `a1` re-fetches B's key set, not A's
    for t in [token(&a, iss_b, "x"), token(&a.clone().with_key_id("b1"), iss_b, "x")] {
        let id = sim.request(1, &bearer(&t));
        sim.run_for(100);
        assert_eq!(status(&sim, id), 401);
    }
    assert_eq!((asked(&sim, A).1, asked(&sim, B).1, asked(&sim, KEYS).1), (1, 2, 1));
    // nor is one that claims A, signed with B's key: A's key sets are re-fetched, not B's
    let id = sim.request(0, &bearer(&token(&b, iss_a, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 401);
    assert_eq!((asked(&sim, A).1, asked(&sim, B).1, asked(&sim, KEYS).1), (2, 2, 2));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_token_of_an_issuer_not_allowed_is_refused_before_any_key_is_looked_at() {
    let Multi { mut sim, a, c, .. } = multi(1);
    for (t, iss) in [
        (token(&c, "https://idp-c.example.com", "x"), "https://idp-c.example.com"),
        (token(&a, "https://idp-a.example.com/", "x"), "https://idp-a.example.com/"),
    ] {
        let id = sim.request(0, &bearer(&t));
        match sim.outcome(id) {
            Outcome::Answered(r) => {
                assert_eq!(r.status, 401);
                assert!(r.header("www-authenticate").iter().any(|v| v.contains("invalid_token")), "{r:?}");
            }
            other => panic!("{iss}: answered at once without a call, got {other:?}"),
        }
        assert!(sim.logged(&format!("the token's issuer `{iss}` is not allowed")), "{:?}", sim.log);
        assert!(!sim.log.iter().any(|l| l.message.contains(&t)), "the token is never logged");
    }
    assert_eq!(sim.idp.hits(Purpose::Discovery) + sim.idp.hits(Purpose::Jwks), 0, "no document was fetched for them");
    sim.run_for(2_000);
    assert_eq!(asked(&sim, C), (0, 0), "an issuer that is not allowed is never asked");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_key_only_in_an_extra_key_set_verifies_tokens_of_the_own_issuer_only() {
    let Multi { mut sim, x, .. } = multi(2);
    let (iss_a, iss_b) = ("https://idp-a.example.com", "https://idp-b.example.com");
    sim.run_for(3_000);
    for w in [0, 1] {
        let id = sim.request(w, &bearer(&token(&x, iss_a, "x")));
        sim.run_for(100);
        assert_eq!(status(&sim, id), 200, "worker {w}");
    }
    assert_eq!(asked(&sim, KEYS), (0, 1), "the extra key set: once for the process, no discovery");
    // B's tokens are never checked with A's extra keys
    let id = sim.request(0, &bearer(&token(&x, iss_b, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 401);
    assert_eq!(asked(&sim, KEYS).1, 1);
    // a key that only a re-fetched extra set has (rotation there): found after A's set and
    // the extra one are re-fetched; B's set is not asked for
    let (x2, jwks_x2) = key("x2");
    sim.idp.answer_at(KEYS, Purpose::Jwks, 200, jwks_x2);
    let b_before = asked(&sim, B).1;
    let id = sim.request(1, &bearer(&token(&x2, iss_a, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    assert_eq!((asked(&sim, A).1, asked(&sim, KEYS).1, asked(&sim, B).1), (2, 2, b_before));
    // and a token of B with a new key re-fetches B's set only
    let (b2, jwks_b2) = key("b2");
    sim.idp.answer_at(B, Purpose::Jwks, 200, jwks_b2);
    sim.run_for(3_000);
    let before = (asked(&sim, A).1, asked(&sim, KEYS).1, asked(&sim, B).1);
    let id = sim.request(0, &bearer(&token(&b2, iss_b, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    assert_eq!((asked(&sim, A).1, asked(&sim, KEYS).1, asked(&sim, B).1), (before.0, before.1, before.2 + 1));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn an_allowed_issuer_or_an_extra_key_set_that_is_down_stops_only_its_own_tokens() {
    let Multi { mut sim, a, b, x, .. } = multi(1);
    let (iss_a, iss_b) = ("https://idp-a.example.com", "https://idp-b.example.com");
    sim.idp.answer_at(B, Purpose::Discovery, 500, "");
    sim.idp.answer_at(KEYS, Purpose::Jwks, 500, "");
    // B's discovery fails for the request that fetched it: 503, as for the own issuer
    let id = sim.request(0, &bearer(&token(&b, iss_b, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 503);
    // the extra key set's failure costs A's tokens nothing; its own key is unknown
    let id = sim.request(0, &bearer(&token(&a, iss_a, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 200);
    let id = sim.request(0, &bearer(&token(&x, iss_a, "x")));
    sim.run_for(100);
    assert_eq!(status(&sim, id), 401);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn discovery_headers_go_with_the_discovery_request_only() {
    let plan = Arc::new(
        Plan::parse(
            b"issuer: https://idp-a.example.com\nidp_cluster: idp-a\nclient_id: gw\nclient_secret: s\nauth_methods: [bearer]\n\
              discovery_headers_names: [x-tenant]\ndiscovery_headers_values: [acme]\n",
        )
        .unwrap(),
    );
    let mut sim = SimHost::new(&plan, 1, false, T0);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let (_, jwks) = key("k1");
    for (purpose, body) in [(Purpose::Discovery, doc(A)), (Purpose::Jwks, jwks)] {
        let seen = seen.clone();
        sim.idp.answers.insert(
            purpose,
            Box::new(move |call: &crate::core::idp::IdpCall| {
                let tenant = call.headers.iter().find(|(k, _)| k.as_str() == "x-tenant").map(|(_, v)| v.as_str().to_string());
                seen.borrow_mut().push((call.purpose, tenant));
                crate::core::idp::IdpResponse { status: Some(200), body: body.clone().into_bytes(), elapsed_ms: 1 }
            }),
        );
    }
    sim.run_for(2_000);
    let seen = seen.borrow();
    assert!(seen.contains(&(Purpose::Discovery, Some("acme".into()))), "{seen:?}");
    assert!(seen.contains(&(Purpose::Jwks, None)), "{seen:?}");
}
