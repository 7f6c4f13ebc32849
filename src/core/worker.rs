//! What one worker of the host (one Wasm VM, one Envoy worker thread) keeps for one plugin
//! configuration, and the events it takes: configure, tick, a root call's answer, and a
//! request's start and answers.
//!
//! Each event lends the host's shared data ([`Store`]) and the time; the worker clamps the
//! time to be non-decreasing (host clocks are wall time). Every event returns what the
//! adapter must do, and queues log lines and metrics for the adapter to drain; nothing here
//! touches the host. The host rules this makes checkable (see [`crate::core::testing`]):
//! the tick period comes only from [`Worker::handle_configure`], which makes no call; a
//! request's [`Next`] comes only from that request's own events.

use std::sync::Arc;

use crate::core::config::{Plan, Policy};
use crate::core::docs::store::Store;
use crate::core::docs::{Docs, Fetch};
use crate::core::idp::{IdpCall, IdpResponse};
use crate::core::log::{Log, LogLine};
use crate::core::metrics::Metrics;
use crate::core::request::{Caches, Cx, Next, Request, RequestView};

/// The timer period the adapter sets, once, when the configuration is loaded.
pub const TICK_MS: u64 = 500;
/// Entries in each per-worker cache.
pub const CACHE_CAPACITY: usize = 10_000;

/// What a root event (configure, tick) asks of the host.
#[must_use]
#[derive(Debug, Default)]
pub struct RootActions {
    /// Set the timer to this period (only ever from [`Worker::handle_configure`]).
    pub tick_period_ms: Option<u64>,
    /// Calls to make (never from [`Worker::handle_configure`]); hand each answer back with
    /// [`Worker::handle_root_answer`].
    pub calls: Vec<(Tag, IdpCall)>,
}

/// Fills a buffer with secure random bytes.
pub type Random = Box<dyn FnMut(&mut [u8])>;

/// Identifies a call the root context makes (a background document fetch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag(u32);

/// One configuration in one worker.
pub struct Worker {
    plan: Arc<Plan>,
    docs: Docs,
    caches: Caches,
    metrics: Metrics,
    log: Log,
    random: Random,
    last_now: u64,
    root_calls: Vec<(Tag, Fetch)>,
    next_tag: u32,
}

impl Worker {
    /// `me` identifies this worker in the process (leases); `random` fills buffers with
    /// secure random bytes.
    pub fn new(plan: Arc<Plan>, me: u64, random: Random) -> Self {
        let docs = Docs::new(plan.issuer.clone(), me);
        Worker {
            plan,
            docs,
            caches: Caches::new(CACHE_CAPACITY),
            metrics: Metrics::default(),
            log: Log::default(),
            random,
            last_now: 0,
            root_calls: Vec::new(),
            next_tag: 1,
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn policy(&self) -> &Policy {
        &self.plan.policy
    }

    fn now(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// The configuration was loaded: sets the timer, prepares shared data, makes no call
    /// (the first fetch happens on the first tick or for the first request).
    pub fn handle_configure(&mut self, store: &mut dyn Store) -> RootActions {
        self.docs.prepare(store);
        RootActions { tick_period_ms: Some(TICK_MS), calls: Vec::new() }
    }

    /// The timer: the background fetches this worker must make now.
    pub fn handle_tick(&mut self, store: &mut dyn Store, now: u64) -> RootActions {
        let now = self.now(now);
        let calls = self.docs.handle_tick(store, now);
        let calls = calls
            .into_iter()
            .map(|(fetch, call)| {
                let tag = Tag(self.next_tag);
                self.next_tag = self.next_tag.wrapping_add(1).max(1);
                self.root_calls.push((tag, fetch));
                (tag, call)
            })
            .collect();
        RootActions { tick_period_ms: None, calls }
    }

    /// The answer to a root call (an unknown tag is ignored).
    pub fn handle_root_answer(&mut self, store: &mut dyn Store, tag: Tag, resp: &IdpResponse, now: u64) {
        let now = self.now(now);
        let Some(i) = self.root_calls.iter().position(|(t, _)| *t == tag) else { return };
        let (_, fetch) = self.root_calls.swap_remove(i);
        let _ = self.docs.offer(store, fetch, resp, now);
    }

    /// A root call the host refused to send.
    pub fn root_call_not_sent(&mut self, tag: Tag) {
        self.root_calls.retain(|(t, _)| *t != tag);
    }

    /// Earliest time a background fetch may be due (tests).
    pub fn poll_timeout(&self) -> u64 {
        self.docs.poll_timeout()
    }

    /// A request's headers arrived.
    pub fn start(&mut self, req: &mut Request, view: &dyn RequestView, store: &mut dyn Store, now: u64) -> Next {
        let now = self.now(now);
        self.with_cx(store, now, |cx| req.start(cx, view))
    }

    /// The answer to a request's own call; `None` when the request already ended.
    pub fn handle_answer(&mut self, req: &mut Request, resp: &IdpResponse, store: &mut dyn Store, now: u64) -> Option<Next> {
        let now = self.now(now);
        self.with_cx(store, now, |cx| req.handle_answer(cx, resp))
    }

    /// The host refused to send a request's call.
    pub fn call_not_sent(&mut self, req: &mut Request, why: &str, store: &mut dyn Store, now: u64) -> Next {
        let now = self.now(now);
        self.with_cx(store, now, |cx| req.call_not_sent(cx, why))
    }

    fn with_cx<R>(&mut self, store: &mut dyn Store, now: u64, f: impl FnOnce(&mut Cx<'_>) -> R) -> R {
        let mut cx = Cx {
            policy: &self.plan.policy,
            docs: &mut self.docs,
            store,
            caches: &mut self.caches,
            metrics: &mut self.metrics,
            log: &mut self.log,
            now_ms: now,
            random: &mut *self.random,
        };
        f(&mut cx)
    }

    /// Hands every queued log line to `f`.
    pub fn drain_log(&mut self, mut f: impl FnMut(LogLine)) {
        self.docs.log.drain().for_each(&mut f);
        self.log.drain().for_each(f);
    }

    /// Hands every metric delta to `publish` (index into [`Metrics::names`], value).
    pub fn drain_metrics(&mut self, mut publish: impl FnMut(usize, u64)) {
        for (i, (hits, misses)) in self.caches.take_counts().into_iter().enumerate() {
            self.metrics.cache(i, hits, misses);
        }
        self.metrics.drain(&mut publish);
        self.docs.metrics.drain(&mut publish);
    }

    /// The caches (tests).
    pub fn caches(&self) -> &Caches {
        &self.caches
    }
}
