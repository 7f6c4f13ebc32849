//! The IdP's documents — the discovery document and the key set — fetched once per process,
//! shared by every worker through the host's shared data, adopted by each, refreshed
//! hourly and re-fetched when a token names a key the set does not have.
//!
//! One [`Docs`] per issuer per worker. It never does I/O and never wakes a request: it
//! answers questions and hands out calls for whoever asks to make them.
//! - The root context calls [`Docs::handle_tick`] on its timer: it adopts what other workers
//!   stored and returns the background fetches (first load, hourly refresh, retries) this
//!   worker won the lease for. The root makes those calls and hands each answer back with
//!   [`Docs::offer`].
//! - A request asks [`Docs::metadata`], [`Docs::keys`] or [`Docs::refetch_keys`]. It gets the
//!   document, or a [`Fetch`] and its call, meaning "make this call yourself and offer me
//!   the answer", or "unavailable". A request that has to wait therefore always waits on a
//!   call of its own (a host may let a request through once its own calls are answered).
//!
//! A [`Docs`] whose settings carry a fixed `jwks` URL is a key set without discovery: each
//! `extra_jwks_uris` entry of a policy is one, listed in the plan's issuers like a real
//! issuer, so it is fetched once per process, shared, refreshed and re-fetched on an unknown
//! `kid` by the very same protocol (a list of extra key-set slots inside one [`Docs`] would
//! have needed a second kind of slot, lease and re-fetch throttle). It is stored under its
//! URL, never under an issuer's key.
//!
//! The lease in shared data ([`lease::Lease`], taken with compare-and-swap) makes one worker
//! of the process fetch, and spaces retries after failures for all of them. A request that
//! needs a document while another worker fetches it may fetch it too, as a follower: at most
//! [`FOLLOWERS`] at a time per worker to re-fetch a key set, so a flood of tokens with unknown
//! keys cannot become a flood of calls to the IdP, and at most [`FOLLOWERS_FIRST_LOAD`] while
//! the document is missing here (Envoy started, a configuration was pushed): every request
//! then needs it, and a burst of traffic must not meet a burst of 503s. A request beyond
//! that gets `503` at once.

pub mod lease;
pub mod store;

use std::rc::Rc;

use crate::core::discovery::Metadata;
use crate::core::header::Headers;
use crate::core::idp::{Endpoint, IdpCall, IdpResponse, Purpose};
use crate::core::jwt::KeySet;
use crate::core::log::{Level, Log};
use crate::core::metrics::Metrics;

use lease::{Lease, LeaseState, Record, REFRESH_AFTER_MS};
use store::{Cas, Store};

/// Least time between two JWKS fetches caused by unknown keys (process-wide: the time is
/// the stored document's).
pub const KEYS_REFETCH_MIN_MS: u64 = 2_000;
/// Calls for requests that one worker may have in flight for one document it has while
/// another worker's fetch is under way (a key set re-fetched for an unknown `kid`).
pub const FOLLOWERS: usize = 4;
/// The same while this worker has no copy of the document yet: the IdP sees at most this
/// many extra calls per worker for a first load, however heavy the traffic.
pub const FOLLOWERS_FIRST_LOAD: usize = 64;

/// Where one issuer's documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocsSettings {
    /// The issuer exactly as configured (compared with discovery's `issuer`).
    pub issuer: String,
    pub discovery: Endpoint,
    /// `idp_cluster`.
    pub cluster: String,
    pub timeout_ms: u64,
    /// A fixed key set (an `extra_jwks_uris` entry of `issuer`): no discovery.
    pub jwks: Option<Endpoint>,
    /// `discovery_headers_*`: added to the discovery request.
    pub discovery_headers: Headers,
}

impl DocsSettings {
    /// What the documents are of, for keys and logs: the issuer, or the fixed key set's URL.
    pub fn source(&self) -> &str {
        self.jwks.as_ref().map_or(&self.issuer, |e| &e.url)
    }
}

/// Which document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discovery,
    Jwks,
}

impl Kind {
    fn purpose(self) -> Purpose {
        match self {
            Kind::Discovery => Purpose::Discovery,
            Kind::Jwks => Purpose::Jwks,
        }
    }
}

/// Who made a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Root,
    Request { follower: Option<usize> },
}

/// A fetch in flight. Whoever makes the call keeps this and hands it back with the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    kind: Kind,
    /// The lease this worker took for it (none for a follower).
    lease: Option<Lease>,
    sent_ms: u64,
    origin: Origin,
}

