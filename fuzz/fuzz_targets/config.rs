//! Plugin configuration: YAML/JSON bytes → `Plan`. A plan that loads must also work: it is
//! loaded by the two workers of the simulated host, whose IdP serves the test IdP's
//! documents (naming the plan's issuer), and runs a password grant, a bearer JWT, a browser
//! login with its callback, and logouts (with and without the IdP's `end_session_endpoint`);
//! every call, outcome and host rule is checked (see `common`).
#![no_main]

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::config::Plan;
use envoy_oidc::core::discovery::Which;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Host, World};

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = Plan::parse(data) else { return };
    let _ = format!("{plan:?}");
    let p = &plan.policy;
    for e in [None, Some(("invalid_token", "the token is expired"))] {
        let _ = p.challenge.challenges(e);
    }
    let world = World::for_plan(plan);
    let p = &world.plan.policy;
    let meta = world.meta();
    let methods = [
        ClientAuth::TlsClientAuth,
        ClientAuth::SelfSignedTlsClientAuth,
        ClientAuth::ClientSecretBasic,
        ClientAuth::ClientSecretPost,
        ClientAuth::ClientSecretJwt,
        ClientAuth::PrivateKeyJwt,
        ClientAuth::None,
    ];
    for m in methods {
        assert!(!p.client.cluster_for(m).is_empty());
        for w in [Which::Token, Which::Introspection, Which::Revocation] {
            if let Some((cluster, endpoint)) = p.client.route(meta, w, m) {
                assert!(!cluster.is_empty() && endpoint.path.starts_with('/'));
            }
        }
    }

    let mut host = Host::new(&world, data.len() % 2 == 0);
    let token = [common::code_answer()];
    // A JWT access token for the plan's issuer, signed by the key the IdP serves.
    let claims = serde_json::json!({"scope": "openid api:read", "email": "john@example.com", "groups": ["admins"]});
    let bearer = format!("Bearer {}", common::sign(&p.issuer, host.now_s(), claims));
    let refresh = p.upstream.refresh_token_header.as_str();
    let requests = [
        common::request(&[("authorization", Some("Basic am9objpkb2U=")), (refresh, Some("RT"))]),
        common::request(&[("authorization", Some(&bearer)), (":path", Some("/?access_token=opaque")), ("cookie", Some("at=opaque"))]),
    ];
    for (i, req) in requests.iter().enumerate() {
        host.send(i, req, &token);
    }
    // A browser sent to the IdP comes back to the callback with the state; then logs out.
    let Some(session) = host.log_in("/app?x=1", None) else { return };
    for method in ["GET", "POST"] {
        host.send(0, &common::browser("/app/logout?logout=1", Some(&session), method), &[common::answer(200, "")]);
    }
    // An IdP without RP-initiated logout: the browser goes to logout_redirect_uri.
    let mut doc: serde_json::Value = serde_json::from_slice(&world.discovery).expect("served discovery document");
    doc.as_object_mut().map(|d| d.remove("end_session_endpoint"));
    let bare = world.serving(doc.to_string().into_bytes());
    let mut host = Host::new(&bare, data.len() % 2 == 1);
    let out = host.send(1, &common::browser("/app/logout?logout=1", Some(&session), "POST"), &[common::answer(200, "")]);
    if let (Some(to), true) = (common::location(&out), p.logout.matches("POST", "/app/logout?logout=1")) {
        assert_eq!(p.logout.redirect_uri.as_ref().map(|r| r.as_str()), Some(to), "logout without end_session_endpoint");
    }
});
