//! [`RuleOperator`]: every rule over each micro-batch, with columnar per-series state.

use super::compile::{CompiledRule, Judgement, RuleKind};
use super::config::RuleConfig;
use super::deviation::new_minute;
use super::lifecycle::{is_open, step, Rearm};
use super::state::{KindColumn, RuleColumns, SeriesState, NO_STATE};
use super::storm::{StormConfig, StormWire, Storms};
use crate::baseline::{BaselineConfig, BaselineKind, Params};
use crate::config::DEFAULT_ALLOWED_LATENESS;
use crate::error::Result;
use crate::series::{CompactKey, FastMap, SeriesRegistry};
use serde::Deserialize;
use sqlvigil_core::{MicroBatch, Operator, Stats};
use sqlvigil_model::{AnomalyEvent, Sample, SeriesKey};
use std::sync::Arc;
use std::time::Duration;

/// One judged point of a micro-batch: its series id (hashed once per batch), time,
/// position in the batch and slot in its metric group.
#[derive(Debug, Clone, Copy)]
struct Point {
    id: u64,
    time: i64,
    index: u32,
    slot: u32,
}

/// The rules reading one metric. They share one registry, so a point's series id is
/// hashed and interned once per micro-batch whatever the number of rules.
#[derive(Debug)]
pub(crate) struct MetricGroup {
    /// Indices of the rules (in rule order).
    rules: Vec<usize>,
    /// Whether some rule takes every series (no attribute filter).
    selects_all: bool,
    pub(crate) registry: SeriesRegistry,
    /// This batch's points, sorted by (series id, time); reused across batches.
    points: Vec<Point>,
}

impl MetricGroup {
    fn selects(&self, rules: &[CompiledRule], key: &SeriesKey) -> bool {
        self.selects_all || self.rules.iter().any(|r| rules[*r].config.selects(key))
    }
}

/// Runs every rule over each micro-batch.
///
/// State is columnar: each metric group interns series ids into dense slots and each
/// rule keeps its per-series state in columns indexed by slot (see
/// [`state`] for the bytes per series).
pub struct RuleOperator {
    rules: Vec<CompiledRule>,
    /// Per rule: its metric group and its state columns.
    pub(crate) group_of: Vec<usize>,
    columns: Vec<RuleColumns>,
    pub(crate) groups: Vec<MetricGroup>,
    /// Metric name → group.
    group_by_metric: FastMap<String, usize>,
    baseline: BaselineConfig,
    params: Params,
    /// Highest event time seen: the clock absence rules measure silence against.
    watermark: i64,
    /// When absence rules (the only ones checked without a point) last looked for
    /// silence: a few times per `absent_for`, not on every micro-batch, so the cost does
    /// not grow with batches × series.
    absence_checked: i64,
    allowed_lateness_ns: i64,
    idle_sweep: i64,
    idle_ns: i64,
    /// The open-rate limit of rules without their own.
    storm: StormConfig,
    storms: Storms,
    stats: Arc<Stats>,
}

impl RuleOperator {
    pub fn new(rules: &[RuleConfig], baseline: BaselineConfig, stats: Arc<Stats>) -> Result<Self> {
        let rules = rules
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>>>()?;
        let mut group_by_metric: FastMap<String, usize> = FastMap::default();
        let mut groups: Vec<MetricGroup> = Vec::new();
        let mut group_of = Vec::with_capacity(rules.len());
        let mut columns = Vec::with_capacity(rules.len());
        for (r, rule) in rules.iter().enumerate() {
            let g = *group_by_metric
                .entry(rule.metric.clone())
                .or_insert_with(|| {
                    groups.push(MetricGroup {
                        rules: Vec::new(),
                        selects_all: false,
                        registry: SeriesRegistry::default(),
                        points: Vec::new(),
                    });
                    groups.len() - 1
                });
            groups[g].rules.push(r);
            groups[g].selects_all |= rule.config.attributes.is_empty();
            group_of.push(g);
            columns.push(RuleColumns::new(match &rule.kind {
                RuleKind::Threshold(_) => KindColumn::Threshold,
                RuleKind::Deviation(d) if d.baseline == BaselineKind::Ewma => {
                    KindColumn::Ewma(Vec::new())
                }
                RuleKind::Deviation(_) => KindColumn::Baseline(Vec::new()),
                RuleKind::Change(_) => KindColumn::History(Vec::new()),
                RuleKind::Absence(_) => KindColumn::Absence(Vec::new()),
            }));
        }
        Ok(RuleOperator {
            rules,
            group_of,
            columns,
            groups,
            group_by_metric,
            params: Params::from_config(&baseline),
            baseline,
            watermark: 0,
            absence_checked: i64::MIN,
            allowed_lateness_ns: DEFAULT_ALLOWED_LATENESS.as_nanos() as i64,
            idle_sweep: 0,
            idle_ns: crate::DEFAULT_IDLE_AFTER.as_nanos() as i64,
            storm: StormConfig::default(),
            storms: Storms::new(stats.clone()),
            stats,
        })
    }

