//! What the filter tells the host to do with the client's request: forward it with header
//! changes, or answer it locally. Both carry only validated header names and values.

use crate::core::header::{names, values, HeaderName, HeaderValue, Headers};

/// A local answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON answer with `content-type: application/json` and `cache-control: no-store`.
    pub fn json(status: u16, mut headers: Headers, body: &serde_json::Value) -> Self {
        headers.push((names::CONTENT_TYPE, values::JSON.into()));
        headers.push((names::CACHE_CONTROL, values::NO_STORE.into()));
        Reply { status, headers, body: body.to_string().into_bytes() }
    }

    /// A redirect (`302`, `cache-control: no-store`) with more headers (cookies).
    pub fn redirect(location: HeaderValue, more: Headers) -> Self {
        let mut headers = vec![(names::LOCATION, location), (names::CACHE_CONTROL, values::NO_STORE.into())];
        headers.extend(more);
        Reply { status: 302, headers, body: Vec::new() }
    }

    /// The values of header `name` (tests and logs).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Header changes to apply before the request goes upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// Headers removed first.
    pub remove: Vec<HeaderName>,
    /// Headers set (replacing any value) after the removals.
    pub set: Headers,
    /// A new `:path` (a credential removed from the query).
    pub set_path: Option<HeaderValue>,
    /// Headers added to the response the client gets (`Set-Cookie` may repeat).
    pub response_add: Headers,
}

impl Forward {
    /// The value set for header `name` (tests).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.set.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    pub fn removes(&self, name: &str) -> bool {
        self.remove.iter().any(|n| *n == name)
    }
}

/// A cookie to set, as a response header.
pub fn set_cookie(v: HeaderValue) -> (HeaderName, HeaderValue) {
    (names::SET_COOKIE, v)
}
