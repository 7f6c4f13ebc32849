//! The Envoy dynamic-module adapter (`liboidc.so`): the hooks Envoy calls, and the carrying
//! out of the core's actions with Envoy's callbacks ([`abi`]). No decision is made here; the
//! core is the one the Wasm build runs.
//!
//! - A filter configuration (`http_filter_config_new`, on Envoy's main thread) parses the
//!   plan once and shares it, read-only, with every worker thread (`Arc<Plan>`).
//! - Each thread keeps its own core [`Worker`] per configuration (`thread_local`): the core's
//!   values are `Rc` and its caches need no lock, as in Wasm, where each worker has its own
//!   VM. The shared data ([`store`]) is the one map they share.
//! - The main thread's worker owns the timer: a thread of ours commits the configuration's
//!   scheduler every [`TICK_MS`], and the tick runs on the main thread, where it may call the
//!   IdP (discovery, key sets, refresh). Worker threads have no timer: before a request they
//!   adopt what was stored, at most every [`TICK_MS`] ([`Worker::handle_adopt`]).
//! - A request's own calls go out from its stream and their answers come back to it
//!   (`http_filter_http_callout_done`), where the core decides.
//! - Every hook catches a panic: a request gets `500`, a configuration is refused, and Envoy
//!   keeps serving.

// The exported hooks are Envoy's entry points: the pointers they take are valid by Envoy's
// contract (see each `SAFETY`), and they cannot be `unsafe fn`s.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod abi;
mod store;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi::{envoy_buffer, envoy_http_header, log, module_http_header, Filter};
use envoy_oidc::core::config::Plan;
use envoy_oidc::core::header::Headers;
use envoy_oidc::core::idp::{IdpCall, IdpResponse};
use envoy_oidc::core::log::Level;
use envoy_oidc::core::reply::Reply;
use envoy_oidc::core::request::{Next, Request, RequestView};
use envoy_oidc::core::worker::{Tag, Worker, TICK_MS};
use store::Process;

/// One filter configuration, shared by the main thread and every worker thread.
struct Config {
    id: u64,
    plan: Arc<Plan>,
    /// Envoy's metric id per name in [`Worker::metric_names`], and whether it is a histogram.
    metrics: Vec<Option<(usize, bool)>>,
    /// Commits the configuration's scheduler every [`TICK_MS`] (not in validation mode).
    ticker: Mutex<Option<Ticker>>,
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

// The plan is shared by Envoy's threads as it is.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Plan>();
};

/// This thread's core worker for one configuration.
struct Slot {
    config: Weak<Config>,
    worker: Worker,
    adopted_at: u64,
    /// The main thread's calls in flight: Envoy's callout id, the core's tag, when sent.
    calls: HashMap<u64, (Tag, u64)>,
}

impl Slot {
    /// Hands the worker's log lines to Envoy and its metric deltas to `publish`.
    fn flush(&mut self, config: &Config, publish: impl Fn(usize, u64, bool)) {
        self.worker.drain_log(|l| log(l.level, &l.message));
        self.worker.drain_metrics(|i, v| {
            if let Some(Some((id, histogram))) = config.metrics.get(i) {
                publish(*id, v, *histogram);
            }
        });
    }
}

thread_local! {
    static SLOTS: RefCell<HashMap<u64, Slot>> = RefCell::new(HashMap::new());
}

