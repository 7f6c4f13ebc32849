//! The root context: loads the configuration, drives the shared IdP documents on a timer,
//! and hands out HTTP contexts.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::core::config::Plan;
use crate::host::filter::Filter;
use crate::host::io::{has_randomness, log, now_ms};
use crate::host::worker::Worker;

/// Tick while discovery is missing (fast start), and once it is there.
const FAST_TICK: Duration = Duration::from_millis(100);
const SLOW_TICK: Duration = Duration::from_millis(500);

#[derive(Default)]
pub struct Root {
    worker: Option<Rc<Worker>>,
    ticking_fast: bool,
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        if let Some(w) = &self.worker {
            w.call_answered(token, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        if !has_randomness() {
            log(LogLevel::Critical, "the host provides no randomness (WASI random_get): login state and cookie nonces would be predictable; refusing to load");
            return false;
        }
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
        let worker = Rc::new(Worker::new(plan));
        worker.sync();
        self.worker = Some(worker);
        self.ticking_fast = true;
        self.set_tick_period(FAST_TICK);
        true
    }

    fn on_tick(&mut self) {
        let Some(w) = &self.worker else { return };
        w.sync();
        w.expire_waiting(now_ms());
        w.publish_metrics();
        let fast = !w.ready();
        if fast != self.ticking_fast {
            self.ticking_fast = fast;
            self.set_tick_period(if fast { FAST_TICK } else { SLOW_TICK });
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
