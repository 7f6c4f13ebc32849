//! The decision for one client request, as a sans-IO state machine.
//!
//! The adapter feeds events in ([`Flow::start`], [`Flow::discovery_ready`],
//! [`Flow::idp_answered`], [`Flow::discovery_timed_out`]) and carries out the [`Step`] that
//! comes back: forward upstream, deny, call the IdP, or wait for discovery. Auth methods are
//! tried in Kong's order; the first credential found decides.

use crate::core::config::{AuthMethod, Plan};
use crate::core::credentials;
use crate::core::discovery::Metadata;
use crate::core::error::Error;
use crate::core::grants::{self, Grant};
use crate::core::idp::{IdpRequest, IdpResponse};
use crate::core::reply::Forward;
use crate::core::token_cache::{Key, TokenCache};

/// What the adapter must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Let the request go upstream with these header changes.
    Forward(Forward),
    /// Answer the client with this error (see [`Error::reply`]).
    Deny(Error),
    /// Send this request to the IdP and call [`Flow::idp_answered`] with the answer.
    Call(IdpRequest),
    /// Discovery is not done: call [`Flow::discovery_ready`] when it is, or
    /// [`Flow::discovery_timed_out`] after `timeout`.
    WaitForDiscovery,
}

/// The request headers the decision reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Inputs<'a> {
    pub authorization: Option<&'a str>,
}

/// Everything outside the request that a decision needs, lent for one event.
pub struct Env<'a> {
    pub plan: &'a Plan,
    pub meta: Option<&'a Metadata>,
    pub cache: &'a mut TokenCache,
    pub now_ms: u64,
    /// A fresh unique id for client assertions (`jti`).
    pub jti: &'a mut dyn FnMut() -> String,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    New,
    WaitingForDiscovery(Grant),
    AwaitingToken { grant: Grant, key: Key },
    Done,
}

/// One request's progress.
#[derive(Debug, Default)]
pub struct Flow {
    state: State,
}

impl Flow {
    pub fn new() -> Self {
        Flow::default()
    }

    /// True while the flow waits for discovery.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::WaitingForDiscovery(_))
    }

    /// The request's headers have arrived.
    pub fn start(&mut self, env: &mut Env<'_>, req: Inputs<'_>) -> Step {
        match find_grant(env.plan, req) {
            Ok(grant) => self.run_grant(env, grant),
            Err(e) => self.finish_deny(e),
        }
    }

    /// Discovery completed while this request was waiting.
    pub fn discovery_ready(&mut self, env: &mut Env<'_>) -> Step {
        match std::mem::take(&mut self.state) {
            State::WaitingForDiscovery(grant) => self.run_grant(env, grant),
            other => {
                self.state = other;
                Step::Deny(Error::Internal("unexpected discovery event"))
            }
        }
    }

    /// Discovery did not complete within `timeout`.
    pub fn discovery_timed_out(&mut self) -> Step {
        self.finish_deny(Error::DiscoveryUnavailable)
    }

    /// The IdP answered the call from the last [`Step::Call`].
    pub fn idp_answered(&mut self, env: &mut Env<'_>, resp: &IdpResponse) -> Step {
        match std::mem::take(&mut self.state) {
            State::AwaitingToken { grant, key } => {
                match grants::parse_token_response(&grant, grant.auth(env.plan), resp, env.plan.timeout_ms) {
                    Ok(tokens) => {
                        if env.plan.cache_tokens {
                            env.cache.put(key, &tokens.access_token, tokens.expires_in, env.now_ms);
                        }
                        self.state = State::Done;
                        Step::Forward(forward(env.plan, &tokens.access_token))
                    }
                    Err(e) => self.finish_deny(e),
                }
            }
            other => {
                self.state = other;
                Step::Deny(Error::Internal("unexpected IdP answer"))
            }
        }
    }

    fn run_grant(&mut self, env: &mut Env<'_>, grant: Grant) -> Step {
        let key = grant.cache_key(env.plan);
        if env.plan.cache_tokens {
            if let Some(token) = env.cache.get(&key, env.now_ms) {
                self.state = State::Done;
                return Step::Forward(forward(env.plan, token));
            }
        }
        let Some(meta) = env.meta else {
            self.state = State::WaitingForDiscovery(grant);
            return Step::WaitForDiscovery;
        };
        let jti = (env.jti)();
        match grants::token_request(env.plan, meta, &grant, env.now_ms / 1000, &jti) {
            Ok(req) => {
                self.state = State::AwaitingToken { grant, key };
                Step::Call(req)
            }
            Err(e) => self.finish_deny(e),
        }
    }

    fn finish_deny(&mut self, e: Error) -> Step {
        self.state = State::Done;
        Step::Deny(e)
    }
}

