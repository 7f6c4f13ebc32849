//! The host's shared data, as the document protocol sees it: a map of byte values with a
//! version number (CAS) per key, shared by every worker of the process.
//!
//! Every write carries the [`Cas`] that a read just returned: there is no unconditional
//! write. Envoy treats CAS 0 as "write anyway", but Kong's ngx_wasm_module refuses a CAS-0
//! write to a key that exists, so a write that skipped the read would silently fail there
//! (a rotated key set would never land). Shared-data calls are synchronous in every host,
//! so the store is a port lent to each event rather than an action to poll.

use std::num::NonZeroU32;

/// The version a read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// The key does not exist (written with CAS 0: create).
    Absent,
    /// The key's current version.
    Expect(NonZeroU32),
}

impl Cas {
    /// From the number a host returns (0 means the key does not exist).
    pub fn from_host(cas: u32) -> Cas {
        NonZeroU32::new(cas).map_or(Cas::Absent, Cas::Expect)
    }

    /// The number to hand to the host.
    pub fn to_host(self) -> u32 {
        match self {
            Cas::Absent => 0,
            Cas::Expect(n) => n.get(),
        }
    }
}

/// What a read found: the value (`None` when absent or empty) and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub value: Option<Vec<u8>>,
    pub cas: Cas,
}

/// Another worker wrote the key since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict;

/// Shared data.
pub trait Store {
    fn read(&mut self, key: &str) -> Read;
    fn write(&mut self, key: &str, value: &[u8], cas: Cas) -> Result<(), Conflict>;
}
