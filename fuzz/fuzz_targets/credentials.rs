//! Credentials a client sends: `Authorization` (Basic, Bearer, anything), the bearer token in
//! the `access_token` query argument or a cookie, the refresh-token header, and the
//! certificate digest for proof of possession.
//!
//! The first byte chooses the plan (`API` or `API_STRICT`) and the host's shared-data
//! semantics; the rest is `Authorization` NUL `:path` NUL `Cookie` NUL refresh-token header
//! NUL certificate digest. Parsed directly, then sent through the simulated host twice to
//! one worker (the second from the caches) and once to the other, with an IdP that accepts
//! everything (bound to the certificate when a digest is given), so the request reaches the
//! upstream headers.
#![no_main]

use envoy_oidc::core::cookies;
use envoy_oidc::core::credentials::{self, BearerSources};
use envoy_oidc::core::testing::Headers;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Host, Keys};

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
    let all = BearerSources { header: true, query: true, cookie: Some("at".into()), header_name: None };
    if let Some(credentials::Found { token, .. }) = credentials::bearer(&all, authorization.as_deref(), path.as_deref(), cookie.as_deref()) {
        assert!(!token.is_empty() && !token.chars().any(char::is_control), "{token:?}");
    }
    if let Some(p) = &path {
        // hide_credentials: once the argument is removed, no token is found in the query.
        let stripped = credentials::without_query_param(p, credentials::QUERY_PARAM);
        let query = BearerSources { header: false, query: true, cookie: None, header_name: None };
        assert!(credentials::bearer(&query, None, Some(&stripped), None).is_none(), "{p:?} → {stripped:?}");
    }
    if let Some(c) = &cookie {
        for (k, v) in cookies::pairs(c) {
            assert!(!k.contains(';') && !v.contains(';'));
        }
    }

    let world = if mode % 2 == 0 { &common::API_WORLD } else { &common::STRICT_WORLD };
    world.with(|w| {
        // The test IdP's keys: the fixture tokens in the seeds verify.
        let mut host = Host::with_keys(w, mode & 2 == 0, Keys::Fixture);
        let refresh_header = w.plan.policy.upstream.refresh_token_header.as_str();
        let mut request = common::request(&[
            ("authorization", authorization.as_deref()),
            (":path", path.as_deref()),
            ("cookie", cookie.as_deref()),
            (refresh_header, refresh.as_deref()),
        ]);
        request = Headers { peer_cert_sha256: peer.clone(), ..request };
        let yes = [common::answer(200, if peer.is_some() { YES_BOUND } else { YES })];
        for worker in [0, 0, 1] {
            host.send(worker, &request, &yes);
        }
    });
});
