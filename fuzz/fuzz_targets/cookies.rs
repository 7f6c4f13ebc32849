//! Cookies: the session cookie (chunk joining, unsealing, the sealed JSON, timeouts,
//! refresh and logout) and the authorization (login-in-progress) cookie, on the `WEB` plan
//! in the simulated host.
//!
//! The first byte chooses what the rest is (`0`, `1`, `2` in the seeds), fields are split at
//! NUL:
//! - `0` `Cookie` header NUL path NUL method: what any client can send. Parsed directly and
//!   sent as a browser and an API client; then a whole login from that path with those
//!   cookies, which must end on this host, and the new session with the client's cookies.
//! - `1` session JSON NUL path NUL method NUL other cookies: the JSON is sealed with the
//!   plan's secret (as only the filter can), chunked, and the request runs twice on one
//!   worker (the second from the opened-session cache), once on the other, an hour later,
//!   and as a logout.
//! - `2` login-state JSON NUL callback query: sealed into the authorization cookie and sent
//!   to the callback; the code exchange answers with a valid ID token for the state's nonce.
#![no_main]

use envoy_oidc::core::cookies;
use envoy_oidc::core::oauth::authorize::Pending;
use envoy_oidc::core::session::{self, Session};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Host;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let f = common::fields(rest);
    common::WEB_WORLD.with(|w| {
        let Some(s) = w.plan.policy.sessions.as_ref() else { return };
        let mut host = Host::new(w, mode & 4 == 0);
        match mode % 3 {
            0 => {
                let cookie = common::header_field(&f, 0).unwrap_or_default();
                let path = common::header_field(&f, 1).unwrap_or_else(|| "/".into());
                let method = common::header_field(&f, 2).unwrap_or_else(|| "GET".into());
                // The parsers themselves.
                let chunks = session::Chunks::find(&cookie, &s.cookie_name);
                assert!(chunks.present() <= session::MAX_CHUNKS);
                if let Some(sealed) = chunks.join() {
                    if let Some(plain) = s.sealer.open(&s.cookie_name, &sealed) {
                        let _ = serde_json::from_slice::<Session>(&plain);
                    }
                }
                for (k, v) in cookies::pairs(&cookie) {
                    assert!(!k.contains(';') && !v.contains(';'));
                    let _ = session::is_own(k, &s.cookie_name);
                    if k == s.authorization_cookie_name {
                        if let Some(plain) = s.sealer.open(k, v) {
                            let _ = serde_json::from_slice::<Pending>(&plain);
                        }
                    }
                }
                if let Some(kept) = cookies::without(&cookie, |n| s.is_own(n)) {
                    assert!(cookies::pairs(&kept).all(|(k, _)| !s.is_own(k)), "{kept:?}");
                }
                let answers = [common::code_answer(), common::answer(200, "")];
                host.send(0, &common::browser(&path, Some(&cookie), &method), &answers);
                let api = common::browser(&path, Some(&cookie), &method).with("x-requested-with", "fetch");
                host.send(1, &api, &answers[..1]);
                if let Some(session) = host.log_in(&path, Some(&cookie)) {
                    // The new session, with the client's other cookies.
                    let both = format!("{cookie}; {session}");
                    host.send(0, &common::browser(&path, Some(&both), &method), &answers);
                }
            }
            1 => {
                host.trusted = true;
                let sealed = s.sealer.seal(&s.cookie_name, f.first().copied().unwrap_or_default(), [7; 12]);
                let mut cookie: Vec<String> =
                    session::chunks(&s.cookie_name, &sealed).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                if let Some(other) = common::header_field(&f, 3) {
                    cookie.push(other);
                }
                let cookie = cookie.join("; ");
                let path = common::header_field(&f, 1).unwrap_or_else(|| "/".into());
                let method = common::header_field(&f, 2).unwrap_or_else(|| "GET".into());
                let answers = [common::code_answer(), common::answer(200, "")];
                let request = common::browser(&path, Some(&cookie), &method);
                for worker in [0, 0, 1] {
                    host.send(worker, &request, &answers);
                }
                host.idle(3_600_000);
                host.send(0, &request, &answers);
                host.send(1, &common::browser("/logout", Some(&cookie), "POST"), &answers);
            }
            _ => {
                host.trusted = true;
                let state = f.first().copied().unwrap_or_default();
                let sealed = s.sealer.seal(&s.authorization_cookie_name, state, [7; 12]);
                host.expect_nonce(serde_json::from_slice::<Pending>(state).ok().map(|p| p.nonce));
                let cookie = format!("{}={sealed}", s.authorization_cookie_name);
                let query = common::header_field(&f, 1).unwrap_or_default();
                let path = format!("/callback?{query}");
                host.send(1, &common::browser(&path, Some(&cookie), "GET"), &[common::code_answer()]);
            }
        }
    });
});
