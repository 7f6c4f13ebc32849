//! A simulated host: N workers, one shared-data map, a scripted IdP and a clock, carrying
//! out the core's actions exactly as an adapter does, and turning every host rule into a
//! recorded violation.
//!
//! The rules (the README's "Host rules"):
//! 1. the tick period is set once — a second [`RootActions::tick_period_ms`] is a violation;
//! 2. no call from configure — a call in [`Worker::handle_configure`]'s actions is one;
//! 3. a request is resumed or answered only from its own context — checked on every
//!    action;
//! 4. with Kong's semantics (`kong: true`): a request whose last call was answered while the
//!    core still holds it is let through to the upstream, as ngx_wasm_module does; and a
//!    CAS-0 write to a key that exists fails, as there.
//!
//! Calls are answered after the IdP's latency, in time order; ticks fire at each worker's
//! period. [`SimHost::run`] advances the clock to the next event until nothing is left.
//! Built for `cargo test` and, with the `testing` feature, for the fuzz targets.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::core::config::Plan;
use crate::core::docs::store::{Cas, Conflict, Read, Store};
use crate::core::idp::{IdpCall, IdpResponse, Purpose};
use crate::core::log::LogLine;
use crate::core::reply::{Forward, Reply};
use crate::core::request::{Next, Request, RequestView};
use crate::core::worker::{RootActions, Tag, Worker};

/// Shared data with the CAS semantics of Envoy (`kong: false`: CAS 0 writes anyway) or of
/// Kong's ngx_wasm_module (`kong: true`: CAS 0 to an existing key fails).
#[derive(Debug, Default)]
pub struct SharedData {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    pub kong: bool,
    /// Writes refused for a CAS mismatch.
    pub conflicts: usize,
}

impl SharedData {
    pub fn new(kong: bool) -> Self {
        SharedData { kong, ..Default::default() }
    }

    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(|(v, _)| v.as_slice())
    }
}

impl Store for SharedData {
    fn read(&mut self, key: &str) -> Read {
        match self.map.get(key) {
            // Envoy reads an empty value back as absent (with its CAS).
            Some((v, cas)) => Read { value: (!v.is_empty()).then(|| v.clone()), cas: Cas::from_host(*cas) },
            None => Read { value: None, cas: Cas::Absent },
        }
    }

    fn write(&mut self, key: &str, value: &[u8], cas: Cas) -> Result<(), Conflict> {
        let expected = cas.to_host();
        if let Some((_, current)) = self.map.get(key) {
            let unconditional = expected == 0 && !self.kong;
            if !unconditional && expected != *current {
                self.conflicts += 1;
                return Err(Conflict);
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.map.insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

/// Request headers as owned pairs, and what the host says about the route.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub pairs: Vec<(String, String)>,
    pub peer_cert_sha256: Option<String>,
    pub route_metadata: Option<Vec<u8>>,
    pub route_name: Option<String>,
}

impl Headers {
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.pairs.push((name.to_string(), value.to_string()));
        self
    }
}

impl RequestView for Headers {
    fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| Cow::Borrowed(v.as_str()))
    }

    fn peer_certificate_sha256(&self) -> Option<String> {
        self.peer_cert_sha256.clone()
    }

    fn route_metadata(&self) -> Option<Vec<u8>> {
        self.route_metadata.clone()
    }

    fn route_name(&self) -> Option<String> {
        self.route_name.clone()
    }
}

/// The IdP's answer to one call.
pub type Answer = Box<dyn FnMut(&IdpCall) -> IdpResponse>;

/// What the IdP (or IdPs) answer, per purpose and, when set for it, per `:authority`; a
/// call without an answer gets a 404.
pub struct ScriptedIdp {
    pub answers: HashMap<Purpose, Answer>,
    /// Answers of one authority (another IdP), before `answers`.
    pub by_authority: HashMap<(String, Purpose), Answer>,
    /// Connections are refused (answered at once, like Envoy's 503 without a body).
    pub down: bool,
    pub latency_ms: u64,
    /// Calls received, per purpose.
    pub hits: HashMap<Purpose, usize>,
    /// Calls received, per authority and purpose.
    pub hits_at: HashMap<(String, Purpose), usize>,
}

impl Default for ScriptedIdp {
    fn default() -> Self {
        ScriptedIdp {
            answers: HashMap::new(),
            by_authority: HashMap::new(),
            down: false,
            latency_ms: 5,
            hits: HashMap::new(),
            hits_at: HashMap::new(),
        }
    }
}

impl ScriptedIdp {
    /// Answers `purpose` with `status` and `body` every time.
    pub fn answer(&mut self, purpose: Purpose, status: u16, body: impl Into<Vec<u8>>) {
        let body = body.into();
        self.answers.insert(purpose, Box::new(move |_| IdpResponse { status: Some(status), body: body.clone(), elapsed_ms: 0 }));
    }

