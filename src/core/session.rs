//! Browser sessions in encrypted cookies, shared by every worker and every Envoy that has
//! the same `session_secret`.
//!
//! A value is sealed with AES-256-GCM (key = SHA-256 of a label and the secret, a random
//! 96-bit nonce per write, the cookie name as associated data), base64url-encoded and split
//! into chunks under 4 KB: `session` carries `N.<part 1>` when there are N > 1 parts, and
//! `session_2` … `session_N` the rest. Tampering, truncation, swapped chunks, another secret
//! or another cookie name all fail authentication. Timeouts (idling, rolling, absolute) are
//! enforced from timestamps inside the sealed value.
//!
//! [`SessionSettings`] writes the `Set-Cookie` headers: a session's chunks (expiring stale
//! ones the client still has), and the deletions of a dead session and of the login cookie.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::cookies::{self, CookieAttrs};
use crate::core::header::HeaderValue;

/// Bytes of a cookie value per chunk (browsers allow about 4096 per cookie, name included).
pub const CHUNK: usize = 3800;
/// At most this many chunks are read.
pub const MAX_CHUNKS: usize = 16;

/// Seals and opens cookie values with a key derived from `session_secret`.
pub struct Sealer {
    cipher: Aes256Gcm,
    /// The policy's name, bound into every value besides the cookie name (empty for the
    /// default policy, whose values are bound to the cookie name alone).
    policy: Box<str>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    pub fn new(secret: &str, policy: &str) -> Self {
        let key: [u8; 32] = Sha256::new().chain_update(b"envoy-oidc session key v1\0").chain_update(secret.as_bytes()).finalize().into();
        Sealer { cipher: Aes256Gcm::new(&key.into()), policy: policy.into() }
    }

    /// The associated data: the cookie name, after the policy's.
    fn aad<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, [u8]> {
        if self.policy.is_empty() {
            std::borrow::Cow::Borrowed(name.as_bytes())
        } else {
            std::borrow::Cow::Owned([self.policy.as_bytes(), b"\0", name.as_bytes()].concat())
        }
    }

    /// `base64url(nonce || ciphertext || tag)`, bound to `name` (and the policy).
    pub fn seal(&self, name: &str, plaintext: &[u8], nonce: [u8; 12]) -> String {
        let aad = self.aad(name);
        let payload = Payload { msg: plaintext, aad: &aad };
        // Encryption cannot fail for inputs this size; an empty value would be rejected on open.
        let ct = self.cipher.encrypt(Nonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, name: &str, value: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &self.aad(name) }).ok()
    }
}

/// The sealed contents of a session cookie.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub sub: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idt: Option<String>,
    /// Access token expiry (seconds; 0 when unknown).
    pub exp: u64,
    /// Created (seconds).
    pub iat: u64,
    /// Last written: renewed and seen (seconds).
    pub ren: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session(sub={}, exp={}, <tokens redacted>)", self.sub, self.exp)
    }
}

/// Session timeouts in seconds; 0 disables one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub idling: u64,
    pub rolling: u64,
    pub absolute: u64,
}

impl Session {
    /// Whether the session is still alive at `now`.
    pub fn alive(&self, t: &Timeouts, now: u64) -> bool {
        let within = |limit: u64, since: u64| limit == 0 || now.saturating_sub(since) <= limit;
        within(t.absolute, self.iat) && within(t.idling, self.ren) && within(t.rolling, self.ren)
    }

    /// Whether the cookie should be written again now to keep the session alive: after a
    /// quarter of the idling timeout (or half the rolling one).
    pub fn due_for_renewal(&self, t: &Timeouts, now: u64) -> bool {
        let age = now.saturating_sub(self.ren);
        (t.idling > 0 && age.saturating_mul(4) >= t.idling) || (t.rolling > 0 && age.saturating_mul(2) >= t.rolling)
    }
}

/// Browser sessions (`session`, `authorization_code`): how cookies are sealed, named,
/// written and timed out.
#[derive(Debug)]
pub struct SessionSettings {
    pub sealer: Sealer,
    pub cookie_name: String,
    pub authorization_cookie_name: String,
    pub attrs: CookieAttrs,
    pub timeouts: Timeouts,
    /// Lifetime of the authorization (login in progress) cookie, seconds.
    pub authorization_ttl: u64,
    /// Refresh a session whose access token expired (`refresh_tokens`).
    pub refresh_tokens: bool,
    /// `unauthorized_destroy_session`, `forbidden_destroy_session`: a `401` / `403` answer
    /// expires the session cookies the request carried.
    pub unauthorized_destroy: bool,
    pub forbidden_destroy: bool,
}

