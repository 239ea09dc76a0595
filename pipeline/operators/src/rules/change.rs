//! Rate-of-change rules: the value compared with the series' value `over` ago; a relative
//! change past `change` (`-60%`: a drop to 40 % or less; `+200%`: three times or more)
//! breaches. History older than `over` is dropped, so memory per series is bounded by
//! `over` / scrape interval points.

use super::{rule_err, Judgement, RuleConfig};
use crate::error::Result;
use std::collections::VecDeque;
use std::time::Duration;

const DEFAULT_OVER: Duration = Duration::from_secs(300);

/// A compiled rate-of-change rule.
pub struct Change {
    /// Relative change that breaches: -0.6 for `-60%`.
    pub ratio: f64,
    pub over: Duration,
}

impl Change {
    pub fn compile(config: &RuleConfig) -> Result<Change> {
        let text = config.change.as_deref().unwrap_or_default().trim();
        let ratio = text
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite() && *r != 0.0 && *r > -100.0)
            .map(|r| r / 100.0)
            .ok_or_else(|| {
                rule_err(
                    config,
                    format!(
                        "field `change` must be a percentage such as -60% or +200%, got `{text}`"
                    ),
                )
            })?;
        let over = config.over.unwrap_or(DEFAULT_OVER);
        if over.is_zero() {
            return Err(rule_err(config, "field `over` must be greater than 0"));
        }
        Ok(Change { ratio, over })
    }

    pub fn describe(&self) -> String {
        format!("{:+}%", self.ratio * 100.0)
    }

    /// Compare with the oldest value still within `over` of this point.
    pub fn judge(&self, history: &mut VecDeque<(i64, f64)>, t: i64, v: f64) -> Judgement {
        let span = self.over.as_nanos() as i64;
        while history.front().is_some_and(|(t0, _)| t - t0 > span) {
            history.pop_front();
        }
        // Judge only with a full span of history: its oldest point near `over` ago.
        let base = history
            .front()
            .filter(|(t0, _)| t - t0 >= span * 9 / 10)
            .map(|(_, v0)| *v0);
        history.push_back((t, v));
        let Some(base) = base.filter(|b| *b != 0.0) else {
            return Judgement {
                breach: false,
                expected: base,
                score: 0.0,
            };
        };
        let change = (v - base) / base.abs();
        let breach = if self.ratio < 0.0 {
            change <= self.ratio
        } else {
            change >= self.ratio
        };
        Judgement {
            breach,
            expected: Some(base),
            score: (change / self.ratio).max(0.0),
        }
    }
}
