//! `hostcalls`: a test plugin that exercises every group of proxy-wasm host functions through the Rust SDK.
//!
//! The request header `x-test: <scenario>` picks what a stream does; the plugin configuration turns on the
//! root-context features (ticks, a shared queue, lifecycle logs). README.md lists every scenario with the exact
//! result a host must produce.

mod stream;
mod values;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls as hc;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MetricType, Status};

use values::Config;

/// Shared-data keys the plugin writes (process-wide per vm_id, visible to every VM and to the host).
pub(crate) mod keys {
    pub const TICKS: &str = "hostcalls/ticks";
    pub const QUEUE_LAST: &str = "hostcalls/queue-last";
    pub const QUEUE_COUNT: &str = "hostcalls/queue-count";
    pub const COUNTER: &str = "hostcalls/counter";
    pub const CAS_PROBE: &str = "hostcalls/cas-probe";
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
}}

/// Metric ids, defined on first use by the `metrics` scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metrics {
    pub counter: u32,
    pub gauge: u32,
    pub histogram: u32,
}

/// What the root context shares with its streams.
#[derive(Default)]
pub(crate) struct Shared {
    pub config: Config,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub queue_id: Option<u32>,
    pub metrics: Cell<Option<Metrics>>,
    /// Streams paused by `pause-until-tick`, resumed by the next tick.
    pub paused: RefCell<Vec<u32>>,
}

impl Shared {
    pub fn lifecycle(&self, callback: &str, context_id: u32) {
        if self.config.log_lifecycle {
            let _ = hc::log(
                LogLevel::Info,
                &format!("hostcalls: {callback} {context_id}"),
            );
        }
    }

    pub fn metrics(&self) -> Result<Metrics, Status> {
        if let Some(m) = self.metrics.get() {
            return Ok(m);
        }
        let m = Metrics {
            counter: hc::define_metric(MetricType::Counter, "hostcalls_requests_total")?,
            gauge: hc::define_metric(MetricType::Gauge, "hostcalls_gauge")?,
            histogram: hc::define_metric(MetricType::Histogram, "hostcalls_histogram")?,
        };
        self.metrics.set(Some(m));
        Ok(m)
    }
}

/// Adds one to a decimal counter in shared data with compare-and-swap, retrying on CAS_MISMATCH.
pub(crate) fn increment_shared(key: &str) -> Result<u64, Status> {
    loop {
        let (value, cas) = hc::get_shared_data(key)?;
        let next = values::parse_counter(value.as_deref()) + 1;
        match hc::set_shared_data(key, Some(next.to_string().as_bytes()), cas) {
            Ok(()) => return Ok(next),
            Err(Status::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
}

struct Root {
    id: u32,
    vm_config: Vec<u8>,
    shared: Rc<Shared>,
    done_deferred: bool,
}

impl Root {
    fn new(id: u32) -> Self {
        Root {
            id,
            vm_config: Vec::new(),
            shared: Rc::default(),
            done_deferred: false,
        }
    }
}

impl Context for Root {
    fn on_done(&mut self) -> bool {
        self.shared.lifecycle("root on_done", self.id);
        if self.shared.config.defer_done {
            let _ = hc::log(LogLevel::Info, "hostcalls: root on_done deferred");
            self.done_deferred = true;
            return false;
        }
        true
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        self.vm_config = self.get_vm_configuration().unwrap_or_default();
        let _ = hc::log(
            LogLevel::Info,
            &format!(
                "hostcalls: on_vm_start {} ({} bytes of vm configuration)",
                self.id,
                self.vm_config.len()
            ),
        );
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let plugin_config = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&plugin_config) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("hostcalls: configuration refused: {e}");
                return false;
            }
        };
        if config.tick_ms > 0 {
            self.set_tick_period(Duration::from_millis(config.tick_ms));
        }
        let queue_id = match &config.queue {
            Some(name) => match hc::register_shared_queue(name) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::warn!("hostcalls: register_shared_queue({name:?}) failed: {e:?}");
                    return false;
                }
            },
            None => None,
        };
        self.shared = Rc::new(Shared {
            config,
            plugin_config,
            vm_config: self.vm_config.clone(),
            queue_id,
            ..Shared::default()
        });
        self.shared.lifecycle("on_configure", self.id);
        true
    }

    fn on_tick(&mut self) {
        self.shared.lifecycle("on_tick", self.id);
        if let Err(e) = increment_shared(keys::TICKS) {
            log::error!("hostcalls: counting a tick failed: {e:?}");
        }
        let paused: Vec<u32> = self.shared.paused.borrow_mut().drain(..).collect();
        for stream in paused {
            if hc::set_effective_context(stream).is_ok() {
                let _ = hc::log(
                    LogLevel::Info,
                    &format!("hostcalls: tick resumes stream {stream}"),
                );
                let _ = hc::resume_http_request();
            }
        }
        if self.done_deferred {
            self.done_deferred = false;
            let _ = hc::log(LogLevel::Info, "hostcalls: root calls proxy_done");
            self.done();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.shared.lifecycle("on_queue_ready", self.id);
        loop {
            match hc::dequeue_shared_queue(queue_id) {
                Ok(Some(item)) => {
                    let _ = hc::log(
                        LogLevel::Info,
                        &format!("hostcalls: dequeued {:?}", String::from_utf8_lossy(&item)),
                    );
                    let stored = hc::set_shared_data(keys::QUEUE_LAST, Some(&item), None)
                        .and_then(|()| increment_shared(keys::QUEUE_COUNT));
                    if let Err(e) = stored {
                        log::error!("hostcalls: recording a dequeued item failed: {e:?}");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::error!("hostcalls: dequeue_shared_queue({queue_id}) failed: {e:?}");
                    break;
                }
            }
        }
    }

    fn on_log(&mut self) {
        self.shared.lifecycle("root on_log", self.id);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.shared.lifecycle("create_http_context", context_id);
        Some(Box::new(stream::Stream::new(
            context_id,
            Rc::clone(&self.shared),
        )))
    }
}
