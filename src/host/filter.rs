//! The HTTP context: reads what the core needs from the request and lets the worker carry
//! out the decision.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::core::flow::Flow;
use crate::host::worker::{SharedFlow, Worker};

pub struct Filter {
    context_id: u32,
    worker: Rc<Worker>,
    flow: SharedFlow,
}

impl Filter {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> Self {
        Filter { context_id, worker, flow: Rc::new(RefCell::new(Flow::new())) }
    }
}

/// A request header as text; bytes that are not UTF-8 become U+FFFD (never a panic).
fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl Context for Filter {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.worker.call_answered(token, body_size);
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let authorization = request_header("authorization");
        self.worker.start(self.context_id, &self.flow, authorization.as_deref())
    }
}
