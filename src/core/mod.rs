//! The sans-IO OpenID Connect core: no proxy-wasm types, no I/O.
//!
//! Plain inputs come in (configuration bytes, request headers, IdP answers, the time) and
//! decisions come out (forward, deny, "send this request to the IdP"). The host adapter in
//! [`crate::host`] carries them out. Everything here is tested natively with `cargo test`.

pub mod claims;
pub mod cache;
pub mod client_auth;
pub mod config;
pub mod credentials;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod grants;
pub mod idp;
pub mod introspection;
pub mod jwt;
pub mod login;
pub mod metrics;
pub mod reply;
#[cfg(test)]
mod robustness;
pub mod rsa;
pub mod session;
pub mod upstream;

