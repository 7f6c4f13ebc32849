//! Credentials the client sent with its request, and removing them before upstream.
//!
//! `Authorization: Basic` (RFC 7617) carries the end user's name and password (password
//! grant) or a calling client's id and secret (client credentials grant). Bearer access
//! tokens (RFC 6750) come from `Authorization: Bearer`, the `access_token` query argument or a
//! cookie, as `bearer_token_param_type` allows.

use base64::Engine;

use crate::core::cookies;
use crate::core::error::CredentialError;

/// Where bearer tokens are read from (`bearer_token_param_type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerSources {
    pub header: bool,
    /// Query argument `access_token`.
    pub query: bool,
    /// `bearer_token_cookie_name`.
    pub cookie: Option<String>,
}

/// Where a bearer token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Query,
    Cookie,
}

/// Query argument that carries a bearer token (RFC 6750 2.3).
pub const QUERY_PARAM: &str = "access_token";

/// Whether `v` can be a token: not empty, no control characters (percent-decoding can
/// yield `%0D%0A`, which the token would carry into the IdP request and upstream headers).
fn token(v: &str) -> bool {
    !v.is_empty() && !v.chars().any(char::is_control)
}

/// Finds a bearer token in the allowed places: header, then query, then cookie.
pub fn bearer(sources: &BearerSources, authorization: Option<&str>, path: Option<&str>, cookie: Option<&str>) -> Option<(String, Source)> {
    if sources.header {
        if let Some((scheme, token)) = authorization.map(str::trim).and_then(|v| v.split_once(' ')) {
            let token = token.trim();
            if scheme.eq_ignore_ascii_case("bearer") && self::token(token) {
                return Some((token.to_string(), Source::Header));
            }
        }
    }
    if sources.query {
        let query = path.and_then(|p| p.split_once('?')).map(|(_, q)| q).unwrap_or("");
        if let Some((_, v)) = form_urlencoded::parse(query.as_bytes()).find(|(k, v)| k == QUERY_PARAM && token(v)) {
            return Some((v.into_owned(), Source::Query));
        }
    }
    if let (Some(name), Some(header)) = (&sources.cookie, cookie) {
        if let Some(v) = cookies::pairs(header).find(|(k, v)| k == name && token(v)).map(|(_, v)| v) {
            return Some((v.to_string(), Source::Cookie));
        }
    }
    None
}

/// `:path` without query argument `name` (other arguments keep their encoding).
pub fn without_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else { return path.to_string() };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let k = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
            form_urlencoded::parse(format!("{k}=").as_bytes()).next().map(|(k, _)| k != name).unwrap_or(true)
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// A user id and password (or client id and secret) from `Authorization: Basic`.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Basic({}, <redacted>)", self.user)
    }
}

/// Reads `Authorization: Basic`. `Ok(None)` when the header is absent or another scheme.
pub fn basic(authorization: Option<&str>) -> Result<Option<Basic>, CredentialError> {
    let Some(value) = authorization else { return Ok(None) };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else { return Ok(None) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| CredentialError::BasicNotBase64)?;
    let text = String::from_utf8(raw).map_err(|_| CredentialError::BasicNotUtf8)?;
    let (user, password) = text.split_once(':').ok_or(CredentialError::BasicNoColon)?;
    if user.is_empty() {
        return Err(CredentialError::BasicEmptyUser);
    }
    Ok(Some(Basic { user: user.to_string(), password: password.to_string() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic() {
        let b = basic(Some("Basic am9objpkb2U=")).unwrap().unwrap();
        assert_eq!((b.user.as_str(), b.password.as_str()), ("john", "doe"));
        // password may contain ':'; scheme is case-insensitive
        let b = basic(Some("basic am9objpkOm9l")).unwrap().unwrap();
        assert_eq!(b.password, "d:oe");
    }

    #[test]
    fn other_schemes_and_absence_are_not_basic() {
        assert_eq!(basic(None).unwrap(), None);
        assert_eq!(basic(Some("Bearer abc")).unwrap(), None);
        assert_eq!(basic(Some("Basic")).unwrap(), None);
    }

    #[test]
    fn malformed_basic_is_an_error_not_a_panic() {
        for v in ["Basic !!!", "Basic am9obg==", "Basic OmRvZQ==", "Basic //79"] {
            assert!(basic(Some(v)).is_err(), "{v}");
        }
    }

    #[test]
    fn bearer_sources() {
        let all = BearerSources { header: true, query: true, cookie: Some("at".into()) };
        assert_eq!(bearer(&all, Some("Bearer abc"), None, None), Some(("abc".into(), Source::Header)));
        assert_eq!(bearer(&all, Some("bearer  abc "), None, None), Some(("abc".into(), Source::Header)));
        assert_eq!(bearer(&all, None, Some("/x?a=1&access_token=q%2Bt"), None), Some(("q+t".into(), Source::Query)));
        assert_eq!(bearer(&all, None, None, Some("a=b; at=ck")), Some(("ck".into(), Source::Cookie)));
        let header_only = BearerSources { header: true, ..Default::default() };
        assert_eq!(bearer(&header_only, None, Some("/?access_token=x"), Some("at=y")), None);
        assert_eq!(bearer(&header_only, Some("Basic abc"), None, None), None);
        assert_eq!(bearer(&header_only, Some("Bearer "), None, None), None);
    }

    #[test]
    fn query_tokens_with_control_characters_are_not_tokens() {
        // Caught by fuzz/ (corpus/credentials/query_crlf): the decoded token went into
        // `Authorization: Bearer …` towards the IdP and upstream, splitting the header.
        let query = BearerSources { query: true, ..Default::default() };
        for path in ["/?access_token=abc%0D%0Ax-injected%3A%201", "/?access_token=%00", "/?access_token=a%09b"] {
            assert_eq!(bearer(&query, None, Some(path), None), None, "{path}");
        }
        assert_eq!(bearer(&query, None, Some("/?access_token=%0A&access_token=ok"), None), Some(("ok".into(), Source::Query)));
    }

    #[test]
    fn hiding_credentials() {
        assert_eq!(without_query_param("/p?a=1&access_token=x&b=%20", "access_token"), "/p?a=1&b=%20");
        assert_eq!(without_query_param("/p?access_token=x", "access_token"), "/p");
        assert_eq!(without_query_param("/p", "access_token"), "/p");
    }

    #[test]
    fn debug_hides_password() {
        let b = Basic { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{b:?}").contains("hunter2"));
    }
}
