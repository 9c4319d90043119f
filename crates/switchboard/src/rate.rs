//! Token buckets, the one rate limiter every limit uses (connects per address, events per
//! socket, API requests per key): `rate` tokens a second up to `burst`, one taken per action.

use std::time::Instant;

/// A bucket's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// A bucket's state: how many tokens it had when last refilled.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    tokens: f64,
    refilled: Instant,
}

impl Tokens {
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            refilled: now,
        }
    }

    /// Refills for the time since, then takes a token if there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Seconds until a token is there again.
    pub fn wait_secs(&self, rate: Rate) -> f64 {
        ((1.0 - self.tokens).max(0.0) / rate.per_second.max(f64::MIN_POSITIVE)).max(0.0)
    }

    /// Whether it has been full again for a while (an idle entry that can be dropped).
    pub fn is_full_by(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let rate = Rate {
            per_second: 10.0,
            burst: 2.0,
        };
        let start = Instant::now();
        let mut tokens = Tokens::full(rate, start);
        assert!(tokens.take(rate, start));
        assert!(tokens.take(rate, start));
        assert!(!tokens.take(rate, start));
        assert!((tokens.wait_secs(rate) - 0.1).abs() < 0.01);
        assert!(tokens.take(rate, start + Duration::from_millis(110)));
        assert!(tokens.is_full_by(rate, start + Duration::from_secs(1)));
    }
}
