//! Event-time windows (tumbling and sliding) over chosen metrics, closed by the watermark.
//!
//! Each `operators.windows` entry turns every matching series into aggregate series named
//! `<metric>.<stat>_<name>` (e.g. `sqlserver.cpu.utilization.p95_5m`), one point per
//! window, stamped with the window's end. A window `[end - size, end)` is emitted once
//! the watermark (the newest event time this partition has seen) minus `lateness` has
//! passed its end; windows start on multiples of `slide` since the epoch, so every
//! process cuts the same windows. A point that arrives after every window containing it
//! was emitted is counted (`sqlvigil_window_late_points`) and not used: a result once
//! published never changes.
//!
//! Points are kept in panes of `slide` length (a sliding window is the union of
//! `size / slide` panes), as raw values, because percentiles need them: memory per
//! series is about 8 bytes per point within `size + lateness`, plus ~100 bytes. The
//! aggregates are exact (`p95` interpolates between the closest ranks like
//! `percentile_cont`). Window outputs flow on through the chain, so rules can watch them
//! (`metric: sqlserver.cpu.utilization.p95_5m`, `when: "value > 85"`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sqlvigil_core::Stats;
use sqlvigil_core::{MicroBatch, Operator};
use sqlvigil_model::{MetricKind, Sample, SeriesKey};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// One aggregate a window emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Count,
    Avg,
    Min,
    Max,
    P50,
    P95,
    P99,
}

impl Stat {
    fn name(self) -> &'static str {
        match self {
            Stat::Count => "count",
            Stat::Avg => "avg",
            Stat::Min => "min",
            Stat::Max => "max",
            Stat::P50 => "p50",
            Stat::P95 => "p95",
            Stat::P99 => "p99",
        }
    }

    /// The aggregate of `sorted` (ascending, not empty).
    fn of(self, sorted: &[f64]) -> f64 {
        let n = sorted.len();
        match self {
            Stat::Count => n as f64,
            Stat::Avg => sorted.iter().sum::<f64>() / n as f64,
            Stat::Min => sorted[0],
            Stat::Max => sorted[n - 1],
            Stat::P50 => percentile(sorted, 0.50),
            Stat::P95 => percentile(sorted, 0.95),
            Stat::P99 => percentile(sorted, 0.99),
        }
    }
}

/// Linear interpolation between closest ranks (SQL's `percentile_cont`).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// `operators.windows[]`: which series to aggregate, over which windows, into what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Suffix of the output series (`<metric>.<stat>_<name>`): letters, digits, `_`.
    pub name: String,
    /// Window length.
    #[serde(with = "sqlvigil_model::duration")]
    pub size: Duration,
    /// How far consecutive windows start apart; absent (or equal to `size`): tumbling.
    /// Must divide `size`.
    #[serde(
        default,
        with = "sqlvigil_model::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub slide: Option<Duration>,
    /// How long after its end a window waits for stragglers before it is emitted.
    #[serde(default = "default_lateness", with = "sqlvigil_model::duration")]
    pub lateness: Duration,
    /// Metric names to aggregate (derived ones such as `*.per_second` too).
    pub metrics: Vec<String>,
    /// Aggregates to emit for each window.
    #[serde(default = "default_stats")]
    pub stats: Vec<Stat>,
}

fn default_lateness() -> Duration {
    Duration::from_secs(30)
}

fn default_stats() -> Vec<Stat> {
    vec![Stat::Avg, Stat::Max, Stat::P95]
}

/// Most panes one window may span (bounds the work and memory per series).
const MAX_PANES: u128 = 1440;

impl WindowConfig {
    fn slide(&self) -> Duration {
        self.slide.unwrap_or(self.size)
    }

    /// Errors name the window and the field.
    pub fn validate(&self) -> Result<()> {
        let err = |field: &str, msg: String| {
            Error::Config(format!(
                "operators.windows `{}`: field `{field}` {msg}",
                self.name
            ))
        };
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(err(
                "name",
                "must be letters, digits or `_`, e.g. `5m`".into(),
            ));
        }
        let (size, slide) = (self.size.as_nanos(), self.slide().as_nanos());
        if size == 0 || slide == 0 {
            return Err(err("size", "and `slide` must be longer than zero".into()));
        }
        if slide > size || size % slide != 0 {
            return Err(err(
                "slide",
                format!("must divide `size` ({:?})", self.size),
            ));
        }
        if size / slide > MAX_PANES {
            return Err(err(
                "slide",
                format!("gives more than {MAX_PANES} panes per window"),
            ));
        }
        if self.metrics.iter().all(|m| m.trim().is_empty()) {
            return Err(err("metrics", "must name at least one metric".into()));
        }
        if self.stats.is_empty() {
            return Err(err(
                "stats",
                "must list at least one of count, avg, min, max, p50, p95, p99".into(),
            ));
        }
        Ok(())
    }
}