    /// Points older than the watermark by more than this are counted as late, not judged.
    pub fn with_allowed_lateness(mut self, lateness: Duration) -> Self {
        self.allowed_lateness_ns = lateness.as_nanos() as i64;
        self
    }

    /// State of series silent this long (event time) is dropped unless an anomaly is open.
    pub fn with_idle_after(mut self, idle: Duration) -> Self {
        self.idle_ns = idle.as_nanos() as i64;
        self
    }

    /// The open-rate limit per rule and instance of rules without their own.
    pub fn with_storm(mut self, storm: StormConfig) -> Self {
        self.storm = storm;
        self
    }

    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Number of (rule, series) states held.
    pub fn state_count(&self) -> usize {
        self.columns.iter().map(RuleColumns::count).sum()
    }

    /// Series holding a slot, summed over metric groups.
    pub fn series_count(&self) -> usize {
        self.groups.iter().map(|g| g.registry.live_count()).sum()
    }

    /// Buckets the judged points of `samples` by metric group, sorted by (series id,
    /// time), and interns their series.
    fn gather(&mut self, samples: &[Sample], horizon: i64) {
        for g in &mut self.groups {
            g.points.clear();
        }
        // Points of one metric usually come together (OTLP groups them): remember the
        // last lookup instead of hashing every name.
        let mut last: Option<(&str, Option<usize>)> = None;
        for (i, s) in samples.iter().enumerate() {
            if s.time_ns < horizon {
                continue;
            }
            let metric = &*s.key.metric;
            let g = match last {
                Some((m, g)) if m == metric => g,
                _ => {
                    let g = self.group_by_metric.get(metric).copied();
                    last = Some((metric, g));
                    g
                }
            };
            let Some(g) = g else { continue };
            if !self.groups[g].selects(&self.rules, &s.key) {
                continue;
            }
            self.groups[g].points.push(Point {
                id: s.key.id(),
                time: s.time_ns,
                index: i as u32,
                slot: 0,
            });
        }
        for g in &mut self.groups {
            if g.points.is_empty() {
                continue;
            }
            // The batch index breaks ties, so this equals a stable sort by (id, time).
            g.points.sort_unstable_by_key(|p| (p.id, p.time, p.index));
            let mut prev: Option<(u64, u32)> = None;
            for p in g.points.iter_mut() {
                p.slot = match prev {
                    Some((id, slot)) if id == p.id => slot,
                    _ => g.registry.intern(p.id).slot(),
                };
                prev = Some((p.id, p.slot));
            }
            for &r in &g.rules {
                self.columns[r].resize(g.registry.slots());
            }
        }
    }

    /// Absence rules fire on silence, measured against the watermark after each batch.
    /// Drop the state of series silent for the idle period, unless an anomaly is open on
    /// them (absence rules keep theirs: silence is what they watch); a slot no rule holds
    /// state for goes back to its registry for reuse.
    fn expire_idle(&mut self) {
        let idle = self.idle_ns;
        if !crate::expiry_due(self.watermark, &mut self.idle_sweep, idle) {
            return;
        }
        let horizon = self.watermark - idle;
        self.storms.expire(self.watermark, self.storm.per);
        for g in &mut self.groups {
            for slot in 0..g.registry.slots() {
                if !g.registry.is_live(slot as u32) {
                    continue;
                }
                let mut kept = false;
                for &r in &g.rules {
                    let cols = &mut self.columns[r];
                    if !cols.has(slot) {
                        continue;
                    }
                    let keep = cols.is_open(slot)
                        || matches!(self.rules[r].kind, RuleKind::Absence(_))
                        || cols.last_seen[slot] >= horizon;
                    if keep {
                        kept = true;
                    } else {
                        cols.clear(slot);
                    }
                }
                if !kept {
                    g.registry.release(slot as u32);
                }
            }
        }
    }

