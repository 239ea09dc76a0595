//! Anomaly rules from YAML and the anomaly lifecycle.
//!
//! Four kinds of rule, each in its own file, chosen by the fields a rule sets:
//!
//! ```yaml
//! - name: cpu_storm                  # threshold for a duration (threshold.rs)
//!   when: "cpu_percent > 85"         #   DataFusion SQL over one metric
//!   for: 5m
//! - name: wait_time_spike            # baseline deviation (deviation.rs)
//!   metric: wait_seconds_per_sec
//!   baseline: seasonal_hour_of_week  #   ewma | median_mad | seasonal_hour_of_week
//!   deviation: 4.0                   #   robust z-score ≥ 4
//! - name: batch_request_drop         # rate of change (change.rs)
//!   metric: batch_requests_per_sec
//!   change: -60%                     #   relative to the value `over` ago
//!   over: 5m
//! - name: cpu_series_absent          # absence (absence.rs)
//!   metric: cpu_percent
//!   absent_for: 5m
//! ```
//!
//! Every kind judges each point (breach or not, expected value, score); the lifecycle
//! here turns judgements into events: a breach held for `for` opens an anomaly (once the
//! fingerprint's cooldown has passed), a worse score updates it, and `resolve_after` of
//! calm resolves it (hysteresis). Rules are validated at load; errors name the rule and
//! the field.

pub mod absence;
pub mod change;
pub mod deviation;
pub mod state;
pub mod threshold;

use super::baseline::{BaselineConfig, BaselineKind, Params};
use super::series::{CompactKey, FastMap, SeriesRegistry};
use super::{MicroBatch, Operator};
use crate::config::{duration_str, opt_duration_str};
use crate::error::{PipelineError, Result};
use crate::stats::Stats;
use serde::{Deserialize, Serialize};
use sqlvigil_model::{
    catalogue, ns_to_datetime, Anomaly, AnomalyEvent, AnomalyEventKind, AnomalyState,
    EvidencePoint, Sample, SeriesKey, Severity,
};
pub use state::SeriesState;
use state::{Episode, KindColumn, RuleColumns, NO_STATE};
use std::sync::Arc;
use std::time::Duration;

/// Evidence points kept per open or breaching series.
pub(crate) const EVIDENCE_POINTS: usize = 30;
const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(60);
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(300);
/// How far behind the watermark a point may arrive and still be judged.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(300);

/// Which side of the baseline counts for deviation rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Above,
    Below,
    Both,
}

/// A rule as written in YAML. Exactly one of `when`, `deviation`, `change`,
/// `absent_for` says which kind it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique rule name; part of the anomaly fingerprint.
    pub name: String,
    /// Threshold rules: condition over one metric, e.g. `cpu_percent > 85`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The metric (alias or receiver name) for the other kinds, or what `value` means in `when`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// How long the condition must hold before the anomaly opens (default 0).
    #[serde(rename = "for", default, with = "duration_str")]
    pub for_: Duration,
    /// How long the condition must be false before the anomaly resolves (default 1m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub resolve_after: Option<Duration>,
    /// After a resolve, the same rule and series cannot reopen for this long (default 5m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Deviation rules: which baseline (default `ewma`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineKind>,
    /// Deviation rules: robust z-score that counts as a breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<f64>,
    /// Deviation rules: above (default), below or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Rate-of-change rules: relative change such as `-60%` or `+200%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// Rate-of-change rules: compared with the value this long ago (default 5m).
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub over: Option<Duration>,
    /// Absence rules: a series silent this long (in event time) is an anomaly.
    #[serde(
        default,
        with = "opt_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub absent_for: Option<Duration>,
    /// Only series whose point attributes have these values, e.g. `{tempdb.state: free}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

fn default_severity() -> Severity {
    Severity::Warning
}

impl RuleConfig {
    /// A threshold rule (tests and defaults).
    pub fn threshold(name: &str, when: &str, for_: Duration) -> Self {
        RuleConfig {
            name: name.into(),
            when: Some(when.into()),
            metric: None,
            for_,
            resolve_after: None,
            cooldown: None,
            severity: Severity::Warning,
            baseline: None,
            deviation: None,
            direction: None,
            change: None,
            over: None,
            absent_for: None,
            attributes: Default::default(),
        }
    }

