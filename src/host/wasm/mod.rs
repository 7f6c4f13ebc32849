//! The proxy-wasm adapter: the module's exports, the contexts the host creates, and the
//! carrying out of the core's actions with host calls. No decision is made here.
//!
//! - A root context per plugin configuration holds a core [`Worker`]. `on_configure` parses
//!   the configuration and sets the tick period (once, as the core asks); `on_tick` feeds
//!   the worker's timer and publishes metrics.
//! - An HTTP context per request holds a core [`Request`]. Its headers go to
//!   [`Worker::start`]; the answer to each call it made goes to [`Worker::handle_answer`] in
//!   that same context; the returned [`Next`] is carried out at once.
//! - Calls are routed by the token the host returns, so an answer for a context that no
//!   longer exists (or a token from before a restart of the instance) is ignored, never a
//!   panic. A callback that finds the state already borrowed (a host that re-enters the
//!   module) does nothing.

mod abi;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::core::config::Plan;
use crate::core::docs::store::{Cas, Conflict, Read, Store};
use crate::core::header::Headers;
use crate::core::idp::{IdpCall, IdpResponse};
use crate::core::log::Level;
use crate::core::reply::{Forward, Reply};
use crate::core::request::{Next, Request, RequestView};
use crate::core::wire;
use crate::core::worker::{RootActions, Tag, Worker};

/// `proxy_action_t`.
const CONTINUE: u32 = 0;
const PAUSE: u32 = 1;

/// The VM's state: every context, and who made each call.
#[derive(Default)]
struct Vm {
    roots: HashMap<u32, Root>,
    http: HashMap<u32, Http>,
    /// Who made each call, and when it was sent.
    calls: HashMap<u32, (Owner, u64)>,
}

enum Owner {
    Root(u32, Tag),
    Http(u32),
}

#[derive(Default)]
struct Root {
    worker: Option<Worker>,
    /// Host metric id per name in [`Metrics::names`], and whether it is a histogram.
    metrics: Vec<Option<(u32, bool)>>,
    tick_set: bool,
}

struct Http {
    root: u32,
    request: Request,
    /// Headers to add to the response (`Set-Cookie`, a rotated refresh token).
    response: Headers,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::new(Vm::default());
}

/// Runs `f` on the state unless it is already in use (a re-entrant callback).
fn with_vm<R>(default: R, f: impl FnOnce(&mut Vm) -> R) -> R {
    VM.with(|vm| match vm.try_borrow_mut() {
        Ok(mut vm) => f(&mut vm),
        Err(_) => default,
    })
}

/// Shared data through host calls.
struct HostStore;

impl Store for HostStore {
    fn read(&mut self, key: &str) -> Read {
        let (value, cas) = abi::shared(key);
        Read { value, cas: Cas::from_host(cas) }
    }

    fn write(&mut self, key: &str, value: &[u8], cas: Cas) -> Result<(), Conflict> {
        match abi::set_shared(key, value, cas.to_host()) {
            abi::CAS_MISMATCH => Err(Conflict),
            _ => Ok(()),
        }
    }
}

/// The request's headers: one host call per header, or all at once when the policy reads
/// many (each host call that returns data also calls back into the VM to allocate).
enum View {
    Each,
    All(Vec<u8>),
}

impl RequestView for View {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        match self {
            View::Each => abi::header(abi::REQUEST_HEADERS, name).map(|b| Cow::Owned(text(b))),
            View::All(map) => wire::pairs(map).find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v)),
        }
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        abi::property(&["connection", "sha256_peer_certificate_digest"]).map(text)
    }

    fn route_metadata(&self) -> Option<Vec<u8>> {
        // Envoy 1.25 and later name it `xds.route_metadata`; older ones `route_metadata`.
        abi::property(&["xds", "route_metadata"]).or_else(|| abi::property(&["route_metadata"]))
    }

    fn route_name(&self) -> Option<String> {
        abi::property(&["xds", "route_name"]).or_else(|| abi::property(&["route_name"])).map(text)
    }
}

/// Bytes as text; what is not UTF-8 becomes U+FFFD (never a panic).
fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn random(buf: &mut [u8]) {
    // The root refuses to load without randomness; should a later call fail, the bytes
    // stay as they are (zeros) rather than panicking.
    let _ = getrandom::getrandom(buf);
}

fn flush_log(worker: &mut Worker) {
    worker.drain_log(|l| abi::log(l.level as u32, &l.message));
}

fn serialize(headers: &[(crate::core::header::HeaderName, crate::core::header::HeaderValue)]) -> Vec<u8> {
    wire::serialize(headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_str().as_bytes())))
}

