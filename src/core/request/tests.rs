//! The request machine against plain inputs and hand-written IdP answers: every auth
//! method, the caches, the browser's login, sessions and logout.

use base64::Engine;
use jwt_simple::prelude::{RS256KeyPair, RSAKeyPairLike};

use super::*;
use crate::core::config::Plan;
use crate::core::discovery::Metadata;
use crate::core::docs::DocsSettings;
use crate::core::jwt::KeySet;
use crate::core::testing::SharedData;

const BASIC_JOHN: &str = "Basic am9objpkb2U="; // john:doe
const ISS: &str = "https://idp";
const DOC: &str = r#"{"issuer":"https://idp","authorization_endpoint":"https://idp/auth","token_endpoint":"https://idp/token","introspection_endpoint":"https://idp/introspect","userinfo_endpoint":"https://idp/me","revocation_endpoint":"https://idp/revoke","end_session_endpoint":"https://idp/end","jwks_uri":"https://idp/jwks"}"#;

fn plan(extra: &str) -> Plan {
    Plan::parse(
        format!("issuer: {ISS}\nidp_cluster: idp\nclient_id: client-tls-auth\nclient_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n{extra}")
            .as_bytes(),
    )
    .unwrap()
}

struct World {
    plan: Plan,
    docs: Docs,
    store: SharedData,
    caches: Caches,
    metrics: Metrics,
    log: Log,
    now_ms: u64,
    jtis: u32,
}

impl World {
    fn new(extra: &str) -> Self {
        let plan = plan(extra);
        let mut docs = Docs::new(plan.issuer.clone(), 7);
        let now_ms = 1_800_000_000_000;
        docs.adopt_metadata(Metadata::parse(ISS, DOC.as_bytes()).unwrap(), now_ms);
        World {
            plan,
            docs,
            store: SharedData::default(),
            caches: Caches::new(100),
            metrics: Metrics::default(),
            log: Log::default(),
            now_ms,
            jtis: 0,
        }
    }

    fn with<R>(&mut self, f: impl FnOnce(&mut Cx<'_>) -> R) -> R {
        let jtis = &mut self.jtis;
        let mut random = |b: &mut [u8]| {
            *jtis += 1;
            b.fill(*jtis as u8);
        };
        let mut cx = Cx {
            policy: &self.plan.policy,
            policy_id: PolicyId(0),
            docs: &mut self.docs,
            others: Default::default(),
            store: &mut self.store,
            caches: &mut self.caches,
            metrics: &mut self.metrics,
            log: &mut self.log,
            now_ms: self.now_ms,
            random: &mut random,
        };
        f(&mut cx)
    }

    fn start(&mut self, r: &mut Request, inputs: Inputs<'_>) -> Next {
        self.with(|cx| r.start(cx, &inputs))
    }

    fn start_with(&mut self, r: &mut Request, view: &dyn RequestView) -> Next {
        self.with(|cx| r.start(cx, view))
    }

    fn answer(&mut self, r: &mut Request, resp: &IdpResponse) -> Next {
        self.with(|cx| r.handle_answer(cx, resp)).expect("the request was still waiting")
    }
}

fn basic(v: &str) -> Inputs<'_> {
    Inputs { authorization: Some(v), ..Default::default() }
}

fn ok(body: impl Into<Vec<u8>>) -> IdpResponse {
    IdpResponse { status: Some(200), body: body.into(), elapsed_ms: 3 }
}

fn ok_token(expires_in: u64) -> IdpResponse {
    ok(format!(r#"{{"access_token":"AT","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"RT2","scope":"openid"}}"#))
}

fn set<'a>(next: &'a Next, name: &str) -> Option<&'a str> {
    match next {
        Next::Forward(f) => f.get(name),
        _ => None,
    }
}

fn call(next: Next) -> IdpCall {
    match next {
        Next::Call(c) => c,
        other => panic!("expected a call, got {other:?}"),
    }
}

fn reply(next: Next) -> Reply {
    match next {
        Next::Answer(r) => r,
        other => panic!("expected a local reply, got {other:?}"),
    }
}

/// Status and `error` of a local JSON answer.
fn error_of(next: Next) -> (u16, String) {
    let r = reply(next);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (r.status, body["error"].as_str().unwrap_or_default().to_string())
}

fn form(c: &IdpCall) -> Vec<(String, String)> {
    form_urlencoded::parse(&c.body).into_owned().collect()
}

