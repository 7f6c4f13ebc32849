//! The process's shared data: the documents and leases of the core's document protocol
//! ([`envoy_oidc::core::docs::store`]), one map for every thread of Envoy, as a Wasm host's
//! shared data is one map for every VM.
//!
//! Writes are checked strictly, as Kong's host checks them: a write must carry the version
//! the last read returned, and [`Cas::Absent`] creates a key only if it does not exist.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use envoy_oidc::core::docs::store::{Cas, Conflict, Read, Store};

#[derive(Default)]
struct Map {
    values: HashMap<String, (Vec<u8>, u32)>,
    version: u32,
}

static SHARED: Mutex<Option<Map>> = Mutex::new(None);

/// The process's shared data, locked for each read or write (a few per second per thread:
/// requests read the documents their worker adopted, not the map).
pub struct Process;

fn map() -> MutexGuard<'static, Option<Map>> {
    // A thread that panicked while holding the lock left the map whole (every change is
    // one insert): use it.
    SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store for Process {
    fn read(&mut self, key: &str) -> Read {
        let guard = map();
        match guard.as_ref().and_then(|m| m.values.get(key)) {
            Some((v, version)) => Read { value: (!v.is_empty()).then(|| v.clone()), cas: Cas::from_host(*version) },
            None => Read { value: None, cas: Cas::Absent },
        }
    }

    fn write(&mut self, key: &str, value: &[u8], cas: Cas) -> Result<(), Conflict> {
        let mut guard = map();
        let m = guard.get_or_insert_with(Map::default);
        let current = m.values.get(key).map_or(0, |(_, v)| *v);
        if current != cas.to_host() {
            return Err(Conflict);
        }
        m.version = m.version.wrapping_add(1).max(1);
        let version = m.version;
        m.values.insert(key.to_string(), (value.to_vec(), version));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_must_carry_the_version_it_read() {
        let mut s = Process;
        let key = "store-test-key";
        let first = s.read(key);
        assert_eq!(first.cas, Cas::Absent);
        s.write(key, b"one", first.cas).unwrap();
        // Creating it again, or writing with a stale version, is refused.
        assert_eq!(s.write(key, b"two", Cas::Absent), Err(Conflict));
        let second = s.read(key);
        assert_eq!(second.value.as_deref(), Some(&b"one"[..]));
        s.write(key, b"two", second.cas).unwrap();
        assert_eq!(s.write(key, b"three", second.cas), Err(Conflict));
        assert_eq!(s.read(key).value.as_deref(), Some(&b"two"[..]));
    }
}
