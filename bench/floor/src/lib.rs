//! The floor of `make bench`: a proxy-wasm filter (Rust SDK, like the real one) that does
//! nothing (configuration `noop`) or only reads the `Authorization` header (`read`), the
//! least any filter checking a credential must do. Its rows say how much of a hot path's
//! cost is the Wasm host's, which no filter can remove, and how much is the filter's own.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { read: false }) });
}}

struct Root {
    read: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.read = config.trim_ascii() == b"read";
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor { read: self.read }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Floor {
    read: bool,
}

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.read {
            let value = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization").ok().flatten();
            std::hint::black_box(value);
        }
        Action::Continue
    }
}
