//! The IdP's answers: token responses (password, client credentials, refresh token,
//! authorization code, session refresh), introspection, userinfo and revocation, as status,
//! elapsed time and body.
//!
//! The first byte chooses the call (`0` … `7` in the seeds, see `SCENARIOS`); the rest is
//! answers separated by NUL pairs: `status[/elapsed_ms]` NUL body NUL `status` NUL body …,
//! used in turn for the calls the request makes (the last one again when they run out). A
//! status that is not a number is a call that got no answer.
#![no_main]

use std::cell::RefCell;

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::credentials::Basic;
use envoy_oidc::core::flow::{Caches, Env, Flow, Inputs, Step};
use envoy_oidc::core::grants::{self, Grant};
use envoy_oidc::core::idp::IdpResponse;
use envoy_oidc::core::introspection;
use libfuzzer_sys::fuzz_target;

mod common;
use common::World;

const SCENARIOS: usize = 8;

fn answers(rest: &[u8]) -> Vec<IdpResponse> {
    let f = common::fields(rest);
    f.chunks(2)
        .map(|pair| {
            let head = common::text(pair[0]);
            let (status, elapsed) = head.split_once('/').unwrap_or((&head, "3"));
            IdpResponse {
                status: status.trim().parse().ok(),
                body: pair.get(1).copied().unwrap_or_default().to_vec(),
                elapsed_ms: elapsed.trim().parse().unwrap_or(3),
            }
        })
        .collect()
}

/// Starts `inputs` at `later_ms`, answers its calls with `answers`, twice over the same
/// caches (the second may be served from them).
fn request(w: &World, caches: &mut Caches, later_ms: u64, inputs: Inputs<'_>, answers: &[IdpResponse]) {
    for _ in 0..2 {
        w.with(caches, later_ms, |env: &mut Env<'_>| {
            let mut flow = Flow::new();
            let step = flow.start(env, inputs);
            common::drive(env, &mut flow, step, answers);
        });
    }
}

thread_local! {
    /// A session from a real login, for refresh and logout.
    static SESSION: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn session(w: &World) -> String {
    SESSION.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| w.with(&mut Caches::new(8), 0, |env| common::log_in(env, "/app?x=1", None)).expect("fixture login"))
            .clone()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((scenario, rest)) = data.split_first() else { return };
    let answers = answers(rest);
    let Some(first) = answers.first() else { return };
    let mut caches = Caches::new(8);

    // The parsers themselves, for every grant and method.
    let john = Basic { user: "john".into(), password: "doe".into() };
    let grant_kinds = [
        Grant::Password(john.clone()),
        Grant::ClientCredentials(john),
        Grant::RefreshToken("RT".into()),
        Grant::AuthorizationCode { code: "c".into(), verifier: "v".into() },
    ];
    for g in &grant_kinds {
        for auth in [ClientAuth::TlsClientAuth, ClientAuth::ClientSecretBasic] {
            if let Ok(t) = grants::parse_token_response(g, auth, first, 10_000) {
                assert!(!t.access_token.is_empty());
                let _ = format!("{t:?}");
            }
        }
    }
    common::API_WORLD.with(|w| {
        let _ = first.answered(w.plan.timeout_ms);
        let _ = introspection::parse(&w.plan, first);
        let _ = introspection::parse_userinfo(&w.plan, first);
    });

    match usize::from(*scenario) % SCENARIOS {
        0 => common::API_WORLD.with(|w| {
            request(w, &mut caches, 0, Inputs { authorization: Some("Basic am9objpkb2U="), ..Default::default() }, &answers)
        }),
        1 => common::STRICT_WORLD.with(|w| {
            // The caller's own client id and secret: a client credentials grant.
            request(w, &mut caches, 0, Inputs { authorization: Some("Basic Y2xpZW50OnNlY3JldA=="), ..Default::default() }, &answers)
        }),
        2 => common::API_WORLD.with(|w| {
            request(w, &mut caches, 0, Inputs { refresh_token: Some("6089hE63K4E0jW6a9Dd8U8uenrb3ksbGhuqKCXRaKnT"), ..Default::default() }, &answers)
        }),
        3 => common::API_WORLD.with(|w| {
            let inputs = Inputs { authorization: Some("Bearer ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR"), peer_cert_sha256: Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), ..Default::default() };
            request(w, &mut caches, 0, inputs, &answers)
        }),
        4 => common::USERINFO_WORLD.with(|w| {
            request(w, &mut caches, 0, Inputs { authorization: Some("Bearer ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR"), ..Default::default() }, &answers)
        }),
        5 => common::WEB_WORLD.with(|w| {
            // A login: the redirect sets the authorization cookie, the callback exchanges the code.
            w.with(&mut caches, 0, |env| {
                let mut flow = Flow::new();
                let step = flow.start(env, common::browser("/app?x=1", None, "GET"));
                let Step::Respond(r) = step else { return };
                let cookie = common::jar(&r.headers);
                let mut flow = Flow::new();
                let step = flow.start(env, common::browser("/callback?code=c&state=QkJCQkJCQkJCQkJCQkJCQg", Some(&cookie), "GET"));
                let step = common::drive(env, &mut flow, step, &answers);
                if let Some(to) = common::location(&step) {
                    assert!(to == "/app?x=1" || to.starts_with("https://localhost:39555/auth?"), "{to}");
                }
            })
        }),
        6 => common::WEB_WORLD.with(|w| {
            // The session's access token (600 s) has expired: a refresh.
            let cookie = session(w);
            request(w, &mut caches, 700_000, common::browser("/app", Some(&cookie), "GET"), &answers)
        }),
        _ => common::WEB_WORLD.with(|w| {
            // Logout: revocation of the refresh token, then the access token.
            let cookie = session(w);
            request(w, &mut caches, 0, common::browser("/logout", Some(&cookie), "DELETE"), &answers)
        }),
    }
});
