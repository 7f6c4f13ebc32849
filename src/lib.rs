//! OpenID Connect filter for Envoy, built as a proxy-wasm module.
//!
//! [`core`] holds the OIDC logic as a sans-IO state machine; [`host`] is the thin adapter
//! that maps it onto proxy-wasm host calls (compiled for `wasm32` only).

// A panic kills the Wasm VM (every request on the worker): never on outside data.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod core;

#[cfg(target_arch = "wasm32")]
pub mod host;