impl Fetch {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// When the call was made.
    pub fn sent_ms(&self) -> u64 {
        self.sent_ms
    }
}

/// A request's answer to "do you have it?".
#[derive(Debug)]
pub enum Need<T> {
    Ready(Rc<T>),
    /// Make this call, then [`Docs::offer`] the answer.
    Fetch(Fetch, IdpCall),
    /// Not now: the IdP failed recently (backoff), or enough calls are in flight.
    Unavailable,
}

/// The answer to "the token names a key I do not know".
#[derive(Debug)]
pub enum Refetch {
    /// Another worker already stored a newer key set: try it.
    Adopted(Rc<KeySet>),
    /// Make this call, then [`Docs::offer`] the answer.
    Fetch(Fetch, IdpCall),
    /// Not allowed now (fetched too recently, or backing off): the key is unknown.
    No,
}

/// A document type the protocol keeps.
trait Document: Sized {
    const KIND: Kind;
    fn parse(settings: &DocsSettings, body: &[u8], log: &mut Log) -> Result<Self, String>;
    /// Its slot, with the log and settings beside it (disjoint borrows of `docs`).
    fn split(docs: &mut Docs) -> (&mut Slot<Self>, &mut Log, &DocsSettings);
}

impl Document for Metadata {
    const KIND: Kind = Kind::Discovery;
    fn parse(settings: &DocsSettings, body: &[u8], _log: &mut Log) -> Result<Self, String> {
        Metadata::parse(&settings.issuer, body)
    }
    fn split(docs: &mut Docs) -> (&mut Slot<Self>, &mut Log, &DocsSettings) {
        (&mut docs.discovery, &mut docs.log, &docs.settings)
    }
}

impl Document for KeySet {
    const KIND: Kind = Kind::Jwks;
    fn split(docs: &mut Docs) -> (&mut Slot<Self>, &mut Log, &DocsSettings) {
        (&mut docs.jwks, &mut docs.log, &docs.settings)
    }
    fn parse(_settings: &DocsSettings, body: &[u8], log: &mut Log) -> Result<Self, String> {
        let set = KeySet::parse(body)?;
        if !set.skipped().is_empty() {
            let list = set.skipped().join(", ");
            log.push(Level::Warn, format!("JWKS: using {} keys, skipped {}: {list}", set.len(), set.skipped().len()));
        }
        Ok(set)
    }
}

struct Adopted<T> {
    value: Rc<T>,
    /// Version of the stored record (`None` when our own write's version is not known).
    cas: Option<Cas>,
    fetched_at_ms: u64,
}

/// What this worker tracks of one document, whatever its type.
struct SlotMeta {
    key: String,
    lease_key: String,
    /// A stored record that did not parse (not parsed, or logged, again).
    rejected: Option<Cas>,
    /// When the root's background fetch was sent.
    root: Option<u64>,
    /// When each follower call was sent.
    followers: [Option<u64>; FOLLOWERS_FIRST_LOAD],
    /// Last re-fetch started or failed here (JWKS).
    last_attempt_ms: u64,
    /// When the lease next allows a fetch, as last read (test oracle).
    due_ms: u64,
}

impl SlotMeta {
    /// Forgets calls whose answer can no longer come (the host dropped them).
    fn expire(&mut self, now: u64, timeout_ms: u64) {
        let gone = |sent: u64| now.saturating_sub(sent) > timeout_ms.saturating_add(1_000);
        if self.root.is_some_and(gone) {
            self.root = None;
        }
        for f in &mut self.followers {
            if f.is_some_and(gone) {
                *f = None;
            }
        }
    }
}

/// One document as this worker knows it.
struct Slot<T> {
    meta: SlotMeta,
    adopted: Option<Adopted<T>>,
}

impl<T> Slot<T> {
    fn new(issuer: &str, name: &str) -> Self {
        let key = format!("oidc:{issuer}:{name}");
        let meta = SlotMeta {
            lease_key: format!("{key}:lease"),
            key,
            rejected: None,
            root: None,
            followers: [None; FOLLOWERS_FIRST_LOAD],
            last_attempt_ms: 0,
            due_ms: 0,
        };
        Slot { meta, adopted: None }
    }

    fn value(&self) -> Option<Rc<T>> {
        self.adopted.as_ref().map(|a| a.value.clone())
    }

