//! What a `…/s` gauge of the `sqlserver` receiver really carries, decided from what it
//! does rather than from configuration.
//!
//! The Windows perf-counter scraper sends true per-second rates; the direct-connection
//! scraper (the only one on Linux and in containers) sends SQL Server's raw cumulative
//! `cntr_value` under the same names (upstream issue #50772). A running total is an
//! integer that never goes down except at a restart; a rate is usually fractional and
//! goes both ways. So each series starts [`Class::Undecided`] and is decided by its own
//! points:
//!
//! - a fractional or negative value, or a decrease while undecided → [`Class::Gauge`]
//!   (a running total is neither);
//! - an integer increase → [`Class::Counter`];
//! - a constant value decides nothing; such a series follows its instance's receiver
//!   mode (given away by the Windows-only or direct-only metrics it sends: Windows →
//!   gauge, direct → counter), else the decision of its other `…/s` series (one
//!   receiver runs in one mode), else waits.
//!
//! A decision is kept (and checkpointed). A counter that goes down is a counter reset
//! (SQL Server restarted) and is re-checked: a second decrease within
//! [`RECHECK_POINTS`] points means the series fluctuates, i.e. it is a gauge after all
//! (a receiver upgraded to the fixed scraper would do exactly that).

use serde::{Deserialize, Serialize};

/// Points after a counter reset within which another decrease makes the series a gauge.
pub const RECHECK_POINTS: u8 = 3;

/// What a mode-dependent `…/s` series has been found to carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Not enough evidence yet: nothing is derived.
    #[default]
    Undecided,
    /// A running total: differentiated into a per-second rate.
    Counter,
    /// A counter that went down (a reset): still differentiated, re-checked for
    /// this many more points.
    Recheck(u8),
    /// A true per-second rate: passed through.
    Gauge,
}

/// How a class was reached: by the series' own points (which also tells the
/// instance what mode its receiver runs in) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    ByEvidence,
    Unchanged,
}

impl Class {
    /// Whether points of this class are differentiated.
    pub fn is_counter(self) -> bool {
        matches!(self, Class::Counter | Class::Recheck(_))
    }

    /// The class after a point `value` that follows `prev` (None for the first point).
    pub fn observe(self, prev: Option<f64>, value: f64) -> (Class, Decided) {
        if value.fract() != 0.0 || value < 0.0 {
            let how = if self == Class::Gauge {
                Decided::Unchanged
            } else {
                Decided::ByEvidence
            };
            return (Class::Gauge, how);
        }
        let (went_down, went_up) = match prev {
            Some(p) => (value < p, value > p),
            None => (false, false),
        };
        match self {
            Class::Gauge => (Class::Gauge, Decided::Unchanged),
            Class::Undecided if went_down => (Class::Gauge, Decided::ByEvidence),
            Class::Undecided if went_up => (Class::Counter, Decided::ByEvidence),
            Class::Undecided => (Class::Undecided, Decided::Unchanged),
            Class::Counter if went_down => (Class::Recheck(RECHECK_POINTS), Decided::Unchanged),
            Class::Counter => (Class::Counter, Decided::Unchanged),
            Class::Recheck(_) if went_down => (Class::Gauge, Decided::ByEvidence),
            Class::Recheck(n) if n <= 1 => (Class::Counter, Decided::Unchanged),
            Class::Recheck(n) => (Class::Recheck(n - 1), Decided::Unchanged),
        }
    }

    /// The `sqlvigil.rate_source` label of the series derived from this class.
    pub fn label(self) -> &'static str {
        if self.is_counter() {
            "counter"
        } else {
            "gauge"
        }
    }
}

/// How a `…/s` metric is read: `auto` (decided per series, the default) or forced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateMode {
    #[default]
    Auto,
    /// Always a running total (differentiate).
    Counter,
    /// Always a per-second rate (pass through).
    Gauge,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[f64]) -> Class {
        let mut class = Class::Undecided;
        let mut prev = None;
        for v in values {
            class = class.observe(prev, *v).0;
            prev = Some(*v);
        }
        class
    }

    #[test]
    fn running_totals_are_counters_and_rates_are_gauges() {
        assert_eq!(run(&[120_345.0, 120_910.0]), Class::Counter);
        assert_eq!(
            run(&[1.0, 1.0, 1.0]),
            Class::Undecided,
            "constant: no evidence"
        );
        assert_eq!(run(&[13.25]), Class::Gauge, "fractional");
        assert_eq!(
            run(&[40.0, 12.0]),
            Class::Gauge,
            "went down while undecided"
        );
        assert_eq!(run(&[0.0, 0.0, 3.5]), Class::Gauge);
    }

    #[test]
    fn a_reset_is_rechecked() {
        // A restart: down once, then up again → still a counter.
        assert_eq!(run(&[500.0, 900.0, 10.0, 40.0, 90.0, 95.0]), Class::Counter);
        // Down twice within the recheck: it fluctuates, a gauge after all.
        assert_eq!(run(&[500.0, 900.0, 10.0, 40.0, 20.0]), Class::Gauge);
        // A counter never turns fractional.
        assert_eq!(run(&[500.0, 900.0, 901.5]), Class::Gauge);
    }
}
