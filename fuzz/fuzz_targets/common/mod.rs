//! What the fuzz targets share: fixed plans, the real discovery document and key set of the
//! test IdP (tests/idp, captured once into fuzz/fixtures), a fixed clock, deterministic
//! randomness, input splitting, and the checks every step of the flow must pass.
#![allow(dead_code)]

use envoy_oidc::core::config::Plan;
use envoy_oidc::core::discovery::Metadata;
use envoy_oidc::core::flow::{Caches, Env, Flow, Inputs, Step};
use envoy_oidc::core::idp::IdpResponse;
use envoy_oidc::core::jwt::KeySet;

/// The test IdP's issuer in the fixtures.
pub const ISSUER: &str = "https://localhost:39555";
/// A clock at which the fixture tokens (iat 1795783100, exp +3600) are valid.
pub const NOW_MS: u64 = 1_795_783_200_000;
/// The test IdP's discovery document.
pub const DISCOVERY: &[u8] = include_bytes!("../../fixtures/discovery.json");
/// The test IdP's RS256 key, plus PS256, ES256, Ed25519 and an encryption key.
pub const JWKS: &[u8] = include_bytes!("../../fixtures/jwks.json");
/// An ID token for `client-tls-auth` (RS256, kid idp-sig-1) whose nonce is the one a login
/// gets when the randomness is all [`RANDOM_BYTE`].
pub const ID_TOKEN: &str = include_str!("../../fixtures/id_token.jwt");
/// What [`Env::random`] fills buffers with.
pub const RANDOM_BYTE: u8 = 0x42;

/// API clients: every token method, bearer tokens from header, query and cookie, identity
/// headers, claim headers and rules (mTLS client authentication).
pub const API: &str = "issuer: https://localhost:39555
idp_cluster: idp
tls_client_auth_cluster: idp-mtls
client_id: client-tls-auth
client_auth: tls_client_auth
auth_methods: [bearer, introspection, userinfo, refresh_token, password, client_credentials]
bearer_token_param_type: [header, query, cookie]
bearer_token_cookie_name: at
upstream_id_token_header: x-id-token
upstream_user_info_header: x-userinfo
upstream_introspection_header: x-introspection
upstream_headers_claims: [sub, email, groups]
upstream_headers_names: [x-sub, x-email, x-groups]
proof_of_possession_mtls: optional
leeway: 5
";

/// The same with hiding credentials, strict certificate binding, rules on nested claims and
/// client_secret_basic at the IdP.
pub const API_STRICT: &str = "issuer: https://localhost:39555
idp_cluster: idp
client_id: client-secret-basic
client_secret: secret-basic-1
auth_methods: [bearer, introspection, client_credentials]
bearer_token_param_type: [query, cookie, header]
bearer_token_cookie_name: at
hide_credentials: true
proof_of_possession_mtls: strict
upstream_access_token_header: x-access-token
scopes_required: [openid, api:read api:write]
roles_required: [writer]
roles_claim: [realm_access, roles]
cache_tokens: false
";

