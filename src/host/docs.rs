//! The IdP's discovery document and JWKS, kept in sync across Envoy workers through the
//! host's shared data.
//!
//! One worker at a time holds the fetch lease ([`Lease`]); the others adopt what it stores.
//! A failed fetch extends the lease to the backoff deadline, so retries are spaced for the
//! whole process, not per worker. A token with an unknown `kid` asks for an early JWKS
//! re-fetch, at most once per [`KEYS_REFETCH_MIN_MS`].

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::core::config::Plan;
use crate::core::discovery::{self, Lease, Metadata, Record};
use crate::core::idp::{IdpRequest, Purpose};
use crate::core::jwt::KeySet;
use crate::core::metrics::Metrics;
use crate::host::io::{dispatch, log, read_call_response};

/// Least time between two JWKS fetches caused by unknown keys.
pub const KEYS_REFETCH_MIN_MS: u64 = 2_000;

/// One shared document: its keys and what this worker has adopted of it.
struct Doc {
    key: String,
    lease_key: String,
    /// CAS of the stored record this worker last adopted.
    adopted_cas: Option<u32>,
    /// When the adopted record was fetched.
    fetched_at_ms: u64,
    /// Our in-flight fetch: token, the lease we hold, when it was sent.
    inflight: Option<(u32, Lease, u64)>,
}

impl Doc {
    fn new(issuer: &str, name: &str) -> Self {
        let key = format!("oidc:{issuer}:{name}");
        Doc { lease_key: format!("{key}:lease"), key, adopted_cas: None, fetched_at_ms: 0, inflight: None }
    }

    /// Reads the shared record and, when it is newer than what this worker adopted (or
    /// `again`), parses it. Returns the parsed value if adopted, and whether a fetch is due.
    fn adopt<T>(&mut self, again: bool, now: u64, parse: impl FnOnce(&[u8]) -> Result<T, String>) -> (Option<T>, bool) {
        let Some((bytes, cas)) = shared(&self.key) else { return (None, true) };
        let Some(record) = Record::decode(&bytes) else { return (None, true) };
        if cas == self.adopted_cas && !again {
            return (None, record.stale(now));
        }
        match parse(record.body) {
            Ok(value) => {
                self.adopted_cas = cas;
                self.fetched_at_ms = record.fetched_at_ms;
                (Some(value), record.stale(now))
            }
            Err(e) => {
                log(LogLevel::Warn, &format!("shared document {} is unusable: {e}", self.key));
                (None, true)
            }
        }
    }
}

/// What this worker has of the IdP's documents.
pub struct Docs {
    me: u64,
    discovery: Doc,
    jwks: Doc,
    /// A token with an unknown key is waiting for a re-fetch.
    keys_wanted: bool,
    pub meta: Option<Rc<Metadata>>,
    pub keys: Option<Rc<KeySet>>,
    /// Discovery and JWKS calls of this worker, for Envoy's stats.
    pub metrics: Metrics,
}