    /// Whether the rule watches this series.
    pub fn selects(&self, key: &SeriesKey) -> bool {
        self.attributes
            .iter()
            .all(|(k, v)| key.attributes.get(k) == Some(v))
    }
}

pub(crate) fn rule_err(rule: &RuleConfig, message: impl Into<String>) -> PipelineError {
    PipelineError::Rule {
        rule: rule.name.clone(),
        message: message.into(),
    }
}

/// What a rule thinks of one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub breach: bool,
    /// What the rule expected (threshold, baseline, earlier value).
    pub expected: Option<f64>,
    /// How bad: larger is worse; compared to keep the peak while open.
    pub score: f64,
}

/// The kind-specific part of a rule.
pub enum RuleKind {
    Threshold(threshold::Threshold),
    Deviation(deviation::Deviation),
    Change(change::Change),
    Absence(absence::Absence),
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    pub config: RuleConfig,
    /// Series metric name the rule reads.
    pub metric: String,
    pub kind: RuleKind,
}

/// An alias or receiver metric name → the series name.
fn resolve_metric(config: &RuleConfig) -> Result<String> {
    let m = config
        .metric
        .as_deref()
        .ok_or_else(|| rule_err(config, "field `metric` is required for this kind of rule"))?;
    if m.trim().is_empty() {
        return Err(rule_err(config, "field `metric` must not be empty"));
    }
    Ok(catalogue::resolve_alias(m).unwrap_or(m).to_string())
}

impl CompiledRule {
    /// Parse and plan the rule; errors name the rule and the field.
    pub fn compile(config: &RuleConfig) -> Result<CompiledRule> {
        if config.name.trim().is_empty() {
            return Err(rule_err(config, "field `name` must not be empty"));
        }
        let kinds = [
            config.when.is_some(),
            config.deviation.is_some(),
            config.change.is_some(),
            config.absent_for.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(rule_err(
                config,
                "give exactly one of the fields `when`, `deviation`, `change`, `absent_for`",
            ));
        }
        let (metric, kind) = if let Some(when) = &config.when {
            let (metric, t) = threshold::Threshold::compile(config, when)?;
            (metric, RuleKind::Threshold(t))
        } else if config.deviation.is_some() {
            (
                resolve_metric(config)?,
                RuleKind::Deviation(deviation::Deviation::compile(config)?),
            )
        } else if config.change.is_some() {
            (
                resolve_metric(config)?,
                RuleKind::Change(change::Change::compile(config)?),
            )
        } else {
            (
                resolve_metric(config)?,
                RuleKind::Absence(absence::Absence::compile(config)?),
            )
        };
        Ok(CompiledRule {
            config: config.clone(),
            metric,
            kind,
        })
    }

    fn condition(&self) -> String {
        let c = &self.config;
        let for_ = if c.for_.is_zero() {
            String::new()
        } else {
            format!(" for {}", humantime::format_duration(c.for_))
        };
        match &self.kind {
            RuleKind::Threshold(_) => format!("{}{for_}", c.when.as_deref().unwrap_or_default()),
            RuleKind::Deviation(d) => format!(
                "{} deviates from its {} baseline by z ≥ {}{for_}",
                self.metric,
                d.baseline_name(),
                d.k
            ),
            RuleKind::Change(ch) => format!(
                "{} changes by {} over {}{for_}",
                self.metric,
                ch.describe(),
                humantime::format_duration(ch.over)
            ),
            RuleKind::Absence(a) => format!(
                "{} silent for {}",
                self.metric,
                humantime::format_duration(a.after)
            ),
        }
    }
}

/// Whether an episode is open (an anomaly on the series).
fn is_open(ep: &Option<Box<Episode>>) -> bool {
    ep.as_ref().is_some_and(|e| e.open.is_some())
}