/// One series' open panes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Panes {
    key: SeriesKey,
    unit: Arc<str>,
    /// (pane start, values), oldest first.
    panes: VecDeque<(i64, Vec<f64>)>,
    /// Windows ending at or before this were emitted.
    emitted_until: i64,
}

/// Whether `metric` names a window output (`<metric>.<stat>_<name>`), which replays
/// leave out like other derived series.
pub fn is_window_output(metric: &str) -> bool {
    let Some((_, last)) = metric.rsplit_once('.') else {
        return false;
    };
    let Some((stat, name)) = last.split_once('_') else {
        return false;
    };
    let stats = ["count", "avg", "min", "max", "p50", "p95", "p99"];
    stats.contains(&stat)
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One configured window over every series it selects.
struct Window {
    config: WindowConfig,
    size: i64,
    slide: i64,
    lateness: i64,
    series: HashMap<u64, Panes>,
}

impl Window {
    fn new(config: WindowConfig) -> Self {
        Window {
            size: config.size.as_nanos() as i64,
            slide: config.slide().as_nanos() as i64,
            lateness: config.lateness.as_nanos() as i64,
            config,
            series: HashMap::new(),
        }
    }

    fn selects(&self, s: &Sample) -> bool {
        matches!(s.kind, MetricKind::Gauge | MetricKind::CumulativeSum)
            && self.config.metrics.iter().any(|m| **m == *s.key.metric)
    }

    /// Keep `s` in its pane unless every window containing it is already out (or was
    /// already closed by the watermark before this batch). Returns whether it was kept.
    fn add(&mut self, s: &Sample, horizon_before: i64) -> bool {
        let pane = s.time_ns.div_euclid(self.slide) * self.slide;
        let last_end = pane + self.size;
        let slot = self.series.entry(s.key.id()).or_insert_with(|| Panes {
            key: s.key.clone(),
            unit: s.unit.clone(),
            panes: VecDeque::new(),
            emitted_until: i64::MIN,
        });
        if last_end <= horizon_before || last_end <= slot.emitted_until {
            return false;
        }
        match slot.panes.iter().position(|(start, _)| *start >= pane) {
            Some(i) if slot.panes[i].0 == pane => slot.panes[i].1.push(s.value),
            Some(i) => slot.panes.insert(i, (pane, vec![s.value])),
            None => slot.panes.push_back((pane, vec![s.value])),
        }
        true
    }

    /// Emit every window of every series that ends at or before `horizon`, and drop the
    /// panes no later window needs.
    fn close(&mut self, horizon: i64, out: &mut Vec<Sample>) {
        let (size, slide) = (self.size, self.slide);
        let (name, stats) = (&self.config.name, &self.config.stats);
        let mut values = Vec::new();
        self.series.retain(|_, p| {
            let Some(first) = p.panes.front().map(|(start, _)| *start) else {
                return false;
            };
            // Ends of the windows holding data, not yet emitted, closed by the horizon.
            let mut end = (first + slide).max(p.emitted_until.saturating_add(slide));
            let last = horizon.div_euclid(slide) * slide;
            while end <= last {
                values.clear();
                let inside = p.panes.iter().filter(|(s, _)| *s >= end - size && *s < end);
                for (_, v) in inside {
                    values.extend_from_slice(v);
                }
                if !values.is_empty() {
                    values.sort_by(f64::total_cmp);
                    for stat in stats {
                        let metric = format!("{}.{}_{name}", p.key.metric, stat.name());
                        let unit = if *stat == Stat::Count { "1" } else { &p.unit };
                        out.push(Sample::gauge(
                            p.key.renamed(&metric),
                            end,
                            stat.of(&values),
                            unit,
                        ));
                    }
                }
                p.emitted_until = end;
                end += slide;
            }
            // A pane is needed while some window ending after the horizon contains it.
            p.panes.retain(|(start, _)| start + size > p.emitted_until);
            !p.panes.is_empty()
        });
    }
}

/// Every configured window, fed by each micro-batch.
pub struct WindowOperator {
    windows: Vec<Window>,
    watermark: i64,
    stats: Arc<Stats>,
}

impl WindowOperator {
    pub fn new(configs: &[WindowConfig], stats: Arc<Stats>) -> Result<Self> {
        for c in configs {
            c.validate()?;
        }
        Ok(WindowOperator {
            windows: configs.iter().cloned().map(Window::new).collect(),
            watermark: i64::MIN,
            stats,
        })
    }
}

impl Operator for WindowOperator {
    fn name(&self) -> &'static str {
        "windows"
    }

    fn advance(&mut self, watermark: i64, out: &mut MicroBatch) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        let mut closed = Vec::new();
        for w in &mut self.windows {
            w.close(watermark.saturating_sub(w.lateness), &mut closed);
        }
        Stats::add(&self.stats.window_points, closed.len() as u64);
        out.samples.extend(closed);
        Ok(())
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        if self.windows.is_empty() {
            return Ok(());
        }
        let before = self.watermark;
        if let Some(max) = batch.samples.iter().map(|s| s.time_ns).max() {
            self.watermark = self.watermark.max(max);
        }
        let mut out = Vec::new();
        let mut late = 0;
        for w in &mut self.windows {
            let horizon_before = before.saturating_sub(w.lateness);
            for s in &batch.samples {
                if w.selects(s) {
                    late += u64::from(!w.add(s, horizon_before));
                }
            }
            w.close(self.watermark.saturating_sub(w.lateness), &mut out);
        }
        Stats::add(&self.stats.window_late_points, late);
        Stats::add(&self.stats.window_points, out.len() as u64);
        batch.samples.extend(out);
        Ok(())
    }

    fn checkpoint(&self) -> Result<serde_json::Value> {
        let windows: HashMap<&str, Vec<&Panes>> = self
            .windows
            .iter()
            .map(|w| (w.config.name.as_str(), w.series.values().collect()))
            .collect();
        Ok(serde_json::json!({ "watermark": self.watermark, "windows": windows }))
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        #[derive(Deserialize)]
        struct Saved {
            watermark: i64,
            windows: HashMap<String, Vec<Panes>>,
        }
        let mut saved: Saved = serde_json::from_value(state)?;
        self.watermark = self.watermark.max(saved.watermark);
        for w in &mut self.windows {
            for p in saved.windows.remove(&w.config.name).unwrap_or_default() {
                w.series.insert(p.key.id(), p);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn config(size: u64, slide: Option<u64>, stats: Vec<Stat>) -> WindowConfig {
        WindowConfig {
            name: "w".into(),
            size: Duration::from_secs(size),
            slide: slide.map(Duration::from_secs),
            lateness: Duration::from_secs(0),
            metrics: vec!["sqlserver.cpu.utilization".into()],
            stats,
        }
    }

    fn cpu(instance: &str, t_s: i64, v: f64) -> Sample {
        let key = SeriesKey::new(instance, "h", "", "sqlserver.cpu.utilization");
        Sample::gauge(key, t_s * S, v, "%")
    }

    fn run(op: &mut WindowOperator, samples: Vec<Sample>) -> Vec<(String, String, i64, f64)> {
        let n = samples.len();
        let mut mb = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut mb).unwrap();
        let mut out: Vec<_> = mb.samples[n..]
            .iter()
            .map(|s| {
                (
                    s.key.instance.to_string(),
                    s.key.metric.to_string(),
                    s.time_ns / S,
                    s.value,
                )
            })
            .collect();
        out.sort_by(|a, b| a.partial_cmp(b).unwrap());
        out
    }

    fn op(c: WindowConfig) -> WindowOperator {
        WindowOperator::new(&[c], Arc::new(Stats::default())).unwrap()
    }

    #[test]
    fn tumbling_windows_close_on_the_watermark_with_exact_aggregates() {
        let mut op = op(config(60, None, vec![Stat::Count, Stat::Avg, Stat::P95]));
        let first: Vec<Sample> = (0..6)
            .map(|i| cpu("a", i * 10, (i + 1) as f64 * 10.0))
            .collect();
        assert!(
            run(&mut op, first).is_empty(),
            "the window [0, 60) is still open"
        );
        let got = run(&mut op, vec![cpu("a", 60, 5.0)]);
        let m = "sqlserver.cpu.utilization";
        assert_eq!(
            got,
            vec![
                ("a".into(), format!("{m}.avg_w"), 60, 35.0),
                ("a".into(), format!("{m}.count_w"), 60, 6.0),
                // 10..60: rank 0.95 * 5 = 4.75 → 50 + 0.75 * 10.
                ("a".into(), format!("{m}.p95_w"), 60, 57.5),
            ]
        );
    }

    #[test]
    fn sliding_windows_share_panes() {
        let mut op = op(config(120, Some(60), vec![Stat::Max]));
        let m = "sqlserver.cpu.utilization.max_w".to_string();
        // The watermark (70) closes the window ending at 60: [−60, 60).
        let got = run(&mut op, vec![cpu("a", 0, 1.0), cpu("a", 70, 2.0)]);
        assert_eq!(got, vec![("a".into(), m.clone(), 60, 1.0)]);
        // 185 closes [0, 120) and [60, 180); the pane at 0 is then dropped.
        let got = run(&mut op, vec![cpu("a", 185, 3.0)]);
        assert_eq!(
            got,
            vec![("a".into(), m.clone(), 120, 2.0), ("a".into(), m, 180, 2.0)]
        );
        let panes = &op.windows[0].series.values().next().unwrap().panes;
        assert_eq!(panes.iter().map(|p| p.0 / S).collect::<Vec<_>>(), vec![180]);
    }

    #[test]
    fn points_behind_an_emitted_window_are_counted_late_not_used() {
        let stats = Arc::new(Stats::default());
        let mut op =
            WindowOperator::new(&[config(60, None, vec![Stat::Count])], stats.clone()).unwrap();
        run(&mut op, vec![cpu("a", 10, 1.0), cpu("a", 70, 1.0)]);
        // [0, 60) is out; a straggler for it is late, one for [60, 120) is not.
        let got = run(
            &mut op,
            vec![cpu("a", 20, 1.0), cpu("a", 80, 1.0), cpu("a", 130, 1.0)],
        );
        assert_eq!(Stats::get(&stats.window_late_points), 1);
        let m = "sqlserver.cpu.utilization.count_w".to_string();
        assert_eq!(got, vec![("a".into(), m, 120, 2.0)]);
    }

    #[test]
    fn lateness_holds_a_window_open_for_stragglers() {
        let mut c = config(60, None, vec![Stat::Count]);
        c.lateness = Duration::from_secs(30);
        let mut op = op(c);
        assert!(run(&mut op, vec![cpu("a", 10, 1.0), cpu("b", 70, 1.0)]).is_empty());
        // b's clock is ahead; a's straggler at 50 still counts.
        assert!(run(&mut op, vec![cpu("a", 50, 1.0)]).is_empty());
        let got = run(&mut op, vec![cpu("b", 95, 1.0)]);
        let m = "sqlserver.cpu.utilization.count_w".to_string();
        assert_eq!(got, vec![("a".into(), m, 60, 2.0)]);
    }

    #[test]
    fn open_windows_survive_a_checkpoint() {
        let mut a = op(config(60, None, vec![Stat::Count]));
        run(&mut a, vec![cpu("a", 10, 1.0), cpu("a", 20, 1.0)]);
        let mut b = op(config(60, None, vec![Stat::Count]));
        b.restore(a.checkpoint().unwrap()).unwrap();
        let got = run(&mut b, vec![cpu("a", 30, 1.0), cpu("a", 60, 1.0)]);
        let m = "sqlserver.cpu.utilization.count_w".to_string();
        assert_eq!(got, vec![("a".into(), m, 60, 3.0)]);
    }

    #[test]
    fn event_time_from_elsewhere_closes_windows() {
        let mut op = op(config(60, None, vec![Stat::Count]));
        run(&mut op, vec![cpu("a", 10, 1.0)]);
        let mut out = MicroBatch::default();
        op.advance(30 * S, &mut out).unwrap();
        assert!(out.samples.is_empty());
        op.advance(61 * S, &mut out).unwrap();
        assert_eq!(out.samples.len(), 1);
        assert_eq!(
            (out.samples[0].time_ns, out.samples[0].value),
            (60 * S, 1.0)
        );
    }

    #[test]
    fn window_outputs_are_recognised_by_name() {
        assert!(is_window_output("sqlserver.cpu.utilization.p95_5m"));
        assert!(is_window_output(
            "sqlserver.os.wait.duration.per_second.avg_1h_x"
        ));
        assert!(!is_window_output("sqlserver.cpu.utilization"));
        assert!(!is_window_output(
            "sqlserver.database.latency.per_operation"
        ));
        assert!(!is_window_output("sqlserver.page.life_expectancy"));
    }

    #[test]
    fn bad_windows_are_refused_naming_the_field() {
        let bad = |c: WindowConfig| {
            WindowOperator::new(&[c], Arc::new(Stats::default()))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(bad(config(60, Some(25), vec![Stat::Avg])).contains("`slide` must divide `size`"));
        assert!(bad(config(60, None, vec![])).contains("field `stats`"));
        let mut c = config(60, None, vec![Stat::Avg]);
        c.name = "5 m".into();
        assert!(bad(c).contains("field `name`"));
    }
}