    fn fetched_at(&self) -> Option<u64> {
        self.adopted.as_ref().map(|a| a.fetched_at_ms)
    }

    fn stale(&self, now: u64) -> bool {
        self.fetched_at().is_none_or(|at| now.saturating_sub(at) >= REFRESH_AFTER_MS)
    }
}

/// What [`Docs::claim`] found.
enum Claim {
    Taken(Lease),
    Fetching,
    Backoff,
    Fresh,
}

/// One issuer's documents in one worker.
pub struct Docs {
    settings: DocsSettings,
    me: u64,
    discovery: Slot<Metadata>,
    jwks: Slot<KeySet>,
    /// Discovery and JWKS calls, for the host's stats.
    pub metrics: Metrics,
    pub log: Log,
}

impl Docs {
    /// `me` identifies this worker in leases (any number unique in the process).
    pub fn new(settings: DocsSettings, me: u64) -> Self {
        let discovery = Slot::new(&settings.issuer, "discovery");
        let jwks = Slot::new(settings.source(), if settings.jwks.is_some() { "extra-jwks" } else { "jwks" });
        Docs { settings, me: me | 1, discovery, jwks, metrics: Metrics::default(), log: Log::default() }
    }

    pub fn settings(&self) -> &DocsSettings {
        &self.settings
    }

    /// At load (no call may be made then): creates the leases that do not exist yet, so
    /// that every later write carries a CAS.
    pub fn prepare(&mut self, store: &mut dyn Store) {
        for key in [&self.discovery.meta.lease_key, &self.jwks.meta.lease_key] {
            if store.read(key).cas == Cas::Absent {
                let _ = store.write(key, &Lease::FREE.encode(), Cas::Absent);
            }
        }
    }

    /// The timer: adopts what other workers stored, and returns the fetches this worker
    /// won the lease for (first load, hourly refresh, retry after the backoff). Harmless
    /// when called early.
    pub fn handle_tick(&mut self, store: &mut dyn Store, now: u64) -> Vec<(Fetch, IdpCall)> {
        let timeout = self.settings.timeout_ms;
        self.discovery.meta.expire(now, timeout);
        self.jwks.meta.expire(now, timeout);
        self.adopt::<Metadata>(store);
        self.adopt::<KeySet>(store);
        let mut calls = Vec::new();
        if self.settings.jwks.is_none() && self.discovery.stale(now) && self.discovery.meta.root.is_none() {
            calls.extend(self.background(store, Kind::Discovery, now));
        }
        if self.jwks_uri().is_some() && self.jwks.stale(now) && self.jwks.meta.root.is_none() {
            calls.extend(self.background(store, Kind::Jwks, now));
        }
        calls
    }

    /// Adopts what other workers stored, and nothing else: for a worker that has no timer
    /// of its own (a native host's worker threads), while another thread fetches.
    pub fn adopt_stored(&mut self, store: &mut dyn Store, now: u64) {
        let timeout = self.settings.timeout_ms;
        self.discovery.meta.expire(now, timeout);
        self.jwks.meta.expire(now, timeout);
        self.adopt::<Metadata>(store);
        self.adopt::<KeySet>(store);
    }

    /// The earliest time something may be due (a refresh, the end of a backoff); nothing is
    /// fetched before it.
    pub fn poll_timeout(&self) -> u64 {
        let due = |adopted: Option<u64>, due_ms: u64| adopted.map_or(due_ms, |at| at.saturating_add(REFRESH_AFTER_MS));
        let d = if self.settings.jwks.is_some() { u64::MAX } else { due(self.discovery.fetched_at(), self.discovery.meta.due_ms) };
        let j = due(self.jwks.fetched_at(), self.jwks.meta.due_ms);
        d.min(j)
    }

    /// The discovery document, for a request.
    pub fn metadata(&mut self, store: &mut dyn Store, now: u64) -> Need<Metadata> {
        if let Some(m) = self.discovery.value() {
            return Need::Ready(m);
        }
        self.adopt::<Metadata>(store);
        match self.discovery.value() {
            Some(m) => Need::Ready(m),
            None => self.for_request(store, Kind::Discovery, now),
        }
    }

    /// What this worker has adopted (no shared-data access).
    pub fn current_metadata(&self) -> Option<Rc<Metadata>> {
        self.discovery.value()
    }

    pub fn current_keys(&self) -> Option<Rc<KeySet>> {
        self.jwks.value()
    }

