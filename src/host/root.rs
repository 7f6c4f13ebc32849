//! The root context: loads the configuration, keeps the IdP's discovery document and JWKS
//! in sync across workers through shared data, and hands out HTTP contexts.
//!
//! One worker at a time holds the fetch lease ([`Lease`]); the others adopt what it stores.
//! A failed fetch extends the lease to the backoff deadline, so retries are spaced for the
//! whole process, not per worker.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::core::config::Plan;
use crate::core::discovery::{self, Lease, Metadata, Record};
use crate::core::idp::{IdpRequest, Purpose};
use crate::host::filter::Filter;
use crate::host::worker::{dispatch, log, now_ms, read_call_response, Worker};

/// Tick while discovery is missing (fast start), and once it is there.
const FAST_TICK: Duration = Duration::from_millis(100);
const SLOW_TICK: Duration = Duration::from_millis(1000);

/// A document kept in shared data: its keys and what this worker has adopted of it.
struct Doc {
    key: String,
    lease_key: String,
    /// CAS of the stored record this worker last adopted.
    adopted_cas: Option<u32>,
    /// Our in-flight fetch: token, the lease we hold, when it was sent.
    inflight: Option<(u32, Lease, u64)>,
}

impl Doc {
    fn new(issuer: &str, name: &str) -> Self {
        let key = format!("oidc:{issuer}:{name}");
        Doc { lease_key: format!("{key}:lease"), key, adopted_cas: None, inflight: None }
    }
}

pub struct Root {
    worker: Option<Rc<Worker>>,
    /// This VM's identity in fetch leases.
    me: u64,
    discovery: Doc,
    jwks: Doc,
    ticking_fast: bool,
}