    /// Answers `purpose` at `authority` with `status` and `body` every time.
    pub fn answer_at(&mut self, authority: &str, purpose: Purpose, status: u16, body: impl Into<Vec<u8>>) {
        let body = body.into();
        let answer: Answer = Box::new(move |_| IdpResponse { status: Some(status), body: body.clone(), elapsed_ms: 0 });
        self.by_authority.insert((authority.to_string(), purpose), answer);
    }

    pub fn hits(&self, purpose: Purpose) -> usize {
        self.hits.get(&purpose).copied().unwrap_or(0)
    }

    pub fn hits_at(&self, authority: &str, purpose: Purpose) -> usize {
        self.hits_at.get(&(authority.to_string(), purpose)).copied().unwrap_or(0)
    }

    fn respond(&mut self, call: &IdpCall) -> IdpResponse {
        *self.hits.entry(call.purpose).or_default() += 1;
        *self.hits_at.entry((call.authority.clone(), call.purpose)).or_default() += 1;
        if self.down {
            let text = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused";
            return IdpResponse { status: Some(503), body: text.as_bytes().to_vec(), elapsed_ms: 0 };
        }
        if let Some(f) = self.by_authority.get_mut(&(call.authority.clone(), call.purpose)) {
            return f(call);
        }
        match self.answers.get_mut(&call.purpose) {
            Some(f) => f(call),
            None => IdpResponse { status: Some(404), body: Vec::new(), elapsed_ms: 0 },
        }
    }
}

/// Who made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Root(usize),
    Request(usize),
}

/// Where a request stands, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Paused, with its own call in flight.
    Waiting,
    Forwarded(Forward),
    Answered(Reply),
    /// The host let it through with nothing decided (Kong, when its last call ended while
    /// the core held it).
    LetThrough,
}

struct SimRequest {
    worker: usize,
    request: Request,
    outcome: Outcome,
}

struct Pending {
    due_ms: u64,
    sent_ms: u64,
    worker: usize,
    owner: Ctx,
    tag: Option<Tag>,
    call: IdpCall,
}

struct SimWorker {
    worker: Worker,
    tick_period_ms: Option<u64>,
    next_tick_ms: u64,
}

/// The simulated host.
pub struct SimHost {
    pub now_ms: u64,
    pub shared: SharedData,
    pub idp: ScriptedIdp,
    /// Every rule broken, in words.
    pub violations: Vec<String>,
    /// The cluster of every call made, in order.
    pub clusters: Vec<String>,
    pub log: Vec<LogLine>,
    workers: Vec<SimWorker>,
    requests: Vec<SimRequest>,
    pending: Vec<Pending>,
    kong: bool,
}

impl SimHost {
    /// `workers` workers loading `plan`, with Kong's semantics when `kong`. Each is
    /// configured at once (at `now_ms`).
    pub fn new(plan: &Arc<Plan>, workers: usize, kong: bool, now_ms: u64) -> Self {
        let mut sim = SimHost {
            now_ms,
            shared: SharedData::new(kong),
            idp: ScriptedIdp::default(),
            violations: Vec::new(),
            clusters: Vec::new(),
            log: Vec::new(),
            workers: Vec::new(),
            requests: Vec::new(),
            pending: Vec::new(),
            kong,
        };
        for i in 0..workers {
            let mut n = i as u8;
            let random = Box::new(move |b: &mut [u8]| {
                for x in b.iter_mut() {
                    n = n.wrapping_mul(31).wrapping_add(7);
                    *x = n;
                }
            });
            let worker = Worker::new(plan.clone(), 0x1000 + i as u64, random);
            sim.workers.push(SimWorker { worker, tick_period_ms: None, next_tick_ms: u64::MAX });
            let actions = sim.workers[i].worker.handle_configure(&mut sim.shared);
            if !actions.calls.is_empty() {
                sim.violations.push(format!("worker {i}: {} call(s) from configure", actions.calls.len()));
            }
            sim.root_actions(i, actions);
        }
        sim
    }

    pub fn worker(&self, i: usize) -> &Worker {
        &self.workers[i].worker
    }

    /// A request arrives at worker `w`; returns its id.
    pub fn request(&mut self, w: usize, headers: &Headers) -> usize {
        let id = self.requests.len();
        self.requests.push(SimRequest { worker: w, request: Request::new(), outcome: Outcome::Waiting });
        let next = {
            let r = &mut self.requests[id];
            self.workers[w].worker.start(&mut r.request, headers, &mut self.shared, self.now_ms)
        };
        self.execute(Ctx::Request(id), id, Some(next));
        id
    }

    pub fn outcome(&self, id: usize) -> &Outcome {
        &self.requests[id].outcome
    }

