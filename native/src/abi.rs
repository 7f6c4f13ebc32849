//! The part of Envoy's dynamic-module C ABI (`source/extensions/dynamic_modules/abi/abi.h`)
//! this module uses, declared by hand: the event hooks it exports are in the crate root,
//! these are the callbacks into Envoy. Every symbol here is exported by Envoy 1.39.3 and
//! 1.40.0 with this signature (`native/check-abi` checks the library against the installed
//! Envoy's exported symbols and ABI version string when it is built):
//! a callback only 1.40 has would make the library fail to load on 1.39, since it is bound
//! when Envoy opens it.
//!
//! Values Envoy hands over (statuses, enums) are plain integers, never Rust enums, so that
//! no value a newer Envoy sends can be undefined behaviour.
//!
//! The `unsafe` stays here: [`Filter`] and [`Config`] wrap Envoy's handles of a stream and of
//! a configuration, valid during the hook that handed them over, with safe methods.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

// `envoy_dynamic_module_type_log_level` numbers its levels as the core's `Level` does.
use envoy_oidc::core::log::Level;

/// What `envoy_dynamic_module_on_program_init` returns: Envoy 1.40 speaks `v0.2.0`
/// (1.39 `v0.1.0`, and loads this with a warning).
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// Bytes owned by Envoy, valid during the hook that handed them over.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct envoy_buffer {
    pub ptr: *const c_char,
    pub length: usize,
}

