//! Cookies: reading the `Cookie` header, writing `Set-Cookie`, and removing the filter's
//! own cookies before a request goes upstream.
//!
//! Attributes follow Kong's `session_cookie_*` settings. They are checked once, when
//! [`CookieAttrs::new`] builds them from the configuration, so that a rendered
//! `Set-Cookie` is a valid header value by construction.

use crate::core::error::ConfigError;
use crate::core::header::{self, HeaderValue};

/// `name=value` pairs of a `Cookie` header (quotes around a value are dropped).
pub fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|c| c.trim().split_once('=')).map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
}

/// The first value of cookie `name`.
pub fn get<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    pairs(header).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Whether `name` is a valid cookie name (an RFC 9110 token).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The `Cookie` header without the cookies `drop` selects; `None` when nothing was dropped
/// (the header stays as it is), `Some("")` when nothing is left.
pub fn without(header: &str, drop: impl Fn(&str) -> bool) -> Option<String> {
    let mut dropped = false;
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split_once('=').map(|(k, _)| k.trim()).unwrap_or(c);
            let gone = drop(name);
            dropped |= gone;
            !gone
        })
        .collect();
    dropped.then(|| kept.join("; "))
}

/// `SameSite` (Kong's `session_cookie_same_site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
    /// Not sent (the browser's default).
    Default,
}

/// Cookie attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttrs {
    path: String,
    domain: Option<String>,
    same_site: SameSite,
    http_only: bool,
    /// `None`: Secure when the request came over https.
    secure: Option<bool>,
}

impl CookieAttrs {
    /// Checks the attributes (`path` starts with `/`; neither has `;` or control
    /// characters, the domain no space).
    pub fn new(path: &str, domain: Option<&str>, same_site: SameSite, http_only: bool, secure: Option<bool>) -> Result<Self, ConfigError> {
        let clean = |s: &str| !s.contains(';') && header::valid_value(s.as_bytes());
        if !path.starts_with('/') || !clean(path) {
            return ConfigError::err("`session_cookie_path` must be a path starting with /");
        }
        let domain = domain.map(str::trim).filter(|d| !d.is_empty());
        if domain.is_some_and(|d| !clean(d) || d.contains(' ')) {
            return ConfigError::err("`session_cookie_domain` is not a valid domain");
        }
        Ok(CookieAttrs { path: path.to_string(), domain: domain.map(str::to_string), same_site, http_only, secure })
    }

    /// The `Set-Cookie` value for cookie `name` (a valid cookie name) with `value`
    /// (base64url or empty); `max_age` `Some(0)` deletes. `None` only if `name` or `value`
    /// could not be a cookie, which the callers rule out.
    pub fn render(&self, name: &str, value: &str, max_age: Option<u64>, https: bool) -> Option<HeaderValue> {
        if !valid_name(name) || value.contains(';') {
            return None;
        }
        let mut s = format!("{name}={value}; Path={}", self.path);
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        match max_age {
            Some(0) => s.push_str("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(a) => s.push_str(&format!("; Max-Age={a}")),
            None => {}
        }
        if self.secure.unwrap_or(https) {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        match self.same_site {
            SameSite::Strict => s.push_str("; SameSite=Strict"),
            SameSite::Lax => s.push_str("; SameSite=Lax"),
            SameSite::None => s.push_str("; SameSite=None"),
            SameSite::Default => {}
        }
        HeaderValue::new(s).ok()
    }

    /// A `Set-Cookie` that deletes cookie `name`.
    pub fn delete(&self, name: &str, https: bool) -> Option<HeaderValue> {
        self.render(name, "", Some(0), https)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_quotes() {
        let v: Vec<_> = pairs(" a=1; b=\"two\" ;c=; bad").collect();
        assert_eq!(v, vec![("a", "1"), ("b", "two"), ("c", "")]);
        assert_eq!(get("a=1; a=2", "a"), Some("1"));
    }

    #[test]
    fn removes_own_cookies_only_when_present() {
        assert_eq!(without("a=1; session=x; b=2", |n| n == "session"), Some("a=1; b=2".into()));
        assert_eq!(without("a=1", |n| n == "session"), None);
        assert_eq!(without("session=x", |n| n == "session"), Some(String::new()));
    }

    #[test]
    fn renders_attributes() {
        let a = CookieAttrs::new("/", Some("example.com"), SameSite::Lax, true, None).unwrap();
        assert_eq!(a.render("s", "v", None, true).unwrap().as_str(), "s=v; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Lax");
        assert_eq!(
            a.delete("s", false).unwrap().as_str(),
            "s=; Path=/; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax"
        );
        let plain = CookieAttrs::new("/app", None, SameSite::Default, false, Some(false)).unwrap();
        assert_eq!(plain.render("s", "v", Some(60), true).unwrap().as_str(), "s=v; Path=/app; Max-Age=60");
    }

    #[test]
    fn refuses_what_would_break_the_header() {
        // Caught by fuzz/ (corpus/config/cookie_domain_crlf): the domain went into Set-Cookie.
        assert!(CookieAttrs::new("/", Some("example.com\r\nx:1"), SameSite::Lax, true, None).is_err());
        assert!(CookieAttrs::new("/", Some("a b"), SameSite::Lax, true, None).is_err());
        assert!(CookieAttrs::new("x", None, SameSite::Lax, true, None).is_err());
        assert!(CookieAttrs::new("/;x", None, SameSite::Lax, true, None).is_err());
        let a = CookieAttrs::new("/", None, SameSite::Lax, true, None).unwrap();
        assert!(a.render("a b", "v", None, false).is_none());
        assert!(a.render("a", "v;x=1", None, false).is_none());
    }
}
