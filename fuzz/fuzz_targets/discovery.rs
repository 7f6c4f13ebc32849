//! The discovery document (OpenID Connect Discovery 1.0 / RFC 8414 metadata with RFC 8705
//! `mtls_endpoint_aliases`), and the shared-data record and fetch lease the workers exchange
//! it with. A document that is accepted is then used: endpoint routing for every client
//! authentication method, the login redirect, a password grant, introspection, and logout
//! with revocation.
#![no_main]

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::discovery::{self, Lease, Metadata, Record, Which};
use envoy_oidc::core::flow::{Caches, Env, Flow, Inputs};
use envoy_oidc::core::login::{self, Pending};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    // Shared data: the record and the lease.
    if let Some(r) = Record::decode(data) {
        let _ = r.stale(common::NOW_MS);
        assert_eq!(Record::decode(&Record::encode(r.fetched_at_ms, r.body)), Some(r.clone()));
    }
    if let Some(l) = Lease::decode(data) {
        assert_eq!(Lease::decode(&l.encode()), Some(l));
    }
    let _ = Lease::claimable(Some(data), common::NOW_MS);
    let _ = Lease::claimable_early(Some(data), common::NOW_MS, 10_000);
    let _ = Lease::take(Some(data), 1, common::NOW_MS, 10_000).failed(common::NOW_MS).succeeded(common::NOW_MS);

    for world in [&common::API_WORLD, &common::WEB_WORLD, &common::STRICT_WORLD] {
        world.with(|w| {
            let plan = &w.plan;
            let _ = discovery::request(plan);
            let Ok(meta) = Metadata::parse(plan, data) else { return };
            let _ = discovery::jwks_request(plan, &meta);
            for m in [ClientAuth::TlsClientAuth, ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost, ClientAuth::None] {
                for which in [Which::Token, Which::Introspection, Which::Revocation] {
                    if let Some((cluster, endpoint)) = meta.route(plan, which, m) {
                        assert!(!cluster.is_empty() && endpoint.path.starts_with('/'));
                    }
                }
            }
            let pending = Pending::new(&[common::RANDOM_BYTE; 48], "/", common::NOW_MS / 1000);
            if let Ok(url) = login::authorize_url(plan, &meta, &pending) {
                assert!(common::header_safe(&url));
            }
            if let Some(url) = login::after_logout(plan, Some(&meta), Some(common::ID_TOKEN)) {
                assert!(common::header_safe(&url));
            }
            let mut caches = Caches::new(8);
            let mut random = |b: &mut [u8]| b.fill(common::RANDOM_BYTE);
            let mut env = Env { plan, meta: Some(&meta), keys: Some(&w.keys), caches: &mut caches, now_ms: common::NOW_MS, random: &mut random };
            let env = &mut env;
            let token = common::code_answer();
            for req in [
                Inputs { authorization: Some("Basic am9objpkb2U="), ..Default::default() },
                Inputs { authorization: Some("Bearer opaque"), ..Default::default() },
            ] {
                let mut flow = Flow::new();
                let step = flow.start(env, req);
                common::drive(env, &mut flow, step, &[common::answer(200, r#"{"active":true,"sub":"john"}"#)]);
            }
            if plan.sessions.is_some() {
                if let Some(session) = common::log_in(env, "/app", None) {
                    let mut flow = Flow::new();
                    let step = flow.start(env, common::browser("/logout", Some(&session), "POST"));
                    common::drive(env, &mut flow, step, &[common::answer(200, ""), token]);
                }
            }
        });
    }
});
