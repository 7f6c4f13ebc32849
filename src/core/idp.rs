//! Calls to the IdP as plain data, and the IdP's answers as the host hands them back.
//!
//! The core never performs I/O: it returns an [`IdpCall`] naming the host's upstream (an
//! Envoy cluster, a Kong `host:port`), the `:authority` and path, and the adapter
//! dispatches it. Endpoint URLs are parsed once into [`Endpoint`] so that a request never
//! has to parse a URL. How a call failed is told apart here ([`Failure`]), for the client's
//! status and the operator's log line.

use std::fmt;

use crate::core::error::{Error, IdpFault};
use crate::core::header::{self, names, values, HeaderName, HeaderValue, Headers};

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
        let authority = uri.authority().ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!("`{url}` must not carry user info"));
        }
        if url.contains('#') {
            return Err(format!("`{url}` must not carry a fragment"));
        }
        if !header::valid_value(url.as_bytes()) {
            return Err("the URL has control characters".to_string());
        }
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        // `https://host?x=1` has an empty path: `:path` still starts with `/`.
        let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
        Ok(Endpoint { url: url.to_string(), authority: authority.as_str().to_string(), path })
    }
}

/// What the IdP call is for; lets the adapter and logs say which step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Discovery,
    Jwks,
    Token,
    Introspection,
    Userinfo,
    Revocation,
}

/// One HTTP request to the IdP through a named upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct IdpCall {
    pub purpose: Purpose,
    pub cluster: String,
    pub method: &'static str,
    /// `:authority` and `:path` (valid header values: [`Endpoint::parse`] checked them).
    pub authority: String,
    pub path: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl fmt::Debug for IdpCall {
    // Headers and body may carry client secrets, passwords and assertions: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} call {} https://{}{} via cluster `{}`", self.purpose, self.method, self.authority, self.path, self.cluster)
    }
}

impl IdpCall {
    pub fn get(purpose: Purpose, cluster: &str, endpoint: &Endpoint, timeout_ms: u64) -> Self {
        IdpCall {
            purpose,
            cluster: cluster.to_string(),
            method: "GET",
            authority: endpoint.authority.clone(),
            path: endpoint.path.clone(),
            headers: vec![(names::ACCEPT, values::JSON.into())],
            body: Vec::new(),
            timeout_ms,
        }
    }