/// Runs `f` on this thread's worker for `config` (made on first use), unless the slots are
/// already in use (a hook running inside another).
fn with_slot<R>(config: &Arc<Config>, f: impl FnOnce(&mut Slot) -> R) -> Option<R> {
    SLOTS.with(|slots| {
        let mut slots = slots.try_borrow_mut().ok()?;
        if !slots.contains_key(&config.id) {
            // Workers of configurations Envoy has dropped (a listener update) go first.
            slots.retain(|_, s| s.config.strong_count() > 0);
            let mut worker = Worker::new(config.plan.clone(), random_u64(), Box::new(random));
            // Prepares the shared leases; the tick period is the main thread's business.
            let _ = worker.handle_configure(&mut Process);
            slots.insert(config.id, Slot { config: Arc::downgrade(config), worker, adopted_at: 0, calls: HashMap::new() });
        }
        slots.get_mut(&config.id).map(f)
    })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn random(buf: &mut [u8]) {
    // Checked when the configuration loads; should a later call fail, the bytes stay zeros
    // rather than panicking.
    let _ = getrandom::getrandom(buf);
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random(&mut b);
    u64::from_le_bytes(b)
}

/// Runs a hook, turning a panic into `fallback` and a log line.
fn guard<R>(hook: &str, fallback: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        log(Level::Critical, &format!("oidc: a panic in {hook} was caught; a request it served gets 500, Envoy keeps serving"));
        fallback()
    })
}

/// [`guard`] for a hook that returns nothing.
fn quiet(hook: &str, f: impl FnOnce()) {
    guard(hook, || (), f)
}

// ---- a request ----

/// The request's headers and attributes, read on demand during the hook.
struct View(Filter);

fn text(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}

impl RequestView for View {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0.request_header(name).map(text)
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        self.0.attribute(abi::ATTR_SHA256_PEER_CERTIFICATE_DIGEST).map(|b| text(b).into_owned())
    }

    fn route_policy(&self) -> Option<String> {
        self.0.route_metadata("envoy-oidc", "policy").map(|b| text(b).into_owned())
    }

    fn route_name(&self) -> Option<String> {
        self.0.attribute(abi::ATTR_XDS_ROUTE_NAME).map(|b| text(b).into_owned())
    }
}

/// The headers of `call` as Envoy takes them (`:method`, `:path` and `host` first).
fn call_headers(call: &IdpCall) -> Vec<module_http_header> {
    let mut headers = Vec::with_capacity(call.headers.len() + 3);
    headers.push(module_http_header::of(b":method", call.method.as_bytes()));
    headers.push(module_http_header::of(b":path", call.path.as_bytes()));
    headers.push(module_http_header::of(b"host", call.authority.as_bytes()));
    headers.extend(call.headers.iter().map(|(k, v)| module_http_header::of(k.as_str().as_bytes(), v.as_str().as_bytes())));
    headers
}

fn send(fe: Filter, reply: &Reply) {
    let mut headers: Vec<module_http_header> =
        reply.headers.iter().map(|(k, v)| module_http_header::of(k.as_str().as_bytes(), v.as_str().as_bytes())).collect();
    fe.send_response(reply.status, &mut headers, &reply.body, "oidc");
}