/// The lifecycle: advance one series by one judged point; returns the event it caused.
/// The episode is allocated when a breach starts and dropped when nothing is left in it.
fn step(
    rule: &CompiledRule,
    ep: &mut Option<Box<Episode>>,
    cooldown_until: &mut i64,
    key: &SeriesKey,
    t: i64,
    v: f64,
    j: Judgement,
) -> Option<AnomalyEvent> {
    if !j.breach {
        // Calm with no episode: nothing to clear, nothing open (the common case).
        let e = ep.as_mut()?;
        let event = calm(rule, e, cooldown_until, t);
        if e.is_empty() {
            *ep = None;
        }
        return event;
    }
    let e = ep.get_or_insert_with(Box::default);
    breach(rule, e, *cooldown_until, key, t, v, j)
}

/// A calm point: the breach (if any) ends; an open anomaly resolves after `resolve_after`.
fn calm(
    rule: &CompiledRule,
    st: &mut Episode,
    cooldown_until: &mut i64,
    t: i64,
) -> Option<AnomalyEvent> {
    st.breach_since = None;
    st.peak = None;
    st.evidence.clear();
    let open = st.open.as_ref()?;
    let since = *st.clear_since.get_or_insert(t);
    let resolve_after = rule
        .config
        .resolve_after
        .unwrap_or(DEFAULT_RESOLVE_AFTER)
        .as_nanos() as i64;
    if t - since < resolve_after {
        return None;
    }
    let time = ns_to_datetime(t);
    let mut anomaly = open.clone();
    st.open = None;
    st.clear_since = None;
    *cooldown_until = t + rule.config.cooldown.unwrap_or(DEFAULT_COOLDOWN).as_nanos() as i64;
    anomaly.state = AnomalyState::Resolved;
    anomaly.updated_at = time;
    anomaly.resolved_at = Some(time);
    Some(AnomalyEvent {
        event: AnomalyEventKind::Resolve,
        anomaly,
    })
}

/// A breaching point: held for `for` (and past the cooldown) it opens an anomaly; a
/// worse score updates the open one.
fn breach(
    rule: &CompiledRule,
    st: &mut Episode,
    cooldown_until: i64,
    key: &SeriesKey,
    t: i64,
    v: f64,
    j: Judgement,
) -> Option<AnomalyEvent> {
    let time = ns_to_datetime(t);
    st.clear_since = None;
    let since = *st.breach_since.get_or_insert(t);
    st.evidence.push_back(EvidencePoint { time, value: v });
    if st.evidence.len() > EVIDENCE_POINTS {
        st.evidence.pop_front();
    }
    if st.peak.is_none_or(|(s, _)| j.score > s) {
        st.peak = Some((j.score, v));
    }
    if let Some(a) = st.open.as_mut() {
        a.updated_at = time;
        if j.score > a.score {
            (a.score, a.observed) = (j.score, v);
            a.evidence = st.evidence.iter().cloned().collect();
            return Some(AnomalyEvent {
                event: AnomalyEventKind::Update,
                anomaly: a.clone(),
            });
        }
        return None;
    }
    if t - since < rule.config.for_.as_nanos() as i64 || t < cooldown_until {
        return None;
    }
    let (score, observed) = st.peak.unwrap_or((j.score, v));
    let fingerprint = Anomaly::fingerprint_for(&rule.config.name, key);
    let anomaly = Anomaly {
        id: format!("{fingerprint}-{t}"),
        fingerprint,
        rule: rule.config.name.clone(),
        condition: rule.condition(),
        series_id: key.id_hex(),
        series: key.clone(),
        severity: rule.config.severity,
        state: AnomalyState::Open,
        opened_at: time,
        updated_at: time,
        resolved_at: None,
        observed,
        expected: j.expected,
        score,
        evidence: st.evidence.iter().cloned().collect(),
    };
    st.open = Some(anomaly.clone());
    Some(AnomalyEvent {
        event: AnomalyEventKind::Open,
        anomaly,
    })
}

