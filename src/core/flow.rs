//! The decision for one client request, as a sans-IO state machine.
//!
//! The adapter feeds events in ([`Flow::start`], [`Flow::idp_ready`], [`Flow::idp_answered`],
//! [`Flow::timed_out`]) and carries out the [`Step`] that comes back: forward upstream,
//! deny, call the IdP, wait for the IdP's metadata or keys. Auth methods are tried in Kong's
//! order (bearer, introspection, userinfo, refresh_token, password, client_credentials); the
//! first credential found decides.

use std::rc::Rc;

use base64::Engine;

use crate::core::cache::{self, Cache};
use crate::core::claims::{self, Claims};
use crate::core::config::{AuthMethod, Plan, Pop};
use crate::core::credentials;
use crate::core::discovery::Metadata;
use crate::core::error::Error;
use crate::core::grants::{self, Grant};
use crate::core::idp::{IdpRequest, IdpResponse};
use crate::core::introspection;
use crate::core::jwt::{self, JwtError, KeySet};
use crate::core::login::{self, Pending};
use crate::core::metrics::Method;
use crate::core::reply::{Forward, Reply};
use crate::core::session::{self, Session};
use crate::core::upstream::{self, Identity, Original, Presented};

/// What the adapter must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Let the request go upstream with these header changes.
    Forward(Forward),
    /// Answer the client with this error (see [`Error::reply`]).
    Deny(Error),
    /// Send this request to the IdP and call [`Flow::idp_answered`] with the answer.
    Call(IdpRequest),
    /// The IdP's metadata or keys are not loaded: call [`Flow::idp_ready`] when they change,
    /// or [`Flow::timed_out`] after `timeout`.
    WaitForIdp,
    /// The token's key is unknown: re-fetch the JWKS (throttled), then [`Flow::idp_ready`];
    /// when a re-fetch is not allowed now, [`Flow::timed_out`].
    RefreshKeys,
    /// Answer the client locally (login and logout redirects, errors that also clear cookies).
    Respond(Reply),
}

/// The request data the decision reads. The adapter only fills what the plan uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Inputs<'a> {
    pub authorization: Option<&'a str>,
    /// `:path`, when bearer tokens may come in the query.
    pub path: Option<&'a str>,
    /// `Cookie`, when bearer tokens may come in a cookie.
    pub cookie: Option<&'a str>,
    /// The `refresh_token_param_name` header, when `refresh_token` is configured.
    pub refresh_token: Option<&'a str>,
    /// Lowercase hex SHA-256 of the downstream client certificate, when
    /// `proof_of_possession_mtls` is on and the connection has one.
    pub peer_cert_sha256: Option<&'a str>,
    /// With sessions: `:method`, `Accept`, `X-Requested-With`, and whether the request came
    /// over https (for `Secure` cookies).
    pub method: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub x_requested_with: Option<&'a str>,
    pub https: bool,
}

/// Per-worker caches.
pub struct Caches {
    /// Password / client credentials grant results, by [`cache::key`].
    pub grants: Cache<cache::Key, Rc<Identity>>,
    /// Claims of verified JWT access tokens, with the `kid` that signed them, by token.
    pub jwts: Cache<Box<str>, (Rc<Claims>, String)>,
    /// Introspection answers for active tokens, by token.
    pub introspections: Cache<Box<str>, Rc<Claims>>,
    /// Opened session cookies, by sealed value: AES-GCM runs once per cookie, not per
    /// request (timeouts are still checked on every use).
    pub sessions: Cache<Box<str>, Rc<(Session, Identity)>>,
}

/// How long an opened session cookie stays in the cache.
const SESSION_CACHE_MS: u64 = 300_000;

impl Caches {
    pub fn new(capacity: usize) -> Self {
        Caches {
            grants: Cache::new(capacity),
            jwts: Cache::new(capacity),
            introspections: Cache::new(capacity),
            sessions: Cache::new(capacity / 4),
        }
    }
}

/// Everything outside the request that a decision needs, lent for one event.
pub struct Env<'a> {
    pub plan: &'a Plan,
    pub meta: Option<&'a Metadata>,
    pub keys: Option<&'a KeySet>,
    pub caches: &'a mut Caches,
    pub now_ms: u64,
    /// Fills a buffer with random bytes (assertion ids, login state, cookie nonces).
    pub random: &'a mut dyn FnMut(&mut [u8]),
}

