//! What the fuzz targets share: fixed plans, the real discovery document and key set of the
//! test IdP (tests/idp, captured once into fuzz/fixtures), a fixed clock, input splitting,
//! and [`Host`]: the core's simulated host (`envoy_oidc::core::testing::SimHost`, two
//! workers sharing data, Envoy's or Kong's CAS semantics) with a scripted IdP, which carries
//! whole requests through the IdP's answers and checks what comes out:
//! - every call to the IdP ([`check_call`]): `:path` and `:authority` that a host can send,
//!   and form bodies that are pure `application/x-www-form-urlencoded`;
//! - every outcome ([`Host::send`]): real statuses, JSON error bodies, a `Location` that
//!   stays on this host unless it is the IdP's authorization or logout endpoint or the
//!   configured `logout_redirect_uri`, `Set-Cookie` only for the filter's own cookies, the
//!   filter's cookies never upstream, no `access_token` left in a `:path` the filter rewrote,
//!   no configured secret in a body or a log line;
//! - the host rules (`SimHost::violations` stays empty; with Kong's semantics that includes
//!   "never let through with nothing decided"), and that every request ends.
//!
//! Header values themselves are `HeaderValue`s, valid by construction (no CR, LF, NUL or
//! other control byte), so they need no check here.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use envoy_oidc::core::config::Plan;
use envoy_oidc::core::credentials::{self, BearerSources};
use envoy_oidc::core::discovery::Metadata;
use envoy_oidc::core::header::{self, HeaderName, HeaderValue};
use envoy_oidc::core::idp::{IdpCall, IdpResponse, Purpose};
use envoy_oidc::core::jwt::KeySet;
use envoy_oidc::core::oauth::authorize;
use envoy_oidc::core::reply::{Forward, Reply};
use envoy_oidc::core::testing::{Headers, Outcome, SimHost};
use envoy_oidc::core::worker::TICK_MS;
use jwt_simple::prelude::{Audiences, Duration, Ed25519KeyPair, EdDSAKeyPairLike, JWTClaims, NoCustomClaims};

/// The test IdP's issuer in the fixtures.
pub const ISSUER: &str = "https://localhost:39555";
/// A clock at which the fixture tokens (iat 1795783100, exp +3600) are valid.
pub const NOW_MS: u64 = 1_795_783_200_000;
/// The test IdP's discovery document.
pub const DISCOVERY: &[u8] = include_bytes!("../../fixtures/discovery.json");
/// The test IdP's RS256 key, plus PS256, ES256, Ed25519 and an encryption key.
pub const JWKS: &[u8] = include_bytes!("../../fixtures/jwks.json");
/// An ID token for `client-tls-auth` (RS256, kid idp-sig-1) whose nonce is
/// [`FIXTURE_NONCE`]. In an IdP answer of the simulated host it stands for an ID token
/// (signed by the harness) for the nonce of the login in progress.
pub const ID_TOKEN: &str = include_str!("../../fixtures/id_token.jwt");
/// What the randomness was when the seeds were written: all bytes 0x42.
pub const RANDOM_BYTE: u8 = 0x42;
/// The state and the nonce a login got when the randomness was all [`RANDOM_BYTE`] (the
/// seeds carry it). The simulated host has randomness of its own, so the harness puts the
/// state of the login in progress where an input says this (see [`with_state`]).
pub const FIXTURE_NONCE: &str = "QkJCQkJCQkJCQkJCQkJCQg";

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

/// One plan, and the IdP's documents as the simulated IdP serves them.
pub struct World {
    pub plan: Arc<Plan>,
    /// The discovery document the IdP serves.
    pub discovery: Vec<u8>,
    /// The same, parsed for the plan's issuer (`None` when it does not parse).
    pub meta: Option<Metadata>,
    /// Configured secrets, which no answer's body and no log line may show.
    pub secrets: Vec<String>,
}

