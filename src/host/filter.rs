//! The HTTP context: reads what the plan needs from the request, lets the worker carry out
//! the decision, and adds response headers the decision asked for.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::core::config::{AuthMethod, Pop};
use crate::core::flow::Inputs;
use crate::host::io::{request_header, RequestHeaders};
use crate::host::worker::{Request, SharedRequest, Worker};

pub struct Filter {
    context_id: u32,
    worker: Rc<Worker>,
    request: SharedRequest,
}

impl Filter {
    pub fn new(context_id: u32, worker: Rc<Worker>) -> Self {
        Filter { context_id, worker, request: Rc::new(RefCell::new(Request::default())) }
    }
}

/// Lowercase hex SHA-256 of the client certificate Envoy verified on this connection.
fn peer_certificate_digest() -> Option<String> {
    let bytes = hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"]).ok().flatten()?;
    let s = String::from_utf8(bytes).ok()?;
    (!s.is_empty()).then_some(s)
}

impl Context for Filter {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        self.worker.call_answered(token, body_size);
    }
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plan = &self.worker.plan;
        let sessions = plan.sessions.is_some();
        // A session-capable plan looks at up to nine headers: all in one host call then.
        let all = sessions.then(RequestHeaders::read);
        let header = |name: &str| match &all {
            Some(all) => all.get(name),
            None => request_header(name),
        };
        let authorization = header("authorization");
        let path = (plan.bearer.query || sessions).then(|| header(":path")).flatten();
        let cookie = (plan.bearer.cookie.is_some() || sessions).then(|| header("cookie")).flatten();
        let (method, accept, x_requested_with, https) = if sessions {
            let https = header("x-forwarded-proto").or_else(|| header(":scheme")).is_some_and(|s| s.eq_ignore_ascii_case("https"));
            (header(":method"), header("accept"), header("x-requested-with"), https)
        } else {
            (None, None, None, false)
        };
        let refresh = if plan.has(AuthMethod::RefreshToken) { header(&plan.refresh_token_header) } else { None };
        let peer = if plan.pop != Pop::Off { peer_certificate_digest() } else { None };
        let inputs = Inputs {
            authorization: authorization.as_deref(),
            path: path.as_deref(),
            cookie: cookie.as_deref(),
            refresh_token: refresh.as_deref(),
            peer_cert_sha256: peer.as_deref(),
            method: method.as_deref(),
            accept: accept.as_deref(),
            x_requested_with: x_requested_with.as_deref(),
            https,
        };
        self.worker.start(self.context_id, &self.request, inputs)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Added, not set: there may be several Set-Cookie headers.
        for (name, value) in std::mem::take(&mut self.request.borrow_mut().response_headers) {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, &name, &value);
        }
        Action::Continue
    }
}
