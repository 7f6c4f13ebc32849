//! The Envoy dynamic-module adapter (`liboidc.so`): the hooks Envoy calls, and the carrying
//! out of the core's actions with Envoy's callbacks ([`abi`]). No decision is made here; the
//! core is the one the Wasm build runs.
//!
//! - A filter configuration (`http_filter_config_new`, on Envoy's main thread) parses the
//!   plan once and shares it, read-only, with every worker thread (`Arc<Plan>`).
//! - Each thread keeps its own core [`Worker`] per configuration (`thread_local`): the
//!   core's values are `Rc` and its caches need no lock, as in Wasm, where each worker has
//!   its own VM. The shared data ([`store`]) is the one map they share.
//! - The main thread's worker owns the timer: a thread of ours commits the configuration's
//!   scheduler every [`TICK_MS`], and the tick runs on the main thread, where it may call the
//!   IdP (discovery, key sets, refresh). Worker threads have no timer: before a request they
//!   adopt what was stored, at most every [`TICK_MS`] ([`Worker::handle_adopt`]).
//! - A request's own calls go out from its stream and their answers come back to it
//!   (`http_filter_http_callout_done`), where the core decides.
//! - Every hook catches a panic: a request gets `500`, a configuration is refused, and Envoy
//!   keeps serving.

mod abi;
mod store;

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi::{config_envoy, envoy_buffer, envoy_http_header, filter_envoy, module_buffer, module_http_header};
use envoy_oidc::core::config::Plan;
use envoy_oidc::core::header::Headers;
use envoy_oidc::core::idp::{IdpCall, IdpResponse};
use envoy_oidc::core::log::Level;
use envoy_oidc::core::reply::{Forward, Reply};
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

/// The state of one request.
struct Stream {
    config: Arc<Config>,
    request: Request,
    /// Headers to add to the response (`Set-Cookie`, a rotated refresh token).
    response: Headers,
    /// The call in flight: Envoy's callout id and when it was sent.
    callout: Option<(u64, u64)>,
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

fn log(level: Level, message: &str) {
    // SAFETY: the buffer is read during the call; logging is allowed on every thread.
    unsafe { abi::envoy_dynamic_module_callback_log(level as u32, module_buffer::of(message.as_bytes())) }
}

/// Runs a hook, turning a panic into `fallback` and a log line.
fn guard<R>(hook: &str, fallback: impl FnOnce() -> R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            log(Level::Critical, &format!("oidc: a panic in {hook} was caught; the request gets 500 and Envoy keeps serving"));
            fallback()
        }
    }
}

/// Hands the worker's log lines to Envoy, and its metric deltas through `publish`.
fn flush(slot: &mut Slot, config: &Config, mut publish: impl FnMut(usize, u64, bool)) {
    slot.worker.drain_log(|l| log(l.level, &l.message));
    slot.worker.drain_metrics(|i, v| {
        if let Some(Some((id, histogram))) = config.metrics.get(i) {
            publish(*id, v, *histogram);
        }
    });
}

/// Publishes a metric delta from a stream's hook.
fn publish_from(fe: filter_envoy) -> impl FnMut(usize, u64, bool) {
    move |id, v, histogram| {
        // SAFETY: `fe` is the stream of the running hook; no labels.
        unsafe {
            if histogram {
                abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(fe, id, std::ptr::null_mut(), 0, v);
            } else {
                abi::envoy_dynamic_module_callback_http_filter_increment_counter(fe, id, std::ptr::null_mut(), 0, v);
            }
        }
    }
}

// ---- the request's view of the host ----

/// The request's headers and attributes, read on demand during the hook.
struct View(filter_envoy);

impl View {
    fn attribute(&self, id: u32) -> Option<&[u8]> {
        let mut out = envoy_buffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: the stream of the running hook; the bytes live until it returns.
        let found = unsafe { abi::envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out) };
        // SAFETY: Envoy's buffer, alive during the hook.
        found.then(|| unsafe { abi::bytes(out) })
    }
}

fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

