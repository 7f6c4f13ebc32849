//! Requests to the IdP as plain data, and the IdP's answers as the host hands them back.
//!
//! The core never performs I/O: it returns an [`IdpRequest`] naming the Envoy cluster, the
//! `:authority` and path, and the adapter dispatches it. Endpoint URLs are parsed once into
//! [`Endpoint`] so that a request path never has to parse a URL.

use std::fmt;

use crate::core::error::Error;

/// An absolute IdP URL split into what an Envoy HTTP call needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured or discovered (used as the audience of client assertions).
    pub url: String,
    /// Host and optional port, for `:authority`.
    pub authority: String,
    /// Path and query, for `:path` (at least `/`).
    pub path: String,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl Endpoint {
    /// Parses an absolute `http` or `https` URL. Fragments and user info are refused.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a valid URL"))?;
        match uri.scheme_str() {
            Some("https") | Some("http") => {}
            _ => return Err(format!("`{url}` must be an absolute http(s) URL")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!("`{url}` must not carry user info"));
        }
        if url.contains('#') {
            return Err(format!("`{url}` must not carry a fragment"));
        }
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let path = if path.is_empty() { "/" } else { path };
        Ok(Endpoint { url: url.to_string(), authority: authority.as_str().to_string(), path: path.to_string() })
    }
}

/// What the IdP call is for; lets the adapter and logs say which step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Discovery,
    Jwks,
    Token,
    Introspection,
    Userinfo,
    Revocation,
}

/// One HTTP request to the IdP through an Envoy cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpRequest {
    pub purpose: Purpose,
    pub cluster: String,
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl fmt::Debug for IdpRequest {
    // Headers and body may carry client secrets, passwords and assertions: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {} https://{}{} via {}", self.purpose, self.method, self.authority, self.path, self.cluster)
    }
}

impl IdpRequest {
    pub fn get(purpose: Purpose, cluster: &str, endpoint: &Endpoint, timeout_ms: u64) -> Self {
        IdpRequest {
            purpose,
            cluster: cluster.to_string(),
            method: "GET",
            authority: endpoint.authority.clone(),
            path: endpoint.path.clone(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout_ms,
        }
    }
}

/// The IdP's answer. `status` is `None` when the call failed (reset, timeout, no upstream):
/// Envoy then fires the callback without headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpResponse {
    pub status: Option<u16>,
    pub body: Vec<u8>,
    /// Time between dispatch and answer, to tell a timeout from a reset.
    pub elapsed_ms: u64,
}

impl IdpResponse {
    /// The status of an answer the IdP gave; an error for a call that failed in transit or
    /// at the server (5xx, where 504 is a timeout, as Envoy answers itself on a timeout).
    pub fn answered(&self, timeout_ms: u64) -> Result<u16, Error> {
        match self.status {
            // Envoy reports timeouts and resets alike; the elapsed time tells them apart.
            None if self.elapsed_ms.saturating_add(50) >= timeout_ms => Err(Error::IdpTimeout),
            None => Err(Error::IdpUnavailable("connection failed or was reset")),
            Some(504) => Err(Error::IdpTimeout),
            Some(500..=599) => Err(Error::IdpUnavailable("server error")),
            Some(s) => Ok(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parts() {
        let e = Endpoint::parse("https://idp.example.com:8443/oauth/token?x=1").unwrap();
        assert_eq!(e.authority, "idp.example.com:8443");
        assert_eq!(e.path, "/oauth/token?x=1");
        let e = Endpoint::parse("https://idp.example.com").unwrap();
        assert_eq!(e.path, "/");
    }

    #[test]
    fn endpoint_refuses_garbage() {
        for bad in ["", "idp.example.com/token", "ftp://x/", "https://user:pw@x/", "https://x/#f", "https:///p"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_prints_body() {
        let mut r = IdpRequest::get(Purpose::Token, "c", &Endpoint::parse("https://i/t").unwrap(), 1);
        r.body = b"password=hunter2".to_vec();
        r.headers.push(("authorization".into(), "Basic c2VjcmV0".into()));
        let s = format!("{r:?}");
        assert!(!s.contains("hunter2") && !s.contains("c2VjcmV0"), "{s}");
    }
}