impl World {
    /// A fixture plan with the fixture documents.
    pub fn new(config: &str) -> World {
        let plan = Plan::parse(config.as_bytes()).expect("fixture plan");
        let secrets = config
            .lines()
            .filter_map(|l| l.strip_prefix("client_secret: ").or_else(|| l.strip_prefix("session_secret: ")))
            .map(str::to_string)
            .collect();
        World { secrets, ..World::with_discovery(Arc::new(plan), DISCOVERY.to_vec()) }
    }

    /// Any plan, with the fixture discovery document rewritten to name the plan's issuer.
    pub fn for_plan(plan: Plan) -> World {
        let mut doc: serde_json::Value = serde_json::from_slice(DISCOVERY).expect("fixture discovery document");
        doc["issuer"] = plan.issuer.issuer.clone().into();
        World::with_discovery(Arc::new(plan), doc.to_string().into_bytes())
    }

    /// `plan` with the IdP serving `discovery` (any bytes).
    pub fn with_discovery(plan: Arc<Plan>, discovery: Vec<u8>) -> World {
        let meta = Metadata::parse(&plan.issuer.issuer, &discovery).ok();
        World { plan, discovery, meta, secrets: Vec::new() }
    }

    /// The same plan with another discovery document.
    pub fn serving(&self, discovery: Vec<u8>) -> World {
        World { secrets: self.secrets.clone(), ..World::with_discovery(self.plan.clone(), discovery) }
    }

    /// The parsed discovery document of a fixture world.
    pub fn meta(&self) -> &Metadata {
        self.meta.as_ref().expect("fixture discovery document")
    }
}

thread_local! {
    pub static API_WORLD: World = World::new(API);
    pub static STRICT_WORLD: World = World::new(API_STRICT);
    pub static WEB_WORLD: World = World::new(WEB);
    pub static USERINFO_WORLD: World = World::new(USERINFO);
    /// The fixture key set, for verifying directly.
    pub static FIXTURE_KEYS: KeySet = KeySet::parse(JWKS).expect("fixture JWKS");
    /// Signs the tokens of the simulated IdP (ID tokens for a login's nonce, access tokens).
    static SIGNER: Ed25519KeyPair = {
        // PKCS#8 v1 of an Ed25519 seed: a fixed key, so that runs are reproducible.
        let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&[0x5a; 32]);
        Ed25519KeyPair::from_der(&der).expect("fixed Ed25519 seed").with_key_id(SIGNER_KID)
    };
    /// The harness's key alone, as a key set.
    static HARNESS_JWKS: Vec<u8> = jwks_with_signer(br#"{"keys":[]}"#);
    /// The fixture key set with the harness's key.
    static FIXTURE_JWKS: Vec<u8> = jwks_with_signer(JWKS);
}

fn jwks_with_signer(jwks: &[u8]) -> Vec<u8> {
    let mut jwks: serde_json::Value = serde_json::from_slice(jwks).expect("fixture JWKS");
    let x = SIGNER.with(|k| b64(&k.public_key().to_bytes()));
    let key = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": SIGNER_KID, "x": x});
    jwks["keys"].as_array_mut().expect("JWKS keys").push(key);
    jwks.to_string().into_bytes()
}

const SIGNER_KID: &str = "fuzz-ed";

fn b64(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
}

/// Which key set the simulated IdP serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The harness's Ed25519 key only: ID and access tokens the harness signs verify. Every
    /// worker parses the key set it adopts, and preparing the fixture's RSA keys is most of
    /// an input's time under the fuzzer's instrumentation, so flows use this.
    Harness,
    /// The test IdP's keys (and the harness's): the fixture tokens verify too.
    Fixture,
}

impl Keys {
    fn jwks(self) -> Vec<u8> {
        match self {
            Keys::Harness => HARNESS_JWKS.with(Clone::clone),
            Keys::Fixture => FIXTURE_JWKS.with(Clone::clone),
        }
    }
}