impl RequestView for View {
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let mut out = envoy_buffer { ptr: std::ptr::null(), length: 0 };
        let mut count = 0usize;
        // SAFETY: the stream of the running hook; the value lives until the hook returns or a
        // header of the map is set, which no view outlives.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                abi::REQUEST_HEADER,
                module_buffer::of(name.as_bytes()),
                &mut out,
                0,
                &mut count,
            )
        };
        // SAFETY: as above.
        (found && !out.ptr.is_null()).then(|| text(unsafe { abi::bytes(out) }))
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        self.attribute(abi::ATTR_SHA256_PEER_CERTIFICATE_DIGEST).map(|b| text(b).into_owned())
    }

    fn route_policy(&self) -> Option<String> {
        let mut out = envoy_buffer { ptr: std::ptr::null(), length: 0 };
        // SAFETY: the stream of the running hook; the bytes live until it returns.
        let found = unsafe {
            abi::envoy_dynamic_module_callback_http_get_metadata_string(
                self.0,
                abi::METADATA_ROUTE,
                module_buffer::of(b"envoy-oidc"),
                module_buffer::of(b"policy"),
                &mut out,
            )
        };
        // SAFETY: as above.
        found.then(|| text(unsafe { abi::bytes(out) }).into_owned())
    }

    fn route_name(&self) -> Option<String> {
        self.attribute(abi::ATTR_XDS_ROUTE_NAME).map(|b| text(b).into_owned())
    }
}

// ---- carrying out ----

/// The headers of `call` as Envoy takes them (`:method`, `:path` and `host` first).
fn call_headers(call: &IdpCall) -> Vec<module_http_header> {
    let mut headers = Vec::with_capacity(call.headers.len() + 3);
    headers.push(module_http_header::of(b":method", call.method.as_bytes()));
    headers.push(module_http_header::of(b":path", call.path.as_bytes()));
    headers.push(module_http_header::of(b"host", call.authority.as_bytes()));
    headers.extend(call.headers.iter().map(|(k, v)| module_http_header::of(k.as_str().as_bytes(), v.as_str().as_bytes())));
    headers
}

/// Sends a request's call; Envoy's callout id, or its refusal.
fn dispatch(fe: filter_envoy, call: &IdpCall) -> Result<u64, u32> {
    let mut headers = call_headers(call);
    let mut id = 0u64;
    // SAFETY: the stream of the running hook; every buffer outlives the call.
    let r = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_http_callout(
            fe,
            &mut id,
            module_buffer::of(call.cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            module_buffer::of(&call.body),
            call.timeout_ms,
        )
    };
    if r == abi::CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(r)
    }
}

/// Sends a background call from the main thread.
fn dispatch_root(ce: config_envoy, call: &IdpCall) -> Result<u64, u32> {
    let mut headers = call_headers(call);
    let mut id = 0u64;
    // SAFETY: the configuration of the running main-thread hook; buffers outlive the call.
    let r = unsafe {
        abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
            ce,
            &mut id,
            module_buffer::of(call.cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            module_buffer::of(&call.body),
            call.timeout_ms,
        )
    };
    if r == abi::CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(r)
    }
}

/// A callout's answer as the core reads it.
///
/// # Safety
/// The arrays are the ones Envoy handed to the running hook.
unsafe fn answer(
    result: u32,
    headers: *const envoy_http_header,
    n: usize,
    chunks: *const envoy_buffer,
    m: usize,
    elapsed_ms: u64,
) -> IdpResponse {
    let mut resp = IdpResponse { status: None, body: Vec::new(), elapsed_ms };
    if result != abi::CALLOUT_SUCCESS {
        return resp;
    }
    // SAFETY: per the contract, `n` headers and `m` chunks alive during the hook.
    let headers = if headers.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(headers, n) } };
    for h in headers {
        // SAFETY: Envoy's buffers, alive during the hook.
        let (k, v) = unsafe {
            (
                abi::bytes(envoy_buffer { ptr: h.key_ptr, length: h.key_length }),
                abi::bytes(envoy_buffer { ptr: h.value_ptr, length: h.value_length }),
            )
        };
        if k == b":status" {
            resp.status = std::str::from_utf8(v).ok().and_then(|s| s.trim().parse().ok());
        }
    }
    // SAFETY: as above.
    let chunks = if chunks.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(chunks, m) } };
    for c in chunks {
        // SAFETY: as above.
        resp.body.extend_from_slice(unsafe { abi::bytes(*c) });
    }
    resp
}

fn set_header(fe: filter_envoy, name: &str, value: Option<&str>) {
    let value = value.map_or(module_buffer::NULL, |v| module_buffer::of(v.as_bytes()));
    // SAFETY: the stream of the running hook; a null value removes the header.
    unsafe { abi::envoy_dynamic_module_callback_http_set_header(fe, abi::REQUEST_HEADER, module_buffer::of(name.as_bytes()), value) };
}

