//! Absence rules: a series that reported before and has been silent for `absent_for`
//! (measured against the watermark — the newest event time the pipeline has seen — not
//! the wall clock, so replays behave the same) opens an anomaly; its next point
//! resolves it.

use super::{rule_err, Judgement, RuleConfig};
use crate::error::Result;
use std::time::Duration;

/// A compiled absence rule.
pub struct Absence {
    pub after: Duration,
}

impl Absence {
    pub fn compile(config: &RuleConfig) -> Result<Absence> {
        let after = config.absent_for.unwrap_or_default();
        if after.is_zero() {
            return Err(rule_err(
                config,
                "field `absent_for` must be greater than 0",
            ));
        }
        Ok(Absence { after })
    }

    /// Silence check after a micro-batch: returns the judgement and its event time when
    /// something changed (silence long enough while closed, or speaking again while open).
    /// `last_seen`: the series' last judged point; `open`: whether its anomaly is open.
    pub fn judge_silence(
        &self,
        last_seen: Option<i64>,
        open: bool,
        watermark: i64,
    ) -> Option<(Judgement, i64)> {
        let last_seen = last_seen?;
        let silent_ns = watermark - last_seen;
        let after = self.after.as_nanos() as i64;
        let expected = Some(self.after.as_secs_f64());
        if !open && silent_ns >= after {
            let score = silent_ns as f64 / 1e9;
            return Some((
                Judgement {
                    breach: true,
                    expected,
                    score,
                },
                watermark,
            ));
        }
        if open && silent_ns < after {
            // Reporting again: calm at the time of its last point.
            return Some((
                Judgement {
                    breach: false,
                    expected,
                    score: 0.0,
                },
                last_seen,
            ));
        }
        None
    }
}
