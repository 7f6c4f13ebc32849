//! The decision for one client request, as a sans-IO state machine with one type per state.
//!
//! The adapter owns a [`Request`] per HTTP context. It feeds in the request's headers
//! ([`Request::start`]) and the answers to the request's own IdP calls
//! ([`Request::handle_answer`]), each with a [`Cx`] lent for that event, and carries out the
//! [`Next`] that comes back. There is no "wait" in [`Next`]: a request that needs the IdP's
//! documents, a token or an introspection makes its own call and decides when that call is
//! answered, so no other context ever resumes or answers it, and it is never held with
//! nothing of its own in flight (a host may then let it through).
//!
//! Auth methods are tried in Kong's order; the first credential found decides. The handlers
//! live beside this file, one per concern: [`bearer`] (JWTs, introspection, userinfo),
//! [`grants`] (password, client credentials, refresh tokens), [`login`] (the browser's
//! authorization code flow), [`session`] (session cookies) and [`logout`].

/// The discovery document, or return the request's own fetch of it; `$then` (evaluated
/// only then) is what the request does once it is there.
macro_rules! metadata {
    ($self:ident, $cx:ident, $then:expr) => {
        match $cx.docs.metadata($cx.store, $cx.now_ms) {
            crate::core::docs::Need::Ready(m) => m,
            need => return $self.await_discovery($cx, need, $then),
        }
    };
}

/// The documents of issuer `$i` of the plan (the policy's own, or another's), if any.
macro_rules! docs_at {
    ($cx:ident, $i:expr) => {
        $cx.others.get(&mut *$cx.docs, $i)
    };
}

mod bearer;
mod grants;
mod login;
mod logout;
mod session;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::rc::Rc;

use crate::core::cache::{self, Cache};
use crate::core::challenge;
use crate::core::claims::{self, Claims};
use crate::core::config::{Policy, PolicyId};
use crate::core::discovery::Metadata;
use crate::core::docs::store::Store;
use crate::core::docs::{Docs, Fetch, Need, OtherDocs};
use crate::core::error::Error;
use crate::core::header::Headers;
use crate::core::idp::{IdpCall, IdpResponse, Purpose};
use crate::core::log::{Level, Log};
use crate::core::method::AuthMethod;
use crate::core::metrics::{Method, Metrics, Outcome};
use crate::core::oauth::authorize::Pending;
use crate::core::oauth::token::Grant;
use crate::core::pop;
use crate::core::reply::{Forward, Reply};
use crate::core::session::Session;
use crate::core::upstream::{self, Identity, Original, Presented};

/// What the adapter must do next. Every event of a request ends in one of these.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Let the request go upstream with these header changes.
    Forward(Forward),
    /// Answer the client locally (errors, login and logout redirects).
    Answer(Reply),
    /// Send this call for the request, then hand the answer to [`Request::handle_answer`].
    Call(IdpCall),
}

/// The request as the core reads it. The adapter answers from host calls (or from all the
/// headers read at once, see [`Policy::reads_many_headers`]).
pub trait RequestView {
    /// A request header by lowercase name (several values come joined with `,`).
    fn header(&self, name: &str) -> Option<Cow<'_, str>>;
    /// The lowercase hex SHA-256 of the client certificate the host verified, asked only
    /// when `proof_of_possession_mtls` is on.
    fn peer_certificate_sha256(&self) -> Option<String>;
    /// The policy the route's metadata names, for hosts that read the metadata value
    /// themselves (Envoy's dynamic modules); asked only when the plan has named policies.
    fn route_policy(&self) -> Option<String> {
        None
    }
    /// The route's metadata (a serialized `envoy.config.core.v3.Metadata`), when
    /// [`RequestView::route_policy`] has nothing; asked only when the plan has named policies.
    fn route_metadata(&self) -> Option<Vec<u8>> {
        None
    }
    /// The route's name, asked only when `route_policies` is set and the metadata named no
    /// policy.
    fn route_name(&self) -> Option<String> {
        None
    }
}

/// The request data as plain fields (tests, fuzzing, hosts that read everything anyway).
#[derive(Debug, Default, Clone, Copy)]
pub struct Inputs<'a> {
    pub authorization: Option<&'a str>,
    pub path: Option<&'a str>,
    pub cookie: Option<&'a str>,
    /// The `refresh_token_param_name` header.
    pub refresh_token: Option<&'a str>,
    pub peer_cert_sha256: Option<&'a str>,
    pub method: Option<&'a str>,
    pub accept: Option<&'a str>,
    pub x_requested_with: Option<&'a str>,
    /// `x-forwarded-proto` (or `:scheme`).
    pub scheme: Option<&'a str>,
}

