//! Cumulative counters → per-second rates, with counter-reset detection.
//!
//! Differentiated: monotonic cumulative sums, and the gauges the catalogue marks as raw
//! counters (the `sqlserver` receiver's direct-connection `*.rate` metrics, which carry
//! SQL Server's running `cntr_value`). Each yields a gauge series named
//! `<metric>.per_second`. A value below the previous one, or a newer `start_time`,
//! means the counter restarted (SQL Server restart, stats cleared): the new value is
//! then the increase since the restart, as Prometheus' `rate()` treats it.

use crate::error::Result;
use crate::series::SeriesRegistry;
use serde::{Deserialize, Serialize};
use sqlvigil_core::Stats;
use sqlvigil_core::{MicroBatch, Operator};
use sqlvigil_model::{catalogue, MetricKind, Sample, SeriesKey};
use std::collections::HashMap;
use std::sync::Arc;

/// A counter's previous point.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Last {
    time_ns: i64,
    start_ns: i64,
    value: f64,
}

/// `Last::time_ns` of a free slot.
const FREE: i64 = i64::MIN;

impl Last {
    const EMPTY: Last = Last {
        time_ns: FREE,
        start_ns: 0,
        value: 0.0,
    };
}

/// A one-entry memo of a per-metric-name computation: points of one metric come
/// together (OTLP groups them), so this avoids re-deriving names and units per point.
#[derive(Debug, Default)]
struct Memo<T> {
    input: String,
    output: Option<T>,
}

impl<T: Clone> Memo<T> {
    fn get(&mut self, input: &str, f: impl FnOnce(&str) -> T) -> T {
        match &self.output {
            Some(out) if self.input == input => out.clone(),
            _ => {
                let out = f(input);
                self.input.clear();
                self.input.push_str(input);
                self.output = Some(out.clone());
                out
            }
        }
    }
}

/// Differentiates counters. State: one `Last` (24 B) per counter series in a column
/// indexed by the series' slot in a [`SeriesRegistry`] (28–48 B per series), i.e.
/// about 52–72 B per counter series; slots of idle series are reused.
pub struct RateOperator {
    registry: SeriesRegistry,
    last: Vec<Last>,
    stats: Arc<Stats>,
    watermark: i64,
    last_sweep: i64,
    idle_ns: i64,
    /// Metric name → whether it is a raw-counter gauge (catalogue lookup).
    raw_counter: Memo<bool>,
    /// Metric name → its rate series' name.
    rate_name: Memo<Arc<str>>,
    /// Unit → the rate's unit.
    rate_unit: Memo<Arc<str>>,
}

impl RateOperator {
    pub fn new(stats: Arc<Stats>) -> Self {
        RateOperator {
            registry: SeriesRegistry::default(),
            last: Vec::new(),
            stats,
            watermark: 0,
            last_sweep: 0,
            idle_ns: crate::DEFAULT_IDLE_AFTER.as_nanos() as i64,
            raw_counter: Memo::default(),
            rate_name: Memo::default(),
            rate_unit: Memo::default(),
        }
    }

    /// Counter state of series silent this long (event time) is dropped.
    pub fn with_idle_after(mut self, idle: std::time::Duration) -> Self {
        self.idle_ns = idle.as_nanos() as i64;
        self
    }

    /// Counter series with state.
    pub fn series_count(&self) -> usize {
        self.registry.live_count()
    }

    fn is_counter(&mut self, s: &Sample) -> bool {
        match s.kind {
            MetricKind::CumulativeSum => s.monotonic,
            MetricKind::Gauge => self.raw_counter.get(&s.key.metric, |m| {
                catalogue::metric(m).is_some_and(|m| m.raw_counter)
            }),
            _ => false,
        }
    }

    /// The counter's previous point, recording `now` as the new one; None for a new series.
    fn swap_last(&mut self, id: u64, now: Last) -> Option<&mut Last> {
        let slot = self.registry.intern(id).slot() as usize;
        if slot >= self.last.len() {
            self.last.resize(slot + 1, Last::EMPTY);
        }
        let last = &mut self.last[slot];
        if last.time_ns == FREE {
            *last = now;
            return None;
        }
        Some(last)
    }