/// A JWT signed by the harness's key (in every served key set), with `claims` and `iss`,
/// `iat`, `exp` (an hour).
pub fn sign(issuer: &str, now_s: u64, claims: serde_json::Value) -> String {
    let claims = JWTClaims::<serde_json::Value> {
        issued_at: Some(Duration::from_secs(now_s)),
        expires_at: Some(Duration::from_secs(now_s.saturating_add(3600))),
        invalid_before: None,
        issuer: Some(issuer.to_string()),
        subject: Some("john".into()),
        audiences: None,
        jwt_id: None,
        nonce: None,
        custom: claims,
    };
    SIGNER.with(|k| k.sign(claims)).expect("Ed25519 signing")
}

/// An ID token for a login with `nonce`, for `issuer` and `client_id` at `now_s`.
pub fn id_token(issuer: &str, client_id: &str, nonce: &str, now_s: u64) -> String {
    let claims = JWTClaims::<NoCustomClaims> {
        issued_at: Some(Duration::from_secs(now_s)),
        expires_at: Some(Duration::from_secs(now_s.saturating_add(3600))),
        invalid_before: None,
        issuer: Some(issuer.to_string()),
        subject: Some("john".into()),
        audiences: Some(Audiences::AsString(client_id.to_string())),
        jwt_id: None,
        nonce: Some(nonce.to_string()),
        custom: NoCustomClaims {},
    };
    SIGNER.with(|k| k.sign(claims)).expect("Ed25519 signing")
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

/// Request headers: the pairs whose value is given.
pub fn request(pairs: &[(&str, Option<&str>)]) -> Headers {
    pairs.iter().filter_map(|(k, v)| v.map(|v| (k, v))).fold(Headers::default(), |h, (k, v)| h.with(k, v))
}

/// A request from a browser, over https.
pub fn browser(path: &str, cookie: Option<&str>, method: &str) -> Headers {
    request(&[
        (":path", Some(path)),
        (":method", Some(method)),
        ("accept", Some("text/html")),
        ("x-forwarded-proto", Some("https")),
        ("cookie", cookie),
    ])
}

/// An API request with `Authorization: value`.
pub fn authorization(value: &str) -> Headers {
    Headers::default().with("authorization", value)
}

/// `name=value` pairs of the `Set-Cookie` headers in `headers`, as a `Cookie` header
/// (deleted cookies left out).
pub fn jar(headers: &[(HeaderName, HeaderValue)]) -> String {
    headers
        .iter()
        .filter(|(k, _)| *k == "set-cookie")
        .filter_map(|(_, v)| v.as_str().split(';').next())
        .filter(|c| !c.ends_with('='))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The cookies an outcome sets, as a `Cookie` header.
pub fn cookies_of(o: &Outcome) -> String {
    match o {
        Outcome::Answered(r) => jar(&r.headers),
        Outcome::Forwarded(f) => jar(&f.response_add),
        _ => String::new(),
    }
}

/// An IdP answer.
pub fn answer(status: u16, body: &str) -> IdpResponse {
    IdpResponse { status: Some(status), body: body.as_bytes().to_vec(), elapsed_ms: 3 }
}

/// A token response carrying [`ID_TOKEN`] (which the harness re-signs for the nonce of the
/// login in progress).
pub fn code_answer() -> IdpResponse {
    let body = serde_json::json!({
        "access_token": "ORKo_ybOqinUh1eMJwv8sQKGThlP7L5SP0O-8ZFRwhR",
        "token_type": "Bearer",
        "expires_in": 600,
        "refresh_token": "6089hE63K4E0jW6a9Dd8U8uenrb3ksbGhuqKCXRaKnT",
        "id_token": ID_TOKEN.trim(),
    });
    answer(200, &body.to_string())
}

/// The `Location` of a local reply.
pub fn location(o: &Outcome) -> Option<&str> {
    let Outcome::Answered(r) = o else { return None };
    r.header("location").first().copied()
}

/// The first value of query argument `name` of a URL.
pub fn query_arg(url: &str, name: &str) -> Option<String> {
    let (_, q) = url.split_once('?')?;
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `s` with [`FIXTURE_NONCE`] (the state of a login in the seeds) replaced by `state`.
pub fn with_state(s: &str, state: &str) -> String {
    s.replace(FIXTURE_NONCE, state)
}

/// Whether a redirect target stays on this host: an absolute path, not `//host` or
/// `/\host` (browsers read both as another host, after dropping tabs and newlines).
pub fn local_redirect(to: &str) -> bool {
    let to: String = to.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\")
}

/// What every call to the IdP must satisfy, whatever the inputs and documents: a cluster,
/// an `:authority` and a `:path` that a host can send, a body that is a pure form (POST)
/// or nothing (GET).
pub fn check_call(call: &IdpCall) {
    assert!(!call.cluster.is_empty(), "{call:?}: no cluster");
    assert!(call.timeout_ms > 0, "{call:?}: no timeout");
    let a = call.authority.as_str();
    assert!(
        !a.is_empty() && header::valid_value(a.as_bytes()) && !a.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)),
        "{call:?}: bad :authority {a:?}"
    );
    let p = call.path.as_str();
    assert!(
        p.starts_with('/') && header::valid_value(p.as_bytes()) && !p.contains(|c: char| c.is_whitespace() || c == '#'),
        "{call:?}: bad :path {p:?}"
    );
    match call.method {
        "GET" => assert!(call.body.is_empty(), "{call:?}: a GET with a body"),
        "POST" => {
            let form = |b: &u8| b.is_ascii_alphanumeric() || b"*-._%+=&".contains(b);
            assert!(call.body.iter().all(form), "{call:?}: the body is not a pure form");
        }
        m => panic!("{call:?}: method {m}"),
    }
}

/// What the scripted IdP answers to the request's own calls (token, introspection,
/// userinfo, revocation): `answers` in turn, the last one again when they run out.
struct Script {
    answers: Vec<IdpResponse>,
    next: usize,
    /// The nonce of the login the browser was last sent to the IdP with.
    nonce: Option<String>,
    issuer: String,
    client_id: String,
    now_s: u64,
}

impl Script {
    fn answer(&mut self, call: &IdpCall) -> IdpResponse {
        let Some(mut a) = self.answers.get(self.next).or(self.answers.last()).cloned() else {
            return IdpResponse { status: Some(404), body: Vec::new(), elapsed_ms: 0 };
        };
        self.next += 1;
        if let (Purpose::Token, Some(nonce)) = (call.purpose, &self.nonce) {
            let placeholder = ID_TOKEN.trim().as_bytes();
            if let Some(at) = a.body.windows(placeholder.len()).position(|w| w == placeholder) {
                let token = id_token(&self.issuer, &self.client_id, nonce, self.now_s);
                a.body.splice(at..at + placeholder.len(), token.into_bytes());
            }
        }
        a
    }
}

/// The simulated host for one world: two workers, the IdP serving the world's documents
/// and the script.
pub struct Host<'w> {
    pub sim: SimHost,
    pub world: &'w World,
    script: Rc<RefCell<Script>>,
    /// Skips the on-host `Location` check, for inputs only the filter can make (values
    /// sealed with the session secret, which it wrote itself from the IdP's answers).
    pub trusted: bool,
}