    /// A form POST (`application/x-www-form-urlencoded`, the body already encoded).
    pub fn form_post(purpose: Purpose, cluster: &str, endpoint: &Endpoint, timeout_ms: u64, body: String) -> Self {
        IdpCall {
            purpose,
            cluster: cluster.to_string(),
            method: "POST",
            authority: endpoint.authority.clone(),
            path: endpoint.path.clone(),
            headers: vec![(names::CONTENT_TYPE, values::FORM.into()), (names::ACCEPT, values::JSON.into())],
            body: body.into_bytes(),
            timeout_ms,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
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
    /// at the server (see [`Failure`]).
    pub fn answered(&self, timeout_ms: u64) -> Result<u16, Error> {
        match self.failure(timeout_ms) {
            Some(f) => Err(Error::Idp(f.fault())),
            None => Ok(self.status.unwrap_or(0)),
        }
    }

    /// A call the host refused to send (no such cluster): it is answered at once, like a
    /// connection that could not be made.
    pub fn not_sent() -> Self {
        IdpResponse { status: None, body: Vec::new(), elapsed_ms: 0 }
    }

    /// Why the call failed before the IdP could answer it, or with a server error; `None`
    /// when the IdP answered (any status below 500).
    pub fn failure(&self, timeout_ms: u64) -> Option<Failure> {
        let status = match self.status {
            // Envoy reports timeouts and resets alike; the elapsed time tells them apart.
            None if self.elapsed_ms.saturating_add(50) >= timeout_ms => return Some(Failure::Timeout { elapsed_ms: self.elapsed_ms }),
            None => return Some(Failure::Reset),
            Some(s) if s < 500 => return None,
            Some(s) => s,
        };
        // Envoy answers itself when it cannot reach the cluster: its text says why.
        let text = std::str::from_utf8(&self.body).unwrap_or("");
        let from_envoy = text.starts_with("upstream connect error") || text == "no healthy upstream" || text == "upstream request timeout";
        if !from_envoy {
            return Some(if status == 504 { Failure::Timeout { elapsed_ms: self.elapsed_ms } } else { Failure::ServerError(status) });
        }
        Some(if text == "upstream request timeout" || status == 504 {
            Failure::Timeout { elapsed_ms: self.elapsed_ms }
        } else if text == "no healthy upstream" {
            Failure::NoEndpoint
        } else if text.contains("CERTIFICATE_VERIFY_FAILED") {
            Failure::Untrusted
        } else if let Some(reason) = tls_reason(text) {
            Failure::Tls(reason)
        } else if text.contains("connection failure") || text.contains("connect error") {
            Failure::Refused(text.chars().filter(|c| !c.is_control()).take(200).collect())
        } else {
            Failure::Reset
        })
    }
}

impl Purpose {
    /// The endpoint's name, as discovery names it.
    pub fn endpoint(self) -> &'static str {
        match self {
            Purpose::Discovery => "discovery endpoint",
            Purpose::Jwks => "jwks_uri",
            Purpose::Token => "token_endpoint",
            Purpose::Introspection => "introspection_endpoint",
            Purpose::Userinfo => "userinfo_endpoint",
            Purpose::Revocation => "revocation_endpoint",
        }
    }
}

/// `url` (or a path) with `query` (form-encoded) appended, after the query it may have.
pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// A `4xx` without an OAuth error code: a refusal of what the request carried (`401`),
/// except for statuses that say the endpoint or the gateway is wrong, not the credentials
/// (`404`, `405`, `406`, `415`, `429`: `None`, a broken answer).
pub fn refusal(purpose: Purpose, status: u16) -> Option<Error> {
    match status {
        404 | 405 | 406 | 415 | 429 => None,
        400..=499 => Some(Error::Refused { endpoint: purpose.endpoint(), status }),
        _ => None,
    }
}

/// The OAuth `error` code of an error answer (RFC 6749 5.2), with anything outside its
/// alphabet (`%x20-21 / %x23-5B / %x5D-7E`) left out, so it can go into answers and logs.
pub fn oauth_error(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: String,
    }
    let e = serde_json::from_slice::<OAuthError>(body).ok()?;
    Some(e.error.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').take(64).collect())
}

/// The OpenSSL reason of a TLS failure in Envoy's text (`..:OPENSSL_internal:REASON:TLS_error_end`).
fn tls_reason(text: &str) -> Option<String> {
    let at = text.find("TLS_error")?;
    let rest = text.get(at..).unwrap_or("");
    let reason = rest
        .split(':')
        .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .find(|p| *p != "TLS_error_end" && p.len() > 3)
        .unwrap_or("handshake failure");
    Some(reason.chars().take(80).collect())
}

/// How an IdP call failed, for the client's status and the operator's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `timeout`.
    Timeout { elapsed_ms: u64 },
    /// The connection could not be made (refused, or a TLS handshake Envoy did not detail);
    /// carries Envoy's text.
    Refused(String),
    /// The connection was closed or reset before an answer.
    Reset,
    /// The cluster has no (healthy) endpoint.
    NoEndpoint,
    /// The TLS handshake failed because the IdP's certificate is not trusted.
    Untrusted,
    /// The TLS handshake failed for another reason (OpenSSL's reason code).
    Tls(String),
    /// The IdP answered with a server error.
    ServerError(u16),
}

impl Failure {
    /// What the client's request ends in.
    pub fn fault(&self) -> IdpFault {
        match self {
            Failure::Timeout { .. } => IdpFault::Timeout,
            Failure::Refused(_) | Failure::NoEndpoint => IdpFault::Unreachable,
            Failure::Reset => IdpFault::Reset,
            Failure::Untrusted | Failure::Tls(_) => IdpFault::Tls,
            Failure::ServerError(_) => IdpFault::ServerError,
        }
    }

