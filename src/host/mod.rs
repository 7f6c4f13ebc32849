//! The proxy-wasm adapter: maps host events to the sans-IO core and its decisions back to
//! host calls. Compiled for `wasm32` only; tested in real Envoy (`tests/integration`).
//!
//! - [`root`]: configuration and the timer;
//! - [`docs`]: discovery and JWKS shared across workers;
//! - [`worker`]: per-VM state and carrying out a request's steps;
//! - [`filter`]: the HTTP context;
//! - [`io`]: host-call helpers.

mod docs;
mod filter;
mod io;
mod root;
mod worker;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::<root::Root>::default()
    });
}}
