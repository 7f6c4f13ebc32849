//! Query strings and form bodies (`application/x-www-form-urlencoded`): the callback query,
//! logout by path or query argument, the bearer token argument and its removal, and the form
//! bodies the filter sends to the IdP with values from the client.
//!
//! Input: `:path` NUL user NUL password NUL `:method`. The path goes through the callback
//! parser and the flow (a callback with a login in progress, and a whole login that must end
//! on this host); user and password (any bytes a Basic header can carry) go into the token,
//! introspection and revocation form bodies, which must give them back exactly.
#![no_main]

use envoy_oidc::core::client_auth;
use envoy_oidc::core::credentials::{self, Basic};
use envoy_oidc::core::flow::{Caches, Flow, Step};
use envoy_oidc::core::grants::{self, Grant};
use envoy_oidc::core::idp::IdpRequest;
use envoy_oidc::core::introspection;
use envoy_oidc::core::login::{self, Pending};
use libfuzzer_sys::fuzz_target;

mod common;

fn form(req: &IdpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(&req.body).into_owned().collect()
}

/// `name` occurs exactly once in the form, with `value`.
fn once(form: &[(String, String)], name: &str, value: &str) {
    let found: Vec<&String> = form.iter().filter(|(k, _)| k == name).map(|(_, v)| v).collect();
    assert_eq!(found, vec![value], "form field {name}");
}

fuzz_target!(|data: &[u8]| {
    let f = common::fields(data);
    let path = common::header_field(&f, 0).unwrap_or_else(|| "/".into());
    let user = common::text(f.get(1).copied().unwrap_or(b"john"));
    let password = common::text(f.get(2).copied().unwrap_or(b"doe"));
    let method = common::header_field(&f, 3).unwrap_or_else(|| "GET".into());

    for name in [credentials::QUERY_PARAM, "code", "state", "logout"] {
        let _ = credentials::without_query_param(&path, name);
    }

    common::WEB_WORLD.with(|w| {
        let plan = &w.plan;
        let _ = login::is_logout(plan, &method, &path);
        let pending = Pending::new(&[common::RANDOM_BYTE; 48], "/", common::NOW_MS / 1000);
        if let Some(cb) = login::callback(plan, &path) {
            let _ = login::check_callback(&cb, None, &plan.issuer);
            if let Ok((code, p)) = login::check_callback(&cb, Some(pending.clone()), &plan.issuer) {
                assert!(!code.is_empty() && p == pending);
                // RFC 9207: an answer that names another issuer is never accepted.
                assert!(cb.iss.as_deref().map_or(true, |i| i.trim_end_matches('/') == plan.issuer.trim_end_matches('/')));
            }
        }
        let mut caches = Caches::new(8);
        w.with(&mut caches, 0, |env| {
            let mut flow = Flow::new();
            let step = flow.start(env, common::browser(&path, None, &method));
            common::drive(env, &mut flow, step, &[common::code_answer(), common::answer(200, "")]);
            // A callback to this path with a login in progress.
            let mut flow = Flow::new();
            let step = flow.start(env, common::browser("/", None, "GET"));
            if let Step::Respond(r) = step {
                let cookie = common::jar(&r.headers);
                let mut flow = Flow::new();
                let step = flow.start(env, common::browser(&path, Some(&cookie), &method));
                common::drive(env, &mut flow, step, &[common::code_answer()]);
            }
            common::log_in(env, &path, None);
        });
    });

    // Form bodies with the client's values, under mTLS (values in the body) and
    // client_secret_basic (the client's id and secret form-encoded in Basic).
    for world in [&common::API_WORLD, &common::STRICT_WORLD] {
        world.with(|w| {
            let (plan, meta) = (&w.plan, &w.meta);
            let now = common::NOW_MS / 1000;
            let b = Basic { user: user.clone(), password: password.clone() };
            if let Ok(req) = grants::token_request(plan, meta, &Grant::Password(b.clone()), now, "jti") {
                let form = form(&req);
                once(&form, "grant_type", "password");
                once(&form, "username", &user);
                once(&form, "password", &password);
            }
            if let Ok(req) = grants::token_request(plan, meta, &Grant::RefreshToken(password.clone()), now, "jti") {
                once(&form(&req), "refresh_token", &password);
            }
            let code = Grant::AuthorizationCode { code: user.clone(), verifier: password.clone() };
            if let Ok(req) = grants::token_request(plan, meta, &code, now, "jti") {
                let form = form(&req);
                once(&form, "code", &user);
                once(&form, "code_verifier", &password);
            }
            if let Ok(req) = grants::token_request(plan, meta, &Grant::ClientCredentials(b), now, "jti") {
                once(&form(&req), "grant_type", "client_credentials");
                let basic = req.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str()).unwrap_or_default();
                assert_eq!(basic, client_auth::basic(&user, &password));
            }
            if let Ok(req) = introspection::request(plan, meta, &password, now, "jti") {
                once(&form(&req), "token", &password);
            }
            if let Ok(req) = login::revocation_request(plan, meta, &password, "access_token", now, "jti") {
                once(&form(&req), "token", &password);
            }
        });
    }
    // RFC 6749 2.3.1: id and secret are form-encoded before Basic; decoding gives them back.
    let header = client_auth::basic(&user, &password);
    let encoded = header.strip_prefix("Basic ").expect("Basic scheme");
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).expect("base64");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (id, secret) = raw.split_once(':').expect("id:secret");
    let decode = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
    assert_eq!((decode(id), decode(secret)), (user.clone(), password.clone()));
});
