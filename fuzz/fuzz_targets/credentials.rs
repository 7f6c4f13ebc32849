//! Credentials a client sends: `Authorization` (Basic, Bearer, anything), the bearer token in
//! the `access_token` query argument or a cookie, the refresh-token header, and the
//! certificate digest for proof of possession.
//!
//! The first byte chooses the plan (`API` or `API_STRICT`); the rest is
//! `Authorization` NUL `:path` NUL `Cookie` NUL refresh-token header NUL certificate digest.
//! Parsed directly, then run through the flow twice (the second from the caches) with an
//! IdP that accepts everything (bound to the certificate when a digest is given), so the
//! request reaches the upstream headers.
#![no_main]

use envoy_oidc::core::config::BearerSources;
use envoy_oidc::core::credentials;
use envoy_oidc::core::flow::{Caches, Flow, Inputs};
use libfuzzer_sys::fuzz_target;

mod common;

/// An answer that is a valid token response, introspection and userinfo answer at once.
const YES: &str = r#"{"active":true,"sub":"john","email":"john@example.com","groups":["admins","users"],"realm_access":{"roles":["writer"]},"scope":"openid api:read api:write","exp":1795786700,"iat":1795783100,"iss":"https://localhost:39555","access_token":"ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR","token_type":"Bearer","expires_in":3600,"refresh_token":"RT2"}"#;
/// The same, bound to the certificate whose SHA-256 is 32 bytes of 0xaa.
const YES_BOUND: &str = r#"{"active":true,"sub":"john","email":"john@example.com","groups":["admins","users"],"realm_access":{"roles":["writer"]},"scope":"openid api:read api:write","exp":1795786700,"iat":1795783100,"iss":"https://localhost:39555","cnf":{"x5t#S256":"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo"},"access_token":"ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR","token_type":"Bearer","expires_in":3600,"refresh_token":"RT2"}"#;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let f = common::fields(rest);
    let authorization = common::header_field(&f, 0);
    let path = common::header_field(&f, 1);
    let cookie = common::header_field(&f, 2);
    let refresh = common::header_field(&f, 3);
    let peer = common::header_field(&f, 4);

    if let Ok(Some(b)) = credentials::basic(authorization.as_deref()) {
        assert!(!b.user.is_empty());
        let _ = format!("{b:?}");
    }
    let all = BearerSources { header: true, query: true, cookie: Some("at".into()) };
    if let Some((token, _)) = credentials::bearer(&all, authorization.as_deref(), path.as_deref(), cookie.as_deref()) {
        assert!(!token.is_empty());
    }
    if let Some(p) = &path {
        // hide_credentials: once the argument is removed, no token is found in the query.
        let stripped = credentials::without_query_param(p, credentials::QUERY_PARAM);
        let query = BearerSources { header: false, query: true, cookie: None };
        assert!(credentials::bearer(&query, None, Some(&stripped), None).is_none(), "{p:?} → {stripped:?}");
    }
    if let Some(c) = &cookie {
        for (k, v) in credentials::cookies(c) {
            assert!(!k.contains(';') && !v.contains(';'));
        }
    }

    let world = if mode % 2 == 0 { &common::API_WORLD } else { &common::STRICT_WORLD };
    world.with(|w| {
        let mut caches = Caches::new(8);
        let inputs = Inputs {
            authorization: authorization.as_deref(),
            path: path.as_deref(),
            cookie: cookie.as_deref(),
            refresh_token: refresh.as_deref(),
            peer_cert_sha256: peer.as_deref(),
            ..Default::default()
        };
        let yes = common::answer(200, if peer.is_some() { YES_BOUND } else { YES });
        for _ in 0..2 {
            w.with(&mut caches, 0, |env| {
                let mut flow = Flow::new();
                let step = flow.start(env, inputs);
                common::drive(env, &mut flow, step, std::slice::from_ref(&yes));
            });
        }
    });
});