    fn rate(&mut self, s: &Sample) -> Option<Sample> {
        let now = Last {
            time_ns: s.time_ns,
            start_ns: s.start_time_ns,
            value: s.value,
        };
        let last = self.swap_last(s.key.id(), now)?;
        let prev = *last;
        if s.time_ns <= prev.time_ns {
            Stats::add(&self.stats.late_points, 1);
            return None;
        }
        *last = now;
        let restarted =
            s.value < prev.value || (s.start_time_ns != 0 && s.start_time_ns > prev.start_ns);
        let (delta, from_ns) = if restarted {
            Stats::add(&self.stats.counter_resets, 1);
            // Since the restart: from start_time when known and within the interval.
            let from = if s.start_time_ns > prev.time_ns {
                s.start_time_ns
            } else {
                prev.time_ns
            };
            (s.value, from)
        } else {
            (s.value - prev.value, prev.time_ns)
        };
        let secs = (s.time_ns - from_ns) as f64 / 1e9;
        if secs <= 0.0 {
            return None;
        }
        let unit = self.rate_unit.get(&s.unit, |u| {
            if u.ends_with("/s") {
                u.into()
            } else {
                format!("{u}/s").into()
            }
        });
        let metric = self
            .rate_name
            .get(&s.key.metric, |m| catalogue::rate_name(m).into());
        // Built field by field: `SeriesKey::renamed` would clone the old name too.
        let key = SeriesKey::from_parts(
            s.key.instance.clone(),
            s.key.host.clone(),
            s.key.database.clone(),
            metric,
            s.key.attributes.clone(),
        );
        Some(Sample {
            unit,
            ..Sample::gauge(key, s.time_ns, delta / secs, "")
        })
    }

    /// Frees the slots of counters silent since before `horizon`.
    fn expire(&mut self, horizon: i64) {
        for (slot, last) in self.last.iter_mut().enumerate() {
            if last.time_ns != FREE && last.time_ns < horizon {
                *last = Last::EMPTY;
                self.registry.release(slot as u32);
            }
        }
    }
}

const LATENCY_RATE: &str = "sqlserver.database.latency.per_second";
const OPERATIONS_RATE: &str = "sqlserver.database.operations.per_second";

/// Stall seconds per operation for each file whose latency and operation rates were
/// both derived at the same time (their ratio: the deltas share one interval).
fn latency_per_operation(rates: &[Sample]) -> Vec<Sample> {
    let ops: HashMap<(u64, i64), f64> = rates
        .iter()
        .filter(|s| &*s.key.metric == OPERATIONS_RATE)
        .map(|s| ((s.key.renamed("").id(), s.time_ns), s.value))
        .collect();
    rates
        .iter()
        .filter(|s| &*s.key.metric == LATENCY_RATE)
        .filter_map(|s| {
            let per_second = ops
                .get(&(s.key.renamed("").id(), s.time_ns))
                .filter(|o| **o > 0.0)?;
            let key = s.key.renamed(catalogue::LATENCY_PER_OPERATION);
            Some(Sample::gauge(key, s.time_ns, s.value / per_second, "s"))
        })
        .collect()
}