fn count(stats: &Stats, ev: &AnomalyEvent) {
    match ev.event {
        AnomalyEventKind::Open => Stats::add(&stats.anomalies_opened, 1),
        AnomalyEventKind::Resolve => Stats::add(&stats.anomalies_resolved, 1),
        AnomalyEventKind::Update => {}
    }
}

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
struct MetricGroup {
    /// Indices of the rules (in rule order).
    rules: Vec<usize>,
    /// Whether some rule takes every series (no attribute filter).
    selects_all: bool,
    registry: SeriesRegistry,
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
    group_of: Vec<usize>,
    columns: Vec<RuleColumns>,
    groups: Vec<MetricGroup>,
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
            idle_ns: super::DEFAULT_IDLE_AFTER.as_nanos() as i64,
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
        if !super::expiry_due(self.watermark, &mut self.idle_sweep, idle) {
            return;
        }
        let horizon = self.watermark - idle;
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
        for (rule, cols) in self.rules.iter().zip(self.columns.iter_mut()) {
            let RuleKind::Absence(a) = &rule.kind else {
                continue;
            };
            for slot in 0..cols.len() {
                let last_seen = cols.last_seen_opt(slot);
                let RuleColumns {
                    kind: KindColumn::Absence(keys),
                    episode,
                    cooldown_until,
                    ..
                } = cols
                else {
                    continue;
                };
                let Some(key) = &keys[slot] else { continue };
                let open = is_open(&episode[slot]);
                if let Some((j, t)) = a.judge_silence(last_seen, open, self.watermark) {
                    let key = key.key();
                    let (ep, cd) = (&mut episode[slot], &mut cooldown_until[slot]);
                    if let Some(ev) = step(rule, ep, cd, &key, t, j.score, j) {
                        count(&self.stats, &ev);
                        events.push(ev);
                    }
                }
            }
        }
    }
}

/// Judge `points` (the rule's metric group, sorted by series and time) for rule `rule`.
struct Apply<'a> {
    rule: &'a CompiledRule,
    cols: &'a mut RuleColumns,
    params: &'a Params,
    baseline: &'a BaselineConfig,
    stats: &'a Stats,
}