impl SessionSettings {
    /// `Set-Cookie` headers that store `session` sealed with `nonce`, expiring the stale
    /// chunks of the `previous` ones the client sent.
    pub fn store(&self, session: &Session, nonce: [u8; 12], previous: usize, https: bool) -> Vec<HeaderValue> {
        let sealed = self.sealer.seal(&self.cookie_name, &serde_json::to_vec(session).unwrap_or_default(), nonce);
        let parts = chunks(&self.cookie_name, &sealed);
        let stale = (parts.len() + 1..=previous).filter_map(|i| self.attrs.delete(&chunk_name(&self.cookie_name, i), https));
        parts.iter().filter_map(|(n, v)| self.attrs.render(n, v, None, https)).chain(stale).collect()
    }

    /// Deletes a session of `previous` chunks (at least the first).
    pub fn clear(&self, previous: usize, https: bool) -> Vec<HeaderValue> {
        (1..=previous.max(1)).filter_map(|i| self.attrs.delete(&chunk_name(&self.cookie_name, i), https)).collect()
    }

    /// Sets the authorization cookie (a login in progress).
    pub fn authorization(&self, sealed: &str, https: bool) -> Option<HeaderValue> {
        self.attrs.render(&self.authorization_cookie_name, sealed, Some(self.authorization_ttl), https)
    }

    /// Deletes the authorization cookie.
    pub fn clear_authorization(&self, https: bool) -> Option<HeaderValue> {
        self.attrs.delete(&self.authorization_cookie_name, https)
    }

    /// Whether cookie `name` is one of the filter's (never sent upstream).
    pub fn is_own(&self, name: &str) -> bool {
        is_own(name, &self.cookie_name) || name == self.authorization_cookie_name
    }
}

/// Name of chunk `i` (1-based) of cookie `name`.
pub fn chunk_name(name: &str, i: usize) -> String {
    if i == 1 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// Splits a sealed value into `(cookie name, value)` chunks.
pub fn chunks(name: &str, sealed: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = sealed.as_bytes().chunks(CHUNK).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
    if parts.len() <= 1 {
        return vec![(name.to_string(), sealed.to_string())];
    }
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v = if i == 0 { format!("{}.{p}", parts.len()) } else { p.to_string() };
            (chunk_name(name, i + 1), v)
        })
        .collect()
}

/// The chunks of cookie `name` that a `Cookie` header carries, found in one pass over it
/// (the header is long once a session is in it, and this runs on every request).
pub struct Chunks<'a> {
    parts: [Option<&'a str>; MAX_CHUNKS],
}

impl<'a> Chunks<'a> {
    pub fn find(cookie_header: &'a str, name: &str) -> Self {
        let mut parts = [None; MAX_CHUNKS];
        for (k, v) in cookies::pairs(cookie_header) {
            let Some(i) = k.strip_prefix(name).and_then(chunk_index) else { continue };
            // The first cookie of a name counts, as everywhere else.
            if let Some(slot @ None) = i.checked_sub(1).and_then(|i| parts.get_mut(i)) {
                *slot = Some(v);
            }
        }
        Chunks { parts }
    }

    /// How many chunks the client sent, counting from the first (to expire stale ones).
    pub fn present(&self) -> usize {
        self.parts.iter().take_while(|p| p.is_some()).count()
    }

    /// The sealed value, reassembled: `N.` in the first chunk says how many there are.
    pub fn join(&self) -> Option<String> {
        let first = (*self.parts.first()?)?;
        let Some((count, rest)) = first.split_once('.') else { return Some(first.to_string()) };
        let count: usize = count.parse().ok().filter(|c| (2..=MAX_CHUNKS).contains(c))?;
        let mut out = rest.to_string();
        for part in self.parts.get(1..count)? {
            out.push_str((*part)?);
        }
        Some(out)
    }
}

