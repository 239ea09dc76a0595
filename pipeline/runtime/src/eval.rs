//! The engine of `sqlvigil eval`: detection quality of a config's rules, measured.
//!
//! A simulated fleet runs every incident scenario several times on some instances, while
//! the last instances stay quiet (daily and weekly seasonality and noise only). The
//! telemetry goes through the same decode → operator chain as the pipeline (the one
//! `ChainBuilder`: rates, windows, rules, with the config's baselines and lateness), in
//! process and in event time. Each opened anomaly is matched to the incident of the same
//! name on the same instance (opened between its start and its end plus a grace period):
//! a match is a true positive, anything else a false positive; an incident without a
//! match is a miss. A rule `<kind>_<variant>` (`blocking_chain_lock_waits`, the Windows
//! perf-counter form of `blocking_chain`) counts for incident kind `<kind>`. The fleet
//! is read in one receiver mode (`windows`, `direct`, or `mixed`); an incident whose
//! every rule reads a metric that mode does not send is a platform gap, counted apart,
//! neither a miss nor a hit. Printed per rule: precision, recall, F1 and time to detect; last line
//! `f1: X` (micro-averaged over all rules).

use sqlvigil_core::Stats;
use sqlvigil_core::{run_chain, MicroBatch, Result};
use sqlvigil_model::catalogue::ReceiverMode;
use sqlvigil_model::{AnomalyEvent, AnomalyEventKind};
use sqlvigil_operators::chain::{ChainBuilder, ChainConfig};
use sqlvigil_operators::rules::coverage;
use sqlvigil_operators::rules::RuleConfig;
use sqlvigil_simulator::{Fleet, FleetConfig, Incident, IncidentLabel, ReceiverModes, Scenario};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const INTERVAL: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(6 * 3600);
const INCIDENT: Duration = Duration::from_secs(30 * 60);
/// Incidents on one instance start this far apart (room to resolve and cool down).
const SLOT: Duration = Duration::from_secs(3 * 3600);
/// A detection may come this long after the incident ended and still count.
const GRACE: Duration = Duration::from_secs(10 * 60);
pub const QUIET_INSTANCES: usize = 2;

/// The fleet and its incident schedule: scenarios in turn over the busy instances.
pub fn schedule(quick: bool, seed: u64, receiver_mode: ReceiverModes) -> (FleetConfig, u64) {
    let (instances, period) = if quick {
        (6, Duration::from_secs(36 * 3600))
    } else {
        (10, Duration::from_secs(7 * 86400))
    };
    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| *s != Scenario::Quiet)
        .collect();
    let busy = instances - QUIET_INSTANCES;
    let slots = ((period - WARM_UP - SLOT).as_secs() / SLOT.as_secs()) as usize;
    let mut incidents = Vec::new();
    for slot in 0..slots {
        for instance in 0..busy {
            let scenario = scenarios[(slot * busy + instance) % scenarios.len()];
            // Stagger instances so incidents do not all start together.
            let offset = WARM_UP + SLOT * slot as u32 + Duration::from_secs(600 * instance as u64);
            incidents.push(Incident {
                scenario,
                instance,
                offset,
                duration: INCIDENT,
            });
        }
    }
    let start_time_ns = sqlvigil_simulator::DEFAULT_START_TIME_NS;
    let ticks = period.as_secs() / INTERVAL.as_secs();
    (
        FleetConfig {
            seed,
            instances,
            interval: INTERVAL,
            incidents,
            start_time_ns,
            receiver_mode,
        },
        ticks,
    )
}

/// Per rule: incidents, detections, false alarms, times to detect.
#[derive(Debug, Default)]
pub struct Score {
    pub incidents: usize,
    pub detected: usize,
    pub true_pos: usize,
    pub false_pos: usize,
    /// Opened during a different incident on the same instance.
    pub related: usize,
    /// Incidents no rule of the kind can see in their instance's receiver mode.
    pub gaps: usize,
    pub ttd_s: Vec<f64>,
}

/// The incident kind a rule detects: its name, or `<kind>` of `<kind>_<variant>`.
pub fn kind_of(rule: &str) -> &str {
    Scenario::ALL
        .iter()
        .map(|s| s.name())
        .find(|k| rule == *k || rule.strip_prefix(k).is_some_and(|r| r.starts_with('_')))
        .unwrap_or(rule)
}