    fn check_absences(&mut self, events: &mut Vec<AnomalyEvent>) {
        let every = self
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::Absence(a) => Some(a.after.as_nanos() as i64 / 10),
                _ => None,
            })
            .min();
        let Some(every) = every else { return };
        if self.watermark.saturating_sub(self.absence_checked) < every {
            return;
        }
        self.absence_checked = self.watermark;
        for (r, (rule, cols)) in self.rules.iter().zip(self.columns.iter_mut()).enumerate() {
            let RuleKind::Absence(a) = &rule.kind else {
                continue;
            };
            let limit = rule.config.storm.as_ref().unwrap_or(&self.storm);
            for slot in 0..cols.len() {
                let last_seen = cols.last_seen_opt(slot);
                let RuleColumns {
                    kind: KindColumn::Absence(keys),
                    episode,
                    cooldown_until,
                    rearm_level,
                    ..
                } = cols
                else {
                    continue;
                };
                let Some(key) = &keys[slot] else { continue };
                let open = is_open(&episode[slot]);
                if let Some((j, t)) = a.judge_silence(last_seen, open, self.watermark) {
                    let key = key.key();
                    let ep = &mut episode[slot];
                    let rearm = Rearm {
                        until: &mut cooldown_until[slot],
                        level: &mut rearm_level[slot],
                    };
                    if let Some(ev) = step(rule, ep, rearm, &key, t, j.score, j) {
                        self.storms.emit(r, rule, limit, ep, ev, events);
                    }
                }
            }
        }
    }
}

/// Judge `points` (the rule's metric group, sorted by series and time) for rule `rule`.
struct Apply<'a> {
    /// The rule's index, its open-rate limit and the storms it counts against.
    r: usize,
    rule: &'a CompiledRule,
    limit: &'a StormConfig,
    storms: &'a mut Storms,
    cols: &'a mut RuleColumns,
    params: &'a Params,
    baseline: &'a BaselineConfig,
}

impl Apply<'_> {
    fn run(
        self,
        points: &[Point],
        samples: &[Sample],
        events: &mut Vec<AnomalyEvent>,
        bands: &mut Vec<Sample>,
    ) -> Result<()> {
        let rule = self.rule;
        let filtered: Vec<Point>;
        let points = if rule.config.attributes.is_empty() {
            points
        } else {
            filtered = points
                .iter()
                .filter(|p| rule.config.selects(&samples[p.index as usize].key))
                .copied()
                .collect();
            &filtered
        };
        if points.is_empty() {
            return Ok(());
        }
        // Threshold predicates are evaluated by DataFusion over the whole batch at once.
        let precomputed = match &rule.kind {
            RuleKind::Threshold(t) => {
                let values: Vec<f64> = points
                    .iter()
                    .map(|p| samples[p.index as usize].value)
                    .collect();
                Some(t.judge_all(rule, &values)?)
            }
            _ => None,
        };
        let cols = self.cols;
        for (i, p) in points.iter().enumerate() {
            let slot = p.slot as usize;
            let seen = cols.last_seen[slot];
            if seen != NO_STATE && p.time <= seen {
                continue; // a replayed or late point: already judged
            }
            cols.last_seen[slot] = p.time;
            let s = &samples[p.index as usize];
            let open = is_open(&cols.episode[slot]);
            // A deviation rule's first point of a minute also records its band.
            let band = |d: &super::deviation::Deviation, e, bands: &mut Vec<Sample>| {
                if let (Some(e), true) = (e, new_minute(seen, s.time_ns)) {
                    bands.extend(d.band(&rule.config.name, s, e));
                }
            };
            let judgement = match (&rule.kind, &mut cols.kind, &precomputed) {
                (RuleKind::Threshold(_), _, Some(all)) => all[i],
                (RuleKind::Deviation(d), KindColumn::Ewma(c), _) => {
                    let (j, e) = d.judge_ewma(&mut c[slot], self.params, open, s.value);
                    band(d, e, bands);
                    j
                }
                (RuleKind::Deviation(d), KindColumn::Baseline(c), _) => {
                    let (j, e) = d.judge(&mut c[slot], self.baseline, open, s.time_ns, s.value);
                    band(d, e, bands);
                    j
                }
                (RuleKind::Change(ch), KindColumn::History(h), _) => {
                    ch.judge(&mut h[slot], s.time_ns, s.value)
                }
                (RuleKind::Absence(_), KindColumn::Absence(keys), _) => {
                    if keys[slot].is_none() {
                        keys[slot] = Some(CompactKey::new(&s.key));
                    }
                    Judgement {
                        breach: false,
                        expected: None,
                        score: 0.0,
                    }
                }
                _ => continue,
            };
            let ep = &mut cols.episode[slot];
            let rearm = Rearm {
                until: &mut cols.cooldown_until[slot],
                level: &mut cols.rearm_level[slot],
            };
            if let Some(ev) = step(rule, ep, rearm, &s.key, s.time_ns, s.value, judgement) {
                self.storms.emit(self.r, rule, self.limit, ep, ev, events);
            }
        }
        Ok(())
    }
}