/// The first credential found, in Kong's method order.
fn find_grant(plan: &Plan, req: Inputs<'_>) -> Result<Grant, Error> {
    let basic = credentials::basic(req.authorization)?;
    for method in &plan.auth_methods {
        match (method, &basic) {
            (AuthMethod::Password, Some(b)) => return Ok(Grant::Password(b.clone())),
            (AuthMethod::ClientCredentials, Some(b)) => return Ok(Grant::ClientCredentials(b.clone())),
            _ => {}
        }
    }
    Err(Error::MissingCredentials)
}

/// Header changes for a request authenticated with `access_token`: the client's own
/// credentials never go upstream.
fn forward(plan: &Plan, access_token: &str) -> Forward {
    let mut f = Forward { remove: vec!["authorization".into()], set: Vec::new() };
    if let Some(h) = &plan.upstream_access_token_header {
        f.set.push((h.name.clone(), h.value(access_token)));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::idp::Purpose;

    const BASIC_JOHN: &str = "Basic am9objpkb2U="; // john:doe

    fn plan(extra: &str) -> Plan {
        Plan::parse(
            format!("issuer: https://idp\nidp_cluster: idp\nclient_id: client-tls-auth\nclient_auth: tls_client_auth\ntls_client_auth_cluster: idp-mtls\n{extra}")
                .as_bytes(),
        )
        .unwrap()
    }

    fn meta(p: &Plan) -> Metadata {
        Metadata::parse(p, br#"{"issuer":"https://idp","token_endpoint":"https://idp/token"}"#).unwrap()
    }

    struct World {
        plan: Plan,
        meta: Option<Metadata>,
        cache: TokenCache,
        now_ms: u64,
        jtis: u32,
    }

    impl World {
        fn new(extra: &str) -> Self {
            let plan = plan(extra);
            let meta = Some(meta(&plan));
            World { plan, meta, cache: TokenCache::new(100), now_ms: 1_000_000, jtis: 0 }
        }
        fn with<R>(&mut self, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
            let jtis = &mut self.jtis;
            let mut jti = || {
                *jtis += 1;
                format!("jti-{jtis}")
            };
            let mut env = Env { plan: &self.plan, meta: self.meta.as_ref(), cache: &mut self.cache, now_ms: self.now_ms, jti: &mut jti };
            f(&mut env)
        }
    }

    fn ok_token(expires_in: u64) -> IdpResponse {
        IdpResponse {
            status: Some(200),
            body: format!(r#"{{"access_token":"AT","token_type":"Bearer","expires_in":{expires_in}}}"#).into_bytes(),
            elapsed_ms: 3,
        }
    }

    fn bearer_forward(token: &str) -> Step {
        Step::Forward(Forward {
            remove: vec!["authorization".into()],
            set: vec![("authorization".into(), format!("Bearer {token}"))],
        })
    }

    #[test]
    fn password_grant_then_forward_with_bearer() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        let step = w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        let Step::Call(req) = step else { panic!("{step:?}") };
        assert_eq!((req.purpose, req.cluster.as_str()), (Purpose::Token, "idp-mtls"));
        let step = w.with(|env| flow.idp_answered(env, &ok_token(300)));
        assert_eq!(step, bearer_forward("AT"));
    }

    #[test]
    fn cached_token_skips_the_idp_until_near_expiry() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        w.with(|env| flow.idp_answered(env, &ok_token(300)));
        let mut second = Flow::new();
        let step = w.with(|env| second.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        assert_eq!(step, bearer_forward("AT"));
        // a wrong password must not hit the cached token
        let mut wrong = Flow::new();
        let step = w.with(|env| wrong.start(env, Inputs { authorization: Some("Basic am9objpkb2Ux") }));
        assert!(matches!(step, Step::Call(_)), "{step:?}");
        // after 270 s (300 s minus the margin) the IdP is asked again
        w.now_ms += 270_000;
        let mut later = Flow::new();
        let step = w.with(|env| later.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        assert!(matches!(step, Step::Call(_)), "{step:?}");
    }

    #[test]
    fn cache_can_be_turned_off() {
        let mut w = World::new("auth_methods: [password]\ncache_tokens: false\n");
        let mut flow = Flow::new();
        w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        w.with(|env| flow.idp_answered(env, &ok_token(300)));
        assert!(w.cache.is_empty());
    }

    #[test]
    fn no_credentials_is_401_with_basic_challenge() {
        let mut w = World::new("auth_methods: [password]\n");
        let step = w.with(|env| Flow::new().start(env, Inputs::default()));
        assert_eq!(step, Step::Deny(Error::MissingCredentials));
        let reply = Error::MissingCredentials.reply(&w.plan);
        assert_eq!(reply.status, 401);
        assert!(reply.headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic ")));
        let step = w.with(|env| Flow::new().start(env, Inputs { authorization: Some("Bearer x") }));
        assert_eq!(step, Step::Deny(Error::MissingCredentials));
    }

    #[test]
    fn waits_for_discovery_then_runs() {
        let mut w = World::new("auth_methods: [password]\n");
        let m = w.meta.take();
        let mut flow = Flow::new();
        let step = w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        assert_eq!(step, Step::WaitForDiscovery);
        assert!(flow.is_waiting());
        w.meta = m;
        let step = w.with(|env| flow.discovery_ready(env));
        assert!(matches!(step, Step::Call(_)), "{step:?}");
        let mut other = Flow::new();
        w.meta = None;
        w.with(|env| other.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        assert_eq!(other.discovery_timed_out(), Step::Deny(Error::DiscoveryUnavailable));
    }

    #[test]
    fn idp_failures_become_errors() {
        let mut w = World::new("auth_methods: [password]\n");
        let mut flow = Flow::new();
        w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        let step = w.with(|env| {
            flow.idp_answered(env, &IdpResponse { status: Some(401), body: br#"{"error":"invalid_client"}"#.to_vec(), elapsed_ms: 1 })
        });
        assert_eq!(step, Step::Deny(Error::ClientRejected { method: "tls_client_auth" }));
        // a second answer for a finished flow is refused, not a panic
        let step = w.with(|env| flow.idp_answered(env, &ok_token(1)));
        assert!(matches!(step, Step::Deny(Error::Internal(_))));
    }

    #[test]
    fn custom_upstream_header_still_drops_basic() {
        let mut w = World::new("auth_methods: [password]\nupstream_access_token_header: x-token\n");
        let mut flow = Flow::new();
        w.with(|env| flow.start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        let step = w.with(|env| flow.idp_answered(env, &ok_token(60)));
        assert_eq!(
            step,
            Step::Forward(Forward { remove: vec!["authorization".into()], set: vec![("x-token".into(), "AT".into())] })
        );
    }

    #[test]
    fn client_credentials_when_only_method() {
        let mut w = World::new("auth_methods: [client_credentials]\n");
        let step = w.with(|env| Flow::new().start(env, Inputs { authorization: Some(BASIC_JOHN) }));
        let Step::Call(req) = step else { panic!() };
        assert_eq!(req.cluster, "idp");
    }

    #[test]
    fn malformed_basic_is_denied() {
        let mut w = World::new("auth_methods: [password]\n");
        let step = w.with(|env| Flow::new().start(env, Inputs { authorization: Some("Basic @@@") }));
        assert!(matches!(step, Step::Deny(Error::MalformedCredentials(_))));
    }
}
