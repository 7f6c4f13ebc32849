//! The sans-IO OpenID Connect core: no host types, no I/O.
//!
//! Events come in (configuration bytes, the timer, request headers, IdP answers, the time)
//! and decisions come out (forward, answer, "make this call"). The host adapters in
//! [`crate::host`] carry them out. Everything here is tested natively with `cargo test`,
//! including against a simulated host that enforces every host rule ([`testing`]).
//!
//! Layers, bottom up (a module imports only from layers below it):
//! 1. values: [`header`], [`error`], [`method`], [`log`], [`wire`];
//! 2. parts: [`idp`], [`claims`], [`rsa`], [`cache`], [`cookies`], [`metrics`];
//! 3. protocol pieces: [`jwt`], [`credentials`], [`session`], [`discovery`], [`client_auth`],
//!    [`pop`], [`reply`], [`challenge`], [`upstream`], [`oauth`];
//! 4. the IdP's documents: [`docs`];
//! 5. the configuration: [`config`];
//! 6. one request: [`request`];
//! 7. one worker: [`worker`].

pub mod cache;
pub mod challenge;
pub mod claims;
pub mod client_auth;
pub mod config;
pub mod cookies;
pub mod credentials;
pub mod discovery;
pub mod docs;
pub mod error;
pub mod extras;
pub mod header;
#[cfg(test)]
mod host_rules;
pub mod idp;
pub mod jwt;
pub mod log;
pub mod method;
pub mod metrics;
pub mod oauth;
#[cfg(test)]
mod policy_tests;
pub mod pop;
pub mod reply;
pub mod request;
#[cfg(test)]
mod robustness;
pub mod route;
pub mod rsa;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod upstream;
pub mod wire;
pub mod worker;