impl Operator for RuleOperator {
    fn name(&self) -> &'static str {
        "rules"
    }

    fn process(&mut self, batch: &mut MicroBatch) -> Result<()> {
        // Points older than the watermark (as it stood before this batch) minus the allowed
        // lateness are stored but not judged: counted, so late data is visible rather than
        // silently mis-judged. A batch's own span never makes its points late.
        let horizon = self.watermark.saturating_sub(self.allowed_lateness_ns);
        if let Some(max) = batch.samples.iter().map(|s| s.time_ns).max() {
            self.watermark = self.watermark.max(max);
        }
        let late = batch.samples.iter().filter(|s| s.time_ns < horizon).count();
        Stats::add(&self.stats.late_points, late as u64);
        self.gather(&batch.samples, horizon);
        let mut bands = Vec::new();
        for r in 0..self.rules.len() {
            let points = &self.groups[self.group_of[r]].points;
            if points.is_empty() {
                continue;
            }
            let rule = &self.rules[r];
            Apply {
                r,
                rule,
                limit: rule.config.storm.as_ref().unwrap_or(&self.storm),
                storms: &mut self.storms,
                cols: &mut self.columns[r],
                params: &self.params,
                baseline: &self.baseline,
            }
            .run(points, &batch.samples, &mut batch.events, &mut bands)?;
        }
        // The deviation rules' bands are stored like any series (read by
        // `/api/v1/baselines`); no rule reads them.
        batch.samples.append(&mut bands);
        self.check_absences(&mut batch.events);
        self.storms.flush_updates(&mut batch.events);
        self.expire_idle();
        Ok(())
    }

    /// Silence is measured against event time reached elsewhere too: an instance alone in
    /// its partition that stops reporting still gets its absence anomaly.
    fn advance(&mut self, watermark: i64, out: &mut MicroBatch) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.check_absences(&mut out.events);
        self.storms.flush_updates(&mut out.events);
        self.expire_idle();
        Ok(())
    }

    fn checkpoint(&self) -> Result<serde_json::Value> {
        // Keyed by rule name so a reordered rule file restores correctly; series by id.
        let mut entries: Vec<(&str, u64, SeriesState)> = Vec::new();
        for (r, cols) in self.columns.iter().enumerate() {
            let registry = &self.groups[self.group_of[r]].registry;
            for slot in 0..cols.len() {
                if cols.has(slot) && registry.is_live(slot as u32) {
                    entries.push((
                        self.rules[r].config.name.as_str(),
                        registry.id(slot as u32),
                        cols.to_wire(slot, &self.params),
                    ));
                }
            }
        }
        Ok(serde_json::json!({
            "watermark": self.watermark,
            "states": entries,
            "storms": self.storms.to_wire(&self.rules),
        }))
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        #[derive(Deserialize)]
        struct Saved {
            watermark: i64,
            states: Vec<(String, u64, SeriesState)>,
            #[serde(default)]
            storms: Vec<StormWire>,
        }
        let saved: Saved = serde_json::from_value(state)?;
        self.watermark = saved.watermark;
        self.storms.load(&self.rules, saved.storms);
        for (name, id, s) in saved.states {
            let Some(r) = self.rules.iter().position(|rule| rule.config.name == name) else {
                continue;
            };
            let g = &mut self.groups[self.group_of[r]];
            let slot = g.registry.intern(id).slot() as usize;
            for &other in &g.rules {
                self.columns[other].resize(g.registry.slots());
            }
            self.columns[r].load(slot, s);
        }
        Ok(())
    }
}
