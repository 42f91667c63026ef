//! `basic-auth`: HTTP Basic authentication for wasmgate (or any proxy-wasm host), configuration-compatible with
//! Istio's `basic_auth` extension. See README.md for the configuration reference.

mod rules;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use rules::{Config, Decision};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BasicAuthRoot::default()) });
}}

#[derive(Default)]
struct BasicAuthRoot {
    config: Rc<Config>,
}

impl Context for BasicAuthRoot {}

impl RootContext for BasicAuthRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&bytes) {
            Ok(config) => {
                log::info!(
                    "basic-auth: {} rule(s), realm {:?}",
                    config.rules.len(),
                    config.realm
                );
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                log::warn!("basic-auth: configuration refused: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BasicAuth {
            config: Rc::clone(&self.config),
        }))
    }
}

struct BasicAuth {
    config: Rc<Config>,
}

impl Context for BasicAuth {}

impl HttpContext for BasicAuth {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.config.rules.is_empty() {
            return Action::Continue;
        }
        let header = |name| self.get_http_request_header(name).unwrap_or_default();
        let decision = self.config.check(
            &header(":method"),
            &header(":path"),
            &header(":authority"),
            &header("authorization"),
        );
        match decision {
            Decision::Allow => Action::Continue,
            Decision::Deny(details) => {
                let challenge = self.config.www_authenticate();
                // Istio's plugin answers with its reason as response-code details and an empty body.
                if let Err(status) = wasmgate_guest::send_local_response(
                    401,
                    details,
                    b"",
                    &[("WWW-Authenticate", &challenge)],
                ) {
                    log::error!("basic-auth: the host refused the 401 reply (status {status})");
                }
                Action::Pause
            }
        }
    }
}