    /// Runs until no call is in flight and no tick is due before `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        for _ in 0..100_000 {
            let next_call = self.pending.iter().map(|p| p.due_ms).min();
            let next_tick = self.workers.iter().map(|w| w.next_tick_ms).min();
            let t = match (next_call, next_tick) {
                (Some(c), Some(k)) => c.min(k),
                (Some(c), None) => c,
                (None, Some(k)) => k,
                (None, None) => return,
            };
            if t > until_ms {
                self.now_ms = self.now_ms.max(until_ms);
                return;
            }
            self.now_ms = self.now_ms.max(t);
            if next_call == Some(t) {
                self.deliver();
            } else {
                self.tick();
            }
        }
        self.violations.push("the simulation never settled".into());
    }

    /// Runs for `ms` more.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now_ms.saturating_add(ms));
    }

    fn tick(&mut self) {
        let now = self.now_ms;
        let Some(w) = self.workers.iter().position(|w| w.next_tick_ms <= now) else { return };
        let period = self.workers[w].tick_period_ms.unwrap_or(u64::MAX);
        self.workers[w].next_tick_ms = now.saturating_add(period);
        let actions = self.workers[w].worker.handle_tick(&mut self.shared, now);
        self.root_actions(w, actions);
    }

    fn root_actions(&mut self, w: usize, actions: RootActions) {
        if let Some(p) = actions.tick_period_ms {
            let sw = &mut self.workers[w];
            if sw.tick_period_ms.is_some() {
                self.violations.push(format!("worker {w}: tick period set a second time ({p} ms)"));
            }
            sw.tick_period_ms = Some(p);
            sw.next_tick_ms = self.now_ms.saturating_add(p);
        }
        for (tag, call) in actions.calls {
            self.dispatch(w, Ctx::Root(w), Some(tag), call);
        }
        self.drain_log(w);
    }

    fn dispatch(&mut self, worker: usize, owner: Ctx, tag: Option<Tag>, call: IdpCall) {
        // A call slower than its timeout is answered at the timeout, without a status.
        let latency = if self.idp.down { 0 } else { self.idp.latency_ms.min(call.timeout_ms) };
        let due_ms = self.now_ms.saturating_add(latency);
        self.clusters.push(call.cluster.clone());
        self.pending.push(Pending { due_ms, sent_ms: self.now_ms, worker, owner, tag, call });
    }

    /// Answers the earliest call, in its own context.
    fn deliver(&mut self) {
        let Some(i) = self.pending.iter().enumerate().min_by_key(|(_, p)| p.due_ms).map(|(i, _)| i) else { return };
        let p = self.pending.swap_remove(i);
        let mut resp = if self.idp.latency_ms >= p.call.timeout_ms && !self.idp.down {
            IdpResponse { status: None, body: Vec::new(), elapsed_ms: 0 }
        } else {
            self.idp.respond(&p.call)
        };
        resp.elapsed_ms = self.now_ms.saturating_sub(p.sent_ms);
        match p.owner {
            Ctx::Root(w) => {
                if let Some(tag) = p.tag {
                    self.workers[w].worker.handle_root_answer(&mut self.shared, tag, &resp, self.now_ms);
                }
                self.drain_log(w);
            }
            Ctx::Request(id) => {
                let next = {
                    let r = &mut self.requests[id];
                    self.workers[p.worker].worker.handle_answer(&mut r.request, &resp, &mut self.shared, self.now_ms)
                };
                self.execute(Ctx::Request(id), id, next);
            }
        }
    }

    /// Carries out `next` for request `id`, from the context `active`.
    fn execute(&mut self, active: Ctx, id: usize, next: Option<Next>) {
        if active != Ctx::Request(id) {
            self.violations.push(format!("request {id} resumed or answered from {active:?}"));
        }
        let w = self.requests[id].worker;
        let in_flight = self.pending.iter().any(|p| p.owner == Ctx::Request(id));
        let outcome = match next {
            Some(Next::Forward(f)) => Outcome::Forwarded(f),
            Some(Next::Answer(r)) => Outcome::Answered(r),
            Some(Next::Call(call)) => {
                self.dispatch(w, Ctx::Request(id), None, call);
                Outcome::Waiting
            }
            None if self.requests[id].outcome == Outcome::Waiting && !in_flight && self.kong => {
                self.violations.push(format!("request {id} was let through with nothing decided"));
                Outcome::LetThrough
            }
            None => self.requests[id].outcome.clone(),
        };
        if outcome == Outcome::Waiting && !self.pending.iter().any(|p| p.owner == Ctx::Request(id)) {
            self.violations.push(format!("request {id} is held with nothing of its own in flight"));
        }
        self.requests[id].outcome = outcome;
        self.drain_log(w);
    }

    fn drain_log(&mut self, w: usize) {
        let log = &mut self.log;
        self.workers[w].worker.drain_log(|l| log.push(l));
    }

    /// Whether a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.iter().any(|l| l.message.contains(needle))
    }
}
