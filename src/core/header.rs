//! Header names and values that are valid by construction.
//!
//! Every header the filter writes (upstream, in a local reply, in a call to the IdP, and the
//! `Location` and `Set-Cookie` it builds) is a [`HeaderName`] and a [`HeaderValue`]. A value
//! can hold no CR, LF, NUL or other control byte (HTAB excepted, RFC 9110 5.5), so no input
//! — a claim, a token from the IdP, a query argument, a configured URL — can split a header
//! or smuggle a second one. A name is a lowercase RFC 9110 token. Both checks run once, when
//! the value is made; everything downstream takes these types only.

use std::fmt;

/// Bytes allowed in a field value: visible ASCII, space, HTAB and obs-text (≥ 0x80, which
/// is how UTF-8 text travels).
const fn value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

const fn token_byte(b: u8) -> bool {
    matches!(b,
        b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~')
}

/// Whether `s` may be a header value as it is, byte by byte (for literals, at compile time).
const fn valid_value_bytewise(mut s: &[u8]) -> bool {
    while let [b, rest @ ..] = s {
        if !value_byte(*b) {
            return false;
        }
        s = rest;
    }
    true
}

/// Whether `s` may be a header value as it is. Eight bytes at a time: it runs on every value
/// the filter sets, and `Bearer` and a 1 KB access token upstream, byte by byte, were a sixth
/// of a cached password or session request's Wasm instructions. A word with no byte below
/// 0x20 and none equal to 0x7f is all value bytes; any other word (a tab, or a bad byte) is
/// looked at byte by byte, by the one rule, [`value_byte`].
pub fn valid_value(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk).map(u64::from_ne_bytes) else { return false };
        // Some byte < 0x20; some byte == 0x7f (a zero byte of `word ^ 0x7f…`).
        let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
        let del = word ^ (ONES * 0x7f);
        let has_del = del.wrapping_sub(ONES) & !del & HIGHS;
        if (below_space | has_del) != 0 && !valid_value_bytewise(chunk) {
            return false;
        }
    }
    valid_value_bytewise(tail)
}

/// Whether `s` is a lowercase token (a header name as HTTP/2 writes it). Pseudo-headers
/// (`:path`) are allowed: the adapter sets `:path` when a credential leaves the query.
pub const fn valid_name(s: &[u8]) -> bool {
    let mut rest = match s {
        [b':', rest @ ..] => rest,
        _ => s,
    };
    if rest.is_empty() {
        return false;
    }
    while let [b, tail @ ..] = rest {
        if !token_byte(*b) {
            return false;
        }
        rest = tail;
    }
    true
}

/// A value was refused (the text is never included: it may be a credential).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHeader;

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid header (control characters, or not a token)")
    }
}

/// A header value without control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderValue(Box<str>);

impl HeaderValue {
    /// Checks `s`; the only way to make a value from outside data.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidHeader> {
        let s = s.into();
        if valid_value(s.as_bytes()) {
            Ok(HeaderValue(s.into_boxed_str()))
        } else {
            Err(InvalidHeader)
        }
    }

    /// A value known when the code is written. Use it in a `const` so that a bad literal
    /// stops the build: `const JSON: HeaderValue = HeaderValue::from_static("application/json");`
    pub const fn from_static(s: &'static str) -> Static {
        assert!(valid_value_bytewise(s.as_bytes()), "invalid header value literal");
        Static(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A checked literal value (see [`HeaderValue::from_static`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Static(&'static str);

impl From<Static> for HeaderValue {
    fn from(s: Static) -> Self {
        HeaderValue(s.0.into())
    }
}

impl Static {
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Debug for HeaderValue {
    // Values may be credentials: only their length is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A lowercase header name.
#[derive(Clone)]
pub struct HeaderName(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Owned(Box<str>),
}

impl HeaderName {
    /// Lowercases and checks `s` (configuration: `X-User` becomes `x-user`).
    pub fn new(s: &str) -> Result<Self, InvalidHeader> {
        let lower = s.trim().to_ascii_lowercase();
        if valid_name(lower.as_bytes()) {
            Ok(HeaderName(Name::Owned(lower.into_boxed_str())))
        } else {
            Err(InvalidHeader)
        }
    }

    /// A name known when the code is written (lowercase); checked at compile time in a
    /// `const`.
    pub const fn from_static(s: &'static str) -> Self {
        assert!(valid_name(s.as_bytes()), "invalid header name literal");
        HeaderName(Name::Static(s))
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(s) => s,
            Name::Owned(s) => s,
        }
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderName {}

impl std::hash::Hash for HeaderName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Names the filter uses itself.
pub mod names {
    use super::HeaderName;

    pub const ACCEPT: HeaderName = HeaderName::from_static("accept");
    pub const AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");
    pub const CACHE_CONTROL: HeaderName = HeaderName::from_static("cache-control");
    pub const CONTENT_TYPE: HeaderName = HeaderName::from_static("content-type");
    pub const COOKIE: HeaderName = HeaderName::from_static("cookie");
    pub const LOCATION: HeaderName = HeaderName::from_static("location");
    pub const PATH: HeaderName = HeaderName::from_static(":path");
    pub const SET_COOKIE: HeaderName = HeaderName::from_static("set-cookie");
    pub const WWW_AUTHENTICATE: HeaderName = HeaderName::from_static("www-authenticate");
}

/// Values the filter uses itself.
pub mod values {
    use super::{HeaderValue, Static};

    pub const JSON: Static = HeaderValue::from_static("application/json");
    pub const FORM: Static = HeaderValue::from_static("application/x-www-form-urlencoded");
    pub const NO_STORE: Static = HeaderValue::from_static("no-store");
}

/// A list of headers to write.
pub type Headers = Vec<(HeaderName, HeaderValue)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_checked_a_word_at_a_time_follow_the_bytewise_rule() {
        // Every byte at every offset of a word, in values of every length around a word.
        for len in 1..=25 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    assert_eq!(valid_value(&v), value_byte(b), "byte {b:#04x} at {at} of {len}");
                }
            }
        }
        // A tab beside a bad byte in one word, and bad bytes after good words.
        assert!(!valid_value(b"ab\tc\rdef"));
        assert!(valid_value(b"ab\tcdefgh\tijklmnop"));
        assert!(!valid_value(b"abcdefghijklmnop\x7f"));
        assert!(valid_value("Bearer é…€".as_bytes()));
        assert!(valid_value(b""));
    }

    #[test]
    fn values_refuse_every_control_byte_but_tab() {
        for bad in ["a\rb", "a\nb", "a\0b", "\x7f", "x\x01", "ok\r\nx-admin: 1"] {
            assert_eq!(HeaderValue::new(bad), Err(InvalidHeader), "{bad:?}");
        }
        for good in ["", "Bearer abc.def", "a\tb", "Grüße", "x=1; Path=/; HttpOnly"] {
            assert_eq!(HeaderValue::new(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn names_are_lowercase_tokens() {
        assert_eq!(HeaderName::new(" X-User ").unwrap().as_str(), "x-user");
        for bad in ["", "x y", "a:b", "x\ry", "é", ":"] {
            assert!(HeaderName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(names::PATH.as_str(), ":path");
        assert_eq!(HeaderName::new("Authorization").unwrap(), names::AUTHORIZATION);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let v = HeaderValue::new("Bearer secret-token").unwrap();
        assert!(!format!("{v:?}").contains("secret"));
    }
}
