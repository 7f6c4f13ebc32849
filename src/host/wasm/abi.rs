//! The proxy-wasm ABI (0.2.1) host calls the filter makes, declared here rather than taken
//! from the SDK: the SDK panics on statuses and token ids a host may legitimately hand
//! over (`unexpected status`, `invalid token_id` after an instance was re-created), and a
//! panic kills the VM. Every wrapper returns the host's status instead; statuses and enums
//! cross the boundary as plain integers, so no value a host sends can be undefined
//! behaviour here.

use std::ptr::null_mut;

/// `proxy_status_t`.
pub const OK: u32 = 0;
pub const CAS_MISMATCH: u32 = 8;

/// `proxy_header_map_type_t`.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;
pub const CALL_RESPONSE_HEADERS: u32 = 6;

/// `proxy_buffer_type_t`.
pub const CALL_RESPONSE_BODY: u32 = 4;
pub const PLUGIN_CONFIGURATION: u32 = 7;

/// `proxy_metric_type_t`.
pub const COUNTER: u32 = 0;
pub const HISTOGRAM: u32 = 2;

/// `proxy_stream_type_t`.
const HTTP_REQUEST: u32 = 0;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(kind: u32, start: usize, max: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(map: u32, key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_add_header_map_value(map: u32, key: *const u8, key_size: usize, value: *const u8, value_size: usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_set_effective_context(context: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_http_call(
        upstream: *const u8,
        upstream_size: usize,
        headers: *const u8,
        headers_size: usize,
        body: *const u8,
        body_size: usize,
        trailers: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        token: *mut u32,
    ) -> u32;
    fn proxy_get_shared_data(key: *const u8, key_size: usize, data: *mut *mut u8, size: *mut usize, cas: *mut u32) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_size: usize, value: *const u8, value_size: usize, cas: u32) -> u32;
    fn proxy_get_property(path: *const u8, path_size: usize, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
    fn proxy_record_metric(id: u32, value: u64) -> u32;
}

/// Takes ownership of a buffer the host allocated through [`super::proxy_on_memory_allocate`].
///
/// # Safety
/// `data` is null, or was returned by `proxy_on_memory_allocate(size)` for exactly `size`.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract above, a boxed slice of `size` bytes, now ours.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Calls a host function that returns a buffer; `None` unless the status is `OK`.
fn bytes(f: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    let status = f(&mut data, &mut size);
    // SAFETY: the host wrote (data, size) from our allocator, or left them null and 0.
    let v = unsafe { owned(data, size) };
    (status == OK).then_some(v)
}

pub fn log(level: u32, message: &str) {
    // SAFETY: a valid slice for the duration of the call.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// Milliseconds since the epoch (0 if the host will not tell).
pub fn now_ms() -> u64 {
    let mut t = 0u64;
    // SAFETY: a valid out pointer.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    if status == OK {
        t / 1_000_000
    } else {
        0
    }
}

pub fn set_tick_period(ms: u64) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(u32::try_from(ms).unwrap_or(u32::MAX)) }
}

pub fn buffer(kind: u32, max: usize) -> Vec<u8> {
    // SAFETY: valid out pointers.
    bytes(|d, s| unsafe { proxy_get_buffer_bytes(kind, 0, max, d, s) }).unwrap_or_default()
}

/// A whole header map in the wire format ([`crate::core::wire`]).
pub fn header_pairs(map: u32) -> Vec<u8> {
    // SAFETY: valid out pointers.
    bytes(|d, s| unsafe { proxy_get_header_map_pairs(map, d, s) }).unwrap_or_default()
}

pub fn header(map: u32, name: &str) -> Option<Vec<u8>> {
    // SAFETY: a valid slice and out pointers.
    bytes(|d, s| unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), d, s) })
}

pub fn set_header(map: u32, name: &str, value: &str) {
    // SAFETY: valid slices.
    unsafe { proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
}

pub fn remove_header(map: u32, name: &str) {
    // SAFETY: a valid slice.
    unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) };
}

pub fn add_header(map: u32, name: &str, value: &str) {
    // SAFETY: valid slices.
    unsafe { proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
}

/// A local reply; `headers` in the wire format.
pub fn send_response(status: u16, headers: &[u8], body: &[u8]) -> u32 {
    // SAFETY: valid slices.
    unsafe { proxy_send_local_response(u32::from(status), null_mut(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1) }
}

/// Lets the paused request go on.
pub fn resume_request() -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_continue_stream(HTTP_REQUEST) }
}

/// Points the host at context `ctx` for the calls that follow. Envoy delivers every call's
/// answer to the root context (its calls belong to the root), so the answer to a request's
/// own call is carried out after pointing the host back at that request; Kong delivers it
/// in the request's context already, and the call changes nothing there.
pub fn set_effective_context(ctx: u32) -> u32 {
    // SAFETY: no pointers.
    unsafe { proxy_set_effective_context(ctx) }
}

/// Dispatches a call; the token, or the host's status.
pub fn http_call(upstream: &str, headers: &[u8], body: &[u8], timeout_ms: u64) -> Result<u32, u32> {
    let mut token = 0u32;
    let trailers = crate::core::wire::serialize(std::iter::empty());
    let timeout = u32::try_from(timeout_ms).unwrap_or(u32::MAX);
    // SAFETY: valid slices and out pointer.
    let status = unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout,
            &mut token,
        )
    };
    if status == OK {
        Ok(token)
    } else {
        Err(status)
    }
}

/// A shared-data value and its CAS (`None` value: absent; CAS 0: absent).
pub fn shared(key: &str) -> (Option<Vec<u8>>, u32) {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: a valid slice and out pointers.
    let status = unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    // SAFETY: as in `bytes`.
    let v = unsafe { owned(data, size) };
    match status {
        OK => ((!v.is_empty()).then_some(v), cas),
        _ => (None, 0),
    }
}

pub fn set_shared(key: &str, value: &[u8], cas: u32) -> u32 {
    // SAFETY: valid slices.
    unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) }
}

/// A property by path (segments joined with NUL, as the ABI wants).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    // SAFETY: a valid slice and out pointers.
    bytes(|d, s| unsafe { proxy_get_property(joined.as_ptr(), joined.len(), d, s) })
}

pub fn define_metric(kind: u32, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: a valid slice and out pointer.
    let status = unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
}

pub fn increment_metric(id: u32, by: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) };
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    unsafe { proxy_record_metric(id, value) };
}