/// The fixed answer when the core cannot be reached (a panic, a hook inside a hook).
fn internal_error(fe: Filter) {
    let mut headers = [module_http_header::of(b"content-type", b"application/json"), module_http_header::of(b"cache-control", b"no-store")];
    fe.send_response(500, &mut headers, br#"{"error":"internal_error"}"#, "oidc_internal_error");
}

/// The state of one request.
struct Stream {
    config: Arc<Config>,
    request: Request,
    /// Headers to add to the response (`Set-Cookie`, a rotated refresh token).
    response: Headers,
    /// The call in flight: Envoy's callout id and when it was sent.
    callout: Option<(u64, u64)>,
}

impl Stream {
    /// Carries out `next`; the status to return when still in the request-headers hook
    /// (`in_headers`), where forwarding is `Continue`.
    fn carry_out(&mut self, fe: Filter, next: Next, in_headers: bool) -> u32 {
        let mut next = Some(next);
        let mut status = abi::HEADERS_STOP_ALL_ITERATION_AND_BUFFER;
        // A call Envoy refuses is answered by the core at once: at most two rounds.
        while let Some(n) = next.take() {
            match n {
                Next::Forward(fwd) => {
                    // A header that is set next is replaced anyway.
                    for name in fwd.remove.iter().filter(|n| !fwd.set.iter().any(|(s, _)| s == *n)) {
                        fe.set_request_header(name.as_str(), None);
                    }
                    for (name, value) in &fwd.set {
                        fe.set_request_header(name.as_str(), Some(value.as_str()));
                    }
                    if let Some(path) = &fwd.set_path {
                        fe.set_request_header(":path", Some(path.as_str()));
                    }
                    self.response = fwd.response_add;
                    if in_headers {
                        status = abi::HEADERS_CONTINUE;
                    } else {
                        fe.continue_decoding();
                    }
                }
                Next::Answer(reply) => {
                    send(fe, &reply);
                    status = abi::HEADERS_STOP_ITERATION;
                }
                Next::Call(call) => match fe.callout(&call.cluster, &mut call_headers(&call), &call.body, call.timeout_ms) {
                    Ok(id) => self.callout = Some((id, now_ms())),
                    Err(r) => {
                        let why = format!("Envoy refused the callout (result {r}; is cluster `{}` defined?)", call.cluster);
                        let req = &mut self.request;
                        next = with_slot(&self.config, |s| s.worker.call_not_sent(req, &why, &mut Process, now_ms()));
                        if next.is_none() {
                            internal_error(fe);
                            status = abi::HEADERS_STOP_ITERATION;
                        }
                    }
                },
            }
        }
        status
    }

    fn request_headers(&mut self, fe: Filter) -> u32 {
        let view = View(fe);
        #[cfg(feature = "panic-test")]
        if view.header("x-oidc-test-panic").is_some() {
            panic!("x-oidc-test-panic");
        }
        let now = now_ms();
        let (config, req) = (&self.config, &mut self.request);
        let next = with_slot(config, |s| {
            if now.saturating_sub(s.adopted_at) >= TICK_MS {
                s.adopted_at = now;
                s.worker.handle_adopt(&mut Process, now);
            }
            let next = s.worker.start(req, &view, &mut Process, now);
            s.flush(config, |id, v, h| fe.publish(id, v, h));
            next
        });
        match next {
            Some(next) => self.carry_out(fe, next, true),
            None => {
                internal_error(fe);
                abi::HEADERS_STOP_ITERATION
            }
        }
    }

    fn callout_done(&mut self, fe: Filter, id: u64, answer: (Option<u16>, Vec<u8>)) {
        let Some((expected, sent)) = self.callout else { return };
        if expected != id {
            return;
        }
        self.callout = None;
        let now = now_ms();
        let resp = IdpResponse { status: answer.0, body: answer.1, elapsed_ms: now.saturating_sub(sent) };
        let (config, req) = (&self.config, &mut self.request);
        let next = with_slot(config, |s| {
            let next = s.worker.handle_answer(req, &resp, &mut Process, now);
            s.flush(config, |id, v, h| fe.publish(id, v, h));
            next
        });
        match next {
            Some(Some(next)) => {
                self.carry_out(fe, next, false);
            }
            Some(None) => {}
            None => internal_error(fe),
        }
    }
}

// ---- the configuration and its timer ----

/// A thread that commits the configuration's scheduler every [`TICK_MS`] until dropped.
/// The scheduler is deleted after the thread has stopped, on the thread that drops this
/// (Envoy's main thread).
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    _scheduler: Arc<abi::Scheduler>,
}

