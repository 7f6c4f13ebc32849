//! Credentials the client sent with its request, and removing them before upstream.
//!
//! `Authorization: Basic` (RFC 7617) carries the end user's name and password (password
//! grant) or a calling client's id and secret (client credentials grant). Bearer access
//! tokens (RFC 6750) come from `Authorization: Bearer`, the `access_token` query argument or a
//! cookie, as `bearer_token_param_type` allows.

use base64::Engine;

use crate::core::cookies;
use crate::core::error::CredentialError;
use crate::core::header::HeaderName;

/// Where bearer tokens are read from (`bearer_token_param_type`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerSources {
    pub header: bool,
    /// `bearer_token_header_name` (lowercase): the header read instead of `Authorization`;
    /// it may carry `Bearer <token>` or the bare token.
    pub header_name: Option<HeaderName>,
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

/// A bearer token the client sent, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: String,
    pub source: Source,
    /// Shaped like a compact JWS (see [`shape`]): checked locally, else by introspection.
    pub jwt: bool,
}

/// What a bearer token looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Three base64url parts, the first a JSON object (`eyJ` is the encoding of `{"`).
    Jwt,
    /// Any other token.
    Opaque,
}

/// The shape of `v`, `None` when it cannot be a token: empty, or with a control character
/// (percent-decoding can yield `%0D%0A`, which the token would carry into the IdP request
/// and upstream headers; a C1 control is two bytes in UTF-8).
///
/// It runs on every bearer request, cached or not: one pass, one table load per byte
/// (decoding each `char` of a 1 KB token, then a second pass for the JWT shape, was half of
/// a cached request's instructions in Wasm; a branch-free pass costs more there); `char`s
/// only from the first non-ASCII byte on.
pub fn shape(v: &str) -> Option<Shape> {
    let mut dots = 0u32;
    let mut base64url = true;
    for (i, &b) in v.as_bytes().iter().enumerate() {
        match CLASS.get(usize::from(b)).copied().unwrap_or(CONTROL) {
            B64URL => {}
            DOT => dots += 1,
            PRINTABLE => base64url = false,
            // Every byte before `i` is ASCII, so `i` starts a `char`.
            NON_ASCII => return v.get(i..).filter(|rest| !rest.chars().any(char::is_control)).map(|_| Shape::Opaque),
            _ => return None,
        }
    }
    match v.len() {
        0 => None,
        _ if base64url && dots == 2 && v.starts_with("eyJ") => Some(Shape::Jwt),
        _ => Some(Shape::Opaque),
    }
}

const CONTROL: u8 = 0;
const B64URL: u8 = 1;
const DOT: u8 = 2;
const PRINTABLE: u8 = 3;
const NON_ASCII: u8 = 4;

/// The class of each byte for [`shape`]. Built at compile time: an index out of bounds
/// would fail the build, never a request.
#[allow(clippy::indexing_slicing)]
static CLASS: [u8; 256] = {
    let mut t = [CONTROL; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            B64URL
        } else if c == b'.' {
            DOT
        } else if c >= 0x80 {
            NON_ASCII
        } else if c >= 0x20 && c != 0x7f {
            PRINTABLE
        } else {
            CONTROL
        };
        b += 1;
    }
    t
};

