//! Cookies: the session cookie (chunk joining, unsealing, the sealed JSON, timeouts,
//! refresh and logout) and the authorization (login-in-progress) cookie.
//!
//! The first byte chooses what the rest is (`0`, `1`, `2` in the seeds), fields are split at
//! NUL:
//! - `0` `Cookie` header NUL path NUL method: what any client can send. Parsed directly and
//!   through the flow as a browser and an API client; then a whole login from that path with
//!   those cookies, which must end on this host.
//! - `1` session JSON NUL path NUL method NUL other cookies: the JSON is sealed with the
//!   plan's secret (as only the filter can), chunked, and the request runs twice (the second
//!   from the opened-session cache), an hour later, and as a logout.
//! - `2` login-state JSON NUL callback query: sealed into the authorization cookie and sent
//!   to the callback; the code exchange answers with a valid ID token.
#![no_main]

use envoy_oidc::core::credentials;
use envoy_oidc::core::flow::{Caches, Flow, Inputs};
use envoy_oidc::core::login::Pending;
use envoy_oidc::core::session::{self, Session};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else { return };
    let f = common::fields(rest);
    common::WEB_WORLD.with(|w| {
        let Some(s) = w.plan.sessions.as_ref() else { return };
        let mut caches = Caches::new(8);
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
                for (k, v) in credentials::cookies(&cookie) {
                    let _ = session::is_own(k, &s.cookie_name);
                    if k == s.authorization_cookie_name {
                        if let Some(plain) = s.sealer.open(k, v) {
                            let _ = serde_json::from_slice::<Pending>(&plain);
                        }
                    }
                }
                w.with(&mut caches, 0, |env| {
                    let mut flow = Flow::new();
                    let step = flow.start(env, common::browser(&path, Some(&cookie), &method));
                    common::drive(env, &mut flow, step, &[common::code_answer(), common::answer(200, "")]);
                    let api = Inputs { path: Some(&path), cookie: Some(&cookie), method: Some(&method), x_requested_with: Some("fetch"), ..Default::default() };
                    let mut flow = Flow::new();
                    let step = flow.start(env, api);
                    common::drive(env, &mut flow, step, &[common::code_answer()]);
                    if let Some(session) = common::log_in(env, &path, Some(&cookie)) {
                        // The new session, with the client's other cookies.
                        let both = format!("{cookie}; {session}");
                        let mut flow = Flow::new();
                        let step = flow.start(env, common::browser(&path, Some(&both), &method));
                        common::drive(env, &mut flow, step, &[common::code_answer(), common::answer(200, "")]);
                    }
                });
            }
            1 => {
                let sealed = s.sealer.seal(&s.cookie_name, f.first().copied().unwrap_or_default(), [7; 12]);
                let mut cookie: Vec<String> = session::chunks(&s.cookie_name, &sealed).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                if let Some(other) = common::header_field(&f, 3) {
                    cookie.push(other);
                }
                let cookie = cookie.join("; ");
                let path = common::header_field(&f, 1).unwrap_or_else(|| "/".into());
                let method = common::header_field(&f, 2).unwrap_or_else(|| "GET".into());
                let answers = [common::code_answer(), common::answer(200, "")];
                for later_ms in [0, 0, 3_600_000] {
                    w.with(&mut caches, later_ms, |env| {
                        let mut flow = Flow::new();
                        let step = flow.start(env, common::browser(&path, Some(&cookie), &method));
                        common::drive_trusted(env, &mut flow, step, &answers);
                    });
                }
                w.with(&mut caches, 0, |env| {
                    let mut flow = Flow::new();
                    let step = flow.start(env, common::browser("/logout", Some(&cookie), "POST"));
                    common::drive_trusted(env, &mut flow, step, &answers);
                });
            }
            _ => {
                let sealed = s.sealer.seal(&s.authorization_cookie_name, f.first().copied().unwrap_or_default(), [7; 12]);
                let cookie = format!("{}={sealed}", s.authorization_cookie_name);
                let query = common::header_field(&f, 1).unwrap_or_default();
                let path = format!("/callback?{query}");
                w.with(&mut caches, 0, |env| {
                    let mut flow = Flow::new();
                    let step = flow.start(env, common::browser(&path, Some(&cookie), "GET"));
                    common::drive_trusted(env, &mut flow, step, &[common::code_answer()]);
                });
            }
        }
    });
});