impl<'w> Host<'w> {
    /// Workers that have loaded the documents (fetched on their first ticks), as in a
    /// running process.
    pub fn new(world: &'w World, kong: bool) -> Self {
        Host::with_keys(world, kong, Keys::Harness)
    }

    /// The same, the IdP serving `keys`.
    pub fn with_keys(world: &'w World, kong: bool, keys: Keys) -> Self {
        let mut h = Host::cold_with_keys(world, kong, keys);
        h.warm();
        h
    }

    /// Runs the first ticks: one worker fetches the discovery document, then the key set,
    /// and stores them for the other.
    pub fn warm(&mut self) {
        self.sim.run_for(2 * TICK_MS + 100);
        self.check_rules();
    }

    /// Workers just configured: the first requests fetch the documents themselves.
    pub fn cold(world: &'w World, kong: bool) -> Self {
        Host::cold_with_keys(world, kong, Keys::Harness)
    }

    pub fn cold_with_keys(world: &'w World, kong: bool, keys: Keys) -> Self {
        let mut sim = SimHost::new(&world.plan, 2, kong, NOW_MS);
        let policy = &world.plan.policy;
        let script = Rc::new(RefCell::new(Script {
            answers: Vec::new(),
            next: 0,
            nonce: None,
            issuer: policy.login.issuer.clone(),
            client_id: policy.login.client_id.clone(),
            now_s: NOW_MS / 1000,
        }));
        let document = |body: Vec<u8>| {
            Box::new(move |call: &IdpCall| {
                check_call(call);
                IdpResponse { status: Some(200), body: body.clone(), elapsed_ms: 0 }
            })
        };
        sim.idp.answers.insert(Purpose::Discovery, document(world.discovery.clone()));
        sim.idp.answers.insert(Purpose::Jwks, document(keys.jwks()));
        for purpose in [Purpose::Token, Purpose::Introspection, Purpose::Userinfo, Purpose::Revocation] {
            let script = script.clone();
            sim.idp.answers.insert(
                purpose,
                Box::new(move |call: &IdpCall| {
                    check_call(call);
                    script.borrow_mut().answer(call)
                }),
            );
        }
        Host { sim, world, script, trusted: false }
    }

