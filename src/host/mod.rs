//! Host adapters: they carry out the core's actions with a host's calls, and decide
//! nothing. [`wasm`] is the proxy-wasm module (Envoy, Kong's ngx_wasm_module).

mod wasm;
