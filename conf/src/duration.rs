//! Gateway API durations (GEP-2257): `1h`, `10s`, `500ms`, `1h2m3s`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::{MAX_DURATION_DIGITS, MAX_DURATION_PARTS};

/// A Gateway API `Duration`: 1 to 4 parts of 1 to 5 digits followed by `h`, `m`, `s` or `ms`
/// (`^([0-9]{1,5}(h|m|s|ms)){1,4}$`). `0s` means "no timeout" where the spec says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDuration {
    duration: Duration,
    text: String,
}

// === impl GatewayDuration ===

impl GatewayDuration {
    /// Parses the GEP-2257 format. The error says what is wrong, for a validation message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid duration {text:?}: expected 1 to {MAX_DURATION_PARTS} parts of up to {MAX_DURATION_DIGITS} digits \
                 followed by h, m, s or ms (e.g. \"10s\", \"500ms\", \"1h30m\")"
            )
        };
        let mut rest = text;
        let mut total = Duration::ZERO;
        let mut parts = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > MAX_DURATION_DIGITS {
                return Err(invalid());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let (unit, len) = if rest.starts_with("ms") {
                (Duration::from_millis(1), 2)
            } else if rest.starts_with('h') {
                (Duration::from_secs(3600), 1)
            } else if rest.starts_with('m') {
                (Duration::from_secs(60), 1)
            } else if rest.starts_with('s') {
                (Duration::from_secs(1), 1)
            } else {
                return Err(invalid());
            };
            rest = &rest[len..];
            // At most 99999h per part and 4 parts: cannot overflow u32 multiplication of Duration.
            total += unit * n as u32;
            parts += 1;
            if parts > MAX_DURATION_PARTS {
                return Err(invalid());
            }
        }
        if parts == 0 {
            return Err(invalid());
        }
        Ok(Self {
            duration: total,
            text: text.to_owned(),
        })
    }

    /// The duration as written (`0s` is zero).
    pub fn as_duration(&self) -> Duration {
        self.duration
    }

    /// The duration as a timeout: `None` for `0s`, which the Gateway API defines as "no timeout".
    pub fn as_timeout(&self) -> Option<Duration> {
        (!self.duration.is_zero()).then_some(self.duration)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for GatewayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for GatewayDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        GatewayDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gep_2257_durations() {
        let d = |s: &str| GatewayDuration::parse(s).unwrap().as_duration();
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1h2m"), Duration::from_secs(3720));
        assert_eq!(d("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(GatewayDuration::parse("0s").unwrap().as_timeout(), None);
        assert_eq!(
            GatewayDuration::parse("2m").unwrap().as_timeout(),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn rejects_other_formats() {
        for bad in [
            "",
            "10",
            "1.5s",
            "10us",
            "100000s",
            "1h1h1h1h1h",
            "-1s",
            " 1s",
            "1s ",
            "1d",
        ] {
            assert!(
                GatewayDuration::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