/// For each label: no rule of its kind can fire in its instance's receiver mode.
pub fn undetectable(
    labels: &[IncidentLabel],
    rules: &[RuleConfig],
    mode_of: impl Fn(&str) -> Option<ReceiverMode>,
) -> Result<Vec<bool>> {
    let needs = coverage::needs(rules)?;
    Ok(labels
        .iter()
        .map(|l| {
            let Some(mode) = mode_of(&l.instance) else {
                return false;
            };
            let mut of_kind = needs
                .iter()
                .filter(|n| kind_of(&n.rule) == l.name)
                .peekable();
            of_kind.peek().is_some() && of_kind.all(|n| n.gap(mode).is_some())
        })
        .collect())
}

impl Score {
    pub fn precision(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }
    pub fn recall(&self) -> f64 {
        ratio(self.detected, self.incidents)
    }
}

pub fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

pub fn f1(p: f64, r: f64) -> f64 {
    if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// What a detection run saw: the opened anomalies, the incidents, the points.
pub struct Detection {
    pub opened: Vec<AnomalyEvent>,
    pub labels: Vec<IncidentLabel>,
    pub points: u64,
}

/// Run the fleet through a fresh chain built from `chain`, one micro-batch per scrape,
/// and collect the opened anomalies.
pub fn detect(cfg: FleetConfig, ticks: u64, chain: &ChainConfig) -> Result<Detection> {
    let mut ops = ChainBuilder::new(chain.clone(), Arc::new(Stats::default()))?.build()?;
    let mut fleet = Fleet::new(cfg);
    let labels = fleet.labels();
    let (mut opened, mut points) = (Vec::new(), 0u64);
    for tick in 0..ticks {
        let mut batch = MicroBatch::default();
        for req in fleet.metrics(tick) {
            sqlvigil_otlp::metrics_to_samples(&req, &mut batch.samples);
        }
        points += batch.samples.len() as u64;
        run_chain(&mut ops, &mut batch)?;
        opened.extend(
            batch
                .events
                .into_iter()
                .filter(|e| e.event == AnomalyEventKind::Open),
        );
    }
    Ok(Detection {
        opened,
        labels,
        points,
    })
}

/// Per rule: matched detections, false alarms and times to detect; and the anomalies
/// on the `quiet` instances.
pub fn score(
    opened: &[AnomalyEvent],
    labels: &[IncidentLabel],
    undetectable: &[bool],
    rules: &[RuleConfig],
    quiet: &[String],
) -> (BTreeMap<String, Score>, usize) {
    let mut scores: BTreeMap<String, Score> = rules
        .iter()
        .map(|r| (kind_of(&r.name).to_string(), Score::default()))
        .collect();
    for (i, l) in labels.iter().enumerate() {
        let s = scores.entry(l.name.clone()).or_default();
        if undetectable.get(i).copied().unwrap_or(false) {
            s.gaps += 1;
        } else {
            s.incidents += 1;
        }
    }
    let grace = GRACE.as_nanos() as i64;
    let mut matched = vec![false; labels.len()];
    let mut quiet_alarms = 0;
    for ev in opened {
        let a = &ev.anomaly;
        let t = a.opened_at.timestamp_nanos_opt().unwrap_or(i64::MAX);
        quiet_alarms += usize::from(quiet.iter().any(|q| **q == *a.series.instance));
        let during = |l: &IncidentLabel| {
            *l.instance == *a.series.instance && t >= l.start_ns && t <= l.end_ns + grace
        };
        let kind = kind_of(&a.rule);
        let hit = labels.iter().position(|l| l.name == kind && during(l));
        let s = scores.entry(kind.to_string()).or_default();
        // Another incident on the same instance explains it (e.g. I/O waits during a
        // buffer-pool collapse): a real symptom, neither a hit nor a false alarm.
        if hit.is_none() && labels.iter().any(during) {
            s.related += 1;
            continue;
        }
        match hit {
            Some(i) => {
                s.true_pos += 1;
                if !matched[i] {
                    matched[i] = true;
                    s.detected += 1;
                    s.ttd_s.push((t - labels[i].start_ns) as f64 / 1e9);
                }
            }
            None => s.false_pos += 1,
        }
    }
    (scores, quiet_alarms)
}
