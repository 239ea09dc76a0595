//! Which Elasticsearch answers are retried, and how long to wait.
//!
//! Per item: 2xx is stored; 409 on `create` means an earlier attempt (or a replay)
//! already stored it — done; 429 and 5xx are retried; any other 4xx (mapping and parse
//! errors) can never succeed and goes to the dead-letter file. Per request: connection
//! failures, 408, 429, 5xx and auth errors (401/403: fixable by an operator without
//! losing data) are retried; 413 splits the batch; other 4xx dead-letter the batch.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    Stored,
    Duplicate,
    Retry,
    DeadLetter,
}

pub fn classify_item(status: u16) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Stored,
        409 => ItemOutcome::Duplicate,
        429 | 500..=599 => ItemOutcome::Retry,
        _ => ItemOutcome::DeadLetter,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Retry,
    /// 413: the body is too large for the cluster; send halves.
    Split,
    DeadLetter,
}

pub fn classify_request(status: u16) -> RequestOutcome {
    match status {
        413 => RequestOutcome::Split,
        401 | 403 | 408 | 429 | 500..=599 => RequestOutcome::Retry,
        _ => RequestOutcome::DeadLetter,
    }
}

/// Exponential backoff with jitter; `Retry-After` wins when it asks for longer.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    pub fn next(&mut self, retry_after_secs: Option<u64>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt.min(16)))
            .min(self.max);
        self.attempt += 1;
        // "Equal jitter": at least half the delay, so retries still back off.
        let jittered = exp.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        match retry_after_secs {
            Some(s) => jittered.max(Duration::from_secs(s)),
            None => jittered,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_bulk_api() {
        assert_eq!(classify_item(201), ItemOutcome::Stored);
        assert_eq!(classify_item(409), ItemOutcome::Duplicate);
        assert_eq!(classify_item(429), ItemOutcome::Retry);
        assert_eq!(classify_item(503), ItemOutcome::Retry);
        assert_eq!(classify_item(400), ItemOutcome::DeadLetter);
        assert_eq!(classify_request(413), RequestOutcome::Split);
        assert_eq!(classify_request(503), RequestOutcome::Retry);
        assert_eq!(classify_request(400), RequestOutcome::DeadLetter);
    }

    #[test]
    fn backoff_grows_to_the_cap_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next(None);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.next(None) <= Duration::from_secs(1));
        }
        assert!(b.next(Some(3)) >= Duration::from_secs(3));
    }
}