#[test]
fn password_grant_then_forward_with_bearer() {
    let mut w = World::new("auth_methods: [password]\n");
    let mut r = Request::new();
    let c = call(w.start(&mut r, basic(BASIC_JOHN)));
    assert_eq!((c.purpose, c.cluster.as_str()), (Purpose::Token, "idp-mtls"));
    let next = w.answer(&mut r, &ok_token(300));
    assert_eq!(set(&next, "authorization"), Some("Bearer AT"));
    let Next::Forward(f) = next else { panic!() };
    assert!(f.removes("authorization"));
    assert!(f.response_add.is_empty(), "a password grant's refresh token is not handed out");
    assert!(r.is_done());
}

#[test]
fn cached_token_skips_the_idp_until_near_expiry() {
    let mut w = World::new("auth_methods: [password]\n");
    let mut r = Request::new();
    let _ = w.start(&mut r, basic(BASIC_JOHN));
    let _ = w.answer(&mut r, &ok_token(300));
    let next = w.start(&mut Request::new(), basic(BASIC_JOHN));
    assert_eq!(set(&next, "authorization"), Some("Bearer AT"));
    // a wrong password must not hit the cached token
    assert!(matches!(w.start(&mut Request::new(), basic("Basic am9objpkb2Ux")), Next::Call(_)));
    w.now_ms += 270_000;
    assert!(matches!(w.start(&mut Request::new(), basic(BASIC_JOHN)), Next::Call(_)));
}

#[test]
fn cache_can_be_turned_off() {
    let mut w = World::new("auth_methods: [password]\ncache_tokens: false\n");
    let mut r = Request::new();
    let _ = w.start(&mut r, basic(BASIC_JOHN));
    let _ = w.answer(&mut r, &ok_token(300));
    assert!(w.caches.grants.is_empty());
}

#[test]
fn no_credentials_is_401() {
    let mut w = World::new("auth_methods: [password]\ndisplay_errors: true\n");
    assert_eq!(error_of(w.start(&mut Request::new(), Inputs::default())), (401, "invalid_request".into()));
    assert_eq!(error_of(w.start(&mut Request::new(), basic("Bearer x"))), (401, "invalid_request".into()));
    let r = reply(w.start(&mut Request::new(), basic("Basic @@@")));
    assert!(String::from_utf8_lossy(&r.body).contains("malformed credentials"));
    assert_eq!(r.header("www-authenticate"), vec!["Basic realm=\"oidc\", charset=\"UTF-8\""]);
}

#[test]
fn a_request_before_discovery_fetches_it_itself_then_runs() {
    let mut w = World::new("auth_methods: [password]\n");
    w.docs.forget_metadata();
    let mut r = Request::new();
    let d = call(w.start(&mut r, basic(BASIC_JOHN)));
    assert_eq!((d.purpose, d.cluster.as_str(), d.path.as_str()), (Purpose::Discovery, "idp", "/.well-known/openid-configuration"));
    assert!(d.timeout_ms <= w.plan.policy.timeout_ms);
    let t = call(w.answer(&mut r, &ok(DOC)));
    assert_eq!(t.purpose, Purpose::Token);
    // stored for the other workers
    assert!(w.store.get("oidc:https://idp:discovery").is_some());
    // the IdP down: 503, and the failure is logged with what to check
    let mut w = World::new("auth_methods: [password]\n");
    w.docs.forget_metadata();
    let mut r = Request::new();
    let _ = w.start(&mut r, basic(BASIC_JOHN));
    let down = IdpResponse {
        status: Some(503),
        body: b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure".to_vec(),
        elapsed_ms: 1,
    };
    assert_eq!(error_of(w.answer(&mut r, &down)), (503, "discovery_unavailable".into()));
    assert!(w.docs.log.contains("Discovery fetch failed: cannot connect through cluster `idp`"));
    // backing off: the next request does not call, it is answered at once
    assert_eq!(error_of(w.start(&mut Request::new(), basic(BASIC_JOHN))), (503, "discovery_unavailable".into()));
}