fn forward(fe: filter_envoy, fwd: &Forward) {
    for name in fwd.remove.iter().filter(|n| !fwd.set.iter().any(|(s, _)| s == *n)) {
        set_header(fe, name.as_str(), None);
    }
    for (name, value) in &fwd.set {
        set_header(fe, name.as_str(), Some(value.as_str()));
    }
    if let Some(path) = &fwd.set_path {
        set_header(fe, ":path", Some(path.as_str()));
    }
}

fn send(fe: filter_envoy, reply: &Reply) {
    let mut headers: Vec<module_http_header> =
        reply.headers.iter().map(|(k, v)| module_http_header::of(k.as_str().as_bytes(), v.as_str().as_bytes())).collect();
    // SAFETY: the stream of the running hook; every buffer outlives the call. Envoy may run
    // `stream_complete` inside, which touches nothing of ours.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            fe,
            u32::from(reply.status),
            headers.as_mut_ptr(),
            headers.len(),
            module_buffer::of(&reply.body),
            module_buffer::of(b"oidc"),
        )
    }
}

/// The fixed answer when the core cannot be reached (a panic, a hook inside a hook).
fn internal_error(fe: filter_envoy) {
    let body = br#"{"error":"internal_error"}"#;
    let mut headers = [module_http_header::of(b"content-type", b"application/json"), module_http_header::of(b"cache-control", b"no-store")];
    // SAFETY: as in `send`.
    unsafe {
        abi::envoy_dynamic_module_callback_http_send_response(
            fe,
            500,
            headers.as_mut_ptr(),
            headers.len(),
            module_buffer::of(body),
            module_buffer::of(b"oidc_internal_error"),
        )
    }
}