/// Browsers: authorization code, sessions (small chunks come from big tokens), logout with
/// revocation and RP-initiated logout, bearer tokens besides.
pub const WEB: &str = "issuer: https://localhost:39555
idp_cluster: idp
tls_client_auth_cluster: idp-mtls
client_id: client-tls-auth
client_auth: tls_client_auth
auth_methods: [session, bearer, authorization_code]
session_secret: fuzzing-session-secret-0123456789
redirect_uri: [http://127.0.0.1:8000/callback, http://localhost:8000/auth/callback]
logout_uri_suffix: /logout
logout_query_arg: logout
logout_methods: [POST, DELETE, GET]
logout_revoke: true
logout_redirect_uri: http://127.0.0.1:8000/bye
upstream_id_token_header: x-id-token
upstream_headers_claims: [sub]
upstream_headers_names: [x-sub]
session_idling_timeout: 900
session_rolling_timeout: 3600
session_absolute_timeout: 86400
";

/// Userinfo as the token check, client_secret_post at the IdP.
pub const USERINFO: &str = "issuer: https://localhost:39555
idp_cluster: idp
client_id: client-secret-post
client_secret: secret-post-1
client_auth: client_secret_post
auth_methods: [userinfo]
upstream_user_info_header: x-userinfo
upstream_headers_claims: [email]
upstream_headers_names: [x-email]
groups_required: [admins]
";

/// One plan with the IdP's documents.
pub struct World {
    pub plan: Plan,
    pub meta: Metadata,
    pub keys: KeySet,
}

impl World {
    pub fn new(config: &str) -> World {
        let plan = Plan::parse(config.as_bytes()).expect("fixture plan");
        let meta = Metadata::parse(&plan, DISCOVERY).expect("fixture discovery document");
        let keys = KeySet::parse(JWKS).expect("fixture JWKS");
        World { plan, meta, keys }
    }

    /// Runs `f` with an environment at [`NOW_MS`] (plus `later_ms`) over `caches`.
    pub fn with<R>(&self, caches: &mut Caches, later_ms: u64, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
        let mut random = |b: &mut [u8]| b.fill(RANDOM_BYTE);
        let mut env = Env {
            plan: &self.plan,
            meta: Some(&self.meta),
            keys: Some(&self.keys),
            caches,
            now_ms: NOW_MS + later_ms,
            random: &mut random,
        };
        f(&mut env)
    }
}

thread_local! {
    pub static API_WORLD: World = World::new(API);
    pub static STRICT_WORLD: World = World::new(API_STRICT);
    pub static WEB_WORLD: World = World::new(WEB);
    pub static USERINFO_WORLD: World = World::new(USERINFO);
}

/// Text as the host adapter makes it from header bytes: not UTF-8 becomes U+FFFD.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A header value as Envoy can deliver it: never CR, LF or NUL.
pub fn header(b: &[u8]) -> String {
    text(b).replace(['\r', '\n', '\0'], "")
}

/// The NUL-separated fields of `data` (NUL never occurs in a header value).
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0).collect()
}

/// Field `i` as a header value, `None` when the input has fewer fields.
pub fn header_field(f: &[&[u8]], i: usize) -> Option<String> {
    f.get(i).map(|b| header(b))
}

/// Whether a value the filter emits into an HTTP header cannot split it.
pub fn header_safe(v: &str) -> bool {
    !v.contains(['\r', '\n', '\0'])
}

/// What every step must satisfy whatever the input: nothing the filter sends (upstream, to
/// the client, to the IdP) can split a header, and every status is a real one.
pub fn check(plan: &Plan, step: &Step) {
    match step {
        Step::Forward(f) => {
            for (k, v) in f.set.iter().chain(&f.response_set) {
                assert!(!k.is_empty() && header_safe(k) && header_safe(v), "unsafe header {k:?}: {v:?}");
            }
            if let Some(p) = &f.set_path {
                assert!(header_safe(p), "unsafe :path {p:?}");
            }
        }
        Step::Deny(e) => {
            let r = e.reply(plan);
            assert!((400..600).contains(&r.status));
            for (k, v) in &r.headers {
                assert!(header_safe(k) && header_safe(v), "unsafe header {k:?}: {v:?}");
            }
        }
        Step::Respond(r) => {
            assert!((200..600).contains(&r.status));
            for (k, v) in &r.headers {
                assert!(header_safe(k) && header_safe(v), "unsafe header {k:?}: {v:?}");
            }
        }
        Step::Call(req) => {
            for (k, v) in &req.headers {
                assert!(header_safe(k) && header_safe(v), "unsafe IdP request header {k:?}: {v:?}");
            }
            assert!(header_safe(&req.path) && header_safe(&req.authority));
        }
        Step::WaitForIdp | Step::RefreshKeys => {}
    }
}

/// Carries a flow on from `step` as the adapter would: answers IdP calls with `answers` in
/// turn (the last one again when they run out), re-delivers readiness after a key refresh
/// (the key set does not change, so an unknown key stays unknown), and times out a wait.
/// Every step is [`check`]ed. Returns the final step.
pub fn drive(env: &mut Env<'_>, flow: &mut Flow, step: Step, answers: &[IdpResponse]) -> Step {
    run(env, flow, step, answers, true)
}

