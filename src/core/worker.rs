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
//!
//! A request takes the policy its route names ([`Worker::start`]): the route's metadata
//! (`filter_metadata["envoy-oidc"].policy`), else `route_policies` by the route's name, else
//! the default. Each policy has its own caches; each issuer its own documents, shared by the
//! policies that use it (a request borrows its policy's issuer's, and the others' for bearer
//! tokens of `issuers_allowed` and `extra_jwks_uris`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::challenge;
use crate::core::config::{Plan, Policy, PolicyId};
use crate::core::docs::store::Store;
use crate::core::docs::{Docs, Fetch, OtherDocs};
use crate::core::error::{Error, Internal};
use crate::core::idp::{IdpCall, IdpResponse};
use crate::core::log::{Level, Log, LogLine};
use crate::core::metrics::{Metrics, Name};
use crate::core::request::{Caches, Cx, Next, Request, RequestView};
use crate::core::route;

/// The timer period the adapter sets, once, when the configuration is loaded.
pub const TICK_MS: u64 = 500;
/// Entries in each per-worker, per-policy cache.
pub const CACHE_CAPACITY: usize = 10_000;
/// Distinct route metadata remembered (routes come from configuration, not from clients).
const ROUTES_REMEMBERED: usize = 4_096;

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
    /// One per issuer (and extra key set) of the plan.
    docs: Vec<Docs>,
    /// One per policy.
    caches: Vec<Caches>,
    metrics: Metrics,
    log: Log,
    random: Random,
    last_now: u64,
    /// The root's calls in flight: tag, issuer, fetch.
    root_calls: Vec<(Tag, usize, Fetch)>,
    next_tag: u32,
    /// Route metadata seen, and the policy name it carries (none: it names none).
    routes: HashMap<Box<[u8]>, Option<Box<str>>>,
}

