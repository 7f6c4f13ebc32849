//! Query strings and form bodies (`application/x-www-form-urlencoded`): the callback query,
//! logout by path or query argument, the bearer token argument and its removal, and the form
//! bodies the filter sends to the IdP with values from the client.
//!
//! Input: `:path` NUL user NUL password NUL `:method`. The path goes through the callback
//! parser and the simulated host (as a browser request; as a callback with a login in
//! progress, the seeds' state `QkJCQkJCQkJCQkJCQkJCQg` standing for that login's; and as the
//! start of a whole login that must end on this host); user and password (any bytes a Basic
//! header can carry) go into the token, introspection and revocation form bodies, which must
//! give them back exactly.
#![no_main]

use envoy_oidc::core::client_auth;
use envoy_oidc::core::credentials::{self, Basic};
use envoy_oidc::core::idp::{Endpoint, IdpCall};
use envoy_oidc::core::oauth::authorize::{self, Pending};
use envoy_oidc::core::oauth::token::{self, Grant};
use envoy_oidc::core::oauth::{introspection, logout};
use libfuzzer_sys::fuzz_target;

mod common;
use common::Host;

fn form(req: &IdpCall) -> Vec<(String, String)> {
    common::check_call(req);
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
        let stripped = credentials::without_query_param(&path, name);
        assert!(stripped.len() <= path.len());
    }

    common::WEB_WORLD.with(|w| {
        let p = &w.plan.policy;
        let _ = p.logout.matches(&method, &path);
        let pending = Pending::new(&[common::RANDOM_BYTE; 48], "/", common::NOW_MS / 1000);
        if let Some(cb) = authorize::callback(&p.login, &path) {
            let _ = authorize::check_callback(&cb, None, &p.issuer);
            if let Ok((code, back)) = authorize::check_callback(&cb, Some(pending.clone()), &p.issuer) {
                assert!(!code.is_empty() && back == pending);
                // RFC 9207: an answer that names another issuer is never accepted.
                assert!(cb.iss.as_deref().is_none_or(|i| i.trim_end_matches('/') == p.issuer.trim_end_matches('/')));
            }
        }
        let mut host = Host::new(w, data.len() % 2 == 0);
        host.send(0, &common::browser(&path, None, &method), &[common::code_answer(), common::answer(200, "")]);
        // A callback to this path with a login in progress.
        let out = host.send(1, &common::browser("/", None, "GET"), &[]);
        if let Some(state) = common::location(&out).and_then(|to| common::query_arg(to, "state")) {
            let cookie = common::cookies_of(&out);
            let callback = common::with_state(&path, &state);
            host.send(0, &common::browser(&callback, Some(&cookie), &method), &[common::code_answer()]);
        }
        host.log_in(&path, None);
    });

    // Form bodies with the client's values, under mTLS (values in the body) and
    // client_secret_basic (the client's id and secret form-encoded in Basic).
    let redirect = Endpoint::parse("http://127.0.0.1:8000/callback").expect("redirect URI");
    for world in [&common::API_WORLD, &common::STRICT_WORLD] {
        world.with(|w| {
            let (client, meta) = (&w.plan.policy.client, w.meta());
            let scope = w.plan.policy.scope.as_str();
            let now = common::NOW_MS / 1000;
            let b = Basic { user: user.clone(), password: password.clone() };
            if let Ok(req) = token::token_request(client, meta, &Grant::Password(b.clone()), scope, None, now, "jti") {
                let form = form(&req);
                once(&form, "grant_type", "password");
                once(&form, "username", &user);
                once(&form, "password", &password);
            }
            if let Ok(req) = token::token_request(client, meta, &Grant::RefreshToken(password.clone()), scope, None, now, "jti") {
                once(&form(&req), "refresh_token", &password);
            }
            let code = Grant::AuthorizationCode { code: user.clone(), verifier: password.clone() };
            if let Ok(req) = token::token_request(client, meta, &code, scope, Some(&redirect), now, "jti") {
                let form = form(&req);
                once(&form, "code", &user);
                once(&form, "code_verifier", &password);
                once(&form, "redirect_uri", &redirect.url);
            }
            if let Ok(req) = token::token_request(client, meta, &Grant::ClientCredentials(b), scope, None, now, "jti") {
                once(&form(&req), "grant_type", "client_credentials");
                let basic = req.headers.iter().find(|(k, _)| *k == "authorization").map(|(_, v)| v.as_str()).unwrap_or_default();
                assert_eq!(basic, client_auth::basic(&user, &password).as_str());
            }
            if let Ok(req) = introspection::request(client, meta, &password, now, "jti") {
                once(&form(&req), "token", &password);
            }
            if let Ok(req) = logout::revocation_request(client, meta, &password, "access_token", now, "jti") {
                once(&form(&req), "token", &password);
            }
        });
    }
    // RFC 6749 2.3.1: id and secret are form-encoded before Basic; decoding gives them back.
    let header = client_auth::basic(&user, &password);
    let encoded = header.as_str().strip_prefix("Basic ").expect("Basic scheme");
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).expect("base64");
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (id, secret) = raw.split_once(':').expect("id:secret");
    let decode = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
    assert_eq!((decode(id), decode(secret)), (user.clone(), password.clone()));
});
