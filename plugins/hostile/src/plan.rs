//! What to misbehave in, parsed from JSON configuration or from an `x-hostile` request header.
//! Pure logic, unit-tested on the host.

use serde::Deserialize;

/// Callbacks a misbehaviour can be attached to.
pub const CALLBACKS: &[&str] = &[
    "on_vm_start",
    "on_configure",
    "on_tick",
    "on_context_create",
    "on_request_headers",
    "on_request_body",
    "on_request_trailers",
    "on_response_headers",
    "on_response_body",
    "on_response_trailers",
    "on_done",
    "on_log",
];

/// Default tick period armed when a misbehaviour targets `on_tick`.
pub const DEFAULT_TICK_MS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plan {
    /// Panic (a Wasm trap, `unreachable`) in this callback.
    pub panic_in: Option<String>,
    /// Spin forever in this callback; only the host's time limit stops it.
    pub loop_in: Option<String>,
    /// Allocate and touch this many MiB in `grow_in` (and keep them).
    pub grow_memory_mb: u32,
    /// Callback of the memory bomb; default `on_request_headers`.
    pub grow_in: String,
    /// Call host functions with out-of-bounds pointers and bad enums in `on_request_headers`, and report the
    /// statuses in the response header `x-hostile-statuses`.
    pub bad_pointers: bool,
    /// `on_configure` answers this (false: the configuration is refused).
    pub configure_returns: bool,
    /// `on_vm_start` answers this; read from the VM configuration only.
    pub vm_start_returns: bool,
    /// Tick period (ms) armed when a misbehaviour targets `on_tick`.
    pub tick_ms: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            panic_in: None,
            loop_in: None,
            grow_memory_mb: 0,
            grow_in: "on_request_headers".into(),
            bad_pointers: false,
            configure_returns: true,
            vm_start_returns: true,
            tick_ms: DEFAULT_TICK_MS,
        }
    }
}

/// What to do on entering a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Panic,
    Loop,
    Grow(u32),
}

impl Plan {
    /// Parses a configuration; empty means "behave".
    pub fn parse(bytes: &[u8]) -> Result<Plan, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Plan::default());
        }
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !json.is_object() {
            return Err("configuration must be a JSON object".into());
        }
        let plan: Plan = serde_json::from_value(json).map_err(|e| e.to_string())?;
        for name in [
            plan.panic_in.as_deref(),
            plan.loop_in.as_deref(),
            Some(plan.grow_in.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if !CALLBACKS.contains(&name) {
                return Err(format!(
                    "unknown callback {name:?}; known: {}",
                    CALLBACKS.join(", ")
                ));
            }
        }
        Ok(plan)
    }

    /// Parses an `x-hostile` header: `panic_in=<callback>`, `loop_in=<callback>` or `grow_memory_mb=<N>`
    /// (the bomb then goes off in `on_request_headers`).
    pub fn from_header(value: &str) -> Result<Plan, String> {
        let (key, arg) = value
            .split_once('=')
            .ok_or_else(|| format!("x-hostile {value:?}: want key=value"))?;
        let json = match key.trim() {
            "panic_in" | "loop_in" => format!(r#"{{"{}": "{}"}}"#, key.trim(), arg.trim()),
            "grow_memory_mb" => {
                let mb: u32 = arg
                    .trim()
                    .parse()
                    .map_err(|_| format!("x-hostile {value:?}: not a number"))?;
                format!(r#"{{"grow_memory_mb": {mb}}}"#)
            }
            other => return Err(format!("x-hostile: unknown key {other:?}")),
        };
        Plan::parse(json.as_bytes())
    }

    /// The misbehaviour planned for `callback`, if any. A panic wins over a loop, a loop over a bomb.
    pub fn act(&self, callback: &str) -> Option<Act> {
        if self.panic_in.as_deref() == Some(callback) {
            Some(Act::Panic)
        } else if self.loop_in.as_deref() == Some(callback) {
            Some(Act::Loop)
        } else if self.grow_memory_mb > 0 && self.grow_in == callback {
            Some(Act::Grow(self.grow_memory_mb))
        } else {
            None
        }
    }

    /// Whether the root context must arm a timer.
    pub fn needs_tick(&self) -> bool {
        self.act("on_tick").is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_configuration_behaves() {
        let p = Plan::parse(b"").unwrap();
        assert_eq!(p, Plan::default());
        assert!(CALLBACKS.iter().all(|c| p.act(c).is_none()));
        assert!(p.configure_returns && p.vm_start_returns);
    }

    #[test]
    fn each_misbehaviour_lands_in_its_callback() {
        let p =
            Plan::parse(br#"{"panic_in": "on_response_headers", "loop_in": "on_tick"}"#).unwrap();
        assert_eq!(p.act("on_response_headers"), Some(Act::Panic));
        assert_eq!(p.act("on_tick"), Some(Act::Loop));
        assert_eq!(p.act("on_request_headers"), None);
        assert!(p.needs_tick());
        assert_eq!(p.tick_ms, DEFAULT_TICK_MS);
        let p = Plan::parse(br#"{"grow_memory_mb": 64}"#).unwrap();
        assert_eq!(p.act("on_request_headers"), Some(Act::Grow(64)));
        let p = Plan::parse(br#"{"grow_memory_mb": 8, "grow_in": "on_configure"}"#).unwrap();
        assert_eq!(p.act("on_configure"), Some(Act::Grow(8)));
        assert!(
            !Plan::parse(br#"{"configure_returns": false}"#)
                .unwrap()
                .configure_returns
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(Plan::parse(br#"{"panic_in": "on_nothing"}"#).is_err());
        assert!(Plan::parse(br#"{"panic": "on_configure"}"#).is_err());
        assert!(Plan::parse(b"[]").is_err());
        assert!(Plan::parse(b"{").is_err());
    }

    #[test]
    fn header_form() {
        assert_eq!(
            Plan::from_header("panic_in=on_response_body")
                .unwrap()
                .act("on_response_body"),
            Some(Act::Panic)
        );
        assert_eq!(
            Plan::from_header("loop_in = on_log").unwrap().act("on_log"),
            Some(Act::Loop)
        );
        assert_eq!(
            Plan::from_header("grow_memory_mb=3")
                .unwrap()
                .act("on_request_headers"),
            Some(Act::Grow(3))
        );
        assert!(Plan::from_header("panic_in").is_err());
        assert!(Plan::from_header("grow_memory_mb=x").is_err());
        assert!(Plan::from_header("explode=now").is_err());
        assert!(Plan::from_header("panic_in=nowhere").is_err());
    }
}
