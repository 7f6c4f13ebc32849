//! Small host-call helpers: the clock, randomness, logging, IdP calls.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::core::idp::{IdpRequest, IdpResponse};

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

/// Random bytes from WASI `random_get`. The root context refuses to load when the host
/// has no randomness ([`has_randomness`]); should a later call still fail, the buffer is
/// filled from the clock so that nothing panics. That is weak randomness (predictable login
/// state, possibly repeated cookie nonces), which is why loading fails closed instead.
pub fn fill_random(buf: &mut [u8]) {
    if getrandom::getrandom(buf).is_err() {
        let t = now_ms().to_be_bytes();
        for (b, (i, x)) in buf.iter_mut().zip(t.iter().cycle().enumerate()) {
            *b = x ^ (i as u8);
        }
    }
}

/// Whether the host provides randomness (checked once at load).
pub fn has_randomness() -> bool {
    getrandom::getrandom(&mut [0u8; 16]).is_ok()
}

/// A header of the current request as text; bytes that are not UTF-8 become U+FFFD
/// (the SDK's `String` getters would panic on them).
pub fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// All headers of the current request in one host call, for when several are needed: each
/// host call that returns data also calls back into the VM to allocate (`make bench`: about
/// 2 µs of CPU per header read), and a session request looks at up to nine headers.
pub struct RequestHeaders(Vec<u8>);

#[link(wasm_import_module = "env")]
extern "C" {
    // Declared as the SDK declares it; the SDK's own wrapper panics on a header name that
    // is not UTF-8, and nothing from outside may panic the VM.
    fn proxy_get_header_map_pairs(map_type: MapType, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> Status;
}

impl RequestHeaders {
    pub fn read() -> Self {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: on success the host has written a buffer it allocated through the SDK's
        // `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes), now ours.
        let bytes = unsafe {
            match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
                Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
                _ => Vec::new(),
            }
        };
        RequestHeaders(bytes)
    }

    /// The first value of header `name` (lowercase), as [`request_header`] returns it.
    pub fn get(&self, name: &str) -> Option<String> {
        pairs(&self.0).find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// The pairs of a serialized header map: a u32 count, then a (name length, value length)
/// u32 pair per header, then each name and value followed by a NUL (all little-endian).
/// Stops at the first inconsistency.
fn pairs(b: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let u32_at = |at: usize| -> Option<usize> {
        let w: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(w) as usize)
    };
    let count = u32_at(0).unwrap_or(0);
    let mut data = count.checked_mul(8).and_then(|n| n.checked_add(4)).unwrap_or(usize::MAX);
    (0..count).map_while(move |i| {
        let sizes = i.checked_mul(8)?.checked_add(4)?;
        let (k_len, v_len) = (u32_at(sizes)?, u32_at(sizes.checked_add(4)?)?);
        let k = b.get(data..data.checked_add(k_len)?)?;
        let v_at = data.checked_add(k_len)?.checked_add(1)?;
        let v = b.get(v_at..v_at.checked_add(v_len)?)?;
        data = v_at.checked_add(v_len)?.checked_add(1)?;
        Some((k, v))
    })
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
