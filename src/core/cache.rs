//! Per-worker caches of what the IdP (or a signature check, or a decryption) already
//! established: grant results, verified JWTs, introspection answers, opened sessions.
//!
//! Grant results are keyed by a SHA-256 over length-prefixed parts ([`key`]), so a wrong
//! password can never hit another user's cached token and no password is kept. Tokens and
//! session cookies are keyed by themselves (compared whole, so no collision can match a
//! forged value; hashing them with SHA-256 on every request would cost more than it hides:
//! the token is in the request anyway). Entries expire shortly before the token does.

use std::borrow::Borrow;
use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use sha2::{Digest, Sha256};

/// Hash of everything that identifies a cached answer.
pub type Key = [u8; 32];

/// Builds a key from length-prefixed parts (no ambiguity between `ab|c` and `a|bc`).
pub fn key(parts: &[&str]) -> Key {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// Never cache for less than this …
const MIN_TTL_MS: u64 = 1_000;
/// … and stop using an entry this long before the token expires, at most.
const MAX_MARGIN_MS: u64 = 30_000;

/// When to stop using a token that expires at `expires_at_ms`: a tenth of its remaining
/// life early, at most 30 s. `None` when it is not worth caching.
pub fn usable_until(expires_at_ms: u64, now_ms: u64) -> Option<u64> {
    let ttl = expires_at_ms.saturating_sub(now_ms);
    let usable = ttl.saturating_sub((ttl / 10).min(MAX_MARGIN_MS));
    (usable >= MIN_TTL_MS).then_some(now_ms + usable)
}

/// Builds [`EdgeHasher`]s (keyed per cache, like the standard hasher).
#[derive(Default, Clone)]
pub struct Edges(RandomState);

impl BuildHasher for Edges {
    type Hasher = EdgeHasher<<RandomState as BuildHasher>::Hasher>;
    fn build_hasher(&self) -> Self::Hasher {
        EdgeHasher(self.0.build_hasher())
    }
}

/// Hashes a long key by its length and its first and last [`EDGE`] bytes only. Keys here
/// are credentials that end in random bytes (a JWT's signature, a sealed cookie's tag, a
/// random opaque token, a digest) and are compared whole on lookup, so a shared middle
/// never matches the wrong entry; and only keys something vouched for (a signature, the
/// AEAD tag, the IdP) are ever stored, so nobody outside can crowd one bucket. Hashing a
/// 2 KB session cookie whole was a tenth of a cached request's time in Wasm.
pub struct EdgeHasher<H>(H);

const EDGE: usize = 32;

impl<H: Hasher> Hasher for EdgeHasher<H> {
    fn write(&mut self, bytes: &[u8]) {
        match (bytes.get(..EDGE), bytes.len().checked_sub(EDGE).and_then(|tail| bytes.get(tail..))) {
            (Some(head), Some(tail)) if bytes.len() > 2 * EDGE => {
                self.0.write_usize(bytes.len());
                self.0.write(head);
                self.0.write(tail);
            }
            _ => self.0.write(bytes),
        }
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

struct Entry<V> {
    value: V,
    until_ms: u64,
}

/// A bounded map from key to value with expiry, counting its hits and misses.
pub struct Cache<K, V> {
    entries: HashMap<K, Entry<V>, Edges>,
    capacity: usize,
    hits: Cell<u64>,
    misses: Cell<u64>,
}

impl<K: Hash + Eq + Clone, V> Cache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Cache { entries: HashMap::default(), capacity: capacity.max(1), hits: Cell::new(0), misses: Cell::new(0) }
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q, now_ms: u64) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let found = self.entries.get(key).filter(|e| e.until_ms > now_ms).map(|e| &e.value);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.set(counter.get().saturating_add(1));
        found
    }

    /// Hits and misses since the last call.
    pub fn take_counts(&self) -> (u64, u64) {
        (self.hits.replace(0), self.misses.replace(0))
    }

    /// Stores `value` for a token expiring at `expires_at_ms` (see [`usable_until`]).
    pub fn put(&mut self, key: K, value: V, expires_at_ms: u64, now_ms: u64) {
        let Some(until_ms) = usable_until(expires_at_ms, now_ms) else { return };
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.until_ms > now_ms);
            if self.entries.len() >= self.capacity {
                // Still full of live entries: drop the eighth closest to expiry, so that a
                // stream of new keys pays this scan once per capacity/8 insertions.
                let mut until: Vec<u64> = self.entries.values().map(|e| e.until_ms).collect();
                let nth = until.len() / 8;
                let (_, threshold, _) = until.select_nth_unstable(nth);
                let threshold = *threshold;
                let mut room = nth + 1;
                self.entries.retain(|_, e| {
                    if room > 0 && e.until_ms <= threshold {
                        room -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        }
        self.entries.insert(key, Entry { value, until_ms });
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
        let mut c: Cache<Key, &str> = Cache::new(10);
        let k = key(&["x"]);
        c.put(k, "tok", 100_000, 0);
        assert_eq!(c.get(&k, 89_999), Some(&"tok"));
        assert_eq!(c.get(&k, 90_000), None);
        c.put(k, "tok", 3_600_000, 0);
        assert_eq!(c.get(&k, 3_570_000 - 1), Some(&"tok"));
        assert_eq!(c.get(&k, 3_570_000), None);
    }

    #[test]
    fn short_lived_not_cached() {
        let mut c: Cache<Key, &str> = Cache::new(10);
        c.put(key(&["y"]), "tok", 500, 0);
        c.put(key(&["z"]), "tok", 0, 10);
        assert!(c.is_empty());
    }

    #[test]
    fn keys_sharing_their_edges_are_still_different_keys() {
        let mut c: Cache<Box<str>, u32> = Cache::new(10);
        let (head, tail) = ("h".repeat(40), "t".repeat(40));
        // They really collide: the hash sees only the length and the edges …
        let edges = Edges::default();
        let (ab, ba) = (format!("{head}ab{tail}"), format!("{head}ba{tail}"));
        assert_eq!(edges.hash_one(ab.as_str()), edges.hash_one(ba.as_str()));
        assert_ne!(edges.hash_one(ab.as_str()), edges.hash_one(format!("{head}abc{tail}").as_str()));
        // … and the cache still tells them apart.
        for (i, middle) in ["a", "b", "ab"].iter().enumerate() {
            c.put(format!("{head}{middle}{tail}").into(), i as u32, 100_000, 0);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(format!("{head}b{tail}").as_str(), 0), Some(&1));
        assert_eq!(c.get(format!("{head}ab{tail}").as_str(), 0), Some(&2));
        assert_eq!(c.get(format!("{head}c{tail}").as_str(), 0), None);
        assert_eq!(c.get("short", 0), None);
    }

    #[test]
    fn bounded() {
        let mut c: Cache<Box<str>, &str> = Cache::new(3);
        for i in 0..10u64 {
            c.put(i.to_string().into(), "t", 100_000 + i, 0);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("9", 0), Some(&"t"));
    }

    #[test]
    fn a_stream_of_new_keys_stays_bounded_and_keeps_the_longest_lived() {
        let mut c: Cache<Box<str>, u64> = Cache::new(800);
        for i in 0..10_000u64 {
            c.put(i.to_string().into(), i, 1_000_000 + i, 0);
            assert!(c.len() <= 800);
        }
        assert!(c.len() >= 700, "{}", c.len());
        assert_eq!(c.get("9999", 0), Some(&9999));
        assert_eq!(c.get("0", 0), None);
        assert_eq!(c.take_counts(), (1, 1));
        assert_eq!(c.take_counts(), (0, 0));
    }
}
