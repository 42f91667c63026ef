//! `hostile`: a test plugin that misbehaves on demand, so hosts can prove they contain it: panics (Wasm traps),
//! infinite loops, memory bombs, out-of-bounds pointers and bad enums, refused configuration. See README.md.

mod plan;

use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use plan::{Act, Plan};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Carries out a planned misbehaviour; returns only when there is none (or the bomb fitted in memory).
fn misbehave(plan: &Plan, callback: &str) {
    match plan.act(callback) {
        None => {}
        Some(Act::Panic) => panic!("hostile: panic in {callback}"),
        Some(Act::Loop) => {
            log::warn!("hostile: looping forever in {callback}");
            let mut spins = 0u64;
            loop {
                // black_box keeps the loop from being optimised into something the host never sees spin.
                spins = black_box(spins.wrapping_add(1));
            }
        }
        Some(Act::Grow(mb)) => {
            log::warn!("hostile: allocating {mb} MiB in {callback}");
            // vec! writes every byte, so the pages are really committed; forget keeps them for good.
            let bomb = vec![1u8; (mb as usize) << 20];
            std::mem::forget(black_box(bomb));
            log::warn!("hostile: {mb} MiB allocated in {callback}");
        }
    }
}

#[derive(Default)]
struct Root {
    plan: Rc<Plan>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // The plugin configuration is not known yet: on_vm_start misbehaviours come from the VM configuration.
        let bytes = self.get_vm_configuration().unwrap_or_default();
        let vm_plan = Plan::parse(&bytes).unwrap_or_else(|e| {
            log::warn!("hostile: ignoring the VM configuration: {e}");
            Plan::default()
        });
        misbehave(&vm_plan, "on_vm_start");
        vm_plan.vm_start_returns
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let plan = match Plan::parse(&self.get_plugin_configuration().unwrap_or_default()) {
            Ok(plan) => plan,
            Err(e) => {
                log::warn!("hostile: configuration refused: {e}");
                return false;
            }
        };
        misbehave(&plan, "on_configure");
        if plan.needs_tick() {
            self.set_tick_period(Duration::from_millis(plan.tick_ms.max(1)));
        }
        if !plan.configure_returns {
            log::warn!("hostile: refusing the configuration as asked");
        }
        let answer = plan.configure_returns;
        self.plan = Rc::new(plan);
        answer
    }

    fn on_tick(&mut self) {
        misbehave(&self.plan, "on_tick");
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        misbehave(&self.plan, "on_context_create");
        Some(Box::new(Stream {
            plan: Rc::clone(&self.plan),
            statuses: None,
        }))
    }
}

struct Stream {
    plan: Rc<Plan>,
    /// Result of the `bad_pointers` probe, echoed in `x-hostile-statuses`.
    statuses: Option<String>,
}

impl Context for Stream {
    fn on_done(&mut self) -> bool {
        misbehave(&self.plan, "on_done");
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(value) = self.get_http_request_header("x-hostile") {
            match Plan::from_header(&value) {
                Ok(plan) => self.plan = Rc::new(plan),
                Err(e) => {
                    self.send_http_response(
                        400,
                        vec![("x-hostile-error", "bad-header")],
                        Some(e.as_bytes()),
                    );
                    return Action::Pause;
                }
            }
        }
        misbehave(&self.plan, "on_request_headers");
        if self.plan.bad_pointers {
            self.statuses = Some(raw::probe());
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        misbehave(&self.plan, "on_request_body");
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        misbehave(&self.plan, "on_request_trailers");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        misbehave(&self.plan, "on_response_headers");
        if let Some(statuses) = self.statuses.take() {
            self.add_http_response_header("x-hostile-statuses", &statuses);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        misbehave(&self.plan, "on_response_body");
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        misbehave(&self.plan, "on_response_trailers");
        Action::Continue
    }

    fn on_log(&mut self) {
        misbehave(&self.plan, "on_log");
    }
}

/// Host calls with arguments no SDK would produce: the host must answer each with a status, not crash.
mod raw {
    /// An address past the end of any linear memory smaller than 4 GiB.
    const OUT_OF_BOUNDS: usize = 0xFFFF_FF00;
    const REQUEST_HEADERS: u32 = 0;
    const BAD_ENUM: u32 = 99;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
        fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
    }

    /// Runs each bad call and reports `name=status` pairs, e.g. `log=6,key=6,...`.
    pub fn probe() -> String {
        let mut out_ptr: *mut u8 = std::ptr::null_mut();
        let mut out_len: usize = 0;
        // Present in every request, so only the return pointers can make the call fail.
        let key = b":path";
        // Claims two pairs but carries only the count: a truncated pairs buffer.
        let truncated_pairs = 2u32.to_le_bytes();
        // SAFETY: the host reads and writes Wasm linear memory, never Rust references; the pointers that are
        // out of bounds are the point of the probe, and valid out-params live for the whole call.
        let results = unsafe {
            [
                ("log", proxy_log(2, OUT_OF_BOUNDS as *const u8, 64)),
                (
                    "key",
                    proxy_get_header_map_value(
                        REQUEST_HEADERS,
                        OUT_OF_BOUNDS as *const u8,
                        8,
                        &mut out_ptr,
                        &mut out_len,
                    ),
                ),
                (
                    "return_ptr",
                    proxy_get_header_map_value(
                        REQUEST_HEADERS,
                        key.as_ptr(),
                        key.len(),
                        OUT_OF_BOUNDS as *mut *mut u8,
                        OUT_OF_BOUNDS as *mut usize,
                    ),
                ),
                (
                    "map_type",
                    proxy_get_header_map_value(
                        BAD_ENUM,
                        key.as_ptr(),
                        key.len(),
                        &mut out_ptr,
                        &mut out_len,
                    ),
                ),
                (
                    "pairs",
                    proxy_set_header_map_pairs(
                        REQUEST_HEADERS,
                        truncated_pairs.as_ptr(),
                        truncated_pairs.len(),
                    ),
                ),
                (
                    "buffer_type",
                    proxy_get_buffer_bytes(BAD_ENUM, 0, 16, &mut out_ptr, &mut out_len),
                ),
            ]
        };
        results
            .iter()
            .map(|(name, status)| format!("{name}={status}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}
