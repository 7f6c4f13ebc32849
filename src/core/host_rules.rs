//! The host rules, each checked against the simulated host ([`crate::core::testing`]) with
//! several workers, Kong's shared-data semantics where they matter, and a scripted IdP.
//! Each test fails when the core breaks its rule (the closing notes of the issue that
//! introduced them say how each was broken on purpose to watch it fail).

use std::sync::Arc;

use base64::Engine;
use jwt_simple::prelude::{RS256KeyPair, RSAKeyPairLike};

use crate::core::config::Plan;
use crate::core::docs::KEYS_REFETCH_MIN_MS;
use crate::core::idp::Purpose;
use crate::core::testing::{Headers, Outcome, SimHost};
use crate::core::worker::TICK_MS;

const ISS: &str = "https://idp.example.com";
const T0: u64 = 1_800_000_000_000;
const DOC: &str =
    r#"{"issuer":"https://idp.example.com","token_endpoint":"https://idp.example.com/token","jwks_uri":"https://idp.example.com/jwks"}"#;

fn plan() -> Arc<Plan> {
    let text = format!("issuer: {ISS}\nidp_cluster: idp\ntls_client_auth_cluster: idp-mtls\nclient_id: gw\nclient_auth: tls_client_auth\nauth_methods: [bearer, password]\ntimeout: 1000\n");
    Arc::new(Plan::parse(text.as_bytes()).unwrap())
}

fn key(kid: &str) -> (RS256KeyPair, String) {
    let kp = RS256KeyPair::generate(2048).unwrap().with_key_id(kid);
    let c = kp.public_key().to_components();
    let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    (kp, serde_json::json!({"keys": [{"kty": "RSA", "kid": kid, "n": b(&c.n), "e": b(&c.e)}]}).to_string())
}

fn token(kp: &RS256KeyPair, now_ms: u64) -> String {
    let mut c = jwt_simple::prelude::Claims::create(jwt_simple::prelude::Duration::from_secs(300));
    c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000));
    c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000 + 300));
    c.invalid_before = None;
    c.issuer = Some(ISS.into());
    kp.sign(c).unwrap()
}

