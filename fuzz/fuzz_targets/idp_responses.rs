//! The IdP's answers: token responses (password, client credentials, refresh token,
//! authorization code, session refresh), introspection, userinfo and revocation, as status,
//! time and body.
//!
//! The first byte chooses the call (`0` … `7` in the seeds, see `SCENARIOS`); the rest is
//! answers separated by NUL pairs: `status[/elapsed_ms]` NUL body NUL `status` NUL body …,
//! used in turn for the calls the request makes (the last one again when they run out). A
//! status that is not a number is a call that got no answer. The answers are parsed
//! directly, then the scenario runs in the simulated host, whose IdP answers the request's
//! calls with them after the first answer's `elapsed_ms` (a call slower than the timeout
//! gets no answer, at the timeout). An [`common::ID_TOKEN`] in a body is replaced by an ID
//! token for the nonce of the login in progress.
#![no_main]

use std::cell::RefCell;

use envoy_oidc::core::client_auth::ClientAuth;
use envoy_oidc::core::credentials::Basic;
use envoy_oidc::core::idp::IdpResponse;
use envoy_oidc::core::oauth::token::{self, Grant};
use envoy_oidc::core::oauth::{introspection, logout};
use envoy_oidc::core::testing::Headers;
use libfuzzer_sys::fuzz_target;

mod common;
use common::{Host, World};

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

/// Sends `request` at `later_ms` twice to one worker (the second may be served from its
/// caches) and once to the other, the IdP answering with `answers` after `latency_ms`.
fn request(w: &World, later_ms: u64, latency_ms: u64, request: &Headers, answers: &[IdpResponse]) {
    let mut host = Host::new(w, latency_ms % 2 == 0);
    host.idle(later_ms);
    host.sim.idp.latency_ms = latency_ms;
    for worker in [0, 0, 1] {
        host.send(worker, request, answers);
    }
}

thread_local! {
    /// A session from a real login, for refresh and logout.
    static SESSION: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn session(w: &World) -> String {
    SESSION.with(|s| s.borrow_mut().get_or_insert_with(|| Host::new(w, true).log_in("/app?x=1", None).expect("fixture login")).clone())
}

fuzz_target!(|data: &[u8]| {
    let Some((scenario, rest)) = data.split_first() else { return };
    let answers = answers(rest);
    let Some(first) = answers.first() else { return };
    // The IdP's time to answer; past the timeout (10 s) a call gets no answer.
    let latency = first.elapsed_ms.min(20_000);

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
            if let Ok(t) = token::parse_token_response(g, auth, first, 10_000) {
                assert!(!t.access_token.is_empty());
                for t in [Some(&t.access_token), t.refresh_token.as_ref(), t.id_token.as_ref()].into_iter().flatten() {
                    assert!(!t.chars().any(char::is_control), "a token with control characters accepted");
                }
                let _ = format!("{t:?}");
            }
        }
    }
    common::API_WORLD.with(|w| {
        let client = &w.plan.policy.client;
        let _ = first.answered(client.timeout_ms);
        let _ = first.failure(client.timeout_ms).map(|f| f.describe("idp", client.timeout_ms));
        let _ = introspection::parse(client, true, first);
        let _ = introspection::parse(client, false, first);
        let _ = introspection::parse_userinfo(client.timeout_ms, first);
        let _ = logout::revocation_result(client, first);
    });

    let bearer = "Bearer ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR";
    match usize::from(*scenario) % SCENARIOS {
        0 => common::API_WORLD.with(|w| request(w, 0, latency, &common::authorization("Basic am9objpkb2U="), &answers)),
        // The caller's own client id and secret: a client credentials grant.
        1 => common::STRICT_WORLD.with(|w| request(w, 0, latency, &common::authorization("Basic Y2xpZW50OnNlY3JldA=="), &answers)),
        2 => common::API_WORLD.with(|w| {
            let rt = Headers::default().with("x-refresh-token", "6089hE63K4E0jW6a9Dd8U8uenrb3ksbGhuqKCXRaKnT");
            request(w, 0, latency, &rt, &answers)
        }),
        3 => common::API_WORLD.with(|w| {
            let peer = Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string());
            request(w, 0, latency, &Headers { peer_cert_sha256: peer, ..common::authorization(bearer) }, &answers)
        }),
        4 => common::USERINFO_WORLD.with(|w| request(w, 0, latency, &common::authorization(bearer), &answers)),
        5 => common::WEB_WORLD.with(|w| {
            // A login: the redirect sets the authorization cookie, the callback exchanges the code.
            let mut host = Host::new(w, latency % 2 == 0);
            let out = host.send(0, &common::browser("/app?x=1", None, "GET"), &[]);
            let Some(state) = common::location(&out).and_then(|to| common::query_arg(to, "state")) else { return };
            let cookie = common::cookies_of(&out);
            host.sim.idp.latency_ms = latency;
            let callback = format!("/callback?code=c&state={state}");
            let out = host.send(1, &common::browser(&callback, Some(&cookie), "GET"), &answers);
            if let Some(to) = common::location(&out) {
                assert!(to == "/app?x=1" || to.starts_with("https://localhost:39555/auth?"), "{to}");
            }
        }),
        // The session's access token (600 s) has expired: a refresh.
        6 => common::WEB_WORLD.with(|w| request(w, 700_000, latency, &common::browser("/app", Some(&session(w)), "GET"), &answers)),
        // Logout: revocation of the refresh token, then the access token.
        _ => common::WEB_WORLD.with(|w| request(w, 0, latency, &common::browser("/logout", Some(&session(w)), "DELETE"), &answers)),
    }
});