impl Apply<'_> {
    fn run(
        self,
        points: &[Point],
        samples: &[Sample],
        events: &mut Vec<AnomalyEvent>,
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
            let judgement = match (&rule.kind, &mut cols.kind, &precomputed) {
                (RuleKind::Threshold(_), _, Some(all)) => all[i],
                (RuleKind::Deviation(d), KindColumn::Ewma(c), _) => {
                    d.judge_ewma(&mut c[slot], self.params, open, s.value)
                }
                (RuleKind::Deviation(d), KindColumn::Baseline(c), _) => {
                    d.judge(&mut c[slot], self.baseline, open, s.time_ns, s.value)
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
            let (ep, cd) = (&mut cols.episode[slot], &mut cols.cooldown_until[slot]);
            if let Some(ev) = step(rule, ep, cd, &s.key, s.time_ns, s.value, judgement) {
                count(self.stats, &ev);
                events.push(ev);
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
        for r in 0..self.rules.len() {
            let points = &self.groups[self.group_of[r]].points;
            if points.is_empty() {
                continue;
            }
            Apply {
                rule: &self.rules[r],
                cols: &mut self.columns[r],
                params: &self.params,
                baseline: &self.baseline,
                stats: &self.stats,
            }
            .run(points, &batch.samples, &mut batch.events)?;
        }
        self.check_absences(&mut batch.events);
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
        Ok(serde_json::json!({ "watermark": self.watermark, "states": entries }))
    }

    fn restore(&mut self, state: serde_json::Value) -> Result<()> {
        #[derive(Deserialize)]
        struct Saved {
            watermark: i64,
            states: Vec<(String, u64, SeriesState)>,
        }
        let saved: Saved = serde_json::from_value(state)?;
        self.watermark = saved.watermark;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(when: &str, for_: u64) -> RuleConfig {
        RuleConfig {
            resolve_after: Some(Duration::from_secs(30)),
            severity: Severity::Critical,
            ..RuleConfig::threshold("cpu_storm", when, Duration::from_secs(for_))
        }
    }

    fn key(metric: &str) -> SeriesKey {
        SeriesKey::new("sql1", "h", "", metric)
    }

    fn cpu(t_s: i64, v: f64) -> Sample {
        Sample::gauge(
            key("sqlserver.cpu.utilization"),
            t_s * 1_000_000_000,
            v,
            "%",
        )
    }

    fn op(rules: &[RuleConfig]) -> RuleOperator {
        RuleOperator::new(rules, BaselineConfig::default(), Arc::new(Stats::default())).unwrap()
    }

    fn run(op: &mut RuleOperator, samples: Vec<Sample>) -> Vec<AnomalyEvent> {
        let mut b = MicroBatch {
            samples,
            events: vec![],
        };
        op.process(&mut b).unwrap();
        b.events
    }

    fn kinds(ev: &[AnomalyEvent]) -> Vec<AnomalyEventKind> {
        ev.iter().map(|e| e.event).collect()
    }

    #[test]
    fn threshold_opens_after_the_duration_and_resolves_with_hysteresis() {
        let mut op = op(&[rule("cpu_percent > 85", 60)]);
        // Breach from t=10; 59 s is not enough, 60 s opens.
        assert!(run(
            &mut op,
            vec![cpu(0, 50.0), cpu(10, 90.0), cpu(40, 95.0), cpu(69, 91.0)]
        )
        .is_empty());
        let ev = run(&mut op, vec![cpu(70, 92.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        let a = &ev[0].anomaly;
        assert_eq!((a.observed, a.expected), (95.0, Some(85.0)));
        assert!((a.score - 95.0 / 85.0).abs() < 1e-9);
        assert_eq!(a.evidence.len(), 4);
        assert_eq!(a.condition, "cpu_percent > 85 for 1m");
        // A dip shorter than resolve_after does not resolve; a long one does.
        let ev = run(
            &mut op,
            vec![cpu(80, 10.0), cpu(90, 99.0), cpu(100, 10.0), cpu(129, 10.0)],
        );
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Update]);
        let ev = run(&mut op, vec![cpu(130, 10.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Resolve]);
        assert_eq!(ev[0].anomaly.state, AnomalyState::Resolved);
        // Cooldown (default 5m): a new breach right away does not reopen…
        assert!(run(&mut op, vec![cpu(140, 99.0), cpu(300, 99.0)]).is_empty());
        // …but one after the cooldown does.
        assert_eq!(
            kinds(&run(&mut op, vec![cpu(440, 99.0)])),
            vec![AnomalyEventKind::Open]
        );
        // Replayed (already judged) points are ignored.
        assert!(run(&mut op, vec![cpu(70, 99.0), cpu(440, 99.0)]).is_empty());
    }

    #[test]
    fn points_beyond_the_allowed_lateness_are_counted_not_judged() {
        let stats = Arc::new(Stats::default());
        let mut op = RuleOperator::new(
            &[rule("cpu_percent > 85", 0)],
            BaselineConfig::default(),
            stats.clone(),
        )
        .unwrap()
        .with_allowed_lateness(Duration::from_secs(60));
        assert!(run(&mut op, vec![cpu(1000, 10.0)]).is_empty());
        let other = Sample::gauge(
            key("sqlserver.cpu.utilization").with_attr("cpu", "2"),
            900 * 1_000_000_000,
            99.0,
            "%",
        );
        assert!(
            run(&mut op, vec![other]).is_empty(),
            "100 s late: not judged"
        );
        assert_eq!(Stats::get(&stats.late_points), 1);
    }

    #[test]
    fn idle_series_are_forgotten_but_open_anomalies_are_kept() {
        let mut op = op(&[rule("cpu_percent > 85", 0)]);
        let at = |cpu: &str, t: i64, v: f64| {
            Sample::gauge(
                key("sqlserver.cpu.utilization").with_attr("cpu", cpu),
                t * 1_000_000_000,
                v,
                "%",
            )
        };
        run(&mut op, vec![at("quiet", 0, 10.0), at("hot", 0, 99.0)]);
        assert_eq!(op.state_count(), 2);
        run(&mut op, vec![at("new", 7200, 10.0)]);
        assert_eq!(
            op.state_count(),
            2,
            "the idle quiet series went, the open one stayed"
        );
    }

    #[test]
    fn below_rules_and_value_with_metric() {
        let mut cfg = rule("value < 100", 0);
        cfg.metric = Some("sqlserver.page.life_expectancy".into());
        let mut op = op(&[cfg]);
        let ple = Sample::gauge(key("sqlserver.page.life_expectancy"), 1, 20.0, "s");
        assert_eq!(run(&mut op, vec![ple])[0].anomaly.score, 5.0);
    }

    #[test]
    fn bad_rules_name_the_rule_and_field() {
        let err = |r: RuleConfig| {
            CompiledRule::compile(&r)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(rule("nosuch > 1", 1)).contains("rule `cpu_storm`: field `when`"));
        assert!(err(rule("cpu_percent + 1", 1)).contains("must be a condition"));
        assert!(err(rule("cpu_percent > 1 and blocked_processes > 2", 1))
            .contains("exactly one metric"));
        assert!(err(rule("value > 1", 1)).contains("field `metric` is required"));
        assert!(err(rule("cpu_percent >", 1)).contains("field `when`"));
        let mut both = rule("cpu_percent > 1", 1);
        both.deviation = Some(3.0);
        assert!(err(both).contains("exactly one of"));
        let mut dev = RuleConfig {
            when: None,
            deviation: Some(-1.0),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        dev.name = "d".into();
        assert!(err(dev.clone()).contains("field `deviation`"));
        dev.deviation = Some(3.0);
        dev.metric = None;
        assert!(err(dev).contains("field `metric` is required"));
        let ch = RuleConfig {
            when: None,
            change: Some("half".into()),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        assert!(err(ch).contains("field `change`"));
        let ab = RuleConfig {
            when: None,
            absent_for: Some(Duration::ZERO),
            metric: Some("cpu_percent".into()),
            ..rule("", 0)
        };
        assert!(err(ab).contains("field `absent_for`"));
    }

    #[test]
    fn checkpoint_restores_an_open_anomaly() {
        let mut a = op(&[rule("cpu_percent > 85", 0)]);
        assert_eq!(run(&mut a, vec![cpu(0, 90.0)]).len(), 1);
        let mut b = op(&[rule("cpu_percent > 85", 0)]);
        b.restore(a.checkpoint().unwrap()).unwrap();
        assert!(run(&mut b, vec![cpu(100, 10.0)]).is_empty());
        assert_eq!(
            kinds(&run(&mut b, vec![cpu(140, 10.0)])),
            vec![AnomalyEventKind::Resolve]
        );
    }

    #[test]
    fn deviation_fires_on_an_outlier_after_warm_up_only() {
        let cfg = RuleConfig {
            when: None,
            metric: Some("cpu_percent".into()),
            deviation: Some(4.0),
            baseline: Some(BaselineKind::Ewma),
            ..rule("", 0)
        };
        let mut op = op(&[RuleConfig {
            name: "cpu_spike".into(),
            ..cfg
        }]);
        // Warm-up: even a wild value does not fire before the baseline is trusted.
        assert!(run(&mut op, vec![cpu(0, 500.0)]).is_empty());
        let normal: Vec<Sample> = (1..200)
            .map(|i| cpu(i * 10, 40.0 + (i % 5) as f64))
            .collect();
        assert!(run(&mut op, normal).is_empty());
        let ev = run(&mut op, vec![cpu(2000, 95.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        let a = &ev[0].anomaly;
        assert!(
            a.expected.is_some_and(|e| (38.0..46.0).contains(&e)),
            "{:?}",
            a.expected
        );
        assert!(a.score >= 4.0 && a.condition.contains("EWMA"), "{a:?}");
    }

    #[test]
    fn rate_of_change_fires_on_a_drop() {
        let cfg = RuleConfig {
            name: "batch_drop".into(),
            when: None,
            metric: Some("batch_requests_per_sec".into()),
            change: Some("-60%".into()),
            over: Some(Duration::from_secs(60)),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        let br = |t: i64, v: f64| {
            Sample::gauge(
                key("sqlserver.batch.request.rate.per_second"),
                t * 1_000_000_000,
                v,
                "/s",
            )
        };
        assert!(run(&mut op, (0..10).map(|i| br(i * 10, 1000.0)).collect()).is_empty());
        let ev = run(&mut op, vec![br(100, 300.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        assert_eq!(ev[0].anomaly.expected, Some(1000.0));
    }

    #[test]
    fn absence_fires_on_silence_against_the_watermark_and_resolves_on_return() {
        let cfg = RuleConfig {
            name: "cpu_absent".into(),
            when: None,
            metric: Some("cpu_percent".into()),
            absent_for: Some(Duration::from_secs(60)),
            resolve_after: Some(Duration::ZERO),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        let other = |t: i64| {
            Sample::gauge(
                key("sqlserver.user.connection.count"),
                t * 1_000_000_000,
                1.0,
                "1",
            )
        };
        assert!(run(&mut op, vec![cpu(0, 10.0), other(0)]).is_empty());
        assert!(run(&mut op, vec![other(50)]).is_empty());
        let ev = run(&mut op, vec![other(61)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Open]);
        assert_eq!(&*ev[0].anomaly.series.metric, "sqlserver.cpu.utilization");
        let ev = run(&mut op, vec![cpu(70, 10.0)]);
        assert_eq!(kinds(&ev), vec![AnomalyEventKind::Resolve]);
    }

    #[test]
    fn absence_fires_when_event_time_moves_on_elsewhere() {
        let cfg = RuleConfig {
            name: "cpu_absent".into(),
            when: None,
            metric: Some("cpu_percent".into()),
            absent_for: Some(Duration::from_secs(60)),
            ..rule("", 0)
        };
        let mut op = op(&[cfg]);
        assert!(run(&mut op, vec![cpu(0, 10.0)]).is_empty());
        let mut out = MicroBatch::default();
        op.advance(30 * 1_000_000_000, &mut out).unwrap();
        assert!(out.events.is_empty());
        op.advance(61 * 1_000_000_000, &mut out).unwrap();
        assert_eq!(kinds(&out.events), vec![AnomalyEventKind::Open]);
    }

    fn wait_spike() -> RuleConfig {
        RuleConfig {
            name: "wait_spike".into(),
            when: None,
            metric: Some("wait_seconds_per_sec".into()),
            deviation: Some(4.0),
            baseline: Some(BaselineKind::Ewma),
            ..rule("", 0)
        }
    }

    fn wait(series: &str, t_s: i64, v: f64) -> Sample {
        Sample::gauge(
            key("sqlserver.os.wait.duration.per_second").with_attr("wait.type", series),
            t_s * 1_000_000_000,
            v,
            "s/s",
        )
    }

    #[test]
    fn columnar_ewma_state_round_trips_through_the_checkpoint_format() {
        let rules = [wait_spike(), rule("cpu_percent > 85", 0)];
        let mut a = op(&rules);
        let warm: Vec<Sample> = (0..100)
            .flat_map(|i| [wait("a", i * 10, 1.0 + (i % 4) as f64), cpu(i * 10, 10.0)])
            .collect();
        assert!(run(&mut a, warm).is_empty());
        let json = a.checkpoint().unwrap();
        // The JSON keeps the old per-(rule, series) shape: the EWMA as a full baseline.
        let states = json["states"].as_array().unwrap();
        assert_eq!(states.len(), 2);
        let dev = states.iter().find(|s| s[0] == "wait_spike").unwrap();
        assert_eq!(dev[2]["baseline"]["only"], "ewma");
        assert_eq!(dev[2]["baseline"]["learned"], 100);
        let mut b = op(&rules);
        b.restore(json.clone()).unwrap();
        assert_eq!(
            b.checkpoint().unwrap()["states"].as_array().unwrap().len(),
            2
        );
        // Both judge the next points identically.
        let next = vec![wait("a", 1000, 2.0), wait("a", 1010, 40.0)];
        let (ea, eb) = (run(&mut a, next.clone()), run(&mut b, next));
        assert_eq!(kinds(&ea), vec![AnomalyEventKind::Open]);
        assert_eq!(ea[0].anomaly.score, eb[0].anomaly.score);
        assert_eq!(ea[0].anomaly.expected, eb[0].anomaly.expected);
    }

    #[test]
    fn expired_series_give_their_slots_back() {
        let mut op = op(&[wait_spike()]).with_idle_after(Duration::from_secs(600));
        for round in 0..5 {
            // 100 new series every round, each round 2 h after the previous one.
            let t = round * 7200;
            let batch = (0..100)
                .map(|i| wait(&format!("{round}-{i}"), t, 1.0))
                .collect();
            run(&mut op, batch);
            assert_eq!(op.series_count(), 100, "round {round}");
        }
        let group = &op.groups[op.group_of[0]];
        assert_eq!(group.registry.slots(), 200, "freed slots are reused");
    }
}