impl Docs {
    pub fn new(issuer: &str) -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        Docs {
            me: u64::from_le_bytes(b) | 1,
            discovery: Doc::new(issuer, "discovery"),
            jwks: Doc::new(issuer, "jwks"),
            keys_wanted: false,
            meta: None,
            keys: None,
            metrics: Metrics::default(),
        }
    }

    /// Asks for an early JWKS re-fetch. False when one happened too recently: the token's
    /// key is then unknown for good.
    pub fn want_keys(&mut self, now: u64) -> bool {
        if self.jwks.inflight.is_some() || self.keys_wanted {
            return true;
        }
        if now.saturating_sub(self.jwks.fetched_at_ms) < KEYS_REFETCH_MIN_MS {
            return false;
        }
        self.keys_wanted = true;
        true
    }

    /// Adopts what other workers stored and fetches what nobody has. Returns true when the
    /// metadata or keys changed (waiting requests should be retried).
    pub fn sync(&mut self, plan: &Plan, now: u64) -> bool {
        let mut changed = false;
        let (meta, meta_due) = self.discovery.adopt(self.meta.is_none(), now, |b| Metadata::parse(plan, b));
        if let Some(meta) = meta {
            self.meta = Some(Rc::new(meta));
            changed = true;
        }
        if self.meta.is_none() || meta_due {
            self.maybe_fetch(Purpose::Discovery, discovery::request(plan), now, false);
        }
        if let Some(meta) = self.meta.clone() {
            let (keys, keys_due) = self.jwks.adopt(false, now, KeySet::parse);
            if let Some(keys) = keys {
                log(LogLevel::Debug, &format!("adopted JWKS with {} signing keys", keys.len()));
                self.keys = Some(Rc::new(keys));
                self.keys_wanted = false;
                changed = true;
            }
            if keys_due || self.keys_wanted {
                if let Some(req) = discovery::jwks_request(plan, &meta) {
                    let early = self.keys_wanted && !keys_due;
                    self.maybe_fetch(Purpose::Jwks, req, now, early);
                }
            }
        }
        changed
    }

    /// Handles the answer to one of our fetches. `None` when `token` is not ours;
    /// otherwise whether the metadata or keys changed.
    pub fn answered(&mut self, plan: &Plan, token: u32, body_size: usize, now: u64) -> Option<bool> {
        let purpose = match (self.discovery.inflight, self.jwks.inflight) {
            (Some((t, ..)), _) if t == token => Purpose::Discovery,
            (_, Some((t, ..))) if t == token => Purpose::Jwks,
            _ => return None,
        };
        let (_, lease, sent) = self.doc(purpose).inflight.take()?;
        let resp = read_call_response(body_size, now.saturating_sub(sent));
        self.metrics.idp_call(purpose, &resp, plan.timeout_ms);
        let doc = self.doc(purpose);
        let valid = match (purpose, resp.status) {
            (Purpose::Discovery, Some(200)) => Metadata::parse(plan, &resp.body).map(|_| ()),
            (Purpose::Jwks, Some(200)) => KeySet::parse(&resp.body).map(|set| {
                if !set.skipped().is_empty() {
                    let list = set.skipped().join(", ");
                    log(LogLevel::Warn, &format!("JWKS: using {} keys, skipped {}: {list}", set.len(), set.skipped().len()));
                }
            }),
            (_, Some(s)) if s < 500 => Err(format!("the IdP answered HTTP {s}")),
            _ => Err(resp
                .failure(plan.timeout_ms)
                .map(|f| f.describe(&plan.idp_cluster, plan.timeout_ms))
                .unwrap_or_default()),
        };
        match valid {
            Ok(()) => {
                let _ = hostcalls::set_shared_data(&doc.key, Some(&Record::encode(now, &resp.body)), None);
                let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&lease.succeeded(now).encode()), None);
                log(LogLevel::Info, &format!("fetched {purpose:?} from {}", plan.issuer));
            }
            Err(e) => {
                let next = lease.failed(now);
                let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&next.encode()), None);
                log(LogLevel::Warn, &format!("{purpose:?} fetch failed: {e}; retrying in {} ms", next.until_ms - now));
                if purpose == Purpose::Jwks {
                    // Requests waiting for a re-fetch learn now that their key stays unknown.
                    self.keys_wanted = false;
                    self.jwks.fetched_at_ms = now;
                    return Some(true);
                }
            }
        }
        Some(self.sync(plan, now))
    }

    /// Takes the fetch lease for `purpose` if it is free (or, `early`, if its holder
    /// succeeded), and sends `req`.
    fn maybe_fetch(&mut self, purpose: Purpose, req: IdpRequest, now: u64, early: bool) {
        let me = self.me;
        let doc = self.doc(purpose);
        if doc.inflight.is_some() {
            return;
        }
        let Ok((current, cas)) = hostcalls::get_shared_data(&doc.lease_key) else { return };
        if current.is_none() {
            // The host ignores CAS for a key that does not exist yet (and reads an empty value
            // back as absent): write a free lease now and compete for it on the next tick.
            let free = Lease { holder: 0, until_ms: 0, failures: 0 };
            let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&free.encode()), None);
            return;
        }
        let claimable = if early {
            Lease::claimable_early(current.as_deref(), now, req.timeout_ms)
        } else {
            Lease::claimable(current.as_deref(), now)
        };
        if !claimable {
            return;
        }
        let lease = Lease::take(current.as_deref(), me, now, req.timeout_ms);
        if hostcalls::set_shared_data(&doc.lease_key, Some(&lease.encode()), cas).is_err() {
            return; // another worker won
        }
        match dispatch(&req) {
            Ok(token) => doc.inflight = Some((token, lease, now)),
            Err(e) => {
                log(LogLevel::Warn, &e);
                let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&lease.failed(now).encode()), None);
                return;
            }
        }
        if purpose == Purpose::Jwks {
            self.metrics.jwks_refresh();
        }
    }

    fn doc(&mut self, purpose: Purpose) -> &mut Doc {
        if purpose == Purpose::Discovery {
            &mut self.discovery
        } else {
            &mut self.jwks
        }
    }
}

fn shared(key: &str) -> Option<(Vec<u8>, Option<u32>)> {
    match hostcalls::get_shared_data(key) {
        Ok((Some(bytes), cas)) => Some((bytes, cas)),
        _ => None,
    }
}