    /// The key set, for a request (discovery must be there, with a `jwks_uri`).
    pub fn keys(&mut self, store: &mut dyn Store, now: u64) -> Need<KeySet> {
        if let Some(k) = self.jwks.value() {
            return Need::Ready(k);
        }
        self.adopt::<KeySet>(store);
        match self.jwks.value() {
            Some(k) => Need::Ready(k),
            None if self.jwks_uri().is_none() => Need::Unavailable,
            None => self.for_request(store, Kind::Jwks, now),
        }
    }

    /// The key set for a request, with the discovery document first when it is missing (a
    /// fixed key set needs none): the issuer of a bearer token other than the policy's own.
    pub fn keys_or_discovery(&mut self, store: &mut dyn Store, now: u64) -> Need<KeySet> {
        if self.settings.jwks.is_none() {
            match self.metadata(store, now) {
                Need::Ready(_) => {}
                Need::Fetch(f, call) => return Need::Fetch(f, call),
                Need::Unavailable => return Need::Unavailable,
            }
        }
        self.keys(store, now)
    }

    /// A token names a key the set does not have: a newer stored set, a re-fetch for the
    /// request to make, or no (throttled).
    pub fn refetch_keys(&mut self, store: &mut dyn Store, now: u64) -> Refetch {
        if self.adopt::<KeySet>(store) {
            if let Some(k) = self.jwks.value() {
                return Refetch::Adopted(k);
            }
        }
        let fetched_at = self.jwks.fetched_at().unwrap_or(0);
        let recent = |t: u64| t != 0 && now.saturating_sub(t) < KEYS_REFETCH_MIN_MS;
        if recent(fetched_at) || recent(self.jwks.meta.last_attempt_ms) || self.jwks_uri().is_none() {
            return Refetch::No;
        }
        match self.for_request::<KeySet>(store, Kind::Jwks, now) {
            Need::Fetch(f, call) => {
                self.jwks.meta.last_attempt_ms = now;
                Refetch::Fetch(f, call)
            }
            Need::Ready(_) | Need::Unavailable => Refetch::No,
        }
    }

    /// The answer to a fetch: validated, stored for the other workers (CAS read first) and
    /// adopted; or, when it is not usable, the reason (also logged). The lease is released
    /// either way: held until stale after a success, until the backoff after a failure.
    pub fn offer(&mut self, store: &mut dyn Store, fetch: Fetch, resp: &IdpResponse, now: u64) -> Result<(), String> {
        match fetch.kind {
            Kind::Discovery => self.offer_doc::<Metadata>(store, fetch, resp, now),
            Kind::Jwks => self.offer_doc::<KeySet>(store, fetch, resp, now),
        }
    }

    fn jwks_uri(&self) -> Option<&Endpoint> {
        let discovered = || self.discovery.adopted.as_ref().and_then(|a| a.value.jwks_uri.as_ref());
        self.settings.jwks.as_ref().or_else(discovered)
    }

    fn call(&self, kind: Kind) -> Option<IdpCall> {
        let endpoint = match kind {
            Kind::Discovery => &self.settings.discovery,
            Kind::Jwks => self.jwks_uri()?,
        };
        let mut call = IdpCall::get(kind.purpose(), &self.settings.cluster, endpoint, self.settings.timeout_ms);
        if kind == Kind::Discovery {
            call.headers.extend(self.settings.discovery_headers.iter().cloned());
        }
        Some(call)
    }

    /// A background fetch, when the lease is free (or fresh while the document is missing
    /// or stale here).
    fn background(&mut self, store: &mut dyn Store, kind: Kind, now: u64) -> Option<(Fetch, IdpCall)> {
        let call = self.call(kind)?;
        let Claim::Taken(lease) = self.claim(store, kind, now, true) else { return None };
        self.meta(kind).root = Some(now);
        self.started(kind);
        Some((Fetch { kind, lease: Some(lease), sent_ms: now, origin: Origin::Root }, call))
    }

