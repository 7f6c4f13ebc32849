//! OAuth 2.0 and OpenID Connect messages: building the calls to the IdP and reading its
//! answers. No flow state lives here (that is [`crate::core::request`]); each function
//! takes the narrow settings it needs.

pub mod authorize;
pub mod introspection;
pub mod logout;
pub mod token;
