//! `rate-limit`: the token bucket of Tetrate's "wasm-rate-limiting" tutorial, configurable, and optionally
//! shared by every worker VM through the host's shared data. See README.md for the configuration reference.

mod bucket;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, Status};

use bucket::{Bucket, Config};

/// Compare-and-swap attempts on the shared bucket before letting the request through. Each attempt fails only
/// when another worker updated the bucket in between, so a handful suffices even under heavy contention.
const MAX_CAS_ATTEMPTS: usize = 32;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(RateLimitRoot::default()) });
}}

/// Per-plugin state, shared by the root context and every HTTP context of this VM.
struct Limiter {
    config: Config,
    /// The bucket when `shared` is false: one per VM (per worker), as in the tutorial.
    local: RefCell<Bucket>,
    /// The shared-data key when `shared` is true.
    shared_key: String,
}

impl Limiter {
    /// Whether a request arriving at `now_nanos` may pass.
    fn admit(&self, now_nanos: u64) -> bool {
        if !self.config.shared {
            return self
                .local
                .borrow_mut()
                .take(now_nanos, self.config.tokens_per_second);
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (value, cas) = match proxy_wasm::hostcalls::get_shared_data(&self.shared_key) {
                Ok(found) => found,
                Err(status) => return self.fail_open("get_shared_data", status),
            };
            let mut bucket = value.map(|v| Bucket::decode(&v)).unwrap_or_default();
            if !bucket.take(now_nanos, self.config.tokens_per_second) {
                // An empty bucket that was not refilled is unchanged: nothing to write.
                return false;
            }
            // A missing key has no CAS; 0 writes unconditionally, so the very first writes of several workers
            // may race once and grant at most one extra window per worker.
            match proxy_wasm::hostcalls::set_shared_data(
                &self.shared_key,
                Some(&bucket.encode()),
                cas,
            ) {
                Ok(()) => return true,
                Err(Status::CasMismatch) => continue,
                Err(status) => return self.fail_open("set_shared_data", status),
            }
        }
        log::warn!(
            "rate-limit: bucket {:?} too contended, request let through",
            self.shared_key
        );
        true
    }

    fn fail_open(&self, call: &str, status: Status) -> bool {
        log::error!(
            "rate-limit: {call}({:?}) failed with {status:?}, request let through",
            self.shared_key
        );
        true
    }
}

#[derive(Default)]
struct RateLimitRoot {
    limiter: Option<Rc<Limiter>>,
}

impl Context for RateLimitRoot {}

impl RootContext for RateLimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(config) => config,
            Err(e) => {
                log::warn!("rate-limit: configuration refused: {e}");
                return false;
            }
        };
        let shared_key = config.shared_key.clone().unwrap_or_else(|| {
            let name = self.get_property(vec!["plugin_name"]).unwrap_or_default();
            format!("rate-limit/{}", String::from_utf8_lossy(&name))
        });
        log::info!(
            "rate-limit: {} request(s)/s, {}",
            config.tokens_per_second,
            if config.shared {
                format!("shared bucket {shared_key:?}")
            } else {
                "one bucket per VM".into()
            }
        );
        self.limiter = Some(Rc::new(Limiter {
            config,
            local: RefCell::default(),
            shared_key,
        }));
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a successful configure the host does not create streams; answer anyway with the defaults.
        let limiter = self.limiter.clone().unwrap_or_else(|| {
            Rc::new(Limiter {
                config: Config::default(),
                local: RefCell::default(),
                shared_key: String::new(),
            })
        });
        Some(Box::new(RateLimit { limiter }))
    }
}

struct RateLimit {
    limiter: Rc<Limiter>,
}

impl Context for RateLimit {}

impl HttpContext for RateLimit {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        if self.limiter.admit(now) {
            return Action::Continue;
        }
        log::debug!("rate-limit: request limited");
        let config = &self.limiter.config;
        match wasmgate_guest::send_local_response(
            config.deny_status,
            "",
            config.deny_body.as_bytes(),
            &config.deny_headers.as_refs(),
        ) {
            Ok(()) => Action::Pause,
            Err(status) => {
                // As the tutorial: if the host cannot answer, let the request through rather than hang it.
                log::error!("rate-limit: the host refused the local reply (status {status})");
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in &self.limiter.config.response_headers.0 {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