impl Ticker {
    fn start(scheduler: abi::Scheduler) -> Option<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let scheduler = Arc::new(scheduler);
        let (flag, commits) = (stop.clone(), scheduler.clone());
        let tick = move || {
            let (lock, cv) = &*flag;
            let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                stopped = cv.wait_timeout(stopped, Duration::from_millis(TICK_MS)).unwrap_or_else(|p| p.into_inner()).0;
                if *stopped {
                    return;
                }
                commits.commit();
            }
        };
        let thread = std::thread::Builder::new().name("oidc-ticker".into()).spawn(tick).ok()?;
        Some(Ticker { stop, thread: Some(thread), _scheduler: scheduler })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config_new(ce: abi::Config, bytes: &[u8]) -> Option<Arc<Config>> {
    if getrandom::getrandom(&mut [0u8; 16]).is_err() {
        log(
            Level::Critical,
            "oidc: the system provides no randomness: login state and cookie nonces would be predictable; refusing to load",
        );
        return None;
    }
    let plan = match Plan::parse(bytes) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            log(Level::Critical, &e.to_string());
            return None;
        }
    };
    log(Level::Info, &plan.summary());
    let names = Worker::new(plan.clone(), 0, Box::new(random)).metric_names();
    let metrics = names.into_iter().map(|n| ce.define(&n.name, n.histogram).map(|id| (id, n.histogram))).collect();
    let config = Arc::new(Config { id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed), plan, metrics, ticker: Mutex::new(None) });
    if !abi::is_validation_mode() {
        // The main thread's worker, which the ticks drive; no call is made before the first.
        with_slot(&config, |_| ())?;
        *config.ticker.lock().unwrap_or_else(|p| p.into_inner()) = ce.scheduler().and_then(Ticker::start);
    }
    Some(config)
}

fn config_tick(ce: abi::Config, config: &Arc<Config>) {
    let now = now_ms();
    with_slot(config, |s| {
        let actions = s.worker.handle_tick(&mut Process, now);
        for (tag, call) in actions.calls {
            match ce.callout(&call.cluster, &mut call_headers(&call), &call.body, call.timeout_ms) {
                Ok(id) => {
                    s.calls.insert(id, (tag, now));
                }
                Err(r) => {
                    s.worker.root_call_not_sent(tag);
                    log(
                        Level::Warn,
                        &format!("oidc: cannot call the IdP: Envoy refused the callout to cluster `{}` (result {r})", call.cluster),
                    );
                }
            }
        }
        s.flush(config, |id, v, h| ce.publish(id, v, h));
    });
}

fn config_answer(ce: abi::Config, config: &Arc<Config>, id: u64, answer: (Option<u16>, Vec<u8>)) {
    let now = now_ms();
    with_slot(config, |s| {
        let Some((tag, sent)) = s.calls.remove(&id) else { return };
        let resp = IdpResponse { status: answer.0, body: answer.1, elapsed_ms: now.saturating_sub(sent) };
        s.worker.handle_root_answer(&mut Process, tag, &resp, now);
        s.flush(config, |id, v, h| ce.publish(id, v, h));
    });
}

// ---- exports ----

type Ptr = *const c_void;

/// # Safety
/// `cm` is a pointer `config_new` returned and `config_destroy` has not taken back.
unsafe fn config_ref<'a>(cm: Ptr) -> Option<&'a Arc<Config>> {
    // SAFETY: per the contract.
    unsafe { cm.cast::<Arc<Config>>().as_ref() }
}

