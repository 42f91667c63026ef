//! Per-request behaviour of the `hostcalls` plugin, one scenario per `x-test` value (see README.md).

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls as hc;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel, Status};

use crate::values::{self, PROPERTIES};
use crate::{increment_shared, keys, Shared};

/// Timeout of the `http-call` and `grpc-call` scenarios' calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Status of every local reply a scenario sends on purpose.
const LOCAL_REPLY_STATUS: u32 = 418;

/// Every scenario `x-test` may name. Anything else is answered 400, so a typo never passes silently.
const SCENARIOS: &[&str] = &[
    "log",
    "time",
    "properties",
    "config",
    "headers",
    "headers-set",
    "request-body-buffer",
    "request-body-stream",
    "response-body-buffer",
    "response-body-stream",
    "trailers",
    "local-reply-request-headers",
    "local-reply-request-body",
    "local-reply-response-headers",
    "http-call",
    "grpc-call",
    "grpc-stream",
    "grpc-stream-cancel",
    "shared-data",
    "queue",
    "queue-read",
    "ticks",
    "pause-until-tick",
    "metrics",
    "foreign",
    "close",
];

pub(crate) struct Stream {
    id: u32,
    shared: Rc<Shared>,
    scenario: String,
    /// Results, added to the response headers (or to the local reply).
    echo: Vec<(String, String)>,
    request_body_calls: u32,
    response_body_calls: u32,
    /// A local reply was sent: its own response must not trigger another one, nor get the echo twice.
    replied: bool,
    call_token: Option<u32>,
    /// The `grpc-stream*` scenarios' stream, and the messages it received so far.
    stream_token: Option<u32>,
    stream_messages: Vec<String>,
}

impl Stream {
    pub fn new(id: u32, shared: Rc<Shared>) -> Self {
        Stream {
            id,
            shared,
            scenario: String::new(),
            echo: Vec::new(),
            request_body_calls: 0,
            response_body_calls: 0,
            replied: false,
            call_token: None,
            stream_token: None,
            stream_messages: Vec::new(),
        }
    }

    fn is(&self, scenario: &str) -> bool {
        self.scenario == scenario
    }

    fn echo(&mut self, name: &str, value: impl Into<String>) {
        self.echo.push((name.to_string(), value.into()));
    }