impl Worker {
    /// `me` identifies this worker in the process (leases); `random` fills buffers with
    /// secure random bytes.
    pub fn new(plan: Arc<Plan>, me: u64, random: Random) -> Self {
        let docs = plan.issuers.iter().map(|i| Docs::new(i.clone(), me)).collect();
        let caches = plan.policies().map(|_| Caches::new(CACHE_CAPACITY)).collect();
        Worker {
            metrics: Metrics::for_policies(plan.named.len()),
            plan,
            docs,
            caches,
            log: Log::default(),
            random,
            last_now: 0,
            root_calls: Vec::new(),
            next_tag: 1,
            routes: HashMap::new(),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The default policy.
    pub fn policy(&self) -> &Policy {
        &self.plan.policy
    }

    /// Every metric this worker counts, indexed as [`Worker::drain_metrics`] reports them.
    pub fn metric_names(&self) -> Vec<Name> {
        let named: Vec<&str> = self.plan.named.iter().map(|p| p.name.as_str()).collect();
        Metrics::names(&named)
    }

    /// Whether requests read many headers (any policy with sessions).
    pub fn reads_many_headers(&self) -> bool {
        self.plan.policies().any(|(_, p)| p.reads_many_headers())
    }

    fn now(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// The configuration was loaded: sets the timer, prepares shared data, makes no call
    /// (the first fetch happens on the first tick or for the first request).
    pub fn handle_configure(&mut self, store: &mut dyn Store) -> RootActions {
        for d in &mut self.docs {
            d.prepare(store);
        }
        RootActions { tick_period_ms: Some(TICK_MS), calls: Vec::new() }
    }

    /// The timer: the background fetches this worker must make now.
    pub fn handle_tick(&mut self, store: &mut dyn Store, now: u64) -> RootActions {
        let now = self.now(now);
        let mut calls = Vec::new();
        for (issuer, docs) in self.docs.iter_mut().enumerate() {
            for (fetch, call) in docs.handle_tick(store, now) {
                let tag = Tag(self.next_tag);
                self.next_tag = self.next_tag.wrapping_add(1).max(1);
                self.root_calls.push((tag, issuer, fetch));
                calls.push((tag, call));
            }
        }
        RootActions { tick_period_ms: None, calls }
    }

    /// Adopts what other workers stored, and fetches nothing: the timer of a worker that
    /// cannot make calls of its own (a native host's worker threads, whose process fetches
    /// on another thread). Harmless at any rate.
    pub fn handle_adopt(&mut self, store: &mut dyn Store, now: u64) {
        let now = self.now(now);
        for d in &mut self.docs {
            d.adopt_stored(store, now);
        }
    }

    /// The answer to a root call (an unknown tag is ignored).
    pub fn handle_root_answer(&mut self, store: &mut dyn Store, tag: Tag, resp: &IdpResponse, now: u64) {
        let now = self.now(now);
        let Some(i) = self.root_calls.iter().position(|(t, ..)| *t == tag) else { return };
        let (_, issuer, fetch) = self.root_calls.swap_remove(i);
        if let Some(d) = self.docs.get_mut(issuer) {
            let _ = d.offer(store, fetch, resp, now);
        }
    }

    /// A root call the host refused to send.
    pub fn root_call_not_sent(&mut self, tag: Tag) {
        self.root_calls.retain(|(t, ..)| *t != tag);
    }

    /// Earliest time a background fetch may be due (tests).
    pub fn poll_timeout(&self) -> u64 {
        self.docs.iter().map(Docs::poll_timeout).min().unwrap_or(u64::MAX)
    }

    /// A request's headers arrived: its policy is chosen, then it starts.
    pub fn start(&mut self, req: &mut Request, view: &dyn RequestView, store: &mut dyn Store, now: u64) -> Next {
        let now = self.now(now);
        let id = match self.choose(view) {
            Ok(id) => id,
            Err(why) => return self.unknown_policy(req, &why),
        };
        req.set_policy(id);
        match self.with_cx(id, store, now, |cx| req.start(cx, view)) {
            Some(next) => next,
            None => self.broken(req),
        }
    }

    /// The answer to a request's own call; `None` when the request already ended.
    pub fn handle_answer(&mut self, req: &mut Request, resp: &IdpResponse, store: &mut dyn Store, now: u64) -> Option<Next> {
        let now = self.now(now);
        self.with_cx(req.policy(), store, now, |cx| req.handle_answer(cx, resp)).flatten()
    }

    /// The host refused to send a request's call.
    pub fn call_not_sent(&mut self, req: &mut Request, why: &str, store: &mut dyn Store, now: u64) -> Next {
        let now = self.now(now);
        match self.with_cx(req.policy(), store, now, |cx| req.call_not_sent(cx, why)) {
            Some(next) => next,
            None => self.broken(req),
        }
    }

    /// A request whose policy's parts cannot be found (cannot happen: the worker builds one
    /// per policy and issuer of its plan); answered `500` rather than a panic.
    fn broken(&mut self, req: &mut Request) -> Next {
        req.refuse(challenge::reply(&Error::Internal(Internal::UnknownPolicy), &self.plan.policy.challenge))
    }

    /// The policy for a request, from what its route says; the route's words when they
    /// name a policy the plan does not have.
    fn choose(&mut self, view: &dyn RequestView) -> Result<PolicyId, String> {
        if !self.plan.chooses() {
            return Ok(PolicyId(0));
        }
        if let Some(name) = view.route_policy() {
            return self.plan.find(&name).ok_or_else(|| format!("the route's metadata names policy `{name}`"));
        }
        if let Some(md) = view.route_metadata() {
            let named = match self.routes.get(md.as_slice()) {
                Some(named) => named.clone(),
                None => {
                    let named: Option<Box<str>> = route::policy_in_metadata(&md).map(Into::into);
                    if self.routes.len() < ROUTES_REMEMBERED {
                        self.routes.insert(md.into_boxed_slice(), named.clone());
                    }
                    named
                }
            };
            if let Some(name) = named {
                return self.plan.find(&name).ok_or_else(|| format!("the route's metadata names policy `{name}`"));
            }
        }
        if !self.plan.routes.is_empty() {
            if let Some(id) = view.route_name().and_then(|r| self.plan.for_route(&r)) {
                return Ok(id);
            }
        }
        Ok(PolicyId(0))
    }

    /// Fails closed: a route that names a policy the filter does not have gets `500`.
    fn unknown_policy(&mut self, req: &mut Request, why: &str) -> Next {
        let known: Vec<&str> = self.plan.named.iter().map(|p| p.name.as_str()).collect();
        self.log.push(Level::Error, format!("500 internal_error: {why}, which this filter does not have (its policies: {known:?}); add it to `policies` or fix the route"));
        self.metrics.unknown_policy();
        let e = Error::Internal(Internal::UnknownPolicy);
        req.refuse(challenge::reply(&e, &self.plan.policy.challenge))
    }

    /// Lends policy `id`'s parts to `f` (`None` if the plan has no such policy).
    fn with_cx<R>(&mut self, id: PolicyId, store: &mut dyn Store, now: u64, f: impl FnOnce(&mut Cx<'_>) -> R) -> Option<R> {
        let policy = self.plan.get(id)?;
        let (docs, others) = OtherDocs::split(&mut self.docs, policy.issuer_id)?;
        let caches = self.caches.get_mut(id.0)?;
        let mut cx = Cx {
            policy,
            policy_id: id,
            docs,
            others,
            store,
            caches,
            metrics: &mut self.metrics,
            log: &mut self.log,
            now_ms: now,
            random: &mut *self.random,
        };
        Some(f(&mut cx))
    }

    /// Hands every queued log line to `f`.
    pub fn drain_log(&mut self, mut f: impl FnMut(LogLine)) {
        for d in &mut self.docs {
            d.log.drain().for_each(&mut f);
        }
        self.log.drain().for_each(f);
    }

    /// Hands every metric delta to `publish` (index into [`Worker::metric_names`], value).
    pub fn drain_metrics(&mut self, mut publish: impl FnMut(usize, u64)) {
        for caches in &self.caches {
            for (i, (hits, misses)) in caches.take_counts().into_iter().enumerate() {
                self.metrics.cache(i, hits, misses);
            }
        }
        self.metrics.drain(&mut publish);
        for d in &mut self.docs {
            d.metrics.drain(&mut publish);
        }
    }

    /// A policy's caches (tests).
    pub fn caches(&self, id: PolicyId) -> Option<&Caches> {
        self.caches.get(id.0)
    }
}
