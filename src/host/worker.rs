//! Per-worker state shared by the root context and the HTTP contexts of one Wasm VM, and
//! the one function that carries out a core [`Step`] with host calls.
//!
//! Requests waiting for discovery and calls dispatched by the root on a request's behalf are
//! tracked here by context id, with weak handles so a client that went away is skipped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::core::config::Plan;
use crate::core::discovery::Metadata;
use crate::core::error::Error;
use crate::core::flow::{Env, Flow, Step};
use crate::core::idp::{IdpRequest, IdpResponse};
use crate::core::token_cache::TokenCache;

/// Entries in the per-worker token cache.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

pub type SharedFlow = Rc<RefCell<Flow>>;

struct Pending {
    context_id: u32,
    flow: Weak<RefCell<Flow>>,
    since_ms: u64,
}

/// State of one plugin configuration in one Wasm VM (one Envoy worker).
pub struct Worker {
    pub plan: Plan,
    pub meta: RefCell<Option<Rc<Metadata>>>,
    cache: RefCell<TokenCache>,
    waiting: RefCell<Vec<Pending>>,
    calls: RefCell<HashMap<u32, Pending>>,
}

/// Milliseconds since the epoch, from the host clock.
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

/// A random identifier (hex of 16 bytes from WASI `random_get`).
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // Uniqueness, not secrecy, is what a jti needs; the clock still makes it unique enough.
        b[..8].copy_from_slice(&now_ms().to_be_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Worker {
    pub fn new(plan: Plan) -> Self {
        Worker {
            plan,
            meta: RefCell::new(None),
            cache: RefCell::new(TokenCache::new(TOKEN_CACHE_CAPACITY)),
            waiting: RefCell::new(Vec::new()),
            calls: RefCell::new(HashMap::new()),
        }
    }

    /// Runs `f` with the environment a flow needs.
    fn with_env<R>(&self, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
        let meta = self.meta.borrow().clone();
        let mut cache = self.cache.borrow_mut();
        let mut jti = random_id;
        let mut env = Env { plan: &self.plan, meta: meta.as_deref(), cache: &mut cache, now_ms: now_ms(), jti: &mut jti };
        f(&mut env)
    }

    /// A request's headers arrived (called from the HTTP context).
    pub fn start(&self, context_id: u32, flow: &SharedFlow, authorization: Option<&str>) -> Action {
        let step = self.with_env(|env| {
            flow.borrow_mut().start(env, crate::core::flow::Inputs { authorization })
        });
        self.carry_out(context_id, flow, step, true)
    }

    /// An IdP call made for a request was answered. Returns false when `token` is not ours.
    pub fn call_answered(&self, token: u32, body_size: usize) -> bool {
        let Some(pending) = self.calls.borrow_mut().remove(&token) else { return false };
        let resp = read_call_response(body_size, now_ms().saturating_sub(pending.since_ms));
        let Some(flow) = pending.flow.upgrade() else { return true };
        let _ = hostcalls::set_effective_context(pending.context_id);
        let step = self.with_env(|env| flow.borrow_mut().idp_answered(env, &resp));
        self.carry_out(pending.context_id, &flow, step, false);
        true
    }

    /// Discovery became available: run every waiting request.
    pub fn wake_waiting(&self) {
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            let Some(flow) = w.flow.upgrade() else { continue };
            if hostcalls::set_effective_context(w.context_id).is_err() {
                continue;
            }
            let step = self.with_env(|env| flow.borrow_mut().discovery_ready(env));
            self.carry_out(w.context_id, &flow, step, false);
        }
    }

    /// Answers requests that waited longer than `timeout` for discovery.
    pub fn expire_waiting(&self, now: u64) {
        let timeout = self.plan.timeout_ms;
        let expired: Vec<Pending> = {
            let mut waiting = self.waiting.borrow_mut();
            let (old, keep) = waiting.drain(..).partition(|w| now.saturating_sub(w.since_ms) >= timeout);
            *waiting = keep;
            old
        };
        for w in expired {
            let Some(flow) = w.flow.upgrade() else { continue };
            if hostcalls::set_effective_context(w.context_id).is_err() {
                continue;
            }
            let step = flow.borrow_mut().discovery_timed_out();
            self.carry_out(w.context_id, &flow, step, false);
        }
    }

    /// Carries out `step` for the request in `context_id` (already the effective context).
    /// `in_headers` is true inside `on_http_request_headers`, where forwarding is a
    /// `Continue` rather than a resume.
    fn carry_out(&self, context_id: u32, flow: &SharedFlow, step: Step, in_headers: bool) -> Action {
        match step {
            Step::Forward(fwd) => {
                for name in &fwd.remove {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &fwd.set {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
                }
                if in_headers {
                    return Action::Continue;
                }
                let _ = hostcalls::resume_http_request();
                Action::Pause
            }
            Step::Deny(e) => {
                self.deny(&e);
                Action::Pause
            }
            Step::Call(req) => match dispatch(&req) {
                Ok(token) => {
                    self.calls.borrow_mut().insert(
                        token,
                        Pending { context_id, flow: Rc::downgrade(flow), since_ms: now_ms() },
                    );
                    Action::Pause
                }
                Err(e) => {
                    log(LogLevel::Error, &format!("cannot call the IdP ({req:?}): {e}"));
                    self.deny(&Error::IdpUnavailable("the IdP cluster is not available"));
                    Action::Pause
                }
            },
            Step::WaitForDiscovery => {
                self.waiting.borrow_mut().push(Pending { context_id, flow: Rc::downgrade(flow), since_ms: now_ms() });
                Action::Pause
            }
        }
    }

    fn deny(&self, e: &Error) {
        let level = match e.status() {
            401 | 403 => LogLevel::Info,
            _ => LogLevel::Warn,
        };
        log(level, &format!("{} {}: {}", e.status(), e.code(), e.description()));
        let reply = e.reply(&self.plan);
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body));
    }
}

/// Sends `req` through its Envoy cluster.
pub fn dispatch(req: &IdpRequest) -> Result<u32, String> {
    let mut headers: Vec<(&str, &str)> =
        vec![(":method", req.method), (":path", &req.path), (":authority", &req.authority), (":scheme", "https")];
    headers.extend(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let body = if req.body.is_empty() { None } else { Some(req.body.as_slice()) };
    hostcalls::dispatch_http_call(&req.cluster, headers, body, vec![], Duration::from_millis(req.timeout_ms))
        .map_err(|s| format!("dispatch to cluster `{}` failed: {s:?}", req.cluster))
}

/// Reads the answer of the call whose callback is running.
pub fn read_call_response(body_size: usize, elapsed_ms: u64) -> IdpResponse {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.parse::<u16>().ok()));
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default()
    };
    IdpResponse { status, body, elapsed_ms }
}