    /// The time in seconds.
    pub fn now_s(&self) -> u64 {
        self.sim.now_ms / 1000
    }

    /// Lets `ms` of quiet time pass at once (nothing is in flight between requests; the
    /// ticks skipped are caught up by one tick per worker).
    pub fn idle(&mut self, ms: u64) {
        self.sim.now_ms = self.sim.now_ms.saturating_add(ms);
    }

    /// The nonce of a login whose state the harness sealed itself.
    pub fn expect_nonce(&mut self, nonce: Option<String>) {
        self.script.borrow_mut().nonce = nonce;
    }

    /// Sends `headers` to `worker`, answers the request's calls with `answers`, and runs
    /// until the request has ended; checks the outcome and the host rules.
    pub fn send(&mut self, worker: usize, headers: &Headers, answers: &[IdpResponse]) -> Outcome {
        {
            let mut s = self.script.borrow_mut();
            s.answers = answers.to_vec();
            s.next = 0;
            s.now_s = self.now_s();
        }
        let id = self.sim.request(worker % 2, headers);
        let step = self.sim.idp.latency_ms.saturating_add(1).max(50);
        for _ in 0..64 {
            if !matches!(self.sim.outcome(id), Outcome::Waiting) {
                break;
            }
            self.sim.run_for(step);
        }
        let outcome = self.sim.outcome(id).clone();
        self.check_rules();
        self.check(headers, &outcome);
        if let Some(to) = location(&outcome) {
            let auth = self.world.meta.as_ref().and_then(|m| m.authorization_endpoint.as_ref());
            if auth.is_some_and(|e| to.starts_with(&e.url)) {
                self.script.borrow_mut().nonce = query_arg(to, "nonce");
            }
        }
        outcome
    }

    fn check_rules(&mut self) {
        assert!(self.sim.violations.is_empty(), "host rules broken: {:?}", self.sim.violations);
        for line in self.sim.log.drain(..) {
            for s in &self.world.secrets {
                assert!(!line.message.contains(s.as_str()), "a secret in the log: {:?}", line.message);
            }
        }
    }

    fn check(&self, headers: &Headers, o: &Outcome) {
        match o {
            Outcome::Forwarded(f) => self.check_forward(headers, f),
            Outcome::Answered(r) => self.check_reply(r),
            Outcome::Waiting => panic!("the request never ended"),
            Outcome::LetThrough => panic!("the request was let through with nothing decided"),
        }
    }