impl RequestView for Inputs<'_> {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        let v = match name {
            "authorization" => self.authorization,
            ":path" => self.path,
            "cookie" => self.cookie,
            ":method" => self.method,
            "accept" => self.accept,
            "x-requested-with" => self.x_requested_with,
            "x-forwarded-proto" => self.scheme,
            _ => self.refresh_token,
        };
        v.map(Cow::Borrowed)
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        self.peer_cert_sha256.map(str::to_string)
    }
}

/// Per-worker caches.
pub struct Caches {
    /// Password / client credentials grant results, by [`cache::key`].
    pub grants: Cache<cache::Key, Rc<Identity>>,
    /// Claims of verified JWT access tokens, with the `kid` that signed them and the key set
    /// (index in the plan's issuers) that has it, by token.
    pub jwts: Cache<Box<str>, (Rc<Claims>, String, usize)>,
    /// Introspection answers for active tokens, by token.
    pub introspections: Cache<Box<str>, Rc<Claims>>,
    /// Opened session cookies, by sealed value: AES-GCM runs once per cookie, not per
    /// request (timeouts are still checked on every use).
    pub sessions: Cache<Box<str>, Rc<(Session, Identity)>>,
}

impl Caches {
    pub fn new(capacity: usize) -> Self {
        Caches {
            grants: Cache::new(capacity),
            jwts: Cache::new(capacity),
            introspections: Cache::new(capacity),
            sessions: Cache::new(capacity / 4),
        }
    }

    /// Hits and misses since the last call, in [`crate::core::metrics::CACHES`] order.
    pub fn take_counts(&self) -> [(u64, u64); 4] {
        [self.grants.take_counts(), self.jwts.take_counts(), self.introspections.take_counts(), self.sessions.take_counts()]
    }
}

/// Everything outside the request that one event needs, lent for that event.
pub struct Cx<'a> {
    pub policy: &'a Policy,
    /// Which of the plan's policies `policy` is (for its metrics).
    pub policy_id: PolicyId,
    /// The documents of the policy's issuer.
    pub docs: &'a mut Docs,
    /// The other issuers' (bearer tokens of `issuers_allowed`, `extra_jwks_uris`).
    pub others: OtherDocs<'a>,
    pub store: &'a mut dyn Store,
    pub caches: &'a mut Caches,
    pub metrics: &'a mut Metrics,
    pub log: &'a mut Log,
    pub now_ms: u64,
    /// Fills a buffer with random bytes (assertion ids, login state, cookie nonces).
    pub random: &'a mut dyn FnMut(&mut [u8]),
}