    /// A fetch for a request: with the lease when it is free, as a follower while another
    /// worker fetches, none during a backoff.
    fn for_request<T>(&mut self, store: &mut dyn Store, kind: Kind, now: u64) -> Need<T> {
        let Some(call) = self.call(kind) else { return Need::Unavailable };
        let (lease, follower) = match self.claim(store, kind, now, true) {
            Claim::Taken(lease) => (Some(lease), None),
            Claim::Fetching => {
                let limit = if self.has(kind) { FOLLOWERS } else { FOLLOWERS_FIRST_LOAD };
                let slot = self.meta(kind);
                let Some(i) = slot.followers.iter().take(limit).position(Option::is_none) else { return Need::Unavailable };
                if let Some(f) = slot.followers.get_mut(i) {
                    *f = Some(now);
                }
                (None, Some(i))
            }
            Claim::Backoff | Claim::Fresh => return Need::Unavailable,
        };
        self.started(kind);
        Need::Fetch(Fetch { kind, lease, sent_ms: now, origin: Origin::Request { follower } }, call)
    }

    /// Whether this worker has adopted a copy of the document.
    fn has(&self, kind: Kind) -> bool {
        match kind {
            Kind::Discovery => self.discovery.adopted.is_some(),
            Kind::Jwks => self.jwks.adopted.is_some(),
        }
    }

    fn started(&mut self, kind: Kind) {
        if kind == Kind::Jwks {
            self.metrics.jwks_refresh();
        }
    }

    /// Tries to take the lease of `kind` (`fresh_too`: also one that says the document is
    /// fresh, which a worker that lacks it, or has it stale, may do).
    fn claim(&mut self, store: &mut dyn Store, kind: Kind, now: u64, fresh_too: bool) -> Claim {
        let (me, timeout) = (self.me, self.settings.timeout_ms);
        let key = self.meta(kind).lease_key.clone();
        // Create (when absent), take, and one retry after losing a race.
        for _ in 0..3 {
            let read = store.read(&key);
            let current = read.value.as_deref().and_then(Lease::decode);
            match Lease::state(current.as_ref(), now) {
                LeaseState::Fetching => {
                    self.meta(kind).due_ms = current.map_or(now, |l| l.until_ms);
                    return Claim::Fetching;
                }
                LeaseState::Backoff { until_ms } => {
                    self.meta(kind).due_ms = until_ms;
                    return Claim::Backoff;
                }
                LeaseState::Fresh { .. } if !fresh_too => return Claim::Fresh,
                LeaseState::Fresh { .. } | LeaseState::Free => {}
            }
            if read.cas == Cas::Absent {
                // Written with CAS 0 (create), then taken with the CAS it gets.
                let _ = store.write(&key, &Lease::FREE.encode(), Cas::Absent);
                continue;
            }
            let lease = Lease::take(current.as_ref(), me, now, timeout);
            if store.write(&key, &lease.encode(), read.cas).is_ok() {
                return Claim::Taken(lease);
            }
        }
        Claim::Fetching
    }

    /// Writes `next` over our lease, unless someone else took it meanwhile.
    fn release(&mut self, store: &mut dyn Store, kind: Kind, next: Lease) {
        let me = self.me;
        let key = &self.meta(kind).lease_key;
        let read = store.read(key);
        let ours = read.value.as_deref().and_then(Lease::decode).is_some_and(|l| l.holder == me && l.fetching);
        if ours {
            let _ = store.write(key, &next.encode(), read.cas);
        }
        self.meta(kind).due_ms = next.until_ms;
    }

    /// Stores a fetched document for the other workers; returns the version written.
    fn store_record(&mut self, store: &mut dyn Store, kind: Kind, body: &[u8], now: u64) -> Option<Cas> {
        let key = self.meta(kind).key.clone();
        for _ in 0..3 {
            let read = store.read(&key);
            if read.value.as_deref().and_then(Record::decode).is_some_and(|r| r.fetched_at_ms > now) {
                return None; // a newer one is there; the next tick adopts it
            }
            if store.write(&key, &Record::encode(now, body), read.cas).is_ok() {
                return Some(store.read(&key).cas);
            }
        }
        None
    }

    fn meta(&mut self, kind: Kind) -> &mut SlotMeta {
        match kind {
            Kind::Discovery => &mut self.discovery.meta,
            Kind::Jwks => &mut self.jwks.meta,
        }
    }