    fn check_forward(&self, headers: &Headers, f: &Forward) {
        if let Some(p) = &f.set_path {
            // hide_credentials: once the argument is removed, no token is found in the query.
            let query = BearerSources { header: false, query: true, cookie: None, header_name: None };
            assert!(credentials::bearer(&query, None, Some(p.as_str()), None).is_none(), "a token left in :path");
        }
        self.check_cookies(&f.response_add);
        // The filter's own cookies never go upstream.
        if let Some(s) = &self.world.plan.policy.sessions {
            let original = headers.pairs.iter().find(|(k, _)| k == "cookie").map(|(_, v)| v.as_str());
            let upstream = if f.removes("cookie") { f.get("cookie") } else { original };
            for c in upstream.unwrap_or_default().split(';').map(str::trim).filter(|c| !c.is_empty()) {
                let name = c.split_once('=').map(|(k, _)| k.trim()).unwrap_or(c);
                assert!(!s.is_own(name), "the filter's cookie {name:?} goes upstream");
            }
        }
    }

    fn check_reply(&self, r: &Reply) {
        assert!((200..600).contains(&r.status), "status {}", r.status);
        if r.header("content-type").first() == Some(&"application/json") {
            let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON answer is JSON");
            if body.get("error").is_some() {
                assert!((400..600).contains(&r.status), "an error with status {}", r.status);
            }
        }
        let body = String::from_utf8_lossy(&r.body);
        for s in &self.world.secrets {
            assert!(!body.contains(s.as_str()), "a secret in an answer: {body}");
        }
        for to in r.header("location") {
            assert!(self.trusted || self.allowed_location(to), "a redirect off this host: {to:?}");
        }
        self.check_cookies(&r.headers);
    }

    /// A `Location` stays on this host, or goes to the IdP's authorization or logout
    /// endpoint, or to `logout_redirect_uri`.
    fn allowed_location(&self, to: &str) -> bool {
        let endpoint = |e: Option<&envoy_oidc::core::idp::Endpoint>| {
            e.is_some_and(|e| to.strip_prefix(e.url.as_str()).is_some_and(|q| q.starts_with(if e.url.contains('?') { '&' } else { '?' })))
        };
        let meta = self.world.meta.as_ref();
        local_redirect(to)
            || endpoint(meta.and_then(|m| m.authorization_endpoint.as_ref()))
            || endpoint(meta.and_then(|m| m.end_session_endpoint.as_ref()))
            || self.world.plan.policy.logout.redirect_uri.as_ref().is_some_and(|r| r.as_str() == to)
    }

    /// `Set-Cookie` is only ever for the filter's own cookies, with a value it made
    /// (base64url, a chunk count, or empty to delete).
    fn check_cookies(&self, headers: &[(HeaderName, HeaderValue)]) {
        for (_, v) in headers.iter().filter(|(k, _)| *k == "set-cookie") {
            let s = self.world.plan.policy.sessions.as_ref().expect("Set-Cookie without sessions");
            let first = v.as_str().split(';').next().unwrap_or_default();
            let (name, value) = first.split_once('=').expect("Set-Cookie name=value");
            assert!(s.is_own(name), "Set-Cookie for {name:?}");
            assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "Set-Cookie value {value:?}");
        }
    }

    /// Runs a whole browser login for `path` (redirect to the IdP on one worker, callback
    /// with its state on the other, code exchange with an ID token for its nonce) and checks
    /// where the browser goes back to: the path it started from, on this host (no open
    /// redirect). Returns the session cookies.
    pub fn log_in(&mut self, path: &str, cookie: Option<&str>) -> Option<String> {
        let out = self.send(0, &browser(path, cookie, "GET"), &[code_answer()]);
        let to_idp = location(&out)?;
        let auth = self.world.meta.as_ref()?.authorization_endpoint.as_ref()?;
        if !to_idp.starts_with(auth.url.as_str()) {
            return None;
        }
        let state = query_arg(to_idp, "state")?;
        let login = cookies_of(&out);
        let callback = self.world.plan.policy.login.redirect_uris.first()?.path.clone();
        let callback = format!("{}?code=c&state={state}", callback.split('?').next().unwrap_or("/"));
        let out = self.send(1, &browser(&callback, Some(&login), "GET"), &[code_answer()]);
        let back = location(&out)?;
        assert_eq!(back, authorize::local_path(path), "login for {path:?} ends in a redirect to {back:?}");
        Some(cookies_of(&out))
    }
}
