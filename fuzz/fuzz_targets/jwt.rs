//! JWTs and JWKS. The first byte chooses what the rest is (`0`, `1`, `2` in the seeds):
//! - `0` a bearer token: checked against the test IdP's key set as an access token, as an
//!   ID token (audience, nonce), and through the flow (verification, cache, upstream claims).
//! - `1` a JWKS: parsed, then the fixture tokens are verified against it.
//! - `2` token NUL now (seconds) NUL leeway (seconds): time checks at any clock.
//!
//! Whatever the input, a token that verifies was signed with an asymmetric algorithm, names
//! the configured issuer and is not expired.
#![no_main]

use envoy_oidc::core::claims::Claims;
use envoy_oidc::core::flow::{Caches, Flow, Inputs};
use envoy_oidc::core::jwt::{self, Expect, KeySet};
use envoy_oidc::core::login;
use libfuzzer_sys::fuzz_target;

mod common;

const TOKENS: &str = include_str!("../fixtures/tokens.txt");

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

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let now = common::NOW_MS / 1000;
    match mode % 3 {
        0 => {
            let token = common::header(rest);
            let _ = jwt::looks_like_jwt(&token);
            let _ = jwt::kid(&token);
            let _ = jwt::unverified_claims(&token);
            common::API_WORLD.with(|w| {
                if let Ok(claims) = w.keys.verify(&token, common::ISSUER, 0, now) {
                    accepted(&token, &claims, now, 0);
                }
                let expect = Expect { issuer: common::ISSUER, audience: Some("client-tls-auth"), nonce: Some("QkJCQkJCQkJCQkJCQkJCQg"), leeway_secs: 5, now_secs: now };
                if let Ok(claims) = w.keys.verify_with(&token, &expect) {
                    accepted(&token, &claims, now, 5);
                }
                let _ = login::validate_id_token(&w.plan, &w.keys, &token, "QkJCQkJCQkJCQkJCQkJCQg", now);
                let mut caches = Caches::new(8);
                let authorization = format!("Bearer {token}");
                for _ in 0..2 {
                    w.with(&mut caches, 0, |env| {
                        let mut flow = Flow::new();
                        let step = flow.start(env, Inputs { authorization: Some(&authorization), ..Default::default() });
                        common::drive(env, &mut flow, step, &[common::answer(401, r#"{"error":"invalid_token"}"#)]);
                    });
                }
            });
        }
        1 => {
            let Ok(keys) = KeySet::parse(rest) else { return };
            let _ = (keys.len(), keys.is_empty(), format!("{keys:?}"));
            for token in TOKENS.lines() {
                if let Some(kid) = jwt::kid(token) {
                    let _ = keys.has_kid(&kid);
                }
                if let Ok(claims) = keys.verify(token, common::ISSUER, 0, now) {
                    accepted(token, &claims, now, 0);
                }
            }
        }
        _ => {
            let f = common::fields(rest);
            let token = common::header(f.first().copied().unwrap_or_default());
            let num = |i: usize| common::text(f.get(i).copied().unwrap_or_default()).trim().parse::<u64>().ok();
            // A host clock before 2106 (jwt-simple keeps seconds in 32 bits).
            let now = num(1).filter(|n| *n < 1 << 32).unwrap_or(now);
            let leeway = num(2).unwrap_or(0).min(3600);
            common::API_WORLD.with(|w| {
                if let Ok(claims) = w.keys.verify(&token, common::ISSUER, leeway, now) {
                    accepted(&token, &claims, now, leeway);
                }
            });
        }
    }
});