impl Operator for RateOperator {
    fn name(&self) -> &'static str {
        "rate"
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        let mut derived: Vec<Sample> = Vec::new();
        for s in &batch.samples {
            if self.is_counter(s) {
                derived.extend(self.rate(s));
            }
        }
        derived.extend(latency_per_operation(&derived));
        Stats::add(&self.stats.derived_points, derived.len() as u64);
        if let Some(max) = batch.samples.iter().map(|s| s.time_ns).max() {
            self.watermark = self.watermark.max(max);
        }
        let idle = self.idle_ns;
        if crate::expiry_due(self.watermark, &mut self.last_sweep, idle) {
            self.expire(self.watermark - idle);
        }
        batch.samples.extend(derived);
        Ok(())
    }

    fn checkpoint(&self) -> Result<serde_json::Value> {
        // A JSON object: series id (decimal string) → its previous point.
        let map: HashMap<String, Last> = self
            .registry
            .live_slots()
            .filter_map(|slot| {
                let last = self.last.get(slot as usize)?;
                (last.time_ns != FREE).then(|| (self.registry.id(slot).to_string(), *last))
            })
            .collect();
        Ok(serde_json::to_value(map)?)
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        let map: HashMap<String, Last> = serde_json::from_value(state)?;
        for (id, last) in map {
            let Ok(id) = id.parse::<u64>() else { continue };
            if last.time_ns == FREE {
                continue;
            }
            let slot = self.registry.intern(id).slot() as usize;
            if slot >= self.last.len() {
                self.last.resize(slot + 1, Last::EMPTY);
            }
            self.last[slot] = last;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlvigil_model::SeriesKey;

    fn counter(t_s: i64, v: f64, start_s: i64) -> Sample {
        Sample {
            time_ns: t_s * 1_000_000_000,
            start_time_ns: start_s * 1_000_000_000,
            key: SeriesKey::new("i", "h", "", "sqlserver.os.wait.duration")
                .with_attr("wait.type", "LCK_M_X"),
            value: v,
            kind: MetricKind::CumulativeSum,
            monotonic: true,
            unit: "s".into(),
            histogram: None,
        }
    }

    fn run(samples: Vec<Sample>) -> Vec<f64> {
        let mut op = RateOperator::new(Arc::new(Stats::default()));
        let mut batch = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut batch).unwrap();
        batch
            .samples
            .iter()
            .filter(|s| s.key.metric.ends_with(".per_second"))
            .map(|s| s.value)
            .collect()
    }

    #[test]
    fn differentiates_and_survives_a_reset() {
        // 10 → 30 over 10 s = 2/s; reset to 5 at t=30 with start 25 → 5 over 5 s = 1/s.
        let rates = run(vec![
            counter(0, 10.0, 0),
            counter(10, 30.0, 0),
            counter(20, 40.0, 0),
            counter(30, 5.0, 25),
        ]);
        assert_eq!(rates, vec![2.0, 1.0, 1.0]);
    }

    #[test]
    fn raw_counter_gauges_are_differentiated_and_late_points_skipped() {
        let g = |t: i64, v: f64| {
            Sample::gauge(
                SeriesKey::new("i", "h", "", "sqlserver.batch.request.rate"),
                t * 1_000_000_000,
                v,
                "{requests}/s",
            )
        };
        let rates = run(vec![g(0, 100.0), g(10, 600.0), g(5, 50.0), g(20, 1600.0)]);
        assert_eq!(rates, vec![50.0, 100.0]);
    }

    #[test]
    fn derives_latency_per_operation_per_file() {
        let file = |metric: &str, t: i64, v: f64| Sample {
            key: SeriesKey::new("i", "h", "sales", metric).with_attr("direction", "read"),
            ..counter(t, v, 0)
        };
        let samples = vec![
            file("sqlserver.database.latency", 0, 10.0),
            file("sqlserver.database.operations", 0, 1000.0),
            file("sqlserver.database.latency", 10, 12.0),
            file("sqlserver.database.operations", 10, 1100.0),
        ];
        let mut op = RateOperator::new(Arc::new(Stats::default()));
        let mut batch = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut batch).unwrap();
        let per_op: Vec<f64> = batch
            .samples
            .iter()
            .filter(|s| &*s.key.metric == catalogue::LATENCY_PER_OPERATION)
            .map(|s| s.value)
            .collect();
        assert_eq!(per_op, vec![0.02], "2 s of stall over 100 operations");
    }

    #[test]
    fn idle_series_state_is_dropped() {
        let mut op = RateOperator::new(Arc::new(Stats::default()));
        op.process(&mut MicroBatch {
            samples: vec![counter(0, 1.0, 0)],
            events: vec![],
        })
        .unwrap();
        assert_eq!(op.series_count(), 1);
        let other = |t: i64| Sample {
            key: SeriesKey::new("j", "h", "", "sqlserver.os.wait.duration"),
            ..counter(t, 1.0, 0)
        };
        op.process(&mut MicroBatch {
            samples: vec![other(7200)],
            events: vec![],
        })
        .unwrap();
        assert_eq!(
            op.series_count(),
            1,
            "the series silent for 2 h is gone, the new one kept"
        );
    }

    #[test]
    fn state_survives_checkpoint_and_restore() {
        let stats = Arc::new(Stats::default());
        let mut a = RateOperator::new(stats.clone());
        a.process(&mut MicroBatch {
            samples: vec![counter(0, 10.0, 0)],
            events: vec![],
        })
        .unwrap();
        let mut b = RateOperator::new(stats);
        b.restore(a.checkpoint().unwrap()).unwrap();
        let mut batch = MicroBatch {
            samples: vec![counter(10, 20.0, 0)],
            events: vec![],
        };
        b.process(&mut batch).unwrap();
        assert_eq!(batch.samples.last().unwrap().value, 1.0);
    }
}