/// Sends `call`; the host's token, or its refusal.
fn dispatch(call: &IdpCall) -> Result<u32, u32> {
    let mut headers: Headers = Vec::with_capacity(call.headers.len() + 4);
    let pseudo = |n: &'static str, v: &str| {
        crate::core::header::HeaderValue::new(v).ok().map(|v| (crate::core::header::HeaderName::from_static(n), v))
    };
    headers.extend(pseudo(":method", call.method));
    headers.extend(pseudo(":path", &call.path));
    headers.extend(pseudo(":authority", &call.authority));
    headers.extend(pseudo(":scheme", "https"));
    headers.extend(call.headers.iter().cloned());
    abi::http_call(&call.cluster, &serialize(&headers), &call.body, call.timeout_ms)
}

impl Vm {
    fn configure(&mut self, root_id: u32) -> bool {
        let bytes = abi::buffer(abi::PLUGIN_CONFIGURATION, usize::MAX);
        if getrandom::getrandom(&mut [0u8; 16]).is_err() {
            abi::log(
                Level::Critical as u32,
                "the host provides no randomness (WASI random_get): login state and cookie nonces would be predictable; refusing to load",
            );
            return false;
        }
        let plan = match Plan::parse(&bytes) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                abi::log(Level::Critical as u32, &e.to_string());
                return false;
            }
        };
        abi::log(Level::Info as u32, &plan.summary());
        let mut me = [0u8; 8];
        random(&mut me);
        let mut worker = Worker::new(plan, u64::from_le_bytes(me), Box::new(random));
        let actions = worker.handle_configure(&mut HostStore);
        let root = self.roots.entry(root_id).or_default();
        root.metrics = worker
            .metric_names()
            .into_iter()
            .map(|n| {
                let kind = if n.histogram { abi::HISTOGRAM } else { abi::COUNTER };
                abi::define_metric(kind, &n.name).map(|id| (id, n.histogram))
            })
            .collect();
        root.worker = Some(worker);
        self.root_actions(root_id, actions);
        true
    }

    fn tick(&mut self, root_id: u32) {
        let Some(root) = self.roots.get_mut(&root_id) else { return };
        let Some(worker) = root.worker.as_mut() else { return };
        let actions = worker.handle_tick(&mut HostStore, abi::now_ms());
        let ids = &root.metrics;
        worker.drain_metrics(|i, v| match ids.get(i) {
            Some(Some((id, true))) => abi::record_metric(*id, v),
            Some(Some((id, false))) => abi::increment_metric(*id, v),
            _ => {}
        });
        self.root_actions(root_id, actions);
    }

    /// Sets the timer (once) and makes the root's calls.
    fn root_actions(&mut self, root_id: u32, actions: RootActions) {
        let Some(root) = self.roots.get_mut(&root_id) else { return };
        if let (Some(ms), false) = (actions.tick_period_ms, root.tick_set) {
            root.tick_set = true;
            abi::set_tick_period(ms);
        }
        for (tag, call) in actions.calls {
            match dispatch(&call) {
                Ok(token) => {
                    self.calls.insert(token, (Owner::Root(root_id, tag), abi::now_ms()));
                }
                Err(status) => {
                    if let Some(w) = root.worker.as_mut() {
                        w.root_call_not_sent(tag);
                    }
                    abi::log(Level::Warn as u32, &format!("cannot call the IdP ({call:?}): host status {status}"));
                }
            }
        }
        if let Some(w) = root.worker.as_mut() {
            flush_log(w);
        }
    }

    fn request_headers(&mut self, ctx: u32) -> u32 {
        let Some(http) = self.http.get_mut(&ctx) else { return CONTINUE };
        let Some(worker) = self.roots.get_mut(&http.root).and_then(|r| r.worker.as_mut()) else {
            // No configuration: fail closed.
            send(&Reply::json(500, Vec::new(), &serde_json::json!({"error": "internal_error"})));
            return PAUSE;
        };
        let view = if worker.reads_many_headers() { View::All(abi::header_pairs(abi::REQUEST_HEADERS)) } else { View::Each };
        let next = worker.start(&mut http.request, &view, &mut HostStore, abi::now_ms());
        self.carry_out(ctx, next, true)
    }

    fn call_answered(&mut self, token: u32, body_size: usize) {
        let Some((owner, sent)) = self.calls.remove(&token) else { return };
        let now = abi::now_ms();
        let resp = read_answer(body_size, now.saturating_sub(sent));
        match owner {
            Owner::Root(root_id, tag) => {
                let Some(worker) = self.roots.get_mut(&root_id).and_then(|r| r.worker.as_mut()) else { return };
                abi::set_effective_context(root_id);
                worker.handle_root_answer(&mut HostStore, tag, &resp, now);
                flush_log(worker);
            }
            Owner::Http(ctx) => {
                let Some(http) = self.http.get_mut(&ctx) else { return };
                let Some(worker) = self.roots.get_mut(&http.root).and_then(|r| r.worker.as_mut()) else { return };
                // The answer belongs to this request alone: carried out in its context.
                abi::set_effective_context(ctx);
                let next = worker.handle_answer(&mut http.request, &resp, &mut HostStore, now);
                match next {
                    Some(next) => {
                        self.carry_out(ctx, next, false);
                    }
                    None => flush_log(worker),
                }
            }
        }
    }

    /// Carries out `next` for HTTP context `ctx`; the action to return when still in the
    /// request-headers callback (`in_headers`), where forwarding is `Continue`.
    fn carry_out(&mut self, ctx: u32, next: Next, in_headers: bool) -> u32 {
        let Some(http) = self.http.get_mut(&ctx) else { return CONTINUE };
        let root_id = http.root;
        let mut next = Some(next);
        let mut action = PAUSE;
        // A call the host refuses is answered by the core at once: at most two rounds.
        while let Some(n) = next.take() {
            match n {
                Next::Forward(fwd) => {
                    forward(&fwd);
                    http.response = fwd.response_add;
                    if in_headers {
                        action = CONTINUE;
                    } else {
                        abi::resume_request();
                    }
                }
                Next::Answer(reply) => send(&reply),
                Next::Call(call) => match dispatch(&call) {
                    Ok(token) => {
                        self.calls.insert(token, (Owner::Http(ctx), abi::now_ms()));
                    }
                    Err(status) => {
                        let Some(worker) = self.roots.get_mut(&root_id).and_then(|r| r.worker.as_mut()) else { break };
                        next =
                            Some(worker.call_not_sent(&mut http.request, &format!("host status {status}"), &mut HostStore, abi::now_ms()));
                    }
                },
            }
        }
        if let Some(worker) = self.roots.get_mut(&root_id).and_then(|r| r.worker.as_mut()) {
            flush_log(worker);
        }
        action
    }
}