#[test]
fn idp_failures_become_errors_and_late_answers_do_nothing() {
    let mut w = World::new("auth_methods: [password]\n");
    let mut r = Request::new();
    let _ = w.start(&mut r, basic(BASIC_JOHN));
    let refused = IdpResponse { status: Some(401), body: br#"{"error":"invalid_client"}"#.to_vec(), elapsed_ms: 1 };
    assert_eq!(error_of(w.answer(&mut r, &refused)), (401, "invalid_client".into()));
    assert_eq!(w.with(|cx| r.handle_answer(cx, &ok_token(1))), None);
    // a call that failed in transit is logged with the call and the cluster
    let mut r = Request::new();
    let _ = w.start(&mut r, basic(BASIC_JOHN));
    let timeout = IdpResponse { status: None, body: Vec::new(), elapsed_ms: 10_000 };
    assert_eq!(error_of(w.answer(&mut r, &timeout)), (504, "idp_timeout".into()));
    assert!(w.log.contains("Token call POST https://idp/token via cluster `idp-mtls`: no answer through cluster `idp-mtls`"));
    // the host would not send it
    let mut r = Request::new();
    let _ = w.start(&mut r, basic("Basic am9objp4"));
    assert_eq!(error_of(w.with(|cx| r.call_not_sent(cx, "BadArgument"))), (502, "idp_unavailable".into()));
}

#[test]
fn client_credentials_when_only_method() {
    let mut w = World::new("auth_methods: [client_credentials]\n");
    let c = call(w.start(&mut Request::new(), basic(BASIC_JOHN)));
    assert_eq!(c.cluster, "idp");
}

// ---- bearer JWT ----

fn keypair(kid: &str) -> (RS256KeyPair, String) {
    let kp = RS256KeyPair::generate(2048).unwrap().with_key_id(kid);
    let c = kp.public_key().to_components();
    let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": kid, "n": b(&c.n), "e": b(&c.e)}]});
    (kp, jwks.to_string())
}

fn signer() -> (RS256KeyPair, KeySet) {
    let (kp, jwks) = keypair("k1");
    (kp, KeySet::parse(jwks.as_bytes()).unwrap())
}

fn token(kp: &RS256KeyPair, now_ms: u64, extra: serde_json::Value) -> String {
    let mut c = jwt_simple::prelude::Claims::with_custom_claims(extra, jwt_simple::prelude::Duration::from_secs(300));
    c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000));
    c.invalid_before = None;
    c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000 + 300));
    c.issuer = Some(ISS.into());
    kp.sign(c).unwrap()
}

