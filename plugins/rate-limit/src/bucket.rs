//! Configuration and the token bucket, free of host calls so they are unit-tested on the host.

use serde::Deserialize;
use wasmgate_guest::HeaderList;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Plugin configuration. Every field is optional; the defaults are exactly Tetrate's tutorial plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Requests allowed per one-second window. At least 1.
    pub tokens_per_second: u64,
    /// Status of the reply to a limited request (200–599).
    pub deny_status: u32,
    /// Headers of the reply to a limited request.
    pub deny_headers: HeaderList,
    /// Body of the reply to a limited request.
    pub deny_body: String,
    /// Headers added to every response that passes through the plugin, limited or not.
    pub response_headers: HeaderList,
    /// Keep the bucket in the host's shared data (compare-and-swap) so that the limit holds across every worker
    /// VM of the gateway, instead of one bucket per VM as in the tutorial (and in Envoy, per worker thread).
    pub shared: bool,
    /// Shared-data key of the bucket when `shared` is true. Default: `rate-limit/<plugin_name>`, so two
    /// WasmPlugins sharing a VM keep separate buckets; give two plugins the same key to share one bucket.
    pub shared_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tokens_per_second: 2,
            deny_status: 403,
            deny_headers: HeaderList::from_pairs(&[("powered-by", "proxy-wasm-go-sdk!!")]),
            deny_body: "rate limited, wait and retry.".to_string(),
            response_headers: HeaderList::from_pairs(&[
                ("who-am-i", "wasm-extension"),
                ("injected-by", "istio-api!"),
            ]),
            shared: false,
            shared_key: None,
        }
    }
}

impl Config {
    /// Parses the plugin configuration; empty bytes give the tutorial's behaviour.
    pub fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("invalid configuration: {e}"))?;
        // serde would also accept a struct written as an array; only an object is a configuration.
        if !json.is_object() {
            return Err("invalid configuration: not a JSON object".to_string());
        }
        let config: Config =
            serde_json::from_value(json).map_err(|e| format!("invalid configuration: {e}"))?;
        if config.tokens_per_second == 0 {
            return Err("tokens_per_second must be at least 1".to_string());
        }
        if !(200..=599).contains(&config.deny_status) {
            return Err(format!(
                "deny_status {} is not an HTTP status (200-599)",
                config.deny_status
            ));
        }
        if config.shared_key.as_deref() == Some("") {
            return Err("shared_key must not be empty".to_string());
        }
        Ok(config)
    }
}

/// The tutorial's bucket: refilled to capacity when more than one second has passed since the last refill.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tokens: u64,
    pub last_refill_nanos: u64,
}

impl Bucket {
    /// Size of [`Bucket::encode`]'s output.
    pub const ENCODED_LEN: usize = 16;

    /// Takes a token at time `now_nanos` if one is left; refills first when the window has passed.
    /// Returns whether the request may pass.
    pub fn take(&mut self, now_nanos: u64, capacity: u64) -> bool {
        if now_nanos > self.last_refill_nanos.saturating_add(NANOS_PER_SECOND) {
            self.tokens = capacity;
            self.last_refill_nanos = now_nanos;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Shared-data value: tokens then last refill time, both u64 little-endian.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.tokens.to_le_bytes());
        out[8..].copy_from_slice(&self.last_refill_nanos.to_le_bytes());
        out
    }

    /// Reads a shared-data value; anything but 16 bytes (a foreign writer) is treated as an empty bucket.
    pub fn decode(bytes: &[u8]) -> Bucket {
        let Ok(raw) = <[u8; Self::ENCODED_LEN]>::try_from(bytes) else {
            return Bucket::default();
        };
        let (tokens, last) = raw.split_at(8);
        Bucket {
            tokens: u64::from_le_bytes(tokens.try_into().unwrap_or_default()),
            last_refill_nanos: u64::from_le_bytes(last.try_into().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn empty_configuration_is_the_tutorial() {
        let c = Config::parse(b"").unwrap();
        assert_eq!(c.tokens_per_second, 2);
        assert_eq!(c.deny_status, 403);
        assert_eq!(
            c.deny_headers.as_refs(),
            [("powered-by", "proxy-wasm-go-sdk!!")]
        );
        assert_eq!(c.deny_body, "rate limited, wait and retry.");
        assert_eq!(
            c.response_headers.as_refs(),
            [
                ("who-am-i", "wasm-extension"),
                ("injected-by", "istio-api!")
            ]
        );
        assert!(!c.shared);
        assert_eq!(Config::parse(b"{}").unwrap(), c);
    }

    #[test]
    fn configuration_fields_override_defaults() {
        let c = Config::parse(
            br#"{"tokens_per_second": 5, "deny_status": 429, "deny_headers": {"retry-after": "1"},
                "deny_body": "slow down", "response_headers": {}, "shared": true, "shared_key": "k"}"#,
        )
        .unwrap();
        assert_eq!(c.tokens_per_second, 5);
        assert_eq!(c.deny_status, 429);
        assert_eq!(c.deny_headers.as_refs(), [("retry-after", "1")]);
        assert_eq!(c.deny_body, "slow down");
        assert!(c.response_headers.is_empty());
        assert!(c.shared);
        assert_eq!(c.shared_key.as_deref(), Some("k"));
    }

    #[test]
    fn bad_configuration_is_refused() {
        for bad in [
            r#"{"tokens_per_second": 0}"#,
            r#"{"tokens_per_second": -1}"#,
            r#"{"deny_status": 99}"#,
            r#"{"tokens_per_sec": 3}"#,
            r#"{"response_headers": {"a": 1}}"#,
            r#"{"shared": "yes"}"#,
            r#"{"shared_key": ""}"#,
            "[]",
            "nope",
        ] {
            assert!(Config::parse(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn two_per_second_then_refill_after_a_second() {
        let start = 1_700_000_000 * 1_000 * MS;
        let mut b = Bucket::default();
        assert!(b.take(start, 2));
        assert!(b.take(start + 250 * MS, 2));
        assert!(!b.take(start + 500 * MS, 2));
        assert!(
            !b.take(start + 1_000 * MS, 2),
            "the window is strictly longer than one second"
        );
        assert!(b.take(start + 1_000 * MS + 1, 2));
        assert_eq!(
            b,
            Bucket {
                tokens: 1,
                last_refill_nanos: start + 1_000 * MS + 1
            }
        );
    }

    #[test]
    fn encoding_round_trips_and_tolerates_garbage() {
        let b = Bucket {
            tokens: 7,
            last_refill_nanos: u64::MAX - 3,
        };
        assert_eq!(Bucket::decode(&b.encode()), b);
        assert_eq!(Bucket::decode(b"short"), Bucket::default());
    }
}
