//! Plugin configuration: YAML/JSON bytes → `Plan`. A plan that loads must also work: it is
//! run through a password grant, a bearer JWT, a browser login with its callback, and a
//! logout against the test IdP's documents, and nothing it makes the filter send may split a
//! header.
#![no_main]

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::config::Plan;
use envoy_oidc::core::discovery::{Metadata, Which};
use envoy_oidc::core::flow::{Caches, Env, Flow, Inputs, Step};
use libfuzzer_sys::fuzz_target;

mod common;

const BEARER: &str = include_str!("../fixtures/access_token.jwt");

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = Plan::parse(data) else { return };
    let _ = format!("{plan:?}");
    for e in [None, Some(("invalid_token", "the token is expired"))] {
        for c in plan.challenges(e) {
            assert!(common::header_safe(&c), "unsafe challenge {c:?}");
        }
    }
    // The IdP's documents, for whatever issuer the plan names.
    let (meta, keys) = common::API_WORLD.with(|w| {
        (Metadata { issuer: plan.issuer.clone(), ..w.meta.clone() }, envoy_oidc::core::jwt::KeySet::parse(common::JWKS))
    });
    let Ok(keys) = keys else { return };
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
        let _ = plan.cluster_for(m);
        for w in [Which::Token, Which::Introspection, Which::Revocation] {
            let _ = meta.route(&plan, w, m);
        }
    }
    let no_end_session = Metadata { end_session_endpoint: None, ..meta.clone() };
    let mut caches = Caches::new(8);
    let mut random = |b: &mut [u8]| b.fill(common::RANDOM_BYTE);
    let mut env = Env { plan: &plan, meta: Some(&meta), keys: Some(&keys), caches: &mut caches, now_ms: common::NOW_MS, random: &mut random };
    let token = common::code_answer();
    let bearer = format!("Bearer {}", BEARER.trim());
    let requests = [
        Inputs { authorization: Some("Basic am9objpkb2U="), refresh_token: Some("RT"), ..Default::default() },
        Inputs { authorization: Some(&bearer), path: Some("/?access_token=opaque"), cookie: Some("at=opaque"), ..Default::default() },
        common::browser("/app?x=1", None, "GET"),
    ];
    for req in requests {
        let mut flow = Flow::new();
        let step = flow.start(&mut env, req);
        let step = common::drive(&mut env, &mut flow, step, std::slice::from_ref(&token));
        // A browser sent to the IdP comes back to the callback with the state.
        if let Step::Respond(r) = &step {
            let cookies = common::jar(&r.headers);
            for redirect in plan.redirect_uris.iter().take(1) {
                let path = format!("{}?code=c&state=QkJCQkJCQkJCQkJCQkJCQg", redirect.path.split('?').next().unwrap_or("/"));
                let mut flow = Flow::new();
                let step = flow.start(&mut env, common::browser(&path, Some(&cookies), "GET"));
                let step = common::drive(&mut env, &mut flow, step, std::slice::from_ref(&token));
                if let Step::Respond(r) = step {
                    let session = common::jar(&r.headers);
                    for method in ["GET", "POST"] {
                        let mut flow = Flow::new();
                        let step = flow.start(&mut env, common::browser("/app/logout?logout=1", Some(&session), method));
                        common::drive(&mut env, &mut flow, step, &[common::answer(200, "")]);
                    }
                    // An IdP without RP-initiated logout: the browser goes to logout_redirect_uri.
                    let mut flow = Flow::new();
                    env.meta = Some(&no_end_session);
                    let step = flow.start(&mut env, common::browser("/app/logout?logout=1", Some(&session), "POST"));
                    common::drive(&mut env, &mut flow, step, &[common::answer(200, "")]);
                    env.meta = Some(&meta);
                }
            }
        }
    }
});