/// # Safety
/// `fm` is a pointer `http_filter_new` returned and `http_filter_destroy` has not taken back.
unsafe fn stream<'a>(fm: Ptr) -> Option<&'a mut Stream> {
    // SAFETY: per the contract; Envoy runs one hook of a stream at a time, and the hook that
    // may run inside another (`stream_complete`) does not touch the stream.
    unsafe { fm.cast::<Stream>().cast_mut().as_mut() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(ce: abi::config_envoy, _name: envoy_buffer, config: envoy_buffer) -> Ptr {
    guard("config_new", std::ptr::null, || {
        // SAFETY: Envoy's buffer, alive during the hook.
        let bytes = unsafe { abi::bytes(config) };
        config_new(abi::Config(ce), bytes).map_or(std::ptr::null(), |c| Box::into_raw(Box::new(c)).cast_const().cast())
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(cm: Ptr) {
    quiet("config_destroy", || {
        if cm.is_null() {
            return;
        }
        // SAFETY: the pointer `config_new` made, given back once.
        let config = unsafe { Box::from_raw(cm.cast::<Arc<Config>>().cast_mut()) };
        drop(config.ticker.lock().unwrap_or_else(|p| p.into_inner()).take());
        SLOTS.with(|slots| slots.try_borrow_mut().map(|mut s| s.remove(&config.id)).ok());
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(ce: abi::config_envoy, cm: Ptr, _event: u64) {
    // SAFETY: a live configuration (its scheduler is deleted before it).
    quiet("config_scheduled", || unsafe { config_ref(cm) }.into_iter().for_each(|c| config_tick(abi::Config(ce), c)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    ce: abi::config_envoy,
    cm: Ptr,
    id: u64,
    result: u32,
    headers: *const envoy_http_header,
    n: usize,
    chunks: *const envoy_buffer,
    m: usize,
) {
    quiet("config_http_callout_done", || {
        // SAFETY: a live configuration, and the arrays of this hook.
        if let (Some(config), answer) = unsafe { (config_ref(cm), abi::answer(result, headers, n, chunks, m)) } {
            config_answer(abi::Config(ce), config, id, answer);
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(cm: Ptr, _fe: abi::filter_envoy) -> Ptr {
    guard("http_filter_new", std::ptr::null, || {
        // SAFETY: a live configuration.
        let Some(config) = (unsafe { config_ref(cm) }) else { return std::ptr::null() };
        let stream = Stream { config: config.clone(), request: Request::new(), response: Vec::new(), callout: None };
        Box::into_raw(Box::new(stream)).cast_const().cast()
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(fe: abi::filter_envoy, fm: Ptr, _end: bool) -> u32 {
    let fe = Filter(fe);
    let fail = || {
        internal_error(fe);
        abi::HEADERS_STOP_ITERATION
    };
    // SAFETY: this stream's pointer.
    guard("request_headers", fail, || unsafe { stream(fm) }.map_or_else(fail, |s| s.request_headers(fe)))
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: abi::filter_envoy,
    fm: Ptr,
    id: u64,
    result: u32,
    headers: *const envoy_http_header,
    n: usize,
    chunks: *const envoy_buffer,
    m: usize,
) {
    let fe = Filter(fe);
    guard(
        "http_callout_done",
        || internal_error(fe),
        || {
            // SAFETY: this stream's pointer, and the arrays of this hook.
            if let (Some(s), answer) = unsafe { (stream(fm), abi::answer(result, headers, n, chunks, m)) } {
                s.callout_done(fe, id, answer);
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(fe: abi::filter_envoy, fm: Ptr, _end: bool) -> u32 {
    quiet("response_headers", || {
        // SAFETY: this stream's pointer.
        if let Some(s) = unsafe { stream(fm) } {
            // Added, not set: there may be several Set-Cookie headers.
            for (name, value) in std::mem::take(&mut s.response) {
                Filter(fe).add_response_header(name.as_str(), value.as_str());
            }
        }
    });
    abi::HEADERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: Ptr) {
    quiet("http_filter_destroy", || {
        if !fm.is_null() {
            // SAFETY: the pointer `http_filter_new` made, given back once.
            drop(unsafe { Box::from_raw(fm.cast::<Stream>().cast_mut()) });
        }
    })
}

// Hooks Envoy requires a filter to export, which this filter does not need.

type Fe = abi::filter_envoy;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_: Fe, _: Ptr, _: bool) -> u32 {
    abi::BODY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_: Fe, _: Ptr) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_: Fe, _: Ptr, _: bool) -> u32 {
    abi::BODY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_: Fe, _: Ptr) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_: Fe, _: Ptr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_: Fe, _: Ptr, _: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: Fe,
    _: Ptr,
    _: u64,
    _: *const envoy_http_header,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(_: Fe, _: Ptr, _: u64, _: *const envoy_buffer, _: usize, _: bool) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(_: Fe, _: Ptr, _: u64, _: *const envoy_http_header, _: usize) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_: Fe, _: Ptr, _: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_: Fe, _: Ptr, _: u64, _: u32) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_: Fe, _: Ptr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_: Fe, _: Ptr) {}
