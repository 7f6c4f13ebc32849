//! Small host-call helpers: the clock, randomness, logging, IdP calls.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

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
        .map(|b| String::from_utf8_lossy(&b).into_owned())
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