/// Bytes owned by the module, read during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct module_buffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl module_buffer {
    pub fn of(b: &[u8]) -> Self {
        module_buffer { ptr: b.as_ptr().cast(), length: b.len() }
    }
    /// `http_set_header` with a null value removes the header.
    pub const NULL: Self = module_buffer { ptr: std::ptr::null(), length: 0 };
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct module_http_header {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl module_http_header {
    pub fn of(k: &[u8], v: &[u8]) -> Self {
        module_http_header { key_ptr: k.as_ptr().cast(), key_length: k.len(), value_ptr: v.as_ptr().cast(), value_length: v.len() }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct envoy_http_header {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

pub type config_envoy = *mut c_void;
pub type filter_envoy = *mut c_void;
pub type config_scheduler = *mut c_void;

/// `envoy_dynamic_module_type_http_header_type`.
pub const REQUEST_HEADER: u32 = 0;
pub const RESPONSE_HEADER: u32 = 2;
/// `envoy_dynamic_module_type_http_callout_init_result`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metadata_source`.
pub const METADATA_ROUTE: u32 = 1;
/// `envoy_dynamic_module_type_metrics_result`.
pub const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_attribute_id`.
pub const ATTR_SHA256_PEER_CERTIFICATE_DIGEST: u32 = 38;
pub const ATTR_XDS_ROUTE_NAME: u32 = 61;
/// Filter statuses (`…_on_http_filter_request_headers_status` and friends).
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP_ITERATION: u32 = 1;
pub const HEADERS_STOP_ALL_ITERATION_AND_BUFFER: u32 = 3;
pub const BODY_CONTINUE: u32 = 0;
pub const TRAILERS_CONTINUE: u32 = 0;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: module_buffer);
    pub fn envoy_dynamic_module_callback_is_validation_mode() -> bool;
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: filter_envoy,
        header_type: u32,
        key: module_buffer,
        result: *mut envoy_buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: filter_envoy,
        header_type: u32,
        key: module_buffer,
        value: module_buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: filter_envoy,
        header_type: u32,
        key: module_buffer,
        value: module_buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: filter_envoy,
        status: u32,
        headers: *mut module_http_header,
        headers_size: usize,
        body: module_buffer,
        details: module_buffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: filter_envoy);
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: filter_envoy,
        callout_id: *mut u64,
        cluster: module_buffer,
        headers: *mut module_http_header,
        headers_size: usize,
        body: module_buffer,
        timeout_ms: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: config_envoy,
        callout_id: *mut u64,
        cluster: module_buffer,
        headers: *mut module_http_header,
        headers_size: usize,
        body: module_buffer,
        timeout_ms: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(config: config_envoy) -> config_scheduler;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler: config_scheduler, event_id: u64);
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: config_scheduler);
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(filter: filter_envoy, id: u32, result: *mut envoy_buffer)
        -> bool;
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: filter_envoy,
        source: u32,
        namespace: module_buffer,
        key: module_buffer,
        result: *mut envoy_buffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: config_envoy,
        name: module_buffer,
        label_names: *mut module_buffer,
        label_names_size: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: config_envoy,
        name: module_buffer,
        label_names: *mut module_buffer,
        label_names_size: usize,
        id: *mut usize,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: filter_envoy,
        id: usize,
        label_values: *mut module_buffer,
        label_values_size: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: filter_envoy,
        id: usize,
        label_values: *mut module_buffer,
        label_values_size: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: config_envoy,
        id: usize,
        label_values: *mut module_buffer,
        label_values_size: usize,
        value: u64,
    ) -> u32;
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        config: config_envoy,
        id: usize,
        label_values: *mut module_buffer,
        label_values_size: usize,
        value: u64,
    ) -> u32;
}

/// `http_filter_http_callout` and `http_filter_config_http_callout`: the same call on a
/// stream's or a configuration's handle.
type CalloutFn = unsafe extern "C" fn(*mut c_void, *mut u64, module_buffer, *mut module_http_header, usize, module_buffer, u64) -> u32;

/// The counter and histogram callbacks, on a stream's or a configuration's handle.
type MetricFn = unsafe extern "C" fn(*mut c_void, usize, *mut module_buffer, usize, u64) -> u32;

/// Starts a callout with `f`; Envoy's callout id, or its refusal.
///
/// # Safety
/// `handle` is the handle `f` takes, valid during the running hook.
unsafe fn start_callout(
    f: CalloutFn,
    handle: *mut c_void,
    cluster: &str,
    headers: &mut [module_http_header],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u64, u32> {
    let mut id = 0u64;
    // Buffers outlive the call.
    let r =
        f(handle, &mut id, module_buffer::of(cluster.as_bytes()), headers.as_mut_ptr(), headers.len(), module_buffer::of(body), timeout_ms);
    if r == CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(r)
    }
}

/// Adds `v` to metric `id` with `f` (no labels).
///
/// # Safety
/// `handle` is the handle `f` takes, valid during the running hook.
unsafe fn add_to_metric(f: MetricFn, handle: *mut c_void, id: usize, v: u64) {
    f(handle, id, std::ptr::null_mut(), 0, v);
}

/// The bytes of an Envoy buffer.
///
/// # Safety
/// `b` was handed over by Envoy in the running hook.
pub unsafe fn bytes<'a>(b: envoy_buffer) -> &'a [u8] {
    if b.ptr.is_null() || b.length == 0 {
        &[]
    } else {
        // SAFETY: per the contract, `length` bytes at `ptr`, alive during the hook.
        unsafe { std::slice::from_raw_parts(b.ptr.cast(), b.length) }
    }
}

fn empty() -> envoy_buffer {
    envoy_buffer { ptr: std::ptr::null(), length: 0 }
}

/// Envoy's handle of one stream, valid during the hook that handed it over (and only on the
/// stream's worker thread, where that hook runs).
#[derive(Clone, Copy)]
pub struct Filter(pub filter_envoy);

impl Filter {
    /// The first value of request header `name` (lowercase); the bytes live until the hook
    /// returns or a request header is set.
    pub fn request_header(&self, name: &str) -> Option<&[u8]> {
        let (mut out, mut count) = (empty(), 0usize);
        // SAFETY: the stream of the running hook; `name` outlives the call.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                REQUEST_HEADER,
                module_buffer::of(name.as_bytes()),
                &mut out,
                0,
                &mut count,
            )
        };
        // SAFETY: Envoy's buffer, alive during the hook.
        (found && !out.ptr.is_null()).then(|| unsafe { bytes(out) })
    }

    /// Sets request header `name`, or removes it (`None`).
    pub fn set_request_header(&self, name: &str, value: Option<&str>) {
        let value = value.map_or(module_buffer::NULL, |v| module_buffer::of(v.as_bytes()));
        // SAFETY: the stream of the running hook; buffers outlive the call.
        unsafe { envoy_dynamic_module_callback_http_set_header(self.0, REQUEST_HEADER, module_buffer::of(name.as_bytes()), value) };
    }

    pub fn add_response_header(&self, name: &str, value: &str) {
        // SAFETY: as above.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                RESPONSE_HEADER,
                module_buffer::of(name.as_bytes()),
                module_buffer::of(value.as_bytes()),
            )
        };
    }

    /// A string attribute (`ATTR_*`).
    pub fn attribute(&self, id: u32) -> Option<&[u8]> {
        let mut out = empty();
        // SAFETY: the stream of the running hook.
        let found = unsafe { envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out) };
        // SAFETY: Envoy's buffer, alive during the hook.
        found.then(|| unsafe { bytes(out) })
    }

    /// A string value of the route's metadata.
    pub fn route_metadata(&self, namespace: &str, key: &str) -> Option<&[u8]> {
        let mut out = empty();
        // SAFETY: the stream of the running hook; buffers outlive the call.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                self.0,
                METADATA_ROUTE,
                module_buffer::of(namespace.as_bytes()),
                module_buffer::of(key.as_bytes()),
                &mut out,
            )
        };
        // SAFETY: Envoy's buffer, alive during the hook.
        found.then(|| unsafe { bytes(out) })
    }

    /// Answers the request. Envoy may run `stream_complete` inside.
    pub fn send_response(&self, status: u16, headers: &mut [module_http_header], body: &[u8], details: &str) {
        // SAFETY: the stream of the running hook; buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                u32::from(status),
                headers.as_mut_ptr(),
                headers.len(),
                module_buffer::of(body),
                module_buffer::of(details.as_bytes()),
            )
        }
    }

    /// Resumes the request this filter paused.
    pub fn continue_decoding(&self) {
        // SAFETY: the stream of the running hook.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// Calls `cluster`; Envoy's callout id, or its refusal.
    pub fn callout(&self, cluster: &str, headers: &mut [module_http_header], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        // SAFETY: the stream of the running hook, the handle this callback takes.
        unsafe { start_callout(envoy_dynamic_module_callback_http_filter_http_callout, self.0, cluster, headers, body, timeout_ms) }
    }

    /// Adds `v` to metric `id` (a counter, or a histogram's sample).
    pub fn publish(&self, id: usize, v: u64, histogram: bool) {
        let f: MetricFn = if histogram {
            envoy_dynamic_module_callback_http_filter_record_histogram_value
        } else {
            envoy_dynamic_module_callback_http_filter_increment_counter
        };
        // SAFETY: the stream of the running hook, the handle these callbacks take.
        unsafe { add_to_metric(f, self.0, id, v) }
    }
}

/// Envoy's handle of a filter configuration, valid in the main-thread hook that handed it
/// over.
#[derive(Clone, Copy)]
pub struct Config(pub config_envoy);

impl Config {
    /// Defines a metric (only during `config_new`); its id.
    pub fn define(&self, name: &str, histogram: bool) -> Option<usize> {
        let mut id = 0usize;
        let name = module_buffer::of(name.as_bytes());
        // SAFETY: the configuration of the running `config_new`; `name` outlives the call.
        let r = unsafe {
            if histogram {
                envoy_dynamic_module_callback_http_filter_config_define_histogram(self.0, name, std::ptr::null_mut(), 0, &mut id)
            } else {
                envoy_dynamic_module_callback_http_filter_config_define_counter(self.0, name, std::ptr::null_mut(), 0, &mut id)
            }
        };
        (r == METRICS_SUCCESS).then_some(id)
    }

    pub fn publish(&self, id: usize, v: u64, histogram: bool) {
        let f: MetricFn = if histogram {
            envoy_dynamic_module_callback_http_filter_config_record_histogram_value
        } else {
            envoy_dynamic_module_callback_http_filter_config_increment_counter
        };
        // SAFETY: the configuration of the running main-thread hook, the handle these take.
        unsafe { add_to_metric(f, self.0, id, v) }
    }

    /// Calls `cluster` from the main thread; the answer comes to `config_http_callout_done`.
    pub fn callout(&self, cluster: &str, headers: &mut [module_http_header], body: &[u8], timeout_ms: u64) -> Result<u64, u32> {
        // SAFETY: the configuration of the running main-thread hook, the handle this takes.
        unsafe { start_callout(envoy_dynamic_module_callback_http_filter_config_http_callout, self.0, cluster, headers, body, timeout_ms) }
    }

    /// A scheduler whose commits run `config_scheduled` on the main thread.
    pub fn scheduler(&self) -> Option<Scheduler> {
        // SAFETY: the configuration of the running `config_new`.
        let s = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!s.is_null()).then_some(Scheduler(s))
    }
}

/// A configuration's scheduler: committing it is allowed from any thread; deleted on drop.
pub struct Scheduler(config_scheduler);

// SAFETY: Envoy documents `…_config_scheduler_commit` as callable from any thread; the owner
// deletes it only after every thread that commits it has stopped.
unsafe impl Send for Scheduler {}
// SAFETY: as above.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self) {
        // SAFETY: see the `Send` impl.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: nothing commits it any more (the owner joined its thread first).
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

pub fn log(level: Level, message: &str) {
    // SAFETY: the buffer is read during the call; logging is allowed on every thread.
    unsafe { envoy_dynamic_module_callback_log(level as u32, module_buffer::of(message.as_bytes())) }
}

pub fn is_validation_mode() -> bool {
    // SAFETY: no arguments.
    unsafe { envoy_dynamic_module_callback_is_validation_mode() }
}

/// A callout's answer: its status (none if it failed in transit) and body.
///
/// # Safety
/// The arrays are the ones Envoy handed to the running hook.
pub unsafe fn answer(
    result: u32,
    headers: *const envoy_http_header,
    n: usize,
    chunks: *const envoy_buffer,
    m: usize,
) -> (Option<u16>, Vec<u8>) {
    let mut body = Vec::new();
    if result != CALLOUT_SUCCESS {
        return (None, body);
    }
    // SAFETY: per the contract, `n` headers and `m` chunks, alive during the hook.
    let headers = if headers.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(headers, n) } };
    // SAFETY: as above.
    let field = |ptr, length| unsafe { bytes(envoy_buffer { ptr, length }) };
    let status = headers
        .iter()
        .find(|h| field(h.key_ptr, h.key_length) == b":status")
        .and_then(|h| std::str::from_utf8(field(h.value_ptr, h.value_length)).ok()?.trim().parse().ok());
    // SAFETY: as above.
    let chunks = if chunks.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(chunks, m) } };
    for c in chunks {
        // SAFETY: as above.
        body.extend_from_slice(unsafe { bytes(*c) });
    }
    (status, body)
}
