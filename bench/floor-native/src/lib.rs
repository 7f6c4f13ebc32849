//! The native floor of `make bench`: an Envoy dynamic module (`libfloor.so`) that does
//! nothing (configuration `noop`) or only reads the `Authorization` header (`read`), so that
//! the bench shows what any dynamic module costs before it does any work. It exports the
//! hooks Envoy requires and calls one callback.

use std::ffi::{c_char, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const c_char,
    length: usize,
}

extern "C" {
    fn envoy_dynamic_module_callback_http_get_header(f: *mut c_void, kind: u32, key: Buffer, out: *mut Buffer, index: usize, count: *mut usize) -> bool;
}

static NOOP: u8 = 0;
static READ: u8 = 1;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    b"v0.2.0\0".as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(_: *mut c_void, _: Buffer, config: Buffer) -> *const c_void {
    // SAFETY: Envoy's buffer, alive during the hook.
    let bytes = unsafe { std::slice::from_raw_parts(config.ptr.cast::<u8>(), config.length) };
    if bytes == b"read" { (&READ as *const u8).cast() } else { (&NOOP as *const u8).cast() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(cm: *const c_void, _: *mut c_void) -> *const c_void {
    cm
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(fe: *mut c_void, fm: *const c_void, _: bool) -> u32 {
    // SAFETY: one of the two statics.
    if unsafe { *fm.cast::<u8>() } == READ {
        let key = b"authorization";
        let mut out = Buffer { ptr: std::ptr::null(), length: 0 };
        let mut n = 0usize;
        // SAFETY: the stream of the running hook.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(fe, 0, Buffer { ptr: key.as_ptr().cast(), length: key.len() }, &mut out, 0, &mut n)
        };
        std::hint::black_box((found, out.length));
    }
    0
}

macro_rules! nothing {
    ($($name:ident($($arg:ty),*) $(-> $ret:ty = $v:expr)?;)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $arg),*) $(-> $ret)? { $($v)? }
    )*};
}

type P = *const c_void;
type F = *mut c_void;

nothing! {
    envoy_dynamic_module_on_http_filter_request_body(F, P, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_request_trailers(F, P) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_headers(F, P, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_body(F, P, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_trailers(F, P) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_stream_complete(F, P);
    envoy_dynamic_module_on_http_filter_destroy(P);
    envoy_dynamic_module_on_http_filter_http_callout_done(F, P, u64, u32, P, usize, P, usize);
    envoy_dynamic_module_on_http_filter_scheduled(F, P, u64);
    envoy_dynamic_module_on_http_filter_http_stream_headers(F, P, u64, P, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(F, P, u64, P, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(F, P, u64, P, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(F, P, u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(F, P, u64, u32);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(F, P);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(F, P);
}
