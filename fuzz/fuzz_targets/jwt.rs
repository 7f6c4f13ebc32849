//! JWTs and JWKS. The first byte chooses what the rest is (`0`, `1`, `2` in the seeds):
//! - `0` a bearer token: checked against the test IdP's key set as an access token, as an
//!   ID token (audience, nonce), and as a bearer token in the simulated host (verification,
//!   cache, the other worker, upstream claims), whose IdP refuses every introspection and
//!   userinfo call, so a forwarded request means the filter verified the token itself.
//! - `1` a JWKS: parsed, then the fixture tokens are verified against it, directly and as
//!   bearer tokens in a simulated host whose IdP serves it.
//! - `2` token NUL now (seconds) NUL leeway (seconds): time checks at any clock.
//!
//! Whatever the input, a token that verifies was signed with an asymmetric algorithm, names
//! the configured issuer and is not expired.
#![no_main]

use envoy_oidc::core::claims::Claims;
use envoy_oidc::core::credentials::{self, BearerSources};
use envoy_oidc::core::idp::{IdpCall, IdpResponse, Purpose};
use envoy_oidc::core::jwt::{self, Expect, KeySet};
use envoy_oidc::core::oauth::authorize;
use envoy_oidc::core::testing::Outcome;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Host, Keys};

const TOKENS: &str = include_str!("../fixtures/tokens.txt");
/// A real access token of the test IdP (RS256), valid at `NOW_MS`.
const ACCESS_TOKEN: &str = include_str!("../fixtures/access_token.jwt");

/// What every verified token must satisfy.
fn accepted(token: &str, claims: &Claims, now: u64, leeway: u64) {
    let header = token.split('.').next().unwrap_or_default();
    let header = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).expect("verified header is base64url");
    let header: serde_json::Value = serde_json::from_slice(&header).expect("verified header is JSON");
    let alg = header["alg"].as_str().expect("verified token has an alg");
    assert!(alg != "none" && !alg.starts_with("HS"), "{alg} accepted");
    assert_eq!(claims.get("iss").and_then(|i| i.as_str()), Some(common::ISSUER));
    let exp = claims.get("exp").and_then(|e| e.as_f64()).expect("verified token has exp");
    assert!(exp + leeway as f64 >= now as f64, "expired token accepted: exp {exp}, now {now}");
    if let Some(nbf) = claims.get("nbf").and_then(|e| e.as_f64()) {
        assert!(nbf <= (now + leeway) as f64, "token not yet valid accepted: nbf {nbf}, now {now}");
    }
}

/// Sends `Bearer token` to both workers of `host` (twice to the first: the second from the
/// cache); a forwarded request must carry a token that [`accepted`] holds for.
fn through_host(host: &mut Host<'_>, authorization: &str) {
    let no = [common::answer(401, r#"{"error":"invalid_token"}"#)];
    let header = BearerSources { header: true, query: false, cookie: None, header_name: None };
    let found = credentials::bearer(&header, Some(authorization), None, None);
    for worker in [0, 0, 1] {
        let now = host.now_s();
        if let Outcome::Forwarded(_) = host.send(worker, &common::authorization(authorization), &no) {
            let token = &found.as_ref().expect("forwarded with a bearer token").token;
            let claims = jwt::unverified_claims(token).expect("a forwarded token is a JWT");
            accepted(token, &claims, now, host.world.plan.policy.leeway);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let now = common::NOW_MS / 1000;
    match mode % 3 {
        0 => {
            let token = common::header(rest);
            let _ = credentials::shape(&token);
            let _ = jwt::kid(&token);
            let _ = jwt::unverified_claims(&token);
            common::FIXTURE_KEYS.with(|keys| {
                common::API_WORLD.with(|w| {
                    // The harness itself: the fixtures still fit its clock.
                    assert!(
                        keys.verify(ACCESS_TOKEN.trim(), common::ISSUER, 0, now).is_ok(),
                        "the fixture access token no longer verifies"
                    );
                    if let Ok(claims) = keys.verify(&token, common::ISSUER, 0, now) {
                        accepted(&token, &claims, now, 0);
                    }
                    let expect = Expect {
                        issuer: common::ISSUER,
                        audience: Some("client-tls-auth"),
                        nonce: Some(common::FIXTURE_NONCE),
                        leeway_secs: 5,
                        now_secs: now,
                    };
                    if let Ok(claims) = keys.verify_with(&token, &expect) {
                        accepted(&token, &claims, now, 5);
                    }
                    let login = &w.plan.policy.login;
                    if let Ok(claims) = authorize::validate_id_token(login, keys, &token, common::FIXTURE_NONCE, now) {
                        accepted(&token, &claims, now, login.leeway);
                        assert_eq!(claims.get("nonce").and_then(|n| n.as_str()), Some(common::FIXTURE_NONCE));
                    }
                    let mut host = Host::with_keys(w, mode & 4 == 0, Keys::Fixture);
                    through_host(&mut host, &format!("Bearer {token}"));
                })
            });
        }
        1 => {
            let Ok(keys) = KeySet::parse(rest) else { return };
            let _ = (keys.len(), keys.is_empty(), keys.skipped(), format!("{keys:?}"));
            for token in TOKENS.lines() {
                if let Some(kid) = jwt::kid(token) {
                    let _ = keys.has_kid(&kid);
                }
                if let Ok(claims) = keys.verify(token, common::ISSUER, 0, now) {
                    accepted(token, &claims, now, 0);
                }
            }
            // The same set served by the IdP: adopted, shared, re-fetched for unknown keys.
            common::API_WORLD.with(|w| {
                let mut host = Host::cold(w, mode & 4 == 0);
                let jwks = rest.to_vec();
                host.sim.idp.answers.insert(
                    Purpose::Jwks,
                    Box::new(move |call: &IdpCall| {
                        common::check_call(call);
                        IdpResponse { status: Some(200), body: jwks.clone(), elapsed_ms: 0 }
                    }),
                );
                host.warm();
                for token in TOKENS.lines() {
                    through_host(&mut host, &format!("Bearer {token}"));
                }
            });
        }
        _ => {
            let f = common::fields(rest);
            let token = common::header(f.first().copied().unwrap_or_default());
            let num = |i: usize| common::text(f.get(i).copied().unwrap_or_default()).trim().parse::<u64>().ok();
            // A host clock before 2106 (jwt-simple keeps seconds in 32 bits).
            let now = num(1).filter(|n| *n < 1 << 32).unwrap_or(now);
            let leeway = num(2).unwrap_or(0).min(3600);
            common::FIXTURE_KEYS.with(|keys| {
                if let Ok(claims) = keys.verify(&token, common::ISSUER, leeway, now) {
                    accepted(&token, &claims, now, leeway);
                }
            });
        }
    }
});