impl Cx<'_> {
    fn now(&self) -> u64 {
        self.now_ms / 1000
    }

    /// A fresh unique id for client assertions.
    fn jti(&mut self) -> String {
        let mut b = [0u8; 16];
        (self.random)(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A 96-bit nonce for sealing a cookie.
    fn nonce(&mut self) -> [u8; 12] {
        let mut n = [0u8; 12];
        (self.random)(&mut n);
        n
    }
}

/// What the request waits for; one type per awaited answer.
#[derive(Debug, Default)]
enum State {
    #[default]
    New,
    /// Its own discovery fetch, then `then`.
    Discovery {
        fetch: Fetch,
        then: Then,
    },
    /// Its own fetch of a key set (or, for another issuer, of its discovery first).
    Jwks {
        fetch: Fetch,
        then: KeysFor,
    },
    Introspection,
    Userinfo,
    /// A password, client credentials or refresh token grant.
    Token(Grant),
    /// The callback's code exchange.
    Code(Code),
    /// Refreshing a session whose access token expired.
    Refresh(Session),
    /// Revoking tokens one by one before a logout ends.
    Revoking(Revoking),
    /// Answered or forwarded: a late event does nothing.
    Done,
}

/// What a request does once the discovery document is there.
#[derive(Debug)]
enum Then {
    Bearer,
    Introspect,
    Userinfo,
    Grant(Grant),
    /// Redirect a browser to the IdP (`clear`: cookies of a dead session to expire).
    Login {
        clear: Headers,
    },
    Code(Code),
    Refresh(Session),
    Revoke(Revoking),
}

/// What a request does once the key set is there.
#[derive(Debug)]
enum KeysFor {
    /// Loading key set `.0` of the bearer token's issuer ([`crate::core::config::Trusted::docs`]).
    Load(usize),
    /// Re-fetching key set `.0`: none of them had the token's key.
    Refetch(usize),
    Code(Code),
}

/// An authorization code to exchange, and the login it belongs to.
#[derive(Debug)]
struct Code {
    grant: Grant,
    pending: Pending,
}

/// Tokens left to revoke (token, type hint), and the ID token for the IdP's logout.
#[derive(Debug)]
struct Revoking {
    queue: Vec<(String, &'static str)>,
    id_token: Option<String>,
}

/// The call in flight, for its metrics and log line.
#[derive(Debug)]
struct Inflight {
    purpose: Purpose,
    cluster: String,
    what: String,
}

/// One request's progress.
#[derive(Debug, Default)]
pub struct Request {
    state: State,
    /// The policy that decides it (chosen from its route when it starts).
    policy: PolicyId,
    inflight: Option<Inflight>,
    /// The bearer token (or refresh token) the client presented.
    token: String,
    /// Which of the policy's [`Policy::trusted`] issuers the bearer JWT claims.
    jwt_issuer: usize,
    presented: Option<Presented>,
    original: Original,
    peer_cert_sha256: Option<String>,
    /// Session cookie chunks the client sent (stale ones are expired when writing).
    session_chunks: usize,
    https: bool,
    browser: bool,
    /// Until when it may wait for the IdP's documents.
    deadline_ms: u64,
    /// The auth method deciding the request (for metrics).
    method: Method,
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method` (Kong's
/// test for `run_on_preflight`).
fn is_preflight(req: &dyn RequestView) -> bool {
    req.header(":method").as_deref() == Some("OPTIONS")
        && req.header("origin").is_some()
        && req.header("access-control-request-method").is_some()
}

impl Request {
    pub fn new() -> Self {
        Request::default()
    }

    /// The auth method that decided (or is deciding) the request.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Whether the request has ended (forwarded or answered).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The policy that decides it.
    pub fn policy(&self) -> PolicyId {
        self.policy
    }

    pub(crate) fn set_policy(&mut self, id: PolicyId) {
        self.policy = id;
    }

    /// Ends the request with `reply`, decided outside any policy (its route named none the
    /// filter has).
    pub(crate) fn refuse(&mut self, reply: Reply) -> Next {
        self.state = State::Done;
        Next::Answer(reply)
    }

    /// The request's headers have arrived.
    pub fn start(&mut self, cx: &mut Cx<'_>, req: &dyn RequestView) -> Next {
        let p = cx.policy;
        if !p.run_on_preflight && is_preflight(req) {
            self.state = State::Done;
            // Unauthenticated, so no identity: headers of the filter's names are the client's.
            return Next::Forward(Forward { remove: p.upstream.names().cloned().collect(), ..Forward::default() });
        }
        self.deadline_ms = cx.now_ms.saturating_add(p.timeout_ms);
        let sessions = p.sessions.is_some();
        // A bearer token in the query is looked for only when `Authorization` has none (one
        // host call less on the hot path: each costs microseconds in Wasm).
        let path = (sessions || p.has(AuthMethod::AuthorizationCode)).then(|| req.header(":path")).flatten();
        let cookie = (p.bearer.cookie.is_some() || sessions).then(|| req.header("cookie")).flatten();
        self.original = Original { path: path.map(Cow::into_owned), cookie: cookie.map(Cow::into_owned), canonical_bearer_header: false };
        if p.pop != pop::Pop::Off {
            self.peer_cert_sha256 = req.peer_certificate_sha256().filter(|s| !s.is_empty());
        }
        if sessions {
            let https = req.header("x-forwarded-proto").or_else(|| req.header(":scheme"));
            self.https = https.is_some_and(|s| s.eq_ignore_ascii_case("https"));
            self.browser =
                crate::core::oauth::authorize::is_browser(req.header("accept").as_deref(), req.header("x-requested-with").as_deref());
            let method = req.header(":method");
            if let Some(next) = self.start_browser(cx, method.as_deref().unwrap_or("GET")) {
                return next;
            }
        }
        match self.first_credential(cx, req) {
            Ok(then) => self.run(cx, then),
            Err(Error::MissingCredentials) if p.has(AuthMethod::AuthorizationCode) => {
                // Session cookies that could not be used (expired, timed out, tampered, another
                // secret) are expired in this same answer.
                let clear = if self.session_chunks > 0 { self.clear_session(cx) } else { Vec::new() };
                self.login_or_deny(cx, clear)
            }
            Err(e) => self.deny(cx, e),
        }
    }

    /// The answer to this request's own call. `None` when the request already ended (a
    /// late answer): nothing is to be done.
    pub fn handle_answer(&mut self, cx: &mut Cx<'_>, resp: &IdpResponse) -> Option<Next> {
        if let Some(call) = self.inflight.take() {
            if !matches!(call.purpose, Purpose::Discovery | Purpose::Jwks) {
                cx.metrics.idp_call(call.purpose, resp, cx.policy.timeout_ms);
                if let Some(failure) = resp.failure(cx.policy.timeout_ms) {
                    cx.log.push(Level::Warn, format!("{}: {}", call.what, failure.describe(&call.cluster, cx.policy.timeout_ms)));
                }
            }
        }
        Some(match std::mem::take(&mut self.state) {
            State::New | State::Done => {
                self.state = State::Done;
                return None;
            }
            State::Discovery { fetch, then } => self.discovery_answered(cx, fetch, then, resp),
            State::Jwks { fetch, then } => self.jwks_answered(cx, fetch, then, resp),
            State::Introspection => self.introspection_answered(cx, resp),
            State::Userinfo => self.userinfo_answered(cx, resp),
            State::Token(grant) => self.token_answered(cx, grant, resp),
            State::Code(code) => self.code_answered(cx, code, resp),
            State::Refresh(session) => self.refresh_answered(cx, session, resp),
            State::Revoking(r) => self.revocation_answered(cx, r, resp),
        })
    }

    /// The host refused to send the call this request asked for (no such upstream).
    pub fn call_not_sent(&mut self, cx: &mut Cx<'_>, why: &str) -> Next {
        let what = self.inflight.take().map(|c| c.what).unwrap_or_default();
        cx.log.push(Level::Error, format!("cannot call the IdP ({what}): {why}"));
        self.state = State::Done;
        self.deny(cx, Error::Idp(crate::core::error::IdpFault::NotSent))
    }

    /// Runs the next step, from a cache, by calling the IdP, or by asking for a document.
    fn run(&mut self, cx: &mut Cx<'_>, then: Then) -> Next {
        match then {
            Then::Bearer => self.verify_jwt(cx),
            Then::Introspect => self.introspect(cx),
            Then::Userinfo => self.userinfo(cx),
            Then::Grant(grant) => self.grant(cx, grant),
            Then::Login { clear } => self.login_or_deny(cx, clear),
            Then::Code(code) => self.exchange_code(cx, code),
            Then::Refresh(session) => self.refresh_session(cx, session),
            Then::Revoke(r) => self.revoke_next(cx, r),
        }
    }

    /// Not there yet: the request's own fetch of the discovery document (then `then`), or
    /// `503` when it is not available now. Used through [`metadata!`].
    fn await_discovery(&mut self, cx: &mut Cx<'_>, need: Need<Metadata>, then: Then) -> Next {
        match need {
            Need::Ready(_) => self.run(cx, then),
            Need::Fetch(fetch, call) => {
                let call = self.bounded(cx, call);
                self.state = State::Discovery { fetch, then };
                self.call(call)
            }
            Need::Unavailable => self.deny(cx, Error::DiscoveryUnavailable),
        }
    }

    fn discovery_answered(&mut self, cx: &mut Cx<'_>, fetch: Fetch, then: Then, resp: &IdpResponse) -> Next {
        match cx.docs.offer(cx.store, fetch, resp, cx.now_ms) {
            Ok(()) => self.run(cx, then),
            Err(_) => match then {
                // A browser's login, refresh or logout also needs discovery: same answer.
                Then::Code(_) => self.respond_error(cx, Error::DiscoveryUnavailable, false),
                _ => self.deny(cx, Error::DiscoveryUnavailable),
            },
        }
    }

    /// A document fetch waits at most until the request's deadline.
    fn bounded(&self, cx: &Cx<'_>, mut call: IdpCall) -> IdpCall {
        call.timeout_ms = call.timeout_ms.min(self.deadline_ms.saturating_sub(cx.now_ms).max(1));
        call
    }

    /// Emits `call` (the caller has set the state that awaits it).
    fn call(&mut self, call: IdpCall) -> Next {
        self.inflight = Some(Inflight { purpose: call.purpose, cluster: call.cluster.clone(), what: format!("{call:?}") });
        Next::Call(call)
    }

    /// Emits `call` for `state`, or denies with the error that prevented building it.
    fn call_or_deny(&mut self, cx: &mut Cx<'_>, state: State, call: Result<IdpCall, Error>) -> Next {
        match call {
            Ok(c) => {
                self.state = state;
                self.call(c)
            }
            Err(e) => self.deny(cx, e),
        }
    }

    /// Proof of possession, authorization rules, then the upstream headers; `cookies` are
    /// `Set-Cookie` headers for the response.
    fn finish(&mut self, cx: &mut Cx<'_>, identity: &Identity, new_refresh_token: Option<&str>, cookies: Headers) -> Next {
        let p = cx.policy;
        let presented = self.presented.unwrap_or(Presented::Basic);
        if matches!(presented, Presented::Bearer(_)) {
            if let Err(e) = pop::check(p.pop, &identity.claims, self.peer_cert_sha256.as_deref()) {
                return self.deny(cx, e.into());
            }
        }
        if let Some(rule) = claims::first_failed(&p.rules, &identity.claims) {
            return self.deny(cx, Error::InsufficientScope(rule.name));
        }
        if p.claims_forbidden.iter().any(|c| identity.claims.contains_key(c)) {
            return self.deny(cx, Error::InsufficientScope("claims_forbidden"));
        }
        let own = |name: &str| p.sessions.as_ref().is_some_and(|s| s.is_own(name));
        let mut fwd = upstream::forward(&p.upstream, identity, presented, &self.original, &own, new_refresh_token);
        fwd.response_add.extend(cookies);
        cx.metrics.request_of(cx.policy_id.0, self.method, Outcome::Allowed);
        self.state = State::Done;
        Next::Forward(fwd)
    }

    /// Ends the request with `e` (logged; never with a credential). A `401` or `403` expires
    /// the session the request was authenticated by, as `*_destroy_session` say; not a
    /// cookie that did not open (another policy's session under the same name).
    fn deny(&mut self, cx: &mut Cx<'_>, e: Error) -> Next {
        let destroy = cx.policy.sessions.as_ref().is_some_and(|s| match e.status() {
            401 => s.unauthorized_destroy,
            403 => s.forbidden_destroy,
            _ => false,
        });
        let opened = self.presented == Some(Presented::Session);
        let clear = if destroy && opened && self.session_chunks > 0 { self.clear_session(cx) } else { Vec::new() };
        let reply = challenge::reply_with(&e, &cx.policy.challenge, clear);
        self.answer_error(cx, &e, reply)
    }

    fn answer_error(&mut self, cx: &mut Cx<'_>, e: &Error, reply: Reply) -> Next {
        let level = if e.status() < 500 { Level::Info } else { Level::Warn };
        cx.log.push(level, format!("{} {}: {e}", e.status(), e.code()));
        self.answer(cx, reply)
    }

    /// Ends the request with a local reply.
    fn answer(&mut self, cx: &mut Cx<'_>, reply: Reply) -> Next {
        cx.metrics.request_of(cx.policy_id.0, self.method, Outcome::of_status(reply.status));
        self.state = State::Done;
        Next::Answer(reply)
    }

    /// The first credential in Kong's method order, as the step that checks it.
    fn first_credential(&mut self, cx: &Cx<'_>, req: &dyn RequestView) -> Result<Then, Error> {
        let p = cx.policy;
        let authorization = req.header("authorization");
        if p.methods.takes_bearer() {
            let named = p.bearer.header_name.as_ref().map(|n| req.header(n.as_str()));
            let header = match &named {
                Some(v) => v.as_deref(),
                None => authorization.as_deref(),
            };
            // Kong's order: the header, then the query, then the cookie.
            let mut found = crate::core::credentials::bearer(&p.bearer, header, None, None);
            if found.is_none() {
                if p.bearer.query && self.original.path.is_none() {
                    self.original.path = req.header(":path").map(Cow::into_owned);
                }
                found = crate::core::credentials::bearer(&p.bearer, header, self.original.path.as_deref(), self.original.cookie.as_deref());
            }
            if let Some(found) = found {
                return self.bearer_credential(p, authorization.as_deref(), found);
            }
        }
        if p.has(AuthMethod::RefreshToken) {
            let rt = req.header(p.upstream.refresh_token_header.as_str());
            if let Some(rt) = rt.as_deref().map(str::trim).filter(|t| !t.is_empty() && !t.chars().any(char::is_control)) {
                self.presented = Some(Presented::RefreshToken);
                return Ok(Then::Grant(Grant::RefreshToken(rt.to_string())));
            }
        }
        if p.has(AuthMethod::Password) || p.has(AuthMethod::ClientCredentials) {
            if let Some(b) = crate::core::credentials::basic(authorization.as_deref())? {
                self.presented = Some(Presented::Basic);
                let grant = if p.has(AuthMethod::Password) { Grant::Password(b) } else { Grant::ClientCredentials(b) };
                return Ok(Then::Grant(grant));
            }
        }
        Err(Error::MissingCredentials)
    }
}
