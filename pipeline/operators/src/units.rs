//! Unit-aware values: each point of a catalogue metric is brought to the catalogue's
//! unit by the unit the point says it has, never by assumption.
//!
//! Receiver versions differ (`sqlserver.cpu.utilization` was proposed as a `1` fraction
//! and merged as `%` 0–100), SDKs send `ms` where the receiver sends `s`, and the
//! receiver's own metadata writes some units in typographic quotes (`“KB”`). Convertible
//! pairs are converted (`1` ↔ `%`, `ns`/`us`/`ms`/`s`/`min`/`h`, `By`/`KB`/`KiB`/`MB`/
//! `MiB`/`GB`/`GiB`; SQL Server's KB, which the receiver calls `KB` or `kBy`, is 1024
//! bytes); `{annotations}` are ignored when
//! comparing. A unit that contradicts the catalogue is stored as sent, counted
//! (`sqlvigil_unit_mismatches`) and logged once per series.

use crate::error::Result;
use crate::memo::Memo;
use sqlvigil_core::{MicroBatch, Operator, Stats};
use sqlvigil_model::{catalogue, Sample};
use std::collections::HashSet;
use std::sync::Arc;

/// Series already warned about (bounded, so a flood of bad series cannot grow it).
const MAX_WARNED: usize = 10_000;

/// The unit without typographic quotes and `{annotations}` (`“{requests}/s”` → `/s`).
pub fn canonical(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '“' | '”' | '"' => {}
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// Scale of a unit within its dimension: (dimension, factor to the base unit).
fn scale(unit: &str) -> Option<(&'static str, f64)> {
    Some(match unit {
        "1" => ("ratio", 1.0),
        "%" => ("ratio", 0.01),
        "ns" => ("time", 1e-9),
        "us" | "µs" => ("time", 1e-6),
        "ms" => ("time", 1e-3),
        "s" => ("time", 1.0),
        "min" => ("time", 60.0),
        "h" => ("time", 3600.0),
        "By" => ("bytes", 1.0),
        // SQL Server's KB (the receiver's `KB` and `kBy`) is 1024 bytes.
        "KB" | "kBy" | "KiBy" | "KiB" | "kB" => ("bytes", 1024.0),
        "MB" | "MiBy" | "MiB" => ("bytes", 1024.0 * 1024.0),
        "GB" | "GiBy" | "GiB" => ("bytes", 1024.0 * 1024.0 * 1024.0),
        _ => return None,
    })
}

/// The factor turning a value in `from` into `to`, when they are comparable.
pub fn factor(from: &str, to: &str) -> Option<f64> {
    let (from, to) = (canonical(from), canonical(to));
    if from == to {
        return Some(1.0);
    }
    // A count (`{connections}`, nothing left once annotations go) is comparable only
    // with another count, never with a ratio or a time.
    if from.is_empty() || to.is_empty() {
        return None;
    }
    // Rates: compare what is counted per second.
    if let (Some(f), Some(t)) = (from.strip_suffix("/s"), to.strip_suffix("/s")) {
        return factor(f, t);
    }
    let (fd, fs) = scale(&from)?;
    let (td, ts) = scale(&to)?;
    (fd == td).then_some(fs / ts)
}

/// Brings catalogue metrics to their catalogue unit.
pub struct UnitOperator {
    stats: Arc<Stats>,
    warned: HashSet<u64>,
    /// Metric name → its catalogue unit (None: not a catalogue metric), shared by
    /// the points it is set on.
    unit: Memo<Option<Arc<str>>>,
}

impl UnitOperator {
    pub fn new(stats: Arc<Stats>) -> Self {
        UnitOperator {
            stats,
            warned: HashSet::new(),
            unit: Memo::default(),
        }
    }

    fn normalize(&mut self, s: &mut Sample) {
        let wanted = self.unit.get(&s.key.metric, |m| {
            catalogue::metric(m).map(|d| Arc::from(catalogue::unit_of(d)))
        });
        let Some(unit) = wanted else {
            return;
        };
        if *s.unit == *unit {
            return;
        }
        match factor(&s.unit, &unit) {
            Some(f) => {
                if f != 1.0 {
                    s.value *= f;
                    Stats::add(&self.stats.units_converted, 1);
                }
                s.unit = unit.clone();
            }
            None if s.unit.is_empty() => s.unit = unit.clone(),
            None => {
                Stats::add(&self.stats.unit_mismatches, 1);
                let id = s.key.id();
                if self.warned.len() < MAX_WARNED && self.warned.insert(id) {
                    tracing::warn!(
                        instance = %s.key.instance,
                        metric = %s.key.metric,
                        "unit `{}` contradicts the receiver's `{}`: stored as sent, not converted",
                        s.unit,
                        unit
                    );
                }
            }
        }
    }
}

impl Operator for UnitOperator {
    fn name(&self) -> &'static str {
        "units"
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        for s in &mut batch.samples {
            self.normalize(s);
        }
        Ok(())
    }

    /// Stateless (the warned-about set only dedups log lines).
    fn checkpoint(&self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    fn restore(&mut self, _state: serde_json::Value) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::SeriesKey;

    #[test]
    fn factors_follow_the_units() {
        assert_eq!(factor("1", "%"), Some(100.0));
        assert_eq!(factor("%", "1"), Some(0.01));
        assert_eq!(factor("ms", "s"), Some(0.001));
        assert_eq!(factor("By", "“KB”"), Some(1.0 / 1024.0));
        assert_eq!(factor("{requests}/s", "{request}/s"), Some(1.0));
        assert_eq!(factor("ms", "By"), None);
        assert_eq!(factor("%", "{connections}"), None, "a count is not a ratio");
        assert_eq!(factor("{connection}", "{connections}"), Some(1.0));
        assert_eq!(canonical("“{tables}”"), "");
    }

    #[test]
    fn a_fraction_becomes_a_percentage_and_a_contradiction_is_kept() {
        let stats = Arc::new(Stats::default());
        let mut op = UnitOperator::new(stats.clone());
        let cpu = SeriesKey::new("i", "h", "", "sqlserver.cpu.utilization");
        let ple = SeriesKey::new("i", "h", "", "sqlserver.page.life_expectancy");
        let mut batch = MicroBatch {
            samples: vec![
                Sample::gauge(cpu.clone(), 1, 0.25, "1"),
                Sample::gauge(cpu, 2, 42.0, "%"),
                Sample::gauge(ple.clone(), 1, 300.0, "By"),
                Sample::gauge(ple, 2, 300.0, "By"),
            ],
            events: vec![],
        };
        op.process(&mut batch).unwrap();
        let v: Vec<(f64, &str)> = batch.samples.iter().map(|s| (s.value, &*s.unit)).collect();
        assert_eq!(v[0], (25.0, "%"));
        assert_eq!(v[1], (42.0, "%"));
        assert_eq!(v[2], (300.0, "By"), "stored as sent");
        assert_eq!(Stats::get(&stats.unit_mismatches), 2);
        assert_eq!(op.warned.len(), 1, "logged once per series");
    }
}
