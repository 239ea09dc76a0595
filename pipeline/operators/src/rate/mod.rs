//! Cumulative counters → per-second rates, with counter-reset detection.
//!
//! Differentiated: monotonic cumulative sums, always. The receiver's `…/s` gauges
//! (`sqlserver.batch.request.rate`, …) carry a true rate from Windows perf counters and a
//! running total from a direct connection: [`classify`] decides per series from what it
//! does (or `operators.rates` forces it per metric). Either way the result is one gauge
//! series named `<metric>.per_second`, so rules keep one name whatever the mode; for the
//! `…/s` metrics it carries the label `sqlvigil.rate_source` (`counter`: derived from a
//! running total, `gauge`: passed through) so the decision is visible in every store.
//!
//! A value below the previous one, or a newer `start_time`, means the counter restarted
//! (SQL Server restart, stats cleared): the new value is then the increase since the
//! restart, as Prometheus' `rate()` treats it.

pub mod classify;

use crate::error::Result;
use crate::memo::Memo;
use crate::series::SeriesRegistry;
use classify::{Class, Decided, RateMode};
use serde::{Deserialize, Serialize};
use sqlvigil_core::Stats;
use sqlvigil_core::{MicroBatch, Operator};
use sqlvigil_model::catalogue::{self, ReceiverMode};
use sqlvigil_model::{MetricKind, Sample, SeriesKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The label naming what a `…/s` series' `.per_second` was derived from.
pub const RATE_SOURCE_ATTR: &str = "sqlvigil.rate_source";

/// A counter's previous point.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Last {
    time_ns: i64,
    start_ns: i64,
    value: f64,
    /// What a `…/s` gauge was found to carry (unused for cumulative sums).
    #[serde(default)]
    class: Class,
}

/// How the operator treats a sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum Treat {
    /// A monotonic cumulative sum: differentiated.
    Cumulative,
    /// A `…/s` gauge whose meaning depends on the receiver's mode.
    PerSecond(RateMode),
    #[default]
    Ignore,
}

/// `Last::time_ns` of a free slot.
const FREE: i64 = i64::MIN;

impl Last {
    const EMPTY: Last = Last {
        time_ns: FREE,
        start_ns: 0,
        value: 0.0,
        class: Class::Undecided,
    };
}

