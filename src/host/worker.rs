//! Per-worker state shared by the root context and the HTTP contexts of one Wasm VM, and
//! the one function that carries out a core [`Step`] with host calls.
//!
//! Requests waiting for the IdP and calls dispatched on a request's behalf are tracked here
//! by context id, with weak handles so a client that went away is skipped. Any context may
//! receive an IdP answer; all of them hand it to [`Worker::call_answered`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, LogLevel, MapType, MetricType};

use crate::core::config::Plan;
use crate::core::error::Error;
use crate::core::flow::{Caches, Env, Flow, Inputs, Step};
use crate::core::metrics::{Metrics, Outcome};
use crate::host::docs::Docs;
use crate::host::io::{dispatch, fill_random, log, now_ms, read_call_response};

/// Entries in each per-worker cache.
const CACHE_CAPACITY: usize = 10_000;

/// One client request: its flow and the response headers it asked for.
#[derive(Default)]
pub struct Request {
    pub flow: Flow,
    pub response_headers: Vec<(String, String)>,
}

pub type SharedRequest = Rc<RefCell<Request>>;

struct Pending {
    context_id: u32,
    request: Weak<RefCell<Request>>,
    since_ms: u64,
}

/// An IdP call in flight for a request: who waits for it, and what it was (for the log).
struct Call {
    pending: Pending,
    what: String,
    cluster: String,
    timeout_ms: u64,
    purpose: crate::core::idp::Purpose,
}

/// State of one plugin configuration in one Wasm VM (one Envoy worker).
pub struct Worker {
    pub plan: Plan,
    docs: RefCell<Docs>,
    caches: RefCell<Caches>,
    waiting: RefCell<Vec<Pending>>,
    calls: RefCell<HashMap<u32, Call>>,
    metrics: RefCell<Metrics>,
    /// Envoy metric id of each name in [`Metrics::names`] (`None` if the host refused it),
    /// and whether it is a histogram.
    metric_ids: Vec<(Option<u32>, bool)>,
}

