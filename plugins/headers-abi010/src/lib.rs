//! `headers-abi010`: a small plugin on the proxy-wasm ABI 0.1.0, built with the real Rust SDK of that era
//! (proxy-wasm 0.1.4), so hosts can test ABI 0.1.0 against a real guest rather than a hand-written one.
//!
//! It uses the ABI-0.1.0-only imports (`proxy_get_configuration`, `proxy_continue_request`), the two-argument
//! `proxy_on_request_headers`/`proxy_on_response_headers`, and the `_start` entry point the SDK asked for then.
//! See README.md for the observable behaviour.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm_abi010 as proxy_wasm;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// Tick period armed when the configuration is exactly `pause-until-tick`.
const TICK: Duration = Duration::from_millis(20);

/// The SDK 0.1.x entry point. Exported under its own name only on Wasm: on the host (unit-test builds) the C
/// runtime already defines `_start`.
#[cfg_attr(target_arch = "wasm32", no_mangle)]
pub fn _start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}

#[derive(Default)]
struct Root {
    config: Rc<String>,
    /// Streams paused by `x-abi010: pause`, resumed (with `proxy_continue_request`) on the next tick.
    paused: Rc<RefCell<Vec<u32>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        // ABI 0.1.0: proxy_get_configuration, not proxy_get_buffer_bytes(PLUGIN_CONFIGURATION).
        let config = self.get_configuration().unwrap_or_default();
        self.config = Rc::new(String::from_utf8_lossy(&config).into_owned());
        if self.config.as_str() == "pause-until-tick" {
            self.set_tick_period(TICK);
        }
        true
    }

    fn on_tick(&mut self) {
        for id in self.paused.borrow_mut().drain(..) {
            if proxy_wasm::hostcalls::set_effective_context(id).is_ok() {
                let _ = proxy_wasm::hostcalls::resume_http_request();
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            id: context_id,
            config: Rc::clone(&self.config),
            paused: Rc::clone(&self.paused),
            missing: String::new(),
            path: String::new(),
        }))
    }
}

struct Stream {
    id: u32,
    config: Rc<String>,
    paused: Rc<RefCell<Vec<u32>>>,
    /// How the host answered for an absent header: `none` (null pointer) or `empty` (empty value).
    missing: String,
    path: String,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize) -> Action {
        // ABI 0.1.0 answers OK for an absent header (0.2.x answers NOT_FOUND, on which this SDK would panic).
        self.missing = match self.get_http_request_header("x-abi010-never-sent") {
            None => "none".into(),
            Some(v) if v.is_empty() => "empty".into(),
            Some(v) => format!("unexpected:{v}"),
        };
        self.path = self.get_http_request_header(":path").unwrap_or_default();
        self.set_http_request_header("x-abi", Some("0.1.0"));
        if self.get_http_request_header("x-abi010").as_deref() == Some("pause")
            && *self.config == "pause-until-tick"
        {
            self.paused.borrow_mut().push(self.id);
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize) -> Action {
        self.add_http_response_header("x-abi", "0.1.0");
        self.add_http_response_header("x-abi010-path", &self.path);
        self.add_http_response_header("x-abi010-missing", &self.missing);
        self.add_http_response_header("x-abi010-config", &self.config);
        Action::Continue
    }
}