    /// What went wrong and what to check, for the log (never carries a secret: Envoy's
    /// reason codes only, no bodies from the IdP).
    pub fn describe(&self, cluster: &str, timeout_ms: u64) -> String {
        match self {
            Failure::Timeout { elapsed_ms } => format!(
                "no answer through cluster `{cluster}` after {elapsed_ms} ms (timeout {timeout_ms} ms): the IdP is slow or unreachable; check it, or raise `timeout`"
            ),
            Failure::Refused(envoy) => format!(
                "cannot connect through cluster `{cluster}` (Envoy: \"{envoy}\"): is the IdP up and the cluster's address right? If it is, the TLS handshake failed: Envoy's `cluster.{cluster}.ssl.*` stats say why (fail_verify_error: the IdP's certificate is not trusted by the cluster's validation_context; connection_error: the IdP refused the handshake)"
            ),
            Failure::Reset => format!("the connection through cluster `{cluster}` was closed before the IdP answered"),
            Failure::NoEndpoint => format!("cluster `{cluster}` has no healthy endpoint"),
            Failure::Untrusted => format!(
                "TLS handshake through cluster `{cluster}` failed: the IdP's server certificate is not trusted (check the cluster's validation_context: trusted_ca, SAN match)"
            ),
            Failure::Tls(reason) => format!(
                "TLS handshake through cluster `{cluster}` failed ({reason}): check the cluster's client certificate, SNI and TLS settings against the IdP's"
            ),
            Failure::ServerError(s) => format!("the IdP answered HTTP {s} (a server error on its side)"),
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
        // Found by fuzz/ (corpus/discovery/alias_query_no_path): a query without a path
        // gave `:path: ?x=1`, which Envoy refuses to send.
        let e = Endpoint::parse("https://idp.example.com?x=1").unwrap();
        assert_eq!((e.authority.as_str(), e.path.as_str()), ("idp.example.com", "/?x=1"));
    }

    #[test]
    fn endpoint_refuses_garbage() {
        for bad in ["", "idp.example.com/token", "ftp://x/", "https://user:pw@x/", "https://x/#f", "https:///p", "https://x/\r\n"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    fn envoy(status: u16, body: &str) -> IdpResponse {
        IdpResponse { status: Some(status), body: body.as_bytes().to_vec(), elapsed_ms: 3 }
    }

    #[test]
    fn failures_are_told_apart() {
        let refused = envoy(503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused");
        assert!(matches!(refused.failure(1000), Some(Failure::Refused(t)) if t.contains("Connection refused")));
        let untrusted = envoy(503, "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end");
        assert_eq!(untrusted.failure(1000), Some(Failure::Untrusted));
        let alert = envoy(503, "upstream connect error or disconnect/reset before headers. reset reason: connection termination, transport failure reason: TLS_error:|268436526:SSL routines:OPENSSL_internal:TLSV1_ALERT_CERTIFICATE_REQUIRED:TLS_error_end");
        assert_eq!(alert.failure(1000), Some(Failure::Tls("TLSV1_ALERT_CERTIFICATE_REQUIRED".into())));
        assert_eq!(envoy(503, "no healthy upstream").failure(1000), Some(Failure::NoEndpoint));
        assert_eq!(envoy(504, "upstream request timeout").failure(1000), Some(Failure::Timeout { elapsed_ms: 3 }));
        assert_eq!(envoy(503, "maintenance").failure(1000), Some(Failure::ServerError(503)));
        assert_eq!(envoy(401, "{}").failure(1000), None);
        let none = IdpResponse { status: None, body: vec![], elapsed_ms: 990 };
        assert_eq!(none.answered(1000), Err(Error::Idp(IdpFault::Timeout)));
        assert!(Failure::Untrusted.describe("idp-mtls", 1000).contains("`idp-mtls`"));
        assert_eq!(refused.answered(1000), Err(Error::Idp(IdpFault::Unreachable)));
        assert_eq!(envoy(200, "{}").answered(1000), Ok(200));
    }

    #[test]
    fn debug_never_prints_body() {
        let mut r = IdpCall::get(Purpose::Token, "c", &Endpoint::parse("https://i/t").unwrap(), 1);
        r.body = b"password=hunter2".to_vec();
        r.headers.push((names::AUTHORIZATION, HeaderValue::new("Basic c2VjcmV0").unwrap()));
        let s = format!("{r:?}");
        assert!(!s.contains("hunter2") && !s.contains("c2VjcmV0"), "{s}");
    }
}