/// Forwarded with the client's own `Authorization: Bearer` untouched.
fn keeps_client_authorization(next: &Next) -> bool {
    matches!(next, Next::Forward(f) if !f.removes("authorization") && f.get("authorization").is_none())
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn bearer_jwt_is_verified_cached_and_forwarded() {
    let mut w = World::new("auth_methods: [bearer]\nscopes_required: ['api:read']\n");
    let (kp, jwks) = keypair("k1");
    let t = token(&kp, w.now_ms, serde_json::json!({"scope": "openid api:read"}));
    let auth = bearer(&t);
    // keys not loaded yet: the request fetches them itself
    let mut r = Request::new();
    let c = call(w.start(&mut r, basic(&auth)));
    assert_eq!((c.purpose, c.path.as_str()), (Purpose::Jwks, "/jwks"));
    let next = w.answer(&mut r, &ok(jwks));
    assert!(keeps_client_authorization(&next), "{next:?}");
    assert_eq!(w.caches.jwts.len(), 1);
    // from the cache while the key is published; not once it is gone
    let next = w.start(&mut Request::new(), basic(&auth));
    assert!(keeps_client_authorization(&next), "{next:?}");
    // rotated out: the stored set (from the fetch above) and the adopted one lack it
    w.store = SharedData::default();
    w.docs.adopt_keys(KeySet::parse(br#"{"keys":[]}"#).unwrap(), w.now_ms);
    w.now_ms += 3_000;
    assert_eq!(call(w.start(&mut Request::new(), basic(&auth))).purpose, Purpose::Jwks);
}

#[test]
fn bearer_token_header_name_reads_the_token_from_that_header_only() {
    use crate::core::testing::Headers;
    let mut w = World::new("auth_methods: [bearer]\nbearer_token_header_name: X-Api-Token\nhide_credentials: true\n");
    let (kp, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms);
    let t = token(&kp, w.now_ms, serde_json::json!({"scope": "api:read"}));
    let next = w.start_with(&mut Request::new(), &Headers::default().with("x-api-token", &t));
    let Next::Forward(f) = next else { panic!("{next:?}") };
    assert_eq!(f.get("authorization"), Some(format!("Bearer {t}").as_str()), "upstream gets it as usual");
    assert!(f.removes("x-api-token"), "hide_credentials removes the header it came in");
    let in_authorization = Headers::default().with("authorization", &format!("Bearer {t}"));
    assert_eq!(error_of(w.start_with(&mut Request::new(), &in_authorization)).0, 401, "Authorization is not read then");
}

#[test]
fn claims_forbidden_refuses_a_token_that_carries_one() {
    let mut w = World::new("auth_methods: [bearer]\nclaims_forbidden: [act, may_act]\n");
    let (kp, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms);
    let clean = token(&kp, w.now_ms, serde_json::json!({"scope": "api:read"}));
    assert!(keeps_client_authorization(&w.start(&mut Request::new(), basic(&bearer(&clean)))));
    let delegated = token(&kp, w.now_ms, serde_json::json!({"scope": "api:read", "act": {"sub": "agent"}}));
    let r = reply(w.start(&mut Request::new(), basic(&bearer(&delegated))));
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate")[0].contains("insufficient_scope"));
}

#[test]
fn run_on_preflight_false_lets_cors_preflights_through_and_nothing_else() {
    use crate::core::testing::Headers;
    let preflight = || {
        Headers::default().with(":method", "OPTIONS").with("origin", "https://app.example").with("access-control-request-method", "POST")
    };
    let mut on = World::new("auth_methods: [bearer]\n");
    assert_eq!(error_of(on.start_with(&mut Request::new(), &preflight())).0, 401, "by default preflights are authenticated");
    let mut off =
        World::new("auth_methods: [bearer]\nrun_on_preflight: false\nupstream_headers_claims: [sub]\nupstream_headers_names: [x-user]\n");
    let Next::Forward(f) = off.start_with(&mut Request::new(), &preflight().with("x-user", "admin")) else { panic!() };
    assert!(f.set.is_empty() && f.removes("x-user"), "a forged identity header does not go upstream: {f:?}");
    let no_origin = Headers::default().with(":method", "OPTIONS").with("access-control-request-method", "POST");
    assert_eq!(error_of(off.start_with(&mut Request::new(), &no_origin)).0, 401);
    let get = Headers::default().with(":method", "GET").with("origin", "https://app.example").with("access-control-request-method", "POST");
    assert_eq!(error_of(off.start_with(&mut Request::new(), &get)).0, 401);
}

#[test]
fn bearer_rules_and_bad_tokens() {
    let mut w = World::new("auth_methods: [bearer]\nscopes_required: ['api:write']\n");
    let (kp, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms);
    let t = token(&kp, w.now_ms, serde_json::json!({"scope": "api:read"}));
    let r = reply(w.start(&mut Request::new(), basic(&bearer(&t))));
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate")[0].contains("insufficient_scope"));
    assert_eq!(error_of(w.start(&mut Request::new(), basic("Bearer opaque"))), (401, "invalid_token".into()));
    w.now_ms += 400_000;
    assert_eq!(error_of(w.start(&mut Request::new(), basic(&bearer(&t)))), (401, "invalid_token".into()));
}

#[test]
fn unknown_kid_refetches_keys_once_then_refuses() {
    let mut w = World::new("auth_methods: [bearer]\n");
    let (_, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms - 10_000);
    let (other, other_jwks) = keypair("k2");
    let t = token(&other, w.now_ms, serde_json::json!({}));
    let mut r = Request::new();
    assert_eq!(call(w.start(&mut r, basic(&bearer(&t)))).purpose, Purpose::Jwks);
    // re-fetched, now known
    assert!(matches!(w.answer(&mut r, &ok(other_jwks.clone())), Next::Forward(_)));
    // a token of a third key: the set was fetched just now, so no re-fetch: 401 at once
    let (third, _) = keypair("k3");
    let t3 = token(&third, w.now_ms, serde_json::json!({}));
    let (status, code) = error_of(w.start(&mut Request::new(), basic(&bearer(&t3))));
    assert_eq!((status, code.as_str()), (401, "invalid_token"));
    // later, one re-fetch; still unknown after it: 401, no loop
    w.now_ms += 3_000;
    let mut r = Request::new();
    assert_eq!(call(w.start(&mut r, basic(&bearer(&t3)))).purpose, Purpose::Jwks);
    let r = reply(w.answer(&mut r, &ok(other_jwks)));
    assert_eq!(r.status, 401);
    assert!(w.log.drain().any(|l| l.message.contains("unknown key")), "the log says why");
}

// ---- introspection, userinfo, refresh ----

#[test]
fn introspection_then_cache() {
    let mut w = World::new("auth_methods: [introspection]\nupstream_introspection_header: x-introspection\n");
    let mut r = Request::new();
    let c = call(w.start(&mut r, basic("Bearer opaque-1")));
    assert_eq!((c.purpose, c.cluster.as_str()), (Purpose::Introspection, "idp-mtls"));
    let exp = w.now_ms / 1000 + 600;
    let next = w.answer(&mut r, &ok(format!(r#"{{"active":true,"sub":"john","exp":{exp}}}"#)));
    assert!(keeps_client_authorization(&next), "{next:?}");
    assert!(set(&next, "x-introspection").is_some());
    assert!(matches!(w.start(&mut Request::new(), basic("Bearer opaque-1")), Next::Forward(_)));
    assert!(matches!(w.start(&mut Request::new(), basic("Bearer opaque-2")), Next::Call(_)));
}

#[test]
fn jwt_goes_to_introspection_when_bearer_is_not_configured() {
    let mut w = World::new("auth_methods: [introspection]\n");
    let (kp, _) = signer();
    let t = token(&kp, w.now_ms, serde_json::json!({}));
    assert_eq!(call(w.start(&mut Request::new(), basic(&bearer(&t)))).purpose, Purpose::Introspection);
}

#[test]
fn userinfo_accepts_the_token() {
    let mut w = World::new("auth_methods: [userinfo]\nupstream_user_info_header: x-userinfo\n");
    let mut r = Request::new();
    assert_eq!(call(w.start(&mut r, basic("Bearer opaque"))).purpose, Purpose::Userinfo);
    assert!(set(&w.answer(&mut r, &ok(r#"{"sub":"john"}"#)), "x-userinfo").is_some());
}

#[test]
fn refresh_token_method_rotates() {
    let mut w = World::new("auth_methods: [refresh_token, password]\n");
    let mut r = Request::new();
    let inputs = Inputs { refresh_token: Some("RT1"), authorization: Some(BASIC_JOHN), ..Default::default() };
    let c = call(w.start(&mut r, inputs));
    assert!(form(&c).contains(&("grant_type".into(), "refresh_token".into())));
    assert_eq!(c.cluster, "idp-mtls");
    let Next::Forward(f) = w.answer(&mut r, &ok_token(60)) else { panic!() };
    assert_eq!(f.response_add.len(), 1);
    assert_eq!((f.response_add[0].0.as_str(), f.response_add[0].1.as_str()), ("x-refresh-token", "RT2"));
    assert!(f.removes("x-refresh-token"));
    assert!(w.caches.grants.is_empty(), "refresh results are not cached");
}

#[test]
fn certificate_bound_tokens_need_the_certificate() {
    let mut w = World::new("auth_methods: [bearer]\nproof_of_possession_mtls: strict\n");
    let (kp, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms);
    let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xaa; 32]);
    let t = token(&kp, w.now_ms, serde_json::json!({"cnf": {"x5t#S256": thumb}}));
    let auth = bearer(&t);
    let digest = "aa".repeat(32);
    let with_cert = Inputs { authorization: Some(&auth), peer_cert_sha256: Some(&digest), ..Default::default() };
    assert!(matches!(w.start(&mut Request::new(), with_cert), Next::Forward(_)));
    let other = "bb".repeat(32);
    let wrong = Inputs { authorization: Some(&auth), peer_cert_sha256: Some(&other), ..Default::default() };
    assert_eq!(error_of(w.start(&mut Request::new(), wrong)), (401, "invalid_token".into()));
}

// ---- browser login, sessions, logout ----

const WEB: &str = "auth_methods: [authorization_code, session, bearer]\nsession_secret: 0123456789abcdef0123\nredirect_uri: http://127.0.0.1:8000/callback\nlogout_uri_suffix: /logout\nlogout_revoke: true\nlogout_redirect_uri: http://127.0.0.1:8000/bye\n";

fn web_world() -> (World, RS256KeyPair) {
    let mut w = World::new(WEB);
    let (kp, keys) = signer();
    w.docs.adopt_keys(keys, w.now_ms);
    (w, kp)
}

fn browser<'a>(path: &'a str, cookie: Option<&'a str>) -> Inputs<'a> {
    Inputs { path: Some(path), cookie, method: Some("GET"), accept: Some("text/html"), ..Default::default() }
}

/// `name=value` pairs of Set-Cookie headers, as a Cookie header.
fn jar(headers: &[(crate::core::header::HeaderName, crate::core::header::HeaderValue)]) -> String {
    headers
        .iter()
        .filter(|(k, _)| *k == "set-cookie")
        .map(|(_, v)| v.as_str().split(';').next().unwrap())
        .filter(|c| !c.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}

fn id_token(kp: &RS256KeyPair, now_ms: u64, nonce: &str) -> String {
    let mut c =
        jwt_simple::prelude::Claims::with_custom_claims(serde_json::json!({"sub": "john"}), jwt_simple::prelude::Duration::from_secs(300));
    c.issued_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000));
    c.invalid_before = None;
    c.expires_at = Some(jwt_simple::prelude::Duration::from_secs(now_ms / 1000 + 300));
    c.issuer = Some(ISS.into());
    c.audiences = Some(jwt_simple::claims::Audiences::AsString("client-tls-auth".into()));
    c.nonce = Some(nonce.into());
    kp.sign(c).unwrap()
}

/// Runs a whole login; returns the session cookie jar.
fn log_in(w: &mut World, kp: &RS256KeyPair) -> String {
    log_in_for(w, kp, 60)
}

/// A whole login whose access token lives `expires_in` seconds.
fn log_in_for(w: &mut World, kp: &RS256KeyPair, expires_in: u64) -> String {
    let r = reply(w.start(&mut Request::new(), browser("/app?x=1", None)));
    assert_eq!(r.status, 302);
    let location = r.header("location")[0].to_string();
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let auth_cookie = jar(&r.headers);
    let callback = format!("/callback?code=CODE&state={}", q["state"]);
    let mut req = Request::new();
    let c = call(w.start(&mut req, browser(&callback, Some(&auth_cookie))));
    assert!(form(&c).iter().any(|(k, _)| k == "code_verifier"));
    assert_eq!(c.cluster, "idp-mtls");
    let body = serde_json::json!({"access_token": "AT1", "token_type": "Bearer", "expires_in": expires_in, "refresh_token": "RT1", "id_token": id_token(kp, w.now_ms, &q["nonce"])});
    let r = reply(w.answer(&mut req, &ok(body.to_string())));
    assert_eq!(r.status, 302, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("location"), vec!["/app?x=1"]);
    assert!(r.header("set-cookie").iter().any(|c| c.starts_with("authorization=;") && c.contains("Max-Age=0")));
    jar(&r.headers)
}

#[test]
fn browser_login_creates_a_session_used_by_later_requests() {
    let (mut w, kp) = web_world();
    let cookies = log_in(&mut w, &kp);
    let with_other = format!("{cookies}; theme=dark");
    let next = w.start(&mut Request::new(), browser("/app", Some(&with_other)));
    assert_eq!(set(&next, "authorization"), Some("Bearer AT1"));
    assert_eq!(set(&next, "cookie"), Some("theme=dark"), "the filter's cookies do not go upstream");
}

#[test]
fn a_forbidden_session_is_destroyed_unless_configured_otherwise() {
    for (extra, destroyed) in [("", true), ("forbidden_destroy_session: false\n", false)] {
        let mut w = World::new(&format!("{WEB}scopes_required: [admin]\n{extra}"));
        let (kp, keys) = signer();
        w.docs.adopt_keys(keys, w.now_ms);
        let cookies = log_in(&mut w, &kp);
        let r = reply(w.start(&mut Request::new(), browser("/app", Some(&cookies))));
        assert_eq!(r.status, 403);
        let expired = r.header("set-cookie").iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0"));
        assert_eq!(expired, destroyed, "{extra:?}: {:?}", r.header("set-cookie"));
    }
}

#[test]
fn a_cookie_that_does_not_open_is_not_destroyed_on_401() {
    // Another policy's session under the same cookie name: not this policy's to expire
    // (a policy that logs browsers in expires unusable cookies with the login instead).
    let mut w = World::new("auth_methods: [session, bearer]\nsession_secret: 0123456789abcdef0123\n");
    let api = Inputs {
        path: Some("/"),
        method: Some("GET"),
        accept: Some("application/json"),
        cookie: Some("session=c2VhbGVkLWVsc2V3aGVyZQ"),
        ..Default::default()
    };
    let r = reply(w.start(&mut Request::new(), api));
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_empty(), "{:?}", r.header("set-cookie"));
}

#[test]
fn a_callback_fetches_the_keys_before_spending_the_code() {
    let mut w = World::new(WEB);
    let (kp, jwks) = keypair("k1");
    let r = reply(w.start(&mut Request::new(), browser("/", None)));
    let location = r.header("location")[0].to_string();
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
    let mut req = Request::new();
    let callback = format!("/callback?code=CODE&state={}", q["state"]);
    assert_eq!(call(w.start(&mut req, browser(&callback, Some(&jar(&r.headers))))).purpose, Purpose::Jwks);
    assert_eq!(call(w.answer(&mut req, &ok(jwks))).purpose, Purpose::Token);
    let body = serde_json::json!({"access_token": "AT1", "id_token": id_token(&kp, w.now_ms, &q["nonce"])});
    assert_eq!(reply(w.answer(&mut req, &ok(body.to_string()))).status, 302);
}

#[test]
fn api_clients_get_401_and_bad_callbacks_never_loop() {
    let (mut w, _) = web_world();
    let api = Inputs { path: Some("/"), method: Some("GET"), accept: Some("application/json"), ..Default::default() };
    assert_eq!(reply(w.start(&mut Request::new(), api)).status, 401);
    // callback without the authorization cookie
    let r = reply(w.start(&mut Request::new(), browser("/callback?code=c&state=s", None)));
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("login_failed"));
    // wrong state
    let first = reply(w.start(&mut Request::new(), browser("/", None)));
    let r = reply(w.start(&mut Request::new(), browser("/callback?code=c&state=nope", Some(&jar(&first.headers)))));
    assert_eq!(r.status, 401);
    assert!(r.header("location").is_empty());
}

#[test]
fn tampered_or_foreign_sessions_are_not_sessions() {
    let (mut w, kp) = web_world();
    let cookies = log_in(&mut w, &kp);
    let value = cookies.strip_prefix("session=").unwrap();
    let mut bytes = value.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("session={}", String::from_utf8(bytes).unwrap());
    assert_eq!(reply(w.start(&mut Request::new(), browser("/", Some(&tampered)))).status, 302);
    let truncated = format!("session={}", &value[..value.len() - 10]);
    assert_eq!(reply(w.start(&mut Request::new(), browser("/", Some(&truncated)))).status, 302);
    let mut other = World::new(&WEB.replace("0123456789abcdef0123", "another-secret-0123456789"));
    assert_eq!(reply(other.start(&mut Request::new(), browser("/", Some(&cookies)))).status, 302);
    // idle for longer than session_idling_timeout (900 s)
    w.now_ms += 901_000;
    let r = reply(w.start(&mut Request::new(), browser("/", Some(&cookies))));
    assert_eq!(r.status, 302);
    // the dead cookie is expired in the same redirect
    assert!(r.header("set-cookie").iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
    let fresh = reply(w.start(&mut Request::new(), browser("/", None)));
    assert!(!fresh.header("set-cookie").iter().any(|c| c.starts_with("session=")));
}

#[test]
fn an_expires_in_near_u64_max_does_not_overflow() {
    // Caught by fuzz/ (corpus/idp_responses/expires_in_max_code, _refresh): `now +
    // expires_in` overflowed (a panic in debug builds, a session expired at once in release).
    let (mut w, kp) = web_world();
    let cookies = log_in_for(&mut w, &kp, u64::MAX);
    w.now_ms += 800_000;
    assert_eq!(set(&w.start(&mut Request::new(), browser("/", Some(&cookies))), "authorization"), Some("Bearer AT1"));
    let cookies = log_in(&mut w, &kp);
    w.now_ms += 120_000;
    let mut r = Request::new();
    let _ = call(w.start(&mut r, browser("/", Some(&cookies))));
    let resp = ok(format!(r#"{{"access_token":"AT2","expires_in":{}}}"#, u64::MAX));
    let Next::Forward(f) = w.answer(&mut r, &resp) else { panic!() };
    w.now_ms += 800_000;
    assert_eq!(set(&w.start(&mut Request::new(), browser("/", Some(&jar(&f.response_add)))), "authorization"), Some("Bearer AT2"));
}

#[test]
fn expired_access_token_is_refreshed_and_the_session_rewritten() {
    let (mut w, kp) = web_world();
    let cookies = log_in(&mut w, &kp);
    w.now_ms += 120_000;
    let mut r = Request::new();
    let c = call(w.start(&mut r, browser("/", Some(&cookies))));
    assert!(form(&c).contains(&("refresh_token".into(), "RT1".into())));
    let next = w.answer(&mut r, &ok(r#"{"access_token":"AT2","token_type":"Bearer","expires_in":60,"refresh_token":"RT2"}"#));
    assert_eq!(set(&next, "authorization"), Some("Bearer AT2"));
    let Next::Forward(f) = next else { panic!() };
    let renewed = jar(&f.response_add);
    assert!(renewed.starts_with("session="));
    assert_eq!(set(&w.start(&mut Request::new(), browser("/", Some(&renewed))), "authorization"), Some("Bearer AT2"));
    // a failed refresh sends the browser to log in again
    w.now_ms += 120_000;
    let mut r = Request::new();
    let _ = call(w.start(&mut r, browser("/", Some(&renewed))));
    let bad = IdpResponse { status: Some(400), body: br#"{"error":"invalid_grant"}"#.to_vec(), elapsed_ms: 1 };
    assert_eq!(reply(w.answer(&mut r, &bad)).status, 302);
}

#[test]
fn logout_revokes_both_tokens_then_ends_the_session_at_the_idp() {
    let (mut w, kp) = web_world();
    let cookies = log_in(&mut w, &kp);
    let mut r = Request::new();
    let logout = Inputs { method: Some("POST"), ..browser("/logout", Some(&cookies)) };
    let first = call(w.start(&mut r, logout));
    assert_eq!((first.purpose, first.cluster.as_str()), (Purpose::Revocation, "idp-mtls"));
    assert!(String::from_utf8_lossy(&first.body).contains("token_type_hint=refresh_token"));
    let empty = ok(Vec::new());
    let second = call(w.answer(&mut r, &empty));
    assert!(String::from_utf8_lossy(&second.body).contains("token_type_hint=access_token"));
    let done = reply(w.answer(&mut r, &empty));
    assert_eq!(done.status, 302);
    assert!(done.header("location")[0].starts_with("https://idp/end?id_token_hint="));
    assert!(done.header("set-cookie").iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
    // a revocation the IdP refuses is a clear error, and the cookies still go
    let mut r = Request::new();
    let _ = w.start(&mut r, Inputs { method: Some("DELETE"), ..browser("/logout", Some(&cookies)) });
    let refused = IdpResponse { status: Some(401), body: br#"{"error":"invalid_client"}"#.to_vec(), elapsed_ms: 1 };
    let done = reply(w.answer(&mut r, &refused));
    assert_eq!(done.status, 401);
    assert!(String::from_utf8_lossy(&done.body).contains("invalid_client"));
    assert!(done.header("set-cookie").iter().any(|c| c.starts_with("session=;")));
    // GET is not a logout by default
    assert!(matches!(w.start(&mut Request::new(), browser("/logout", Some(&cookies))), Next::Forward(_)));
}

#[test]
fn decided_requests_are_counted() {
    let mut w = World::new("auth_methods: [password]\n");
    let _ = w.start(&mut Request::new(), Inputs::default());
    let names = Metrics::names(&[]);
    let mut seen = Vec::new();
    w.metrics.drain(|i, v| seen.push((names[i].name.clone(), v)));
    assert_eq!(seen, vec![("oidc.requests.none.unauthorized".to_string(), 1)]);
    let _ = DocsSettings::clone(&w.plan.issuer);
}

#[test]
fn an_opaque_grant_takes_its_claims_from_the_id_token() {
    // Kong's behaviour: upstream_headers_claims: [sub] works after a password grant whose
    // access token is opaque.
    let mut w = World::new("auth_methods: [password]\nupstream_headers_claims: [sub, scope]\nupstream_headers_names: [x-sub, x-scope]\n");
    let b = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let idt = format!("{}.{}.sig", b(&serde_json::json!({"alg": "RS256"})), b(&serde_json::json!({"sub": "john", "iss": ISS})));
    let mut r = Request::new();
    let _ = call(w.start(&mut r, basic(BASIC_JOHN)));
    let body =
        serde_json::json!({"access_token": "opaque-at", "token_type": "Bearer", "expires_in": 60, "id_token": idt, "scope": "openid api"});
    let next = w.answer(&mut r, &ok(body.to_string()));
    assert_eq!(set(&next, "x-sub"), Some("john"));
    assert_eq!(set(&next, "x-scope"), Some("openid api"));
}
