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

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

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