/// What happened that a request may react to.
enum Event<'a> {
    Start(Inputs<'a>),
    Answer(&'a crate::core::idp::IdpResponse),
    Ready,
    TimedOut,
}

impl Worker {
    pub fn new(plan: Plan) -> Self {
        let docs = Docs::new(&plan.issuer);
        Worker {
            plan,
            docs: RefCell::new(docs),
            caches: RefCell::new(Caches::new(CACHE_CAPACITY)),
            waiting: RefCell::new(Vec::new()),
            calls: RefCell::new(HashMap::new()),
            metrics: RefCell::new(Metrics::default()),
            metric_ids: Metrics::names()
                .into_iter()
                .map(|n| {
                    let kind = if n.histogram { MetricType::Histogram } else { MetricType::Counter };
                    (hostcalls::define_metric(kind, &n.name).ok(), n.histogram)
                })
                .collect(),
        }
    }

    /// Publishes what was counted since the last call (on the timer, not per request).
    pub fn publish_metrics(&self) {
        let mut metrics = self.metrics.borrow_mut();
        {
            let caches = self.caches.borrow();
            let counts = [
                caches.grants.take_counts(),
                caches.jwts.take_counts(),
                caches.introspections.take_counts(),
                caches.sessions.take_counts(),
            ];
            for (i, (hits, misses)) in counts.into_iter().enumerate() {
                metrics.cache(i, hits, misses);
            }
        }
        let ids = &self.metric_ids;
        let mut publish = |i: usize, v: u64| match ids.get(i) {
            Some((Some(id), true)) => {
                let _ = hostcalls::record_metric(*id, v);
            }
            Some((Some(id), false)) => {
                let _ = hostcalls::increment_metric(*id, i64::try_from(v).unwrap_or(i64::MAX));
            }
            _ => {}
        };
        metrics.drain(&mut publish);
        self.docs.borrow_mut().metrics.drain(&mut publish);
    }

    /// Discovery is loaded.
    pub fn ready(&self) -> bool {
        self.docs.borrow().meta.is_some()
    }

    /// Syncs the shared IdP documents; retries waiting requests when they changed.
    pub fn sync(&self) {
        let changed = self.docs.borrow_mut().sync(&self.plan, now_ms());
        if changed {
            self.wake_waiting();
        }
    }

    /// A request's headers arrived (called from the HTTP context).
    pub fn start(&self, context_id: u32, request: &SharedRequest, inputs: Inputs<'_>) -> Action {
        let now = now_ms();
        self.drive(context_id, request, Event::Start(inputs), now, now, true)
    }

    /// An IdP call was answered, in whichever context receives it.
    pub fn call_answered(&self, token: u32, body_size: usize) {
        let now = now_ms();
        let ours = self.docs.borrow_mut().answered(&self.plan, token, body_size, now);
        if let Some(changed) = ours {
            if changed {
                self.wake_waiting();
            }
            return;
        }
        let Some(Call { pending, what, cluster, timeout_ms, purpose }) = self.calls.borrow_mut().remove(&token) else { return };
        let resp = read_call_response(body_size, now.saturating_sub(pending.since_ms));
        self.metrics.borrow_mut().idp_call(purpose, &resp, timeout_ms);
        if let Some(failure) = resp.failure(timeout_ms) {
            log(LogLevel::Warn, &format!("{what}: {}", failure.describe(&cluster, timeout_ms)));
        }
        let Some(request) = pending.request.upgrade() else { return };
        if hostcalls::set_effective_context(pending.context_id).is_ok() {
            self.drive(pending.context_id, &request, Event::Answer(&resp), pending.since_ms, now, false);
        }
    }

    /// Retries every waiting request.
    fn wake_waiting(&self) {
        let now = now_ms();
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            let Some(request) = w.request.upgrade() else { continue };
            if hostcalls::set_effective_context(w.context_id).is_ok() {
                self.drive(w.context_id, &request, Event::Ready, w.since_ms, now, false);
            }
        }
    }

    /// Answers requests that waited longer than `timeout`.
    pub fn expire_waiting(&self, now: u64) {
        let timeout = self.plan.timeout_ms;
        let expired: Vec<Pending> = {
            let mut waiting = self.waiting.borrow_mut();
            let (old, keep) = waiting.drain(..).partition(|w| now.saturating_sub(w.since_ms) >= timeout);
            *waiting = keep;
            old
        };
        for w in expired {
            let Some(request) = w.request.upgrade() else { continue };
            if hostcalls::set_effective_context(w.context_id).is_ok() {
                self.drive(w.context_id, &request, Event::TimedOut, w.since_ms, now, false);
            }
        }
    }

    /// Feeds `event` to the request's flow and carries out the resulting step. `since_ms`
    /// is when the request started waiting (kept across re-waits), `now` the caller's clock
    /// reading (one host call per event). `in_headers` is true inside
    /// `on_http_request_headers`, where forwarding is a `Continue`, not a resume.
    fn drive(
        &self,
        context_id: u32,
        request: &SharedRequest,
        event: Event<'_>,
        since_ms: u64,
        now: u64,
        in_headers: bool,
    ) -> Action {
        let (step, method) = {
            let docs = self.docs.borrow();
            let (meta, keys) = (docs.meta.clone(), docs.keys.clone());
            drop(docs);
            let mut caches = self.caches.borrow_mut();
            let mut random = fill_random;
            let mut env = Env {
                plan: &self.plan,
                meta: meta.as_deref(),
                keys: keys.as_deref(),
                caches: &mut caches,
                now_ms: now,
                random: &mut random,
            };
            let flow = &mut request.borrow_mut().flow;
            let step = match event {
                Event::Start(inputs) => flow.start(&mut env, inputs),
                Event::Answer(resp) => flow.idp_answered(&mut env, resp),
                Event::Ready => flow.idp_ready(&mut env),
                Event::TimedOut => flow.timed_out(),
            };
            (step, flow.method())
        };
        let outcome = match &step {
            Step::Forward(_) => Some(Outcome::Allowed),
            Step::Deny(e) => Some(Outcome::of_status(e.status())),
            Step::Respond(reply) => Some(Outcome::of_status(reply.status)),
            _ => None,
        };
        if let Some(outcome) = outcome {
            self.metrics.borrow_mut().request(method, outcome);
        }
        match step {
            Step::Forward(fwd) => {
                // A header that is set next is replaced anyway: one host call, not two.
                for name in fwd.remove.iter().filter(|n| !fwd.set.iter().any(|(s, _)| s == *n)) {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
                }
                for (name, value) in &fwd.set {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
                }
                if let Some(path) = &fwd.set_path {
                    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(path));
                }
                request.borrow_mut().response_headers = fwd.response_set;
                if in_headers {
                    return Action::Continue;
                }
                let _ = hostcalls::resume_http_request();
            }
            Step::Deny(e) => self.respond(&e.reply(&self.plan), Some(&e)),
            Step::Respond(reply) => self.respond(&reply, None),
            Step::Call(req) => match dispatch(&req) {
                Ok(token) => {
                    let pending = Pending { context_id, request: Rc::downgrade(request), since_ms: now };
                    let what = format!("{req:?}");
                    let call = Call { pending, what, cluster: req.cluster, timeout_ms: req.timeout_ms, purpose: req.purpose };
                    self.calls.borrow_mut().insert(token, call);
                }
                Err(e) => {
                    log(LogLevel::Error, &format!("cannot call the IdP ({req:?}): {e}"));
                    let e = Error::IdpUnavailable("the IdP cluster is not available");
                    self.respond(&e.reply(&self.plan), Some(&e));
                }
            },
            Step::WaitForIdp => self.wait(context_id, request, since_ms.min(now)),
            Step::RefreshKeys => {
                if self.docs.borrow_mut().want_keys(now) {
                    self.wait(context_id, request, now);
                    self.sync();
                } else {
                    return self.drive(context_id, request, Event::TimedOut, since_ms, now, in_headers);
                }
            }
        }
        Action::Pause
    }

    fn wait(&self, context_id: u32, request: &SharedRequest, since_ms: u64) {
        self.waiting.borrow_mut().push(Pending { context_id, request: Rc::downgrade(request), since_ms });
    }

    /// Sends a local reply; errors are logged (never with a credential).
    fn respond(&self, reply: &crate::core::reply::Reply, e: Option<&Error>) {
        if let Some(e) = e {
            let level = if e.status() < 500 { LogLevel::Info } else { LogLevel::Warn };
            log(level, &format!("{} {}: {}", e.status(), e.code(), e.description()));
        } else if reply.status >= 400 {
            let body = String::from_utf8_lossy(&reply.body);
            log(LogLevel::Info, &format!("{} {body}", reply.status));
        }
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let _ = hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body));
    }
}
