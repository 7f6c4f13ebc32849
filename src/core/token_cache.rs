//! Tokens obtained with the password and client credentials grants, cached per worker.
//!
//! The key is a SHA-256 over the grant, the client, the user, the password and the scope, so
//! a wrong password can never hit another user's (or the same user's) cached token, and no
//! password is kept in clear. Entries expire shortly before the token does.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Hash of everything that identifies a token request.
pub type Key = [u8; 32];

/// Builds a cache key from length-prefixed parts (no ambiguity between `ab|c` and `a|bc`).
pub fn key(parts: &[&str]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

struct Entry {
    access_token: String,
    expires_at_ms: u64,
}

/// A bounded map from request hash to access token.
pub struct TokenCache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

/// Never cache a token for less than this (not worth it) …
const MIN_TTL_MS: u64 = 1_000;
/// … and stop using it this long before it expires (clock skew, transit time), at most.
const MAX_MARGIN_MS: u64 = 30_000;

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache { entries: HashMap::new(), capacity: capacity.max(1) }
    }

    pub fn get(&self, key: &Key, now_ms: u64) -> Option<&str> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at_ms > now_ms)
            .map(|e| e.access_token.as_str())
    }

    /// Stores `token` valid for `expires_in` seconds from `now_ms`. Tokens without a
    /// lifetime are not cached.
    pub fn put(&mut self, key: Key, token: &str, expires_in: Option<u64>, now_ms: u64) {
        let Some(ttl_ms) = expires_in.map(|s| s.saturating_mul(1000)) else { return };
        let margin = (ttl_ms / 10).min(MAX_MARGIN_MS);
        let usable = ttl_ms.saturating_sub(margin);
        if usable < MIN_TTL_MS {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.expires_at_ms > now_ms);
            if self.entries.len() >= self.capacity {
                // Still full of live tokens: drop the one closest to expiry.
                if let Some(k) = self.entries.iter().min_by_key(|(_, e)| e.expires_at_ms).map(|(k, _)| *k) {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, Entry { access_token: token.to_string(), expires_at_ms: now_ms + usable });
    }

    pub fn remove(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_users_and_passwords() {
        let a = key(&["password", "c", "john", "doe", "openid"]);
        assert_ne!(a, key(&["password", "c", "john", "doe2", "openid"]));
        assert_ne!(a, key(&["password", "c", "jane", "doe", "openid"]));
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(a, key(&["password", "c", "john", "doe", "openid"]));
    }

    #[test]
    fn expires_before_the_token() {
        let mut c = TokenCache::new(10);
        let k = key(&["x"]);
        c.put(k, "tok", Some(100), 0);
        assert_eq!(c.get(&k, 89_999), Some("tok"));
        assert_eq!(c.get(&k, 90_000), None);
        c.put(k, "tok", Some(3600), 0);
        assert_eq!(c.get(&k, 3_570_000 - 1), Some("tok"));
        assert_eq!(c.get(&k, 3_570_000), None);
    }

    #[test]
    fn no_lifetime_no_cache() {
        let mut c = TokenCache::new(10);
        c.put(key(&["x"]), "tok", None, 0);
        c.put(key(&["y"]), "tok", Some(0), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn bounded() {
        let mut c = TokenCache::new(3);
        for i in 0..10u64 {
            c.put(key(&[&i.to_string()]), "t", Some(100 + i), 0);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&key(&["9"]), 0), Some("t"));
    }
}