    /// Sends a local reply with `x-local-reply: <origin>`, the echo so far, and details `hostcalls_<origin>`.
    fn reply(&mut self, status: u32, origin: &str, body: &str) -> Action {
        self.replied = true;
        let mut headers = vec![("x-local-reply", origin)];
        headers.extend(self.echo.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let details = format!("hostcalls_{}", origin.replace('-', "_"));
        if let Err(status) =
            wasmgate_guest::send_local_response(status, &details, body.as_bytes(), &headers)
        {
            log::error!("hostcalls: send_local_response failed with status {status}");
        }
        Action::Pause
    }

    fn request_headers(&mut self) -> Action {
        match self.scenario.as_str() {
            "log" => self.log_at_every_level(),
            "time" => {
                let now = self
                    .get_current_time()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.echo("x-time-ns", now.as_nanos().to_string());
            }
            "properties" => self.properties(),
            "config" => {
                let plugin = String::from_utf8_lossy(&self.shared.plugin_config).into_owned();
                let vm = String::from_utf8_lossy(&self.shared.vm_config).into_owned();
                self.echo("x-plugin-config", plugin);
                self.echo("x-vm-config", vm);
            }
            "headers" => self.edit_request_headers(),
            "headers-set" => {
                let mut pairs = self.get_http_request_headers();
                pairs.retain(|(k, _)| !k.starts_with("x-drop-"));
                pairs.push(("x-set-pairs".into(), "yes".into()));
                self.set_http_request_headers(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                );
            }
            "local-reply-request-headers" => {
                return self.reply(
                    LOCAL_REPLY_STATUS,
                    "request-headers",
                    "local reply from request headers",
                );
            }
            "http-call" => return self.http_call(),
            "grpc-call" => return self.grpc_call(),
            "grpc-stream" | "grpc-stream-cancel" => return self.grpc_stream(),
            "shared-data" => self.shared_data(),
            "queue" => self.enqueue(),
            "queue-read" => {
                let (last, _) = hc::get_shared_data(keys::QUEUE_LAST).unwrap_or((None, None));
                let (count, _) = hc::get_shared_data(keys::QUEUE_COUNT).unwrap_or((None, None));
                let last = last.map_or("<missing>".into(), |v| {
                    String::from_utf8_lossy(&v).into_owned()
                });
                self.echo("x-queue-last", last);
                self.echo(
                    "x-queue-count",
                    values::parse_counter(count.as_deref()).to_string(),
                );
            }
            "ticks" => {
                let (ticks, _) = hc::get_shared_data(keys::TICKS).unwrap_or((None, None));
                self.echo(
                    "x-ticks",
                    values::parse_counter(ticks.as_deref()).to_string(),
                );
                self.echo("x-tick-ms", self.shared.config.tick_ms.to_string());
            }
            "pause-until-tick" => {
                if self.shared.config.tick_ms == 0 {
                    return self.reply(
                        500,
                        "pause-until-tick",
                        "pause-until-tick needs tick_ms in the configuration",
                    );
                }
                self.shared.paused.borrow_mut().push(self.id);
                self.echo("x-resumed-by", "tick");
                return Action::Pause;
            }
            "metrics" => self.metrics(),
            "foreign" => self.foreign(),
            "close" => {
                if let Err(e) = hc::reset_http_request() {
                    log::error!("hostcalls: close_stream failed: {e:?}");
                }
                return Action::Pause;
            }
            _ => {}
        }
        Action::Continue
    }

    fn log_at_every_level(&mut self) {
        for (level, name) in [
            (LogLevel::Trace, "trace"),
            (LogLevel::Debug, "debug"),
            (LogLevel::Info, "info"),
            (LogLevel::Warn, "warn"),
            (LogLevel::Error, "error"),
            (LogLevel::Critical, "critical"),
        ] {
            let _ = hc::log(level, &format!("hostcalls log {name}"));
        }
        match hc::get_log_level() {
            Ok(level) => self.echo("x-log-level", (level as u32).to_string()),
            Err(e) => self.echo("x-log-level", format!("<error:{e:?}>")),
        }
    }

    fn properties(&mut self) {
        for (name, kind) in PROPERTIES {
            let value = match hc::get_property(values::property_path(name)) {
                Ok(Some(bytes)) => values::render_property(*kind, &bytes),
                Ok(None) => "<missing>".into(),
                Err(e) => format!("<error:{e:?}>"),
            };
            self.echo(&values::property_header(name), value);
        }
        // Filter-state round trip: what set_property stores, get_property must return.
        self.set_property(vec!["hostcalls_set"], Some(b"stored"));
        let back = self.get_property(vec!["hostcalls_set"]);
        self.echo(
            "x-prop-set",
            back.map_or("<missing>".into(), |v| {
                String::from_utf8_lossy(&v).into_owned()
            }),
        );
    }

    fn edit_request_headers(&mut self) {
        let count = self.get_http_request_headers().len();
        self.echo("x-req-header-count", count.to_string());
        let got = self
            .get_http_request_header("x-in")
            .unwrap_or_else(|| "<missing>".into());
        self.echo("x-got-x-in", got);
        let missing = self.get_http_request_header("x-never-sent");
        self.echo(
            "x-got-missing",
            if missing.is_none() { "none" } else { "some" },
        );
        self.add_http_request_header("x-added", "added");
        self.set_http_request_header("x-replace", Some("replaced"));
        self.remove_http_request_header("x-remove");
    }

    fn edit_response_headers(&mut self) {
        let count = self.get_http_response_headers().len();
        self.echo("x-resp-header-count", count.to_string());
        let status = self
            .get_http_response_header(":status")
            .unwrap_or_else(|| "<missing>".into());
        self.echo("x-seen-status", status);
        self.add_http_response_header("x-resp-added", "added");
        self.set_http_response_header("x-resp-replace", Some("replaced"));
        self.remove_http_response_header("x-resp-remove");
    }

    fn http_call(&mut self) -> Action {
        let upstream = self
            .get_http_request_header("x-upstream")
            .unwrap_or_else(|| self.shared.config.upstream().to_string());
        let path = self
            .get_http_request_header("x-call-path")
            .unwrap_or_else(|| "/hostcalls".into());
        let headers = vec![
            (":method", "POST"),
            (":path", path.as_str()),
            (":authority", upstream.as_str()),
            ("x-from", "hostcalls"),
        ];
        match self.dispatch_http_call(
            &upstream,
            headers,
            Some(b"hostcalls-ping"),
            vec![],
            CALL_TIMEOUT,
        ) {
            Ok(token) => {
                self.call_token = Some(token);
                Action::Pause
            }
            Err(e) => self.reply(
                500,
                "http-call",
                &format!("http call dispatch failed: {e:?}"),
            ),
        }
    }

    fn grpc_call(&mut self) -> Action {
        let upstream = self.shared.config.grpc_upstream().to_string();
        let metadata = vec![("x-from", &b"hostcalls"[..])];
        match self.dispatch_grpc_call(
            &upstream,
            "hostcalls.Echo",
            "Ping",
            metadata,
            Some(b"ping"),
            CALL_TIMEOUT,
        ) {
            Ok(token) => {
                self.call_token = Some(token);
                Action::Pause
            }
            Err(e) => self.reply(
                500,
                "grpc-call",
                &format!("grpc call dispatch failed: {e:?}"),
            ),
        }
    }

    /// Opens `hostcalls.Echo/Stream` and sends `one`; `grpc-stream` then sends `two`, `three` and half-closes
    /// (`proxy_grpc_close`), `grpc-stream-cancel` cancels at the first reply (`on_grpc_stream_message`).
    fn grpc_stream(&mut self) -> Action {
        let upstream = self.shared.config.grpc_upstream().to_string();
        let metadata = vec![("x-from", &b"hostcalls"[..])];
        match self.open_grpc_stream(&upstream, "hostcalls.Echo", "Stream", metadata) {
            Ok(token) => {
                self.stream_token = Some(token);
                self.send_grpc_stream_message(token, Some(b"one"), false);
                if self.is("grpc-stream") {
                    self.send_grpc_stream_message(token, Some(b"two"), false);
                    self.send_grpc_stream_message(token, Some(b"three"), false);
                    self.close_grpc_stream(token);
                }
                Action::Pause
            }
            Err(e) => self.reply(
                500,
                "grpc-stream",
                &format!("grpc stream open failed: {e:?}"),
            ),
        }
    }

    fn shared_data(&mut self) {
        match increment_shared(keys::COUNTER) {
            Ok(n) => self.echo("x-shared-counter", n.to_string()),
            Err(e) => self.echo("x-shared-counter", format!("<error:{e:?}>")),
        }
        // A stale CAS must be refused: write with the current CAS (accepted), then again with the same (refused).
        let probe = || -> Result<String, Status> {
            hc::set_shared_data(keys::CAS_PROBE, Some(b"a"), None)?;
            let (_, cas) = hc::get_shared_data(keys::CAS_PROBE)?;
            let first = hc::set_shared_data(keys::CAS_PROBE, Some(b"b"), cas);
            let second = hc::set_shared_data(keys::CAS_PROBE, Some(b"c"), cas);
            let (value, _) = hc::get_shared_data(keys::CAS_PROBE)?;
            Ok(format!(
                "{},{},{}",
                outcome(first),
                outcome(second),
                String::from_utf8_lossy(&value.unwrap_or_default())
            ))
        };
        let result = probe().unwrap_or_else(|e| format!("<error:{e:?}>"));
        self.echo("x-shared-cas", result);
    }

    fn enqueue(&mut self) {
        let Some(name) = self.shared.config.queue.clone() else {
            self.echo("x-queue", "not-configured");
            return;
        };
        let vm_id = self.get_property(vec!["plugin_vm_id"]).unwrap_or_default();
        let vm_id = String::from_utf8_lossy(&vm_id).into_owned();
        let value = self
            .get_http_request_header("x-queue-value")
            .unwrap_or_else(|| "hello".into());
        match hc::resolve_shared_queue(&vm_id, &name) {
            Ok(Some(id)) => {
                self.echo(
                    "x-queue-resolved",
                    (Some(id) == self.shared.queue_id).to_string(),
                );
                match hc::enqueue_shared_queue(id, Some(value.as_bytes())) {
                    Ok(()) => self.echo("x-queue-enqueued", value),
                    Err(e) => self.echo("x-queue-enqueued", format!("<error:{e:?}>")),
                }
            }
            Ok(None) => self.echo("x-queue-resolved", "not-found"),
            Err(e) => self.echo("x-queue-resolved", format!("<error:{e:?}>")),
        }
    }

    fn metrics(&mut self) {
        let m = match self.shared.metrics() {
            Ok(m) => m,
            Err(e) => return self.echo("x-metric-error", format!("define_metric: {e:?}")),
        };
        let result = (|| -> Result<(u64, u64), Status> {
            hc::increment_metric(m.counter, 1)?;
            hc::record_metric(m.gauge, 42)?;
            hc::increment_metric(m.gauge, -2)?;
            hc::record_metric(m.histogram, 7)?;
            hc::record_metric(m.histogram, 70)?;
            Ok((hc::get_metric(m.counter)?, hc::get_metric(m.gauge)?))
        })();
        match result {
            Ok((counter, gauge)) => {
                self.echo("x-metric-counter", counter.to_string());
                self.echo("x-metric-gauge", gauge.to_string());
            }
            Err(e) => self.echo("x-metric-error", format!("{e:?}")),
        }
    }

    fn foreign(&mut self) {
        let data = self
            .get_http_request_header("x-foreign-data")
            .unwrap_or_else(|| "hostcalls hostcalls hostcalls hostcalls hostcalls".into());
        let round_trip = (|| -> Result<(usize, bool), Status> {
            let compressed = self
                .call_foreign_function("compress", Some(data.as_bytes()))?
                .unwrap_or_default();
            let restored = self
                .call_foreign_function("uncompress", Some(&compressed))?
                .unwrap_or_default();
            Ok((compressed.len(), restored == data.as_bytes()))
        })();
        match round_trip {
            Ok((len, same)) => {
                self.echo("x-foreign-compressed-len", len.to_string());
                self.echo("x-foreign-roundtrip", if same { "ok" } else { "mismatch" });
            }
            Err(e) => self.echo("x-foreign-roundtrip", format!("<error:{e:?}>")),
        }
        let unknown = self.call_foreign_function("hostcalls_no_such_function", None);
        self.echo(
            "x-foreign-unknown",
            match unknown {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("{e:?}"),
            },
        );
    }
}

fn outcome(r: Result<(), Status>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(Status::CasMismatch) => "mismatch".into(),
        Err(e) => format!("{e:?}"),
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        self.shared.lifecycle("on_http_call_response", self.id);
        let status = self.get_http_call_response_header(":status");
        let body = if body_size > 0 {
            self.get_http_call_response_body(0, body_size)
        } else {
            None
        };
        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
        self.echo(
            "x-call-status",
            status.clone().unwrap_or_else(|| "none".into()),
        );
        self.echo("x-call-body", body);
        self.echo("x-call-headers", num_headers.to_string());
        self.echo("x-call-trailers", num_trailers.to_string());
        self.echo(
            "x-call-token-matches",
            (Some(token) == self.call_token).to_string(),
        );
        if status.as_deref() == Some("200") {
            self.add_http_request_header("x-call-status", "200");
            self.resume_http_request();
        } else {
            let status = status.unwrap_or_else(|| "none".into());
            self.reply(
                403,
                "http-call",
                &format!("denied by http call: status {status}"),
            );
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status_code: u32, response_size: usize) {
        self.shared.lifecycle("on_grpc_call_response", self.id);
        self.echo(
            "x-grpc-token-matches",
            (Some(token) == self.call_token).to_string(),
        );
        if status_code == 0 {
            let body = if response_size > 0 {
                self.get_grpc_call_response_body(0, response_size)
            } else {
                None
            };
            self.echo("x-grpc-status", "0");
            self.echo(
                "x-grpc-body",
                String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
            );
            self.resume_http_request();
        } else {
            let (code, message) = self.get_grpc_status();
            let message = message.unwrap_or_default();
            self.reply(
                503,
                "grpc-call",
                &format!("grpc call failed: status {code} {message}"),
            );
        }
    }

    fn on_grpc_stream_initial_metadata(&mut self, token: u32, num_elements: u32) {
        self.shared
            .lifecycle("on_grpc_stream_initial_metadata", self.id);
        let value = self.get_grpc_stream_initial_metadata_value("x-server-md");
        self.echo("x-grpc-stream-initial", lossy(value));
        self.echo("x-grpc-stream-initial-count", num_elements.to_string());
        self.echo(
            "x-grpc-stream-token-matches",
            (Some(token) == self.stream_token).to_string(),
        );
    }

    fn on_grpc_stream_message(&mut self, token: u32, message_size: usize) {
        self.shared.lifecycle("on_grpc_stream_message", self.id);
        let message = self.get_grpc_stream_message(0, message_size);
        self.stream_messages.push(lossy(message));
        if self.is("grpc-stream-cancel") {
            self.cancel_grpc_stream(token);
            self.echo("x-grpc-stream-messages", self.stream_messages.join(","));
            self.echo("x-grpc-stream-cancelled", "true");
            self.resume_http_request();
        }
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, _num_elements: u32) {
        self.shared
            .lifecycle("on_grpc_stream_trailing_metadata", self.id);
        let value = self.get_grpc_stream_trailing_metadata_value("x-server-trailer");
        self.echo("x-grpc-stream-trailer", lossy(value));
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status_code: u32) {
        self.shared.lifecycle("on_grpc_stream_close", self.id);
        let (_, message) = self.get_grpc_status();
        self.echo("x-grpc-stream-messages", self.stream_messages.join(","));
        self.echo("x-grpc-stream-close", status_code.to_string());
        self.echo("x-grpc-stream-close-message", message.unwrap_or_default());
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        self.shared.lifecycle("on_done", self.id);
        // A stream that ends while paused must not be resumed by a later tick.
        self.shared.paused.borrow_mut().retain(|id| *id != self.id);
        true
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.shared.lifecycle("on_http_request_headers", self.id);
        self.scenario = self.get_http_request_header("x-test").unwrap_or_default();
        if self.scenario.is_empty() {
            return Action::Continue;
        }
        if !SCENARIOS.contains(&self.scenario.as_str()) {
            let body = format!("unknown x-test scenario {:?}", self.scenario);
            return self.reply(400, "unknown-scenario", &body);
        }
        self.request_headers()
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.shared.lifecycle("on_http_request_body", self.id);
        self.request_body_calls += 1;
        match self.scenario.as_str() {
            "request-body-buffer" => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self.get_http_request_body(0, body_size).unwrap_or_default();
                self.echo("x-req-body", String::from_utf8_lossy(&body).into_owned());
                self.echo("x-req-body-size", body_size.to_string());
                self.set_http_request_body(0, body_size, &values::shout(&body));
            }
            "request-body-stream" => {
                let chunk = self.get_http_request_body(0, body_size).unwrap_or_default();
                self.set_http_request_body(0, body_size, &values::shout(&chunk));
            }
            "local-reply-request-body" => {
                if !end_of_stream {
                    return Action::Pause;
                }
                return self.reply(
                    LOCAL_REPLY_STATUS,
                    "request-body",
                    "local reply from request body",
                );
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.shared.lifecycle("on_http_request_trailers", self.id);
        if self.is("trailers") {
            let seen: Vec<String> = self
                .get_http_request_trailers()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            self.echo("x-req-trailers", seen.join(";"));
            self.add_http_request_trailer("x-trailer-added", "yes");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.shared.lifecycle("on_http_response_headers", self.id);
        if self.scenario.is_empty() || self.replied {
            return Action::Continue;
        }
        match self.scenario.as_str() {
            "local-reply-response-headers" => {
                return self.reply(
                    LOCAL_REPLY_STATUS,
                    "response-headers",
                    "local reply from response headers",
                );
            }
            "headers" => self.edit_response_headers(),
            "headers-set" => {
                let mut pairs = self.get_http_response_headers();
                pairs.retain(|(k, _)| !k.starts_with("x-drop-"));
                pairs.push(("x-set-pairs".into(), "yes".into()));
                self.set_http_response_headers(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                );
            }
            // The body grows: a stale content-length would truncate it.
            "response-body-buffer" => self.remove_http_response_header("content-length"),
            "request-body-buffer" | "request-body-stream" => {
                self.echo("x-req-body-calls", self.request_body_calls.to_string());
            }
            _ => {}
        }
        self.add_http_response_header("x-hostcalls", &self.scenario.clone());
        for (name, value) in &self.echo {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.shared.lifecycle("on_http_response_body", self.id);
        self.response_body_calls += 1;
        match self.scenario.as_str() {
            "response-body-buffer" if !self.replied => {
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                let mut rewritten = format!("hostcalls saw {body_size} bytes: ").into_bytes();
                rewritten.extend_from_slice(&body);
                self.set_http_response_body(0, body_size, &rewritten);
            }
            "response-body-stream" if !self.replied => {
                let chunk = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                self.set_http_response_body(0, body_size, &values::shout(&chunk));
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.shared.lifecycle("on_http_response_trailers", self.id);
        if self.is("trailers") {
            self.add_http_response_trailer("x-resp-trailer", "hostcalls");
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.shared.lifecycle("on_log", self.id);
    }
}

/// Bytes from the host as text, `<none>` when absent.
fn lossy(value: Option<Vec<u8>>) -> String {
    value.map_or_else(
        || "<none>".to_string(),
        |v| String::from_utf8_lossy(&v).into_owned(),
    )
}
