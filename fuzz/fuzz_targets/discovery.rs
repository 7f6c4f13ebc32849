//! The discovery document (OpenID Connect Discovery 1.0 / RFC 8414 metadata with RFC 8705
//! `mtls_endpoint_aliases`), and the shared-data record and fetch lease the workers exchange
//! it with. A document that is accepted is then used: endpoint routing for every client
//! authentication method, the login and logout URLs; and it is served by the simulated
//! host's IdP to workers that have nothing yet, so the first requests fetch it themselves
//! (then share it): a password grant, introspection, a login and a logout with revocation.
#![no_main]

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::discovery::{Metadata, Which};
use envoy_oidc::core::docs::lease::{Lease, LeaseState, Record};
use envoy_oidc::core::oauth::authorize::{self, Pending};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Host;

fuzz_target!(|data: &[u8]| {
    let now = common::NOW_MS;
    // Shared data: the record and the lease.
    if let Some(r) = Record::decode(data) {
        let _ = r.stale(now);
        assert_eq!(Record::decode(&Record::encode(r.fetched_at_ms, r.body)), Some(r.clone()));
    }
    let lease = Lease::decode(data);
    if let Some(l) = lease {
        assert_eq!(Lease::decode(&l.encode()), Some(l));
    }
    match Lease::state(lease.as_ref(), now) {
        LeaseState::Backoff { until_ms } | LeaseState::Fresh { until_ms } => assert!(until_ms > now),
        LeaseState::Free | LeaseState::Fetching => {}
    }
    let taken = Lease::take(lease.as_ref(), 1, now, 10_000);
    assert_eq!(Lease::state(Some(&taken), now), LeaseState::Fetching);
    let failed = taken.failed(now);
    assert!(matches!(Lease::state(Some(&failed), now), LeaseState::Backoff { .. }));
    assert!(matches!(Lease::state(Some(&failed.succeeded(now)), now), LeaseState::Fresh { .. }));

    for (i, world) in [&common::API_WORLD, &common::WEB_WORLD, &common::STRICT_WORLD].into_iter().enumerate() {
        world.with(|w| {
            let p = &w.plan.policy;
            let meta = Metadata::parse(&w.plan.issuer.issuer, data);
            if let Ok(meta) = &meta {
                for m in [ClientAuth::TlsClientAuth, ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost, ClientAuth::None] {
                    for which in [Which::Token, Which::Introspection, Which::Revocation] {
                        if let Some((cluster, endpoint)) = p.client.route(meta, which, m) {
                            assert!(!cluster.is_empty() && endpoint.path.starts_with('/'));
                        }
                    }
                }
                let pending = Pending::new(&[common::RANDOM_BYTE; 48], "/", now / 1000);
                if let Ok(url) = authorize::authorize_url(&p.login, meta, &pending) {
                    let auth = meta.authorization_endpoint.as_ref().expect("an authorization URL needs the endpoint");
                    assert!(url.as_str().starts_with(&auth.url));
                }
                let _ = p.logout.after(&p.client.client.id, Some(meta), Some(common::ID_TOKEN));
            } else if i > 0 {
                return;
            }
            // The IdP serves this document (unusable ones too, once: the request's own fetch
            // fails, is logged, and the workers back off).
            let served = w.serving(data.to_vec());
            let mut host = Host::cold(&served, data.len() % 2 == 0);
            let active = [common::answer(200, r#"{"active":true,"sub":"john"}"#)];
            host.send(0, &common::authorization("Basic am9objpkb2U="), &active);
            if meta.is_err() {
                return;
            }
            host.send(1, &common::authorization("Bearer opaque"), &active);
            if p.sessions.is_some() {
                if let Some(session) = host.log_in("/app", None) {
                    host.send(0, &common::browser("/logout", Some(&session), "POST"), &[common::answer(200, ""), common::code_answer()]);
                }
            }
        });
    }
});
