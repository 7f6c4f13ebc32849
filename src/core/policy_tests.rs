//! Policies chosen per route, and two IdPs in one filter, against the simulated host:
//! route metadata, then `route_policies`, then the default; an unknown policy fails closed;
//! each issuer's documents are fetched once per process; tokens, caches and sessions stay
//! with their policy.

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