impl Default for Root {
    fn default() -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::getrandom(&mut b);
        Root {
            worker: None,
            me: u64::from_le_bytes(b) | 1,
            discovery: Doc::new("", "discovery"),
            jwks: Doc::new("", "jwks"),
            ticking_fast: true,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(worker) = self.worker.clone() else { return };
        for which in [Purpose::Discovery, Purpose::Jwks] {
            let doc = if which == Purpose::Discovery { &mut self.discovery } else { &mut self.jwks };
            if let Some((t, lease, sent)) = doc.inflight {
                if t == token {
                    doc.inflight = None;
                    let resp = read_call_response(body_size, now_ms().saturating_sub(sent));
                    self.fetched(&worker, which, lease, resp.status, &resp.body);
                    return;
                }
            }
        }
        worker.call_answered(token, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let plan = match Plan::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                log(LogLevel::Critical, &e.to_string());
                return false;
            }
        };
        log(
            LogLevel::Info,
            &format!(
                "configured issuer={} auth_methods={:?} token_endpoint_auth_method={} cluster={}",
                plan.issuer,
                plan.auth_methods.iter().map(|m| m.name()).collect::<Vec<_>>(),
                plan.token_auth.name(),
                plan.cluster_for(plan.token_auth),
            ),
        );
        self.discovery = Doc::new(&plan.issuer, "discovery");
        self.jwks = Doc::new(&plan.issuer, "jwks");
        self.worker = Some(Rc::new(Worker::new(plan)));
        self.set_tick_period(FAST_TICK);
        self.ticking_fast = true;
        self.sync();
        true
    }

    fn on_tick(&mut self) {
        self.sync();
        if let Some(w) = &self.worker {
            w.expire_waiting(now_ms());
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Filter::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Adopts what other workers stored, and fetches what nobody has.
    fn sync(&mut self) {
        let Some(worker) = self.worker.clone() else { return };
        let now = now_ms();
        let mut stale = self.adopt_discovery(&worker, now);
        let meta = worker.meta.borrow().clone();
        if meta.is_none() || stale {
            let req = discovery::request(&worker.plan);
            self.maybe_fetch(Purpose::Discovery, req, now);
        } else if let Some(meta) = meta {
            stale = self.adopt_jwks(now);
            if stale {
                if let Some(req) = discovery::jwks_request(&worker.plan, &meta) {
                    self.maybe_fetch(Purpose::Jwks, req, now);
                }
            }
        }
        let want_fast = worker.meta.borrow().is_none();
        if want_fast != self.ticking_fast {
            self.ticking_fast = want_fast;
            self.set_tick_period(if want_fast { FAST_TICK } else { SLOW_TICK });
        }
    }

    /// Loads a newer shared discovery record. Returns true when a fetch is due.
    fn adopt_discovery(&mut self, worker: &Worker, now: u64) -> bool {
        let Ok((Some(bytes), cas)) = hostcalls::get_shared_data(&self.discovery.key) else { return true };
        let Some(record) = Record::decode(&bytes) else { return true };
        if cas != self.discovery.adopted_cas || worker.meta.borrow().is_none() {
            match Metadata::parse(&worker.plan, record.body) {
                Ok(meta) => {
                    let first = worker.meta.borrow().is_none();
                    *worker.meta.borrow_mut() = Some(Rc::new(meta));
                    self.discovery.adopted_cas = cas;
                    if first {
                        worker.wake_waiting();
                    }
                }
                Err(e) => {
                    log(LogLevel::Warn, &format!("shared discovery document is unusable: {e}"));
                    return true;
                }
            }
        }
        record.stale(now)
    }

    /// JWKS are only stored for now (ID token validation uses them); true when a fetch is due.
    fn adopt_jwks(&mut self, now: u64) -> bool {
        match hostcalls::get_shared_data(&self.jwks.key) {
            Ok((Some(bytes), cas)) => {
                self.jwks.adopted_cas = cas;
                Record::decode(&bytes).map(|r| r.stale(now)).unwrap_or(true)
            }
            _ => true,
        }
    }

    /// Takes the fetch lease for `purpose` if it is free, and sends `req`.
    fn maybe_fetch(&mut self, purpose: Purpose, req: IdpRequest, now: u64) {
        let me = self.me;
        let doc = if purpose == Purpose::Discovery { &mut self.discovery } else { &mut self.jwks };
        if doc.inflight.is_some() {
            return;
        }
        let (current, cas) = match hostcalls::get_shared_data(&doc.lease_key) {
            Ok(v) => v,
            Err(_) => return,
        };
        if current.is_none() {
            // The host ignores CAS for a key that does not exist yet: create a free lease
            // now and compete for it with CAS on the next tick.
            // (An empty value reads back as absent, so the free lease is written out.)
            let free = Lease { holder: 0, until_ms: 0, failures: 0 };
            let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&free.encode()), None);
            return;
        }
        if !Lease::claimable(current.as_deref(), now) {
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
            }
        }
    }

    /// Stores a fetched document for every worker, or backs off.
    fn fetched(&mut self, worker: &Worker, purpose: Purpose, lease: Lease, status: Option<u16>, body: &[u8]) {
        let now = now_ms();
        let doc = if purpose == Purpose::Discovery { &self.discovery } else { &self.jwks };
        let valid = match (purpose, status) {
            (Purpose::Discovery, Some(200)) => Metadata::parse(&worker.plan, body).map(|_| ()),
            (Purpose::Jwks, Some(200)) => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .filter(|v| v.get("keys").map(|k| k.is_array()).unwrap_or(false))
                .map(|_| ())
                .ok_or_else(|| "JWKS is not a JSON key set".to_string()),
            (_, Some(s)) => Err(format!("status {s}")),
            (_, None) => Err("no answer (connection failed or timed out)".to_string()),
        };
        match valid {
            Ok(()) => {
                let _ = hostcalls::set_shared_data(&doc.key, Some(&Record::encode(now, body)), None);
                let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&lease.succeeded(now).encode()), None);
                log(LogLevel::Info, &format!("fetched {purpose:?} from {}", worker.plan.issuer));
                self.sync();
            }
            Err(e) => {
                let next = lease.failed(now);
                log(
                    LogLevel::Warn,
                    &format!("{purpose:?} fetch failed: {e}; retrying in {} ms", next.until_ms - now),
                );
                let _ = hostcalls::set_shared_data(&doc.lease_key, Some(&next.encode()), None);
            }
        }
    }
}