impl Stream {
    /// Carries out `next`; the status to return when still in the request-headers hook
    /// (`in_headers`), where forwarding is `Continue`.
    fn carry_out(&mut self, fe: filter_envoy, next: Next, in_headers: bool) -> u32 {
        let mut next = Some(next);
        let mut status = abi::HEADERS_STOP_ALL_ITERATION_AND_BUFFER;
        // A call Envoy refuses is answered by the core at once: at most two rounds.
        while let Some(n) = next.take() {
            match n {
                Next::Forward(fwd) => {
                    forward(fe, &fwd);
                    self.response = fwd.response_add;
                    if in_headers {
                        status = abi::HEADERS_CONTINUE;
                    } else {
                        // SAFETY: the stream of the running hook, paused by us.
                        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(fe) };
                    }
                }
                Next::Answer(reply) => {
                    send(fe, &reply);
                    status = abi::HEADERS_STOP_ITERATION;
                }
                Next::Call(call) => match dispatch(fe, &call) {
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

    fn request_headers(&mut self, fe: filter_envoy) -> u32 {
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
            flush(s, config, publish_from(fe));
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

    fn callout_done(&mut self, fe: filter_envoy, id: u64, resp: impl FnOnce(u64) -> IdpResponse) {
        let Some((expected, sent)) = self.callout else { return };
        if expected != id {
            return;
        }
        self.callout = None;
        let now = now_ms();
        let resp = resp(now.saturating_sub(sent));
        let (config, req) = (&self.config, &mut self.request);
        let next = with_slot(config, |s| {
            let next = s.worker.handle_answer(req, &resp, &mut Process, now);
            flush(s, config, publish_from(fe));
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

// ---- the timer ----

/// A thread that commits the configuration's scheduler every [`TICK_MS`] until dropped.
struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    scheduler: SendPtr,
}

/// Envoy's scheduler handle; committing it is allowed from any thread.
#[derive(Clone, Copy)]
struct SendPtr(abi::config_scheduler);
// SAFETY: Envoy documents `…_config_scheduler_commit` as callable from any thread; the
// handle is deleted only after the thread that commits it has been joined.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl Ticker {
    fn start(ce: config_envoy) -> Option<Ticker> {
        // SAFETY: called from `config_new`, on the main thread, with Envoy's configuration.
        let scheduler = SendPtr(unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(ce) });
        if scheduler.0.is_null() {
            return None;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (flag, ticks) = (stop.clone(), scheduler);
        let thread = std::thread::Builder::new()
            .name("oidc-ticker".into())
            .spawn(move || {
                let ticks = ticks;
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    stopped = cv.wait_timeout(stopped, Duration::from_millis(TICK_MS)).unwrap_or_else(|p| p.into_inner()).0;
                    if *stopped {
                        return;
                    }
                    // SAFETY: see `SendPtr`.
                    unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(ticks.0, 0) };
                }
            })
            .ok();
        Some(Ticker { stop, thread, scheduler })
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
        // SAFETY: nothing commits it any more.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0) };
    }
}

// ---- configuration ----

/// # Safety
/// `cm` is a pointer `config_new` returned and `config_destroy` has not taken back.
unsafe fn config_ref<'a>(cm: *const std::ffi::c_void) -> Option<&'a Arc<Config>> {
    // SAFETY: per the contract.
    unsafe { cm.cast::<Arc<Config>>().as_ref() }
}

fn config_new(ce: config_envoy, bytes: &[u8]) -> Option<Arc<Config>> {
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
    // SAFETY: no arguments; main thread.
    let validating = unsafe { abi::envoy_dynamic_module_callback_is_validation_mode() };
    log(Level::Info, &plan.summary());
    let names = Worker::new(plan.clone(), 0, Box::new(random)).metric_names();
    let metrics = names
        .into_iter()
        .map(|n| {
            let mut id = 0usize;
            // SAFETY: `config_new` is where metrics are defined; the name outlives the call.
            let r = unsafe {
                if n.histogram {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                        ce,
                        module_buffer::of(n.name.as_bytes()),
                        std::ptr::null_mut(),
                        0,
                        &mut id,
                    )
                } else {
                    abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                        ce,
                        module_buffer::of(n.name.as_bytes()),
                        std::ptr::null_mut(),
                        0,
                        &mut id,
                    )
                }
            };
            (r == abi::METRICS_SUCCESS).then_some((id, n.histogram))
        })
        .collect();
    let config = Arc::new(Config { id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed), plan, metrics, ticker: Mutex::new(None) });
    if !validating {
        // The main thread's worker, which the ticks drive; no call is made before the first.
        with_slot(&config, |_| ())?;
        *config.ticker.lock().unwrap_or_else(|p| p.into_inner()) = Ticker::start(ce);
    }
    Some(config)
}

fn config_tick(ce: config_envoy, config: &Arc<Config>) {
    let now = now_ms();
    with_slot(config, |s| {
        let actions = s.worker.handle_tick(&mut Process, now);
        for (tag, call) in actions.calls {
            match dispatch_root(ce, &call) {
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
        flush(s, config, publish_from_config(ce));
    });
}

fn config_answer(ce: config_envoy, config: &Arc<Config>, id: u64, resp: impl FnOnce(u64) -> IdpResponse) {
    let now = now_ms();
    with_slot(config, |s| {
        let Some((tag, sent)) = s.calls.remove(&id) else { return };
        let resp = resp(now.saturating_sub(sent));
        s.worker.handle_root_answer(&mut Process, tag, &resp, now);
        flush(s, config, publish_from_config(ce));
    });
}

/// Publishes a metric delta from a main-thread hook of the configuration.
fn publish_from_config(ce: config_envoy) -> impl FnMut(usize, u64, bool) {
    move |id, v, histogram| {
        // SAFETY: the configuration of the running main-thread hook; no labels.
        unsafe {
            if histogram {
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(ce, id, std::ptr::null_mut(), 0, v);
            } else {
                abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(ce, id, std::ptr::null_mut(), 0, v);
            }
        }
    }
}

// ---- exports ----

type Ptr = *const std::ffi::c_void;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const std::ffi::c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(ce: config_envoy, _name: envoy_buffer, config: envoy_buffer) -> Ptr {
    guard("config_new", std::ptr::null, || {
        // SAFETY: Envoy's buffer, alive during the hook.
        let bytes = unsafe { abi::bytes(config) };
        match config_new(ce, bytes) {
            Some(c) => Box::into_raw(Box::new(c)).cast_const().cast(),
            None => std::ptr::null(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(cm: Ptr) {
    guard(
        "config_destroy",
        || (),
        || {
            if cm.is_null() {
                return;
            }
            // SAFETY: the pointer `config_new` made, given back once.
            let config = unsafe { Box::from_raw(cm.cast::<Arc<Config>>().cast_mut()) };
            let ticker = config.ticker.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(ticker);
            SLOTS.with(|slots| {
                if let Ok(mut slots) = slots.try_borrow_mut() {
                    slots.remove(&config.id);
                }
            });
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(ce: config_envoy, cm: Ptr, _event: u64) {
    guard(
        "config_scheduled",
        || (),
        || {
            // SAFETY: a live configuration (Envoy deletes the scheduler before it).
            if let Some(config) = unsafe { config_ref(cm) } {
                config_tick(ce, config);
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    ce: config_envoy,
    cm: Ptr,
    id: u64,
    result: u32,
    headers: *const envoy_http_header,
    headers_size: usize,
    chunks: *const envoy_buffer,
    chunks_size: usize,
) {
    guard(
        "config_http_callout_done",
        || (),
        || {
            // SAFETY: a live configuration.
            if let Some(config) = unsafe { config_ref(cm) } {
                // SAFETY: the arrays of this hook.
                config_answer(ce, config, id, |elapsed| unsafe { answer(result, headers, headers_size, chunks, chunks_size, elapsed) });
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(cm: Ptr, _fe: filter_envoy) -> Ptr {
    guard("http_filter_new", std::ptr::null, || {
        // SAFETY: a live configuration.
        let Some(config) = (unsafe { config_ref(cm) }) else { return std::ptr::null() };
        let stream = Stream { config: config.clone(), request: Request::new(), response: Vec::new(), callout: None };
        Box::into_raw(Box::new(stream)).cast_const().cast()
    })
}

/// # Safety
/// `fm` is a pointer `http_filter_new` returned and `http_filter_destroy` has not taken back.
unsafe fn stream<'a>(fm: Ptr) -> Option<&'a mut Stream> {
    // SAFETY: per the contract; Envoy runs one hook of a stream at a time, and the hooks that
    // may run inside another (`stream_complete`) do not touch the stream.
    unsafe { fm.cast::<Stream>().cast_mut().as_mut() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(fe: filter_envoy, fm: Ptr, _end_of_stream: bool) -> u32 {
    let fail = || {
        internal_error(fe);
        abi::HEADERS_STOP_ITERATION
    };
    guard("request_headers", fail, || {
        // SAFETY: this stream's pointer.
        match unsafe { stream(fm) } {
            Some(s) => s.request_headers(fe),
            None => fail(),
        }
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: filter_envoy,
    fm: Ptr,
    id: u64,
    result: u32,
    headers: *const envoy_http_header,
    headers_size: usize,
    chunks: *const envoy_buffer,
    chunks_size: usize,
) {
    guard(
        "http_callout_done",
        || internal_error(fe),
        || {
            // SAFETY: this stream's pointer.
            if let Some(s) = unsafe { stream(fm) } {
                // SAFETY: the arrays of this hook.
                s.callout_done(fe, id, |elapsed| unsafe { answer(result, headers, headers_size, chunks, chunks_size, elapsed) });
            }
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(fe: filter_envoy, fm: Ptr, _end_of_stream: bool) -> u32 {
    guard(
        "response_headers",
        || abi::HEADERS_CONTINUE,
        || {
            // SAFETY: this stream's pointer.
            if let Some(s) = unsafe { stream(fm) } {
                // Added, not set: there may be several Set-Cookie headers.
                for (name, value) in std::mem::take(&mut s.response) {
                    // SAFETY: the stream of the running hook; buffers outlive the call.
                    unsafe {
                        abi::envoy_dynamic_module_callback_http_add_header(
                            fe,
                            abi::RESPONSE_HEADER,
                            module_buffer::of(name.as_str().as_bytes()),
                            module_buffer::of(value.as_str().as_bytes()),
                        )
                    };
                }
            }
            abi::HEADERS_CONTINUE
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: Ptr) {
    guard(
        "http_filter_destroy",
        || (),
        || {
            if !fm.is_null() {
                // SAFETY: the pointer `http_filter_new` made, given back once.
                drop(unsafe { Box::from_raw(fm.cast::<Stream>().cast_mut()) });
            }
        },
    )
}

// Hooks Envoy requires a filter to export, which this filter does not need.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(_fe: filter_envoy, _fm: Ptr, _end: bool) -> u32 {
    abi::BODY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(_fe: filter_envoy, _fm: Ptr) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(_fe: filter_envoy, _fm: Ptr, _end: bool) -> u32 {
    abi::BODY_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(_fe: filter_envoy, _fm: Ptr) -> u32 {
    abi::TRAILERS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_fe: filter_envoy, _fm: Ptr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_fe: filter_envoy, _fm: Ptr, _event: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: filter_envoy,
    _fm: Ptr,
    _id: u64,
    _h: *const envoy_http_header,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: filter_envoy,
    _fm: Ptr,
    _id: u64,
    _d: *const envoy_buffer,
    _n: usize,
    _end: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: filter_envoy,
    _fm: Ptr,
    _id: u64,
    _h: *const envoy_http_header,
    _n: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(_fe: filter_envoy, _fm: Ptr, _id: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(_fe: filter_envoy, _fm: Ptr, _id: u64, _reason: u32) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(_fe: filter_envoy, _fm: Ptr) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(_fe: filter_envoy, _fm: Ptr) {}