/// Chunk number of a cookie name after the base name: `""` is 1, `"_N"` is N (N ≥ 2,
/// written as [`chunk_name`] writes it).
fn chunk_index(suffix: &str) -> Option<usize> {
    if suffix.is_empty() {
        return Some(1);
    }
    let n = suffix.strip_prefix('_')?;
    if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|i| *i >= 2)
}

/// Whether `cookie` is one of the filter's cookies (`name`, `name_N`).
pub fn is_own(cookie: &str, name: &str) -> bool {
    cookie == name || cookie.strip_prefix(name).and_then(|r| r.strip_prefix('_')).is_some_and(|n| n.parse::<usize>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(at: &str) -> Session {
        Session { sub: "john".into(), at: at.into(), rt: Some("rt".into()), idt: None, exp: 100, iat: 10, ren: 10 }
    }

    #[test]
    fn seal_and_open() {
        let s = Sealer::new("secret-1", "");
        let v = s.seal("session", b"hello", [7; 12]);
        assert_eq!(s.open("session", &v).unwrap(), b"hello");
        assert!(s.open("other", &v).is_none(), "bound to the cookie name");
        assert!(Sealer::new("secret-1", "app").open("session", &v).is_none(), "bound to the policy");
        let app = Sealer::new("secret-1", "app");
        assert!(s.open("session", &app.seal("session", b"x", [1; 12])).is_none());
        assert!(Sealer::new("secret-2", "").open("session", &v).is_none(), "another secret");
        let mut tampered = v.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(s.open("session", std::str::from_utf8(&tampered).unwrap()).is_none());
        assert!(s.open("session", &v[..v.len() - 4]).is_none(), "truncated");
        assert!(s.open("session", "").is_none());
        assert!(s.open("session", "!!!").is_none());
    }

    #[test]
    fn chunking_round_trip_and_swaps_fail() {
        let s = Sealer::new("k", "");
        let big = session(&"A".repeat(9000));
        let sealed = s.seal("session", &serde_json::to_vec(&big).unwrap(), [1; 12]);
        let parts = chunks("session", &sealed);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|(n, v)| n.len() + v.len() < 4000));
        assert!(parts[0].1.starts_with("4."));
        let header: String = parts.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        let with_others = format!("other=1; session_x=2; session_02=3; {header}; session_2=late");
        let joined = Chunks::find(&with_others, "session").join().unwrap();
        assert_eq!(joined, sealed);
        assert_eq!(Chunks::find(&header, "session").present(), 4);
        // swap two chunks
        let swapped = header.replace(&parts[1].1, "X").replace(&parts[2].1, &parts[1].1).replace('X', &parts[2].1);
        let joined = Chunks::find(&swapped, "session").join().unwrap();
        assert!(s.open("session", &joined).is_none());
        // a missing chunk
        let missing: String = parts.iter().take(3).map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
        assert!(Chunks::find(&missing, "session").join().is_none());
        assert_eq!(Chunks::find(&missing, "session").present(), 3);
        assert!(Chunks::find("session=99.abc", "session").join().is_none());
    }

    #[test]
    fn small_values_are_one_cookie() {
        let parts = chunks("session", "abc");
        assert_eq!(parts, vec![("session".to_string(), "abc".to_string())]);
        assert_eq!(Chunks::find("session=abc", "session").join().as_deref(), Some("abc"));
    }

    #[test]
    fn timeouts() {
        let t = Timeouts { idling: 900, rolling: 3600, absolute: 86400 };
        let s = session("x");
        assert!(s.alive(&t, 10 + 900));
        assert!(!s.alive(&t, 10 + 901));
        assert!(!s.due_for_renewal(&t, 10 + 224));
        assert!(s.due_for_renewal(&t, 10 + 225));
        let renewed = Session { ren: 86_000, ..s.clone() };
        assert!(renewed.alive(&t, 86_400));
        assert!(!renewed.alive(&t, 86_411), "absolute");
        let off = Timeouts { idling: 0, rolling: 0, absolute: 0 };
        assert!(s.alive(&off, u64::MAX));
    }

    #[test]
    fn own_cookie_names() {
        assert!(is_own("session", "session"));
        assert!(is_own("session_2", "session"));
        assert!(!is_own("session_x", "session"));
        assert!(!is_own("sessionid", "session"));
    }

    #[test]
    fn debug_redacts_tokens() {
        assert!(!format!("{:?}", session("secret-at")).contains("secret-at"));
    }
}