impl Env<'_> {
    /// A fresh unique id for client assertions.
    fn jti(&mut self) -> String {
        let mut b = [0u8; 16];
        (self.random)(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn now(&self) -> u64 {
        self.now_ms / 1000
    }
}

/// What the request is waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Verify a JWT locally; `refreshed` once the JWKS was re-fetched for it.
    Jwt { refreshed: bool },
    Introspect,
    Userinfo,
    Grant(Grant),
    /// Redirect a browser to the IdP (needs the discovery document).
    Login,
    /// Exchange the callback's code (an authorization code grant).
    Code { grant: Grant, pending: Pending },
    /// Refresh a session whose access token expired.
    Refresh(Session),
    /// Revoke tokens one by one, then finish the logout.
    Revoke { queue: Vec<(String, &'static str)>, id_token: Option<String> },
}

#[derive(Debug, Default)]
enum State {
    #[default]
    New,
    Waiting(Op),
    Calling(Op),
    Done,
}

/// One request's progress.
#[derive(Debug, Default)]
pub struct Flow {
    state: State,
    /// The bearer token (or refresh token) the client presented.
    token: String,
    presented: Option<Presented>,
    original: Original,
    peer_cert_sha256: Option<String>,
    /// Session cookie chunks the client sent (stale ones are expired when writing).
    session_chunks: usize,
    https: bool,
    browser: bool,
    /// The auth method deciding the request (for metrics).
    method: Method,
}

impl Flow {
    pub fn new() -> Self {
        Flow::default()
    }

    /// The auth method that decided (or is deciding) the request.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The request's headers have arrived.
    pub fn start(&mut self, env: &mut Env<'_>, req: Inputs<'_>) -> Step {
        let plan = env.plan;
        self.original = Original { path: req.path.map(str::to_string), cookie: req.cookie.map(str::to_string), canonical_bearer_header: false };
        self.peer_cert_sha256 = req.peer_cert_sha256.map(str::to_string);
        self.https = req.https;
        self.browser = login::is_browser(req.accept, req.x_requested_with);
        if plan.sessions.is_some() {
            if let Some(step) = self.start_browser(env, req) {
                return step;
            }
        }
        match self.first_credential(plan, req) {
            Ok(op) => self.run(env, op),
            Err(Error::MissingCredentials) if plan.has(AuthMethod::AuthorizationCode) => {
                // Session cookies that could not be used (expired, timed out, tampered, another
                // secret) are expired in this same answer.
                let clear = if self.session_chunks > 0 { self.clear_session_cookies(env) } else { Vec::new() };
                self.login_or_deny(env, clear)
            }
            Err(e) => self.deny(e),
        }
    }

    /// Logout, the login callback and session cookies, in that order. `None` when none of
    /// them applies and the other credentials should be looked at.
    fn start_browser(&mut self, env: &mut Env<'_>, req: Inputs<'_>) -> Option<Step> {
        let plan = env.plan;
        let s = plan.sessions.as_ref()?;
        let cookie = req.cookie.unwrap_or("");
        let path = req.path.unwrap_or("/");
        let chunks = session::Chunks::find(cookie, &s.cookie_name);
        self.session_chunks = chunks.present();
        let now = env.now();
        // The opened session and what it establishes, from the cache or by decrypting.
        let opened = chunks
            .join()
            .and_then(|sealed| {
                if let Some(open) = env.caches.sessions.get(sealed.as_str(), env.now_ms) {
                    return Some(open.clone());
                }
                let session: Session = serde_json::from_slice(&s.sealer.open(&s.cookie_name, &sealed)?).ok()?;
                let identity = session_identity(&session);
                let open = Rc::new((session, identity));
                env.caches.sessions.put(sealed.into(), open.clone(), env.now_ms + SESSION_CACHE_MS, env.now_ms);
                Some(open)
            })
            .filter(|open| open.0.alive(&s.timeouts, now));
        if login::is_logout(plan, req.method.unwrap_or("GET"), path) {
            return Some(self.logout(env, opened.map(|open| open.0.clone())));
        }
        if plan.has(AuthMethod::AuthorizationCode) {
            if let Some(cb) = login::callback(plan, path) {
                self.method = Method::Auth(AuthMethod::AuthorizationCode);
                let pending = credentials::cookies(cookie)
                    .find(|(k, _)| *k == s.authorization_cookie_name)
                    .and_then(|(_, v)| s.sealer.open(&s.authorization_cookie_name, v))
                    .and_then(|b| serde_json::from_slice::<Pending>(&b).ok())
                    .filter(|p| now.saturating_sub(p.iat) <= s.authorization_ttl);
                return Some(match login::check_callback(&cb, pending, &plan.issuer) {
                    Ok((code, pending)) => {
                        let grant = Grant::AuthorizationCode { code, verifier: pending.verifier.clone() };
                        self.run(env, Op::Code { grant, pending })
                    }
                    Err(e) => self.respond_error(env, e, false),
                });
            }
        }
        let opened = opened?;
        let (session, identity) = (&opened.0, &opened.1);
        self.presented = Some(Presented::Session);
        self.method = Method::Auth(AuthMethod::Session);
        let expired = session.exp != 0 && session.exp <= now.saturating_add(plan.leeway.max(1));
        if !expired {
            let renew = session.due_for_renewal(&s.timeouts, now);
            let cookies = if renew { self.session_cookies(env, &Session { ren: now, ..session.clone() }) } else { Vec::new() };
            return Some(self.finish_with(plan, identity, None, cookies));
        }
        if plan.refresh_tokens && session.rt.is_some() {
            return Some(self.run(env, Op::Refresh(session.clone())));
        }
        // Expired without a way to refresh: a new login (or other credentials).
        self.presented = None;
        None
    }

    /// The IdP's metadata or keys changed while this request waited.
    pub fn idp_ready(&mut self, env: &mut Env<'_>) -> Step {
        match std::mem::take(&mut self.state) {
            State::Waiting(op) => self.run(env, op),
            other => self.unexpected(other, "unexpected IdP readiness event"),
        }
    }

    /// The wait ended without what was needed (after `timeout`, or a key re-fetch that is
    /// not allowed now).
    pub fn timed_out(&mut self) -> Step {
        match std::mem::take(&mut self.state) {
            State::Waiting(Op::Jwt { .. }) => self.deny(Error::InvalidToken(JwtError::UnknownKey.describe())),
            _ => self.deny(Error::DiscoveryUnavailable),
        }
    }

    /// The IdP answered the call from the last [`Step::Call`].
    pub fn idp_answered(&mut self, env: &mut Env<'_>, resp: &IdpResponse) -> Step {
        let plan = env.plan;
        let op = match std::mem::take(&mut self.state) {
            State::Calling(op) => op,
            other => return self.unexpected(other, "unexpected IdP answer"),
        };
        match op {
            Op::Code { grant, pending } => self.code_answered(env, &grant, &pending, resp),
            Op::Refresh(old) => {
                let grant = Grant::RefreshToken(old.rt.clone().unwrap_or_default());
                match grants::parse_token_response(&grant, plan.token_auth, resp, plan.timeout_ms) {
                    Ok(tokens) => {
                        let now = env.now();
                        let session = Session {
                            at: tokens.access_token.clone(),
                            rt: tokens.refresh_token.clone().or(old.rt),
                            idt: tokens.id_token.clone().or(old.idt),
                            exp: tokens.expires_in.map(|e| now.saturating_add(e)).unwrap_or(0),
                            ren: now,
                            ..old
                        };
                        let cookies = self.session_cookies(env, &session);
                        self.finish_with(plan, &session_identity(&session), None, cookies)
                    }
                    Err(Error::InvalidToken(_) | Error::InvalidCredentials) => {
                        // The refresh token is gone: log in again (browser) or 401.
                        let clear = self.clear_session_cookies(env);
                        self.presented = None;
                        self.login_or_deny(env, clear)
                    }
                    Err(e) => self.deny(e),
                }
            }
            Op::Revoke { mut queue, id_token } => {
                if let Err(e) = revocation_result(plan, resp) {
                    return self.respond_error(env, e, true);
                }
                queue.remove(0);
                self.revoke_next(env, queue, id_token)
            }
            Op::Login => self.deny(Error::Internal("unexpected IdP answer")),
            Op::Introspect => match introspection::parse(plan, resp) {
                Ok(claims) => {
                    let claims = Rc::new(claims);
                    if plan.cache_introspection {
                        if let Some(exp) = claims.get("exp").and_then(|e| e.as_u64()) {
                            let key = self.token.as_str().into();
                            env.caches.introspections.put(key, claims.clone(), exp.saturating_mul(1000), env.now_ms);
                        }
                    }
                    self.finish(plan, introspected(&self.token, claims), None)
                }
                Err(e) => self.deny(e),
            },
            Op::Userinfo => match introspection::parse_userinfo(plan, resp) {
                Ok(info) => {
                    let info = Rc::new(info);
                    let identity = Identity {
                        access_token: self.token.clone(),
                        claims: info.clone(),
                        user_info: Some(info),
                        ..Default::default()
                    };
                    self.finish(plan, identity, None)
                }
                Err(e) => self.deny(e),
            },
            Op::Grant(grant) => match grants::parse_token_response(&grant, grant.auth(plan), resp, plan.timeout_ms) {
                Ok(tokens) => {
                    let claims = jwt::unverified_claims(&tokens.access_token).unwrap_or_else(|| {
                        let mut c = Claims::new();
                        if let Some(s) = &tokens.scope {
                            c.insert("scope".into(), s.clone().into());
                        }
                        c
                    });
                    let identity = Rc::new(Identity {
                        access_token: tokens.access_token.clone(),
                        id_token: tokens.id_token.clone(),
                        claims: Rc::new(claims),
                        ..Default::default()
                    });
                    if let (true, Some(key), Some(secs)) = (plan.cache_tokens, grant.cache_key(plan), tokens.expires_in) {
                        let exp = env.now_ms.saturating_add(secs.saturating_mul(1000));
                        env.caches.grants.put(key, identity.clone(), exp, env.now_ms);
                    }
                    let rotated = match grant {
                        Grant::RefreshToken(_) => tokens.refresh_token.as_deref(),
                        _ => None,
                    };
                    self.finish(plan, (*identity).clone(), rotated)
                }
                Err(e) => self.deny(e),
            },
            Op::Jwt { .. } => self.deny(Error::Internal("unexpected IdP answer")),
        }
    }

    /// The first credential in Kong's method order, as the operation that checks it.
    fn first_credential(&mut self, plan: &Plan, req: Inputs<'_>) -> Result<Op, Error> {
        if plan.takes_bearer() {
            if let Some((token, source)) = credentials::bearer(&plan.bearer, req.authorization, req.path, req.cookie) {
                let is_jwt = jwt::looks_like_jwt(&token);
                self.original.canonical_bearer_header = source == credentials::Source::Header
                    && req.authorization.and_then(|a| a.strip_prefix("Bearer ")) == Some(token.as_str());
                self.token = token;
                self.presented = Some(Presented::Bearer(source));
                return if plan.has(AuthMethod::Bearer) && is_jwt {
                    Ok(Op::Jwt { refreshed: false })
                } else if plan.has(AuthMethod::Introspection) {
                    Ok(Op::Introspect)
                } else if plan.has(AuthMethod::Userinfo) {
                    Ok(Op::Userinfo)
                } else {
                    Err(Error::InvalidToken(JwtError::Malformed.describe()))
                };
            }
        }
        if plan.has(AuthMethod::RefreshToken) {
            if let Some(rt) = req.refresh_token.map(str::trim).filter(|t| !t.is_empty()) {
                self.presented = Some(Presented::RefreshToken);
                return Ok(Op::Grant(Grant::RefreshToken(rt.to_string())));
            }
        }
        if plan.has(AuthMethod::Password) || plan.has(AuthMethod::ClientCredentials) {
            if let Some(b) = credentials::basic(req.authorization)? {
                self.presented = Some(Presented::Basic);
                return Ok(Op::Grant(if plan.has(AuthMethod::Password) {
                    Grant::Password(b)
                } else {
                    Grant::ClientCredentials(b)
                }));
            }
        }
        Err(Error::MissingCredentials)
    }

    /// Runs `op`: from a cache, by waiting for the IdP, or by calling it.
    fn run(&mut self, env: &mut Env<'_>, op: Op) -> Step {
        let plan = env.plan;
        self.method = match &op {
            Op::Jwt { .. } => Method::Auth(AuthMethod::Bearer),
            Op::Introspect => Method::Auth(AuthMethod::Introspection),
            Op::Userinfo => Method::Auth(AuthMethod::Userinfo),
            Op::Grant(Grant::Password(_)) => Method::Auth(AuthMethod::Password),
            Op::Grant(Grant::ClientCredentials(_)) => Method::Auth(AuthMethod::ClientCredentials),
            Op::Grant(Grant::RefreshToken(_)) => Method::Auth(AuthMethod::RefreshToken),
            Op::Grant(Grant::AuthorizationCode { .. }) | Op::Login | Op::Code { .. } => Method::Auth(AuthMethod::AuthorizationCode),
            Op::Refresh(_) => Method::Auth(AuthMethod::Session),
            Op::Revoke { .. } => Method::Logout,
        };
        match op {
            Op::Jwt { refreshed } => {
                // A cached verification holds only while its key is still published: a key
                // removed from the JWKS (rotated out, compromised) stops its tokens at once.
                if let (Some((claims, kid)), Some(keys)) = (env.caches.jwts.get(self.token.as_str(), env.now_ms), env.keys) {
                    if keys.has_kid(kid) {
                        let identity = Identity { access_token: self.token.clone(), claims: claims.clone(), ..Default::default() };
                        return self.finish(plan, identity, None);
                    }
                }
                let Some(meta) = env.meta else { return self.wait(Op::Jwt { refreshed }) };
                if meta.jwks_uri.is_none() {
                    return self.deny(Error::EndpointMissing("jwks_uri"));
                }
                let Some(keys) = env.keys else { return self.wait(Op::Jwt { refreshed }) };
                match keys.verify(&self.token, &plan.issuer, plan.leeway, env.now_ms / 1000) {
                    Ok(claims) => {
                        let claims = Rc::new(claims);
                        if let (Some(exp), Some(kid)) = (claims.get("exp").and_then(|e| e.as_u64()), jwt::kid(&self.token)) {
                            env.caches.jwts.put(self.token.as_str().into(), (claims.clone(), kid), exp.saturating_mul(1000), env.now_ms);
                        }
                        let identity = Identity { access_token: self.token.clone(), claims, ..Default::default() };
                        self.finish(plan, identity, None)
                    }
                    Err(JwtError::UnknownKey) if !refreshed => {
                        self.state = State::Waiting(Op::Jwt { refreshed: true });
                        Step::RefreshKeys
                    }
                    Err(e) => self.deny(Error::InvalidToken(e.describe())),
                }
            }
            Op::Introspect => {
                if let Some(claims) = env.caches.introspections.get(self.token.as_str(), env.now_ms) {
                    let identity = introspected(&self.token, claims.clone());
                    return self.finish(plan, identity, None);
                }
                let Some(meta) = env.meta else { return self.wait(Op::Introspect) };
                let jti = env.jti();
                let req = introspection::request(plan, meta, &self.token, env.now(), &jti);
                self.call(Op::Introspect, req)
            }
            Op::Userinfo => {
                let Some(meta) = env.meta else { return self.wait(Op::Userinfo) };
                let req = introspection::userinfo_request(plan, meta, &self.token);
                self.call(Op::Userinfo, req)
            }
            Op::Grant(grant) => {
                if plan.cache_tokens {
                    if let Some(identity) = grant.cache_key(plan).and_then(|k| env.caches.grants.get(&k, env.now_ms)) {
                        let identity = (**identity).clone();
                        return self.finish(plan, identity, None);
                    }
                }
                let Some(meta) = env.meta else { return self.wait(Op::Grant(grant)) };
                let jti = env.jti();
                let req = grants::token_request(plan, meta, &grant, env.now(), &jti);
                self.call(Op::Grant(grant), req)
            }
            Op::Login => self.login_or_deny(env, Vec::new()),
            Op::Code { grant, pending } => {
                // The ID token is checked with the JWKS: wait for it before spending the code.
                let (Some(meta), Some(_)) = (env.meta, env.keys) else { return self.wait(Op::Code { grant, pending }) };
                let jti = env.jti();
                match grants::token_request(plan, meta, &grant, env.now(), &jti) {
                    Ok(req) => {
                        self.state = State::Calling(Op::Code { grant, pending });
                        Step::Call(req)
                    }
                    Err(e) => self.respond_error(env, e, false),
                }
            }
            Op::Refresh(session) => {
                let Some(meta) = env.meta else { return self.wait(Op::Refresh(session)) };
                let jti = env.jti();
                let grant = Grant::RefreshToken(session.rt.clone().unwrap_or_default());
                let req = grants::token_request(plan, meta, &grant, env.now(), &jti);
                self.call(Op::Refresh(session), req)
            }
            Op::Revoke { queue, id_token } => self.revoke_next(env, queue, id_token),
        }
    }

    /// Redirects a browser to the IdP (setting the authorization cookie), or answers 401.
    /// `extra` are cookies to send along (clearing a dead session).
    fn login_or_deny(&mut self, env: &mut Env<'_>, mut extra: Vec<(String, String)>) -> Step {
        let plan = env.plan;
        let (Some(s), true, true) = (plan.sessions.as_ref(), plan.has(AuthMethod::AuthorizationCode), self.browser) else {
            let mut reply = Error::MissingCredentials.reply(plan);
            reply.headers.append(&mut extra);
            self.state = State::Done;
            return Step::Respond(reply);
        };
        self.method = Method::Auth(AuthMethod::AuthorizationCode);
        let Some(meta) = env.meta else { return self.wait(Op::Login) };
        let mut random = [0u8; 48];
        (env.random)(&mut random);
        let uri = self.original.path.clone().unwrap_or_else(|| "/".into());
        let pending = Pending::new(&random, &uri, env.now());
        let url = match login::authorize_url(plan, meta, &pending) {
            Ok(u) => u,
            Err(e) => return self.deny(e),
        };
        let sealed = s.sealer.seal(&s.authorization_cookie_name, &serde_json::to_vec(&pending).unwrap_or_default(), nonce(env));
        let mut headers = vec![
            ("location".to_string(), url),
            ("cache-control".to_string(), "no-store".to_string()),
            ("set-cookie".to_string(), s.attrs.render(&s.authorization_cookie_name, &sealed, Some(s.authorization_ttl), self.https)),
        ];
        headers.append(&mut extra);
        self.state = State::Done;
        Step::Respond(Reply { status: 302, headers, body: Vec::new() })
    }

    /// Reads the code exchange: validates the ID token, creates the session, redirects to
    /// the original URL.
    fn code_answered(&mut self, env: &mut Env<'_>, grant: &Grant, pending: &Pending, resp: &IdpResponse) -> Step {
        let plan = env.plan;
        let tokens = match grants::parse_token_response(grant, plan.token_auth, resp, plan.timeout_ms) {
            Ok(t) => t,
            Err(e) => return self.respond_error(env, e, false),
        };
        let Some(id_token) = tokens.id_token.as_deref() else {
            return self.respond_error(env, Error::LoginFailed("the token response has no ID token"), false);
        };
        let Some(keys) = env.keys else {
            return self.respond_error(env, Error::LoginFailed("the identity provider's keys are not loaded"), false);
        };
        let claims = match login::validate_id_token(plan, keys, id_token, &pending.nonce, env.now()) {
            Ok(c) => c,
            Err(e) => return self.respond_error(env, e, false),
        };
        let now = env.now();
        let session = Session {
            sub: claims.get("sub").and_then(|s| s.as_str()).unwrap_or_default().to_string(),
            at: tokens.access_token.clone(),
            rt: tokens.refresh_token.clone(),
            idt: Some(id_token.to_string()),
            exp: tokens.expires_in.map(|e| now.saturating_add(e)).unwrap_or(0),
            iat: now,
            ren: now,
        };
        let mut headers = vec![("location".to_string(), pending.uri.clone()), ("cache-control".to_string(), "no-store".to_string())];
        headers.extend(self.session_cookies(env, &session));
        headers.push(self.clear_authorization_cookie(env));
        self.state = State::Done;
        Step::Respond(Reply { status: 302, headers, body: Vec::new() })
    }

    /// Starts a logout: revocations first (when configured), then cookies and redirect.
    fn logout(&mut self, env: &mut Env<'_>, session: Option<Session>) -> Step {
        self.method = Method::Logout;
        let l = &env.plan.logout;
        let mut queue = Vec::new();
        let mut id_token = None;
        if let Some(s) = session {
            if l.revoke && l.revoke_refresh_token {
                if let Some(rt) = &s.rt {
                    queue.push((rt.clone(), "refresh_token"));
                }
            }
            if l.revoke && l.revoke_access_token {
                queue.push((s.at.clone(), "access_token"));
            }
            id_token = s.idt;
        }
        self.revoke_next(env, queue, id_token)
    }

    fn revoke_next(&mut self, env: &mut Env<'_>, queue: Vec<(String, &'static str)>, id_token: Option<String>) -> Step {
        let plan = env.plan;
        if let Some((token, hint)) = queue.first() {
            let Some(meta) = env.meta else { return self.wait(Op::Revoke { queue, id_token }) };
            let jti = env.jti();
            return match login::revocation_request(plan, meta, token, hint, env.now(), &jti) {
                Ok(req) => {
                    self.state = State::Calling(Op::Revoke { queue, id_token });
                    Step::Call(req)
                }
                Err(e) => self.respond_error(env, e, true),
            };
        }
        let mut headers = self.clear_session_cookies(env);
        headers.push(self.clear_authorization_cookie(env));
        headers.push(("cache-control".into(), "no-store".into()));
        self.state = State::Done;
        match login::after_logout(plan, env.meta, id_token.as_deref()) {
            Some(url) => {
                headers.push(("location".into(), url));
                Step::Respond(Reply { status: 302, headers, body: Vec::new() })
            }
            None => Step::Respond(Reply::json(200, headers, &serde_json::json!({"logged_out": true}))),
        }
    }

    /// An error answer that also expires the authorization cookie (no replay) and, with
    /// `clear_session`, the session.
    fn respond_error(&mut self, env: &mut Env<'_>, e: Error, clear_session: bool) -> Step {
        let mut reply = e.reply(env.plan);
        if env.plan.sessions.is_some() {
            reply.headers.push(self.clear_authorization_cookie(env));
            if clear_session {
                reply.headers.extend(self.clear_session_cookies(env));
            }
        }
        self.state = State::Done;
        Step::Respond(reply)
    }

    /// `Set-Cookie` headers that store `session`, expiring stale chunks.
    fn session_cookies(&self, env: &mut Env<'_>, session: &Session) -> Vec<(String, String)> {
        let Some(s) = env.plan.sessions.as_ref() else { return Vec::new() };
        let sealed = s.sealer.seal(&s.cookie_name, &serde_json::to_vec(session).unwrap_or_default(), nonce(env));
        let parts = session::chunks(&s.cookie_name, &sealed);
        let mut out: Vec<(String, String)> =
            parts.iter().map(|(n, v)| ("set-cookie".to_string(), s.attrs.render(n, v, None, self.https))).collect();
        for i in parts.len() + 1..=self.session_chunks {
            out.push(("set-cookie".into(), s.attrs.render(&session::chunk_name(&s.cookie_name, i), "", Some(0), self.https)));
        }
        out
    }

    fn clear_session_cookies(&self, env: &Env<'_>) -> Vec<(String, String)> {
        let Some(s) = env.plan.sessions.as_ref() else { return Vec::new() };
        (1..=self.session_chunks.max(1))
            .map(|i| ("set-cookie".to_string(), s.attrs.render(&session::chunk_name(&s.cookie_name, i), "", Some(0), self.https)))
            .collect()
    }

    fn clear_authorization_cookie(&self, env: &Env<'_>) -> (String, String) {
        let s = env.plan.sessions.as_ref();
        let name = s.map(|s| s.authorization_cookie_name.as_str()).unwrap_or("authorization");
        let value = s.map(|s| s.attrs.render(name, "", Some(0), self.https)).unwrap_or_default();
        ("set-cookie".to_string(), value)
    }

    fn wait(&mut self, op: Op) -> Step {
        self.state = State::Waiting(op);
        Step::WaitForIdp
    }

    fn call(&mut self, op: Op, req: Result<IdpRequest, Error>) -> Step {
        match req {
            Ok(req) => {
                self.state = State::Calling(op);
                Step::Call(req)
            }
            Err(e) => self.deny(e),
        }
    }

    fn finish(&mut self, plan: &Plan, identity: Identity, new_refresh_token: Option<&str>) -> Step {
        self.finish_with(plan, &identity, new_refresh_token, Vec::new())
    }

    /// Proof of possession, authorization rules, then the upstream headers; `cookies` are
    /// `Set-Cookie` headers for the response.
    fn finish_with(&mut self, plan: &Plan, identity: &Identity, new_refresh_token: Option<&str>, cookies: Vec<(String, String)>) -> Step {
        let presented = self.presented.clone().unwrap_or(Presented::Basic);
        if matches!(presented, Presented::Bearer(_)) {
            if let Err(e) = check_binding(plan.pop, &identity.claims, self.peer_cert_sha256.as_deref()) {
                return self.deny(e);
            }
        }
        if let Some(rule) = claims::first_failed(&plan.rules, &identity.claims) {
            return self.deny(Error::InsufficientScope(rule.name));
        }
        self.state = State::Done;
        let mut fwd = upstream::forward(plan, identity, &presented, &self.original, new_refresh_token);
        fwd.response_set.extend(cookies);
        Step::Forward(fwd)
    }

    fn deny(&mut self, e: Error) -> Step {
        self.state = State::Done;
        Step::Deny(e)
    }

    fn unexpected(&mut self, previous: State, why: &'static str) -> Step {
        self.state = previous;
        Step::Deny(Error::Internal(why))
    }
}

/// A 96-bit nonce for sealing a cookie.
fn nonce(env: &mut Env<'_>) -> [u8; 12] {
    let mut n = [0u8; 12];
    (env.random)(&mut n);
    n
}

/// What a session establishes: its tokens, and the access token's claims when it is a JWT.
fn session_identity(s: &Session) -> Identity {
    let mut claims = jwt::unverified_claims(&s.at).unwrap_or_default();
    claims.entry("sub").or_insert_with(|| s.sub.clone().into());
    Identity { access_token: s.at.clone(), id_token: s.idt.clone(), claims: Rc::new(claims), ..Default::default() }
}

/// RFC 7009: 200 means revoked (or unknown, which is as good).
fn revocation_result(plan: &Plan, resp: &IdpResponse) -> Result<(), Error> {
    match resp.answered(plan.timeout_ms)? {
        200 => Ok(()),
        400 | 401 | 403 => Err(Error::ClientRejected { method: plan.revocation_auth.name() }),
        _ => Err(Error::IdpBadResponse("unexpected status from the revocation endpoint")),
    }
}

fn introspected(token: &str, claims: Rc<Claims>) -> Identity {
    Identity { access_token: token.to_string(), claims: claims.clone(), introspection: Some(claims), ..Default::default() }
}

/// RFC 8705 section 3: the token's `cnf.x5t#S256` must be the thumbprint of the client
/// certificate Envoy verified on this connection.
fn check_binding(pop: Pop, claims: &Claims, peer_sha256_hex: Option<&str>) -> Result<(), Error> {
    let bound = claims.get("cnf").and_then(|c| c.get("x5t#S256")).and_then(|t| t.as_str());
    let bound = match (pop, bound) {
        (Pop::Off, _) | (Pop::Optional, None) => return Ok(()),
        (Pop::Strict, None) => return Err(Error::InvalidToken("the token is not bound to a client certificate")),
        (_, Some(b)) => b,
    };
    let Some(peer) = peer_sha256_hex.and_then(|h| decode_hex(h.trim())) else {
        return Err(Error::InvalidToken("the token is bound to a client certificate that was not presented"));
    };
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(peer);
    if thumbprint != bound.trim_end_matches('=') {
        return Err(Error::InvalidToken("the token is bound to another client certificate"));
    }
    Ok(())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::idp::Purpose;
    use jwt_simple::prelude::{RS256KeyPair, RSAKeyPairLike};

    const BASIC_JOHN: &str = "Basic am9objpkb2U="; // john:doe
    const ISS: &str = "https://idp";

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: {ISS}\nidp_cluster: idp\nclient_id: client-tls-auth\nclient_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n{extra}")
                .as_bytes(),
        )
        .unwrap()
    }

    fn meta(p: &Plan) -> Metadata {
        Metadata::parse(
            p,
            br#"{"issuer":"https://idp","token_endpoint":"https://idp/token","introspection_endpoint":"https://idp/introspect","userinfo_endpoint":"https://idp/me","jwks_uri":"https://idp/jwks"}"#,
        )
        .unwrap()
    }

    struct World {
        plan: Plan,
        meta: Option<Metadata>,
        keys: Option<KeySet>,
        caches: Caches,
        now_ms: u64,
        jtis: u32,
    }

    impl World {
        fn new(extra: &str) -> Self {
            let plan = plan(extra);
            let meta = Some(meta(&plan));
            World { plan, meta, keys: None, caches: Caches::new(100), now_ms: 1_800_000_000_000, jtis: 0 }
        }
        fn with<R>(&mut self, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
            let jtis = &mut self.jtis;
            let mut random = |b: &mut [u8]| {
                *jtis += 1;
                b.fill(*jtis as u8);
            };
            let mut env = Env {
                plan: &self.plan,
                meta: self.meta.as_ref(),
                keys: self.keys.as_ref(),
                caches: &mut self.caches,
                now_ms: self.now_ms,
                random: &mut random,
            };
            f(&mut env)
        }
        fn start(&mut self, flow: &mut Flow, inputs: Inputs<'_>) -> Step {
            self.with(|env| flow.start(env, inputs))
        }
    }

    fn basic(v: &str) -> Inputs<'_> {
        Inputs { authorization: Some(v), ..Default::default() }
    }

    fn ok_token(expires_in: u64) -> IdpResponse {
        IdpResponse {
            status: Some(200),
            body: format!(r#"{{"access_token":"AT","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"RT2","scope":"openid"}}"#).into_bytes(),
            elapsed_ms: 3,
        }
    }

    fn set<'a>(step: &'a Step, name: &str) -> Option<&'a str> {
        match step {
            Step::Forward(f) => f.set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    #[test]
    fn password_grant_then_forward_with_bearer() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        let Step::Call(req) = w.start(&mut flow, basic(BASIC_JOHN)) else { panic!() };
        assert_eq!((req.purpose, req.cluster.as_str()), (Purpose::Token, "idp-mtls"));
        let step = w.with(|env| flow.idp_answered(env, &ok_token(300)));
        assert_eq!(set(&step, "authorization"), Some("Bearer AT"));
        let Step::Forward(f) = step else { panic!() };
        assert!(f.remove.contains(&"authorization".to_string()));
        assert!(f.response_set.is_empty(), "a password grant's refresh token is not handed out");
    }

    #[test]
    fn cached_token_skips_the_idp_until_near_expiry() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        w.start(&mut flow, basic(BASIC_JOHN));
        w.with(|env| flow.idp_answered(env, &ok_token(300)));
        let step = w.start(&mut Flow::new(), basic(BASIC_JOHN));
        assert_eq!(set(&step, "authorization"), Some("Bearer AT"));
        // a wrong password must not hit the cached token
        assert!(matches!(w.start(&mut Flow::new(), basic("Basic am9objpkb2Ux")), Step::Call(_)));
        w.now_ms += 270_000;
        assert!(matches!(w.start(&mut Flow::new(), basic(BASIC_JOHN)), Step::Call(_)));
    }

    #[test]
    fn cache_can_be_turned_off() {
        let mut w = World::new("auth_methods: [password]\ncache_tokens: false\n");
        let mut flow = Flow::new();
        w.start(&mut flow, basic(BASIC_JOHN));
        w.with(|env| flow.idp_answered(env, &ok_token(300)));
        assert!(w.caches.grants.is_empty());
    }

    #[test]
    fn no_credentials_is_401() {
        let mut w = World::new("auth_methods: [password]\n");
        assert_eq!(w.start(&mut Flow::new(), Inputs::default()), Step::Deny(Error::MissingCredentials));
        assert_eq!(w.start(&mut Flow::new(), basic("Bearer x")), Step::Deny(Error::MissingCredentials));
        assert!(matches!(w.start(&mut Flow::new(), basic("Basic @@@")), Step::Deny(Error::MalformedCredentials(_))));
    }

    #[test]
    fn waits_for_the_idp_then_runs() {
        let mut w = World::new("auth_methods: [password]\n");
        let m = w.meta.take();
        let mut flow = Flow::new();
        assert_eq!(w.start(&mut flow, basic(BASIC_JOHN)), Step::WaitForIdp);
        w.meta = m;
        assert!(matches!(w.with(|env| flow.idp_ready(env)), Step::Call(_)));
        let mut other = Flow::new();
        w.meta = None;
        w.start(&mut other, basic(BASIC_JOHN));
        assert_eq!(other.timed_out(), Step::Deny(Error::DiscoveryUnavailable));
    }

    #[test]
    fn idp_failures_become_errors_and_late_answers_are_refused() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        w.start(&mut flow, basic(BASIC_JOHN));
        let step = w.with(|env| {
            flow.idp_answered(env, &IdpResponse { status: Some(401), body: br#"{"error":"invalid_client"}"#.to_vec(), elapsed_ms: 1 })
        });
        assert_eq!(step, Step::Deny(Error::ClientRejected { method: "tls_client_auth" }));
        assert!(matches!(w.with(|env| flow.idp_answered(env, &ok_token(1))), Step::Deny(Error::Internal(_))));
    }

    #[test]
    fn client_credentials_when_only_method() {
        let mut w = World::new("auth_methods: [client_credentials]\n");
        let Step::Call(req) = w.start(&mut Flow::new(), basic(BASIC_JOHN)) else { panic!() };
        assert_eq!(req.cluster, "idp");
    }

    // ---- bearer JWT ----

    fn signer() -> (RS256KeyPair, KeySet) {
        let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("k1");
        let c = kp.public_key().to_components();
        let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k1", "n": b(&c.n), "e": b(&c.e)}]});
        let set = KeySet::parse(jwks.to_string().as_bytes()).unwrap();
        (kp, set)
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
    fn keeps_client_authorization(step: &Step) -> bool {
        matches!(step, Step::Forward(f) if !f.remove.iter().any(|h| h == "authorization") && set(step, "authorization").is_none())
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[test]
    fn bearer_jwt_is_verified_cached_and_forwarded() {
        let mut w = World::new("auth_methods: [bearer]\nscopes_required: ['api:read']\n");
        let (kp, keys) = signer();
        let t = token(&kp, w.now_ms, serde_json::json!({"scope": "openid api:read"}));
        let auth = bearer(&t);
        // keys not loaded yet: wait
        let mut flow = Flow::new();
        assert_eq!(w.start(&mut flow, basic(&auth)), Step::WaitForIdp);
        w.keys = Some(keys);
        let step = w.with(|env| flow.idp_ready(env));
        assert!(keeps_client_authorization(&step), "{step:?}");
        assert_eq!(w.caches.jwts.len(), 1);
        // from the cache while the key is published; not once it is gone
        let step = w.start(&mut Flow::new(), basic(&auth));
        assert!(keeps_client_authorization(&step), "{step:?}");
        w.keys = Some(KeySet::parse(br#"{"keys":[]}"#).unwrap());
        assert_eq!(w.start(&mut Flow::new(), basic(&auth)), Step::RefreshKeys);
    }

    #[test]
    fn bearer_rules_and_bad_tokens() {
        let mut w = World::new("auth_methods: [bearer]\nscopes_required: ['api:write']\n");
        let (kp, keys) = signer();
        w.keys = Some(keys);
        let t = token(&kp, w.now_ms, serde_json::json!({"scope": "api:read"}));
        assert_eq!(w.start(&mut Flow::new(), basic(&bearer(&t))), Step::Deny(Error::InsufficientScope("scopes_required")));
        assert!(matches!(w.start(&mut Flow::new(), basic("Bearer opaque")), Step::Deny(Error::InvalidToken(_))));
        let mut expired = World::new("auth_methods: [bearer]\n");
        expired.keys = w.keys.take();
        expired.now_ms += 400_000;
        assert!(matches!(expired.start(&mut Flow::new(), basic(&bearer(&t))), Step::Deny(Error::InvalidToken(_))));
    }

    #[test]
    fn unknown_kid_refreshes_keys_once() {
        let mut w = World::new("auth_methods: [bearer]\n");
        let (_, keys) = signer();
        w.keys = Some(keys);
        let (other, other_keys) = {
            let kp = RS256KeyPair::generate(2048).unwrap().with_key_id("k2");
            let c = kp.public_key().to_components();
            let b = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
            let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k2", "n": b(&c.n), "e": b(&c.e)}]});
            (kp, KeySet::parse(jwks.to_string().as_bytes()).unwrap())
        };
        let t = token(&other, w.now_ms, serde_json::json!({}));
        let mut flow = Flow::new();
        assert_eq!(w.start(&mut flow, basic(&bearer(&t))), Step::RefreshKeys);
        // refreshed, now known
        w.keys = Some(other_keys);
        assert!(matches!(w.with(|env| flow.idp_ready(env)), Step::Forward(_)));
        // still unknown after a refresh: 401, no loop
        w.caches = Caches::new(100);
        let (_, keys) = signer();
        w.keys = Some(keys);
        let mut flow = Flow::new();
        assert_eq!(w.start(&mut flow, basic(&bearer(&t))), Step::RefreshKeys);
        assert!(matches!(w.with(|env| flow.idp_ready(env)), Step::Deny(Error::InvalidToken(_))));
        // refresh not allowed now (throttled): 401
        let mut flow = Flow::new();
        assert_eq!(w.start(&mut flow, basic(&bearer(&t))), Step::RefreshKeys);
        assert!(matches!(flow.timed_out(), Step::Deny(Error::InvalidToken(_))));
    }

    // ---- introspection, userinfo, refresh ----

    #[test]
    fn introspection_then_cache() {
        let mut w = World::new("auth_methods: [introspection]\nupstream_introspection_header: x-introspection\n");
        let mut flow = Flow::new();
        let Step::Call(req) = w.start(&mut flow, basic("Bearer opaque-1")) else { panic!() };
        assert_eq!((req.purpose, req.cluster.as_str()), (Purpose::Introspection, "idp-mtls"));
        let exp = w.now_ms / 1000 + 600;
        let resp = IdpResponse { status: Some(200), body: format!(r#"{{"active":true,"sub":"john","exp":{exp}}}"#).into_bytes(), elapsed_ms: 1 };
        let step = w.with(|env| flow.idp_answered(env, &resp));
        assert!(keeps_client_authorization(&step), "{step:?}");
        assert!(set(&step, "x-introspection").is_some());
        assert!(matches!(w.start(&mut Flow::new(), basic("Bearer opaque-1")), Step::Forward(_)));
        assert!(matches!(w.start(&mut Flow::new(), basic("Bearer opaque-2")), Step::Call(_)));
    }

    #[test]
    fn jwt_goes_to_introspection_when_bearer_is_not_configured() {
        let mut w = World::new("auth_methods: [introspection]\n");
        let (kp, _) = signer();
        let t = token(&kp, w.now_ms, serde_json::json!({}));
        assert!(matches!(w.start(&mut Flow::new(), basic(&bearer(&t))), Step::Call(_)));
    }

    #[test]
    fn userinfo_accepts_the_token() {
        let mut w = World::new("auth_methods: [userinfo]\nupstream_user_info_header: x-userinfo\n");
        let mut flow = Flow::new();
        let Step::Call(req) = w.start(&mut flow, basic("Bearer opaque")) else { panic!() };
        assert_eq!(req.purpose, Purpose::Userinfo);
        let resp = IdpResponse { status: Some(200), body: br#"{"sub":"john"}"#.to_vec(), elapsed_ms: 1 };
        assert!(set(&w.with(|env| flow.idp_answered(env, &resp)), "x-userinfo").is_some());
    }

    #[test]
    fn refresh_token_method_rotates() {
        let mut w = World::new("auth_methods: [refresh_token, password]\n");
        let mut flow = Flow::new();
        let inputs = Inputs { refresh_token: Some("RT1"), authorization: Some(BASIC_JOHN), ..Default::default() };
        let Step::Call(req) = w.start(&mut flow, inputs) else { panic!() };
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        assert!(form.contains(&("grant_type".into(), "refresh_token".into())));
        assert_eq!(req.cluster, "idp-mtls");
        let Step::Forward(f) = w.with(|env| flow.idp_answered(env, &ok_token(60))) else { panic!() };
        assert_eq!(f.response_set, vec![("x-refresh-token".into(), "RT2".into())]);
        assert!(f.remove.contains(&"x-refresh-token".to_string()));
        assert!(w.caches.grants.is_empty(), "refresh results are not cached");
    }

    // ---- proof of possession ----

    #[test]
    fn certificate_binding() {
        let digest = "aa".repeat(32);
        let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xaa; 32]);
        let bound: Claims = serde_json::json!({"cnf": {"x5t#S256": thumb}}).as_object().unwrap().clone();
        let unbound = Claims::new();
        assert!(check_binding(Pop::Strict, &bound, Some(&digest)).is_ok());
        assert!(check_binding(Pop::Strict, &bound, Some(&"bb".repeat(32))).is_err());
        assert!(check_binding(Pop::Strict, &bound, None).is_err());
        assert!(check_binding(Pop::Strict, &unbound, Some(&digest)).is_err());
        assert!(check_binding(Pop::Optional, &unbound, None).is_ok());
        assert!(check_binding(Pop::Optional, &bound, None).is_err());
        assert!(check_binding(Pop::Off, &bound, None).is_ok());
        assert!(check_binding(Pop::Strict, &bound, Some("zz")).is_err());
    }

    // ---- browser login, sessions, logout ----

    const WEB: &str = "auth_methods: [authorization_code, session, bearer]\nsession_secret: 0123456789abcdef0123\nredirect_uri: http://127.0.0.1:8000/callback\nlogout_uri_suffix: /logout\nlogout_revoke: true\nlogout_redirect_uri: http://127.0.0.1:8000/bye\n";

    fn web_world() -> (World, RS256KeyPair) {
        let mut w = World::new(WEB);
        w.meta = Some(
            Metadata::parse(
                &w.plan,
                br#"{"issuer":"https://idp","authorization_endpoint":"https://idp/auth","token_endpoint":"https://idp/token","revocation_endpoint":"https://idp/revoke","end_session_endpoint":"https://idp/end","jwks_uri":"https://idp/jwks"}"#,
            )
            .unwrap(),
        );
        let (kp, keys) = signer();
        w.keys = Some(keys);
        (w, kp)
    }

    fn browser<'a>(path: &'a str, cookie: Option<&'a str>) -> Inputs<'a> {
        Inputs { path: Some(path), cookie, method: Some("GET"), accept: Some("text/html"), ..Default::default() }
    }

    fn reply(step: Step) -> Reply {
        match step {
            Step::Respond(r) => r,
            other => panic!("expected a local reply, got {other:?}"),
        }
    }

    fn header<'a>(r: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        r.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// `name=value` pairs of Set-Cookie headers, as a Cookie header.
    fn jar(headers: &[(String, String)]) -> String {
        header(headers, "set-cookie")
            .iter()
            .map(|c| c.split(';').next().unwrap())
            .filter(|c| !c.ends_with('='))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn id_token(kp: &RS256KeyPair, now_ms: u64, nonce: &str) -> String {
        let mut c = jwt_simple::prelude::Claims::with_custom_claims(
            serde_json::json!({"sub": "john"}),
            jwt_simple::prelude::Duration::from_secs(300),
        );
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
        let r = reply(w.start(&mut Flow::new(), browser("/app?x=1", None)));
        assert_eq!(r.status, 302);
        let location = header(&r.headers, "location")[0].to_string();
        let q: std::collections::HashMap<String, String> =
            form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes()).into_owned().collect();
        let auth_cookie = jar(&r.headers);
        let callback = format!("/callback?code=CODE&state={}", q["state"]);
        let mut flow = Flow::new();
        let Step::Call(req) = w.start(&mut flow, browser(&callback, Some(&auth_cookie))) else { panic!() };
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        assert!(form.contains(&("code_verifier".into(), form.iter().find(|(k, _)| k == "code_verifier").unwrap().1.clone())));
        assert_eq!(req.cluster, "idp-mtls");
        let body = serde_json::json!({"access_token": "AT1", "token_type": "Bearer", "expires_in": expires_in, "refresh_token": "RT1", "id_token": id_token(kp, w.now_ms, &q["nonce"])});
        let resp = IdpResponse { status: Some(200), body: body.to_string().into_bytes(), elapsed_ms: 1 };
        let r = reply(w.with(|env| flow.idp_answered(env, &resp)));
        assert_eq!(r.status, 302, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(header(&r.headers, "location"), vec!["/app?x=1"]);
        assert!(header(&r.headers, "set-cookie").iter().any(|c| c.starts_with("authorization=;") && c.contains("Max-Age=0")));
        jar(&r.headers)
    }

    #[test]
    fn browser_login_creates_a_session_used_by_later_requests() {
        let (mut w, kp) = web_world();
        let cookies = log_in(&mut w, &kp);
        let with_other = format!("{cookies}; theme=dark");
        let step = w.start(&mut Flow::new(), browser("/app", Some(&with_other)));
        assert_eq!(set(&step, "authorization"), Some("Bearer AT1"));
        assert_eq!(set(&step, "cookie"), Some("theme=dark"), "the filter's cookies do not go upstream");
    }

    #[test]
    fn api_clients_get_401_and_bad_callbacks_never_loop() {
        let (mut w, _) = web_world();
        let api = Inputs { path: Some("/"), method: Some("GET"), accept: Some("application/json"), ..Default::default() };
        assert_eq!(reply(w.start(&mut Flow::new(), api)).status, 401);
        // callback without the authorization cookie
        let r = reply(w.start(&mut Flow::new(), browser("/callback?code=c&state=s", None)));
        assert_eq!(r.status, 401);
        assert!(String::from_utf8_lossy(&r.body).contains("login_failed"));
        // wrong state
        let first = reply(w.start(&mut Flow::new(), browser("/", None)));
        let r = reply(w.start(&mut Flow::new(), browser("/callback?code=c&state=nope", Some(&jar(&first.headers)))));
        assert_eq!(r.status, 401);
        assert!(header(&r.headers, "location").is_empty());
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
        assert_eq!(reply(w.start(&mut Flow::new(), browser("/", Some(&tampered)))).status, 302);
        let truncated = format!("session={}", &value[..value.len() - 10]);
        assert_eq!(reply(w.start(&mut Flow::new(), browser("/", Some(&truncated)))).status, 302);
        let mut other = World::new(&WEB.replace("0123456789abcdef0123", "another-secret-0123456789"));
        other.meta = w.meta.clone();
        assert_eq!(reply(other.start(&mut Flow::new(), browser("/", Some(&cookies)))).status, 302);
        // idle for longer than session_idling_timeout (900 s)
        w.now_ms += 901_000;
        let r = reply(w.start(&mut Flow::new(), browser("/", Some(&cookies))));
        assert_eq!(r.status, 302);
        // the dead cookie is expired in the same redirect
        assert!(header(&r.headers, "set-cookie").iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
        let fresh = reply(w.start(&mut Flow::new(), browser("/", None)));
        assert!(!header(&fresh.headers, "set-cookie").iter().any(|c| c.starts_with("session=")));
    }

    #[test]
    fn an_expires_in_near_u64_max_does_not_overflow() {
        // Caught by fuzz/ (corpus/idp_responses/expires_in_max_code, _refresh): `now +
        // expires_in` overflowed (a panic in debug builds, a session expired at once in release).
        let (mut w, kp) = web_world();
        let cookies = log_in_for(&mut w, &kp, u64::MAX);
        w.now_ms += 800_000;
        assert_eq!(set(&w.start(&mut Flow::new(), browser("/", Some(&cookies))), "authorization"), Some("Bearer AT1"));
        let cookies = log_in(&mut w, &kp);
        w.now_ms += 120_000;
        let mut flow = Flow::new();
        let Step::Call(_) = w.start(&mut flow, browser("/", Some(&cookies))) else { panic!() };
        let resp = IdpResponse { status: Some(200), body: format!(r#"{{"access_token":"AT2","expires_in":{}}}"#, u64::MAX).into_bytes(), elapsed_ms: 1 };
        let Step::Forward(f) = w.with(|env| flow.idp_answered(env, &resp)) else { panic!() };
        w.now_ms += 800_000;
        assert_eq!(set(&w.start(&mut Flow::new(), browser("/", Some(&jar(&f.response_set)))), "authorization"), Some("Bearer AT2"));
    }

    #[test]
    fn expired_access_token_is_refreshed_and_the_session_rewritten() {
        let (mut w, kp) = web_world();
        let cookies = log_in(&mut w, &kp);
        w.now_ms += 120_000;
        let mut flow = Flow::new();
        let Step::Call(req) = w.start(&mut flow, browser("/", Some(&cookies))) else { panic!() };
        let form: Vec<(String, String)> = form_urlencoded::parse(&req.body).into_owned().collect();
        assert!(form.contains(&("refresh_token".into(), "RT1".into())));
        let resp = IdpResponse { status: Some(200), body: br#"{"access_token":"AT2","token_type":"Bearer","expires_in":60,"refresh_token":"RT2"}"#.to_vec(), elapsed_ms: 1 };
        let step = w.with(|env| flow.idp_answered(env, &resp));
        assert_eq!(set(&step, "authorization"), Some("Bearer AT2"));
        let Step::Forward(f) = step else { panic!() };
        let renewed = jar(&f.response_set);
        assert!(renewed.starts_with("session="));
        assert_eq!(set(&w.start(&mut Flow::new(), browser("/", Some(&renewed))), "authorization"), Some("Bearer AT2"));
        // a failed refresh sends the browser to log in again
        w.now_ms += 120_000;
        let mut flow = Flow::new();
        w.start(&mut flow, browser("/", Some(&renewed)));
        let bad = IdpResponse { status: Some(400), body: br#"{"error":"invalid_grant"}"#.to_vec(), elapsed_ms: 1 };
        assert_eq!(reply(w.with(|env| flow.idp_answered(env, &bad))).status, 302);
    }

    #[test]
    fn logout_revokes_both_tokens_then_ends_the_session_at_the_idp() {
        let (mut w, kp) = web_world();
        let cookies = log_in(&mut w, &kp);
        let mut flow = Flow::new();
        let logout = Inputs { method: Some("POST"), ..browser("/logout", Some(&cookies)) };
        let Step::Call(first) = w.start(&mut flow, logout) else { panic!() };
        assert_eq!((first.purpose, first.cluster.as_str()), (Purpose::Revocation, "idp-mtls"));
        assert!(String::from_utf8_lossy(&first.body).contains("token_type_hint=refresh_token"));
        let ok = IdpResponse { status: Some(200), body: Vec::new(), elapsed_ms: 1 };
        let Step::Call(second) = w.with(|env| flow.idp_answered(env, &ok)) else { panic!() };
        assert!(String::from_utf8_lossy(&second.body).contains("token_type_hint=access_token"));
        let r = reply(w.with(|env| flow.idp_answered(env, &ok)));
        assert_eq!(r.status, 302);
        assert!(header(&r.headers, "location")[0].starts_with("https://idp/end?id_token_hint="));
        assert!(header(&r.headers, "set-cookie").iter().any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
        // a revocation the IdP refuses is a clear error, and the cookies still go
        let mut flow = Flow::new();
        w.start(&mut flow, Inputs { method: Some("DELETE"), ..browser("/logout", Some(&cookies)) });
        let refused = IdpResponse { status: Some(401), body: br#"{"error":"invalid_client"}"#.to_vec(), elapsed_ms: 1 };
        let r = reply(w.with(|env| flow.idp_answered(env, &refused)));
        assert_eq!(r.status, 401);
        assert!(String::from_utf8_lossy(&r.body).contains("invalid_client"));
        assert!(header(&r.headers, "set-cookie").iter().any(|c| c.starts_with("session=;")));
        // GET is not a logout by default
        assert!(matches!(w.start(&mut Flow::new(), browser("/logout", Some(&cookies))), Step::Forward(_)));
    }
}