    /// Adopts the stored record when it changed; true when something new was adopted.
    fn adopt<T: Document>(&mut self, store: &mut dyn Store) -> bool {
        let (slot, log, settings) = T::split(self);
        let read = store.read(&slot.meta.key);
        let Some(bytes) = read.value else { return false };
        if slot.adopted.as_ref().is_some_and(|a| a.cas == Some(read.cas)) || slot.meta.rejected == Some(read.cas) {
            return false;
        }
        let Some(record) = Record::decode(&bytes) else { return false };
        match T::parse(settings, record.body, log) {
            Ok(value) => {
                slot.adopted = Some(Adopted { value: Rc::new(value), cas: Some(read.cas), fetched_at_ms: record.fetched_at_ms });
                true
            }
            Err(e) => {
                slot.meta.rejected = Some(read.cas);
                log.push(Level::Warn, format!("shared document {} is unusable: {e}", slot.meta.key));
                false
            }
        }
    }

    fn offer_doc<T: Document>(&mut self, store: &mut dyn Store, fetch: Fetch, resp: &IdpResponse, now: u64) -> Result<(), String> {
        let kind = T::KIND;
        let timeout = self.settings.timeout_ms;
        let meta = self.meta(kind);
        match fetch.origin {
            Origin::Root => meta.root = None,
            Origin::Request { follower: Some(i) } => {
                if let Some(f) = meta.followers.get_mut(i) {
                    *f = None;
                }
            }
            Origin::Request { follower: None } => {}
        }
        self.metrics.idp_call(kind.purpose(), resp, timeout);
        let parsed = match resp.status {
            Some(200) => T::parse(&self.settings, &resp.body, &mut self.log),
            Some(s) if s < 500 => Err(format!("the IdP answered HTTP {s}")),
            _ => Err(resp.failure(timeout).map(|f| f.describe(&self.settings.cluster, timeout)).unwrap_or_default()),
        };
        match parsed {
            Ok(value) => {
                let cas = self.store_record(store, kind, &resp.body, now);
                if let Some(lease) = fetch.lease {
                    self.release(store, kind, lease.succeeded(now));
                }
                let (slot, log, settings) = T::split(self);
                slot.adopted = Some(Adopted { value: Rc::new(value), cas, fetched_at_ms: now });
                log.push(Level::Info, format!("fetched {kind:?} from {}", settings.source()));
                Ok(())
            }
            Err(e) => {
                let retry = fetch.lease.map(|lease| {
                    let next = lease.failed(now);
                    self.release(store, kind, next);
                    next.until_ms.saturating_sub(now)
                });
                if kind == Kind::Jwks {
                    self.jwks.meta.last_attempt_ms = now;
                }
                let when = retry.map_or_else(|| "another worker is fetching it".to_string(), |ms| format!("retrying in {ms} ms"));
                self.log.push(Level::Warn, format!("{kind:?} fetch failed: {e}; {when}"));
                Err(e)
            }
        }
    }
}

/// The documents of a plan's other issuers, beside one policy's own: lent to a request
/// whose bearer token comes from another allowed issuer, or is signed by an extra key set.
#[derive(Default)]
pub struct OtherDocs<'a> {
    before: &'a mut [Docs],
    after: &'a mut [Docs],
}

impl<'a> OtherDocs<'a> {
    /// Splits `all` (one per issuer of the plan) into issuer `own`'s documents and the others.
    pub fn split(all: &'a mut [Docs], own: usize) -> Option<(&'a mut Docs, OtherDocs<'a>)> {
        let (before, rest) = all.split_at_mut(own.min(all.len()));
        let (docs, after) = rest.split_first_mut()?;
        Some((docs, OtherDocs { before, after }))
    }

    /// Issuer `i`'s documents (index in the plan's issuers), `own` being the policy's.
    pub fn get<'b>(&'b mut self, own: &'b mut Docs, i: usize) -> Option<&'b mut Docs> {
        let n = self.before.len();
        match i.checked_sub(n) {
            None => self.before.get_mut(i),
            Some(0) => Some(own),
            Some(k) => self.after.get_mut(k - 1),
        }
    }
}

/// Setting what a worker has adopted directly (unit tests of the request machine).
#[cfg(any(test, feature = "testing"))]
impl Docs {
    pub fn adopt_metadata(&mut self, meta: Metadata, at_ms: u64) {
        self.discovery.adopted = Some(Adopted { value: Rc::new(meta), cas: None, fetched_at_ms: at_ms });
    }

    pub fn adopt_keys(&mut self, keys: KeySet, at_ms: u64) {
        self.jwks.adopted = Some(Adopted { value: Rc::new(keys), cas: None, fetched_at_ms: at_ms });
    }

    pub fn forget_metadata(&mut self) {
        self.discovery.adopted = None;
    }
}