/// A simulated host whose IdP serves discovery, `jwks` and a token endpoint.
fn sim(workers: usize, kong: bool, jwks: &str) -> SimHost {
    let mut sim = SimHost::new(&plan(), workers, kong, T0);
    sim.idp.answer(Purpose::Discovery, 200, DOC);
    sim.idp.answer(Purpose::Jwks, 200, jwks.to_string());
    sim.idp.answer(Purpose::Token, 200, r#"{"access_token":"AT","token_type":"Bearer","expires_in":300}"#);
    sim
}

fn bearer(t: &str) -> Headers {
    Headers::default().with("authorization", &format!("Bearer {t}"))
}

fn basic() -> Headers {
    Headers::default().with("authorization", "Basic am9objpkb2U=")
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
fn the_tick_period_is_set_once_and_configure_makes_no_call() {
    let (_, jwks) = key("k1");
    let mut sim = sim(2, true, &jwks);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert_eq!(sim.idp.hits(Purpose::Discovery), 0, "nothing is fetched from configure");
    // the first fetch happens on the first tick; documents land, time passes, an hour's
    // refresh and more: the period is never set again
    sim.run_until(T0 + TICK_MS - 1);
    assert_eq!(sim.idp.hits(Purpose::Discovery), 0, "nor before the first tick");
    sim.run_until(T0 + TICK_MS + 10);
    assert_eq!(sim.idp.hits(Purpose::Discovery), 1);
    sim.run_for(2 * 3_600_000);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(sim.idp.hits(Purpose::Discovery) >= 2, "refreshed hourly");
}

#[test]
fn documents_are_fetched_once_per_process_and_adopted_by_every_worker() {
    let (kp, jwks) = key("k1");
    let mut sim = sim(4, true, &jwks);
    sim.run_for(3_000);
    assert_eq!((sim.idp.hits(Purpose::Discovery), sim.idp.hits(Purpose::Jwks)), (1, 1));
    for w in 0..4 {
        let id = sim.request(w, &bearer(&token(&kp, sim.now_ms)));
        assert_eq!(status(&sim, id), 200, "worker {w}");
    }
    assert_eq!(sim.idp.hits(Purpose::Jwks), 1);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_request_before_the_first_tick_makes_its_own_calls_and_decides_in_its_own_context() {
    let (kp, jwks) = key("k1");
    let mut sim = sim(2, true, &jwks);
    // before any document is there: several requests on both workers at once
    let ids: Vec<usize> =
        (0..6).map(|i| if i % 2 == 0 { sim.request(i % 2, &basic()) } else { sim.request(i % 2, &bearer(&token(&kp, T0))) }).collect();
    assert!(ids.iter().all(|id| status(&sim, *id) == 0), "each waits on a call of its own");
    sim.run_for(1_000);
    for id in ids {
        assert_eq!(status(&sim, id), 200, "request {id}");
    }
    // every fetch was made by a request or a tick: at most one per worker and document
    // with the lease, the rest as bounded followers
    assert!(sim.idp.hits(Purpose::Discovery) <= 6, "{}", sim.idp.hits(Purpose::Discovery));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_burst_while_the_first_fetch_is_under_way_waits_on_calls_of_its_own_not_503() {
    // Envoy has just started (or a configuration was pushed) under load: the first tick's
    // fetch is in flight when 40 requests arrive on one worker. Each follows with a call of
    // its own; none is refused for want of a document that is about to arrive.
    let (_, jwks) = key("k1");
    let mut sim = sim(2, true, &jwks);
    sim.idp.latency_ms = 50;
    sim.run_until(T0 + TICK_MS + 1);
    let ids: Vec<usize> = (0..40).map(|i| sim.request(i % 2, &basic())).collect();
    sim.run_for(1_000);
    for id in ids {
        assert_eq!(status(&sim, id), 200, "request {id}: {:?}", sim.outcome(id));
    }
    let hits = sim.idp.hits(Purpose::Discovery);
    assert!(hits <= 1 + 2 * crate::core::docs::FOLLOWERS_FIRST_LOAD, "{hits}");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_rotated_key_set_lands_although_every_write_needs_its_cas() {
    // Kong: a CAS-0 write to an existing key fails. A worker that wrote the new key set
    // without reading its CAS first would never store it; the other would never see it.
    let (_, old) = key("k1");
    let mut sim = sim(2, true, &old);
    sim.run_for(2_000);
    let (new_kp, new) = key("k2");
    sim.idp.answer(Purpose::Jwks, 200, new);
    sim.run_for(KEYS_REFETCH_MIN_MS);
    let first = sim.request(0, &bearer(&token(&new_kp, sim.now_ms)));
    sim.run_for(100);
    assert_eq!(status(&sim, first), 200);
    assert_eq!(sim.idp.hits(Purpose::Jwks), 2, "one re-fetch");
    // the other worker adopts what the first stored: no second fetch
    let second = sim.request(1, &bearer(&token(&new_kp, sim.now_ms)));
    sim.run_for(100);
    assert_eq!(status(&sim, second), 200);
    assert_eq!(sim.idp.hits(Purpose::Jwks), 2);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_token_of_an_unknown_key_is_refused_never_let_through() {
    // Kong lets a request through once its last call is answered: a request held while the
    // key set is re-fetched by someone else would reach the upstream unchecked.
    let (_, jwks) = key("k1");
    let mut sim = sim(2, true, &jwks);
    sim.run_for(KEYS_REFETCH_MIN_MS + 3_000);
    let (forger, _) = key("k1");
    let ids: Vec<usize> = (0..8).map(|i| sim.request(i % 2, &bearer(&token(&forger, sim.now_ms)))).collect();
    let (unknown_kp, _) = key("nope");
    let unknown: Vec<usize> = (0..8).map(|i| sim.request(i % 2, &bearer(&token(&unknown_kp, sim.now_ms)))).collect();
    sim.run_for(1_000);
    for id in ids.into_iter().chain(unknown) {
        assert_eq!(status(&sim, id), 401, "request {id}: {:?}", sim.outcome(id));
    }
    // the unknown key made the set be fetched again, at most once per worker with the lease
    // or as a bounded follower; nothing was let through meanwhile
    let hits = sim.idp.hits(Purpose::Jwks);
    assert!((2..=1 + 2 * (1 + crate::core::docs::FOLLOWERS)).contains(&hits), "{hits}");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn the_idp_down_then_back_fails_fast_backs_off_and_recovers() {
    let (_, jwks) = key("k1");
    let mut sim = sim(4, true, &jwks);
    sim.idp.down = true;
    let first = sim.request(0, &basic());
    sim.run_for(10);
    assert_eq!(status(&sim, first), 503, "answered at once, not held");
    assert!(sim.logged("Discovery fetch failed"));
    // ten seconds of ticks on four workers: retries spaced by the shared backoff
    sim.run_for(10_000);
    let hits = sim.idp.hits(Purpose::Discovery);
    assert!((3..=8).contains(&hits), "{hits} attempts in 10 s");
    // while backing off, a request is answered without calling the IdP
    let during = sim.request(1, &basic());
    assert_eq!(status(&sim, during), 503);
    sim.idp.down = false;
    sim.run_for(40_000);
    let after = sim.request(2, &basic());
    sim.run_for(100);
    assert_eq!(status(&sim, after), 200);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_call_that_outlives_its_timeout_is_the_requests_own_timeout() {
    let (_, jwks) = key("k1");
    let mut sim = sim(1, false, &jwks);
    sim.run_for(1_000);
    sim.idp.latency_ms = 5_000;
    let id = sim.request(0, &basic());
    sim.run_for(999);
    assert_eq!(status(&sim, id), 0, "still waiting on its own call");
    sim.run_for(2);
    assert_eq!(status(&sim, id), 504);
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}