/// [`drive`] without the header checks: for inputs an attacker cannot make (values sealed
/// with the session secret, which the filter itself wrote from the IdP's answers).
pub fn drive_trusted(env: &mut Env<'_>, flow: &mut Flow, step: Step, answers: &[IdpResponse]) -> Step {
    run(env, flow, step, answers, false)
}

fn run(env: &mut Env<'_>, flow: &mut Flow, mut step: Step, answers: &[IdpResponse], checked: bool) -> Step {
    let check = |plan: &Plan, step: &Step| {
        if checked {
            check(plan, step)
        }
    };
    let mut calls = 0;
    for _ in 0..8 {
        check(env.plan, &step);
        step = match step {
            Step::Call(_) => {
                let Some(resp) = answers.get(calls).or(answers.last()) else { return step };
                calls += 1;
                flow.idp_answered(env, resp)
            }
            Step::RefreshKeys => flow.idp_ready(env),
            Step::WaitForIdp => flow.timed_out(),
            done => return done,
        };
    }
    check(env.plan, &step);
    step
}

/// A request from a browser.
pub fn browser<'a>(path: &'a str, cookie: Option<&'a str>, method: &'a str) -> Inputs<'a> {
    Inputs { path: Some(path), cookie, method: Some(method), accept: Some("text/html"), https: true, ..Default::default() }
}

/// `name=value` pairs of the `Set-Cookie` headers in `headers`, as a `Cookie` header
/// (deleted cookies left out).
pub fn jar(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .filter_map(|(_, v)| v.split(';').next())
        .filter(|c| !c.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An IdP answer.
pub fn answer(status: u16, body: &str) -> IdpResponse {
    IdpResponse { status: Some(status), body: body.as_bytes().to_vec(), elapsed_ms: 3 }
}

/// A token response carrying [`ID_TOKEN`].
pub fn code_answer() -> IdpResponse {
    let body = serde_json::json!({
        "access_token": "ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR",
        "token_type": "Bearer",
        "expires_in": 600,
        "refresh_token": "6089hE63K4E0jW6a9Dd8U8uenrb3ksbGhuqKCXRaKnT",
        "id_token": ID_TOKEN,
    });
    answer(200, &body.to_string())
}

/// The `Location` of a local reply.
pub fn location(step: &Step) -> Option<&str> {
    let Step::Respond(r) = step else { return None };
    r.headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str())
}

/// Runs a whole browser login for `path` (redirect to the IdP, callback with the state,
/// code exchange with [`ID_TOKEN`]) and checks where the browser goes back to: the path it
/// started from, on this host (no open redirect). Returns the session cookies.
pub fn log_in(env: &mut Env<'_>, path: &str, cookie: Option<&str>) -> Option<String> {
    let mut flow = Flow::new();
    let step = flow.start(env, browser(path, cookie, "GET"));
    let step = drive(env, &mut flow, step, &[code_answer()]);
    let to_idp = location(&step)?;
    if !to_idp.starts_with("https://localhost:39555/auth?") {
        return None;
    }
    let Step::Respond(r) = &step else { return None };
    let login = jar(&r.headers);
    let callback = env.plan.redirect_uris.first()?.path.clone();
    let callback = format!("{callback}?code=c&state=QkJCQkJCQkJCQkJCQkJCQg");
    let mut flow = Flow::new();
    let step = flow.start(env, browser(&callback, Some(&login), "GET"));
    let step = drive(env, &mut flow, step, &[code_answer()]);
    let back = location(&step)?;
    assert!(local_redirect(back), "login for {path:?} ends in a redirect to {back:?}");
    let Step::Respond(r) = &step else { return None };
    Some(jar(&r.headers))
}

/// Whether a redirect target stays on this host: an absolute path, not `//host` or
/// `/\host` (browsers read both as another host, after dropping tabs and newlines).
pub fn local_redirect(to: &str) -> bool {
    let to: String = to.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\")
}