fn forward(fwd: &Forward) {
    // A header that is set next is replaced anyway: one host call, not two.
    for name in fwd.remove.iter().filter(|n| !fwd.set.iter().any(|(s, _)| s == *n)) {
        abi::remove_header(abi::REQUEST_HEADERS, name.as_str());
    }
    for (name, value) in &fwd.set {
        abi::set_header(abi::REQUEST_HEADERS, name.as_str(), value.as_str());
    }
    if let Some(path) = &fwd.set_path {
        abi::set_header(abi::REQUEST_HEADERS, ":path", path.as_str());
    }
}

fn send(reply: &Reply) {
    abi::send_response(reply.status, &serialize(&reply.headers), &reply.body);
}

/// The answer of the call whose callback is running.
fn read_answer(body_size: usize, elapsed_ms: u64) -> IdpResponse {
    let status = abi::header(abi::CALL_RESPONSE_HEADERS, ":status")
        .and_then(|b| std::str::from_utf8(&b).ok().and_then(|s| s.trim().parse::<u16>().ok()));
    let body = if body_size == 0 { Vec::new() } else { abi::buffer(abi::CALL_RESPONSE_BODY, body_size) };
    IdpResponse { status, body, elapsed_ms }
}

// ---- exports ----

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the reactor's constructors, run once by the host before anything else.
    #[cfg(target_os = "wasi")]
    unsafe {
        __wasm_call_ctors();
    }
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let buf: Box<[u8]> = vec![0u8; size].into_boxed_slice();
    Box::into_raw(buf) as *mut u8
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(ctx: u32, parent: u32) {
    with_vm((), |vm| {
        if parent == 0 {
            vm.roots.entry(ctx).or_default();
        } else {
            vm.http.insert(ctx, Http { root: parent, request: Request::new(), response: Vec::new() });
        }
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_ctx: u32, _size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(ctx: u32, _size: usize) -> u32 {
    with_vm(0, |vm| u32::from(vm.configure(ctx)))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(ctx: u32) {
    with_vm((), |vm| vm.tick(ctx))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(ctx: u32, _headers: usize, _end_of_stream: u32) -> u32 {
    with_vm(CONTINUE, |vm| vm.request_headers(ctx))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_ctx: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_ctx: u32, _trailers: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(ctx: u32, _headers: usize, _end_of_stream: u32) -> u32 {
    with_vm(CONTINUE, |vm| {
        // Added, not set: there may be several Set-Cookie headers.
        if let Some(http) = vm.http.get_mut(&ctx) {
            for (name, value) in std::mem::take(&mut http.response) {
                abi::add_header(abi::RESPONSE_HEADERS, name.as_str(), value.as_str());
            }
        }
        CONTINUE
    })
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_ctx: u32, _size: usize, _end_of_stream: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_ctx: u32, _trailers: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(_ctx: u32, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
    with_vm((), |vm| vm.call_answered(token, body_size))
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_ctx: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_ctx: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_delete(ctx: u32) {
    with_vm((), |vm| {
        if vm.http.remove(&ctx).is_some() {
            vm.calls.retain(|_, (o, _)| !matches!(o, Owner::Http(c) if *c == ctx));
        } else if vm.roots.remove(&ctx).is_some() {
            vm.calls.retain(|_, (o, _)| !matches!(o, Owner::Root(r, _) if *r == ctx));
        }
    })
}