/// Finds a bearer token in the allowed places: header (`header`: the value of
/// `Authorization`, or of `bearer_token_header_name`), then query, then cookie.
pub fn bearer(sources: &BearerSources, header: Option<&str>, path: Option<&str>, cookie: Option<&str>) -> Option<Found> {
    let found = |token: String, source, shape| Some(Found { token, source, jwt: shape == Shape::Jwt });
    if sources.header {
        let v = header.map(str::trim);
        let token = match v.and_then(|v| v.split_once(' ')) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
            Some(_) => None,
            // A header of its own may carry the bare token (Kong's `bearer_token_header_name`).
            None if sources.header_name.is_some() => v,
            None => None,
        };
        if let Some((token, s)) = token.and_then(|t| shape(t).map(|s| (t, s))) {
            return found(token.to_string(), Source::Header, s);
        }
    }
    if sources.query {
        let query = path.and_then(|p| p.split_once('?')).map(|(_, q)| q).unwrap_or("");
        let arg = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == QUERY_PARAM);
        if let Some((v, s)) = arg.filter_map(|(_, v)| shape(&v).map(|s| (v, s))).next() {
            return found(v.into_owned(), Source::Query, s);
        }
    }
    if let (Some(name), Some(header)) = (&sources.cookie, cookie) {
        if let Some((v, s)) = cookies::pairs(header).filter(|(k, _)| k == name).find_map(|(_, v)| shape(v).map(|s| (v, s))) {
            return found(v.to_string(), Source::Cookie, s);
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

    fn found(token: &str, source: Source) -> Option<Found> {
        Some(Found { token: token.into(), source, jwt: false })
    }

    #[test]
    fn jwt_shape() {
        let jwt = |t| shape(t) == Some(Shape::Jwt);
        assert!(!jwt("opaque-token"));
        assert!(!jwt("a.b.c"));
        assert!(!jwt("eyJh.b"));
        assert!(!jwt("eyJh.b.c d"));
        assert!(jwt("eyJhbGciOiJSUzI1NiJ9.e30.sig"));
        assert!(jwt("eyJhbGciOiJSUzI1NiJ9.e30."), "an empty signature is for the verifier to refuse");
        assert!(!jwt("eyJhbGciOiJSUzI1NiJ9.e30.sig.x"));
        assert!(!jwt("eyJhbGciOiJSUzI1NiJ9.e30.s+g"));
        assert!(!jwt("eyJhbGciOiJSUzI1NiJ9.e30.sig\u{e9}"));
        assert_eq!(shape("eyJhbGciOiJSUzI1NiJ9.e30.sig\u{e9}"), Some(Shape::Opaque));
        assert_eq!(shape("eyJhbGciOiJSUzI1NiJ9.e30.sig\u{85}"), None);
        assert_eq!(shape(""), None);
        let header = BearerSources { header: true, ..Default::default() };
        let t = "eyJhbGciOiJSUzI1NiJ9.e30.sig";
        assert_eq!(
            bearer(&header, Some(&format!("Bearer {t}")), None, None),
            Some(Found { token: t.into(), source: Source::Header, jwt: true })
        );
    }

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
        let all = BearerSources { header: true, query: true, cookie: Some("at".into()), header_name: None };
        assert_eq!(bearer(&all, Some("Bearer abc"), None, None), found("abc", Source::Header));
        assert_eq!(bearer(&all, Some("bearer  abc "), None, None), found("abc", Source::Header));
        assert_eq!(bearer(&all, None, Some("/x?a=1&access_token=q%2Bt"), None), found("q+t", Source::Query));
        assert_eq!(bearer(&all, None, None, Some("a=b; at=ck")), found("ck", Source::Cookie));
        let header_only = BearerSources { header: true, ..Default::default() };
        assert_eq!(bearer(&header_only, None, Some("/?access_token=x"), Some("at=y")), None);
        assert_eq!(bearer(&header_only, Some("Basic abc"), None, None), None);
        assert_eq!(bearer(&header_only, Some("Bearer "), None, None), None);
        assert_eq!(bearer(&header_only, Some("abc"), None, None), None, "Authorization needs the scheme");
        let named = BearerSources { header: true, header_name: Some(HeaderName::from_static("x-api-token")), ..Default::default() };
        assert_eq!(bearer(&named, Some("abc"), None, None), found("abc", Source::Header), "a header of its own may carry the bare token");
        assert_eq!(bearer(&named, Some("Bearer abc"), None, None), found("abc", Source::Header));
        assert_eq!(bearer(&named, Some("Basic abc"), None, None), None);
    }

    #[test]
    fn query_tokens_with_control_characters_are_not_tokens() {
        // Caught by fuzz/ (corpus/credentials/query_crlf): the decoded token went into
        // `Authorization: Bearer …` towards the IdP and upstream, splitting the header.
        let query = BearerSources { query: true, ..Default::default() };
        for path in ["/?access_token=abc%0D%0Ax-injected%3A%201", "/?access_token=%00", "/?access_token=a%09b"] {
            assert_eq!(bearer(&query, None, Some(path), None), None, "{path}");
        }
        assert_eq!(bearer(&query, None, Some("/?access_token=%0A&access_token=ok"), None), found("ok", Source::Query));
        // C1 controls (two bytes in UTF-8) too, in the header and the cookie as well; other
        // non-ASCII text stays a token.
        let all = BearerSources { header: true, query: true, cookie: Some("at".into()), header_name: None };
        for bad in ["a\u{85}b", "a\u{9f}", "a\u{7f}b", "a\u{1}b"] {
            assert_eq!(bearer(&all, Some(&format!("Bearer {bad}")), None, None), None, "{bad:?}");
            assert_eq!(bearer(&all, None, None, Some(&format!("at={bad}"))), None, "{bad:?}");
        }
        assert_eq!(bearer(&query, None, Some("/?access_token=a%C2%85b"), None), None);
        assert_eq!(bearer(&all, Some("Bearer a\u{a0}é"), None, None), found("a\u{a0}é", Source::Header));
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
