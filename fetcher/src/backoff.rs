//! Exponential backoff with jitter, as cenkalti/backoff (which istio's `pkg/backoff` wraps).

use std::time::Duration;

use rand::Rng;

/// Shape of an exponential backoff. Defaults are Istio's: 500 ms initial, ×1.5, ±50 %, 60 s cap.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First delay before jitter.
    pub initial: Duration,
    /// Upper bound of the un-jittered delay.
    pub max: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
    /// Jitter: the delay is drawn uniformly from `[d·(1−r), d·(1+r)]`.
    pub randomization: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 1.5,
            randomization: 0.5,
        }
    }
}

/// Stateful delay generator. The gateway uses one per failing plugin to retry in the background.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    current: Duration,
}

impl Backoff {
    /// A backoff whose first delay is around `config.initial`.
    pub fn new(config: BackoffConfig) -> Self {
        let current = config.initial;
        Self { config, current }
    }

    /// The next delay to wait; grows the base delay for the following call.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current.as_secs_f64();
        let r = self.config.randomization.clamp(0.0, 1.0);
        let jittered = if r > 0.0 {
            rand::rng().random_range(base * (1.0 - r)..=base * (1.0 + r))
        } else {
            base
        };
        let next = (base * self.config.multiplier.max(1.0)).min(self.config.max.as_secs_f64());
        self.current = Duration::from_secs_f64(next);
        Duration::from_secs_f64(jittered)
    }

    /// Back to the initial delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.config.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_jittered_and_capped() {
        let mut b = Backoff::new(BackoffConfig {
            max: Duration::from_secs(2),
            ..BackoffConfig::default()
        });
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(750));
        for _ in 0..20 {
            assert!(b.next_delay() <= Duration::from_secs(3));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(750));
    }
}