/// Differentiates counters. State: one `Last` (32 B) per counter series in a column
/// indexed by the series' slot in a [`SeriesRegistry`] (28–48 B per series), i.e.
/// about 60–80 B per counter series; slots of idle series are reused.
pub struct RateOperator {
    registry: SeriesRegistry,
    last: Vec<Last>,
    stats: Arc<Stats>,
    watermark: i64,
    last_sweep: i64,
    idle_ns: i64,
    /// Per-metric overrides of the `…/s` classification (`operators.rates`).
    modes: Arc<BTreeMap<String, RateMode>>,
    /// Instance → its receiver's mode, given away by a metric only one mode sends
    /// (`sqlserver.page.split.rate`: Windows, `sqlserver.database.io`: direct).
    instance_mode: HashMap<Arc<str>, ReceiverMode>,
    /// Instance → the class its `…/s` series were last decided by their own points;
    /// used when the instance's mode is not known.
    instance_class: HashMap<Arc<str>, Class>,
    /// Metric name → the receiver mode it gives away.
    mode_evidence: Memo<Option<ReceiverMode>>,
    /// Metric name → how its gauges are treated.
    gauge_treat: Memo<Treat>,
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
            modes: Arc::default(),
            instance_mode: HashMap::new(),
            instance_class: HashMap::new(),
            mode_evidence: Memo::default(),
            gauge_treat: Memo::default(),
            rate_name: Memo::default(),
            rate_unit: Memo::default(),
        }
    }

    /// Counter state of series silent this long (event time) is dropped.
    pub fn with_idle_after(mut self, idle: std::time::Duration) -> Self {
        self.idle_ns = idle.as_nanos() as i64;
        self
    }

    /// `operators.rates`: per-metric overrides of the `…/s` classification.
    pub fn with_modes(mut self, modes: BTreeMap<String, RateMode>) -> Self {
        self.modes = Arc::new(modes);
        self
    }

    /// Counter series with state.
    pub fn series_count(&self) -> usize {
        self.registry.live_count()
    }

    fn treat(&mut self, s: &Sample) -> Treat {
        match s.kind {
            MetricKind::CumulativeSum if s.monotonic => Treat::Cumulative,
            MetricKind::Gauge => {
                let modes = &self.modes;
                self.gauge_treat.get(&s.key.metric, |m| match modes.get(m) {
                    Some(mode) => Treat::PerSecond(*mode),
                    None if catalogue::is_per_second_by_mode(m) => Treat::PerSecond(RateMode::Auto),
                    None => Treat::Ignore,
                })
            }
            _ => Treat::Ignore,
        }
    }

    /// The series' state slot, and whether it was free (a new series).
    fn slot(&mut self, id: u64) -> (usize, bool) {
        let slot = self.registry.intern(id).slot() as usize;
        if slot >= self.last.len() {
            self.last.resize(slot + 1, Last::EMPTY);
        }
        (slot, self.last[slot].time_ns == FREE)
    }

    /// A monotonic cumulative sum's rate.
    fn cumulative(&mut self, s: &Sample) -> Option<Sample> {
        let (slot, new) = self.slot(s.key.id());
        let now = Last {
            time_ns: s.time_ns,
            start_ns: s.start_time_ns,
            value: s.value,
            class: Class::Counter,
        };
        let prev = std::mem::replace(&mut self.last[slot], now);
        if new {
            return None;
        }
        if s.time_ns <= prev.time_ns {
            self.last[slot] = prev;
            Stats::add(&self.stats.late_points, 1);
            return None;
        }
        self.derive(s, &prev, None)
    }

    /// A `…/s` gauge: classified (unless forced), then differentiated or passed through.
    fn per_second(&mut self, s: &Sample, mode: RateMode) -> Option<Sample> {
        let (slot, new) = self.slot(s.key.id());
        let prev = (!new).then_some(self.last[slot]);
        if prev.is_some_and(|p| s.time_ns <= p.time_ns) {
            Stats::add(&self.stats.late_points, 1);
            return None;
        }
        let class = match mode {
            RateMode::Counter => Class::Counter,
            RateMode::Gauge => Class::Gauge,
            RateMode::Auto => self.classify(s, prev),
        };
        self.last[slot] = Last {
            time_ns: s.time_ns,
            start_ns: s.start_time_ns,
            value: s.value,
            class,
        };
        match (class, prev) {
            (Class::Gauge, _) => Some(self.passed_through(s)),
            (c, Some(p)) if c.is_counter() => self.derive(s, &p, Some(c)),
            _ => None,
        }
    }

    /// The class of `s` given the series' previous point; constant series follow
    /// their instance.
    fn classify(&mut self, s: &Sample, prev: Option<Last>) -> Class {
        let before = prev.map_or(Class::Undecided, |p| p.class);
        let (class, how) = before.observe(prev.map(|p| p.value), s.value);
        if how == Decided::ByEvidence {
            self.instance_class.insert(s.key.instance.clone(), class);
        }
        if class != Class::Undecided {
            return class;
        }
        match self.instance_mode.get(&s.key.instance) {
            Some(ReceiverMode::Windows) => Class::Gauge,
            Some(ReceiverMode::Direct) => Class::Counter,
            None => self
                .instance_class
                .get(&s.key.instance)
                .copied()
                .unwrap_or(Class::Undecided),
        }
    }

    /// Learn instances' receiver modes from the metrics in the batch (before the
    /// points are classified, so the first scrape already benefits).
    fn learn_modes(&mut self, samples: &[Sample]) {
        // Points of one instance come together: look each (instance, mode) up once.
        let mut last: Option<(&Arc<str>, ReceiverMode)> = None;
        for s in samples {
            let evidence = self
                .mode_evidence
                .get(&s.key.metric, catalogue::mode_evidence);
            let Some(mode) = evidence else { continue };
            if last.is_some_and(|(i, m)| m == mode && **i == *s.key.instance) {
                continue;
            }
            last = Some((&s.key.instance, mode));
            if self.instance_mode.get(&s.key.instance) != Some(&mode) {
                self.instance_mode.insert(s.key.instance.clone(), mode);
            }
        }
    }

    /// The `.per_second` key of `s`, labelled with its class for `…/s` metrics.
    fn rate_key(&mut self, s: &Sample, class: Option<Class>) -> SeriesKey {
        let metric = self
            .rate_name
            .get(&s.key.metric, |m| catalogue::rate_name(m).into());
        let mut attributes = s.key.attributes.clone();
        if let Some(class) = class {
            attributes.insert(RATE_SOURCE_ATTR.into(), class.label().into());
        }
        // Built field by field: `SeriesKey::renamed` would clone the old name too.
        SeriesKey::from_parts(
            s.key.instance.clone(),
            s.key.host.clone(),
            s.key.database.clone(),
            metric,
            attributes,
        )
    }

    /// A true per-second gauge, copied under the `.per_second` name.
    fn passed_through(&mut self, s: &Sample) -> Sample {
        let key = self.rate_key(s, Some(Class::Gauge));
        Sample {
            unit: s.unit.clone(),
            ..Sample::gauge(key, s.time_ns, s.value, "")
        }
    }

    /// The rate between `prev` and `s`, handling a counter restart.
    fn derive(&mut self, s: &Sample, prev: &Last, class: Option<Class>) -> Option<Sample> {
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
        let key = self.rate_key(s, class);
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
        self.learn_modes(&batch.samples);
        for s in &batch.samples {
            let out = match self.treat(s) {
                Treat::Cumulative => self.cumulative(s),
                Treat::PerSecond(mode) => self.per_second(s, mode),
                Treat::Ignore => None,
            };
            derived.extend(out);
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

    fn batch_rate(instance: &str, t: i64, v: f64) -> Sample {
        Sample::gauge(
            SeriesKey::new(instance, "h", "", "sqlserver.batch.request.rate"),
            t * 1_000_000_000,
            v,
            "{requests}/s",
        )
    }

    fn derived(op: &mut RateOperator, samples: Vec<Sample>) -> Vec<(String, f64, String)> {
        let mut batch = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut batch).unwrap();
        batch
            .samples
            .iter()
            .filter(|s| s.key.metric.ends_with(".per_second"))
            .map(|s| {
                let source = s.key.attributes.get(RATE_SOURCE_ATTR).cloned();
                (
                    s.key.instance.to_string(),
                    s.value,
                    source.unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn windows_rates_pass_through_and_direct_totals_are_differentiated() {
        let mut op = RateOperator::new(Arc::new(Stats::default()));
        let out = derived(
            &mut op,
            vec![
                batch_rate("win", 0, 1.25),
                batch_rate("direct", 0, 1_000.0),
                batch_rate("win", 10, 1.0),
                batch_rate("direct", 10, 1_010.0),
            ],
        );
        let want = |i: &str, v: f64, c: &str| (i.to_string(), v, c.to_string());
        assert_eq!(
            out,
            vec![
                want("win", 1.25, "gauge"),
                want("win", 1.0, "gauge"),
                want("direct", 1.0, "counter")
            ]
        );
        // A constant series follows its instance's other `…/s` series.
        let steady = |t: i64| Sample {
            key: SeriesKey::new("win", "h", "", "sqlserver.login.rate"),
            ..batch_rate("win", t, 3.0)
        };
        let out = derived(&mut op, vec![steady(20)]);
        assert_eq!(out, vec![want("win", 3.0, "gauge")]);
        // The receiver's Windows golden: every rate a steady integer; the Windows-only
        // `sqlserver.page.split.rate` in the same scrape gives the mode away.
        let mut op = RateOperator::new(Arc::new(Stats::default()));
        let split = |t: i64| Sample {
            key: SeriesKey::new("golden", "h", "", "sqlserver.page.split.rate"),
            ..batch_rate("golden", t, 4.0)
        };
        let out = derived(&mut op, vec![batch_rate("golden", 0, 1.0), split(0)]);
        assert_eq!(
            out,
            vec![want("golden", 1.0, "gauge"), want("golden", 4.0, "gauge")]
        );
    }

    #[test]
    fn the_class_is_kept_across_a_checkpoint_and_can_be_forced() {
        let stats = Arc::new(Stats::default());
        let mut a = RateOperator::new(stats.clone());
        derived(
            &mut a,
            vec![batch_rate("d", 0, 10.0), batch_rate("d", 10, 20.0)],
        );
        let mut b = RateOperator::new(stats.clone());
        b.restore(a.checkpoint().unwrap()).unwrap();
        // A constant next point: still a counter (rate 0), not undecided.
        let out = derived(&mut b, vec![batch_rate("d", 20, 20.0)]);
        assert_eq!(out, vec![("d".to_string(), 0.0, "counter".to_string())]);

        let modes = BTreeMap::from([("sqlserver.batch.request.rate".to_string(), RateMode::Gauge)]);
        let mut forced = RateOperator::new(stats).with_modes(modes);
        let out = derived(
            &mut forced,
            vec![batch_rate("d", 0, 10.0), batch_rate("d", 10, 20.0)],
        );
        assert_eq!(out.len(), 2, "passed through from the first point: {out:?}");
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
